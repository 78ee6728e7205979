/**
 * S3-FIFO: a small probationary FIFO, a main FIFO with reinsertion, and a
 * ghost FIFO that remembers what the small queue let go.
 *
 * @module
 */

import type { EvictionPolicy } from "./policy.ts";
import { LinkedList, type ListNode } from "./list.ts";

/** What {@linkcode S3FifoPolicy} does with an object larger than its small queue. */
export type S3FifoLargeObjects = "small" | "reject";

/** Options of {@linkcode S3FifoPolicy}. */
export interface S3FifoOptions {
  /** The cache's capacity in bytes: the queues' budgets are shares of it. */
  capacity: number;
  /**
   * The small queue's share of the capacity; the main queue has the rest.
   * @default {0.1}
   */
  smallRatio?: number;
  /**
   * The ghost queue's byte budget (the sizes of the objects it remembers),
   * as a share of the capacity; 0 disables it.
   * @default {0.9}
   */
  ghostRatio?: number;
  /**
   * The hits an entry needs while in the small queue to be moved to the main
   * queue, instead of evicted, when it reaches the small queue's tail
   * (libCacheSim's `move-to-main-threshold`).
   * @default {2}
   */
  promoteAfter?: number;
  /**
   * Before the first eviction, once the small queue holds its share, admit
   * new objects to main (libCacheSim's current `S3-FIFO`), so that a cold
   * cache fills main first. False: admit them to small, which then holds
   * more than its share until evictions start (libCacheSim's `S3-FIFOv0`).
   * @default {true}
   */
  coldFillToMain?: boolean;
  /**
   * What to do with an object larger than the small queue. `"small"`:
   * admit it like any other (into the small queue, which then holds more
   * than its share until it leaves; before the first eviction a full small
   * queue sends it to main, as it does every new object). `"reject"`:
   * libCacheSim's behaviour: never admit it (it is served uncached and
   * nothing is evicted for it).
   * @default {"small"}
   */
  largeObjects?: S3FifoLargeObjects;
}

interface S3Node extends ListNode {
  /** Hits since admission (small queue) or since the last reinsertion (main). */
  freq: number;
  /** True in the main queue, false in the small one. */
  main: boolean;
}

/** The main queue's counter saturates here: a 2-bit CLOCK. */
const MAIN_MAX_FREQ = 3;

/** At most this many ghost hits wait for their insert (see `admit`). */
const MAX_PENDING_GHOST_HITS = 1024;

/**
 * S3-FIFO (Yang et al., SOSP '23), as libCacheSim's current `S3-FIFO`
 * (`S3FIFO.c`, not the original `S3-FIFOv0`), with libCacheSim's defaults: a
 * small FIFO with 10% of the bytes, a main FIFO with the other 90%, and a
 * ghost FIFO of keys whose sizes add up to at most 90% of the capacity.
 *
 * - A miss (`admit`) whose key is in the ghost takes it out of the ghost;
 *   the object is then inserted at the head of main. Any other object goes
 *   to the head of small, except that before the first eviction ever, once
 *   small holds its share, new objects go to main, so that a cold cache
 *   fills main first (`coldFillToMain: false` turns this off, which gives
 *   libCacheSim's original `S3-FIFOv0` exactly).
 * - A hit adds one to the entry's counter, in either queue; nothing moves.
 * - To choose a victim: from main when main holds more than its share or
 *   small is empty, else from small. From small: the tail is moved to the
 *   head of main with a zero counter if it had at least `promoteAfter` hits,
 *   and the next tail is examined, until an entry with fewer hits is found:
 *   that is the victim, and its key enters the ghost (the oldest ghost keys
 *   leaving to keep it within its budget). Should small empty meanwhile,
 *   the same call goes on to choose from main. From main: a tail entry with
 *   a nonzero counter goes back to the head with its counter, capped at 3,
 *   minus one; the first tail with a zero counter is the victim.
 *
 * Every move spends hits recorded earlier, and each ghost key leaves once,
 * so the work is O(1) amortised per operation.
 *
 * `evictionOrder()` is exact: it replays `chooseVictim` and `remove` on a
 * copy of both queues (without the ghost, which does not change the order)
 * until the copy is empty, in O(n).
 *
 * Objects larger than the small queue's share: see
 * {@linkcode S3FifoOptions.largeObjects}. The default, `"small"`, admits
 * them like any other object: the server must cache any file that fits
 * (its end-to-end tests hold every policy to that), and the small queue's
 * probation is where a large one-time object does least harm. `"reject"`
 * reproduces libCacheSim exactly, with one exception: an object of exactly
 * the small queue's size that is not a ghost hit makes libCacheSim evict
 * for it and then not insert it, where this policy rejects it without
 * evicting (a cache cannot evict for an object it then does not keep). The
 * simulator's `--reference libcachesim` reproduces that case too
 * (`LibCacheSimS3FifoPolicy` in `sim/reference.ts`).
 */
export class S3FifoPolicy implements EvictionPolicy {
  readonly name = "s3fifo";
  /** The small queue's budget in bytes. */
  readonly smallCapacity: number;
  /** The main queue's budget in bytes. */
  readonly mainCapacity: number;
  /** The ghost queue's budget in bytes (of the objects it remembers). */
  readonly ghostCapacity: number;
  #options: Required<S3FifoOptions>;
  #small = new LinkedList<S3Node>();
  #main = new LinkedList<S3Node>();
  #nodes = new Map<string, S3Node>();
  #ghost = new LinkedList();
  #ghostNodes = new Map<string, ListNode>();
  /** Keys whose miss was a ghost hit, waiting for their insert. */
  #ghostHits = new Set<string>();
  /** Whether a victim was ever chosen. */
  #evicted = false;

  /**
   * Creates an empty policy for a cache of `options.capacity` bytes.
   *
   * @throws {RangeError} when an option is out of range.
   */
  constructor(options: S3FifoOptions) {
    this.#options = {
      capacity: options.capacity,
      smallRatio: options.smallRatio ?? 0.1,
      ghostRatio: options.ghostRatio ?? 0.9,
      promoteAfter: options.promoteAfter ?? 2,
      coldFillToMain: options.coldFillToMain ?? true,
      largeObjects: options.largeObjects ?? "small",
    };
    const { capacity, smallRatio, ghostRatio, promoteAfter, largeObjects } = this.#options;
    if (!(capacity >= 0 && capacity <= Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`invalid S3-FIFO capacity: ${capacity}`);
    }
    if (!(smallRatio >= 0 && smallRatio <= 1)) {
      throw new RangeError(`invalid S3-FIFO small queue ratio: ${smallRatio}`);
    }
    if (!(ghostRatio >= 0)) throw new RangeError(`invalid S3-FIFO ghost ratio: ${ghostRatio}`);
    if (!(Number.isInteger(promoteAfter) && promoteAfter >= 0)) {
      throw new RangeError(`invalid S3-FIFO promotion threshold: ${promoteAfter}`);
    }
    if (largeObjects !== "small" && largeObjects !== "reject") {
      throw new RangeError(`invalid S3-FIFO large object handling: ${largeObjects}`);
    }
    // The same truncations as libCacheSim.
    this.smallCapacity = Math.floor(capacity * smallRatio);
    this.mainCapacity = capacity - this.smallCapacity;
    this.ghostCapacity = Math.floor(capacity * ghostRatio);
  }

  /**
   * Called on a miss, before any eviction for it. A key in the ghost leaves
   * it, and its insert (if it comes) goes to main. With `largeObjects:
   * "reject"`, an object larger than the small queue is refused. Callers
   * that never call this still get ghost hits, found at insert time.
   */
  admit(key: string, size: number): boolean {
    this.#ghostHits.delete(key);
    const ghostHit = this.#forget(key);
    if (ghostHit) {
      this.#ghostHits.add(key);
      if (this.#ghostHits.size > MAX_PENDING_GHOST_HITS) {
        this.#ghostHits.delete(this.#ghostHits.values().next().value!);
      }
    }
    if (this.#options.largeObjects === "small") return true;
    // libCacheSim admits up to the small queue's size, but puts an object of
    // exactly that size nowhere unless it is a ghost hit.
    return ghostHit ? size <= this.smallCapacity : size < this.smallCapacity;
  }

  insert(key: string, size: number): void {
    this.remove(key);
    const ghostHit = this.#ghostHits.delete(key) || this.#forget(key);
    const node: S3Node = { key, size, newer: null, older: null, freq: 0, main: false };
    node.main = ghostHit ||
      (this.#options.coldFillToMain && !this.#evicted &&
        this.#small.bytes >= this.smallCapacity);
    this.#nodes.set(key, node);
    (node.main ? this.#main : this.#small).pushHead(node);
  }

  touch(key: string): void {
    const node = this.#nodes.get(key);
    if (node) node.freq++;
  }

  chooseVictim(): string | undefined {
    this.#evicted = true;
    // The queue is chosen once: moves from small to main do not change it.
    if (this.#main.bytes <= this.mainCapacity) {
      for (let node = this.#small.tail; node; node = this.#small.tail) {
        if (node.freq < this.#options.promoteAfter) {
          this.#remember(node);
          return node.key;
        }
        this.#small.remove(node);
        node.freq = 0;
        node.main = true;
        this.#main.pushHead(node);
      }
    }
    let node = this.#main.tail;
    while (node && node.freq > 0) {
      node.freq = Math.min(node.freq, MAIN_MAX_FREQ) - 1;
      this.#main.moveToHead(node);
      node = this.#main.tail;
    }
    return node?.key;
  }

  remove(key: string): void {
    const node = this.#nodes.get(key);
    if (!node) return;
    this.#nodes.delete(key);
    (node.main ? this.#main : this.#small).remove(node);
  }

  evictionOrder(): string[] {
    const copy = new S3FifoPolicy({ ...this.#options, ghostRatio: 0 });
    for (const queue of [this.#small, this.#main]) {
      for (let node = queue.tail; node; node = node.newer as S3Node | null) {
        const clone: S3Node = { ...node, newer: null, older: null };
        copy.#nodes.set(clone.key, clone);
        (clone.main ? copy.#main : copy.#small).pushHead(clone);
      }
    }
    const order: string[] = [];
    for (let key = copy.chooseVictim(); key !== undefined; key = copy.chooseVictim()) {
      order.push(key);
      copy.remove(key);
    }
    return order;
  }

  /**
   * Where `key` is: in the small or the main queue, only remembered by the
   * ghost, or unknown. For tests, diagnostics and the simulator (which
   * asks whether a miss is a ghost hit before `admit` takes the key out of
   * the ghost).
   */
  locate(key: string): "small" | "main" | "ghost" | undefined {
    const node = this.#nodes.get(key);
    if (node) return node.main ? "main" : "small";
    return this.#ghostNodes.has(key) ? "ghost" : undefined;
  }

  /** Adds a key the small queue evicts to the ghost. */
  #remember(node: S3Node): void {
    if (this.ghostCapacity === 0 || node.size > this.ghostCapacity) return;
    if (this.#ghostNodes.has(node.key)) return;
    while (this.#ghost.bytes + node.size > this.ghostCapacity) {
      const oldest = this.#ghost.tail!;
      this.#ghost.remove(oldest);
      this.#ghostNodes.delete(oldest.key);
    }
    const ghost: ListNode = { key: node.key, size: node.size, newer: null, older: null };
    this.#ghostNodes.set(ghost.key, ghost);
    this.#ghost.pushHead(ghost);
  }

  /** Takes a key out of the ghost; true if it was there. */
  #forget(key: string): boolean {
    const ghost = this.#ghostNodes.get(key);
    if (!ghost) return false;
    this.#ghostNodes.delete(key);
    this.#ghost.remove(ghost);
    return true;
  }
}
