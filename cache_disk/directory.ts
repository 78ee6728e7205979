/**
 * The cache directory on disk: making or checking it at start (its marker,
 * its journal), and checking a file a previous run left against its record.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Journal, type JournalContents, type JournalHeader } from "./journal.ts";

/** The name of the file that marks a directory as a tcpcache cache. */
export const CACHE_MARKER = ".tcpcache";

/** A cache directory ready for use. */
export interface PreparedDirectory {
  /** Its new journal: none yet when a kept one is to be read, or when the disk is full. */
  journal?: Journal;
  /** True when the directory was a tcpcache cache already (it may hold a previous run's files). */
  marked: boolean;
  /** True when the journal a previous run left is to be read, for its entries (`keep`). */
  readKept: boolean;
}

/**
 * Checks that `dir` is a tcpcache cache directory (or makes one) and
 * starts a new journal, unless `keep` asks for the entries of the
 * journal a previous run left: that one is read in the background (see
 * `FileCache.housekept`), as the previous run's other files are removed.
 * So this takes a moment whatever the directory holds.
 */
export function prepareDirectory(
  dir: string,
  keep: boolean,
  header: JournalHeader,
): Promise<PreparedDirectory> {
  let marked = false;
  try {
    marked = Deno.statSync(`${dir}/${CACHE_MARKER}`).isFile;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw new UnusableDirectoryError(dir, error);
  }
  if (!marked) {
    let empty: boolean;
    try {
      empty = Deno.readDirSync(dir)[Symbol.iterator]().next().done ?? true;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw new UnusableDirectoryError(dir, error);
      try {
        Deno.mkdirSync(dir, { recursive: true });
      } catch (error) {
        throw new UnusableDirectoryError(dir, error);
      }
      empty = true;
    }
    if (!empty) {
      return Promise.reject(
        new Error(
          `refusing to use cache directory ${dir}: it is not empty and was not created by tcpcache (no ${CACHE_MARKER} file in it)`,
        ),
      );
    }
  }
  try {
    Deno.writeTextFileSync(`${dir}/${CACHE_MARKER}`, MARKER_TEXT);
  } catch (error) {
    throw new UnusableDirectoryError(dir, error);
  }
  if (keep && marked) return Promise.resolve({ marked, readKept: true });
  try {
    return Promise.resolve({ journal: Journal.create(dir, header, []), marked, readKept: false });
  } catch {
    // A full disk, most likely, with the previous run's files on it: the
    // cache starts without a journal, and writes one once they are gone.
    return Promise.resolve({ marked, readKept: false });
  }
}

const MARKER_TEXT = "This directory is a tcpcache cache. The server empties it at every start, " +
  "unless it runs with --keep-cache: then it keeps the entries its journal vouches for.\n";

/** Says what a restart that keeps the cache found wrong with the journal, if anything. */
export function reportJournal(
  contents: JournalContents,
  header: JournalHeader,
  dir: string,
  warn: (message: string) => void,
): void {
  const problems: string[] = [];
  if (contents.untrusted) problems.push(`${contents.untrusted}: nothing kept`);
  if (contents.damaged > 0) problems.push(`${contents.damaged} damaged records skipped`);
  const was = contents.header;
  if (was && (was.capacity !== header.capacity || was.policy !== header.policy)) {
    problems.push(
      `written for capacity ${was.capacity} with ${was.policy}, kept under ${header.capacity} ` +
        `with ${header.policy} (its next victims go first while it does not fit; the order is the journal's)`,
    );
  }
  if (problems.length > 0) warn(`cache directory ${dir}: --keep-cache: ${problems.join("; ")}`);
}

/** A cache directory that cannot be read, created or written (not one that is someone else's). */
export class UnusableDirectoryError extends Error {
  /** `dir` could not be used because of `cause`. */
  constructor(dir: string, cause: unknown) {
    super(`cannot use cache directory ${dir}: ${(cause as Error).message}`, { cause });
    this.name = "UnusableDirectoryError";
  }
}

/**
 * The sha256 of a file expected to hold `size` bytes, and its bytes when
 * it is small enough to keep in memory (in shared memory, as a fill keeps
 * them). Throws when the file is shorter or longer.
 */
export async function hashFile(
  file: string,
  size: number,
  memoryLimit: number,
): Promise<{ sha256: string; bytes?: Uint8Array }> {
  const hash = createHash("sha256");
  let total = 0;
  let bytes: Uint8Array | undefined;
  if (size <= memoryLimit) {
    // Read here, synchronously, as hits read cache files: a hand-off to
    // Deno's blocking pool per file would cost more than the read (50,000
    // small entries took 7 s to adopt that way).
    const read = Deno.readFileSync(file);
    total = read.length;
    hash.update(read);
    bytes = new Uint8Array(new SharedArrayBuffer(read.length));
    bytes.set(read);
  } else {
    using opened = await Deno.open(file, { read: true });
    const buffer = new Uint8Array(1024 * 1024);
    for (let n; (n = await opened.read(buffer)) !== null && total <= size;) {
      total += n;
      hash.update(buffer.subarray(0, n));
    }
  }
  if (total !== size) throw new Error(`${file} does not hold the ${size} bytes of its record`);
  return { sha256: hash.digest("hex"), bytes };
}
