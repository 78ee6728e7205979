/**
 * A byte-bounded cache of files in a directory of its own.
 *
 * The cache knows nothing of sockets. A promise-chain lock serialises the
 * bookkeeping of admission and eviction, and only that: bytes are copied and
 * sent outside it. Space is reserved before a file is copied in, so the bytes
 * of entries plus the bytes of admissions in flight never exceed the
 * capacity. A file is written under a temporary name and renamed into place
 * once complete and verified; eviction unlinks it, and readers that already
 * opened it keep reading (POSIX semantics).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { writeAll } from "./util/byte_reader.ts";
import type { EvictionPolicy, PolicyFactory, PolicyName } from "./policies/policy.ts";
import { PolicyIndex } from "./policies/policy_index.ts";
import { isPolicyName, POLICIES } from "./policies/registry.ts";
import { Mutex } from "./util/mutex.ts";
import { DEFAULTS } from "./defaults.ts";
import { FillProgress } from "./util/fill_progress.ts";

export type { EvictionPolicy, PolicyFactory, PolicyName } from "./policies/policy.ts";
export { PolicyIndex } from "./policies/policy_index.ts";
export { POLICIES } from "./policies/registry.ts";
import { OriginChangedError, type OriginStat } from "./origin/origin.ts";

/** The name of the file that marks a directory as a tcpcache cache. */
export const CACHE_MARKER = ".tcpcache";

/** One file in the cache. */
export interface CacheEntry {
  /** The protocol path it was fetched under. */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** The origin file's mtime when it was copied, ms since the epoch. */
  mtime: number;
  /** The origin validator it was copied under (see `OriginStat`). */
  validator: string;
  /** Hex sha256 digest of the whole file. */
  sha256: string;
  /** When it was admitted, ms since the epoch. */
  admitted: number;
  /** Its file name inside the cache directory. */
  file: string;
  /**
   * The file's bytes in memory, for a small entry within the memory budget
   * (see `FileCacheOptions.memoryBudget`): a hit then needs no file open.
   * Dropped when the entry leaves the cache.
   */
  bytes?: Uint8Array;
}

/** Where a fill reads a file's bytes from. */
export interface FillSource {
  /** The size, mtime and validator the bytes must match. */
  stat: OriginStat;
  /**
   * Passes the file's bytes to `sink`, in order. It must throw if the file
   * turns out not to match `stat` (changed while it was read).
   */
  read(sink: (chunk: Uint8Array) => Promise<void>): Promise<void>;
  /**
   * Requests may stream the file while it is copied in (see
   * {@linkcode GrowingFill}): the fill then publishes its progress, and when
   * the cache directory fails midway it reads on to the end of the source
   * for the digest, those requests taking the rest from the origin.
   * @default {false}
   */
  streamed?: boolean;
}

/**
 * A fill in flight whose requests stream the file while it is copied in
 * (`FillSource.streamed`): plain data, so that it can be posted to a
 * worker thread.
 */
export interface GrowingFill {
  /** The protocol path. */
  path: string;
  /** The file's size. */
  size: number;
  /** The origin file's mtime. */
  mtime: number;
  /** The origin validator being copied. */
  validator: string;
  /**
   * The file's name in the cache directory: its bytes grow in `<file>.part`,
   * which is renamed to `<file>` once complete (a descriptor opened on either
   * reads the same bytes).
   */
  file: string;
  /**
   * The fill's progress in shared memory (see util/fill_progress.ts): the
   * bytes written so far, whether the copy is done (and its sha256) or
   * failed, and whether the cache file stopped growing. The state moves to
   * done only once the entry is committed, or once it is known that it
   * will not be (a cache-directory failure).
   */
  progress: SharedArrayBuffer;
}

/** Options of {@linkcode FileCache.open}. */
export interface FileCacheOptions {
  /** The cache directory; created when missing. */
  dir: string;
  /**
   * The most bytes the cache may hold.
   * @default {DEFAULTS.cacheSize}
   */
  capacity?: number;
  /**
   * The eviction policy: a name from {@linkcode POLICIES}, or a function
   * that makes a policy of one's own for the cache's capacity.
   * @default {DEFAULTS.policy}
   */
  policy?: PolicyName | PolicyFactory;
  /**
   * Bytes of small entries also kept in memory, on top of their cache files:
   * opening and reading a file costs far more than sending a few KiB. Counted
   * apart from the capacity, which bounds the cache directory.
   * @default {DEFAULTS.memoryCache}
   */
  memoryBudget?: number;
  /**
   * The largest entry kept in memory.
   * @default {DEFAULTS.memoryEntryLimit}
   */
  memoryEntryLimit?: number;
  /**
   * Called once per kind of problem with the cache directory (full disk,
   * unwritable), never once per request.
   * @default {console.error}
   */
  onWarning?: (message: string) => void;
  /**
   * Fail when the directory cannot be created or written, instead of
   * opening a cache that holds nothing (see {@linkcode FileCache.unavailable}).
   * A directory that holds files tcpcache did not make always fails.
   * @default {true}
   */
  requireDirectory?: boolean;
}

/** The cache's size figures, as `STATS` and `LIST` report them. */
export interface CacheFigures {
  /** The most bytes the cache may hold. */
  capacity: number;
  /** Bytes held by admitted entries. */
  used: number;
  /** The number of entries. */
  entries: number;
  /** The eviction policy's name. */
  policy: string;
  /** Bytes of entries also held in memory. */
  memory: number;
  /** Entries evicted to make room. */
  evictions: number;
  /** Why the cache holds nothing, when its directory could not be used at start. */
  unavailable?: string;
}

/** A change to the cache's entries, as {@linkcode FileCache.observe} reports it. */
export type CacheChange =
  | { kind: "admit"; entry: CacheEntry }
  | { kind: "drop"; path: string; file: string };

/**
 * What the request path needs of a cache: {@linkcode FileCache} itself, or,
 * on a worker thread, a replica of its index that asks the one cache for
 * admissions (`server/cache_replica.ts`).
 */
export interface CacheView {
  /** The most bytes the cache may hold. */
  readonly capacity: number;
  /** The entry for `path`, if any, without counting a hit. */
  lookup(path: string): CacheEntry | undefined;
  /** Counts a hit on `path` for the eviction policy. */
  touch(path: string): void;
  /** Opens an entry's file; undefined when the entry was evicted meanwhile. */
  openEntry(entry: CacheEntry): Promise<Deno.FsFile | undefined>;
  /** Removes the entry for `path` (only if it is still `entry`, when given). */
  remove(path: string, entry?: CacheEntry): Promise<void>;
  /** True while a fill of `path` is in flight. */
  filling(path: string): boolean;
  /** Copies a file in (see {@linkcode FileCache.fill}). */
  fill(path: string, source: FillSource): Promise<CacheEntry | undefined>;
  /** The growing file of the fill of `path` in flight (see {@linkcode FileCache.growing}). */
  growing(path: string): Promise<GrowingFill | undefined> | undefined;
  /** Opens a growing fill's file (see {@linkcode FileCache.openGrowing}). */
  openGrowing(fill: GrowingFill): Promise<Deno.FsFile | undefined>;
  /** The size figures of the whole cache. */
  figures(): Promise<CacheFigures>;
  /** The figures and the entries in eviction order, as of one moment. */
  listing(): Promise<CacheListing>;
}

/** The cache as `LIST` shows it: its figures and its entries, taken together. */
export interface CacheListing {
  /** The size figures. */
  figures: CacheFigures;
  /** The entries in eviction order, next victim first. */
  entries: CacheEntry[];
}

/** The cache. Create it with {@linkcode FileCache.open}. */
export class FileCache implements CacheView {
  /** The cache directory. */
  readonly dir: string;
  /** The most bytes the cache may hold. */
  readonly capacity: number;
  #index: PolicyIndex<CacheEntry>;
  #inflight = new Map<string, Promise<CacheEntry | undefined>>();
  #growing = new Map<string, Promise<GrowingFill | undefined>>();
  #lock = new Mutex();
  #reserved = 0;
  #memoryUsed = 0;
  #memoryBudget: number;
  #memoryEntryLimit: number;
  #evictions = 0;
  #sequence = 0;
  #warned = new Set<string>();
  #onWarning: (message: string) => void;
  #observers: ((change: CacheChange) => void)[] = [];

  #unavailable: string | undefined;

  private constructor(options: FileCacheOptions, capacity: number, policy: EvictionPolicy) {
    this.dir = options.dir;
    this.capacity = capacity;
    this.#index = new PolicyIndex(policy);
    this.#onWarning = options.onWarning ?? console.error;
    this.#memoryBudget = options.memoryBudget ?? DEFAULTS.memoryCache;
    this.#memoryEntryLimit = options.memoryEntryLimit ?? DEFAULTS.memoryEntryLimit;
  }

  /**
   * Prepares the cache directory and returns an empty cache.
   *
   * A missing directory is created; an empty one is adopted; one that holds
   * the {@linkcode CACHE_MARKER} file is emptied. Any other directory is left
   * untouched and the call fails.
   *
   * @example
   * ```ts
   * import { FileCache } from "@tcpcache/tcpcache/cache";
   * const cache = await FileCache.open({ dir: await Deno.makeTempDir() });
   * cache.capacity; // 67108864
   * ```
   */
  static async open(options: FileCacheOptions): Promise<FileCache> {
    const capacity = options.capacity ?? DEFAULTS.cacheSize;
    if (!Number.isSafeInteger(capacity) || capacity < 0) {
      throw new RangeError(`invalid cache capacity: ${capacity}`);
    }
    const makePolicy = policyFactory(options.policy ?? DEFAULTS.policy);
    try {
      await prepareDirectory(options.dir);
    } catch (error) {
      if (!(error instanceof UnusableDirectoryError) || (options.requireDirectory ?? true)) {
        throw error;
      }
      // Served without a cache: capacity 0 admits nothing, so nothing is written.
      const cache = new FileCache(options, 0, makePolicy(0));
      cache.#unavailable = error.message;
      return cache;
    }
    return new FileCache(options, capacity, makePolicy(capacity));
  }

  /**
   * Why the cache holds nothing, when its directory could not be created or
   * written at start (`requireDirectory: false`); undefined for a working cache.
   */
  get unavailable(): string | undefined {
    return this.#unavailable;
  }

  /** The eviction policy's name. */
  get policy(): string {
    return this.#index.policy.name;
  }

  /** Bytes held by admitted entries. */
  get used(): number {
    return this.#index.used;
  }

  /** Bytes reserved by admissions in flight. */
  get reserved(): number {
    return this.#reserved;
  }

  /** The number of entries. */
  get count(): number {
    return this.#index.count;
  }

  /** Bytes of entries also held in memory (see `FileCacheOptions.memoryBudget`). */
  get memoryUsed(): number {
    return this.#memoryUsed;
  }

  /** Entries evicted to make room since the cache was opened. */
  get evictions(): number {
    return this.#evictions;
  }

  /** The entry for `path`, if any, without counting a hit. */
  lookup(path: string): CacheEntry | undefined {
    return this.#index.get(path);
  }

  /** Counts a hit on `path` for the eviction policy. */
  touch(path: string): void {
    this.#index.hit(path);
  }

  /** The entries in eviction order, next victim first. */
  entries(): CacheEntry[] {
    return this.#index.ordered();
  }

  /** The size figures, as a {@linkcode CacheView} gives them. */
  figures(): Promise<CacheFigures> {
    return Promise.resolve(this.#figuresNow());
  }

  /** The figures and {@linkcode entries}, as a {@linkcode CacheView} gives them. */
  listing(): Promise<CacheListing> {
    return Promise.resolve({ figures: this.#figuresNow(), entries: this.entries() });
  }

  #figuresNow(): CacheFigures {
    return {
      capacity: this.capacity,
      used: this.used,
      entries: this.count,
      policy: this.policy,
      memory: this.memoryUsed,
      evictions: this.evictions,
      ...(this.#unavailable === undefined ? {} : { unavailable: this.#unavailable }),
    };
  }

  /**
   * Calls `observer` after every admission and every removal, in the order
   * they happen (workers keep replicas of the index this way).
   */
  observe(observer: (change: CacheChange) => void): void {
    this.#observers.push(observer);
  }

  #notify(change: CacheChange): void {
    for (const observer of this.#observers) observer(change);
  }

  /**
   * Opens an entry's file for reading. Resolves to undefined when the entry
   * was evicted in the meantime; an open file stays readable after eviction.
   */
  openEntry(entry: CacheEntry): Promise<Deno.FsFile | undefined> {
    return openCacheFile(this.dir, entry);
  }

  /**
   * Removes the entry for `path` (its origin changed or vanished). With
   * `entry`, removes it only if it is still that entry.
   */
  remove(path: string, entry?: CacheEntry): Promise<void> {
    return this.#lock.run(async () => {
      const current = this.#index.get(path);
      if (current && (entry === undefined || current === entry)) {
        await this.#drop(current);
      }
    });
  }

  /** True while a fill of `path` is in flight (a new fill would join it). */
  filling(path: string): boolean {
    return this.#inflight.has(path);
  }

  /**
   * Copies a file into the cache, evicting as the policy says until it fits.
   * Concurrent fills of one path share one copy (single flight), so the
   * origin is read once.
   *
   * Resolves to the new entry, or to undefined when the file is not admitted:
   * larger than the capacity, refused by the eviction policy (see
   * `EvictionPolicy.admit`), no room beside admissions in flight, or a
   * cache-directory failure (full disk, unwritable), which is reported once
   * through `onWarning`.
   *
   * @throws whatever `source.read` throws (the origin failed or changed);
   *   nothing is admitted then.
   */
  fill(path: string, source: FillSource): Promise<CacheEntry | undefined> {
    const running = this.#inflight.get(path);
    if (running) return running;
    const growing = Promise.withResolvers<GrowingFill | undefined>();
    const fill = this.#fill(path, source, growing.resolve).finally(() => {
      growing.resolve(undefined);
      this.#inflight.delete(path);
      this.#growing.delete(path);
    });
    this.#inflight.set(path, fill);
    this.#growing.set(path, growing.promise);
    return fill;
  }

  /**
   * The fill of `path` in flight, as the requests that stream it see it:
   * resolves once its cache file exists (see {@linkcode GrowingFill}), or to
   * undefined when it ends without one (not `FillSource.streamed`, not
   * admitted, failed before its first byte). Undefined when no fill of
   * `path` is in flight; ask right after {@linkcode fill}.
   */
  growing(path: string): Promise<GrowingFill | undefined> | undefined {
    return this.#growing.get(path);
  }

  /**
   * Opens a growing fill's file for reading: its partial file, or the
   * complete one if it was renamed meanwhile; undefined when neither is
   * there (the fill failed, or its entry was already evicted).
   */
  openGrowing(fill: GrowingFill): Promise<Deno.FsFile | undefined> {
    return openGrowingFile(this.dir, fill);
  }

  async #fill(
    path: string,
    source: FillSource,
    started: (growing: GrowingFill) => void,
  ): Promise<CacheEntry | undefined> {
    const { size } = source.stat;
    if (size > this.capacity) return undefined;
    if (!await this.#lock.run(() => this.#reserve(path, size))) return undefined;
    const file = `${++this.#sequence}`;
    const progress = source.streamed ? new FillProgress() : undefined;
    const publish = progress && (() =>
      started({
        path,
        size,
        mtime: source.stat.mtime,
        validator: source.stat.validator,
        file,
        progress: progress.buffer,
      }));
    let copied: { sha256: string; bytes?: Uint8Array } | undefined;
    try {
      copied = await this.#copyIn(path, file, source, progress, publish);
    } finally {
      // Not done by now (an error, a failed cache directory before the end):
      // the readers stop short. A fill done stays done.
      if (!copied) progress?.fail();
      if (!copied) await this.#lock.run(() => this.#reserved -= size);
    }
    if (!copied) return undefined;
    const entry: CacheEntry = {
      path,
      size,
      mtime: source.stat.mtime,
      validator: source.stat.validator,
      sha256: copied.sha256,
      admitted: Date.now(),
      file,
      bytes: copied.bytes,
    };
    await this.#lock.run(() => this.#commit(entry));
    // Done once committed: a request after the last byte finds the entry.
    progress?.finish(entry.sha256);
    return entry;
  }

  /**
   * Writes the source to `<file>.part`, hashing as it goes, and renames it to
   * `file` once the byte count matches. Resolves to undefined when the cache
   * directory failed; rethrows the source's own errors. With `progress`
   * (a streamed fill), each write is announced once it is done, and a
   * failed cache directory does not stop the copy: it goes on hashing to
   * the end, so that the readers, who take the rest from the origin, get
   * the digest to check it against.
   */
  async #copyIn(
    path: string,
    file: string,
    source: FillSource,
    progress?: FillProgress,
    opened?: () => void,
  ): Promise<{ sha256: string; bytes?: Uint8Array } | undefined> {
    const { size } = source.stat;
    const partial = `${this.dir}/${file}.part`;
    // A small file is also kept in memory, if the budget allows at commit:
    // in shared memory, so that worker threads' replicas share these bytes
    // instead of each holding a copy.
    const bytes = size <= this.#memoryEntryLimit
      ? new Uint8Array(new SharedArrayBuffer(size))
      : undefined;
    let target: Deno.FsFile;
    try {
      target = await Deno.open(partial, { write: true, createNew: true });
    } catch (error) {
      return this.#cacheDirFailed(error);
    }
    opened?.();
    const hash = createHash("sha256");
    let count = 0;
    let diskError: unknown;
    const written = (length: number) => progress?.advance(length);
    const failed = (error: unknown) => {
      diskError = error;
      if (!progress) throw error;
      progress.spill();
      // Its bytes so far stay readable to those who opened it; the space goes now.
      Deno.remove(partial).catch(() => {});
    };
    try {
      await source.read(async (chunk) => {
        count += chunk.length;
        if (count > size) throw new OriginChangedError(path);
        // The write runs on Deno's I/O threads while this thread hashes.
        const writing = diskError === undefined
          ? writeAll(target, chunk).then(() => written(chunk.length), failed)
          : undefined;
        hash.update(chunk);
        bytes?.set(chunk, count - chunk.length);
        await writing;
      });
      if (count !== size) throw new OriginChangedError(path);
    } catch (error) {
      target.close();
      await Deno.remove(partial).catch(() => {});
      if (error === diskError) return this.#cacheDirFailed(error);
      throw error;
    }
    target.close();
    const sha256 = hash.digest("hex");
    if (diskError !== undefined) {
      progress!.finish(sha256);
      return this.#cacheDirFailed(diskError);
    }
    try {
      await Deno.rename(partial, `${this.dir}/${file}`);
    } catch (error) {
      await Deno.remove(partial).catch(() => {});
      // Every byte is in the file the readers hold open: they can finish.
      progress?.finish(sha256);
      return this.#cacheDirFailed(error);
    }
    return { sha256, bytes };
  }

  /**
   * Makes room for `size` bytes and reserves them; false if it cannot, or if
   * the policy does not admit the file.
   */
  async #reserve(path: string, size: number): Promise<boolean> {
    if (!this.#index.admits(path, size)) return false;
    // Admissions in flight cannot be evicted: past them, there is no room.
    if (this.#reserved + size > this.capacity) return false;
    while (this.#index.used + this.#reserved + size > this.capacity) {
      await this.#unlink(this.#index.evict()!);
      this.#evictions++;
    }
    this.#reserved += size;
    return true;
  }

  async #commit(entry: CacheEntry): Promise<void> {
    this.#reserved -= entry.size;
    const previous = this.#index.remove(entry.path);
    if (previous) await this.#unlink(previous);
    if (entry.bytes && this.#memoryUsed + entry.size <= this.#memoryBudget) {
      this.#memoryUsed += entry.size;
    } else {
      entry.bytes = undefined;
    }
    this.#index.insert(entry.path, entry);
    this.#notify({ kind: "admit", entry });
  }

  async #drop(entry: CacheEntry): Promise<void> {
    this.#index.remove(entry.path);
    await this.#unlink(entry);
  }

  /** Deletes a removed entry's file and memory copy (readers keep theirs). */
  async #unlink(entry: CacheEntry): Promise<void> {
    this.#notify({ kind: "drop", path: entry.path, file: entry.file });
    if (entry.bytes) {
      this.#memoryUsed -= entry.size;
      entry.bytes = undefined;
    }
    await Deno.remove(`${this.dir}/${entry.file}`).catch(() => {});
  }

  /** Reports a cache-directory failure, once per kind of error. */
  #cacheDirFailed(error: unknown): undefined {
    const kind = error instanceof Error ? error.name : "Error";
    if (!this.#warned.has(kind)) {
      this.#warned.add(kind);
      const message = error instanceof Error ? error.message : String(error);
      this.#onWarning(`cache directory ${this.dir} failed (${message}); serving without caching`);
    }
    return undefined;
  }
}

/**
 * Opens the file of `entry` in the cache directory `dir` for reading;
 * undefined when it is gone (the entry was evicted meanwhile). The open is
 * synchronous, like the reads of cache files (see `FileService`): the
 * directory is local, and a hand-off to Deno's blocking pool costs more.
 */
export function openCacheFile(
  dir: string,
  entry: CacheEntry,
): Promise<Deno.FsFile | undefined> {
  try {
    return Promise.resolve(Deno.openSync(`${dir}/${entry.file}`, { read: true }));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return Promise.resolve(undefined);
    return Promise.reject(error);
  }
}

/** {@linkcode FileCache.openGrowing} for the cache directory `dir`. */
export function openGrowingFile(dir: string, fill: GrowingFill): Promise<Deno.FsFile | undefined> {
  // The partial file first: until the rename, only it exists; after, only the other.
  for (const name of [`${fill.file}.part`, fill.file]) {
    try {
      return Promise.resolve(Deno.openSync(`${dir}/${name}`, { read: true }));
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) return Promise.reject(error);
    }
  }
  return Promise.resolve(undefined);
}

async function prepareDirectory(dir: string): Promise<void> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw new UnusableDirectoryError(dir, error);
    await Deno.mkdir(dir, { recursive: true }).catch((error) => {
      throw new UnusableDirectoryError(dir, error);
    });
  }
  if (names.length > 0 && !names.includes(CACHE_MARKER)) {
    throw new Error(
      `refusing to use cache directory ${dir}: it is not empty and was not created by tcpcache (no ${CACHE_MARKER} file in it)`,
    );
  }
  try {
    for (const name of names) {
      if (name !== CACHE_MARKER) await Deno.remove(`${dir}/${name}`, { recursive: true });
    }
    await Deno.writeTextFile(
      `${dir}/${CACHE_MARKER}`,
      "This directory is a tcpcache cache. The server empties it at every start.\n",
    );
  } catch (error) {
    throw new UnusableDirectoryError(dir, error);
  }
}

/** A cache directory that cannot be read, created or written (not one that is someone else's). */
class UnusableDirectoryError extends Error {
  constructor(dir: string, cause: unknown) {
    super(`cannot use cache directory ${dir}: ${(cause as Error).message}`, { cause });
    this.name = "UnusableDirectoryError";
  }
}

/** The factory `policy` names; a name from outside the type is checked here. */
function policyFactory(policy: PolicyName | PolicyFactory): PolicyFactory {
  if (typeof policy === "function") return policy;
  if (!isPolicyName(policy)) {
    throw new RangeError(`unknown policy "${policy}" (known: ${Object.keys(POLICIES).join(", ")})`);
  }
  return POLICIES[policy];
}
