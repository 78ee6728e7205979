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
import { nextTurn } from "./util/next_turn.ts";
import { DEFAULTS } from "./defaults.ts";
import {
  isCacheFileName,
  Journal,
  JOURNAL_FILE,
  type JournalContents,
  type JournalEntry,
  type JournalHeader,
  readJournal,
} from "./cache_disk/journal.ts";
import { DiskRoom, isDiskFull } from "./cache_disk/disk_room.ts";
import {
  CACHE_MARKER,
  hashFile,
  type PreparedDirectory,
  prepareDirectory,
  reportJournal,
  UnusableDirectoryError,
} from "./cache_disk/directory.ts";
import { FillProgress } from "./util/fill_progress.ts";

export type { EvictionPolicy, PolicyFactory, PolicyName } from "./policies/policy.ts";
export { PolicyIndex } from "./policies/policy_index.ts";
export { POLICIES } from "./policies/registry.ts";
export { JOURNAL_FILE, type JournalEntry } from "./cache_disk/journal.ts";
export { CACHE_MARKER } from "./cache_disk/directory.ts";
import { OriginChangedError, type OriginStat } from "./origin/origin.ts";

/**
 * One file in the cache: what the journal records of it (path, size, mtime,
 * validator, sha256, admission time, file name), and its bytes in memory
 * when it is small.
 */
export interface CacheEntry extends JournalEntry {
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
  /**
   * Keep the entries a previous run left (`--keep-cache`): each is checked
   * against the journal's record (size and sha256) before it is served, in
   * the background after `open` returns or at its first request. Otherwise
   * the directory is emptied, in the background too.
   * @default {false}
   */
  keep?: boolean;
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
  /**
   * The capacity in force: less than `capacity` while the disk holds less
   * (see `degraded`).
   */
  effectiveCapacity: number;
  /** Why the cache runs below its capacity (the disk filled up), while it does. */
  degraded?: string;
  /** Writes to the cache directory that failed (a full disk, an I/O error). */
  writeFailures: number;
  /** Entries of a previous run adopted (`--keep-cache`). */
  adopted: number;
  /** Entries of a previous run still waiting to be checked and adopted. */
  adopting: number;
  /**
   * Bytes of a previous run's files not yet adopted or removed: counted
   * against the capacity until the background housekeeping is done.
   */
  housekeepingBytes: number;
  /**
   * Where the background housekeeping of a previous run's files is:
   * `loading` the journal (`keep`: a miss waits for it, to find its kept
   * entry), `counting` the files (no room is promised until it is done),
   * `removing` the ones not kept, `adopting` the kept ones, or `done`.
   */
  housekeeping: "loading" | "counting" | "removing" | "adopting" | "done";
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
  /**
   * Forgets entries of a previous run still waiting to be adopted: `path`,
   * or with `prefix` every path that starts with it (see `purgeCovers`).
   * Only the cache's owner has them.
   */
  forgetKept?(covers: (path: string) => boolean): Promise<number>;
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
  /**
   * This run's prefix of file names: a file of a previous run never has a
   * name this run could give, so the background housekeeping can tell them
   * apart without waiting for anything.
   */
  #run = `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36)}`;
  #onWarning: (message: string) => void;
  #observers: ((change: CacheChange) => void)[] = [];
  #unavailable: string | undefined;
  #journal: Journal | undefined;
  /** Entries of a previous run, by path, waiting to be checked and adopted. */
  #kept = new Map<string, JournalEntry>();
  #adopted = 0;
  /** Bytes of a previous run's files not yet adopted or removed (see {@linkcode housekept}). */
  #oldBytes = 0;
  /** Where the housekeeping is: until the old files are counted, no room can be promised. */
  #housekeeping: CacheFigures["housekeeping"] = "done";
  #closing = false;
  #room: DiskRoom;
  /** Resolves once the previous run's files are adopted or removed. */
  readonly housekept: Promise<void>;
  /** Settled once the journal a kept cache was left with is read (or at once, without one). */
  #loaded = Promise.withResolvers<void>();
  #header: JournalHeader;

  private constructor(
    options: FileCacheOptions,
    capacity: number,
    policy: EvictionPolicy,
    prepared?: PreparedDirectory,
  ) {
    this.dir = options.dir;
    this.capacity = capacity;
    this.#index = new PolicyIndex(policy);
    this.#onWarning = options.onWarning ?? console.error;
    this.#memoryBudget = options.memoryBudget ?? DEFAULTS.memoryCache;
    this.#memoryEntryLimit = options.memoryEntryLimit ?? DEFAULTS.memoryEntryLimit;
    this.#room = new DiskRoom(options.dir, capacity, this.#onWarning);
    this.#header = { capacity, policy: policy.name };
    if (prepared?.journal) this.#useJournal(prepared.journal);
    if (!prepared?.marked) {
      this.#loaded.resolve();
      this.housekept = Promise.resolve(); // a new or empty directory: nothing left to tidy
      return;
    }
    if (!prepared.readKept) this.#loaded.resolve();
    this.#housekeeping = prepared.readKept ? "loading" : "counting";
    this.housekept = this.#houseKeep().catch((error) => {
      this.#loaded.resolve();
      this.#housekeeping = "done";
      this.#oldBytes = 0;
      this.#onWarning(`cache directory ${this.dir}: housekeeping failed: ${error.message}`);
    });
  }

  /**
   * Prepares the cache directory and returns the cache, at once: what a
   * previous run left is adopted or removed in the background (see
   * {@linkcode housekept}), its bytes counted against the capacity until then.
   *
   * A missing directory is created; an empty one is adopted; one that holds
   * the {@linkcode CACHE_MARKER} file is emptied, or with `keep` its
   * journal's entries are kept. Any other directory is left untouched and the
   * call fails.
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
    const policy = makePolicy(capacity);
    let prepared: PreparedDirectory;
    try {
      const header = { capacity, policy: policy.name };
      prepared = await prepareDirectory(options.dir, options.keep ?? false, header);
    } catch (error) {
      if (!(error instanceof UnusableDirectoryError) || (options.requireDirectory ?? true)) {
        throw error;
      }
      // Served without a cache: capacity 0 admits nothing, so nothing is written.
      const cache = new FileCache(options, 0, makePolicy(0));
      cache.#unavailable = error.message;
      return cache;
    }
    return new FileCache(options, capacity, policy, prepared);
  }

  /**
   * Stops the background housekeeping, rewrites the journal in the current
   * eviction order (so that a restart with `keep` finds it exactly) and
   * closes it. The cache must not be used afterwards.
   */
  async close(): Promise<void> {
    this.#closing = true;
    this.#room.close();
    await this.housekept;
    await this.#lock.run(() => {
      this.#journal?.compact(this.#described());
      this.#journal?.close();
      this.#journal = undefined;
    });
  }

  /** What the journal describes: the entries waiting to be adopted, then the index's. */
  *#described(): Iterable<JournalEntry> {
    yield* this.#kept.values();
    yield* this.#index.ordered();
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
      effectiveCapacity: this.#limit,
      ...(this.#room.degraded === undefined ? {} : { degraded: this.#room.degraded }),
      writeFailures: this.#room.writeFailures,
      adopted: this.#adopted,
      adopting: this.#kept.size,
      housekeepingBytes: this.#oldBytes,
      housekeeping: this.#housekeeping,
    };
  }

  /** The bytes the cache may hold now: its capacity, or less while the disk is full. */
  get #limit(): number {
    return Math.min(this.capacity, this.#room.limit);
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
  async remove(path: string, entry?: CacheEntry): Promise<void> {
    if (entry === undefined) await this.#loaded.promise; // it may drop a kept entry
    return await this.#lock.run(async () => {
      const current = this.#index.get(path);
      if (current && (entry === undefined || current === entry)) {
        await this.#drop(current);
      }
      const kept = this.#kept.get(path);
      if (kept && entry === undefined) await this.#discardKept(kept);
    });
  }

  /** Forgets the previous run's entries that `covers` selects; resolves to how many. */
  async forgetKept(covers: (path: string) => boolean): Promise<number> {
    await this.#loaded.promise;
    return await this.#lock.run(async () => {
      const doomed = [...this.#kept.values()].filter((entry) => covers(entry.path));
      for (const entry of doomed) await this.#discardKept(entry);
      return doomed.length;
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
    const fill = this.#adoptOrFill(path, source, growing.resolve).finally(() => {
      growing.resolve(undefined);
      this.#inflight.delete(path);
      this.#growing.delete(path);
    });
    this.#inflight.set(path, fill);
    this.#growing.set(path, growing.promise);
    return fill;
  }

  /**
   * A fill of a path the previous run left an entry of: that entry, if it is
   * the version asked for and its file checks out; otherwise a fill.
   */
  async #adoptOrFill(
    path: string,
    source: FillSource,
    started: (growing: GrowingFill) => void,
  ): Promise<CacheEntry | undefined> {
    await this.#loaded.promise; // a kept entry of this path may be in the journal still unread
    const kept = this.#kept.get(path);
    if (kept) {
      const { validator, size } = source.stat;
      if (kept.validator === validator && kept.size === size) {
        const entry = await this.#adopt(kept);
        if (entry) return entry;
      } else {
        await this.#lock.run(async () => {
          if (this.#kept.get(path) === kept) await this.#discardKept(kept);
        });
      }
    }
    return await this.#fill(path, source, started);
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
    if (size > this.#limit) return undefined;
    if (!await this.#lock.run(() => this.#reserve(path, size))) return undefined;
    const file = `${this.#run}.${++this.#sequence}`;
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
    // Admissions in flight and a previous run's files cannot be evicted:
    // past them, there is no room.
    const limit = this.#limit;
    const counted = this.#housekeeping !== "loading" && this.#housekeeping !== "counting";
    if (!counted || this.#reserved + this.#oldBytes + size > limit) {
      return false;
    }
    await this.#evictDownTo(limit - size);
    this.#reserved += size;
    return true;
  }

  /** Evicts until the cache's bytes (entries, reservations, old files) are at most `bytes`. */
  async #evictDownTo(bytes: number): Promise<void> {
    while (this.#index.count > 0 && this.#index.used + this.#reserved + this.#oldBytes > bytes) {
      await this.#unlink(this.#index.evict()!);
      this.#evictions++;
    }
  }

  async #commit(entry: CacheEntry): Promise<void> {
    this.#reserved -= entry.size;
    await this.#insert(entry);
    this.#journal?.admitted(entry);
    this.#compactIfDue();
  }

  /** Puts an entry whose file is in place into the index (replacing the path's entry). */
  async #insert(entry: CacheEntry): Promise<void> {
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

  #compactIfDue(): void {
    // Not while kept entries wait: their place among the adopted ones is not known yet.
    if (this.#kept.size === 0 && this.#journal?.wantsCompaction) {
      this.#journal.compact(this.#described());
    }
  }

  async #drop(entry: CacheEntry): Promise<void> {
    this.#index.remove(entry.path);
    await this.#unlink(entry);
  }

  /** Deletes a removed entry's file and memory copy (readers keep theirs). */
  async #unlink(entry: CacheEntry): Promise<void> {
    this.#notify({ kind: "drop", path: entry.path, file: entry.file });
    this.#journal?.dropped(entry.file);
    if (entry.bytes) {
      this.#memoryUsed -= entry.size;
      entry.bytes = undefined;
    }
    await Deno.remove(`${this.dir}/${entry.file}`).catch(() => {});
  }

  /**
   * Counts a failed write to the cache directory and says so (at a bounded
   * rate); on a full disk, shrinks the capacity in force to what the disk
   * holds and evicts down to it, instead of refusing every fill from then
   * on (see `cache_disk/disk_room.ts`).
   */
  #cacheDirFailed(error: unknown): undefined {
    this.#room.failed(error);
    if (isDiskFull(error)) {
      this.#room.shrink(
        // Not the reservations: a fill in flight has written only part of
        // its bytes (and the one that failed, none that stay).
        () => this.#index.used + this.#oldBytes,
        (limit) => void this.#lock.run(() => this.#evictDownTo(limit)),
      ).catch(() => {});
    }
    return undefined;
  }

  /**
   * The previous run's files: removes those that have no trustworthy record
   * (their bytes counted against the capacity until removed), then checks
   * and adopts the recorded entries in their recorded order, oldest (or
   * next victim) first, so that the eviction order carries over.
   */
  async #houseKeep(): Promise<void> {
    if (this.#housekeeping === "loading") {
      await this.#loadJournal();
      if (this.#closing) return;
      this.#housekeeping = "counting";
    }
    const recorded = new Map([...this.#kept.values()].map((entry) => [entry.file, entry]));
    const found = new Set<JournalEntry>();
    const doomed: { name: string; size: number }[] = [];
    let seen = 0;
    for await (const { name } of Deno.readDir(this.dir)) {
      if (this.#closing) break;
      if (OWN_FILES.has(name) || name.startsWith(`${this.#run}.`)) continue;
      if (++seen % HOUSEKEEPING_BATCH === 0) await nextTurn();
      let size = 0;
      try {
        const stat = Deno.lstatSync(`${this.dir}/${name}`);
        size = stat.isFile ? stat.size : 0;
        this.#oldBytes += size; // for the figures as the count goes; settled below
        const entry = recorded.get(name);
        if (entry && stat.isFile && stat.size === entry.size && isCacheFileName(name)) {
          found.add(entry);
          continue;
        }
      } catch {
        continue; // gone already
      }
      doomed.push({ name, size });
    }
    if (this.#closing) return; // half a scan proves nothing about the kept entries
    // Recorded entries without their file (or with another size) go; what
    // is left counts against the capacity until adopted or removed.
    await this.#lock.run(() => {
      let oldBytes = doomed.reduce((sum, { size }) => sum + size, 0);
      for (const entry of [...this.#kept.values()]) {
        if (found.has(entry)) oldBytes += entry.size;
        // Gone, or of another size (then among the doomed): nothing to
        // unlink or journal here (a record without its file is dropped at
        // any start), so the lock is held for moments, not a file each.
        else this.#kept.delete(entry.path);
      }
      this.#oldBytes = oldBytes;
      this.#housekeeping = "removing";
    });
    // Unlinked here, a batch at a time between requests: an awaited remove
    // per file costs a round trip to Deno's blocking pool each (50,000
    // files took tens of seconds that way, under load).
    for (const [i, { name, size }] of doomed.entries()) {
      if (this.#closing) return; // the next start removes the rest
      if (i % HOUSEKEEPING_BATCH === 0) await nextTurn();
      try {
        Deno.removeSync(`${this.dir}/${name}`, { recursive: true });
      } catch {
        // gone already, or not ours to remove: either way no longer counted
      }
      this.#oldBytes -= size;
    }
    this.#housekeeping = "adopting";
    this.#ensureJournal();
    for (const [i, entry] of [...this.#kept.values()].entries()) {
      if (this.#closing) return;
      if (i % HOUSEKEEPING_BATCH === 0) await nextTurn();
      if (this.#kept.get(entry.path) !== entry || this.#inflight.has(entry.path)) continue;
      const adoption = this.#adopt(entry).finally(() => this.#inflight.delete(entry.path));
      this.#inflight.set(entry.path, adoption);
      await adoption;
    }
    this.#housekeeping = "done";
  }

  /**
   * Reads the journal a kept cache was left with, in the background (13 MB
   * for 55,000 entries: most of a second), and goes on with it; one that
   * cannot be trusted is replaced by a new one, and nothing is kept.
   */
  async #loadJournal(): Promise<void> {
    let contents: JournalContents;
    try {
      contents = await readJournal(this.dir, nextTurn);
    } catch (error) {
      const why = `journal unreadable (${(error as Error).message})`;
      contents = { entries: [], damaged: 0, untrusted: why, records: 0, endsWhole: true };
    }
    reportJournal(contents, this.#header, this.dir, this.#onWarning);
    const trusted = contents.untrusted === undefined;
    // A journal written under a larger capacity: its next victims go first,
    // before any of them can be adopted (at a request, say).
    let kept = trusted ? contents.entries : [];
    let keptBytes = kept.reduce((sum, entry) => sum + entry.size, 0);
    let dropped = 0;
    while (dropped < kept.length && keptBytes > this.#limit) keptBytes -= kept[dropped++].size;
    const unfit = kept.slice(0, dropped);
    kept = kept.slice(dropped);
    for (const entry of kept) this.#kept.set(entry.path, entry);
    try {
      this.#useJournal(
        trusted
          ? Journal.continue(this.dir, this.#header, contents)
          : Journal.create(this.dir, this.#header, []),
      );
    } catch (error) {
      // The kept entries stay good: each is checked against its record. A
      // new journal is tried again once the old files are gone (#ensureJournal).
      this.#cacheDirFailed(error);
    }
    // Unlinked by the removal of unknown files: none of them is in #kept any more.
    for (const entry of unfit) this.#journal?.dropped(entry.file);
    this.#loaded.resolve();
  }

  /**
   * A journal, if the cache has none (its directory was full when it was
   * due): written now, describing what the cache holds and keeps.
   */
  #ensureJournal(): void {
    if (this.#journal) return;
    try {
      this.#useJournal(Journal.create(this.dir, this.#header, this.#described()));
    } catch (error) {
      this.#cacheDirFailed(error); // a restart then keeps nothing of this run
    }
  }

  #useJournal(journal: Journal): void {
    this.#journal = journal;
    // A record that could not be appended costs at most a kept entry at the next start.
    journal.onError = (error) => this.#cacheDirFailed(error);
  }

  /**
   * Checks a previous run's entry against its record (its file's size and
   * sha256) and adopts it; resolves to the entry, or to undefined when it
   * did not check out (its file is then removed) or was taken meanwhile.
   */
  async #adopt(recorded: JournalEntry): Promise<CacheEntry | undefined> {
    let checked: { sha256: string; bytes?: Uint8Array } | undefined;
    try {
      // Only a regular file of the recorded size is opened: a FIFO would block the open.
      const stat = Deno.lstatSync(`${this.dir}/${recorded.file}`);
      if (!stat.isFile || stat.size !== recorded.size) throw new Error("not the recorded file");
      checked = await hashFile(
        `${this.dir}/${recorded.file}`,
        recorded.size,
        this.#memoryEntryLimit,
      );
    } catch {
      checked = undefined;
    }
    return await this.#lock.run(async () => {
      if (this.#kept.get(recorded.path) !== recorded) return undefined;
      if (checked?.sha256 !== recorded.sha256) {
        await this.#discardKept(recorded);
        return undefined;
      }
      this.#kept.delete(recorded.path);
      this.#oldBytes -= recorded.size;
      const entry: CacheEntry = { ...recorded, bytes: checked.bytes };
      await this.#insert(entry);
      this.#adopted++;
      return entry;
    });
  }

  /** Removes a previous run's entry that will not be adopted (under the lock). */
  async #discardKept(entry: JournalEntry, counted = true): Promise<void> {
    this.#kept.delete(entry.path);
    this.#journal?.dropped(entry.file);
    await Deno.remove(`${this.dir}/${entry.file}`).catch(() => {});
    if (counted) this.#oldBytes -= entry.size;
  }
}

/** The files of the cache directory that are not entries. */
const OWN_FILES = new Set([CACHE_MARKER, JOURNAL_FILE, `${JOURNAL_FILE}.new`]);
/** Old files handled between two yields to the event loop. */
const HOUSEKEEPING_BATCH = 256;

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

/** The factory `policy` names; a name from outside the type is checked here. */
function policyFactory(policy: PolicyName | PolicyFactory): PolicyFactory {
  if (typeof policy === "function") return policy;
  if (!isPolicyName(policy)) {
    throw new RangeError(`unknown policy "${policy}" (known: ${Object.keys(POLICIES).join(", ")})`);
  }
  return POLICIES[policy];
}
