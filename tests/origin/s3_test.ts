/**
 * The S3 origin against a small stand-in S3 server in this process, so
 * that the store's failures can be made to order: throttling, 5xx, a dead
 * endpoint, a body that stalls or breaks off, refused credentials. (The
 * real store, Ceph's RADOS Gateway, is in s3_ceph_test.ts.)
 */

import assert from "node:assert/strict";
import { forbidsStale, parseS3Url, S3Origin, statedLifetime } from "../../origin/s3.ts";
import { FILES_PAGE_LIMIT, RequestError } from "../../protocol.ts";
import { startServer } from "../../server.ts";
import { RawConnection, seededBytes, sha256 } from "../helpers.ts";
import { FakeS3 } from "./fake_s3.ts";

function origin(fake: FakeS3, options: { timeoutMs?: number; retries?: number } = {}): S3Origin {
  return new S3Origin({
    url: "s3://bucket/pre/fix",
    endpoint: fake.endpoint,
    accessKeyId: "KEY",
    secretAccessKey: "SECRET",
    backoffMs: 5,
    ...options,
  });
}

/** A page that holds every entry of the small listings here. */
const WHOLE = { limit: FILES_PAGE_LIMIT };

async function withFake(test: (fake: FakeS3) => Promise<void>): Promise<void> {
  const fake = new FakeS3();
  try {
    await test(fake);
  } finally {
    await fake.close();
  }
}

async function readAll(file: { read(into: Uint8Array): Promise<number | null> }) {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(1000);
  for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
    chunks.push(buffer.slice(0, n));
  }
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

async function assertProtocolError(promise: Promise<unknown>, code: number, message: RegExp) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof RequestError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, message);
    return true;
  });
}

Deno.test("parseS3Url: bucket and prefix, normalised; anything else refused", () => {
  assert.deepEqual(parseS3Url("s3://my-bucket"), { bucket: "my-bucket", prefix: "" });
  assert.deepEqual(parseS3Url("s3://b.example/a/b/"), { bucket: "b.example", prefix: "a/b/" });
  assert.deepEqual(parseS3Url("s3://bkt//x"), { bucket: "bkt", prefix: "x/" });
  for (const bad of ["http://b/x", "s3://", "s3://B", "s3://a", "bucket/x"]) {
    assert.throws(() => parseS3Url(bad), RangeError, bad);
  }
});

Deno.test("statedLifetime: s-maxage, then max-age, then Expires minus Date; no-cache and no-store are 0", () => {
  const of = (headers: Record<string, string>) => statedLifetime(new Headers(headers));
  assert.equal(of({}), undefined);
  assert.equal(of({ "cache-control": "public, max-age=60" }), 60_000);
  assert.equal(of({ "cache-control": "max-age=60, s-maxage=5" }), 5_000, "a shared cache's own");
  assert.equal(of({ "cache-control": 'max-age="30"' }), 30_000);
  assert.equal(of({ "cache-control": "no-cache, max-age=60" }), 0);
  assert.equal(of({ "cache-control": "private, no-store" }), 0);
  assert.equal(of({ "cache-control": "no-transform" }), undefined, "not no-store");
  assert.equal(of({ "cache-control": "max-age=99999999999" }), 365 * 24 * 3600 * 1000, "capped");
  const date = "Mon, 07 Dec 2026 12:00:00 GMT";
  assert.equal(of({ date, expires: "Mon, 07 Dec 2026 12:02:00 GMT" }), 120_000);
  assert.equal(of({ date, expires: "Mon, 07 Dec 2026 11:00:00 GMT" }), 0, "already expired");
  assert.equal(of({ date, expires: "0" }), 0, "an unreadable Expires is expired");
  assert.equal(of({ "cache-control": "max-age=10", expires: "0" }), 10_000, "max-age wins");
});

Deno.test("forbidsStale: no-cache, no-store, must-revalidate and proxy-revalidate; nothing else", () => {
  const of = (control: string) => forbidsStale(new Headers({ "cache-control": control }));
  for (const yes of ["no-cache", "max-age=60, must-revalidate", "Proxy-Revalidate", "no-store"]) {
    assert.equal(of(yes), true, yes);
  }
  for (const no of ["", "max-age=60", "public", "no-transform", "stale-if-error=60"]) {
    assert.equal(of(no), false, no);
  }
});

Deno.test("S3Origin: stat, whole and ranged reads, listings, signed path-style requests", async () => {
  await withFake(async (fake) => {
    const bytes = seededBytes(5000, 3);
    fake.put("pre/fix/dir/a b.bin", bytes);
    fake.put("pre/fix/dir/sub/c.txt", new TextEncoder().encode("c"));
    fake.put("pre/fix/top.txt", new TextEncoder().encode("top"));
    fake.put("elsewhere.txt", new TextEncoder().encode("not under the prefix"));
    const s3 = origin(fake);

    const stat = await s3.stat("dir/a b.bin");
    assert.equal(stat.size, 5000);
    assert.ok(stat.validator.includes(fake.objects.get("pre/fix/dir/a b.bin")!.etag));

    const whole = await s3.open("dir/a b.bin");
    assert.deepEqual(whole.stat, stat);
    assert.deepEqual(await readAll(whole), bytes);
    const part = await s3.open("dir/a b.bin", { offset: 100, length: 50 });
    assert.equal(part.stat.size, 5000, "the whole object's size, from Content-Range");
    assert.deepEqual(await readAll(part), bytes.subarray(100, 150));
    assert.equal(fake.requests.at(-1)!.range, "bytes=100-149");
    const empty = await s3.open("dir/a b.bin", { offset: 10, length: 0 });
    assert.equal(await empty.read(new Uint8Array(4)), null);

    const top = await s3.list("", WHOLE);
    assert.deepEqual(top.entries.map((e) => [e.name, e.type]), [["dir", "dir"], [
      "top.txt",
      "file",
    ]]);
    assert.equal(top.next, undefined);
    assert.deepEqual(
      (await s3.list("dir", WHOLE)).entries.map((e) => [e.name, e.type, e.size]),
      [["a b.bin", "file", 5000], ["sub", "dir", 0]],
    );
    await assertProtocolError(s3.list("nothing", WHOLE), 404, /not found: nothing/);
    await assertProtocolError(s3.stat("missing.txt"), 404, /not found: missing\.txt/);
    assert.ok(fake.requests.every((r) => r.signed), "every request carries a SigV4 signature");
  });
});

Deno.test("S3Origin: listings across pages, and keys with XML's special characters", async () => {
  await withFake(async (fake) => {
    fake.pageSize = 2;
    const names = ["a&b.txt", "c<d>.txt", "e'f\"g.txt", "plain.txt", "z.txt"];
    for (const name of names) fake.put(`pre/fix/${name}`, new TextEncoder().encode(name));
    fake.put("pre/fix/sub/x.txt", new TextEncoder().encode("x"));
    const s3 = origin(fake);
    const listed = await s3.list("", WHOLE);
    assert.deepEqual(listed.entries.map((e) => e.name), [...names, "sub"].sort());
    const pages = fake.requests.filter((r) => r.key === "").length;
    assert.equal(pages, 3, "six entries, two a page");
    assert.equal((await s3.stat("a&b.txt")).size, "a&b.txt".length);
  });
});

/** UTF-8 byte order, independent of the code under test. */
function byteOrder(a: string, b: string): number {
  const [x, y] = [new TextEncoder().encode(a), new TextEncoder().encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/**
 * Keys whose order as S3 lists them (a directory as its name and `/`) is not
 * the listing's (by name): `m-00`...`m-59` come before the directory `m` in
 * the store's order, after it in the listing's; a key and a directory share
 * the name `a`; names past ASCII sort by their UTF-8 bytes.
 */
function trickyKeys(fake: FakeS3): { name: string; type: "file" | "dir" }[] {
  const files = ["a", "a-b", "a.txt", "a0", "b", "c d", "é", "\uFF01", "\u{1F600}", "z"];
  for (let i = 0; i < 60; i++) files.push(`m-${String(i).padStart(2, "0")}`);
  const dirs = ["a", "a-b.d", "m", "m-00.d", "n", "\u{1F600}d"];
  for (const name of files) fake.put(`pre/fix/${name}`, new TextEncoder().encode(name));
  for (const name of dirs) fake.put(`pre/fix/${name}/inside.txt`, new TextEncoder().encode("x"));
  fake.put("pre/fix/m/deeper/y.txt", new TextEncoder().encode("y"));
  const entries = [
    ...files.map((name) => ({ name, type: "file" as const })),
    ...dirs.map((name) => ({ name, type: "dir" as const })),
  ];
  return entries.sort((a, b) => byteOrder(a.name, b.name) || (a.type === "file" ? -1 : 1));
}

Deno.test("S3Origin: pages by name with start-after and max-keys, directories the store sends late included", async () => {
  await withFake(async (fake) => {
    fake.pageSize = 7; // the store's answers hold 7 keys at most
    const expected = trickyKeys(fake);
    const s3 = origin(fake);
    for (const limit of [1, 2, 3, 5, 10, 1000]) {
      const listed: { name: string; type: string }[] = [];
      let next: string | undefined;
      let pages = 0;
      do {
        const page = await s3.list("", { after: next, limit });
        pages++;
        const pair = page.entries.length === 2 && page.entries[0].name === page.entries[1].name;
        assert.ok(page.entries.length <= limit || (limit === 1 && pair), `limit ${limit}`);
        listed.push(...page.entries.map(({ name, type }) => ({ name, type })));
        if (page.next !== undefined) assert.equal(page.next, page.entries.at(-1)!.name);
        next = page.next;
        assert.ok(pages <= expected.length, "the pages move on");
      } while (next !== undefined);
      assert.deepEqual(listed, expected, `every entry once, in name order, limit ${limit}`);
    }
    // A page asks the store for what it needs, never the whole prefix.
    for (const { query } of fake.requests) {
      if (query.get("list-type") === "2") assert.ok(Number(query.get("max-keys")) <= 1000);
    }
    const before = fake.requests.length;
    const page = await s3.list("", { limit: 3 });
    assert.deepEqual(page.entries.map((e) => e.name), ["a", "a", "a-b"]);
    const asked = fake.requests.slice(before);
    assert.deepEqual(
      asked.map((r) => r.query.get("max-keys")),
      ["3", "1", "1"],
      asked.map((r) => r.query.toString()).join("\n"),
    );
    assert.deepEqual(asked.slice(1).map((r) => r.query.get("prefix")), [
      "pre/fix/a/",
      "pre/fix/a-b/",
    ], "the directories that may sort first");
    // A later page of a prefix with nothing left is empty; only a first page can be a 404.
    assert.deepEqual(await s3.list("nothing", { after: "x", limit: 5 }), { entries: [] });
  });
});

Deno.test("through the server: FILES pages of an S3 prefix", async () => {
  await withFake(async (fake) => {
    fake.pageSize = 4;
    const expected = trickyKeys(fake);
    const root = await Deno.makeTempDir();
    const server = await startServer({ port: 0, cacheDir: `${root}/cache`, origin: origin(fake) });
    const conn = await RawConnection.open(server.addr.port);
    try {
      const listed: { name: string; type: string }[] = [];
      let after = ".";
      while (true) {
        const answer = await conn.request(`FILES . ${after} 4`);
        const page = JSON.parse(new TextDecoder().decode(answer.body));
        listed.push(
          ...page.entries.map(({ name, type }: { name: string; type: string }) => ({ name, type })),
        );
        if (page.next === undefined) break;
        after = encodeURIComponent(page.next);
      }
      assert.deepEqual(listed, expected);
      const whole = JSON.parse(new TextDecoder().decode((await conn.request("FILES")).body));
      assert.equal(whole.next, undefined, "a prefix of 76 entries is one page");
      assert.equal(whole.entries.length, expected.length);
    } finally {
      conn.close();
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  });
});

Deno.test("S3Origin: a listing that stalls is a 503 after the timeout, not retried; an ignored Range is refused", async () => {
  await withFake(async (fake) => {
    fake.put("pre/fix/a.txt", new TextEncoder().encode("0123456789"));
    const s3 = origin(fake, { timeoutMs: 150, retries: 1 });
    fake.faults.push({ stallAfter: 10 });
    const sent = fake.requests.length;
    await assertProtocolError(s3.list("", WHOLE), 503, /\(no answer within 150 ms\)$/);
    assert.equal(fake.requests.length, sent + 1);

    fake.faults.push({ ignoreRange: true });
    await assertProtocolError(
      s3.open("a.txt", { offset: 4, length: 3 }),
      500,
      /origin answered 200 to a ranged GET of a\.txt without a usable Content-Range/,
    );
    const part = await s3.open("a.txt", { offset: 4, length: 3 });
    assert.equal(new TextDecoder().decode(await readAll(part)), "456");
  });
});

Deno.test("S3Origin: 5xx are retried with backoff, then 503; throttling is answered 503 at once", async () => {
  await withFake(async (fake) => {
    fake.put("pre/fix/a.txt", new TextEncoder().encode("alpha"));
    const s3 = origin(fake, { retries: 3 });
    fake.faults.push({ status: 500 }, { status: 502 }, { status: 504 });
    assert.equal((await s3.stat("a.txt")).size, 5, "the fourth attempt succeeds");
    assert.equal(fake.requests.length, 4);

    fake.faults.push(...Array(4).fill({ status: 502 }));
    await assertProtocolError(
      s3.open("a.txt"),
      503,
      /^origin unavailable: http:\/\/127\.0\.0\.1:\d+ \(502 Fault: injected; 4 attempts\)$/,
    );
    fake.faults.push(...Array(4).fill({ status: 500 }));
    await assertProtocolError(s3.stat("a.txt"), 503, /\(500; 4 attempts\)$/); // HEAD: no body
    // Throttling: another attempt would add to the load, so none is made.
    for (const fault of [{ status: 503, code: "SlowDown" }, { status: 429 }]) {
      const sent: number = fake.requests.length;
      fake.faults.push(fault);
      await assertProtocolError(
        s3.open("a.txt"),
        503,
        /^origin throttled: http:\/\/127\.0\.0\.1:\d+ \((503 SlowDown: injected|429 Fault: injected)\)$/,
      );
      assert.equal(fake.requests.length, sent + 1);
    }
    // A 503 that is not throttling (another code) is a failure like a 502: retried.
    fake.faults.push({ status: 503, code: "ServiceUnavailable" });
    assert.equal((await s3.open("a.txt")).stat.size, 5);
    // Not worth retrying: refused credentials are a 500 naming the answer, at once.
    const before = fake.requests.length;
    fake.faults.push({ status: 403, code: "AccessDenied" });
    await assertProtocolError(s3.open("a.txt"), 500, /origin answered 403 AccessDenied/);
    assert.equal(fake.requests.length, before + 1);
  });
});

Deno.test("S3Origin: a dead endpoint and a silent one are 503 within the bounds", async () => {
  const dead = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = dead.addr.port;
  dead.close(); // nothing listens there now
  const s3 = new S3Origin({
    url: "s3://bucket",
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: "KEY",
    secretAccessKey: "SECRET",
    retries: 2,
    backoffMs: 5,
  });
  // Nothing listens: refused, and not retried (the store is down).
  await assertProtocolError(s3.stat("a"), 503, /origin unavailable: .*; refused\)$/);

  // Accepts and never answers: one attempt, which times out (a hung store
  // would hold every retry as long).
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  try {
    const slow = new S3Origin({
      url: "s3://bucket",
      endpoint: `http://127.0.0.1:${silent.addr.port}`,
      accessKeyId: "KEY",
      secretAccessKey: "SECRET",
      retries: 1,
      backoffMs: 5,
      timeoutMs: 100,
    });
    const started = performance.now();
    await assertProtocolError(slow.stat("a"), 503, /\(no answer within 100 ms\)$/);
    assert.ok(performance.now() - started < 190, "not retried");
    assert.equal(held.length, 1);
  } finally {
    silent.close();
    for (const conn of held) conn.close();
  }
});

Deno.test("through the HTTP front end: one origin request per request (a stat, then conditional GETs), one full GET per fill", async () => {
  await withFake(async (fake) => {
    fake.put("pre/fix/a.txt", new TextEncoder().encode("alpha"));
    const root = await Deno.makeTempDir();
    const server = await startServer({
      port: 0,
      httpPort: 0,
      cacheDir: `${root}/cache`,
      origin: origin(fake),
    });
    try {
      for (const expected of ["MISS", "HIT", "HIT"]) {
        const response = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/a.txt`);
        assert.equal(response.headers.get("x-cache"), expected);
        assert.equal(await response.text(), "alpha");
      }
      const count = (method: string) => fake.requests.filter((r) => r.method === method).length;
      assert.equal(fake.requests.length, 4, "HEAD, GET (the fill), then one check per hit");
      assert.equal(count("HEAD"), 1, "the first request's stat");
      const conditional = fake.requests.filter((r) => r.ifNoneMatch !== null);
      assert.equal(conditional.length, 2, "each hit: a conditional GET, answered 304");
    } finally {
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  });
});

Deno.test("through the server: origin failures never poison the cache, and serving resumes", async () => {
  await withFake(async (fake) => {
    const big = seededBytes(300_000, 8);
    fake.put("pre/fix/big.bin", big);
    const root = await Deno.makeTempDir();
    const errors: string[] = [];
    const server = await startServer({
      port: 0,
      cacheDir: `${root}/cache`,
      origin: origin(fake, { timeoutMs: 200, retries: 1 }),
      onError: (line) => errors.push(line),
    });
    let conn = await RawConnection.open(server.addr.port);
    try {
      // The stat (HEAD) passes; the fill's GET stalls after 1000 bytes: an
      // error, and nothing admitted.
      fake.faults.push({ pass: true }, { stallAfter: 1000 });
      const stalled = await conn.request("GET big.bin");
      assert.equal(stalled.code, 500, stalled.line);
      assert.match(stalled.message, /origin stalled reading big\.bin/);
      assert.equal(server.cache.count, 0);

      fake.faults.push({ pass: true }, { cutAfter: 5000 });
      const cut = await conn.request("GET big.bin");
      assert.equal(cut.code, 500, cut.line);
      assert.equal(server.cache.count, 0, "a broken read is not admitted");

      fake.faults.push({ status: 503, code: "SlowDown" }); // not retried: one answer
      const throttled = await conn.request("GET big.bin");
      assert.equal(throttled.code, 503, throttled.line);
      assert.match(throttled.message, /origin throttled/);
      conn.close(); // a 503 ends the connection, as the protocol says
      conn = await RawConnection.open(server.addr.port);

      const good = await conn.request("GET big.bin");
      assert.equal(good.fields.cache, "miss", good.line);
      assert.equal(sha256(good.body), sha256(big));
      assert.equal((await conn.request("GET big.bin")).fields.cache, "hit");

      // Changed in the store: fetched again; deleted: 404, and gone from the cache.
      const changed = seededBytes(1000, 9);
      fake.put("pre/fix/big.bin", changed);
      const refreshed = await conn.request("GET big.bin");
      assert.equal(refreshed.fields.cache, "miss");
      assert.deepEqual(refreshed.body, changed);
      fake.objects.delete("pre/fix/big.bin");
      assert.equal((await conn.request("GET big.bin")).code, 404);
      assert.equal(server.cache.count, 0);
    } finally {
      conn.close();
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  });
});
