import assert from "node:assert/strict";
import { DirectoryOrigin, toOriginStat } from "../../origin/directory.ts";
import type { OriginDirEntry } from "../../origin/origin.ts";
import { FILES_PAGE_LIMIT, RequestError } from "../../protocol.ts";
import { type Tree, writeTree } from "../helpers.ts";

/** A page that holds every entry of the small directories listed here. */
const WHOLE = { limit: FILES_PAGE_LIMIT };

/** Paths of one test's temporary tree: `root` is served, `outer` holds it. */
interface Dirs {
  outer: string;
  root: string;
}

/** Runs `test` over `tree` written to `outer/root`, removing everything afterwards. */
async function withTree(tree: Tree, test: (dirs: Dirs) => Promise<void>): Promise<void> {
  const outer = await Deno.realPath(await Deno.makeTempDir({ prefix: "tcpcache-origin-" }));
  const root = `${outer}/root`;
  try {
    await Deno.mkdir(root);
    await writeTree(root, tree);
    await test({ outer, root });
  } finally {
    await Deno.remove(outer, { recursive: true });
  }
}

async function assertProtocolError(
  promise: Promise<unknown>,
  code: number,
  message: string,
): Promise<void> {
  await assert.rejects(promise, (error) => {
    assert.ok(error instanceof RequestError, `not a RequestError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    return true;
  });
}

async function mkfifo(path: string): Promise<void> {
  const { success } = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.ok(success, `mkfifo ${path} failed`);
}

async function readOpened(
  origin: DirectoryOrigin,
  path: string,
  range?: { offset: number; length: number },
): Promise<string> {
  const opened = await origin.open(path, range);
  const chunks: Uint8Array[] = [];
  try {
    const buffer = new Uint8Array(4);
    for (let n = await opened.read(buffer); n !== null; n = await opened.read(buffer)) {
      chunks.push(buffer.slice(0, n));
    }
  } finally {
    opened.close();
  }
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])));
}

async function mtimeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mtime!.getTime();
}

Deno.test("DirectoryOrigin: stat of a regular file gives size, mtime and validator", async () => {
  await withTree({ "a.txt": "hello" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    const info = await Deno.stat(`${root}/a.txt`);
    const mtime = info.mtime!.getTime();
    assert.deepEqual(await origin.stat("a.txt"), {
      size: 5,
      mtime,
      validator: `5:${mtime}:${info.ino}:${info.ctime!.getTime()}`,
    });
    assert.equal(origin.root, root);
  });
});

Deno.test("DirectoryOrigin: open gives the file at its start with its stat", async () => {
  await withTree({ "a.txt": "hello" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    const opened = await origin.open("a.txt");
    try {
      assert.deepEqual(opened.stat, await origin.stat("a.txt"));
    } finally {
      opened.close();
    }
    assert.equal(await readOpened(origin, "a.txt"), "hello");
    assert.equal(
      await readOpened(origin, "a.txt", { offset: 2, length: 3 }),
      "llo",
      "positioned at the range's offset",
    );
  });
});

Deno.test("DirectoryOrigin: files in nested directories", async () => {
  await withTree({ "d/e/f.txt": "nested", "d/g.txt": "g" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    assert.equal((await origin.stat("d/e/f.txt")).size, 6);
    assert.equal(await readOpened(origin, "d/e/f.txt"), "nested");
    assert.deepEqual(await origin.list("d", WHOLE), {
      entries: [
        { name: "e", type: "dir", size: 0, mtime: await mtimeOf(`${root}/d/e`) },
        { name: "g.txt", type: "file", size: 1, mtime: await mtimeOf(`${root}/d/g.txt`) },
      ],
    });
    assert.deepEqual((await origin.list("d/e", WHOLE)).entries.map((entry) => entry.name), [
      "f.txt",
    ]);
  });
});

Deno.test("DirectoryOrigin: a directory is not a file: 404", async () => {
  await withTree({ "d/e/f.txt": "x" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    await assertProtocolError(origin.stat("d"), 404, "not found: d");
    await assertProtocolError(origin.open("d"), 404, "not found: d");
    await assertProtocolError(origin.stat("d/e"), 404, "not found: d/e");
  });
});

Deno.test("DirectoryOrigin: a missing file is a 404, also below a file", async () => {
  await withTree({ "a.txt": "x" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    await assertProtocolError(origin.stat("nope.txt"), 404, "not found: nope.txt");
    await assertProtocolError(origin.open("nope.txt"), 404, "not found: nope.txt");
    await assertProtocolError(origin.stat("no/such/dir.txt"), 404, "not found: no/such/dir.txt");
    await assertProtocolError(origin.stat("a.txt/x"), 404, "not found: a.txt/x");
    await assertProtocolError(origin.list("nope", WHOLE), 404, "not found: nope");
    await assertProtocolError(origin.list("a.txt", WHOLE), 404, "not found: a.txt");
  });
});

Deno.test("DirectoryOrigin: symlinks that stay inside the root are served", async () => {
  await withTree({ "a.txt": "hello", "d/f.txt": "deep" }, async ({ root }) => {
    await Deno.symlink("a.txt", `${root}/relative.txt`);
    await Deno.symlink(`${root}/a.txt`, `${root}/absolute.txt`);
    await Deno.symlink("d", `${root}/dlink`);
    const origin = await DirectoryOrigin.open(root);
    assert.equal((await origin.stat("relative.txt")).size, 5);
    assert.equal(await readOpened(origin, "relative.txt"), "hello");
    assert.equal(await readOpened(origin, "absolute.txt"), "hello");
    assert.equal(await readOpened(origin, "dlink/f.txt"), "deep");
  });
});

Deno.test("DirectoryOrigin: symlinks that lead outside the root are a 403", async () => {
  await withTree({ "a.txt": "x" }, async ({ outer, root }) => {
    await Deno.writeTextFile(`${outer}/secret.txt`, "secret");
    await Deno.symlink(`${outer}/secret.txt`, `${root}/absolute`);
    await Deno.symlink("../secret.txt", `${root}/relative`);
    await Deno.symlink("..", `${root}/up`);
    const origin = await DirectoryOrigin.open(root);
    const outside = (path: string) => `outside the served directory: ${path}`;
    await assertProtocolError(origin.stat("absolute"), 403, outside("absolute"));
    await assertProtocolError(origin.open("absolute"), 403, outside("absolute"));
    await assertProtocolError(origin.stat("relative"), 403, outside("relative"));
    await assertProtocolError(origin.open("up/secret.txt"), 403, outside("up/secret.txt"));
    await assertProtocolError(origin.list("up", WHOLE), 403, outside("up"));
  });
});

Deno.test("DirectoryOrigin: a symlink loop is a 404", async () => {
  await withTree({}, async ({ root }) => {
    await Deno.symlink("loop2", `${root}/loop1`);
    await Deno.symlink("loop1", `${root}/loop2`);
    await Deno.symlink("self", `${root}/self`);
    const origin = await DirectoryOrigin.open(root);
    await assertProtocolError(origin.stat("loop1"), 404, "not found: loop1");
    await assertProtocolError(origin.open("loop2"), 404, "not found: loop2");
    await assertProtocolError(origin.stat("self/x"), 404, "not found: self/x");
  });
});

Deno.test("DirectoryOrigin: a FIFO is a 404 and opening it does not block", async () => {
  await withTree({}, async ({ root }) => {
    await mkfifo(`${root}/pipe`);
    const origin = await DirectoryOrigin.open(root);
    await assertProtocolError(origin.stat("pipe"), 404, "not found: pipe");
    // A watchdog, not a wait: if open() blocked on the FIFO, this unblocks it
    // by opening the writing end, and the test fails instead of hanging.
    let blocked = false;
    const watchdog = setTimeout(async () => {
      blocked = true;
      (await Deno.open(`${root}/pipe`, { write: true })).close();
    }, 10_000);
    try {
      await assertProtocolError(origin.open("pipe"), 404, "not found: pipe");
    } finally {
      clearTimeout(watchdog);
    }
    assert.equal(blocked, false, "open() blocked on the FIFO");
  });
});

Deno.test("DirectoryOrigin: list sorts by name and shows only files and dirs inside", async () => {
  const tree = { "b.txt": "bb", "a.txt": "a", "C.txt": "ccc", "d/x": "", "é.txt": "éé", z: "" };
  await withTree(tree, async ({ outer, root }) => {
    await Deno.writeTextFile(`${outer}/secret.txt`, "secret");
    await mkfifo(`${root}/pipe`);
    await Deno.symlink("missing", `${root}/dangling`);
    await Deno.symlink(`${outer}/secret.txt`, `${root}/outside`);
    await Deno.symlink("..", `${root}/up`);
    await Deno.symlink("a.txt", `${root}/link`);
    await Deno.symlink("d", `${root}/dlink`);
    const origin = await DirectoryOrigin.open(root);
    const entry = async (
      name: string,
      type: "file" | "dir",
      size: number,
    ): Promise<OriginDirEntry> => ({ name, type, size, mtime: await mtimeOf(`${root}/${name}`) });
    assert.deepEqual(await origin.list("", WHOLE), {
      entries: [
        await entry("C.txt", "file", 3),
        await entry("a.txt", "file", 1),
        await entry("b.txt", "file", 2),
        await entry("d", "dir", 0),
        await entry("dlink", "dir", 0),
        await entry("link", "file", 1),
        await entry("z", "file", 0),
        await entry("é.txt", "file", 4),
      ],
    });
  });
});

Deno.test("DirectoryOrigin: the hide option makes a directory inside invisible", async () => {
  const tree = { "a.txt": "a", ".cache/entry.bin": "cached", ".cache2/x.txt": "x" };
  await withTree(tree, async ({ root }) => {
    await Deno.symlink(".cache/entry.bin", `${root}/into`);
    const origin = await DirectoryOrigin.open(root, { hide: `${root}/.cache` });
    const names = (await origin.list("", WHOLE)).entries.map((entry) => entry.name);
    assert.deepEqual(names, [".cache2", "a.txt"]);
    const hidden = (path: string) => `outside the served directory: ${path}`;
    await assertProtocolError(origin.stat(".cache/entry.bin"), 403, hidden(".cache/entry.bin"));
    await assertProtocolError(origin.open(".cache/entry.bin"), 403, hidden(".cache/entry.bin"));
    await assertProtocolError(origin.list(".cache", WHOLE), 403, hidden(".cache"));
    await assertProtocolError(origin.stat("into"), 403, hidden("into"));
    assert.equal((await origin.stat(".cache2/x.txt")).size, 1);
  });
});

Deno.test("DirectoryOrigin: pages of a listing count names, shown or not; next is the last one", async () => {
  const tree = { "a.txt": "a", ".cache/entry.bin": "cached", ".cache2/x.txt": "x", "b.txt": "b" };
  await withTree(tree, async ({ root }) => {
    await Deno.symlink("/", `${root}/.out`);
    const origin = await DirectoryOrigin.open(root, { hide: `${root}/.cache` });
    const pages: [string[], string | undefined][] = [];
    let after: string | undefined;
    do {
      const page = await origin.list("", { after, limit: 3 });
      pages.push([page.entries.map((entry) => entry.name), page.next]);
      after = page.next;
    } while (after !== undefined);
    // In name order: .cache (hidden), .cache2, .out (a link out: not listed), a.txt, b.txt.
    assert.deepEqual(pages, [
      [[".cache2"], ".out"],
      [["a.txt", "b.txt"], undefined],
    ]);
  });
});

Deno.test("DirectoryOrigin: a hidden directory created after open stays hidden", async () => {
  // startServer opens the origin with hide: cacheDir before FileCache creates
  // that directory, so this is the order in which a server meets it.
  await withTree({ "a.txt": "a" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root, { hide: `${root}/cache` });
    await writeTree(`${root}/cache`, { "entry.bin": "cached" });
    assert.deepEqual((await origin.list("", WHOLE)).entries.map((entry) => entry.name), ["a.txt"]);
    await assertProtocolError(
      origin.stat("cache/entry.bin"),
      403,
      "outside the served directory: cache/entry.bin",
    );
  });
});

Deno.test("DirectoryOrigin.open: a missing directory or a file cannot be served", async () => {
  await withTree({ "a.txt": "a" }, async ({ root }) => {
    await assert.rejects(DirectoryOrigin.open(`${root}/missing`), {
      name: "Error",
      message: `cannot serve ${root}/missing: no such directory`,
    });
    await assert.rejects(DirectoryOrigin.open(`${root}/a.txt`), {
      name: "Error",
      message: `cannot serve ${root}/a.txt: not a directory`,
    });
  });
});

Deno.test("DirectoryOrigin.open: the error is one line even for a name with a line break", async () => {
  await withTree({}, async ({ root }) => {
    await assert.rejects(DirectoryOrigin.open(`${root}/no\nsuch`), (error) => {
      assert.ok(error instanceof Error);
      assert.ok(error.message.startsWith("cannot serve "), error.message);
      assert.ok(!/[\r\n]/.test(error.message), JSON.stringify(error.message));
      return true;
    });
  });
});

Deno.test("toOriginStat: the validator joins size, mtime, inode and ctime", () => {
  const info = { size: 5, mtime: new Date(1000), ino: 7, ctime: new Date(2000) } as Deno.FileInfo;
  assert.deepEqual(toOriginStat(info), { size: 5, mtime: 1000, validator: "5:1000:7:2000" });
  const bare = { size: 3, mtime: null, ino: null, ctime: null } as Deno.FileInfo;
  assert.deepEqual(toOriginStat(bare), { size: 3, mtime: 0, validator: "3:0:0:0" });
});

Deno.test("toOriginStat: the validator changes when a file is rewritten with a new size", async () => {
  await withTree({ "a.txt": "hello" }, async ({ root }) => {
    const origin = await DirectoryOrigin.open(root);
    const before = await origin.stat("a.txt");
    await Deno.writeTextFile(`${root}/a.txt`, "hello, world");
    const after = await origin.stat("a.txt");
    assert.equal(before.size, 5);
    assert.equal(after.size, 12);
    assert.notEqual(after.validator, before.validator);
    assert.equal(after.validator, toOriginStat(await Deno.stat(`${root}/a.txt`)).validator);
  });
});

Deno.test("stat: dot segments and links never reach outside, whatever path a library caller passes", async () => {
  const base = await Deno.makeTempDir({ prefix: "tcpcache-origin-test-" });
  try {
    await writeTree(`${base}/served`, { "sub/inner.txt": "inner", "top.txt": "top" });
    await writeTree(`${base}/outside`, { "secret.txt": "secret" });
    await Deno.symlink(`${base}/outside`, `${base}/served/dir-out`);
    await Deno.symlink(`${base}/served/top.txt`, `${base}/served/sub/link-in.txt`);
    const origin = await DirectoryOrigin.open(`${base}/served`);
    for (
      const path of ["sub/../../outside/secret.txt", "../outside/secret.txt", "dir-out/secret.txt"]
    ) {
      const error = await origin.stat(path).then(() => undefined, (error) => error);
      assert.ok(error instanceof RequestError, `${path}: ${error}`);
      assert.equal(error.code, 403, path);
    }
    assert.equal((await origin.stat("sub/./inner.txt")).size, 5, "a dot inside stays inside");
    assert.equal((await origin.stat("sub/link-in.txt")).size, 3, "a link inside is its target");
    assert.equal((await origin.stat("sub/inner.txt")).size, 5);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});
