import assert from "node:assert/strict";
import { CACHE_MARKER, type CacheEntry, FileCache, type FillSource } from "../cache.ts";
import type { EvictionPolicy, PolicyFactory, PolicyName } from "../policies/policy.ts";
import { Mutex } from "../util/mutex.ts";
import { OriginChangedError } from "../origin/origin.ts";
import { FifoPolicy } from "../policies/fifo.ts";
import { cacheFileNames, memorySource, seededBytes, seededRandom, sha256 } from "./helpers.ts";

async function withCache(
  options: {
    capacity: number;
    policy?: PolicyName | PolicyFactory;
    onWarning?: (message: string) => void;
  },
  test: (cache: FileCache, dir: string) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-cache-test-" });
  try {
    const cache = await FileCache.open({ dir: `${root}/cache`, ...options });
    await test(cache, `${root}/cache`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

/** The cache directory's files other than its bookkeeping, name → size. */
async function filesIn(dir: string): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  for (const name of cacheFileNames(dir)) files.set(name, (await Deno.stat(`${dir}/${name}`)).size);
  return files;
}

Deno.test("FIFO admits until full, then evicts the oldest entries first", async () => {
  await withCache({ capacity: 100 }, async (cache, dir) => {
    const a = await cache.fill("a", memorySource(seededBytes(40, 1)));
    await cache.fill("b", memorySource(seededBytes(40, 2)));
    cache.touch("a"); // a hit changes nothing under FIFO
    await cache.fill("c", memorySource(seededBytes(40, 3)));
    assert.deepEqual(cache.entries().map((e) => e.path), ["b", "c"]);
    assert.equal(cache.used, 80);
    assert.equal(cache.evictions, 1);
    assert.equal(cache.lookup("a"), undefined);
    assert.equal((await filesIn(dir)).has(a!.file), false, "the evicted file is unlinked");
    await cache.fill("d", memorySource(seededBytes(100, 4)));
    assert.deepEqual(cache.entries().map((e) => e.path), ["d"]);
    assert.equal(cache.used, 100);
    assert.equal(cache.evictions, 3);
  });
});

Deno.test("an entry records the size, validator and sha256 of what was copied", async () => {
  await withCache({ capacity: 1 << 20 }, async (cache, dir) => {
    const bytes = seededBytes(100_000, 7);
    const entry = (await cache.fill("x/y.bin", memorySource(bytes, { version: "v1" })))!;
    assert.equal(entry.size, bytes.length);
    assert.equal(entry.validator, "v1");
    assert.equal(entry.sha256, sha256(bytes));
    assert.deepEqual(await Deno.readFile(`${dir}/${entry.file}`), bytes);
  });
});

Deno.test("a small entry's bytes are in shared memory (worker threads read them, no copy)", async () => {
  await withCache({ capacity: 1 << 20 }, async (cache) => {
    const bytes = seededBytes(1_000, 3);
    const entry = (await cache.fill("small.bin", memorySource(bytes, { version: "v1" })))!;
    assert.ok(entry.bytes!.buffer instanceof SharedArrayBuffer);
    assert.deepEqual(new Uint8Array(entry.bytes!), bytes);
  });
});

Deno.test("a file larger than the capacity is never admitted and evicts nothing", async () => {
  await withCache({ capacity: 100 }, async (cache) => {
    await cache.fill("small", memorySource(seededBytes(60)));
    const big = memorySource(seededBytes(101));
    assert.equal(await cache.fill("big", big), undefined);
    assert.equal(big.reads, 0);
    assert.deepEqual(cache.entries().map((e) => e.path), ["small"]);
    assert.equal(cache.evictions, 0);
  });
});

Deno.test("concurrent fills of one path read the source once (single flight)", async () => {
  await withCache({ capacity: 1 << 20 }, async (cache) => {
    const source = memorySource(seededBytes(50_000), { onChunk: () => Promise.resolve() });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => cache.fill("same", source)),
    );
    assert.equal(source.reads, 1);
    assert.ok(results.every((entry) => entry === results[0] && entry !== undefined));
    assert.equal(cache.count, 1);
    // Once finished, a new fill reads again (nothing stays in flight).
    await cache.fill("same", source);
    assert.equal(source.reads, 2);
  });
});

Deno.test("a source that fails admits nothing and leaves no partial file", async () => {
  await withCache({ capacity: 1000 }, async (cache, dir) => {
    const failing: FillSource = {
      stat: { size: 500, mtime: 1, validator: "v" },
      read: async (sink) => {
        await sink(new Uint8Array(100));
        throw new Error("disk read error");
      },
    };
    await assert.rejects(cache.fill("f", failing), /disk read error/);
    assert.equal(cache.count, 0);
    assert.equal(cache.reserved, 0);
    assert.equal(cache.used, 0);
    assert.deepEqual(await filesIn(dir), new Map());
  });
});

Deno.test("a source with more or fewer bytes than its size is rejected as changed", async () => {
  await withCache({ capacity: 1000 }, async (cache, dir) => {
    for (const actual of [99, 101]) {
      const source = memorySource(seededBytes(actual));
      source.stat = { ...source.stat, size: 100 };
      await assert.rejects(cache.fill("changing", source), OriginChangedError);
    }
    assert.equal(cache.count, 0);
    assert.equal(cache.reserved, 0);
    assert.deepEqual(await filesIn(dir), new Map());
  });
});

Deno.test("admissions in flight count against the capacity", async () => {
  await withCache({ capacity: 100 }, async (cache) => {
    const started = Promise.withResolvers<void>();
    const gate = Promise.withResolvers<void>();
    const slow = memorySource(seededBytes(70), {
      chunk: 10,
      onChunk: () => {
        started.resolve();
        return gate.promise;
      },
    });
    const first = cache.fill("slow", slow);
    await started.promise;
    // 70 bytes are reserved by a fill that cannot be evicted: 40 more do not fit.
    assert.equal(cache.reserved, 70);
    assert.equal(await cache.fill("other", memorySource(seededBytes(40))), undefined);
    assert.ok(await cache.fill("fits", memorySource(seededBytes(30))));
    gate.resolve();
    assert.ok(await first);
    assert.equal(cache.used, 100);
    assert.equal(cache.reserved, 0);
  });
});

Deno.test("remove drops only the entry it was given", async () => {
  await withCache({ capacity: 1000 }, async (cache, dir) => {
    const old = (await cache.fill("p", memorySource(seededBytes(10), { version: "1" })))!;
    const fresh = (await cache.fill("p", memorySource(seededBytes(20), { version: "2" })))!;
    assert.equal(cache.used, 20, "a refill replaces the old entry");
    await cache.remove("p", old);
    assert.equal(cache.lookup("p"), fresh);
    await cache.remove("p", fresh);
    assert.equal(cache.lookup("p"), undefined);
    assert.equal(cache.used, 0);
    assert.deepEqual(await filesIn(dir), new Map());
  });
});

Deno.test("a file opened before its eviction stays readable in full", async () => {
  await withCache({ capacity: 100 }, async (cache) => {
    const bytes = seededBytes(80, 5);
    const entry = (await cache.fill("a", memorySource(bytes)))!;
    const file = (await cache.openEntry(entry))!;
    try {
      await cache.fill("b", memorySource(seededBytes(80, 6))); // evicts a
      assert.equal(await cache.openEntry(entry), undefined, "a new open sees the eviction");
      const read = new Uint8Array(80);
      assert.equal(await file.read(read), 80);
      assert.deepEqual(read, bytes);
    } finally {
      file.close();
    }
  });
});

Deno.test("a failing cache directory is counted, reported at a bounded rate, and admits nothing", async () => {
  const warnings: string[] = [];
  await withCache({ capacity: 1000, onWarning: (m) => warnings.push(m) }, async (cache, dir) => {
    await Deno.remove(dir, { recursive: true });
    assert.equal(await cache.fill("a", memorySource(seededBytes(10))), undefined);
    assert.equal(await cache.fill("b", memorySource(seededBytes(10))), undefined);
    assert.equal(warnings.length, 1, "one line a minute at most");
    assert.match(warnings[0], /a write failed: No such file/);
    assert.equal((await cache.figures()).writeFailures, 2);
    assert.equal(cache.reserved, 0);
    assert.equal(cache.used, 0);
    await Deno.mkdir(dir);
  });
});

Deno.test("the cache directory: created, adopted, emptied when marked, else refused", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-dir-test-" });
  try {
    await t.step("a missing directory is created with the marker", async () => {
      await FileCache.open({ dir: `${root}/new/nested` });
      assert.ok((await Deno.stat(`${root}/new/nested/${CACHE_MARKER}`)).isFile);
    });
    await t.step("an empty directory is adopted", async () => {
      await Deno.mkdir(`${root}/empty`);
      await FileCache.open({ dir: `${root}/empty` });
      assert.ok((await Deno.stat(`${root}/empty/${CACHE_MARKER}`)).isFile);
    });
    await t.step("a marked directory is emptied", async () => {
      const cache = await FileCache.open({ dir: `${root}/marked` });
      await cache.fill("a", memorySource(seededBytes(10)));
      await Deno.writeTextFile(`${root}/marked/leftover.part`, "x");
      const again = await FileCache.open({ dir: `${root}/marked` });
      await again.housekept;
      assert.deepEqual(await filesIn(`${root}/marked`), new Map());
    });
    await t.step("a foreign directory is refused and left untouched", async () => {
      await Deno.mkdir(`${root}/foreign`);
      await Deno.writeTextFile(`${root}/foreign/precious.txt`, "keep me");
      await assert.rejects(
        FileCache.open({ dir: `${root}/foreign` }),
        /refusing to use cache directory .*not created by tcpcache/,
      );
      assert.equal(await Deno.readTextFile(`${root}/foreign/precious.txt`), "keep me");
      await assert.rejects(Deno.stat(`${root}/foreign/${CACHE_MARKER}`), Deno.errors.NotFound);
    });
    await t.step("an unknown policy is refused", async () => {
      await assert.rejects(
        FileCache.open({ dir: `${root}/p`, policy: "nope" as PolicyName }),
        /unknown policy/,
      );
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("the mutex runs tasks one at a time in call order, past failures", async () => {
  const mutex = new Mutex();
  const log: string[] = [];
  let running = 0;
  const task = (name: string, fail = false) => async () => {
    assert.equal(running++, 0, "tasks overlap");
    log.push(`start ${name}`);
    await new Promise((resolve) => setTimeout(resolve, 0));
    log.push(`end ${name}`);
    running--;
    if (fail) throw new Error(name);
  };
  const results = await Promise.allSettled([
    mutex.run(task("a")),
    mutex.run(task("b", true)),
    mutex.run(task("c")),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.deepEqual(log, ["start a", "end a", "start b", "end b", "start c", "end c"]);
});

/** A FIFO policy that checks every eviction against a model of the queue. */
class CheckedFifo implements EvictionPolicy {
  readonly name = "checked-fifo";
  readonly model: string[] = [];
  #inner = new FifoPolicy();

  insert(key: string, size: number): void {
    assert.ok(!this.model.includes(key), `double insert of ${key}`);
    this.model.push(key);
    this.#inner.insert(key, size);
  }
  touch(key: string): void {
    this.#inner.touch(key);
  }
  chooseVictim(): string | undefined {
    const victim = this.#inner.chooseVictim();
    assert.equal(victim, this.model[0], "FIFO must evict the oldest admission");
    return victim;
  }
  remove(key: string): void {
    this.model.splice(this.model.indexOf(key), 1);
    this.#inner.remove(key);
  }
  evictionOrder(): string[] {
    const order = this.#inner.evictionOrder();
    assert.deepEqual(order, this.model);
    return order;
  }
}

Deno.test("randomized: thousands of concurrent fills, hits and removals keep every invariant", async () => {
  const random = seededRandom(20261125);
  const capacity = 64 * 1024;
  {
    await withCache({ capacity, policy: () => new CheckedFifo() }, async (cache, dir) => {
      const contents = new Map<string, Uint8Array>();
      let peak = 0;
      const checkBound = () => {
        const total = cache.used + cache.reserved;
        peak = Math.max(peak, total);
        assert.ok(
          total <= capacity,
          `used ${cache.used} + reserved ${cache.reserved} > ${capacity}`,
        );
      };
      const operation = async (i: number) => {
        const path = `f${Math.floor(random() * 60)}`;
        const roll = random();
        if (roll < 0.1) {
          await cache.remove(path);
        } else if (roll < 0.3) {
          const entry = cache.lookup(path);
          if (entry) {
            cache.touch(path);
            assert.equal(entry.sha256, sha256(contents.get(entry.validator)!));
          }
        } else {
          // Sizes from 1 byte to a little over the capacity.
          const size = 1 + Math.floor(random() ** 3 * capacity * 1.1);
          const bytes = seededBytes(size, i + 1);
          const version = `${path}@${i}`;
          contents.set(version, bytes);
          const source = memorySource(bytes, {
            chunk: 1 + Math.floor(random() * 8192),
            version,
            onChunk: checkBound,
          });
          const entry: CacheEntry | undefined = await cache.fill(path, source);
          if (entry) {
            assert.equal(entry.size, contents.get(entry.validator)!.length);
            assert.equal(entry.sha256, sha256(contents.get(entry.validator)!));
          }
        }
        checkBound();
        const listed = cache.entries();
        assert.equal(cache.used, listed.reduce((sum, e) => sum + e.size, 0));
      };
      // 4000 operations, up to 32 in flight at once.
      let next = 0;
      const workers = Array.from({ length: 32 }, async () => {
        while (next < 4000) await operation(next++);
      });
      await Promise.all(workers);
      assert.ok(peak > capacity / 2, "the test must actually fill the cache");
      assert.ok(cache.evictions > 100, "the test must actually evict");
      assert.equal(cache.reserved, 0);
      // The directory holds exactly the entries, byte for byte.
      const files = await filesIn(dir);
      const entries = cache.entries();
      assert.deepEqual(
        [...files.keys()].sort(),
        entries.map((e) => e.file).sort(),
        "no leftover or missing cache files",
      );
      for (const entry of entries) {
        const onDisk = await Deno.readFile(`${dir}/${entry.file}`);
        assert.equal(sha256(onDisk), entry.sha256);
      }
      assert.ok([...files.values()].reduce((a, b) => a + b, 0) <= capacity);
    });
  }
});

Deno.test("small entries are also kept in memory, within the budget, and released on eviction", async () => {
  const root = await Deno.makeTempDir();
  try {
    const cache = await FileCache.open({
      dir: `${root}/cache`,
      capacity: 1000,
      memoryBudget: 250,
      memoryEntryLimit: 100,
    });
    const a = (await cache.fill("a", memorySource(seededBytes(100, 1))))!;
    const b = (await cache.fill("b", memorySource(seededBytes(100, 2))))!;
    const big = (await cache.fill("big", memorySource(seededBytes(101, 3))))!;
    const c = (await cache.fill("c", memorySource(seededBytes(100, 4))))!;
    assert.deepEqual(a.bytes, seededBytes(100, 1));
    assert.ok(b.bytes && !big.bytes, "over the entry limit: file only");
    assert.equal(c.bytes, undefined, "over the budget: file only");
    assert.equal(cache.memoryUsed, 200);
    await cache.fill("d", memorySource(seededBytes(700, 5))); // evicts a and b (FIFO)
    assert.equal(a.bytes, undefined);
    assert.equal(cache.memoryUsed, 0);
    await cache.remove("c");
    assert.equal(cache.memoryUsed, 0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
