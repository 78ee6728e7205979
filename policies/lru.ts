/**
 * LRU: the least recently used entry leaves first.
 *
 * @module
 */

import { FifoPolicy } from "./fifo.ts";

/**
 * Least recently used, as libCacheSim's `LRU`: FIFO's queue, except that a
 * hit also puts the entry back at the head. Every operation is O(1).
 *
 * `evictionOrder()` is exact: the tail (least recently used) first, the head
 * last. An object of any size is handled like any other: there is no
 * admission filter.
 */
export class LruPolicy extends FifoPolicy {
  override readonly name: string = "lru";

  override touch(key: string): void {
    const node = this.nodes.get(key);
    if (node) this.queue.moveToHead(node);
  }
}
