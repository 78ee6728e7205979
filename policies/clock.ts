/**
 * CLOCK: FIFO with a second chance for entries hit since they last passed
 * the hand.
 *
 * @module
 */

import type { EvictionPolicy } from "./policy.ts";
import { LinkedList, type ListNode } from "./list.ts";

/** Options of {@linkcode ClockPolicy}. */
export interface ClockOptions {
  /**
   * The width of each entry's reference counter: a hit adds one, up to
   * `2 ** bits - 1`. One bit is the classic CLOCK and libCacheSim's default
   * (`n-bit-counter=1`).
   * @default {1}
   */
  bits?: number;
}

interface ClockNode extends ListNode {
  /** Hits not yet spent on a second chance. */
  count: number;
}

/**
 * CLOCK, as libCacheSim's `Clock` (FIFO-Reinsertion): entries are admitted
 * at the head with a zero counter, and a hit adds one to the counter (up to
 * its maximum, 1 with the default single bit); nothing moves on a hit. To
 * choose a victim the hand looks at the tail: an entry whose counter is
 * zero is the victim; otherwise its counter drops by one and it goes back to
 * the head, and the hand looks at the new tail. Each reinsertion spends a
 * hit, so the work is O(1) amortised per operation.
 *
 * `evictionOrder()` is exact: the order in which repeated `chooseVictim` and
 * `remove` would empty the cache with no further hits. The hand skips every
 * referenced entry once per unit of its counter, so the entries leave by
 * counter, lowest first, and among equal counters from the tail to the head
 * (the second-chance moves keep their relative order).
 *
 * An object of any size is handled like any other: there is no admission
 * filter.
 */
export class ClockPolicy implements EvictionPolicy {
  readonly name = "clock";
  #queue = new LinkedList<ClockNode>();
  #nodes = new Map<string, ClockNode>();
  #max: number;

  constructor(options: ClockOptions = {}) {
    const bits = options.bits ?? 1;
    if (!Number.isInteger(bits) || bits < 1 || bits > 16) {
      throw new RangeError(`invalid CLOCK counter width: ${bits} bits`);
    }
    this.#max = 2 ** bits - 1;
  }

  insert(key: string, size: number): void {
    this.remove(key);
    const node: ClockNode = { key, size, newer: null, older: null, count: 0 };
    this.#nodes.set(key, node);
    this.#queue.pushHead(node);
  }

  touch(key: string): void {
    const node = this.#nodes.get(key);
    if (node && node.count < this.#max) node.count++;
  }

  chooseVictim(): string | undefined {
    let node = this.#queue.tail;
    while (node && node.count > 0) {
      node.count--;
      this.#queue.moveToHead(node);
      node = this.#queue.tail;
    }
    return node?.key;
  }

  remove(key: string): void {
    const node = this.#nodes.get(key);
    if (!node) return;
    this.#nodes.delete(key);
    this.#queue.remove(node);
  }

  evictionOrder(): string[] {
    const byCount: string[][] = [];
    for (let node = this.#queue.tail; node; node = node.newer as ClockNode | null) {
      (byCount[node.count] ??= []).push(node.key);
    }
    return byCount.flat();
  }
}
