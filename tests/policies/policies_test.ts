import assert from "node:assert/strict";
import { FileCache } from "../../cache.ts";
import type { EvictionPolicy } from "../../policies/policy.ts";
import { PolicyIndex } from "../../policies/policy_index.ts";
import { POLICIES } from "../../policies/registry.ts";
import { ClockPolicy } from "../../policies/clock.ts";
import { FifoPolicy } from "../../policies/fifo.ts";
import { LruPolicy } from "../../policies/lru.ts";
import { S3FifoPolicy } from "../../policies/s3fifo.ts";
import { SievePolicy } from "../../policies/sieve.ts";
import { simulate } from "../../sim/sim.ts";
import { readTrace, type Trace } from "../../sim/trace.ts";
import { seededRandom } from "../helpers.ts";
import { CLOUDPHYSICS_TRACE, LIBCACHESIM } from "../sim/libcachesim_cloudphysics.ts";

const MiB = 1024 * 1024;

let loaded: Promise<Trace> | undefined;
/** The libCacheSim sample trace, read once for all tests. */
function sampleTrace(): Promise<Trace> {
  return loaded ??= readTrace(CLOUDPHYSICS_TRACE.pathname, "oracleGeneral");
}

Deno.test("every policy matches libCacheSim exactly on cloudPhysicsIO, 128 to 1024 MiB", async (t) => {
  const trace = await sampleTrace();
  const capacities = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => n * 128 * MiB);
  for (const [policy, expected] of Object.entries(LIBCACHESIM)) {
    await t.step(policy, () => {
      const results = capacities.map((capacity) => simulate(trace, policy, capacity));
      for (const result of results) {
        assert.equal(result.requests, 113872);
        assert.equal(result.requestedBytes, 4368040448);
      }
      assert.deepEqual(
        { misses: results.map((r) => r.misses), bytes: results.map((r) => r.missedBytes) },
        expected,
      );
    });
  }
});

Deno.test("S3-FIFO with coldFillToMain off is libCacheSim's S3-FIFOv0 (at 256 MiB)", async () => {
  const trace = await sampleTrace();
  const v0 = (capacity: number) => new S3FifoPolicy({ capacity, coldFillToMain: false });
  const result = simulate(trace, v0, 256 * MiB);
  assert.deepEqual([result.misses, result.missedBytes], [82387, 3703628800]);
});

/**
 * A cache of `capacity` bytes driven request by request as the simulator
 * drives it (hit, else admit, evict until it fits, insert), keeping the
 * set of keys it holds.
 */
class Driver {
  readonly index: PolicyIndex<{ key: string; size: number }>;
  readonly live = new Set<string>();
  readonly capacity: number;

  constructor(policy: EvictionPolicy, capacity: number) {
    this.index = new PolicyIndex(policy);
    this.capacity = capacity;
  }

  /** Requests each key of a space-separated list; returns "hit" or "miss" per key. */
  request(keys: string, size = 10): string {
    return keys.split(" ").map((key) => {
      if (this.index.hit(key)) return "hit";
      if (size <= this.capacity && this.index.admits(key, size)) {
        while (this.index.used + size > this.capacity) this.evict();
        this.index.insert(key, { key, size });
        this.live.add(key);
      }
      return "miss";
    }).join(" ");
  }

  /** Evicts one entry, checking it is the one `evictionOrder` put first. */
  evict(): string {
    const expected = this.index.policy.evictionOrder()[0];
    const victim = this.index.evict()!.key;
    assert.equal(victim, expected, "the victim is the head of evictionOrder()");
    assert.ok(this.live.delete(victim), `victim ${victim} was not in the cache`);
    return victim;
  }

  remove(key: string): void {
    this.index.remove(key);
    this.live.delete(key);
  }

  /** Checks that evictionOrder lists exactly the keys held, once each. */
  check(): void {
    const order = this.index.policy.evictionOrder();
    assert.deepEqual([...order].sort(), [...this.live].sort());
  }

  /** Evicts everything, checking the order is the one `evictionOrder` announced. */
  drain(): string[] {
    const announced = this.index.policy.evictionOrder();
    const evicted: string[] = [];
    while (this.live.size > 0) evicted.push(this.evict());
    assert.deepEqual(evicted, announced);
    assert.equal(this.index.policy.chooseVictim(), undefined);
    return evicted;
  }
}

Deno.test("POLICIES: each name makes a fresh policy of that name for a capacity", () => {
  for (const [name, make] of Object.entries(POLICIES)) {
    const policy = make(1000);
    assert.equal(policy.name, name);
    assert.deepEqual(policy.evictionOrder(), []);
    assert.equal(policy.chooseVictim(), undefined);
  }
});

Deno.test("LRU: admission and hits put an entry at the head; the tail leaves first", () => {
  const lru = new LruPolicy();
  for (const key of ["a", "b", "c"]) lru.insert(key, 1);
  assert.deepEqual(lru.evictionOrder(), ["a", "b", "c"]);
  lru.touch("a");
  assert.deepEqual(lru.evictionOrder(), ["b", "c", "a"]);
  lru.touch("c");
  assert.deepEqual(lru.evictionOrder(), ["b", "a", "c"]);
  assert.equal(lru.chooseVictim(), "b");
});

Deno.test("CLOCK: a referenced tail gets a second chance at the head, once per bit", () => {
  const clock = new ClockPolicy();
  for (const key of ["a", "b", "c"]) clock.insert(key, 1);
  clock.touch("a");
  clock.touch("a"); // one bit: the second hit changes nothing
  assert.deepEqual(clock.evictionOrder(), ["b", "c", "a"]);
  assert.equal(clock.chooseVictim(), "b");
  clock.remove("b");
  clock.insert("d", 1);
  // a went to the head, its bit spent: it is now older than d only.
  assert.deepEqual(clock.evictionOrder(), ["c", "a", "d"]);

  // Two bits: a (5 hits, saturated at 3) outlasts b (1 hit).
  const driver = new Driver(new ClockPolicy({ bits: 2 }), 30);
  driver.request("a b c");
  assert.equal(driver.request("a a a a a b"), "hit hit hit hit hit hit");
  assert.deepEqual(driver.drain(), ["c", "b", "a"]);
  assert.throws(() => new ClockPolicy({ bits: 0 }), RangeError);
});

Deno.test("SIEVE: hits set a bit in place; the hand clears bits and stays where it stopped", () => {
  const sieve = new SievePolicy();
  for (const key of ["a", "b", "c", "d"]) sieve.insert(key, 1); // a is the tail
  sieve.touch("a");
  sieve.touch("b");
  assert.deepEqual(sieve.evictionOrder(), ["c", "d", "a", "b"]);
  assert.equal(sieve.chooseVictim(), "c"); // a and b lose their bits on the way
  sieve.remove("c");
  // The hand waits at d, the entry after c: a hit on a does not move a, and
  // the sweep goes on from d before it wraps to the tail.
  sieve.insert("e", 1);
  sieve.touch("a");
  assert.deepEqual(sieve.evictionOrder(), ["d", "e", "b", "a"]);
  // Removing the entry under the hand moves the hand to the next newer one.
  sieve.remove("d");
  assert.deepEqual(sieve.evictionOrder(), ["e", "b", "a"]);
  assert.equal(sieve.chooseVictim(), "e");
  sieve.remove("e");
  // Past the head the hand starts again at the tail: a is visited, b is not.
  assert.equal(sieve.chooseVictim(), "b");
  sieve.remove("b");
  assert.deepEqual(sieve.evictionOrder(), ["a"]);
});

/** 100 bytes of 10-byte objects: small 10 (one object), main 90, ghost 90. */
function s3fifoCache(options: { promoteAfter?: number } = {}) {
  const policy = new S3FifoPolicy({ capacity: 100, ...options });
  const driver = new Driver(policy, 100);
  // Cold start: the first object fills small, the next nine go to main.
  driver.request("a x1 x2 x3 x4 x5 x6 x7 x8 x9");
  assert.equal(policy.locate("a"), "small");
  assert.equal(policy.locate("x1"), "main");
  return { policy, driver };
}

Deno.test("S3-FIFO: queue budgets are libCacheSim's shares, truncated", () => {
  const policy = new S3FifoPolicy({ capacity: 128 * MiB });
  assert.equal(policy.smallCapacity, 13421772);
  assert.equal(policy.mainCapacity, 128 * MiB - 13421772);
  assert.equal(policy.ghostCapacity, 120795955);
});

Deno.test("S3-FIFO: a cold cache fills main once small is full, unless coldFillToMain is off", () => {
  const v0 = new S3FifoPolicy({ capacity: 100, coldFillToMain: false });
  new Driver(v0, 100).request("a x1 x2");
  assert.deepEqual(["a", "x1", "x2"].map((key) => v0.locate(key)), ["small", "small", "small"]);
});

Deno.test("S3-FIFO: an unhit small entry leaves into the ghost; a ghost hit goes to main", () => {
  const { policy, driver } = s3fifoCache();
  assert.equal(driver.request("y"), "miss");
  assert.equal(policy.locate("a"), "ghost", "small evicts a into the ghost");
  assert.equal(policy.locate("y"), "small", "after the first eviction, new objects go to small");
  assert.equal(driver.request("a"), "miss");
  assert.equal(policy.locate("a"), "main", "a ghost hit is admitted to main");
  assert.equal(policy.locate("y"), "ghost");
  // Main now holds more than its share: the next victim comes from main,
  // and a main victim is not remembered.
  driver.request("z");
  assert.equal(policy.locate("x1"), undefined);
  assert.equal(policy.locate("y"), "ghost");
});

Deno.test("S3-FIFO: two small hits promote to main, within the call that then evicts from main", () => {
  const { policy, driver } = s3fifoCache();
  driver.request("y");
  assert.equal(driver.request("y y"), "hit hit");
  driver.request("z");
  // One chooseVictim moved y (two hits) to main, emptied small, and took
  // main's tail.
  assert.equal(policy.locate("y"), "main");
  assert.equal(policy.locate("x1"), undefined);
  assert.equal(policy.locate("z"), "small");

  const once = s3fifoCache();
  once.driver.request("y y z");
  assert.equal(once.policy.locate("y"), "ghost", "one hit is not enough by default");

  const threshold1 = s3fifoCache({ promoteAfter: 1 });
  threshold1.driver.request("y y z");
  assert.equal(threshold1.policy.locate("y"), "main", "promoteAfter: 1");
});

Deno.test("S3-FIFO: main reinserts hit entries with the counter capped at 3, minus one", () => {
  const { driver } = s3fifoCache();
  driver.request("x1 x1 x1 x1 x1 x2 x2 x2");
  // x1 (5 hits) and x2 (3 hits) both survive exactly three passes: x1,
  // older, leaves first. Uncapped, x2 would leave before x1.
  assert.deepEqual(driver.drain(), ["a", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x1", "x2"]);
});

Deno.test("S3-FIFO: objects larger than the small queue, admitted by default or rejected", async () => {
  const admitting = new Driver(new S3FifoPolicy({ capacity: 100 }), 100);
  assert.equal(admitting.request("big big", 50), "miss hit");

  const rejecting = new S3FifoPolicy({ capacity: 100, largeObjects: "reject" });
  const driver = new Driver(rejecting, 100);
  driver.request("a b c d e f g h i j", 9);
  assert.equal(driver.request("big big", 11), "miss miss", "never admitted");
  assert.equal(driver.index.used, 90, "nothing was evicted for it");
  assert.equal(rejecting.admit("k", 10), false, "exactly the small queue's size: rejected");
  assert.equal(rejecting.admit("k", 9), true);
  assert.throws(() => new S3FifoPolicy({ capacity: 1, largeObjects: "x" as "small" }), RangeError);

  // The simulator and the server's cache both ask before evicting.
  const reject = (capacity: number) => new S3FifoPolicy({ capacity, largeObjects: "reject" });
  {
    const trace: Trace = {
      keys: ["big", "big", "small", "small"],
      sizes: Float64Array.from([50, 50, 5, 5]),
      nextAccess: Float64Array.from([1, Infinity, 3, Infinity]),
    };
    assert.equal(simulate(trace, reject, 100).misses, 3);
    assert.equal(simulate(trace, "s3fifo", 100).misses, 2);

    const dir = await Deno.makeTempDir({ prefix: "tcpcache-policies-test-" });
    try {
      const cache = await FileCache.open({ dir, capacity: 100, policy: reject });
      const source = (size: number) => ({
        stat: { size, mtime: 1, validator: `v${size}` },
        read: (sink: (chunk: Uint8Array) => Promise<void>) => sink(new Uint8Array(size)),
      });
      assert.equal(await cache.fill("big", source(50)), undefined);
      assert.equal((await cache.fill("small", source(5)))?.size, 5);
      assert.deepEqual(cache.entries().map((entry) => entry.path), ["small"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("every policy stays consistent under random requests, removals and evictions", () => {
  const makers: Record<string, (capacity: number) => EvictionPolicy> = {
    fifo: () => new FifoPolicy(),
    lru: () => new LruPolicy(),
    clock: () => new ClockPolicy(),
    "clock-3bit": () => new ClockPolicy({ bits: 3 }),
    sieve: () => new SievePolicy(),
    s3fifo: (capacity) => new S3FifoPolicy({ capacity }),
    "s3fifo-promote1": (capacity) => new S3FifoPolicy({ capacity, promoteAfter: 1 }),
    "s3fifo-reject": (capacity) => new S3FifoPolicy({ capacity, largeObjects: "reject" }),
    "s3fifo-v0": (capacity) => new S3FifoPolicy({ capacity, coldFillToMain: false }),
  };
  for (const [name, make] of Object.entries(makers)) {
    for (const seed of [1, 2, 3]) {
      const random = seededRandom(seed * 7919);
      const capacity = 200;
      const driver = new Driver(make(capacity), capacity);
      const sizes = new Map<string, number>();
      for (let step = 0; step < 3000; step++) {
        const key = `k${Math.floor(random() ** 2 * 60)}`;
        const roll = random();
        try {
          if (roll < 0.12) {
            driver.remove(key); // cached or not, under the hand or not
          } else if (roll < 0.17) {
            if (driver.live.size > 0) driver.evict();
          } else {
            if (!sizes.has(key)) sizes.set(key, 1 + Math.floor(random() * 30));
            driver.request(key, sizes.get(key));
          }
          driver.check();
        } catch (error) {
          throw new Error(`${name}, seed ${seed}, step ${step}: ${(error as Error).message}`);
        }
      }
      driver.drain();
    }
  }
});
