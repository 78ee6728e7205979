/**
 * `FILES` a page at a time, over real sockets: a directory of 100,000
 * entries listed through its pages (every name once, in byte order; the
 * server's live heap bounded; `PING` answered while a page is built; the
 * client library gathering every page; a file added between pages), the
 * bounds of a page (400s that leave the connection usable), and the answer
 * an older client still gets for a directory of ordinary size.
 */

import assert from "node:assert/strict";
import { connect } from "../../client.ts";
import { json, RawConnection, withServer } from "../helpers.ts";
import { percentEncode } from "../../protocol.ts";

type Entry = { name: string; type: "file" | "dir"; size: number; mtime: number };
type Page = { path: string; entries: Entry[]; next?: string };

const utf8 = new TextEncoder();

/** The order a listing promises: the bytes of the names' UTF-8 (here independent of compareNames). */
function byteOrder(a: string, b: string): number {
  const [x, y] = [utf8.encode(a), utf8.encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * The names of the big directory: 100,000 files whose creation order is not
 * their order (a permutation), a few directories, and names whose byte order
 * differs from UTF-16's (U+FF01 sorts before U+1F600 in UTF-8, after it in UTF-16).
 */
function bigTree(): { files: string[]; dirs: string[] } {
  const files: string[] = [];
  for (let i = 0; i < 99_990; i++) files.push(`f${String((i * 7919) % 99_990).padStart(5, "0")}`);
  files.push("\uFF01.txt", "\u{1F600}.txt", "é.txt", "Z", "-", "a b", "100%.txt");
  const dirs = ["dir-a", "zz", "\u{1F600}dir"];
  return { files, dirs };
}

/**
 * Lists `dir` page by page on `conn` (after `start`, when given), checks each
 * page's shape, and resolves to its pages.
 */
async function pageThrough(
  conn: RawConnection,
  dir: string,
  { limit, start }: { limit?: number; start?: string } = {},
): Promise<Page[]> {
  const pages: Page[] = [];
  let next = start;
  do {
    const window = next === undefined && limit === undefined
      ? ""
      : ` ${next === undefined ? "." : percentEncode(next)}${
        limit === undefined ? "" : ` ${limit}`
      }`;
    const page = json<Page>(await conn.request(`FILES ${dir}${window}`));
    assert.equal(page.path, dir);
    assert.ok(page.entries.length <= (limit ?? 10_000), "no page is longer than its limit");
    if (page.next !== undefined) assert.equal(page.next, page.entries.at(-1)!.name);
    pages.push(page);
    next = page.next;
  } while (next !== undefined);
  return pages;
}

/**
 * The harness server (tests/tcp/live_heap_server.ts) over `dir`: its port,
 * and `ask`, which sends it a line and waits for the answer that matches.
 */
async function startLiveHeapServer(dir: string, cacheDir: string) {
  const script = new URL("./live_heap_server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", script, dir, cacheDir],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const said = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stdin = child.stdin.getWriter();
  let heard = "";
  const hear = async (answer: RegExp) => {
    for (let match = answer.exec(heard);; match = answer.exec(heard)) {
      if (match) {
        heard = heard.slice(match.index + match[0].length);
        return match;
      }
      const { value, done } = await said.read();
      if (done) throw new Error(`the server ended; it said: ${heard}`);
      heard += value;
    }
  };
  const ask = async (line: string, answer: RegExp) => {
    await stdin.write(utf8.encode(`${line}\n`));
    return await hear(answer);
  };
  const stop = async () => {
    await stdin.close().catch(() => {});
    await child.status;
    await said.cancel().catch(() => {});
  };
  try {
    const port = Number((await hear(/listening on [^ ]+:([0-9]+)\n/))[1]);
    return { port, ask, stop };
  } catch (error) {
    child.kill();
    await stop();
    throw error;
  }
}

Deno.test("FILES paging over 100,000 entries (memory bounded)", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-paging-" });
  const { files, dirs } = bigTree();
  await Deno.mkdir(`${root}/files/big`, { recursive: true });
  await Deno.mkdir(`${root}/files/small`);
  for (const name of files) Deno.writeFileSync(`${root}/files/big/${name}`, new Uint8Array());
  for (const name of dirs) Deno.mkdirSync(`${root}/files/big/${name}`);
  for (let i = 0; i < 10_000; i++) {
    Deno.writeFileSync(`${root}/files/small/f${String(i).padStart(5, "0")}`, new Uint8Array());
  }
  // A directory at rest (its last change a minute ago), as a big one being listed usually is.
  const minuteAgo = new Date(Date.now() - 60_000);
  await Deno.utime(`${root}/files/big`, minuteAgo, minuteAgo);
  const expected = [...files, ...dirs].sort(byteOrder);

  const server = await startLiveHeapServer(`${root}/files`, `${root}/cache`);
  const ask = server.ask;
  const conn = await RawConnection.open(server.port);
  try {
    let control = 0;
    await t.step(
      "the control: the live heap of one whole page, a directory of 10,000",
      async () => {
        await ask("start", /started\n/);
        const pages = await pageThrough(conn, "small");
        assert.equal(pages.length, 1);
        assert.equal(pages[0].entries.length, 10_000);
        control = Number((await ask("peak", /peak (-?[0-9]+)\n/))[1]);
        assert.ok(control > 0);
      },
    );

    await t.step("every name exactly once, in byte order; the live heap bounded", async () => {
      await ask("start", /started\n/);
      const pages = await pageThrough(conn, "big");
      const peak = Number((await ask("peak", /peak (-?[0-9]+)\n/))[1]);
      assert.equal(pages.length, 10, "100,000 entries: ten pages of 10,000");
      assert.deepEqual(pages.flatMap((page) => page.entries.map((entry) => entry.name)), expected);
      const types = new Map(pages.flatMap((page) => page.entries.map((e) => [e.name, e.type])));
      assert.deepEqual(dirs.map((name) => types.get(name)), ["dir", "dir", "dir"]);
      // The server before paging built the whole listing at once: 22 MiB of live heap
      // here, over fifteen times the control. A page holds one page's entries, and the
      // first page's read of the 100,000 names about 3 MiB besides (5 MiB in all).
      const MiB = 1024 * 1024;
      assert.ok(
        peak < control + 8 * MiB,
        `live heap grew ${(peak / MiB).toFixed(1)} MiB over the listing; ` +
          `one page of 10,000: ${(control / MiB).toFixed(1)} MiB`,
      );
    });

    await t.step("the client library gathers every page", async () => {
      const client = await connect({ port: server.port });
      try {
        const listing = await client.files("big");
        assert.deepEqual(Object.keys(listing), ["path", "entries"]);
        assert.deepEqual(listing.entries.map((entry) => entry.name), expected);
        const page = await client.filesPage("big", { after: expected[4], limit: 3 });
        assert.deepEqual(page.entries.map((entry) => entry.name), expected.slice(5, 8));
        assert.equal(page.next, expected[7]);
      } finally {
        client.close();
      }
    });

    await t.step(
      "PING is answered while a page is built; a file added between pages is listed",
      async () => {
        const first = json<Page>(await conn.request("FILES big . 100"));
        // The change has the next page read all 100,000 names again (the most a page costs),
        // and every page after it too: a directory changed this recently is not kept.
        await Deno.writeFile(`${root}/files/big/f50000a`, new Uint8Array());
        const pinger = await RawConnection.open(server.port);
        try {
          let pending = true;
          let answered = 0;
          const answer = conn.request(`FILES big ${percentEncode(first.next!)}`)
            .finally(() => pending = false);
          while (pending) {
            assert.equal((await pinger.request("PING")).line, "OK 0");
            if (pending) answered++;
          }
          // Were the event loop held while the page is built, the PINGs would wait for it.
          assert.ok(answered >= 10, `only ${answered} PINGs answered while a page was built`);
          const second = json<Page>(await answer);
          const rest = await pageThrough(conn, "big", { start: second.next });
          const names = [first, second, ...rest].flatMap((page) => page.entries.map((e) => e.name));
          assert.deepEqual(names, [...expected, "f50000a"].sort(byteOrder));
        } finally {
          pinger.close();
        }
      },
    );
  } finally {
    conn.close();
    await server.stop();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("FILES: a page's bounds out of range are a 400 naming them; the connection goes on", async () => {
  await withServer({ "d/a.txt": "a", "d/b.txt": "b", "d/c.txt": "c" }, {}, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      const cases: [string, string][] = [
        ["FILES d . 0", "FILES limit must be 1 to 10000, not 0"],
        ["FILES d . 10001", "FILES limit must be 1 to 10000, not 10001"],
        ["FILES d . ten", "not a number: ten"],
        ["FILES d a/b", "FILES after must be a name (no '/'), or '.' for the start"],
        ["FILES d ..", "FILES after must be a name (no '/'), or '.' for the start"],
        ["FILES d %00", "FILES after must be a name (no '/'), or '.' for the start"],
        ["FILES d . 1 2", "FILES takes 0 to 3 arguments"],
      ];
      for (const [line, message] of cases) {
        const answer = await conn.request(line);
        assert.equal(answer.line, `ERR 400 ${message}`, line);
      }
      const page = json<Page>(await conn.request("FILES d a.txt 1"));
      assert.deepEqual(page.entries.map((e) => e.name), ["b.txt"]);
      assert.equal(page.next, "b.txt");
      assert.deepEqual(json<Page>(await conn.request("FILES d c.txt")), { path: "d", entries: [] });
      assert.deepEqual(json<Page>(await conn.request("FILES d zzz")).entries, [], "past the end");
      assert.equal((await conn.request("FILES nope . 5")).code, 404);
    } finally {
      conn.close();
    }
  });
});

Deno.test("FILES: an older client's `FILES dir` on an ordinary directory gets what it always got", async () => {
  const tree = { "docs/b.txt": "bb", "docs/a.txt": "a", "docs/sub/c.txt": "c", "top.txt": "t" };
  await withServer(tree, {}, async ({ port, dir }) => {
    const conn = await RawConnection.open(port);
    try {
      const mtime = async (path: string) => (await Deno.stat(`${dir}/${path}`)).mtime!.getTime();
      const answer = await conn.request("FILES docs");
      assert.equal(
        new TextDecoder().decode(answer.body),
        JSON.stringify({
          path: "docs",
          entries: [
            { name: "a.txt", type: "file", size: 1, mtime: await mtime("docs/a.txt") },
            { name: "b.txt", type: "file", size: 2, mtime: await mtime("docs/b.txt") },
            { name: "sub", type: "dir", size: 0, mtime: await mtime("docs/sub") },
          ],
        }),
        "the same bytes: no `next` when the listing is whole",
      );
      const top = json<Page>(await conn.request("FILES"));
      assert.deepEqual(Object.keys(top), ["path", "entries"]);
      assert.deepEqual(top.entries.map((e) => e.name), ["docs", "top.txt"]);
      assert.deepEqual(
        json<Page>(await conn.request("FILES .")),
        top,
        "`.` is the served directory",
      );
      const first = json<Page>(await conn.request("FILES . . 1"));
      assert.deepEqual(first.entries.map((e) => e.name), ["docs"]);
      assert.equal(first.next, "docs");
    } finally {
      conn.close();
    }
  });
});
