/**
 * A seeded pseudo-random sequence (xorshift32), for tests and benchmarks
 * whose runs must reproduce.
 *
 * @module
 */

/** Floats in [0, 1) from `seed`: the same seed, the same sequence. */
export function seededRandom(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}
