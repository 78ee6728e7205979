/**
 * The bookkeeping an eviction policy orders: entries by key with their byte
 * counts.
 *
 * @module
 */

import type { EvictionPolicy } from "./policy.ts";

/**
 * Entries kept in the order an eviction policy decides, with their byte
 * count: the bookkeeping that the file cache and the trace simulator share,
 * so a policy behaves the same in both.
 */
export class PolicyIndex<T extends { size: number }> {
  /** The policy that orders the entries. */
  readonly policy: EvictionPolicy;
  #entries = new Map<string, T>();
  #used = 0;

  /** Creates an empty index ordered by `policy`. */
  constructor(policy: EvictionPolicy) {
    this.policy = policy;
  }

  /** Bytes held by the entries. */
  get used(): number {
    return this.#used;
  }

  /** The number of entries. */
  get count(): number {
    return this.#entries.size;
  }

  /** The entry for `key`, without counting a hit. */
  get(key: string): T | undefined {
    return this.#entries.get(key);
  }

  /** The entry for `key`, counting a hit for the policy. */
  hit(key: string): T | undefined {
    const entry = this.#entries.get(key);
    if (entry) this.policy.touch(key);
    return entry;
  }

  /**
   * Whether the policy admits an object of `size` bytes under `key`: asked
   * on a miss, before evicting anything for it (see `EvictionPolicy.admit`).
   */
  admits(key: string, size: number): boolean {
    return this.policy.admit?.(key, size) ?? true;
  }

  /** Adds an entry, replacing any entry under the same key. */
  insert(key: string, entry: T): void {
    this.remove(key);
    this.#entries.set(key, entry);
    this.policy.insert(key, entry.size);
    this.#used += entry.size;
  }

  /** Removes the entry for `key` and returns it. */
  remove(key: string): T | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    this.policy.remove(key);
    this.#used -= entry.size;
    return entry;
  }

  /** Removes and returns the entry the policy evicts next. */
  evict(): T | undefined {
    const key = this.policy.chooseVictim();
    const victim = key === undefined ? undefined : this.remove(key);
    if (!victim) throw new Error(`policy ${this.policy.name} chose no evictable entry`);
    return victim;
  }

  /** The entries in eviction order, next victim first. */
  ordered(): T[] {
    return this.policy.evictionOrder().map((key) => this.#entries.get(key)!);
  }
}
