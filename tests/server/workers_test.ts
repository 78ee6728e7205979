/**
 * `--workers`: several threads serve the same ports with one cache. Every
 * test runs two threads (the main one and a worker) and opens enough
 * connections that both take some (the kernel spreads them by a hash of the
 * client's port): each checks that it did, through `STATS.threads`.
 */

import * as assert from "node:assert/strict";
import { connect } from "../../client.ts";
import type { ServerHandle } from "../../server.ts";
import {
  cacheFileNames,
  eventually,
  getOnce,
  RawConnection,
  seededBytes,
  seededRandom,
  sha256,
  withServer,
} from "../helpers.ts";

const WORKERS = 2;

/** Asks `path` over a new HTTP connection. */
async function httpGet(port: number, path: string) {
  const response = await fetch(`http://127.0.0.1:${port}/${path}`, {
    headers: { Connection: "close" },
  });
  return {
    cache: response.headers.get("x-cache"),
    bytes: new Uint8Array(await response.arrayBuffer()),
  };
}

/** Asserts that every thread received requests. */
async function assertEveryThreadServed(server: ServerHandle): Promise<void> {
  const { threads } = await server.stats();
  assert.equal(threads.length, WORKERS, `threads: ${threads}`);
  for (const requests of threads) assert.ok(requests > 0, `a thread served nothing: ${threads}`);
}

Deno.test("workers: both threads serve, and a path is read from the origin once for all", async () => {
  const body = seededBytes(20_000, 7);
  await withServer({ "a.bin": body }, { workers: WORKERS }, async ({ server, port }) => {
    assert.equal(server.workers, WORKERS);
    // 48 clients at once, each on a connection of its own: one fill, across threads.
    const results = await Promise.all(Array.from({ length: 48 }, () => getOnce(port, "a.bin")));
    for (const result of results) {
      assert.equal(sha256(result.bytes!), sha256(body));
      assert.ok(result.verified);
    }
    const stats = await server.stats();
    // Requests that joined the fill count as misses too, as with one thread.
    assert.equal(stats.hits + stats.misses, 48);
    assert.equal(stats.bytesFromOrigin, body.length, "the origin read once");
    assert.equal(stats.cache.entries, 1);
    await assertEveryThreadServed(server);
  });
});

Deno.test("workers: STATS, LIST and /-/metrics show the whole server from any thread", async () => {
  const tree = { "a.txt": "aaaa", "b.txt": "bbbbbbbb" };
  await withServer(tree, { workers: WORKERS, httpPort: 0 }, async ({ server, port }) => {
    for (let i = 0; i < 24; i++) await getOnce(port, i % 2 ? "a.txt" : "b.txt");
    await assertEveryThreadServed(server);
    // Asked on 16 new connections (so, of both threads), the answers agree.
    for (let i = 0; i < 16; i++) {
      const client = await connect({ port });
      try {
        const stats = await client.stats();
        assert.equal(stats.hits + stats.misses, 24, JSON.stringify(stats));
        assert.equal(stats.misses, 2);
        const listing = await client.list();
        assert.deepEqual(listing.entries.map((entry) => entry.path), ["b.txt", "a.txt"]);
        assert.equal(listing.used, 12);
      } finally {
        client.close();
      }
    }
    const metrics = await (await fetch(`http://127.0.0.1:${server.httpAddr!.port}/-/metrics`, {
      headers: { Connection: "close" },
    })).text();
    assert.match(metrics, /^tcpcache_hits_total 22$/m);
    assert.match(metrics, /^tcpcache_cache_entries 2$/m);
  });
});

Deno.test("workers: randomized load over both protocols keeps every byte right and the bound", async () => {
  const random = seededRandom(11);
  const tree: Record<string, Uint8Array> = {};
  for (let i = 0; i < 40; i++) {
    tree[`f${i}.bin`] = seededBytes(1_000 + Math.floor(random() * 20_000), i);
  }
  const capacity = 64 * 1024;
  await withServer(tree, { workers: WORKERS, httpPort: 0, cacheSize: capacity }, async (t) => {
    const { server, port, cacheDir } = t;
    const httpPort = server.httpAddr!.port;
    let overBound = "";
    let sampling = true;
    // The cache directory never holds more than the capacity.
    const sampler = (async () => {
      while (sampling) {
        let bytes = 0;
        for (const name of cacheFileNames(cacheDir)) {
          bytes += await Deno.stat(`${cacheDir}/${name}`).then((s) => s.size, () => 0);
        }
        if (bytes > capacity) overBound ||= `${bytes} bytes in the cache directory`;
        // LIST, on whichever thread: its entries add up to its `used`, under load too.
        const lister = await connect({ port });
        try {
          const listing = await lister.list();
          const sum = listing.entries.reduce((total, entry) => total + entry.size, 0);
          if (sum !== listing.used) {
            overBound ||= `LIST: entries sum to ${sum}, used ${listing.used}`;
          }
          if (listing.used > capacity) overBound ||= `LIST: used ${listing.used}`;
        } finally {
          lister.close();
        }
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    const names = Object.keys(tree);
    let gets = 0;
    const client = async (seed: number) => {
      const pick = seededRandom(seed);
      for (let i = 0; i < 25; i++) {
        const name = names[Math.floor(pick() * names.length)];
        const result = pick() < 0.5 ? await getOnce(port, name) : await httpGet(httpPort, name);
        assert.equal(sha256(result.bytes!), sha256(tree[name]), `${name} corrupted`);
        gets++;
      }
    };
    await Promise.all(Array.from({ length: 24 }, (_, i) => client(100 + i)));
    sampling = false;
    await sampler;
    assert.equal(overBound, "");
    const stats = await server.stats();
    assert.equal(stats.hits + stats.misses + stats.bypasses, gets);
    assert.ok(stats.cache.used <= capacity);
    assert.ok(stats.evictions > 0, "the load evicted");
    await assertEveryThreadServed(server);
    // The owner's index and the directory agree: every entry has its file.
    const listing = await connect({ port }).then(async (c) => {
      try {
        return await c.list();
      } finally {
        c.close();
      }
    });
    assert.equal(listing.entries.reduce((sum, entry) => sum + entry.size, 0), listing.used);
    const files = new Set<string>();
    for await (const entry of Deno.readDir(cacheDir)) files.add(entry.name);
    assert.equal(files.size - 2, listing.entries.length, [...files].join(" ")); // marker, journal
  });
});

Deno.test("workers: FILES pages from every thread (a worker asks the main thread for them)", async () => {
  const tree = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`d/f${i}`, String(i)]));
  await withServer(tree, { workers: WORKERS }, async ({ server, port }) => {
    // Connections of their own: the kernel spreads them over both threads.
    const pages = await Promise.all(Array.from({ length: 24 }, async (_, i) => {
      const conn = await RawConnection.open(port);
      try {
        const after = i % 7 === 0 ? "." : `f${(i % 7) - 1}`;
        const answer = await conn.request(`FILES d ${after} 3`);
        return { after, page: JSON.parse(new TextDecoder().decode(answer.body)) };
      } finally {
        conn.close();
      }
    }));
    for (const { after, page } of pages) {
      const start = after === "." ? 0 : Number(after.slice(1)) + 1;
      const names = Array.from({ length: Math.min(3, 7 - start) }, (_, i) => `f${start + i}`);
      assert.deepEqual(page.entries.map((e: { name: string }) => e.name), names, after);
      assert.equal(page.next, start + 3 < 7 ? names.at(-1) : undefined, after);
    }
    await assertEveryThreadServed(server);
  });
});

Deno.test("workers: a changed file is served new by every thread", async () => {
  await withServer(
    { "c.txt": "version 0" },
    { workers: WORKERS },
    async ({ server, port, dir }) => {
      for (let version = 1; version <= 10; version++) {
        await Deno.writeTextFile(`${dir}/c.txt`, `version ${version}`);
        const results = await Promise.all(Array.from({ length: 8 }, () => getOnce(port, "c.txt")));
        for (const result of results) {
          assert.equal(new TextDecoder().decode(result.bytes), `version ${version}`);
        }
      }
      await assertEveryThreadServed(server);
    },
  );
});

Deno.test("workers: the connection limit bounds the whole server, not each thread", async () => {
  await withServer(
    { "a.txt": "a" },
    { workers: WORKERS, maxConnections: 6 },
    async ({ server, port }) => {
      const conns: RawConnection[] = [];
      try {
        for (let i = 0; i < 20; i++) conns.push(await RawConnection.open(port));
        await eventually(
          async () => (await server.stats()).connections.rejected === 14,
          "14 refused",
        );
        const stats = await server.stats();
        assert.equal(stats.connections.open, 6, JSON.stringify(stats.connections));
        assert.equal(stats.connections.total, 20);
      } finally {
        for (const conn of conns) conn.close();
      }
      await eventually(async () => (await server.stats()).connections.open === 0, "all closed");
      // The slots came back: six may connect again.
      const again = await Promise.all(Array.from({ length: 6 }, () => getOnce(port, "a.txt")));
      assert.equal(again.length, 6);
    },
  );
});

Deno.test("workers: every thread's requests reach the access log, and close stops them all", async () => {
  const records: string[] = [];
  const lines: string[] = [];
  let port = 0;
  await withServer(
    { "a.txt": "a" },
    {
      workers: WORKERS,
      onRequest: (record) => records.push(record.path ?? ""),
      // Worker threads send their lines formatted, several at a time.
      accessLog: { format: "text", add: (text) => lines.push(...text.split("\n")) },
    },
    async (t) => {
      port = t.port;
      for (let i = 0; i < 30; i++) await getOnce(t.port, "a.txt");
      await assertEveryThreadServed(t.server);
    },
  );
  // close() waited for the workers, which sent what they held.
  assert.equal(records.length, 30);
  assert.equal(lines.length, 30);
  for (const line of lines) {
    assert.match(line, /^\S+Z 127\.0\.0\.1:\d+ GET a\.txt OK \d+ [\d.]+ (hit|miss) - -$/);
  }
  await assert.rejects(() => Deno.connect({ port }), Deno.errors.ConnectionRefused);
});

Deno.test("workers: options a worker cannot rebuild are refused", async () => {
  await assert.rejects(
    () => withServer({}, { workers: 2, policy: () => ({} as never) }, async () => {}),
    /policy given by name/,
  );
  await assert.rejects(
    () => withServer({}, { workers: 0 }, async () => {}),
    /invalid worker count/,
  );
});

Deno.test("workers: a second server cannot join a running server's port", async () => {
  await withServer({ "a.txt": "a" }, { workers: WORKERS }, async ({ port }) => {
    for (const workers of [1, WORKERS]) {
      await assert.rejects(
        () => withServer({}, { workers, port }, async () => {}),
        Deno.errors.AddrInUse,
        `a server with ${workers} thread(s) on the same port`,
      );
    }
  });
});

Deno.test("workers: files admitted while the workers start reach their replicas", async () => {
  const tree: Record<string, string> = {};
  for (let i = 0; i < 40; i++) tree[`f${i}.txt`] = `file ${i}`.repeat(50);
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  let starting = true;
  // Fills on the main thread while the worker threads start.
  const early = (async () => {
    let i = 0;
    while (starting) {
      try {
        await getOnce(port, `f${i++ % 40}.txt`);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
  })();
  await withServer(tree, { workers: WORKERS, port }, async ({ server }) => {
    starting = false;
    await early;
    for (let i = 0; i < 40; i++) await getOnce(port, `f${i}.txt`); // every file cached
    const before = await server.stats();
    const results = await Promise.all(
      Array.from({ length: 160 }, (_, i) => getOnce(port, `f${i % 40}.txt`)),
    );
    assert.deepEqual(results.filter((result) => result.cache !== "hit").length, 0);
    const after = await server.stats();
    assert.equal(after.misses, before.misses, "no thread asked for a fill again");
    await assertEveryThreadServed(server);
  });
});

Deno.test("workers: close() ends promptly with STATS in flight on every thread", async () => {
  for (let round = 0; round < 3; round++) {
    await withServer({ "a.txt": "a" }, { workers: 4, shutdownTimeoutMs: 500 }, async (t) => {
      let asking = true;
      const askers = Array.from({ length: 8 }, async () => {
        while (asking) {
          try {
            const client = await connect({ port: t.port });
            try {
              await client.stats();
            } finally {
              client.close();
            }
          } catch {
            return; // the server stopped
          }
        }
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const started = Date.now();
      await t.server.close();
      const took = Date.now() - started;
      asking = false;
      await Promise.all(askers);
      assert.ok(took < 3_000, `close took ${took} ms`);
    });
  }
});
