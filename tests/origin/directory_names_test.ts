import assert from "node:assert/strict";
import { DirectoryNames } from "../../origin/directory_names.ts";

/** Runs `test` with a directory of `count` files (`f00`, `f01`, ...) and a count of its reads. */
async function withDirectory(
  count: number,
  options: { settled: boolean },
  test: (dir: string, reads: () => number) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-names-" });
  const readDir = Deno.readDir;
  let reads = 0;
  try {
    for (let i = 0; i < count; i++) {
      await Deno.writeFile(`${dir}/f${String(i).padStart(2, "0")}`, new Uint8Array());
    }
    if (options.settled) {
      const minuteAgo = new Date(Date.now() - 60_000);
      await Deno.utime(dir, minuteAgo, minuteAgo);
    }
    Deno.readDir = (path) => {
      if (path === dir) reads++;
      return readDir(path);
    };
    await test(dir, () => reads);
  } finally {
    Deno.readDir = readDir;
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every page of `dir` at `limit`: its names, page by page. */
async function pagesOf(names: DirectoryNames, dir: string, limit: number): Promise<string[][]> {
  const pages: string[][] = [];
  let after: string | undefined;
  while (true) {
    const page = await names.page(dir, { after, limit });
    pages.push(page.names.map((entry) => entry.name));
    if (!page.more) return pages;
    after = page.names.at(-1)!.name;
  }
}

const names25 = Array.from({ length: 25 }, (_, i) => `f${String(i).padStart(2, "0")}`);

Deno.test("DirectoryNames: a settled directory bigger than a page is read once while it is paged through", async () => {
  await withDirectory(25, { settled: true }, async (dir, reads) => {
    const names = new DirectoryNames(1_000_000);
    const pages = await pagesOf(names, dir, 10);
    assert.deepEqual(pages, [names25.slice(0, 10), names25.slice(10, 20), names25.slice(20)]);
    assert.equal(reads(), 1, "the later pages come from the kept names");
    assert.deepEqual(await pagesOf(names, dir, 10), pages);
    assert.equal(reads(), 1);
    const middle = await names.page(dir, { after: "f05x", limit: 3 });
    assert.deepEqual(middle.names.map((entry) => entry.name), ["f06", "f07", "f08"]);
    names.clear();
    await names.page(dir, { limit: 10 });
    assert.equal(reads(), 2, "forgotten once cleared");
  });
});

Deno.test("DirectoryNames: a change between pages is seen at once", async () => {
  await withDirectory(25, { settled: true }, async (dir, reads) => {
    const names = new DirectoryNames(1_000_000);
    const first = await names.page(dir, { limit: 10 });
    await Deno.writeFile(`${dir}/f15a`, new Uint8Array());
    await Deno.remove(`${dir}/f16`);
    const second = await names.page(dir, { after: first.names.at(-1)!.name, limit: 10 });
    assert.deepEqual(second.names.map((entry) => entry.name), [
      ...names25.slice(10, 16),
      "f15a",
      ...names25.slice(17, 20),
    ]);
    assert.equal(reads(), 2);
  });
});

Deno.test("DirectoryNames: a directory changed lately, one page long, or past the budget is read for every page", async () => {
  await withDirectory(25, { settled: false }, async (dir, reads) => {
    const pages = await pagesOf(new DirectoryNames(1_000_000), dir, 10);
    assert.deepEqual(pages.flat(), names25);
    assert.equal(reads(), 3, "changed within the last seconds: its mtime could hide a change");
  });
  await withDirectory(25, { settled: true }, async (dir, reads) => {
    const names = new DirectoryNames(1_000_000);
    assert.deepEqual(await pagesOf(names, dir, 25), [names25]);
    assert.deepEqual(await pagesOf(names, dir, 25), [names25]);
    assert.equal(reads(), 2, "one page: nothing to keep");
  });
  await withDirectory(25, { settled: true }, async (dir, reads) => {
    // 25 names of 3 characters take 100 units with their separators.
    const pages = await pagesOf(new DirectoryNames(99), dir, 10);
    assert.deepEqual(pages.flat(), names25);
    assert.equal(reads(), 3, "past the budget");
  });
});

Deno.test("DirectoryNames: symbolic links are marked, read or kept", async () => {
  await withDirectory(25, { settled: false }, async (dir) => {
    await Deno.symlink("f00", `${dir}/f00-link`);
    const minuteAgo = new Date(Date.now() - 60_000);
    await Deno.utime(dir, minuteAgo, minuteAgo);
    const names = new DirectoryNames(1_000_000);
    for (let round = 0; round < 2; round++) {
      const page = await names.page(dir, { limit: 3 });
      assert.deepEqual(page.names, [
        { name: "f00", link: false },
        { name: "f00-link", link: true },
        { name: "f01", link: false },
      ]);
    }
  });
});
