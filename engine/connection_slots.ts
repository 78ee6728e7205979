/**
 * The connection limit of a port served by several threads, in memory that
 * every thread shares: one count per port that each thread's engine takes a
 * slot from at accept and gives back at close, so `--max-connections` bounds
 * the whole server, not each thread (the kernel spreads connections over the
 * threads by a hash, not evenly). Each thread's own share is counted too, so
 * that the slots of a thread that died can be given back. Beside them, when
 * the process last ran out of descriptors.
 *
 * Why the last: the threads share one table of descriptors. A thread out of
 * descriptors frees its spare one to accept a waiting client and tell it to
 * go; another thread's accept can take that descriptor first and, were it
 * to serve the client, keep it. So for a moment after any thread ran out,
 * every thread refuses what it accepts (nginx stops accepting for 500 ms),
 * and a descriptor taken that way comes straight back.
 *
 * @module
 */

/** How long after running out of descriptors every thread refuses. */
const SHORTAGE_MS = 500n;

/**
 * Memory for the slots of `listeners` listeners served by `threads`
 * threads, to share between them.
 */
export function slotMemory(listeners: number, threads: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 + 4 * listeners * (1 + threads));
}

/**
 * Gives back every slot that thread `thread` holds in `memory`: for a
 * thread that ended without closing its connections (they closed with it).
 */
export function releaseThread(memory: SharedArrayBuffer, listeners: number, thread: number): void {
  const counts = new Int32Array(memory, 8);
  for (let index = 0; index < listeners; index++) {
    const held = Atomics.exchange(counts, listeners * (1 + thread) + index, 0);
    Atomics.sub(counts, index, held);
  }
}

/** Slots of one listener's connection limit, shared between threads. */
export class ConnectionSlots {
  #shortage: BigInt64Array;
  #counts: Int32Array;
  #total: number;
  #own: number;
  #limit: number;

  /**
   * Slots of listener `index` of `listeners` in `memory` (from
   * {@linkcode slotMemory}, held by every thread), at most `limit` taken at
   * once, taken here by thread `thread`.
   */
  constructor(
    memory: SharedArrayBuffer,
    listeners: number,
    index: number,
    limit: number,
    thread: number,
  ) {
    this.#shortage = new BigInt64Array(memory, 0, 1);
    this.#counts = new Int32Array(memory, 8);
    this.#total = index;
    this.#own = listeners * (1 + thread) + index;
    this.#limit = limit;
  }

  /** Takes a slot; false (and nothing taken) when all are taken. */
  take(): boolean {
    if (Atomics.add(this.#counts, this.#total, 1) >= this.#limit) {
      Atomics.sub(this.#counts, this.#total, 1);
      return false;
    }
    Atomics.add(this.#counts, this.#own, 1);
    return true;
  }

  /** Gives back a slot taken by {@linkcode take}. */
  release(): void {
    Atomics.sub(this.#counts, this.#own, 1);
    Atomics.sub(this.#counts, this.#total, 1);
  }

  /** Notes that this process just ran out of descriptors. */
  outOfDescriptors(): void {
    Atomics.store(this.#shortage, 0, BigInt(Date.now()) + SHORTAGE_MS);
  }

  /** True for a moment after any thread ran out of descriptors. */
  short(): boolean {
    return BigInt(Date.now()) < Atomics.load(this.#shortage, 0);
  }
}
