/**
 * FIFO: the oldest admission leaves first; hits change nothing. The policy
 * of the original design, and tcpcache's default.
 *
 * @module
 */

import type { EvictionPolicy } from "./policy.ts";
import { LinkedList, type ListNode } from "./list.ts";

/** First in, first out. Every operation is O(1). */
export class FifoPolicy implements EvictionPolicy {
  readonly name: string = "fifo";
  /** Newest at the head, next victim at the tail. */
  protected readonly queue: LinkedList = new LinkedList();
  /** Each key's node in the queue. */
  protected readonly nodes: Map<string, ListNode> = new Map();

  insert(key: string, size: number): void {
    this.remove(key);
    const node: ListNode = { key, size, newer: null, older: null };
    this.nodes.set(key, node);
    this.queue.pushHead(node);
  }

  touch(_key: string): void {}

  chooseVictim(): string | undefined {
    return this.queue.tail?.key;
  }

  remove(key: string): void {
    const node = this.nodes.get(key);
    if (!node) return;
    this.nodes.delete(key);
    this.queue.remove(node);
  }

  evictionOrder(): string[] {
    return this.queue.keysFromTail();
  }
}
