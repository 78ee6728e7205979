/**
 * Replays that reproduce another cache simulator's numbers exactly
 * (`--reference libcachesim`): where tcpcache's defaults differ from the
 * reference's, the policy is made to behave as the reference's does.
 *
 * Against libCacheSim, one default differs: S3-FIFO's handling of objects
 * at least as large as its small queue (tcpcache admits them; libCacheSim
 * refuses most of them, see {@linkcode LibCacheSimS3FifoPolicy}). FIFO,
 * LRU, CLOCK (one bit), SIEVE and Belady's optimum already behave as
 * libCacheSim's, and every policy in both refuses an object larger than
 * the whole cache.
 *
 * @module
 */

import type { PolicyFactory } from "../policies/policy.ts";
import { type S3FifoOptions, S3FifoPolicy } from "../policies/s3fifo.ts";
import {
  type Admission,
  type PolicyChoice,
  type ReplayedPolicy,
  simulatorPolicies,
} from "./sim.ts";

/** The simulators whose behaviour a replay can reproduce. */
export type Reference = "libcachesim";

/** Every {@linkcode Reference}, as `--reference` takes them. */
export const REFERENCES: readonly Reference[] = ["libcachesim"];

/** Whether `name` is one of the {@linkcode REFERENCES}. */
export function isReference(name: string): name is Reference {
  return (REFERENCES as readonly string[]).includes(name);
}

/** Options of {@linkcode LibCacheSimS3FifoPolicy}: S3-FIFO's, but for `largeObjects`. */
export type LibCacheSimS3FifoOptions = Omit<S3FifoOptions, "largeObjects">;

/**
 * S3-FIFO exactly as libCacheSim's current `S3-FIFO` (`S3FIFO.c`) replays
 * a trace, large objects included. libCacheSim decides a miss in two
 * steps, and so does {@linkcode LibCacheSimS3FifoPolicy.admission}:
 *
 * 1. Before evicting (its `can_insert`): an object larger than the small
 *    queue is refused, ghost hit or not. The miss takes the key out of the
 *    ghost all the same, whatever the object's size.
 * 2. After evicting for it (its `insert`): an object of exactly the small
 *    queue's size that is not a ghost hit is not inserted, and the room
 *    made for it stays empty (`"evictOnly"`).
 *
 * `new S3FifoPolicy({ capacity, largeObjects: "reject" })`, which the
 * server can run, makes the same decisions but for step 2, where it
 * rejects the object without evicting: the server's cache has no way to
 * evict for an object it then does not keep.
 */
export class LibCacheSimS3FifoPolicy extends S3FifoPolicy implements ReplayedPolicy {
  /** Creates the policy; `options` as {@linkcode S3FifoPolicy}'s. */
  constructor(options: LibCacheSimS3FifoOptions) {
    // Admission is decided here, so the base class refuses nothing.
    super({ ...options, largeObjects: "small" });
  }

  /**
   * libCacheSim's `can_insert`: whether an object of `size` bytes fits the
   * small queue. Takes `key` out of the ghost, as any miss does.
   */
  override admit(key: string, size: number): boolean {
    super.admit(key, size);
    return size <= this.smallCapacity;
  }

  /** Decides a miss as libCacheSim does: see {@linkcode LibCacheSimS3FifoPolicy}. */
  admission(key: string, size: number): Admission {
    const ghostHit = this.locate(key) === "ghost";
    if (!this.admit(key, size)) return "reject";
    return ghostHit || size < this.smallCapacity ? "insert" : "evictOnly";
  }
}

/** The policies that libCacheSim runs differently from tcpcache's defaults. */
const LIBCACHESIM: Readonly<Record<string, PolicyFactory>> = {
  s3fifo: (capacity) => new LibCacheSimS3FifoPolicy({ capacity }),
};

/**
 * The policy to replay for `name` so that it behaves exactly as the
 * `reference` simulator's policy of that name: a factory where tcpcache's
 * defaults differ from the reference's, else `name` itself.
 *
 * @param name one of {@linkcode simulatorPolicies}
 * @throws {RangeError} for a name the simulator does not know.
 * @example
 * ```ts
 * import { referencePolicy } from "./reference.ts";
 * import { simulate } from "./sim.ts";
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 1, objects: 100, requests: 1000 });
 * simulate(trace, referencePolicy("s3fifo", "libcachesim"), 100 * 4096).misses;
 * ```
 */
export function referencePolicy(name: string, reference: Reference): PolicyChoice {
  if (!simulatorPolicies().includes(name)) {
    throw new RangeError(`unknown policy "${name}" (known: ${simulatorPolicies().join(", ")})`);
  }
  switch (reference) {
    case "libcachesim":
      return Object.hasOwn(LIBCACHESIM, name) ? LIBCACHESIM[name] : name;
  }
}
