/**
 * Misses sent while they are copied in (`streamed=1`), over real sockets,
 * against an origin whose reads wait at a valve the test opens: the first
 * bytes reach the client while the origin is still held, a second client
 * joins the same fill, a failing origin cuts every client short and admits
 * nothing, a corrupted cache file is caught by the client's check, and old
 * clients (a raw socket, HTTP) get the same bytes. With worker threads the
 * origin is a stand-in S3 whose object body is held mid-way (a worker
 * cannot be handed a test's origin, but it reaches the same store).
 */

import assert from "node:assert/strict";
import { connect, ConnectionError, IntegrityError } from "../client.ts";
import { DirectoryOrigin } from "../origin/directory.ts";
import { S3Origin } from "../origin/s3.ts";
import { type ServerHandle, startServer } from "../server.ts";
import { FakeS3 } from "./origin/fake_s3.ts";
import type { ByteRange, Origin, OriginFile, OriginListWindow } from "../origin/origin.ts";
import { parseResponseHeader } from "../protocol.ts";
import { STREAMED_MISS_FROM } from "../service/file_service.ts";
import { withTimeout } from "../util/timeout.ts";
import {
  cacheFileNames,
  concat,
  seededBytes,
  sha256,
  type TestServer,
  withServer,
} from "./helpers.ts";

const MiB = 1024 * 1024;
/** Large enough to be streamed, and many origin reads long (256 KiB each). */
const BIG = seededBytes(STREAMED_MISS_FROM + 4 * MiB, 31);
/** A generous bound on waits for what must happen (a test that would hang fails instead). */
const WAIT_MS = 20_000;

/**
 * The served directory, except that reads of opened files wait at a valve:
 * `allow(n)` lets n more reads through, `release()` all of them, `fail()` makes
 * the next read throw (the origin failing mid-file).
 */
class ValveOrigin implements Origin {
  readonly real: DirectoryOrigin;
  opens = 0;
  reads = 0;
  #allowed = 0;
  #failing = false;
  #waiting: (() => void)[] = [];

  constructor(real: DirectoryOrigin) {
    this.real = real;
  }

  allow(reads: number): void {
    this.#allowed += reads;
    this.#wake();
  }

  release(): void {
    this.allow(Infinity);
  }

  fail(): void {
    this.#failing = true;
    this.#wake();
  }

  repair(): void {
    this.#failing = false;
  }

  stat(path: string) {
    return this.real.stat(path);
  }

  list(path: string, window: OriginListWindow) {
    return this.real.list(path, window);
  }

  statNow(path: string) {
    return this.real.statNow(path);
  }

  async open(path: string, range?: ByteRange): Promise<OriginFile> {
    this.opens++;
    const opened = await this.real.open(path, range);
    return {
      ...opened,
      stat: opened.stat,
      read: async (into: Uint8Array) => {
        await this.#turn();
        this.reads++;
        return await opened.read(into);
      },
    };
  }

  async #turn(): Promise<void> {
    while (this.#allowed <= 0 && !this.#failing) {
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
    if (this.#failing) throw new Error("origin storage failed");
    this.#allowed--;
  }

  #wake(): void {
    for (const wake of this.#waiting.splice(0)) wake();
  }
}

/** Runs `test` against a server whose origin serves `big.bin` through a closed valve. */
async function withValve(
  test: (context: TestServer & { valve: ValveOrigin }) => Promise<void>,
  options: { httpPort?: number } = {},
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-streamed-" });
  await Deno.writeFile(`${root}/big.bin`, BIG);
  const real = await DirectoryOrigin.open(root, { watchChanges: false });
  const valve = new ValveOrigin(real);
  try {
    await withServer(
      {},
      { origin: valve, cacheSize: 4 * BIG.length, ...options },
      // Released before the server closes, which waits for answers in progress.
      (context) => test({ ...context, valve }).finally(() => valve.release()),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** A raw socket that reads an answer's header and then as much of its body as there is. */
class RawReader {
  readonly conn: Deno.Conn;
  #pending = new Uint8Array(0);

  private constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  static async open(port: number): Promise<RawReader> {
    return new RawReader(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(line: string): Promise<void> {
    await this.conn.write(new TextEncoder().encode(line + "\n"));
  }

  /** The header line of the next answer. */
  async header(): Promise<ReturnType<typeof parseResponseHeader>> {
    while (!this.#pending.includes(0x0a)) {
      if (!await this.#more()) throw new Error("closed before a header");
    }
    const end = this.#pending.indexOf(0x0a);
    const line = new TextDecoder().decode(this.#pending.subarray(0, end));
    this.#pending = this.#pending.slice(end + 1);
    return parseResponseHeader(line);
  }

  /** At least `count` body bytes (fewer only if the server closes first). */
  async body(count: number): Promise<Uint8Array> {
    while (this.#pending.length < count && await this.#more()) { /* reading */ }
    const taken = this.#pending.slice(0, Math.min(count, this.#pending.length));
    this.#pending = this.#pending.slice(taken.length);
    return taken;
  }

  /** Whatever bytes arrive first. */
  async some(): Promise<Uint8Array> {
    if (this.#pending.length === 0) await this.#more();
    return await this.body(this.#pending.length);
  }

  async #more(): Promise<boolean> {
    const buffer = new Uint8Array(1024 * 1024);
    const n = await this.conn.read(buffer).catch(() => null);
    if (n === null) return false;
    const joined = new Uint8Array(this.#pending.length + n);
    joined.set(this.#pending);
    joined.set(buffer.subarray(0, n), this.#pending.length);
    this.#pending = joined;
    return true;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }
}

/** A client's GET that tells when its first body bytes have arrived. */
async function startGet(port: number, path: string) {
  const client = await connect({ host: "127.0.0.1", port });
  const first = Promise.withResolvers<void>();
  let received = 0;
  const result = client.get(path, {
    sink: (chunk) => {
      received += chunk.length;
      first.resolve();
    },
  });
  result.catch(() => {}); // awaited by the test
  return {
    client,
    result,
    firstBytes: withTimeout(first.promise, WAIT_MS, `no body bytes of ${path} arrived`),
    received: () => received,
  };
}

Deno.test("a streamed miss: the first bytes arrive while the origin is still held; an old-style client gets the whole file and STAT its digest", async () => {
  await withValve(async ({ port, server, valve, cacheDir }) => {
    valve.allow(1);
    const raw = await RawReader.open(port);
    try {
      await raw.send("GET big.bin");
      const header = await withTimeout(raw.header(), WAIT_MS, "no header");
      assert.ok(header.ok);
      assert.equal(header.length, BIG.length);
      assert.equal(header.fields.cache, "miss");
      assert.equal(header.fields.streamed, "1");
      assert.equal(header.fields.sha256, undefined, "the digest is not known yet");
      const first = await withTimeout(raw.some(), WAIT_MS, "no body bytes");
      assert.ok(first.length > 0);
      // The origin has given one read, and the fill cannot have ended.
      assert.equal(valve.reads, 1);
      assert.ok(server.cache.filling("big.bin"));
      assert.equal(server.cache.count, 0);
      valve.release();
      const rest = await raw.body(BIG.length - first.length);
      assert.equal(sha256(concat(first, rest)), sha256(BIG));
      // The last bytes were held until the entry was committed.
      assert.equal(server.cache.count, 1);
      // The connection goes on; STAT answers the digest of what was sent.
      await raw.send("STAT big.bin");
      const stat = await raw.header();
      assert.ok(stat.ok);
      const answer = JSON.parse(new TextDecoder().decode(await raw.body(stat.length)));
      assert.equal(answer.sha256, sha256(BIG));
      assert.equal(answer.cached, true);
    } finally {
      raw.close();
    }
    const [entry] = server.cache.entries();
    assert.equal(entry.sha256, sha256(BIG));
    assert.deepEqual(cacheFileNames(cacheDir), [entry.file], "no partial file stays");
    // A hit now, with its sha256 in the header as ever.
    const again = await connect({ port });
    try {
      const hit = await again.get("big.bin");
      assert.equal(hit.cache, "hit");
      assert.ok(hit.verified && !hit.streamed);
    } finally {
      again.close();
    }
  });
});

Deno.test("a second client joins a streamed miss mid-fill: both get every byte, verified, and the origin is read once", async () => {
  await withValve(async ({ port, server, valve }) => {
    valve.allow(4);
    const a = await startGet(port, "big.bin");
    await a.firstBytes;
    const b = await startGet(port, "big.bin");
    await b.firstBytes;
    assert.equal(valve.opens, 1, "one origin read for both");
    assert.ok(server.cache.filling("big.bin"), "both are served before the fill ends");
    valve.release();
    try {
      for (const get of [a, b]) {
        const result = await get.result;
        assert.equal(result.cache, "miss");
        assert.ok(result.streamed);
        assert.ok(result.verified, "checked against the digest STAT answered");
        assert.equal(result.sha256, sha256(BIG));
        assert.equal(get.received(), BIG.length);
      }
    } finally {
      a.client.close();
      b.client.close();
    }
    const stats = await server.stats();
    assert.equal(stats.misses, 2, "a streamed miss counts as a miss, joined or not");
    assert.equal(stats.bytesFromOrigin, BIG.length, "the file read from the origin once");
    assert.equal(valve.opens, 1);
  });
});

Deno.test("the origin failing mid-fill: every client's body ends short, nothing is admitted, no partial file stays", async () => {
  await withValve(async ({ port, server, valve, cacheDir, errors }) => {
    valve.allow(3);
    const a = await startGet(port, "big.bin");
    await a.firstBytes;
    const raw = await RawReader.open(port);
    try {
      await raw.send("GET big.bin");
      const header = await raw.header();
      assert.equal(header.ok && header.fields.streamed, "1");
      valve.fail();
      const body = await withTimeout(raw.body(BIG.length), WAIT_MS, "the connection stayed open");
      assert.ok(body.length < BIG.length, "a short body, then the server closes");
      await assert.rejects(a.result, ConnectionError);
      assert.ok(a.received() < BIG.length);
    } finally {
      raw.close();
      a.client.close();
    }
    assert.equal(server.cache.count, 0, "nothing admitted");
    assert.equal(server.cache.reserved, 0, "no reservation left");
    assert.deepEqual(cacheFileNames(cacheDir), [], "the partial file is gone");
    assert.ok(
      errors.some((line) => /response cut short: .*origin failed/.test(line)),
      errors.join(),
    );
    // The server goes on: once the origin works, the file is served whole.
    valve.repair();
    valve.release();
    const again = await connect({ port });
    try {
      const result = await again.get("big.bin");
      assert.ok(result.verified && result.streamed);
    } finally {
      again.close();
    }
  });
});

Deno.test("a streamed miss whose cache file was corrupted under it: the client's check refuses it", async () => {
  await withValve(async ({ port, valve, cacheDir }) => {
    valve.allow(1);
    const a = await startGet(port, "big.bin");
    await a.firstBytes;
    // The first bytes of the growing file go bad on disk, after A read them.
    const [partial] = cacheFileNames(cacheDir);
    assert.match(partial, /\.part$/);
    const file = await Deno.open(`${cacheDir}/${partial}`, { write: true });
    await file.write(new Uint8Array(64).fill(0xee));
    file.close();
    const b = await startGet(port, "big.bin");
    await b.firstBytes;
    valve.release();
    try {
      const fine = await a.result;
      assert.ok(fine.verified);
      await assert.rejects(b.result, IntegrityError);
    } finally {
      a.client.close();
      b.client.close();
    }
  });
});

Deno.test("a streamed miss over HTTP: 200 with its length, no Repr-Digest; the origin failing mid-fill ends the body short", async () => {
  await withValve(async ({ server, valve }) => {
    const url = `http://127.0.0.1:${server.httpAddr!.port}/big.bin`;
    valve.allow(1);
    const response = await withTimeout(fetch(url), WAIT_MS, "no HTTP head");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-length"), String(BIG.length));
    assert.equal(response.headers.get("x-cache"), "MISS");
    assert.equal(response.headers.get("repr-digest"), null, "not known when the head goes");
    assert.ok(response.headers.get("etag"), "the validator's tag, as ever");
    valve.release();
    assert.equal(sha256(new Uint8Array(await response.arrayBuffer())), sha256(BIG));
    // Now cached: the digest is in the head.
    const hit = await fetch(url);
    assert.equal(hit.headers.get("x-cache"), "HIT");
    assert.ok(hit.headers.get("repr-digest"));
    await hit.arrayBuffer();
  }, { httpPort: 0 });
  await withValve(async ({ server, valve }) => {
    valve.allow(2);
    const response = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/big.bin`);
    assert.equal(response.status, 200);
    valve.fail();
    await assert.rejects(response.arrayBuffer(), "the body ends short");
    assert.equal(server.cache.count, 0);
  }, { httpPort: 0 });
});

/**
 * Runs `test` against a server of two threads over a stand-in S3 holding
 * `big.bin`, its next GET body held after 1 MiB; the hold is released
 * before the server closes, whatever happens.
 */
async function withHeldS3(
  test: (context: {
    server: ServerHandle;
    port: number;
    fake: FakeS3;
    cacheDir: string;
    held: { release(): void; cut(): void };
  }) => Promise<void>,
): Promise<void> {
  const fake = new FakeS3();
  fake.put("big.bin", BIG);
  const held = fake.holdGet("big.bin", MiB);
  const root = await Deno.makeTempDir({ prefix: "tcpcache-streamed-s3-" });
  const cacheDir = `${root}/cache`;
  const server = await startServer({
    port: 0,
    cacheDir,
    cacheSize: 4 * BIG.length,
    workers: 2,
    origin: new S3Origin({
      url: "s3://bucket",
      endpoint: fake.endpoint,
      accessKeyId: "KEY",
      secretAccessKey: "SECRET",
      retries: 0,
      timeoutMs: 60_000,
    }),
    onError: () => {},
  });
  try {
    await test({ server, port: server.addr.port, fake, cacheDir, held }).finally(() =>
      held.release()
    );
  } finally {
    await server.close();
    await fake.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** GETs of `big.bin` on 16 connections of their own: the kernel spreads them over both threads. */
const CLIENTS = 16;

Deno.test("workers: clients on both threads stream one miss while the store's body is held, then all verify it", async () => {
  await withHeldS3(async ({ server, port, fake, held }) => {
    const gets = await Promise.all(
      Array.from({ length: CLIENTS }, () => startGet(port, "big.bin")),
    );
    try {
      // Every client, on either thread, has bytes while the fill waits for the store.
      await Promise.all(gets.map((get) => get.firstBytes));
      held.release();
      for (const get of gets) {
        const result = await get.result;
        assert.equal(result.cache, "miss");
        assert.ok(result.streamed && result.verified);
        assert.equal(result.sha256, sha256(BIG));
      }
    } finally {
      for (const get of gets) get.client.close();
    }
    const stats = await server.stats();
    for (const requests of stats.threads) assert.ok(requests > 0, `threads: ${stats.threads}`);
    // Conditional GETs are the shield's revalidations (answered 304, no body).
    const bodies = fake.requests.filter((r) =>
      r.method === "GET" && r.key === "big.bin" && r.ifNoneMatch === null
    );
    assert.equal(bodies.length, 1, "one GET of the object for every client");
    assert.equal(stats.bytesFromOrigin, BIG.length);
    assert.equal(stats.misses, CLIENTS);
    assert.equal(stats.cache.entries, 1);
  });
});

Deno.test("workers: the store failing mid-object cuts every client short, on both threads; nothing is admitted", async () => {
  await withHeldS3(async ({ server, port, held, cacheDir }) => {
    const gets = await Promise.all(
      Array.from({ length: CLIENTS }, () => startGet(port, "big.bin")),
    );
    try {
      await Promise.all(gets.map((get) => get.firstBytes));
      held.cut();
      for (const get of gets) {
        await assert.rejects(get.result, ConnectionError);
        assert.ok(get.received() < BIG.length);
      }
    } finally {
      for (const get of gets) get.client.close();
    }
    const stats = await server.stats();
    for (const requests of stats.threads) assert.ok(requests > 0, `threads: ${stats.threads}`);
    assert.equal(server.cache.count, 0);
    assert.equal(server.cache.reserved, 0);
    assert.deepEqual(cacheFileNames(cacheDir), []);
  });
});
