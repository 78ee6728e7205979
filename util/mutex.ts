/**
 * A lock for async code.
 *
 * @module
 */

/** A lock made of a promise chain: tasks run one at a time, in call order. */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `task` once every task queued before it has settled. */
  run<T>(task: () => T | Promise<T>): Promise<T> {
    const result = this.#tail.then(task);
    this.#tail = result.catch(() => {});
    return result;
  }
}
