/**
 * SIEVE: a FIFO queue swept by a hand that keeps visited entries in place.
 *
 * @module
 */

import type { EvictionPolicy } from "./policy.ts";
import { LinkedList, type ListNode } from "./list.ts";

interface SieveNode extends ListNode {
  /** Hit since the hand last passed it. */
  visited: boolean;
}

/**
 * SIEVE (Zhang et al., NSDI '24), as libCacheSim's `Sieve`: entries are
 * admitted at the head, unvisited; a hit only sets the visited bit. To
 * choose a victim the hand moves from where it stopped last (the tail at
 * first) toward the head, clearing visited bits, wrapping from the head to
 * the tail, and stops at the first unvisited entry: that is the victim.
 * Nothing ever moves in the queue. When the victim (or any entry under the
 * hand) is removed, the hand steps to the next newer entry, or, past the
 * head, back to the tail on the next sweep. Each step past a visited entry
 * clears a bit some hit set, so the work is O(1) amortised per operation.
 *
 * `evictionOrder()` is exact: the order in which repeated `chooseVictim` and
 * `remove` would empty the cache with no further hits. Read the queue once
 * round from the hand (toward the head, then on from the tail back to the
 * hand): first the unvisited entries in that order, then the visited ones
 * in that same order (their bits are cleared on the first round and they go
 * on the second).
 *
 * An object of any size is handled like any other: there is no admission
 * filter.
 */
export class SievePolicy implements EvictionPolicy {
  readonly name = "sieve";
  #queue = new LinkedList<SieveNode>();
  #nodes = new Map<string, SieveNode>();
  /** Where the next sweep starts; null means the tail. */
  #hand: SieveNode | null = null;

  insert(key: string, size: number): void {
    this.remove(key);
    const node: SieveNode = { key, size, newer: null, older: null, visited: false };
    this.#nodes.set(key, node);
    this.#queue.pushHead(node);
  }

  touch(key: string): void {
    const node = this.#nodes.get(key);
    if (node) node.visited = true;
  }

  chooseVictim(): string | undefined {
    let node = this.#hand ?? this.#queue.tail;
    if (!node) return undefined;
    while (node.visited) {
      node.visited = false;
      node = (node.newer as SieveNode | null) ?? this.#queue.tail!;
    }
    this.#hand = node;
    return node.key;
  }

  remove(key: string): void {
    const node = this.#nodes.get(key);
    if (!node) return;
    if (node === this.#hand) this.#hand = node.newer as SieveNode | null;
    this.#nodes.delete(key);
    this.#queue.remove(node);
  }

  evictionOrder(): string[] {
    const round: SieveNode[] = [];
    const start = this.#hand ?? this.#queue.tail;
    for (let node = start; node; node = node.newer as SieveNode | null) round.push(node);
    for (
      let node = this.#queue.tail;
      node && node !== start;
      node = node.newer as SieveNode | null
    ) {
      round.push(node);
    }
    return [
      ...round.filter((node) => !node.visited),
      ...round.filter((node) => node.visited),
    ].map((node) => node.key);
  }
}
