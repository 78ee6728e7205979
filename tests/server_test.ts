import assert from "node:assert/strict";
import type { PolicyName } from "../policies/policy.ts";
import { POLICIES } from "../policies/registry.ts";
import type { TcpCacheClient } from "../client.ts";
import { DirectoryOrigin } from "../origin/directory.ts";
import type { Origin } from "../origin/origin.ts";
import { MAX_REQUEST_LINE } from "../protocol.ts";
import { type RequestRecord, type ServerStats, startServer } from "../server.ts";
import {
  authRequests,
  connectTo,
  eventually,
  json,
  overTlsWithToken,
  RawConnection,
  type RawResponse,
  secureTransport,
  seededBytes,
  sha256,
  type TestServer,
  transportOptions,
  withServer,
} from "./helpers.ts";

const MiB = 1024 * 1024;
const hello = "hello, tcpcache\n";
const tree = {
  "hello.txt": hello,
  "docs/a.txt": "alpha\n",
  "docs/b.txt": "bravo\n",
  "docs/deep/c.txt": "charlie\n",
  "bin/medium.bin": seededBytes(300_000, 3),
};

function text(response: RawResponse): string {
  return new TextDecoder().decode(response.body);
}

/**
 * Registers a test of this end-to-end suite twice: over plain TCP, and
 * over TLS with a token (the helpers' secure transport). Serving must not
 * depend on how the client reached the server.
 */
function test(name: string, body: () => Promise<void>): void {
  Deno.test(name, body);
  Deno.test(`${name} [tls+token]`, () => overTlsWithToken(body));
}

/**
 * Registers a test once per eviction policy (serving must not depend on the
 * policy), and once more over TLS with a token.
 */
function eachPolicy(name: string, body: (policy: PolicyName) => Promise<void>): void {
  for (const policy of Object.keys(POLICIES) as PolicyName[]) {
    Deno.test(`${name} [${policy}]`, () => body(policy));
  }
  Deno.test(`${name} [fifo, tls+token]`, () => overTlsWithToken(() => body("fifo")));
}

eachPolicy("GET: a miss admits the file, then hits are served from the cache", async (policy) => {
  await withServer(tree, { policy }, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      const miss = await conn.request("GET hello.txt");
      assert.ok(miss.ok);
      assert.equal(text(miss), hello);
      assert.equal(miss.fields.cache, "miss");
      assert.equal(miss.fields.size, String(hello.length));
      assert.equal(miss.fields.offset, "0");
      assert.equal(miss.fields.sha256, sha256(hello));
      assert.match(miss.fields.mtime, /^[0-9]+$/);
      const hit = await conn.request("GET hello.txt");
      assert.ok(hit.ok);
      assert.equal(hit.fields.cache, "hit");
      assert.equal(text(hit), hello);
      assert.equal(hit.fields.sha256, sha256(hello));
      const big = await conn.request("GET bin/medium.bin");
      assert.equal(sha256(big.body), sha256(tree["bin/medium.bin"]));
      const listing = json<{ entries: { path: string }[] }>(await conn.request("LIST"));
      // Both are listed; their order is the policy's (CLOCK and SIEVE keep
      // the hit hello.txt longer).
      assert.deepEqual(listing.entries.map((e) => e.path).sort(), ["bin/medium.bin", "hello.txt"]);
    } finally {
      conn.close();
    }
  });
});

eachPolicy("GET: a file larger than the cache is streamed, never admitted", async (policy) => {
  const big = seededBytes(3 * MiB, 9);
  await withServer({ "big.bin": big }, { cacheSize: 2 * MiB, policy }, async ({ port }) => {
    const client = await connectTo(port);
    try {
      for (let i = 0; i < 2; i++) {
        const result = await client.get("big.bin");
        assert.equal(result.cache, "bypass");
        assert.equal(result.sha256, undefined);
        assert.equal(sha256(result.bytes!), sha256(big));
      }
      assert.deepEqual((await client.list()).entries, []);
      const counters = await client.stats();
      assert.equal(counters.bypasses, 2);
      assert.equal(counters.misses, 0);
    } finally {
      client.close();
    }
  });
});

eachPolicy(
  "GET ranges: served from the cache when cached, else bypass without admission",
  async (policy) => {
    const bytes = tree["bin/medium.bin"];
    await withServer(tree, { policy }, async ({ port }) => {
      const conn = await RawConnection.open(port);
      try {
        const cold = await conn.request("GET bin/medium.bin 1000 5000");
        assert.equal(cold.fields.cache, "bypass");
        assert.equal(cold.fields.offset, "1000");
        assert.equal(cold.fields.size, String(bytes.length));
        assert.deepEqual(cold.body, bytes.subarray(1000, 6000));
        assert.deepEqual(json(await conn.request("LIST")).entries, []);
        await conn.request("GET bin/medium.bin");
        const warm = await conn.request("GET bin/medium.bin 200000");
        assert.equal(warm.fields.cache, "hit");
        assert.equal(warm.fields.sha256, sha256(bytes), "sha256 is the whole file's");
        assert.deepEqual(warm.body, bytes.subarray(200000));
        const empty = await conn.request(`GET bin/medium.bin ${bytes.length}`);
        assert.equal(empty.line.startsWith("OK 0 "), true);
        const zero = await conn.request("GET bin/medium.bin 5 0");
        assert.equal(zero.line.startsWith("OK 0 "), true);
        const past = await conn.request(`GET bin/medium.bin ${bytes.length + 1}`);
        assert.deepEqual([past.ok, !past.ok && past.code], [false, 416]);
        const over = await conn.request(`GET bin/medium.bin 10 ${bytes.length}`);
        assert.deepEqual([over.ok, !over.ok && over.code], [false, 416]);
        assert.ok((await conn.request("PING")).ok, "416 leaves the connection open");
      } finally {
        conn.close();
      }
    });
  },
);

test("errors: each code of PROTOCOL.md, and the connection stays usable after it", async () => {
  await withServer(tree, {}, async ({ port, dir }) => {
    await Deno.symlink("/etc", `${dir}/outside`);
    await Deno.symlink(`${dir}/hello.txt`, `${dir}/inside-link`);
    const conn = await RawConnection.open(port);
    try {
      const cases: [string, number, RegExp][] = [
        ["FROB", 400, /unknown command/],
        ["GET", 400, /GET takes 1 to 3 arguments/],
        ["PING now", 400, /no arguments/],
        ["GET  hello.txt", 400, /exactly one space/],
        ["GET hello.txt -1", 400, /not a number/],
        ["GET hello.txt 1234567890123456", 400, /not a number/],
        ["GET %zz", 400, /invalid percent escape/],
        ["GET %C3%28", 400, /invalid UTF-8/],
        ["GET /etc/passwd", 400, /relative/],
        ["GET docs/../hello.txt", 400, /segment/],
        ["GET docs%2F..%2Fhello.txt", 400, /segment/],
        ["GET %2e%2e/x", 400, /segment/],
        ["GET a%00b", 400, /NUL/],
        ["GET outside/passwd", 403, /outside the served directory/],
        ["GET nope.txt", 404, /not found: nope.txt/],
        ["GET docs", 404, /not found: docs/],
        ["STAT nope.txt", 404, /not found/],
        ["FILES nope", 404, /not found/],
      ];
      for (const [line, code, message] of cases) {
        const response = await conn.request(line);
        assert.ok(!response.ok, `${line}: expected an error, got ${response.line}`);
        assert.equal(response.code, code, `${line}: ${response.line}`);
        assert.match(response.message, message, line);
        assert.ok((await conn.request("PING")).ok, `connection usable after ${line}`);
      }
      const linked = await conn.request("GET inside-link");
      assert.equal(text(linked), hello, "a link that stays inside is served");
      const counters = json<ServerStats>(await conn.request("STATS"));
      assert.deepEqual(counters.errors, { "400": 13, "403": 1, "404": 4 });
    } finally {
      conn.close();
    }
  });
});

test("errors: 500 when the origin fails, and the connection stays usable", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${root}/ok.txt`, "fine");
    const real = await DirectoryOrigin.open(root);
    const failing: Origin = {
      stat: (path) => real.stat(path),
      list: (path, window) => real.list(path, window),
      open: (path) =>
        path === "ok.txt" ? real.open(path) : Promise.reject(new Error("EIO: injected")),
    };
    await Deno.writeTextFile(`${root}/broken.txt`, "unreadable");
    await withServer({}, { origin: failing }, async ({ port, errors }) => {
      const conn = await RawConnection.open(port);
      try {
        const response = await conn.request("GET broken.txt");
        assert.ok(!response.ok);
        assert.equal(response.code, 500);
        assert.match(response.message, /EIO: injected/);
        assert.equal(text(await conn.request("GET ok.txt")), "fine");
        assert.deepEqual(
          json<{ entries: { path: string }[] }>(await conn.request("LIST")).entries.map((e) =>
            e.path
          ),
          ["ok.txt"],
        );
        assert.equal(errors.length, 1, "the failure is logged");
      } finally {
        conn.close();
      }
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

test("errors: 408 for an idle client and for one trickling its request line", async () => {
  await withServer(tree, { idleTimeoutMs: 300 }, async ({ port }) => {
    const idle = await RawConnection.open(port);
    const slow = await RawConnection.open(port);
    try {
      await slow.send("PI");
      const started = performance.now();
      const [a, b] = await Promise.all([idle.response(), slow.response()]);
      for (const response of [a, b]) {
        assert.ok(!response.ok);
        assert.equal(response.code, 408);
      }
      assert.ok(performance.now() - started >= 250, "not before the timeout");
      assert.ok(await idle.closedByServer());
      assert.ok(await slow.closedByServer());
      // A request that arrives in time on a fresh connection is answered.
      const fresh = await RawConnection.open(port);
      assert.ok((await fresh.request("PING")).ok);
      fresh.close();
    } finally {
      idle.close();
      slow.close();
    }
  });
});

test("errors: 413 past 8192 bytes, then closed; 8192 bytes with the LF is accepted", async () => {
  await withServer(tree, {}, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      // "GET " + path + "\n" = exactly MAX_REQUEST_LINE bytes: a valid, missing path.
      const longest = "GET " + "a".repeat(MAX_REQUEST_LINE - 5);
      const fits = await conn.request(longest);
      assert.ok(!fits.ok);
      assert.equal(fits.code, 404);
      await conn.send("GET " + "a".repeat(MAX_REQUEST_LINE - 4) + "\n");
      const tooLong = await conn.response();
      assert.ok(!tooLong.ok);
      assert.equal(tooLong.code, 413);
      assert.ok(await conn.closedByServer());
    } finally {
      conn.close();
    }
    // No LF at all: the server answers after the bound, without waiting for more.
    const endless = await RawConnection.open(port);
    try {
      await endless.send("x".repeat(MAX_REQUEST_LINE + 100));
      const response = await endless.response();
      assert.ok(!response.ok && response.code === 413);
    } finally {
      endless.close();
    }
  });
});

test("errors: 408 and 413 refusals are counted as requests and logged, as HTTP's are", async () => {
  const records: RequestRecord[] = [];
  await withServer(
    tree,
    { idleTimeoutMs: 300, onRequest: (record) => records.push(record) },
    async ({ port, server }) => {
      const idle = await RawConnection.open(port);
      const long = await RawConnection.open(port);
      try {
        await long.send("x".repeat(MAX_REQUEST_LINE + 1));
        assert.equal((await long.response()).code, 413);
        assert.equal((await idle.response()).code, 408);
      } finally {
        idle.close();
        long.close();
      }
      const stats = await server.stats();
      assert.equal(stats.requests, 2 + authRequests(2));
      assert.equal(stats.protocols.tcp.requests, 2 + authRequests(2));
      assert.deepEqual(stats.errors, { 408: 1, 413: 1 });
    },
  );
  assert.deepEqual(
    records.filter((r) => r.command !== "AUTH").map((r) => [r.command, r.status, r.bytes > 0])
      .sort(),
    [["-", 408, true], ["-", 413, true]],
  );
});

test("errors: 503 past --max-connections; existing connections are untouched", async () => {
  await withServer(tree, { maxConnections: 2 }, async ({ port, server }) => {
    const first = await RawConnection.open(port);
    const second = await RawConnection.open(port);
    try {
      assert.ok((await first.request("PING")).ok);
      assert.ok((await second.request("PING")).ok);
      const third = await RawConnection.open(port, { authenticate: false });
      const rejected = await third.response();
      assert.ok(!rejected.ok);
      assert.equal(rejected.code, 503);
      assert.ok(await third.closedByServer());
      third.close();
      assert.equal(text(await first.request("GET hello.txt")), hello);
      assert.equal((await server.stats()).connections.rejected, 1);
      second.close();
      await eventually(
        async () => (await server.stats()).connections.open === 1,
        "the second to close",
      );
      const replacement = await RawConnection.open(port);
      assert.ok((await replacement.request("PING")).ok, "a freed slot is usable again");
      replacement.close();
    } finally {
      first.close();
      second.close();
    }
  });
});

test("QUIT answers OK 0 and the server closes the connection", async () => {
  await withServer(tree, {}, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      const response = await conn.request("quit");
      assert.equal(response.line, "OK 0");
      assert.ok(await conn.closedByServer());
    } finally {
      conn.close();
    }
  });
});

test("pipelining: 300 requests in one write are answered in order", async () => {
  await withServer(tree, {}, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      const lines: string[] = [];
      for (let i = 0; i < 100; i++) {
        lines.push(i % 2 ? "GET docs/a.txt" : "GET docs/b.txt\r", "NOPE", "PING");
      }
      await conn.send(lines.join("\n") + "\n");
      for (let i = 0; i < 100; i++) {
        const file = await conn.response();
        assert.equal(text(file), i % 2 ? "alpha\n" : "bravo\n");
        const error = await conn.response();
        assert.ok(!error.ok && error.code === 400);
        assert.equal((await conn.response()).line, "OK 0");
      }
    } finally {
      conn.close();
    }
  });
});

eachPolicy(
  "50 concurrent downloads all verify, and each file is read from the origin once",
  async (policy) => {
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 5; i++) files[`f${i}.bin`] = seededBytes(200_000 + i * 77_777, 100 + i);
    await withServer(files, { policy }, async ({ port, server }) => {
      const clients: TcpCacheClient[] = await Promise.all(
        Array.from({ length: 50 }, () => connectTo(port)),
      );
      try {
        const results = await Promise.all(
          clients.map((client, i) => client.get(`f${i % 5}.bin`)),
        );
        results.forEach((result, i) => {
          assert.equal(result.verified, true);
          assert.equal(sha256(result.bytes!), sha256(files[`f${i % 5}.bin`]));
        });
        const counters = await server.stats();
        const total = Object.values(files).reduce((sum, f) => sum + f.length, 0);
        assert.equal(counters.bytesFromOrigin, total, "single flight: one origin read per file");
        assert.equal(counters.misses + counters.hits, 50);
      } finally {
        clients.forEach((client) => client.close());
      }
    });
  },
);

eachPolicy("a client that stops reading does not delay another client", async (policy) => {
  const big = seededBytes(24 * MiB, 21);
  await withServer({ "big.bin": big, "small.txt": "small" }, { policy }, async ({ port }) => {
    const warm = await connectTo(port);
    await warm.get("big.bin"); // cached: the stalled transfer is a hit
    warm.close();
    const stalled = await RawConnection.open(port);
    try {
      await stalled.send("GET big.bin\n");
      const header = await stalled.reader.readLine(1024);
      assert.match(new TextDecoder().decode(header!), /^OK 25165824 /);
      // The stalled client reads nothing more; socket buffers fill up and the
      // server's write to it blocks. Others must still be served, many times.
      const fast = await connectTo(port);
      for (let i = 0; i < 20; i++) {
        assert.equal(new TextDecoder().decode((await fast.get("small.txt")).bytes), "small");
      }
      fast.close();
      // The stalled client, reading at last, gets every byte.
      const rest = new Uint8Array(big.length);
      let filled = 0;
      await stalled.reader.readBody(big.length, (chunk) => {
        rest.set(chunk, filled);
        filled += chunk.length;
      });
      assert.equal(sha256(rest), sha256(big));
    } finally {
      stalled.close();
    }
  });
});

eachPolicy(
  "a client that disconnects mid-body harms neither the server nor the cache",
  async (policy) => {
    const big = seededBytes(8 * MiB, 33);
    await withServer({ "big.bin": big }, { policy }, async ({ port, server }) => {
      for (let i = 0; i < 10; i++) {
        const conn = await RawConnection.open(port);
        await conn.send("GET big.bin\n");
        await conn.reader.readLine(1024);
        await conn.reader.readBody(100_000, () => {});
        conn.close();
      }
      await eventually(
        async () => (await server.stats()).connections.open === 0,
        "connections to close",
      );
      // A streamed miss's fill goes on after its readers left (8 MiB: streamed).
      await eventually(
        () => Promise.resolve(server.cache.lookup("big.bin") !== undefined),
        "the fill to end",
      );
      const client = await connectTo(port);
      try {
        const result = await client.get("big.bin");
        assert.equal(result.cache, "hit");
        assert.equal(result.verified, true);
        assert.equal(sha256(result.bytes!), sha256(big));
        const listing = await client.list();
        assert.equal(listing.used, big.length);
        assert.equal((await server.stats()).bytesFromOrigin, big.length);
      } finally {
        client.close();
      }
    });
  },
);

eachPolicy("an entry evicted while a slow client reads it still arrives whole", async (policy) => {
  const first = seededBytes(6 * MiB, 41);
  const second = seededBytes(6 * MiB, 42);
  await withServer(
    { "first.bin": first, "second.bin": second },
    { cacheSize: 8 * MiB, policy },
    async ({ port }) => {
      const client = await connectTo(port);
      await client.get("first.bin");
      const slow = await RawConnection.open(port);
      try {
        await slow.send("GET first.bin\n");
        const header = await slow.reader.readLine(1024);
        assert.match(new TextDecoder().decode(header!), /cache=hit/);
        await client.get("second.bin"); // evicts first.bin
        assert.deepEqual((await client.list()).entries.map((e) => e.path), ["second.bin"]);
        const body = new Uint8Array(first.length);
        let filled = 0;
        await slow.reader.readBody(first.length, (chunk) => {
          body.set(chunk, filled);
          filled += chunk.length;
        });
        assert.equal(sha256(body), sha256(first));
      } finally {
        slow.close();
        client.close();
      }
    },
  );
});

eachPolicy(
  "a changed origin file is served fresh, never stale; a deleted one is a 404",
  async (policy) => {
    await withServer(tree, { policy }, async ({ port, dir }) => {
      const conn = await RawConnection.open(port);
      try {
        assert.equal((await conn.request("GET hello.txt")).fields.cache, "miss");
        await Deno.writeTextFile(`${dir}/hello.txt`, "changed and longer\n");
        const refreshed = await conn.request("GET hello.txt");
        assert.equal(refreshed.fields.cache, "miss");
        assert.equal(text(refreshed), "changed and longer\n");
        // Same size, new mtime: still refetched.
        await Deno.writeTextFile(`${dir}/hello.txt`, "CHANGED AND LONGER\n");
        await Deno.utime(`${dir}/hello.txt`, 1, 1_000_000);
        const sameSize = await conn.request("GET hello.txt");
        assert.equal(text(sameSize), "CHANGED AND LONGER\n");
        assert.equal(sameSize.fields.cache, "miss");
        assert.equal(sameSize.fields.mtime, "1000000000");
        await Deno.remove(`${dir}/hello.txt`);
        const gone = await conn.request("GET hello.txt");
        assert.ok(!gone.ok && gone.code === 404);
        const listing = json<{ entries: unknown[]; used: number }>(await conn.request("LIST"));
        assert.deepEqual(
          [listing.entries, listing.used],
          [[], 0],
          "the deleted file left the cache",
        );
      } finally {
        conn.close();
      }
    });
  },
);

test("LIST shows entries in FIFO eviction order with capacity, used and policy", async () => {
  const files = {
    "a.bin": seededBytes(400_000, 1),
    "b.bin": seededBytes(400_000, 2),
    "c.bin": seededBytes(400_000, 3),
  };
  await withServer(files, { cacheSize: 1_000_000 }, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      for (const name of ["a.bin", "b.bin", "a.bin", "c.bin"]) await conn.request(`GET ${name}`);
      const listing = json<{
        capacity: number;
        used: number;
        policy: string;
        entries: { path: string; size: number; admitted: number }[];
      }>(await conn.request("LIST"));
      assert.equal(listing.capacity, 1_000_000);
      assert.equal(listing.used, 800_000);
      assert.equal(listing.policy, "fifo");
      assert.deepEqual(listing.entries.map((e) => [e.path, e.size]), [
        ["b.bin", 400_000],
        ["c.bin", 400_000],
      ]);
      assert.ok(listing.entries.every((e) => Math.abs(e.admitted - Date.now()) < 60_000));
      const counters = json<ServerStats>(await conn.request("STATS"));
      assert.equal(counters.evictions, 1);
      assert.deepEqual(
        [counters.hits, counters.misses, counters.bypasses],
        [1, 3, 0],
      );
    } finally {
      conn.close();
    }
  });
});

test("FILES, STAT and STATS answer with the documented JSON", async () => {
  await withServer(tree, {}, async ({ port, dir }) => {
    const conn = await RawConnection.open(port);
    try {
      const root = json<{ path: string; entries: { name: string; type: string; size: number }[] }>(
        await conn.request("FILES"),
      );
      assert.equal(root.path, "");
      assert.deepEqual(root.entries.map((e) => [e.name, e.type]), [
        ["bin", "dir"],
        ["docs", "dir"],
        ["hello.txt", "file"],
      ]);
      assert.equal(root.entries[2].size, hello.length);
      const docs = json<{ path: string; entries: { name: string }[] }>(
        await conn.request("FILES docs"),
      );
      assert.equal(docs.path, "docs");
      assert.deepEqual(docs.entries.map((e) => e.name), ["a.txt", "b.txt", "deep"]);
      const before = json(await conn.request("STAT hello.txt"));
      const info = await Deno.stat(`${dir}/hello.txt`);
      assert.deepEqual(before, {
        path: "hello.txt",
        size: hello.length,
        mtime: info.mtime!.getTime(),
        cached: false,
        sha256: null,
      });
      await conn.request("GET hello.txt");
      const after = json(await conn.request("STAT hello.txt"));
      assert.equal(after.cached, true);
      assert.equal(after.sha256, sha256(hello));
      const counters = json<ServerStats>(await conn.request("STATS"));
      assert.equal(counters.requests, 6 + authRequests(1));
      assert.equal(counters.misses, 1);
      assert.equal(counters.bytesFromOrigin, hello.length);
      assert.deepEqual(counters.connections, { open: 1, total: 1, rejected: 0 });
      assert.deepEqual(counters.cache, {
        capacity: 64 * MiB,
        used: hello.length,
        entries: 1,
        policy: "fifo",
        memory: hello.length, // small: also held in memory
        effectiveCapacity: 64 * MiB,
        writeFailures: 0,
        adopted: 0,
        adopting: 0,
        housekeepingBytes: 0,
        housekeeping: "done",
      });
      assert.ok(counters.bytesSent > hello.length);
      assert.match(counters.version, /^[0-9]+\.[0-9]+\.[0-9]+/);
      const secure = secureTransport();
      assert.deepEqual(counters.access, {
        tls: secure,
        allow: null,
        tokens: secure ? 1 : 0,
        adminTokens: secure ? 1 : 0,
        denied: 0,
        tlsHandshakes: secure ? 1 : 0,
        tlsHandshakeFailures: 0,
        authFailures: 0,
        authLimited: 0,
      });
    } finally {
      conn.close();
    }
  });
});

test("close() lets a transfer in progress finish, then stops", async () => {
  const big = seededBytes(16 * MiB, 55);
  await withServer({ "big.bin": big }, {}, async ({ port, server }: TestServer) => {
    const idle = await RawConnection.open(port);
    const busy = await RawConnection.open(port);
    try {
      assert.ok((await idle.request("PING")).ok);
      await busy.send("GET big.bin\n");
      await busy.reader.readLine(1024);
      const closed = server.close();
      const body = new Uint8Array(big.length);
      let filled = 0;
      await busy.reader.readBody(big.length, (chunk) => {
        body.set(chunk, filled);
        filled += chunk.length;
      });
      assert.equal(sha256(body), sha256(big));
      await closed;
      assert.ok(await idle.closedByServer(), "idle connections are closed");
      assert.ok(await busy.closedByServer());
      await assert.rejects(RawConnection.open(port), "no longer accepting");
    } finally {
      idle.close();
      busy.close();
    }
  });
});

test("a cache directory inside the served directory is invisible to clients", async () => {
  const root = await Deno.makeTempDir();
  const server = await startServer({
    dir: root,
    cacheDir: `${root}/cache`,
    port: 0,
    ...transportOptions(),
  });
  try {
    await Deno.writeTextFile(`${root}/a.txt`, "a");
    const conn = await RawConnection.open(server.addr.port);
    try {
      await conn.request("GET a.txt");
      const files = json<{ entries: { name: string }[] }>(await conn.request("FILES"));
      assert.deepEqual(files.entries.map((e) => e.name), ["a.txt"]);
      const marker = await conn.request("GET cache/.tcpcache");
      assert.ok(!marker.ok && marker.code === 403, marker.line);
      const entry = await conn.request(`GET cache/${server.cache.entries()[0].file}`);
      assert.ok(!entry.ok && entry.code === 403, entry.line);
      const journal = await conn.request("GET cache/journal");
      assert.ok(!journal.ok && journal.code === 403, journal.line);
    } finally {
      conn.close();
    }
  } finally {
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
});

test("a second server that cannot take its port leaves the first one's cache alone", async () => {
  const big = seededBytes(200_000, 61);
  await withServer({ "big.bin": big }, {}, async ({ port, dir, cacheDir, server }) => {
    const client = await connectTo(port);
    try {
      assert.equal((await client.get("big.bin")).cache, "miss");
      await assert.rejects(
        startServer({ dir, cacheDir, port, ...transportOptions() }),
        Deno.errors.AddrInUse,
      );
      const again = await client.get("big.bin");
      assert.equal(again.cache, "hit", "the cache file is still there");
      assert.equal(sha256(again.bytes!), sha256(big));
      assert.equal(server.cache.count, 1);
    } finally {
      client.close();
    }
  });
});

test("an entry whose cache file vanished is dropped and fetched again", async () => {
  const big = seededBytes(200_000, 62); // over the in-memory limit: served from its file
  await withServer({ "big.bin": big }, {}, async ({ port, cacheDir, server }) => {
    const client = await connectTo(port);
    try {
      await client.get("big.bin");
      await Deno.remove(`${cacheDir}/${server.cache.lookup("big.bin")!.file}`);
      const refetched = await client.get("big.bin");
      assert.equal(refetched.cache, "miss");
      assert.equal(sha256(refetched.bytes!), sha256(big));
      assert.equal((await client.get("big.bin")).cache, "hit");
    } finally {
      client.close();
    }
  });
});

test("a cache directory that cannot be created: the server serves without a cache and says so; requireCache refuses", async () => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-test-" });
  await Deno.writeTextFile(`${root}/hello.txt`, hello);
  await Deno.writeTextFile(`${root}/not-a-dir`, "a file where the cache's parent should be\n");
  const cacheDir = `${root}/not-a-dir/cache`;
  try {
    await assert.rejects(
      startServer({ dir: root, cacheDir, port: 0, requireCache: true, ...transportOptions() }),
      /cannot use cache directory .*not-a-dir\/cache/,
    );
    const errors: string[] = [];
    const server = await startServer({
      dir: root,
      cacheDir,
      port: 0,
      onError: (line) => errors.push(line),
      ...transportOptions(),
    });
    try {
      assert.match(errors.join("\n"), /SERVING WITHOUT A CACHE/);
      const client = await connectTo(server.addr.port);
      for (let i = 0; i < 2; i++) {
        const result = await client.get("hello.txt");
        assert.equal(result.cache, "bypass");
        assert.equal(new TextDecoder().decode(result.bytes), hello);
      }
      const stats = await client.stats() as unknown as ServerStats;
      assert.match(stats.cache.unavailable ?? "", /cannot use cache directory/);
      assert.deepEqual([stats.cache.capacity, stats.bypasses, stats.misses], [0, 2, 0]);
      client.close();
    } finally {
      await server.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
