/**
 * A turn of the event loop given away, for long work done in slices
 * (housekeeping a cache directory, sorting a huge listing).
 *
 * @module
 */

/**
 * Resolves on a later turn of the event loop: a timer (a macrotask), so that
 * I/O and the requests waiting on it get their turn, which a resolved
 * promise (a microtask) would not give them.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
