/**
 * The sha256 of the misses this thread streamed lately, by path and origin
 * version. A streamed miss's header cannot carry the digest (it is known
 * only once the last byte is read), so a client asks `STAT` after the body;
 * by then the entry may have left the cache (evicted to make room, or
 * never admitted because the cache directory failed), or, on a worker
 * thread, not yet reached its replica. This memory answers then. Bounded:
 * the oldest is forgotten first; a client asks right after its body, so a
 * short memory is enough.
 *
 * @module
 */

/** A bounded map of (path, validator) to hex sha256, oldest forgotten first. */
export class RecentDigests {
  #limit: number;
  #digests = new Map<string, string>();

  /** Remembers at most `limit` digests. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Remembers the sha256 of `path` as the version `validator` names. */
  remember(path: string, validator: string, sha256: string): void {
    const key = keyOf(path, validator);
    this.#digests.delete(key); // to the end: the newest
    this.#digests.set(key, sha256);
    if (this.#digests.size > this.#limit) {
      this.#digests.delete(this.#digests.keys().next().value!);
    }
  }

  /** The sha256 of `path` as `validator` names it, if remembered. */
  get(path: string, validator: string): string | undefined {
    return this.#digests.get(keyOf(path, validator));
  }
}

/** A path never holds NUL (the protocol refuses it), so the key is unambiguous. */
function keyOf(path: string, validator: string): string {
  return `${path}\0${validator}`;
}
