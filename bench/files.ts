/**
 * The files the benchmarks serve, written fresh for each run, and the sets
 * the load driver fetches from them.
 *
 * @module
 */

import { writeAll } from "../util/byte_reader.ts";

/** Bytes in a KiB. */
export const KiB = 1024;
/** Bytes in a MiB. */
export const MiB = 1024 * KiB;

/** Files of one kind: paths relative to the served directory, sizes, local paths. */
export interface FileSet {
  /** Paths relative to the served directory, without a leading `/`. */
  paths: string[];
  /** Each file's length in bytes (same order as `paths`). */
  sizes: number[];
  /** Each file's path on this machine, for the self-check's comparisons. */
  local: string[];
}

/** Writes `paths` (relative to the writer's directory), each `size` bytes long. */
export type FileWriter = (paths: string[], size: number) => Promise<FileSet>;

/**
 * A writer of files under `dir`. Their bytes come from one random MiB,
 * stamped differently in every file and every MiB of it, so that a response
 * mixed up with another file's, or with another part of the same file, fails
 * the self-check (random: nothing on the way can compress it).
 */
export function fileWriter(dir: string): FileWriter {
  const block = new Uint8Array(MiB);
  // getRandomValues fills at most 64 KiB a call.
  for (let i = 0; i < block.length; i += 65536) {
    crypto.getRandomValues(block.subarray(i, i + 65536));
  }
  let files = 0;
  return async (paths, size) => {
    for (const path of paths) {
      await Deno.mkdir(`${dir}/${path}`.replace(/\/[^/]*$/, ""), { recursive: true });
      await writeStamped(`${dir}/${path}`, block, ++files, size);
    }
    return { paths, sizes: paths.map(() => size), local: paths.map((p) => `${dir}/${p}`) };
  };
}

/** Writes `size` bytes of `block`, each MiB stamped with the file's id and its own index. */
async function writeStamped(path: string, block: Uint8Array, id: number, size: number) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    for (let part = 0; part * MiB < size; part++) {
      const copy = new Uint8Array(block);
      new DataView(copy.buffer).setFloat64(0, id * 1e6 + part);
      await writeAll(file, copy.subarray(0, Math.min(MiB, size - part * MiB)));
    }
  } finally {
    file.close();
  }
}

/** `count` paths in `folder`, numbered from 0 and zero-padded so that they sort. */
export function numberedPaths(folder: string, count: number): string[] {
  const digits = String(count - 1).length;
  return Array.from(
    { length: count },
    (_, i) => `${folder}/${String(i).padStart(digits, "0")}.bin`,
  );
}

/** The first `n` files of a set. */
export function firstFiles(set: FileSet, n: number): FileSet {
  return {
    paths: set.paths.slice(0, n),
    sizes: set.sizes.slice(0, n),
    local: set.local.slice(0, n),
  };
}
