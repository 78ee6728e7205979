/**
 * The choice of one page of a directory listing (in the order of
 * {@linkcode compareNames}) from names read in any order: what an origin that must read every name of a
 * directory to answer one page (origin/directory.ts) needs so that the page
 * costs memory for its own entries only.
 *
 * @module
 */

import { compareNames } from "../protocol.ts";

/**
 * The first `limit` items, in name order, whose names follow `after`,
 * picked from items offered one at a time in any order. It never holds more
 * than `limit + 1` of them (a heap whose top is the greatest kept): a page
 * of a directory of any size costs the memory of one page.
 */
export class PageSelection<T extends { name: string }> {
  #after: string | undefined;
  #keep: number;
  /** A max-heap by name: the greatest kept name at index 0. */
  #heap: T[] = [];

  /** A selection of `limit` items after `after` (from the first when undefined). */
  constructor(after: string | undefined, limit: number) {
    this.#after = after;
    // One more than the page: whether it is there says whether more follow.
    this.#keep = limit + 1;
  }

  /** Considers one item. */
  offer(item: T): void {
    if (this.#after !== undefined && compareNames(item.name, this.#after) <= 0) return;
    const heap = this.#heap;
    if (heap.length < this.#keep) {
      heap.push(item);
      this.#siftUp(heap.length - 1);
    } else if (compareNames(item.name, heap[0].name) < 0) {
      heap[0] = item;
      this.#siftDown(0);
    }
  }

  /** The page's items in name order, and whether any name offered followed them. */
  take(): { items: T[]; more: boolean } {
    const items = this.#heap.sort((a, b) => compareNames(a.name, b.name));
    this.#heap = [];
    const more = items.length === this.#keep;
    if (more) items.pop();
    return { items, more };
  }

  #siftUp(at: number): void {
    const heap = this.#heap;
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (compareNames(heap[at].name, heap[parent].name) <= 0) return;
      [heap[at], heap[parent]] = [heap[parent], heap[at]];
      at = parent;
    }
  }

  #siftDown(at: number): void {
    const heap = this.#heap;
    while (true) {
      const left = 2 * at + 1;
      const right = left + 1;
      let greatest = at;
      if (left < heap.length && compareNames(heap[left].name, heap[greatest].name) > 0) {
        greatest = left;
      }
      if (right < heap.length && compareNames(heap[right].name, heap[greatest].name) > 0) {
        greatest = right;
      }
      if (greatest === at) return;
      [heap[at], heap[greatest]] = [heap[greatest], heap[at]];
      at = greatest;
    }
  }
}
