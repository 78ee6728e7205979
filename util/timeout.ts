/**
 * A promise with a time limit, for waits on something outside the process
 * (a worker thread's answer, a client's TLS handshake).
 *
 * @module
 */

/**
 * `promise`, or a rejection with `Error(message)` after `ms` (the timer is
 * cleared either way; `promise` itself is left to settle unheard).
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
