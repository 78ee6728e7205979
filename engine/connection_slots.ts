/**
 * The connection limit of a port served by several threads, in memory that
 * every thread shares: one counter that each thread's engine takes a slot
 * from at accept and gives back at close, so `--max-connections` bounds the
 * whole server, not each thread (the kernel spreads connections over the
 * threads by a hash, not evenly). Beside it, when the process last ran out
 * of descriptors.
 *
 * Why the second: the threads share one table of descriptors. A thread out
 * of descriptors frees its spare one to accept a waiting client and tell it
 * to go; another thread's accept can take that descriptor first and, were
 * it to serve the client, keep it. So for a moment after any thread ran out,
 * every thread refuses what it accepts (nginx stops accepting for 500 ms),
 * and a descriptor taken that way comes straight back.
 *
 * @module
 */

/** How long after running out of descriptors every thread refuses. */
const SHORTAGE_MS = 500n;

/** Memory for the slots of `listeners` listeners, to share between threads. */
export function slotMemory(listeners: number): SharedArrayBuffer {
  return new SharedArrayBuffer(8 + 4 * listeners);
}

/** Slots of one listener's connection limit, shared between threads. */
export class ConnectionSlots {
  #shortage: BigInt64Array;
  #counts: Int32Array;
  #index: number;
  #limit: number;

  /**
   * Slots of listener `index` in `memory` (from {@linkcode slotMemory}, held
   * by every thread), at most `limit` taken at once.
   */
  constructor(memory: SharedArrayBuffer, index: number, limit: number) {
    this.#shortage = new BigInt64Array(memory, 0, 1);
    this.#counts = new Int32Array(memory, 8);
    this.#index = index;
    this.#limit = limit;
  }

  /** Takes a slot; false (and nothing taken) when all are taken. */
  take(): boolean {
    if (Atomics.add(this.#counts, this.#index, 1) < this.#limit) return true;
    Atomics.sub(this.#counts, this.#index, 1);
    return false;
  }

  /** Gives back a slot taken by {@linkcode take}. */
  release(): void {
    Atomics.sub(this.#counts, this.#index, 1);
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
