/**
 * The origin shield through the server, over real sockets, both protocols:
 * an S3 origin (the stand-in store, tests/origin/fake_s3.ts) behind a proxy
 * that makes it slow, refusing, hung or throttling (bench/origin_proxy.ts),
 * counting what reaches it. Lifetimes, conditional revalidation, stale
 * answers and their marks, the breaker, negative caching, PURGE, and one
 * shield for every worker thread.
 */

import assert from "node:assert/strict";
import { OriginProxy } from "../../bench/origin_proxy.ts";
import { S3Origin } from "../../origin/s3.ts";
import { type OriginShieldOptions, startServer } from "../../server.ts";
import { json, RawConnection, type RawResponse, seededBytes, sha256 } from "../helpers.ts";
import { FakeS3 } from "../origin/fake_s3.ts";

interface Setup {
  fake: FakeS3;
  proxy: OriginProxy;
  tcp: number;
  http: number;
  /** Origin requests of `method` (and `key`) the store saw. */
  count(method: string, key?: string): number;
}

/** A server on an S3 origin behind the proxy, with `shield` options. */
async function withShieldedServer(
  shield: OriginShieldOptions,
  test: (setup: Setup) => Promise<void>,
  options: { workers?: number; retries?: number } = {},
): Promise<void> {
  const fake = new FakeS3();
  const proxy = OriginProxy.start(fake.endpoint.replace("http://", ""));
  const root = await Deno.makeTempDir();
  const server = await startServer({
    port: 0,
    httpPort: 0,
    cacheDir: `${root}/cache`,
    origin: new S3Origin({
      url: "s3://bucket",
      endpoint: proxy.endpoint,
      accessKeyId: "KEY",
      secretAccessKey: "SECRET",
      retries: options.retries ?? 0,
      backoffMs: 5,
      timeoutMs: 2_000,
    }),
    originShield: shield,
    workers: options.workers,
    onError: () => {},
  });
  const count = (method: string, key?: string) =>
    fake.requests.filter((r) => r.method === method && (key === undefined || r.key === key))
      .length;
  try {
    await test({ fake, proxy, tcp: server.addr.port, http: server.httpAddr!.port, count });
  } finally {
    await server.close();
    proxy.close();
    await fake.close();
    await Deno.remove(root, { recursive: true });
  }
}

const text = (value: string) => new TextEncoder().encode(value);

Deno.test("shield: within --max-age a hit asks the origin nothing; after it, one conditional GET (304)", async () => {
  await withShieldedServer({ maxAgeMs: 1_000 }, async ({ fake, tcp, http, count }) => {
    fake.put("a.txt", text("alpha"));
    const client = await RawConnection.open(tcp);
    try {
      const miss = await client.request("GET a.txt");
      assert.equal(miss.fields.cache, "miss");
      const before = fake.requests.length;
      for (let i = 0; i < 20; i++) {
        const hit = await client.request("GET a.txt");
        assert.equal(hit.fields.cache, "hit");
        assert.equal(hit.fields.stale, undefined);
        assert.equal(new TextDecoder().decode(hit.body), "alpha");
      }
      const response = await fetch(`http://127.0.0.1:${http}/a.txt`);
      assert.equal(response.headers.get("x-cache"), "HIT");
      assert.equal(response.headers.get("age"), "0");
      await response.body?.cancel();
      const metrics = await (await fetch(`http://127.0.0.1:${http}/-/metrics`)).text();
      assert.match(metrics, /^tcpcache_origin_fresh_total 21$/m);
      assert.match(metrics, /^tcpcache_origin_breaker_open 0$/m);
      assert.equal(fake.requests.length, before, "21 hits, no origin request");
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const again = await client.request("GET a.txt");
      assert.equal(again.fields.cache, "hit");
      assert.equal(fake.requests.length, before + 1);
      assert.equal(fake.requests.at(-1)!.ifNoneMatch, fake.objects.get("a.txt")!.etag);
      assert.equal(count("GET", "a.txt"), 2, "the fill, then one conditional GET");
    } finally {
      client.close();
    }
  });
});

Deno.test("shield: a changed object is fetched by the revalidation itself, not by a second GET", async () => {
  await withShieldedServer({ maxAgeMs: 300 }, async ({ fake, tcp, count }) => {
    fake.put("a.txt", text("alpha"));
    assert.equal((await getRaw(tcp, "a.txt")).fields.cache, "miss");
    fake.put("a.txt", text("beta, changed"));
    await new Promise((resolve) => setTimeout(resolve, 350));
    const before = fake.requests.length;
    const changed = await getRaw(tcp, "a.txt");
    assert.equal(new TextDecoder().decode(changed.body), "beta, changed");
    assert.equal(changed.fields.cache, "miss", "the new version filled the cache");
    assert.equal(changed.fields.sha256, sha256("beta, changed"));
    assert.equal(fake.requests.length, before + 1, "one request: the conditional GET's 200");
    assert.equal(count("HEAD"), 1, "the first request's stat only");
  });
});

Deno.test("shield: stale-if-error serves cached files marked stale while the origin refuses, hangs or throttles; uncached ones are an immediate 503", async () => {
  await withShieldedServer(
    { maxAgeMs: 100, staleIfErrorMs: 60_000, probeIntervalMs: 60_000 },
    async ({ fake, proxy, tcp, http }) => {
      const bytes = seededBytes(4096, 3);
      fake.put("a.bin", bytes);
      fake.put("b.bin", bytes);
      assert.equal((await getRaw(tcp, "a.bin")).fields.cache, "miss");
      for (const mode of ["refuse", "hang", "throttle"] as const) {
        proxy.setMode(mode);
        await new Promise((resolve) => setTimeout(resolve, 150)); // past the lifetime
        const started = performance.now();
        const stale = await getRaw(tcp, "a.bin");
        assert.equal(stale.fields.stale, "1", mode);
        assert.equal(sha256(stale.body), sha256(bytes), mode);
        const response = await fetch(`http://127.0.0.1:${http}/a.bin`);
        assert.equal(response.headers.get("x-cache"), "STALE", mode);
        assert.match(response.headers.get("warning") ?? "", /^110 /, mode);
        assert.equal(sha256(new Uint8Array(await response.arrayBuffer())), sha256(bytes));
        // The first refusal or throttled answer is quick; a hang waits the
        // patience (1 s) once, then the breaker is open and all is quick.
        assert.ok(performance.now() - started < 3_000, `${mode}: ${performance.now() - started}`);
        const uncached = await fetch(`http://127.0.0.1:${http}/b.bin`);
        assert.equal(uncached.status, 503, mode);
        assert.equal(uncached.headers.get("retry-after"), "1");
        await uncached.body?.cancel();
        proxy.setMode("pass");
      }
    },
  );
});

Deno.test("shield: once the breaker is open the origin sees only the probes, and freshness is back after one", async () => {
  await withShieldedServer(
    { maxAgeMs: 50, staleIfErrorMs: 60_000, probeIntervalMs: 300, breakerFailures: 2 },
    async ({ fake, proxy, tcp }) => {
      for (const key of ["a", "b", "c"]) fake.put(key, text(key));
      for (const key of ["a", "b", "c"]) await getRaw(tcp, key);
      proxy.setMode("refuse");
      await new Promise((resolve) => setTimeout(resolve, 60));
      const client = await RawConnection.open(tcp);
      const started = performance.now();
      let answered = 0;
      try {
        while (performance.now() - started < 1_000) {
          for (const key of ["a", "b", "c"]) {
            const t0 = performance.now();
            const response = await client.request(`GET ${key}`);
            assert.equal(response.fields.stale, "1");
            if (answered > 10) assert.ok(performance.now() - t0 < 50, "from the cache, at once");
            answered++;
          }
        }
      } finally {
        client.close();
      }
      assert.ok(answered > 100, `${answered} answers in a second`);
      // Refused connections never reach the store: the proxy counts none, so
      // count the attempts that could have gone: 2 failures, then ~3 probes.
      const stats = json(await statsOf(tcp)) as { origin: { breaker: Record<string, number> } };
      const breaker = stats.origin.breaker;
      assert.equal(breaker.opened, 1);
      assert.ok(breaker.probes >= 2 && breaker.probes <= 4, `probes: ${breaker.probes}`);
      assert.ok(breaker.refused > 100);
      // Back: the next probe (its request answered stale at once) closes
      // the breaker, and answers are fresh again within one probe interval.
      proxy.setMode("pass");
      const back = performance.now();
      let fresh: RawResponse | undefined;
      while (performance.now() - back < 2_000) {
        const answer = await getRaw(tcp, "a");
        if (answer.fields.stale === undefined) {
          fresh = answer;
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.ok(fresh, "fresh again");
      assert.ok(performance.now() - back < 700, `fresh after ${performance.now() - back} ms`);
    },
  );
});

Deno.test("shield: 32 concurrent requests after the lifetime make one origin request; with stale-while-revalidate they do not wait", async () => {
  for (const swr of [0, 10_000]) {
    await withShieldedServer(
      { maxAgeMs: 100, staleWhileRevalidateMs: swr },
      async ({ fake, proxy, tcp }) => {
        fake.put("hot.txt", text("hot"));
        await getRaw(tcp, "hot.txt");
        await new Promise((resolve) => setTimeout(resolve, 150));
        proxy.delayMs = 500;
        const before = fake.requests.length;
        const times: number[] = [];
        const answers = await Promise.all(Array.from({ length: 32 }, async () => {
          const t0 = performance.now();
          const answer = await getRaw(tcp, "hot.txt");
          times.push(performance.now() - t0);
          return answer;
        }));
        assert.ok(answers.every((a) => new TextDecoder().decode(a.body) === "hot"));
        await new Promise((resolve) => setTimeout(resolve, 700));
        assert.equal(fake.requests.length - before, 1, `swr ${swr}: one origin request`);
        times.sort((a, b) => a - b);
        const median = times[16];
        if (swr) assert.ok(median < 200, `swr: p50 ${median} ms`);
        else assert.ok(median >= 450, `all wait on the one revalidation: p50 ${median} ms`);
      },
    );
  }
});

Deno.test("shield: an object that changed within the lifetime of what is remembered is asked again, not a 500 until the lifetime ends", async () => {
  await withShieldedServer({ maxAgeMs: 60_000 }, async ({ fake, tcp }) => {
    fake.put("a.bin", seededBytes(5000, 1));
    const client = await RawConnection.open(tcp);
    try {
      // A range of an uncached object: streamed, its stat remembered.
      assert.equal((await client.request("GET a.bin 0 100")).fields.cache, "bypass");
      const changed = seededBytes(6000, 2);
      fake.put("a.bin", changed);
      for (let i = 0; i < 3; i++) {
        const again = await client.request("GET a.bin 0 100");
        assert.equal(again.fields.size, "6000", again.line);
        assert.deepEqual(again.body, changed.subarray(0, 100));
      }
    } finally {
      client.close();
    }
  });
});

Deno.test("shield: a 404 is remembered for --negative-max-age, over both protocols", async () => {
  await withShieldedServer({ negativeMaxAgeMs: 60_000 }, async ({ fake, tcp, http }) => {
    const client = await RawConnection.open(tcp);
    try {
      for (let i = 0; i < 10; i++) assert.equal((await client.request("GET gone.txt")).code, 404);
    } finally {
      client.close();
    }
    for (let i = 0; i < 10; i++) {
      const response = await fetch(`http://127.0.0.1:${http}/gone.txt`);
      assert.equal(response.status, 404);
      await response.body?.cancel();
    }
    const asked = fake.requests.filter((r) => r.key === "gone.txt").length;
    const listed = fake.requests.filter((r) => r.key === "").length;
    assert.deepEqual([asked, listed], [1, 1], "one HEAD, one listing (is it a directory?)");
  });
});

Deno.test("shield: PURGE drops a file (or a prefix) from the cache and from what is remembered, over both protocols", async () => {
  await withShieldedServer({ maxAgeMs: 60_000 }, async ({ fake, tcp, http }) => {
    for (const key of ["d/a", "d/b", "e/c"]) fake.put(key, text(key));
    for (const key of ["d/a", "d/b", "e/c"]) await getRaw(tcp, key);
    const client = await RawConnection.open(tcp);
    try {
      const purged = await client.request("PURGE d/a");
      assert.equal(purged.line, "OK 0 purged=1");
      assert.equal((await client.request("PURGE nothing/here")).line, "OK 0 purged=0");
      assert.equal((await client.request("PURGE ../x")).code, 400);
      fake.put("d/a", text("d/a, new"));
      const after = await client.request("GET d/a");
      assert.equal(after.fields.cache, "miss", "asked the origin again");
      assert.equal(new TextDecoder().decode(after.body), "d/a, new");
      assert.equal((await client.request("GET d/b")).fields.cache, "hit");
    } finally {
      client.close();
    }
    // (fetch would resolve the dot segments itself: sent raw.)
    const raw = await RawConnection.open(http);
    try {
      await raw.send("PURGE /d/../* HTTP/1.1\r\nHost: x\r\n\r\n");
      const line = await raw.reader.readLine(1024);
      assert.match(new TextDecoder().decode(line!), /^HTTP\/1\.1 400 /, "dot segments refused");
    } finally {
      raw.close();
    }
    const response = await fetch(`http://127.0.0.1:${http}/d/*`, { method: "PURGE" });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { purged: 2 });
    const listing = json(await listOf(tcp)) as { entries: { path: string }[] };
    assert.deepEqual(listing.entries.map((e) => e.path), ["e/c"]);
  });
});

Deno.test("shield: with worker threads one shield serves them all (one origin request per lifetime)", async () => {
  await withShieldedServer({ maxAgeMs: 60_000 }, async ({ fake, tcp }) => {
    fake.put("a.txt", text("alpha"));
    await getRaw(tcp, "a.txt");
    const before = fake.requests.length;
    // New connections land on either thread.
    for (let i = 0; i < 40; i++) {
      assert.equal((await getRaw(tcp, "a.txt")).fields.cache, "hit");
    }
    assert.equal(fake.requests.length, before);
    const stats = json(await statsOf(tcp)) as { threads: number[]; origin: { fresh: number } };
    assert.ok(stats.threads.every((n) => n > 0), `both threads answered: ${stats.threads}`);
    assert.ok(stats.origin.fresh >= 40);
    // A purge on one thread reaches what every thread keeps.
    fake.put("a.txt", text("alpha, changed"));
    assert.equal((await requestOnce(tcp, "PURGE a.txt")).line, "OK 0 purged=1");
    for (let i = 0; i < 20; i++) {
      const answer = await getRaw(tcp, "a.txt");
      assert.equal(new TextDecoder().decode(answer.body), "alpha, changed", `request ${i}`);
    }
  }, { workers: 2 });
});

/** One request line on a connection of its own (with worker threads, any thread may answer it). */
async function requestOnce(port: number, line: string): Promise<RawResponse> {
  const client = await RawConnection.open(port);
  try {
    return await client.request(line);
  } finally {
    client.close();
  }
}

const getRaw = (port: number, path: string) => requestOnce(port, `GET ${path}`);
const statsOf = (port: number) => requestOnce(port, "STATS");
const listOf = (port: number) => requestOnce(port, "LIST");
