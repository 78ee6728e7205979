/**
 * A bounded memo for what is computed from a short run of bytes alone, such
 * as a parsed request: clients send the same requests again and again (a
 * keep-alive connection repeats its heads, a poller its whole request), and
 * a repeat is looked up instead of parsed. Keyed by a hash of the bytes, not
 * by a string of them: making and hashing that string cost more than the
 * rest of the lookup. Each entry keeps a copy of its bytes, so a collision
 * is told apart byte for byte.
 *
 * @module
 */

/** The 32-bit FNV-1a hash of `bytes`. */
export function fnv1a(bytes: Uint8Array): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) hash = Math.imul(hash ^ bytes[i], 0x01000193);
  return hash >>> 0;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Values computed from byte strings, the latest few kept (emptied when full). */
export class BytesMemo<T> {
  #entries = new Map<number, { bytes: Uint8Array; value: T }>();
  #maxEntries: number;
  #maxBytes: number;

  /**
   * @param maxEntries how many values are kept at most
   * @param maxBytes longer byte strings are computed every time: they are
   *   rare, and would make the memo big
   */
  constructor(maxEntries: number, maxBytes: number) {
    this.#maxEntries = maxEntries;
    this.#maxBytes = maxBytes;
  }

  /**
   * `compute(bytes)`, or the value it gave for the same bytes before. The
   * value is shared by every caller with those bytes: it must not be
   * changed. What `compute` throws is thrown, and never kept.
   */
  get(bytes: Uint8Array, compute: (bytes: Uint8Array) => T): T {
    if (bytes.length > this.#maxBytes) return compute(bytes);
    const hash = fnv1a(bytes);
    const known = this.#entries.get(hash);
    if (known && sameBytes(known.bytes, bytes)) return known.value;
    const value = compute(bytes);
    if (this.#entries.size >= this.#maxEntries) this.#entries.clear();
    this.#entries.set(hash, { bytes: bytes.slice(), value });
    return value;
  }
}
