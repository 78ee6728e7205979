/**
 * What an origin is: the contract between the server (and its cache) and
 * where files come from. Each origin in this folder implements it: a
 * directory (`directory.ts`) or an S3-compatible bucket (`s3.ts`).
 *
 * @module
 */

/** What the server needs to know of an origin file before serving it. */
export interface OriginStat {
  /** Size in bytes. */
  size: number;
  /** Modification time, milliseconds since the epoch. */
  mtime: number;
  /**
   * Changes whenever the file's content may have changed (size, mtime, inode
   * or change time): a cache entry is fresh only while this is equal.
   */
  validator: string;
  /**
   * The origin's entity tag, where it has one (S3): what a conditional
   * request names (`If-None-Match`) to learn whether a copy is still good.
   */
  etag?: string;
  /**
   * How long the origin says a copy stays fresh, in milliseconds, where it
   * says so (an S3 object's `Cache-Control: max-age` or `Expires`); used
   * only when the server is told to honour it (`--origin-max-age`).
   */
  lifetimeMs?: number;
  /**
   * True when the origin says a copy must not be used past its lifetime
   * (`Cache-Control: no-cache`, `no-store`, `must-revalidate` or
   * `proxy-revalidate` on an S3 object); heeded with `--origin-max-age`.
   */
  noStale?: boolean;
}

/**
 * A stat as an origin behind the shield answers it (origin/shield.ts):
 * perhaps past its freshness lifetime, and how old.
 */
export interface ShieldedStat extends OriginStat {
  /** True when it is past its lifetime (served while revalidating, or while the origin fails). */
  stale?: boolean;
  /** Milliseconds since the origin last confirmed it. */
  ageMs?: number;
  /** True when it was answered from what the shield remembers, without asking the origin. */
  fromMemory?: boolean;
}

/**
 * An origin file changed while it was read (its size, mtime or inode moved,
 * or it held more or fewer bytes than its size said): its bytes are not
 * served as a whole file and never admitted.
 */
export class OriginChangedError extends Error {
  /** Creates the error for `path`. */
  constructor(path: string) {
    super(`changed while it was read: ${path}`);
    this.name = "OriginChangedError";
  }
}

/** One entry of a directory listing. */
export interface OriginDirEntry {
  /** The entry's name within its directory. */
  name: string;
  /** `file` or `dir`; other kinds of entry are not listed. */
  type: "file" | "dir";
  /** Size in bytes (0 for a directory). */
  size: number;
  /** Modification time, milliseconds since the epoch. */
  mtime: number;
}

/** Which page of a directory's listing to read (see {@linkcode Origin.list}). */
export interface OriginListWindow {
  /** Only names after this one, in byte order; absent: from the first. */
  after?: string;
  /** At most this many entries. */
  limit: number;
}

/** One page of a directory's listing. */
export interface OriginDirPage {
  /** Entries in the byte order of their names' UTF-8 (`compareNames`, protocol.ts). */
  entries: OriginDirEntry[];
  /**
   * Present when more entries may follow: the name to read the next page
   * after. It is where this page stopped, which need not be an entry shown
   * (an entry that vanished meanwhile, or one that is never listed).
   */
  next?: string;
}

/** Bytes read in order, the way `Deno.FsFile.read` reads them. */
export interface ByteSource {
  /** Reads into `into`; resolves to the count, or null at the end. */
  read(into: Uint8Array): Promise<number | null>;
  /** Releases what the source holds; reading after it fails. */
  close(): void;
}

/** A part of a file: `length` bytes from `offset`. */
export interface ByteRange {
  /** The first byte's position in the file. */
  offset: number;
  /** How many bytes. */
  length: number;
}

/**
 * An origin file opened for reading, from the start or from the asked
 * range's offset. Reading past the range (or the size) is allowed and is
 * how a file that grew while it was read is noticed.
 */
export interface OriginFile extends ByteSource {
  /** Its size, mtime and validator when it was opened. */
  readonly stat: OriginStat;
  /**
   * Its stat now: a validator unlike `stat`'s means that the file changed
   * while it was read.
   */
  restat(): Promise<OriginStat>;
}

/** The origin's contract: what the server and the cache use. */
export interface Origin {
  /**
   * How a file's freshness is checked: `watch` (changes are reported, a hit
   * asks nothing) or `stat` (every request asks the origin; also when absent).
   */
  readonly freshness?: "watch" | "stat";
  /** Stats a regular file. */
  stat(path: string): Promise<ShieldedStat>;
  /**
   * Stats a regular file at once, where the origin can answer without
   * waiting (a local directory); absent where it cannot (S3). The same
   * answers and errors as {@linkcode Origin.stat}, as of the start of the
   * current job at the latest: calls within one synchronous run may share
   * one check for changes (see origin/change_watch.ts), which is fresh for
   * every request received before the run began.
   */
  statNow?(path: string): OriginStat;
  /** Opens a regular file for reading, positioned at `range.offset`. */
  open(path: string, range?: ByteRange): Promise<OriginFile>;
  /**
   * Opens a whole file only if it no longer has the entity tag `etag` (a
   * conditional `GET`, `If-None-Match`): resolves to undefined when it still
   * has it (`304 Not Modified`, no bytes moved), otherwise to the file,
   * whose bytes come with the same answer. Absent where the origin has no
   * entity tags (a directory: its stat is as cheap as a check can be).
   */
  openIfChanged?(path: string, etag: string): Promise<OriginFile | undefined>;
  /**
   * Forgets what is remembered of `path` (with `prefix`, of every path that
   * starts with it), where anything is (origin/shield.ts): a purge.
   */
  forget?(path: string, prefix: boolean): void;
  /**
   * One page of a directory's listing ("" is the served directory itself):
   * the first `window.limit` entries whose names follow `window.after`.
   * Its cost is bounded by the page, not by the directory: a page of a
   * huge directory holds and describes no more than its own entries.
   */
  list(path: string, window: OriginListWindow): Promise<OriginDirPage>;
}
