/**
 * What an eviction policy is: the interface the cache and the simulator
 * call, and the names of the policies tcpcache ships. Every policy in this
 * folder implements it.
 *
 * @module
 */

/** The eviction policies tcpcache ships, by the name `--policy` takes. */
export type PolicyName = "fifo" | "lru" | "clock" | "sieve" | "s3fifo";

/**
 * An eviction policy: the order in which entries leave the cache. Keys are
 * protocol paths; the cache calls these under its lock.
 */
export interface EvictionPolicy {
  /** The policy's name, as given to `--policy`. */
  readonly name: string;
  /**
   * Optional. Called on a miss of an object that fits the cache, before
   * anything is evicted for it: whether to admit it at all (false: it is
   * served uncached and nothing is evicted for it). A policy may also take
   * note of the miss here, as S3-FIFO looks the key up in its ghost queue:
   * later, the evictions made for the object could push the key out of the
   * ghost before `insert`. Absent: every such object is admitted.
   */
  admit?(key: string, size: number): boolean;
  /** Records a newly admitted key. */
  insert(key: string, size: number): void;
  /** Records a hit on a key. */
  touch(key: string): void;
  /** Chooses the key to evict next; the cache then calls `remove` on it. */
  chooseVictim(): string | undefined;
  /** Forgets a key (evicted or invalidated). */
  remove(key: string): void;
  /** The keys in the order they would be evicted, next victim first. */
  evictionOrder(): string[];
}

/**
 * Makes a fresh policy for a cache of `capacity` bytes (a policy may size its
 * queues by it).
 */
export type PolicyFactory = (capacity: number) => EvictionPolicy;
