/**
 * LRU: the least recently used entry leaves first.
 *
 * @module
 */

import type { EvictionPolicy } from "../cache.ts";
import { LinkedList, type ListNode } from "./list.ts";

/**
 * Least recently used, as libCacheSim's `LRU`: an admission and a hit both
 * put the entry at the head; the victim is the tail. Every operation is O(1).
 *
 * `evictionOrder()` is exact: the tail (least recently used) first, the head
 * last. An object of any size is handled like any other: there is no
 * admission filter.
 */
export class LruPolicy implements EvictionPolicy {
  readonly name = "lru";
  #queue = new LinkedList();
  #nodes = new Map<string, ListNode>();

  insert(key: string, size: number): void {
    this.remove(key);
    const node: ListNode = { key, size, newer: null, older: null };
    this.#nodes.set(key, node);
    this.#queue.pushHead(node);
  }

  touch(key: string): void {
    const node = this.#nodes.get(key);
    if (node) this.#queue.moveToHead(node);
  }

  chooseVictim(): string | undefined {
    return this.#queue.tail?.key;
  }

  remove(key: string): void {
    const node = this.#nodes.get(key);
    if (!node) return;
    this.#nodes.delete(key);
    this.#queue.remove(node);
  }

  evictionOrder(): string[] {
    return this.#queue.keysFromTail();
  }
}
