/**
 * The trace simulator: replays a request trace through the same eviction
 * policies the server uses (through the same `PolicyIndex`), and reports
 * object and byte miss ratios per policy and cache size.
 *
 * @module
 */

import { type EvictionPolicy, POLICIES, PolicyIndex } from "./cache.ts";
import type { Trace } from "./trace.ts";

/** What one replay counts. */
export interface SimResult {
  /** The policy's name. */
  policy: string;
  /** The cache capacity in bytes. */
  capacity: number;
  /** Requests replayed. */
  requests: number;
  /** Bytes requested. */
  requestedBytes: number;
  /** Requests that were not hits. */
  misses: number;
  /** Bytes of the requests that were not hits. */
  missedBytes: number;
}

/**
 * Replays `trace` through a fresh cache of `capacity` bytes under a policy.
 * Every request counts (no warm-up). A miss admits the object, evicting as
 * the policy says until it fits, unless it is larger than the whole cache,
 * exactly as the server's cache does.
 *
 * @param policy a name from `POLICIES`, or `"belady"` (the offline optimum)
 * @example
 * ```ts
 * import { simulate } from "./sim.ts";
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 1, objects: 100, requests: 1000 });
 * simulate(trace, "fifo", 10 * 4096).misses;
 * ```
 */
export function simulate(trace: Trace, policy: string, capacity: number): SimResult {
  const clock = { now: 0 };
  const index = new PolicyIndex<{ size: number }>(makePolicy(policy, trace, clock));
  const { keys, sizes } = trace;
  let misses = 0;
  let missedBytes = 0;
  let requestedBytes = 0;
  for (let i = 0; i < keys.length; i++) {
    clock.now = i;
    const key = keys[i];
    const size = sizes[i];
    requestedBytes += size;
    if (index.hit(key)) continue;
    misses++;
    missedBytes += size;
    if (size > capacity) continue;
    while (index.used + size > capacity) index.evict();
    index.insert(key, { size });
  }
  return {
    policy: index.policy.name,
    capacity,
    requests: keys.length,
    requestedBytes,
    misses,
    missedBytes,
  };
}

/** The policy names the simulator knows: the server's, and Belady's optimum. */
export function simulatorPolicies(): string[] {
  return [...Object.keys(POLICIES), "belady"];
}

function makePolicy(name: string, trace: Trace, clock: { now: number }): EvictionPolicy {
  if (name === "belady") return new BeladyPolicy(trace.nextAccess, clock);
  const make = POLICIES[name];
  if (!make) {
    throw new RangeError(`unknown policy "${name}" (known: ${simulatorPolicies().join(", ")})`);
  }
  return make();
}

/**
 * Belady's MIN: evicts the object whose next request is farthest in the
 * future. It needs the future, so it exists only in the simulator, as the
 * lower bound every policy is plotted against. A max-heap with lazy
 * deletion keeps each operation O(log n).
 */
export class BeladyPolicy implements EvictionPolicy {
  readonly name = "belady";
  #nextAccess: Float64Array;
  #clock: { now: number };
  #next = new Map<string, number>();
  #heap: { key: string; next: number }[] = [];

  /** `clock.now` is the index of the request being replayed. */
  constructor(nextAccess: Float64Array, clock: { now: number }) {
    this.#nextAccess = nextAccess;
    this.#clock = clock;
  }

  insert(key: string): void {
    this.touch(key);
  }

  touch(key: string): void {
    const next = this.#nextAccess[this.#clock.now];
    this.#next.set(key, next);
    this.#push({ key, next });
  }

  chooseVictim(): string | undefined {
    while (this.#heap.length > 0) {
      const top = this.#heap[0];
      if (this.#next.get(top.key) === top.next) return top.key;
      this.#pop(); // stale: the key was touched again or removed
    }
    return undefined;
  }

  remove(key: string): void {
    this.#next.delete(key);
  }

  evictionOrder(): string[] {
    return [...this.#next].sort((a, b) => b[1] - a[1]).map(([key]) => key);
  }

  #push(item: { key: string; next: number }): void {
    const heap = this.#heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent].next >= item.next) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = item;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    while (true) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const larger = right < heap.length && heap[right].next > heap[left].next ? right : left;
      if (heap[larger].next <= last.next) break;
      heap[i] = heap[larger];
      i = larger;
    }
    heap[i] = last;
  }
}
