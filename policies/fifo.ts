/**
 * FIFO: the oldest admission leaves first; hits change nothing. The policy
 * of the original design, and tcpcache's default.
 *
 * @module
 */

import type { EvictionPolicy } from "../cache.ts";

/** First in, first out. Every operation is O(1). */
export class FifoPolicy implements EvictionPolicy {
  readonly name = "fifo";
  // A Set iterates in insertion order and deletes in O(1).
  #queue = new Set<string>();

  insert(key: string): void {
    this.#queue.add(key);
  }

  touch(): void {}

  chooseVictim(): string | undefined {
    return this.#queue.values().next().value;
  }

  remove(key: string): void {
    this.#queue.delete(key);
  }

  evictionOrder(): string[] {
    return [...this.#queue];
  }
}
