/**
 * The request path both protocols share, driven directly: a real FileCache
 * in a temporary directory, in front of either a real DirectoryOrigin or an
 * origin in memory that counts its reads and fails on request.
 */

import assert from "node:assert/strict";
import { FileCache } from "../../cache.ts";
import { DirectoryOrigin } from "../../origin/directory.ts";
import {
  type ByteRange,
  type ByteSource,
  type Origin,
  OriginChangedError,
  type OriginDirPage,
  type OriginFile,
  type OriginListWindow,
  type OriginStat,
} from "../../origin/origin.ts";
import { RequestError } from "../../protocol.ts";
import {
  FileService,
  isConnectionError,
  isOutOfDescriptors,
  readFull,
  type Served,
  sweepInterval,
  TruncatedBodyError,
} from "../../service/file_service.ts";
import { cacheFileNames, concat, seededBytes, sha256, type Tree, writeTree } from "../helpers.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
/** The head handed to `stream` where a test looks at the body alone. */
const NO_HEAD = new Uint8Array(0);

/** What an {@linkcode MemoryOrigin} does wrong for one path. */
interface Fault {
  /** Thrown by `open`. */
  openError?: unknown;
  /** Thrown by `read` once this many bytes were read. */
  readError?: { after: number; error: unknown };
  /** `open` waits for this before it answers. */
  gate?: Promise<void>;
  /** The validator `open` reports (the file changed between stat and open). */
  openValidator?: string;
  /** The validator `restat` reports (the file changed while it was read). */
  restatValidator?: string;
  /** The body holds only this many bytes, whatever the size says. */
  truncateTo?: number;
  /** The body holds these bytes beyond its size (the file grew). */
  extra?: Uint8Array;
}

/** An origin in memory: counts its calls, and fails as told. */
class MemoryOrigin implements Origin {
  readonly files = new Map<string, { bytes: Uint8Array; version: number }>();
  readonly faults = new Map<string, Fault>();
  stats = 0;
  opens = 0;
  closes = 0;
  /** Resolves at the first `open`. */
  readonly firstOpen = Promise.withResolvers<void>();
  #version = 0;

  constructor(files: Record<string, Uint8Array> = {}) {
    for (const [path, bytes] of Object.entries(files)) this.put(path, bytes);
  }

  /** Creates or replaces a file (a new version). */
  put(path: string, bytes: Uint8Array): void {
    this.files.set(path, { bytes, version: ++this.#version });
  }

  stat(path: string): Promise<OriginStat> {
    this.stats++;
    const file = this.files.get(path);
    if (!file) return Promise.reject(new RequestError(404, `not found: ${path}`));
    return Promise.resolve(statOf(file));
  }

  async open(path: string, range?: ByteRange): Promise<OriginFile> {
    this.opens++;
    this.firstOpen.resolve();
    const fault = this.faults.get(path) ?? {};
    await fault.gate;
    if (fault.openError) throw fault.openError;
    const file = this.files.get(path);
    if (!file) throw new RequestError(404, `not found: ${path}`);
    const stat = statOf(file);
    let body = file.bytes;
    if (fault.truncateTo !== undefined) body = body.subarray(0, fault.truncateTo);
    if (fault.extra) body = concat(body, fault.extra);
    let position = range?.offset ?? 0;
    return {
      stat: fault.openValidator ? { ...stat, validator: fault.openValidator } : stat,
      read: (into) => {
        let limit = body.length;
        if (fault.readError) {
          if (position >= fault.readError.after) return Promise.reject(fault.readError.error);
          limit = Math.min(limit, fault.readError.after);
        }
        if (position >= limit) return Promise.resolve(null);
        const n = Math.min(into.length, limit - position);
        into.set(body.subarray(position, position + n));
        position += n;
        return Promise.resolve(n);
      },
      close: () => {
        this.closes++;
      },
      restat: () =>
        Promise.resolve(
          fault.restatValidator ? { ...stat, validator: fault.restatValidator } : stat,
        ),
    };
  }

  list(): Promise<OriginDirPage> {
    return Promise.resolve({ entries: [] });
  }
}

function statOf(file: { bytes: Uint8Array; version: number }): OriginStat {
  return { size: file.bytes.length, mtime: 1_700_000_000_000, validator: `v${file.version}` };
}

/** A service under test, its parts, and what it reported. */
interface Context {
  service: FileService;
  cache: FileCache;
  /** The served directory (for a DirectoryOrigin). */
  dir: string;
  /** The cache directory. */
  cacheDir: string;
  /** The temporary directory holding both. */
  root: string;
  /** Lines reported through `onError`. */
  errors: string[];
}

interface SetupOptions {
  /** Serve this origin instead of a DirectoryOrigin over `tree`. */
  origin?: Origin;
  /** Files of the served directory. */
  tree?: Tree;
  capacity?: number;
  /** 0 makes every entry a file in the cache directory. */
  memoryBudget?: number;
  maxOpenFiles?: number;
}

/** Runs `test` against a fresh service, then removes its temporary files. */
async function withService(
  options: SetupOptions,
  test: (context: Context) => Promise<void> | void,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-service-" });
  try {
    const dir = `${root}/files`;
    const cacheDir = `${root}/cache`;
    await Deno.mkdir(dir);
    await writeTree(dir, options.tree ?? {});
    const errors: string[] = [];
    const cache = await FileCache.open({
      dir: cacheDir,
      capacity: options.capacity,
      memoryBudget: options.memoryBudget,
      onWarning: (line) => errors.push(line),
    });
    const origin = options.origin ?? await DirectoryOrigin.open(dir);
    const service = new FileService(cache, origin, {
      maxOpenFiles: options.maxOpenFiles ?? 64,
      onError: (line) => errors.push(line),
      debug: false,
    });
    await test({ service, cache, dir, cacheDir, root, errors });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** Reads a served body whole through `stream`, then releases it. */
async function body(service: FileService, served: Served): Promise<Uint8Array> {
  const out = new Uint8Array(served.length);
  let filled = 0;
  try {
    await service.stream(served, NO_HEAD, (chunk) => {
      out.set(chunk, filled);
      filled += chunk.length;
      return Promise.resolve();
    });
  } finally {
    served.release();
  }
  assert.equal(filled, served.length, "the body is as long as announced");
  return out;
}

/** Opens `path` and reads it whole. */
async function fetchWhole(
  service: FileService,
  path: string,
): Promise<{ served: Served; bytes: Uint8Array }> {
  const served = await service.open(path);
  return { served, bytes: await body(service, served) };
}

/** The error `promise` rejects with (failing when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

/** True when `promise` has settled after the pending jobs and one timer turn. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("FileService: a miss fills the cache from the origin, then hits are served from the cache file", async () => {
  const content = seededBytes(200 * KiB, 1);
  await withService({ tree: { "docs/big.bin": content }, memoryBudget: 0 }, async (t) => {
    const miss = await fetchWhole(t.service, "docs/big.bin");
    assert.equal(miss.served.outcome, "miss");
    assert.equal(miss.served.sha256, sha256(content));
    assert.equal(miss.served.size, content.length);
    assert.equal(miss.served.offset, 0);
    assert.equal(miss.served.length, content.length);
    // From the entry's file (a bypass from the origin has no entry).
    assert.ok(miss.served.source && miss.served.entry === t.cache.lookup("docs/big.bin"));
    assert.equal(miss.served.bytes, undefined);
    assert.deepEqual(miss.bytes, content);
    assert.equal(t.cache.count, 1);
    assert.equal(t.cache.used, content.length);
    assert.equal((await cacheFileNames(t.cacheDir)).length, 1);

    // The origin is still asked for its stat, but the bytes come from the cache.
    const hit = await fetchWhole(t.service, "docs/big.bin");
    assert.equal(hit.served.outcome, "hit");
    assert.equal(hit.served.sha256, sha256(content));
    assert.deepEqual(hit.bytes, content);

    const stats = await t.service.stats();
    assert.equal(stats.misses, 1);
    assert.equal(stats.hits, 1);
    assert.equal(stats.bypasses, 0);
    assert.equal(stats.bytesFromOrigin, content.length, "the hit read nothing from the origin");
    assert.deepEqual(stats.cache, {
      capacity: t.cache.capacity,
      used: content.length,
      entries: 1,
      policy: "fifo",
      memory: 0,
      effectiveCapacity: t.cache.capacity,
      writeFailures: 0,
      adopted: 0,
      adopting: 0,
      housekeepingBytes: 0,
      housekeeping: "done",
    });
  });
});

Deno.test("FileService: small entries are also held in memory and served without a file", async () => {
  const origin = new MemoryOrigin({ "small.txt": new TextEncoder().encode("small and hot\n") });
  await withService({ origin }, async (t) => {
    const miss = await fetchWhole(t.service, "small.txt");
    assert.equal(miss.served.outcome, "miss");
    assert.equal(new TextDecoder().decode(miss.bytes), "small and hot\n");
    const hit = await t.service.open("small.txt");
    assert.equal(hit.outcome, "hit");
    assert.ok(hit.bytes, "a memory hit carries its bytes");
    assert.equal(hit.source, undefined);
    assert.equal(new TextDecoder().decode(await body(t.service, hit)), "small and hot\n");
    const range = await t.service.open("small.txt", { offset: 6, length: 3 });
    assert.equal(range.outcome, "hit");
    assert.equal(new TextDecoder().decode(await body(t.service, range)), "and");
    assert.equal(origin.opens, 1, "one origin read for three requests");
    assert.equal(origin.closes, origin.opens);
    assert.equal((await t.service.stats()).cache.memory, 14);
  });
});

Deno.test("FileService: concurrent misses of one path read the origin once (single flight)", async () => {
  const content = seededBytes(300 * KiB, 2);
  const other = seededBytes(10 * KiB, 3);
  const origin = new MemoryOrigin({ "hot.bin": content, "other.bin": other });
  const gate = Promise.withResolvers<void>();
  origin.faults.set("hot.bin", { gate: gate.promise });
  await withService({ origin, memoryBudget: 0 }, async (t) => {
    const first = Array.from({ length: 4 }, () => t.service.open("hot.bin"));
    await origin.firstOpen.promise; // the fill is in flight, held at the gate
    const later = Array.from({ length: 4 }, () => t.service.open("hot.bin"));
    const unrelated = t.service.open("other.bin");
    assert.ok(t.cache.filling("hot.bin"));
    gate.resolve();
    const served = await Promise.all([...first, ...later]);
    const bodies = await Promise.all(served.map((one) => body(t.service, one)));
    for (const bytes of bodies) assert.deepEqual(bytes, content);
    assert.deepEqual(served.map((one) => one.outcome), Array(8).fill("miss"));
    assert.equal(new Set(served.map((one) => one.entry)).size, 1, "one entry for all");
    assert.equal(sha256(await body(t.service, await unrelated)), sha256(other));
    assert.equal(origin.opens, 2, "hot.bin once, other.bin once");
    assert.equal(origin.closes, 2);
    const stats = await t.service.stats();
    assert.equal(stats.bytesFromOrigin, content.length + other.length);
    assert.equal(stats.misses, 9);
    assert.equal(t.cache.count, 2);
    assert.equal(t.cache.used, content.length + other.length);
    assert.equal(t.cache.reserved, 0);
  });
});

// A request that waited for file permits to fill the cache looks again,
// once it has them, for the entry a concurrent fill has admitted meanwhile.
Deno.test({
  name: "FileService: concurrent misses read the origin once even when file permits are scarce",
  fn: async () => {
    // Small enough to be served from memory: serving it holds no permit.
    const content = seededBytes(10 * KiB, 23);
    const origin = new MemoryOrigin({ "hot.bin": content });
    await withService({ origin, maxOpenFiles: 2 }, async (t) => {
      const served = await Promise.all([0, 1, 2].map(() => t.service.open("hot.bin")));
      for (const one of served) assert.deepEqual(await body(t.service, one), content);
      assert.equal(origin.opens, 1, "one origin read for three concurrent misses");
      assert.equal((await t.service.stats()).bytesFromOrigin, content.length);
    });
  },
});

Deno.test("FileService: a file larger than the cache is a bypass, served whole and never admitted", async () => {
  // Past LARGE_BODY (8 MiB), so the large transfer buffers are used too.
  const huge = seededBytes(9 * MiB, 4);
  const small = seededBytes(100 * KiB, 5);
  await withService(
    { tree: { "huge.bin": huge, "small.bin": small }, capacity: 1 * MiB, memoryBudget: 0 },
    async (t) => {
      for (let round = 0; round < 2; round++) {
        const { served, bytes } = await fetchWhole(t.service, "huge.bin");
        assert.equal(served.outcome, "bypass");
        assert.equal(served.sha256, undefined, "no digest for a file the cache never held");
        assert.equal(served.entry, undefined);
        assert.equal(served.size, huge.length);
        assert.equal(bytes.length, huge.length);
        assert.equal(sha256(bytes), sha256(huge));
      }
      assert.equal(t.cache.count, 0);
      assert.equal(t.cache.used, 0);
      assert.deepEqual(await cacheFileNames(t.cacheDir), []);
      // A file that fits is still admitted beside it.
      assert.equal((await fetchWhole(t.service, "small.bin")).served.outcome, "miss");
      const stats = await t.service.stats();
      assert.equal(stats.bypasses, 2);
      assert.equal(stats.misses, 1);
      assert.equal(stats.bytesFromOrigin, 2 * huge.length + small.length);
    },
  );
});

Deno.test("FileService: ranges: a bypass on an uncached file, a hit on a cached one, 416 past the end", async () => {
  const content = seededBytes(100 * KiB, 6);
  await withService({ tree: { "f.bin": content }, memoryBudget: 0 }, async (t) => {
    const cold = await t.service.open("f.bin", { offset: 1000, length: 5000 });
    assert.equal(cold.outcome, "bypass", "a range of an uncached file is not admitted");
    assert.equal(cold.offset, 1000);
    assert.equal(cold.length, 5000);
    assert.deepEqual(await body(t.service, cold), content.subarray(1000, 6000));
    assert.equal(t.cache.count, 0);

    await body(t.service, await t.service.open("f.bin")); // now cached
    const cases: [number | undefined, number | undefined, number, number][] = [
      [1000, 5000, 1000, 5000],
      [50_000, undefined, 50_000, content.length - 50_000], // to the end
      [undefined, 10, 0, 10],
      [content.length, undefined, content.length, 0], // offset == size: empty
      [123, 0, 123, 0], // length 0: empty
      [0, content.length, 0, content.length],
    ];
    for (const [offset, length, wantOffset, wantLength] of cases) {
      const served = await t.service.open("f.bin", { offset, length });
      assert.equal(served.outcome, "hit", `range ${offset}+${length}`);
      assert.equal(served.offset, wantOffset);
      assert.equal(served.length, wantLength);
      assert.equal(served.size, content.length);
      assert.equal(served.sha256, sha256(content), "the whole file's digest, also on a range");
      assert.deepEqual(
        await body(t.service, served),
        content.subarray(wantOffset, wantOffset + wantLength),
      );
    }
    for (
      const [offset, length] of [
        [content.length + 1, undefined],
        [content.length, 1],
        [0, content.length + 1],
        [content.length - 10, 11],
      ]
    ) {
      const error = await rejection(t.service.open("f.bin", { offset, length }));
      assert.ok(error instanceof RequestError, `range ${offset}+${length}: ${error}`);
      assert.equal(error.code, 416);
      assert.deepEqual(t.service.describeError(error), [416, error.message]);
    }
    assert.deepEqual(t.errors, [], "a 416 is the client's mistake: nothing reported");
  });
});

Deno.test("FileService: the origin's refusals: 404 for missing files and directories, 403 outside; no entry", async () => {
  const outside = await Deno.makeTempDir({ prefix: "tcpcache-outside-" });
  try {
    await Deno.writeTextFile(`${outside}/secret.txt`, "secret\n");
    await withService({ tree: { "sub/inner.txt": "inner\n", "top.txt": "top\n" } }, async (t) => {
      await Deno.symlink(`${outside}/secret.txt`, `${t.dir}/link-out.txt`);
      await Deno.symlink(outside, `${t.dir}/dir-out`);
      await Deno.symlink(`${t.dir}/top.txt`, `${t.dir}/link-in.txt`);
      const expected: [string, number][] = [
        ["missing.txt", 404],
        ["sub/missing.txt", 404],
        ["sub", 404], // a directory is not a regular file
        ["top.txt/below", 404], // a file where a directory should be
        ["link-out.txt", 403],
        ["dir-out/secret.txt", 403],
        // files/sub -> files -> the test's root -> the temporary directory
        [`sub/../../../${outside.split("/").pop()}/secret.txt`, 403],
      ];
      for (const [path, code] of expected) {
        for (const range of [{}, { offset: 1, length: 1 }]) {
          const error = await rejection(t.service.open(path, range));
          assert.ok(error instanceof RequestError, `${path}: ${error}`);
          assert.equal(error.code, code, `${path}: ${error.message}`);
          assert.equal(t.service.describeError(error)[0], code);
        }
        await assert.rejects(t.service.stat(path), { code });
      }
      // A link that stays inside is served like its target.
      const linked = await fetchWhole(t.service, "link-in.txt");
      assert.equal(new TextDecoder().decode(linked.bytes), "top\n");
      assert.deepEqual(t.cache.entries().map((entry) => entry.path), ["link-in.txt"]);
      assert.equal((await cacheFileNames(t.cacheDir)).length, 1);
      assert.deepEqual(t.errors, [], "refusals are not server failures");
      const stats = await t.service.stats();
      assert.equal(stats.hits + stats.misses + stats.bypasses, 1, "a refusal counts no outcome");
    });
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("FileService: a cached file deleted at the origin answers 404 and leaves the cache", async () => {
  await withService({ tree: { "gone.txt": "here today\n" }, memoryBudget: 0 }, async (t) => {
    await fetchWhole(t.service, "gone.txt");
    assert.equal(t.cache.count, 1);
    await Deno.remove(`${t.dir}/gone.txt`);
    await assert.rejects(t.service.open("gone.txt"), { code: 404 });
    assert.equal(t.cache.lookup("gone.txt"), undefined);
    assert.equal(t.cache.used, 0);
    assert.deepEqual(await cacheFileNames(t.cacheDir), [], "its cache file is unlinked");
  });
});

Deno.test("FileService: a file changed on disk is served fresh, never stale", async () => {
  await withService({ tree: { "doc.txt": "version one\n" }, memoryBudget: 0 }, async (t) => {
    const first = await fetchWhole(t.service, "doc.txt");
    assert.equal(first.served.outcome, "miss");
    assert.equal((await t.service.stat("doc.txt")).cached, true);
    await Deno.writeTextFile(`${t.dir}/doc.txt`, "version two, longer\n");
    const stat = await t.service.stat("doc.txt");
    assert.equal(stat.cached, false, "the old copy is not this version");
    assert.equal(stat.sha256, null);
    const second = await fetchWhole(t.service, "doc.txt");
    assert.equal(second.served.outcome, "miss");
    assert.equal(new TextDecoder().decode(second.bytes), "version two, longer\n");
    assert.equal(second.served.sha256, sha256("version two, longer\n"));
    assert.equal(t.cache.count, 1, "the new copy replaced the old one");
    assert.equal(t.cache.used, "version two, longer\n".length);
    assert.equal((await cacheFileNames(t.cacheDir)).length, 1);
    assert.equal((await fetchWhole(t.service, "doc.txt")).served.outcome, "hit");
  });
});

Deno.test("FileService: stat and current report the cached digest; open with a known stat stats once", async () => {
  const content = new TextEncoder().encode("known\n");
  const origin = new MemoryOrigin({ "k.txt": content });
  await withService({ origin }, async (t) => {
    assert.deepEqual(await t.service.stat("k.txt"), {
      path: "k.txt",
      size: content.length,
      mtime: 1_700_000_000_000,
      cached: false,
      sha256: null,
    });
    await body(t.service, await t.service.open("k.txt"));
    assert.deepEqual(await t.service.stat("k.txt"), {
      path: "k.txt",
      size: content.length,
      mtime: 1_700_000_000_000,
      cached: true,
      sha256: sha256(content),
    });
    const before = origin.stats;
    const known = await t.service.current("k.txt");
    assert.equal(known.sha256, sha256(content));
    const served = await t.service.open("k.txt", {}, known);
    assert.equal(served.outcome, "hit");
    served.release();
    assert.equal(origin.stats, before + 1, "current() stats; open() with its answer does not");
  });
});

Deno.test("FileService: an origin read error is a 500, reported once, and leaves no entry, reservation or file", async () => {
  const content = seededBytes(200 * KiB, 7);
  const origin = new MemoryOrigin({ "bad.bin": content });
  const failure = new Error("EIO: input/output error");
  origin.faults.set("bad.bin", { readError: { after: 64 * KiB, error: failure } });
  await withService({ origin, memoryBudget: 0 }, async (t) => {
    // Two requests share the failing fill: both get its error.
    const errors = await Promise.all([
      rejection(t.service.open("bad.bin")),
      rejection(t.service.open("bad.bin")),
    ]);
    assert.equal(errors[0], failure);
    assert.equal(errors[1], failure);
    assert.equal(origin.opens, 1, "the failed fill was shared, not repeated");
    assert.equal(origin.closes, 1);
    assert.deepEqual(t.service.describeError(failure), [
      500,
      "server error: EIO: input/output error",
    ]);
    assert.equal(t.errors.length, 1);
    assert.match(t.errors[0], /request failed: EIO: input\/output error/);
    assert.equal(t.cache.count, 0);
    assert.equal(t.cache.used, 0);
    assert.equal(t.cache.reserved, 0);
    assert.equal(t.cache.filling("bad.bin"), false);
    assert.deepEqual(await cacheFileNames(t.cacheDir), [], "no cache file and no .part left");
    const stats = await t.service.stats();
    assert.equal(stats.hits + stats.misses + stats.bypasses, 0);

    // Once the origin recovers, the same path is fetched afresh.
    origin.faults.delete("bad.bin");
    const { served, bytes } = await fetchWhole(t.service, "bad.bin");
    assert.equal(served.outcome, "miss");
    assert.deepEqual(bytes, content);
  });
});

Deno.test("FileService: a file that changes while it is read is a 500 'try again', never admitted", async () => {
  const content = seededBytes(50 * KiB, 8);
  const faults: [string, Fault][] = [
    ["changed after the read (restat)", { restatValidator: "later" }],
    ["grew while read", { extra: new Uint8Array(10) }],
    ["shrank while read", { truncateTo: 1000 }],
    ["changed between stat and open", { openValidator: "other" }],
  ];
  for (const [what, fault] of faults) {
    const origin = new MemoryOrigin({ "moving.bin": content });
    origin.faults.set("moving.bin", fault);
    await withService({ origin }, async (t) => {
      const error = await rejection(t.service.open("moving.bin"));
      assert.ok(error instanceof OriginChangedError, `${what}: ${error}`);
      const [code, message] = t.service.describeError(error);
      assert.equal(code, 500, what);
      assert.match(message, /changed while it was read: moving\.bin; try again/);
      assert.deepEqual(t.errors, [], `${what}: an expected race, not reported as a failure`);
      assert.equal(t.cache.count, 0, what);
      assert.equal(t.cache.reserved, 0, what);
      assert.deepEqual(await cacheFileNames(t.cacheDir), [], what);
      assert.equal(origin.closes, origin.opens, `${what}: every origin file closed`);
    });
  }
});

Deno.test("FileService: a bypass whose origin changed between stat and open is refused and frees its permit", async () => {
  const content = seededBytes(10 * KiB, 9);
  const origin = new MemoryOrigin({ "r.bin": content });
  origin.faults.set("r.bin", { openValidator: "newer" });
  await withService({ origin, maxOpenFiles: 1 }, async (t) => {
    for (let i = 0; i < 3; i++) {
      // A range of an uncached file is a bypass; with one permit, a leaked
      // one would make the second attempt wait forever.
      const error = await rejection(t.service.open("r.bin", { offset: 1, length: 10 }));
      assert.ok(error instanceof OriginChangedError);
    }
    assert.equal(origin.closes, origin.opens);
    origin.faults.delete("r.bin");
    const served = await t.service.open("r.bin", { offset: 1, length: 10 });
    assert.deepEqual(await body(t.service, served), content.subarray(1, 11));
  });
});

Deno.test("FileService: out of file descriptors is a 503; any other failure a 500 with its message", async () => {
  const origin = new MemoryOrigin({ "a.txt": new Uint8Array(3) });
  const emfile = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
  origin.faults.set("a.txt", { openError: emfile });
  await withService({ origin }, async (t) => {
    const error = await rejection(t.service.open("a.txt"));
    assert.equal(error, emfile);
    assert.deepEqual(t.service.describeError(error), [503, "server busy: out of file descriptors"]);
    assert.deepEqual(t.errors, [], "a 503 is load, not a failure to report");
    assert.equal(t.cache.count, 0);
    assert.equal(t.cache.reserved, 0);

    assert.deepEqual(t.service.describeError("a string"), [500, "server error: a string"]);
    assert.deepEqual(t.service.describeError(new RequestError(403, "no")), [403, "no"]);
    assert.deepEqual(t.errors, ["request failed: a string"]);
  });
});

Deno.test("FileService: describeError reports the stack only in debug mode", async () => {
  const lines: string[] = [];
  await withService({}, (t) => {
    const service = new FileService(t.cache, t.service.origin, {
      maxOpenFiles: 4,
      onError: (line) => lines.push(line),
      debug: true,
    });
    const error = new Error("kaput");
    assert.deepEqual(service.describeError(error), [500, "server error: kaput"]);
    assert.equal(lines.length, 1);
    assert.ok(lines[0].includes(error.stack!), "the stack trace, in debug mode");
    t.service.describeError(error);
    assert.deepEqual(t.errors, ["request failed: kaput"], "the message alone, otherwise");
  });
});

Deno.test("FileService: stream: a body that ends early is a TruncatedBodyError; a gone client's error passes through", async () => {
  const content = seededBytes(2 * MiB, 10);
  const origin = new MemoryOrigin({
    "short.bin": content,
    "fine.bin": content,
    "whole.bin": content.subarray(0, 200 * KiB),
  });
  origin.faults.set("short.bin", { truncateTo: 700 * KiB });
  origin.faults.set("whole.bin", { truncateTo: 70 * KiB });
  // Ranges of uncached files: bypasses, streamed from the origin.
  await withService({ origin }, async (t) => {
    const head = new TextEncoder().encode("HEAD");
    const streamed = async (path: string, length: number) => {
      const served = await t.service.open(path, { offset: 0, length });
      assert.equal(served.outcome, "bypass");
      let received = 0;
      try {
        await assert.rejects(
          t.service.stream(served, head, (chunk) => {
            received += chunk.length;
            return Promise.resolve();
          }),
          TruncatedBodyError,
        );
      } finally {
        served.release();
      }
      return received;
    };
    // In chunks: the head and what there was got through.
    assert.equal(await streamed("short.bin", content.length - 1), head.length + 700 * KiB);
    assert.equal(t.errors.length, 1);
    assert.match(t.errors[0], /response cut short: short\.bin ended early/);
    // Read whole: nothing was handed on, not even the head.
    assert.equal(await streamed("whole.bin", 200 * KiB - 1), 0);
    assert.equal(t.errors.length, 2);
    assert.match(t.errors[1], /response cut short: whole\.bin ended early/);
    t.errors.length = 1;

    const fine = await t.service.open("fine.bin", { offset: 0, length: content.length - 1 });
    const gone = new Deno.errors.BrokenPipe("the client left");
    try {
      const error = await rejection(t.service.stream(fine, head, () => Promise.reject(gone)));
      assert.equal(error, gone, "a connection error is rethrown as it is");
    } finally {
      fine.release();
    }
    assert.equal(t.errors.length, 1, "and not reported");

    const failing = await t.service.open("fine.bin", { offset: 0, length: 100 });
    try {
      const error = await rejection(
        t.service.stream(failing, head, () => Promise.reject(new Error("sink broke"))),
      );
      assert.ok(error instanceof TruncatedBodyError, "any other failure is a truncated body");
    } finally {
      failing.release();
    }
    assert.equal(t.errors.length, 2);
    assert.match(t.errors[1], /sink broke/);
    assert.equal(origin.closes, origin.opens, "every origin file closed by release");
  });
});

Deno.test("FileService: release gives back the one file permit it holds, even when called twice", async () => {
  const content = seededBytes(100 * KiB, 11);
  await withService({ tree: { "f.bin": content }, memoryBudget: 0, maxOpenFiles: 1 }, async (t) => {
    await body(t.service, await t.service.open("f.bin")); // cached
    const first = await t.service.open("f.bin");
    assert.equal(first.outcome, "hit");
    const second = t.service.open("f.bin");
    assert.equal(await settled(second), false, "the only permit is held by the first");
    first.release();
    first.release(); // must not give back a second permit
    const secondServed = await second;
    const third = t.service.open("f.bin");
    assert.equal(await settled(third), false, "the double release made no extra permit");
    assert.deepEqual(await body(t.service, secondServed), content);
    assert.deepEqual(await body(t.service, await third), content);
  });
});

Deno.test("FileService: eviction makes room, in FIFO order, and is counted", async () => {
  const files = {
    "a.bin": seededBytes(40 * KiB, 12),
    "b.bin": seededBytes(40 * KiB, 13),
    "c.bin": seededBytes(40 * KiB, 14),
  };
  await withService({ tree: files, capacity: 100 * KiB, memoryBudget: 0 }, async (t) => {
    for (const path of Object.keys(files)) {
      assert.equal((await fetchWhole(t.service, path)).served.outcome, "miss");
    }
    assert.deepEqual(t.cache.entries().map((entry) => entry.path), ["b.bin", "c.bin"]);
    const listing = await t.service.listing();
    assert.equal(listing.capacity, 100 * KiB);
    assert.equal(listing.used, 80 * KiB);
    assert.equal(listing.policy, "fifo");
    assert.deepEqual(
      listing.entries.map((entry) => (entry as { path: string; size: number }).path),
      ["b.bin", "c.bin"],
    );
    assert.equal((await t.service.stats()).evictions, 1);
    assert.equal((await cacheFileNames(t.cacheDir)).length, 2, "the evicted file is unlinked");
    assert.equal((await fetchWhole(t.service, "a.bin")).served.outcome, "miss");
  });
});

Deno.test("FileService: the counters add up: hits + misses + bypasses + errors = requests", async () => {
  const files = {
    "one.bin": seededBytes(30 * KiB, 15),
    "two.bin": seededBytes(30 * KiB, 16),
    "big.bin": seededBytes(200 * KiB, 17),
  };
  await withService({ tree: files, capacity: 100 * KiB }, async (t) => {
    const requests: [string, { offset?: number; length?: number }][] = [
      ["one.bin", {}], // miss
      ["one.bin", {}], // hit
      ["two.bin", { offset: 5, length: 5 }], // bypass: range, not cached
      ["two.bin", {}], // miss
      ["two.bin", { offset: 5 }], // hit
      ["big.bin", {}], // bypass: too big
      ["missing.bin", {}], // 404
      ["one.bin", { offset: 999_999 }], // 416
      ["one.bin", {}], // hit
    ];
    let sent = 0;
    for (const [path, range] of requests) {
      t.service.countRequest();
      try {
        const served = await t.service.open(path, range);
        sent += (await body(t.service, served)).length;
      } catch (error) {
        t.service.countError(t.service.describeError(error)[0]);
      }
    }
    t.service.countSent(sent);
    const stats = await t.service.stats();
    assert.equal(stats.requests, requests.length);
    assert.equal(stats.hits, 3);
    assert.equal(stats.misses, 2);
    assert.equal(stats.bypasses, 2);
    assert.deepEqual(stats.errors, { "404": 1, "416": 1 });
    const errors = Object.values(stats.errors).reduce((a, b) => a + b, 0);
    assert.equal(stats.hits + stats.misses + stats.bypasses + errors, stats.requests);
    assert.equal(stats.bytesSent, sent);
    assert.equal(stats.bytesFromOrigin, 30 * KiB + 5 + 30 * KiB + 200 * KiB);
    assert.equal(stats.cache.entries, 2);
    assert.equal(stats.cache.used, 60 * KiB);

    // stats() is a snapshot: changing it changes nothing inside.
    const snapshot = await t.service.stats();
    snapshot.errors["500"] = 7;
    snapshot.connections.open = 99;
    assert.deepEqual((await t.service.stats()).errors, { "404": 1, "416": 1 });
    assert.equal((await t.service.stats()).connections.open, 0);
  });
});

Deno.test("readFull: fills the target from a source that trickles, and stops at its end", async () => {
  const data = seededBytes(1000, 18);
  const trickle = (limit: number): ByteSource & { reads: number } => {
    let position = 0;
    const source = {
      reads: 0,
      read(into: Uint8Array): Promise<number | null> {
        source.reads++;
        if (position >= limit) return Promise.resolve(null);
        const n = Math.min(into.length, 7, limit - position); // at most 7 bytes a read
        into.set(data.subarray(position, position + n));
        position += n;
        return Promise.resolve(n);
      },
      close() {},
    };
    return source;
  };

  const whole = new Uint8Array(1000);
  const full = trickle(1000);
  assert.equal(await readFull(full, whole), 1000);
  assert.deepEqual(whole, data);
  assert.equal(full.reads, Math.ceil(1000 / 7), "no read past a full target");

  const partial = new Uint8Array(1000);
  assert.equal(await readFull(trickle(300), partial), 300, "the count when the source ends first");
  assert.deepEqual(partial.subarray(0, 300), data.subarray(0, 300));
  assert.ok(partial.subarray(300).every((byte) => byte === 0), "nothing written past it");

  const none = trickle(1000);
  assert.equal(await readFull(none, new Uint8Array(0)), 0);
  assert.equal(none.reads, 0, "an empty target reads nothing");
  assert.equal(await readFull(trickle(0), new Uint8Array(10)), 0);

  const failing: ByteSource = {
    read: () => Promise.reject(new Deno.errors.ConnectionReset("reset")),
    close() {},
  };
  await assert.rejects(readFull(failing, new Uint8Array(4)), Deno.errors.ConnectionReset);
});

Deno.test("isConnectionError: true for a peer that went away, false for everything else", () => {
  for (
    const error of [
      new Deno.errors.BrokenPipe("x"),
      new Deno.errors.ConnectionReset("x"),
      new Deno.errors.ConnectionAborted("x"),
      new Deno.errors.NotConnected("x"),
      new Deno.errors.BadResource("x"),
    ]
  ) {
    assert.equal(isConnectionError(error), true, error.name);
  }
  for (
    const error of [
      new Error("Broken pipe"),
      new Deno.errors.NotFound("x"),
      new Deno.errors.TimedOut("x"),
      new Deno.errors.ConnectionRefused("x"),
      new Deno.errors.PermissionDenied("x"),
      new TruncatedBodyError("x"),
      undefined,
      null,
      "BrokenPipe",
      { name: "BrokenPipe" },
    ]
  ) {
    assert.equal(isConnectionError(error), false, String(error));
  }
});

Deno.test("isOutOfDescriptors: EMFILE and ENFILE by code or by message; nothing else", () => {
  assert.equal(isOutOfDescriptors(Object.assign(new Error("x"), { code: "EMFILE" })), true);
  assert.equal(isOutOfDescriptors(Object.assign(new Error("x"), { code: "ENFILE" })), true);
  assert.equal(isOutOfDescriptors(new Error("Too many open files (os error 24)")), true);
  // As Deno 2.9 raises it (checked with `ulimit -n 30`): a plain Error with a code.
  const real = Object.assign(new Error("Too many open files (os error 24): open 'x'"), {
    code: "EMFILE",
  });
  assert.equal(isOutOfDescriptors(real), true);
  assert.equal(isOutOfDescriptors({ code: "EMFILE" }), true, "any object with the code");
  assert.equal(isOutOfDescriptors(Object.assign(new Error("x"), { code: "ENOENT" })), false);
  assert.equal(isOutOfDescriptors(new Deno.errors.NotFound("No such file")), false);
  assert.equal(isOutOfDescriptors(new Error("too many requests")), false);
  assert.equal(isOutOfDescriptors(undefined), false);
  assert.equal(isOutOfDescriptors(null), false);
  assert.equal(isOutOfDescriptors("Too many open files"), false, "a bare string has no message");
  assert.equal(isOutOfDescriptors(42), false);
});

Deno.test("sweepInterval: a quarter of the shortest timeout, kept between 10 ms and 1 s", () => {
  assert.equal(sweepInterval(200), 50);
  assert.equal(sweepInterval(1000), 250);
  assert.equal(sweepInterval(4000), 1000);
  assert.equal(sweepInterval(60_000), 1000);
  assert.equal(sweepInterval(40), 10);
  assert.equal(sweepInterval(20), 10);
  assert.equal(sweepInterval(0), 10);
  assert.equal(sweepInterval(Infinity), 1000);
  assert.equal(sweepInterval(41), 10.25, "not rounded");
});

Deno.test("FileService: a 1 MiB answer goes in one piece, head first, while large buffers last (16 MiB of them); past that in 256 KiB chunks, then 64 KiB", async () => {
  const content = seededBytes(1 * MiB, 31);
  const head = seededBytes(100, 32);
  await withService({ tree: { "mid.bin": content }, memoryBudget: 0 }, async (t) => {
    assert.equal((await fetchWhole(t.service, "mid.bin")).served.outcome, "miss");
    // 40 transfers at once, each holding its buffers until the gate opens:
    // 15 whole answers fit the budget (1 MiB + 16 KiB each), then one of
    // 2 x 256 KiB in the 784 KiB left; 24 do not.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => open = resolve);
    const transfers: Promise<{ sizes: number[]; bytes: Uint8Array }>[] = [];
    for (let i = 0; i < 40; i++) {
      const served = await t.service.open("mid.bin");
      assert.equal(served.outcome, "hit");
      const sizes: number[] = [];
      const chunks: Uint8Array[] = [];
      const holding = new Promise<void>((started) => {
        transfers.push(
          t.service.stream(served, head, async (chunk) => {
            sizes.push(chunk.length);
            chunks.push(chunk.slice());
            if (sizes.length === 1) {
              started();
              await gate;
            }
          }).then(() => (served.release(), { sizes, bytes: concat(...chunks) })),
        );
      });
      await holding;
    }
    open();
    const done = await Promise.all(transfers);
    const expected = concat(head, content);
    for (const { bytes } of done) assert.ok(bytes.every((b, i) => b === expected[i]));
    const shapes = done.map(({ sizes }) => sizes.join(","));
    assert.deepEqual(shapes.slice(0, 15), Array(15).fill(`${head.length + MiB}`));
    assert.equal(shapes[15], [head.length, ...Array(4).fill(256 * KiB)].join(","));
    assert.deepEqual(
      shapes.slice(16),
      Array(24).fill([head.length, ...Array(16).fill(64 * KiB)].join(",")),
    );
    // The buffers went back: the budget is whole again.
    const again = await t.service.open("mid.bin");
    const sizes: number[] = [];
    await t.service.stream(again, head, (chunk) => (sizes.push(chunk.length), Promise.resolve()));
    again.release();
    assert.deepEqual(sizes, [head.length + MiB]);
  });
});

Deno.test("FileService: at most maxListings directory listings at once; the others wait their turn", async () => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-service-" });
  try {
    await writeTree(`${root}/files`, { "a.txt": "alpha", "b/c.txt": "charlie" });
    const cache = await FileCache.open({ dir: `${root}/cache` });
    const origin = await DirectoryOrigin.open(`${root}/files`);
    const list = origin.list.bind(origin);
    let running = 0;
    let most = 0;
    const turns: (() => void)[] = [];
    origin.list = async (path: string, window: OriginListWindow) => {
      running++;
      most = Math.max(most, running);
      await new Promise<void>((resolve) => turns.push(resolve));
      try {
        return await list(path, window);
      } finally {
        running--;
      }
    };
    const service = new FileService(cache, origin, {
      maxOpenFiles: 8,
      maxListings: 2,
      onError: () => {},
      debug: false,
    });
    const listings = Array.from({ length: 6 }, () => service.files(""));
    for (let released = 0; released < 6; released++) {
      // Once `released` have finished, the next two are in the origin; the rest wait.
      const reached = Math.min(released + 2, 6);
      for (let i = 0; i < 200 && (turns.length < reached || running !== reached - released); i++) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(turns.length, reached, "no listing let through early");
      assert.equal(running, reached - released);
      turns[released]();
    }
    for (const listing of await Promise.all(listings)) {
      assert.deepEqual(listing.entries.map((entry) => entry.name), ["a.txt", "b"]);
    }
    assert.equal(most, 2);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
