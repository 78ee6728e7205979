/**
 * Request traces for the simulator: readers for libCacheSim's oracleGeneral
 * binary format, CSV and plain text, and a seeded synthetic Zipf workload.
 *
 * @module
 */

/** A trace in columns: request `i` asks for `keys[i]`, of `sizes[i]` bytes. */
export interface Trace {
  /** The object asked for by each request. */
  keys: string[];
  /** The object's size in bytes, per request. */
  sizes: Float64Array;
  /**
   * The index of the next request for the same object, or `Infinity` when
   * there is none: what Belady's offline optimum needs.
   */
  nextAccess: Float64Array;
}

/** The trace formats the simulator reads. */
export type TraceFormat = "oracleGeneral" | "csv" | "txt";

const RECORD = 24; // u32 time, u64 id, u32 size, i64 next access

/**
 * Reads libCacheSim's oracleGeneral format: 24-byte little-endian records
 * (u32 timestamp, u64 object id, u32 size, i64 next access).
 *
 * @throws {RangeError} when the length is not a whole number of records.
 */
export function readOracleGeneral(bytes: Uint8Array): Trace {
  if (bytes.length % RECORD !== 0) {
    throw new RangeError(
      `not an oracleGeneral trace: ${bytes.length} bytes is not a multiple of 24`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.length / RECORD;
  const keys = new Array<string>(count);
  const sizes = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const at = i * RECORD;
    const low = view.getUint32(at + 4, true);
    const high = view.getUint32(at + 8, true);
    keys[i] = high === 0 ? String(low) : `${high}:${low}`;
    sizes[i] = view.getUint32(at + 12, true);
  }
  return { keys, sizes, nextAccess: nextAccessOf(keys) };
}

/**
 * Reads a CSV trace: one request per line, `key,size` (a header line whose
 * size column is not a number is skipped).
 */
export function readCsv(text: string): Trace {
  const keys: string[] = [];
  const sizes: number[] = [];
  for (const [n, line] of text.split(/\r?\n/).entries()) {
    if (line.trim() === "") continue;
    const [key, size] = line.split(",").map((field) => field.trim());
    if (!/^[0-9]+$/.test(size ?? "")) {
      if (n === 0) continue;
      throw new RangeError(`line ${n + 1}: expected key,size`);
    }
    keys.push(key);
    sizes.push(Number(size));
  }
  return { keys, sizes: Float64Array.from(sizes), nextAccess: nextAccessOf(keys) };
}

/** Reads a text trace: one key per line, optionally followed by a size (else 1). */
export function readTxt(text: string): Trace {
  const keys: string[] = [];
  const sizes: number[] = [];
  for (const [n, line] of text.split(/\r?\n/).entries()) {
    const [key, size] = line.trim().split(/\s+/);
    if (!key) continue;
    if (size !== undefined && !/^[0-9]+$/.test(size)) {
      throw new RangeError(`line ${n + 1}: the size must be a number`);
    }
    keys.push(key);
    sizes.push(size === undefined ? 1 : Number(size));
  }
  return { keys, sizes: Float64Array.from(sizes), nextAccess: nextAccessOf(keys) };
}

/** Reads a trace file in the given format. */
export async function readTrace(path: string, format: TraceFormat): Promise<Trace> {
  switch (format) {
    case "oracleGeneral":
      return readOracleGeneral(await Deno.readFile(path));
    case "csv":
      return readCsv(await Deno.readTextFile(path));
    case "txt":
      return readTxt(await Deno.readTextFile(path));
  }
}

/** Options of {@linkcode zipfTrace}. */
export interface ZipfOptions {
  /** The Zipf exponent: object `k` (from 1) is asked with weight `1/k^alpha`. */
  alpha: number;
  /** The number of distinct objects. */
  objects: number;
  /** The number of requests. */
  requests: number;
  /**
   * How object sizes are drawn (the simulator's `--size-dist` parses
   * `fixed:SIZE`, `uniform:MIN-MAX` and `lognormal:MEDIAN,SIGMA` into this).
   * @default {{ kind: "fixed", size: 4096 }}
   */
  sizes?: SizeDistribution;
  /**
   * The seed of the generator: the same options give the same trace.
   * @default {1}
   */
  seed?: number;
}

/** How object sizes are drawn. */
export type SizeDistribution =
  | { kind: "fixed"; size: number }
  | { kind: "uniform"; min: number; max: number }
  | { kind: "lognormal"; median: number; sigma: number };

/**
 * A seeded synthetic workload: requests drawn from a Zipf distribution over
 * `objects` objects, each with a size drawn once from `sizes`.
 *
 * @example
 * ```ts
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 0.9, objects: 1000, requests: 10000, seed: 7 });
 * trace.keys.length; // 10000
 * ```
 */
export function zipfTrace(options: ZipfOptions): Trace {
  const random = seededRandom(options.seed ?? 1);
  const distribution = options.sizes ?? { kind: "fixed", size: 4096 };
  const objectSizes = Array.from({ length: options.objects }, () => drawSize(distribution, random));
  // Inverse-CDF sampling over the cumulative weights.
  const cumulative = new Float64Array(options.objects);
  let total = 0;
  for (let k = 0; k < options.objects; k++) {
    total += 1 / (k + 1) ** options.alpha;
    cumulative[k] = total;
  }
  const keys = new Array<string>(options.requests);
  const sizes = new Float64Array(options.requests);
  for (let i = 0; i < options.requests; i++) {
    const target = random() * total;
    let low = 0;
    let high = options.objects - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (cumulative[middle] < target) low = middle + 1;
      else high = middle;
    }
    keys[i] = String(low);
    sizes[i] = objectSizes[low];
  }
  return { keys, sizes, nextAccess: nextAccessOf(keys) };
}

function drawSize(distribution: SizeDistribution, random: () => number): number {
  switch (distribution.kind) {
    case "fixed":
      return distribution.size;
    case "uniform":
      return Math.floor(distribution.min + random() * (distribution.max - distribution.min + 1));
    case "lognormal": {
      // Box-Muller: a standard normal from two uniforms.
      const normal = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      return Math.max(1, Math.round(distribution.median * Math.exp(distribution.sigma * normal)));
    }
  }
}

/** A seeded generator of floats in [0, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** For each request, the index of the next request for the same key. */
function nextAccessOf(keys: string[]): Float64Array {
  const next = new Float64Array(keys.length).fill(Infinity);
  const seen = new Map<string, number>();
  for (let i = keys.length - 1; i >= 0; i--) {
    const later = seen.get(keys[i]);
    if (later !== undefined) next[i] = later;
    seen.set(keys[i], i);
  }
  return next;
}
