/**
 * An intrusive doubly linked list: the queue every FIFO-family policy is
 * built on. Nodes carry their own links, so moving or removing one is O(1).
 *
 * @module
 */

/** A list node; policies add their own fields (a visited bit, a counter). */
export interface ListNode {
  /** The key this node stands for. */
  readonly key: string;
  /** Its size in bytes. */
  readonly size: number;
  /** The next node toward the head (newer), or null at the head. */
  newer: ListNode | null;
  /** The next node toward the tail (older), or null at the tail. */
  older: ListNode | null;
}

/** A queue with the newest node at the head and the oldest at the tail. */
export class LinkedList<T extends ListNode = ListNode> {
  /** The newest node. */
  head: T | null = null;
  /** The oldest node. */
  tail: T | null = null;
  /** The number of nodes. */
  length = 0;
  /** The sum of the nodes' sizes. */
  bytes = 0;

  /** Adds `node` at the head. */
  pushHead(node: T): void {
    node.newer = null;
    node.older = this.head;
    if (this.head) this.head.newer = node;
    else this.tail = node;
    this.head = node;
    this.length++;
    this.bytes += node.size;
  }

  /** Unlinks `node`, which must be in this list. */
  remove(node: T): void {
    if (node.newer) node.newer.older = node.older;
    else this.head = node.older as T | null;
    if (node.older) node.older.newer = node.newer;
    else this.tail = node.newer as T | null;
    node.newer = node.older = null;
    this.length--;
    this.bytes -= node.size;
  }

  /** Moves `node` to the head. */
  moveToHead(node: T): void {
    this.remove(node);
    this.pushHead(node);
  }

  /** The keys from the tail (oldest) to the head. */
  keysFromTail(): string[] {
    const keys: string[] = [];
    for (let node = this.tail; node; node = node.newer as T | null) keys.push(node.key);
    return keys;
  }
}
