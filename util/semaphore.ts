/**
 * A counting semaphore: at most `permits` held at once; tasks wait in
 * arrival order.
 *
 * @module
 */

/** Limits how many of a resource are in use at once (file handles, say). */
export class Semaphore {
  #total: number;
  #available: number;
  #waiting: { count: number; grant: () => void }[] = [];

  /** Creates a semaphore with `permits` permits. */
  constructor(permits: number) {
    if (!Number.isSafeInteger(permits) || permits < 1) {
      throw new RangeError(`a semaphore needs at least one permit, not ${permits}`);
    }
    this.#total = permits;
    this.#available = permits;
  }

  /** Permits free right now. */
  get available(): number {
    return this.#available;
  }

  /** Tasks waiting for permits. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Runs `task` holding `count` permits, taken all at once (so two tasks
   * that each need two can never hold one each and wait forever), and gives
   * them back however the task ends. A count above the total is taken as
   * the total.
   */
  async with<T>(count: number, task: () => Promise<T>): Promise<T> {
    const release = await this.acquire(count);
    try {
      return await task();
    } finally {
      release();
    }
  }

  /**
   * Takes `count` permits (all at once, as {@linkcode Semaphore.with} does)
   * and resolves to the function that gives them back; calling it again does
   * nothing. For holders whose use outlives one call, such as a response
   * body that a stream sends later.
   */
  async acquire(count: number): Promise<() => void> {
    count = Math.min(count, this.#total);
    await this.#acquire(count);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#available += count;
      this.#grantWaiting();
    };
  }

  #acquire(count: number): Promise<void> {
    if (this.#waiting.length === 0 && this.#available >= count) {
      this.#available -= count;
      return Promise.resolve();
    }
    return new Promise((grant) => this.#waiting.push({ count, grant }));
  }

  /** Grants permits to waiting tasks in arrival order, while the first fits. */
  #grantWaiting(): void {
    while (this.#waiting.length > 0 && this.#available >= this.#waiting[0].count) {
      const { count, grant } = this.#waiting.shift()!;
      this.#available -= count;
      grant();
    }
  }
}
