/**
 * The trace simulator: replays a request trace through the same eviction
 * policies the server uses (through the same `PolicyIndex`), and reports
 * object and byte miss ratios per policy and cache size. Its command line
 * is `cli/sim_cli.ts` (`deno task sim`).
 *
 * @module
 */

import type { EvictionPolicy, PolicyFactory } from "../policies/policy.ts";
import { PolicyIndex } from "../policies/policy_index.ts";
import { isPolicyName, POLICIES } from "../policies/registry.ts";
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
 * The policy a replay runs: a name from {@linkcode simulatorPolicies}, or a
 * factory of policies (such as one that `referencePolicy` in
 * `./reference.ts` returns).
 */
export type PolicyChoice = string | PolicyFactory;

/**
 * What a miss leads to in a replay. `"insert"`: evict as the policy says
 * until the object fits, then insert it. `"reject"`: nothing changes (the
 * object is served uncached). `"evictOnly"`: evict as for an insert, then
 * do not insert: the room made stays empty.
 */
export type Admission = "insert" | "reject" | "evictOnly";

/**
 * An eviction policy as the simulator replays it: the server's interface,
 * plus an optional rule for misses, with which a policy can reproduce
 * another simulator's admission exactly (see `./reference.ts`). The server
 * never asks it.
 */
export interface ReplayedPolicy extends EvictionPolicy {
  /**
   * Optional. Decides every miss, whatever the object's size, in place of
   * the simulator's own rule (an object larger than the cache, or one that
   * `admit` refuses, is rejected; any other is inserted). It must answer
   * `"reject"` for an object larger than the cache.
   */
  admission?(key: string, size: number): Admission;
}

/**
 * Replays `trace` through a fresh cache of `capacity` bytes under a policy.
 * Every request counts (no warm-up). A miss admits the object, evicting as
 * the policy says until it fits, unless it is larger than the whole cache or
 * the policy refuses it (`EvictionPolicy.admit`, asked before any eviction),
 * exactly as the server's cache does; a policy with its own
 * {@linkcode ReplayedPolicy.admission} decides misses itself.
 *
 * @param policy a name from `POLICIES`, `"belady"` (the offline optimum), or
 * a factory
 * @example
 * ```ts
 * import { simulate } from "./sim.ts";
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 1, objects: 100, requests: 1000 });
 * simulate(trace, "fifo", 10 * 4096).misses;
 * ```
 */
export function simulate(trace: Trace, policy: PolicyChoice, capacity: number): SimResult {
  const clock = { now: 0 };
  const replayed: ReplayedPolicy = makePolicy(policy, trace, clock, capacity);
  const index = new PolicyIndex<{ size: number }>(replayed);
  const admission = replayed.admission?.bind(replayed) ??
    ((key: string, size: number): Admission =>
      size <= capacity && index.admits(key, size) ? "insert" : "reject");
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
    const decision = admission(key, size);
    if (decision === "reject") continue;
    if (size > capacity) {
      throw new RangeError(`${replayed.name} admitted ${size} bytes to a cache of ${capacity}`);
    }
    while (index.used + size > capacity) index.evict();
    if (decision === "insert") index.insert(key, { size });
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

/**
 * Replays `trace` under each policy at each size: the results by policy,
 * then by size.
 *
 * @example
 * ```ts
 * import { simulateAll, simulatorPolicies } from "./sim.ts";
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 1, objects: 100, requests: 1000 });
 * simulateAll(trace, simulatorPolicies(), [4096, 16384]).length; // 12
 * ```
 */
export function simulateAll(trace: Trace, policies: PolicyChoice[], sizes: number[]): SimResult[] {
  return policies.flatMap((policy) => sizes.map((size) => simulate(trace, policy, size)));
}

/** The policy names the simulator knows: the server's, and Belady's optimum. */
export function simulatorPolicies(): string[] {
  return [...Object.keys(POLICIES), "belady"];
}

/**
 * Six cache sizes for `trace`, doubling from 1/64 to 1/2 of its distinct
 * bytes (each object counted once, at its last size).
 */
export function defaultSizes(trace: Trace): number[] {
  const distinct = new Map<string, number>();
  trace.keys.forEach((key, i) => distinct.set(key, trace.sizes[i]));
  const total = [...distinct.values()].reduce((sum, size) => sum + size, 0);
  return Array.from({ length: 6 }, (_, k) => Math.max(1, Math.round(total / 2 ** (6 - k))));
}

function makePolicy(
  name: PolicyChoice,
  trace: Trace,
  clock: { now: number },
  capacity: number,
): EvictionPolicy {
  if (typeof name === "function") return name(capacity);
  if (name === "belady") return new BeladyPolicy(trace.nextAccess, clock);
  if (!isPolicyName(name)) {
    throw new RangeError(`unknown policy "${name}" (known: ${simulatorPolicies().join(", ")})`);
  }
  return POLICIES[name](capacity);
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
