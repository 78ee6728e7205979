/**
 * A worker thread's view of the one cache (`--workers N`): a replica of the
 * main thread's index, so that a hit is answered on the worker with no
 * round trip to another thread. The main thread owns the cache: it admits,
 * evicts and removes, one change at a time, and sends every change to every
 * worker in the order it happened. A worker asks it for a fill (single
 * flight holds across threads: the owner's fill of a path is the only one),
 * reports hits in batches for the eviction order, and asks for the figures
 * and the listing.
 *
 * A replica can lag the owner by the messages in flight. That is safe: an
 * entry's file is never reused for another version (each admission gets a
 * new name), so a hit on an entry the owner just evicted either opens the
 * file before it was unlinked and reads every byte, or finds it gone and
 * asks again; a copy in memory is the right bytes of the version its
 * validator names, and every request still checks the validator against
 * the origin.
 *
 * @module
 */

import {
  type CacheEntry,
  type CacheFigures,
  type CacheListing,
  type CacheView,
  type FillSource,
  type GrowingFill,
  openCacheFile,
  openGrowingFile,
} from "../cache.ts";
import {
  type Answers,
  type ErrorData,
  errorFromData,
  type FromWorker,
  type Question,
  type WorkerConfig,
} from "./worker_messages.ts";

/** Hits are reported to the owner at least this often... */
const TOUCH_INTERVAL_MS = 100;
/** ...or once this many are waiting. */
const TOUCH_BATCH = 1024;

/** The cache as a worker thread sees it. */
export class CacheReplica implements CacheView {
  /** The most bytes the cache may hold. */
  readonly capacity: number;
  #dir: string;
  #entries = new Map<string, CacheEntry>();
  #fills = new Map<string, Promise<CacheEntry | undefined>>();
  /** The growing file of each fill asked for, by path, and who waits for it, by question. */
  #growing = new Map<string, Promise<GrowingFill | undefined>>();
  #growingAnswers = new Map<number, (growing: GrowingFill | undefined) => void>();
  #questions = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  #nextId = 0;
  #touched: string[] = [];
  #touchTimer: ReturnType<typeof setTimeout> | undefined;
  #reportHits: boolean;
  #post: (message: FromWorker) => void;

  /**
   * A replica of the cache in `config.cacheDir` holding `config.entries`,
   * that sends its messages to the owner through `post`.
   */
  constructor(
    config: Pick<WorkerConfig, "cacheDir" | "capacity" | "entries" | "reportHits">,
    post: (message: FromWorker) => void,
  ) {
    this.#dir = config.cacheDir;
    this.capacity = config.capacity;
    this.#reportHits = config.reportHits;
    this.#post = post;
    for (const entry of config.entries) this.#entries.set(entry.path, entry);
  }

  /** Applies an admission the owner made. */
  admitted(entry: CacheEntry): void {
    this.#entries.set(entry.path, entry);
  }

  /** Applies a removal the owner made (an entry replaced since is kept). */
  dropped(path: string, file: string): void {
    if (this.#entries.get(path)?.file === file) this.#entries.delete(path);
  }

  /**
   * Applies the owner's word that the fill asked for as question `id` has
   * a growing file (before its reply: messages arrive in order).
   */
  growingFill(id: number, growing: GrowingFill): void {
    this.#growingAnswers.get(id)?.(growing);
  }

  /** Settles the question `id` with the owner's reply. */
  replied(id: number, value: unknown, error?: ErrorData): void {
    const question = this.#questions.get(id);
    if (!question) return;
    this.#questions.delete(id);
    if (error) question.reject(errorFromData(error));
    else question.resolve(value);
  }

  /** The entry for `path`, if any. */
  lookup(path: string): CacheEntry | undefined {
    return this.#entries.get(path);
  }

  /** Notes a hit; the owner hears of it with others, soon (unless its policy ignores hits). */
  touch(path: string): void {
    if (!this.#reportHits) return;
    this.#touched.push(path);
    if (this.#touched.length >= TOUCH_BATCH) this.flushTouches();
    else this.#touchTimer ??= setTimeout(() => this.flushTouches(), TOUCH_INTERVAL_MS);
  }

  /** Sends the hits noted so far to the owner. */
  flushTouches(): void {
    clearTimeout(this.#touchTimer);
    this.#touchTimer = undefined;
    if (this.#touched.length === 0) return;
    this.#post({ type: "touch", paths: this.#touched });
    this.#touched = [];
  }

  /** Opens an entry's file; undefined when it was evicted meanwhile. */
  openEntry(entry: CacheEntry): Promise<Deno.FsFile | undefined> {
    return openCacheFile(this.#dir, entry);
  }

  /** Forgets the entry here at once and asks the owner to remove it. */
  remove(path: string, entry?: CacheEntry): Promise<void> {
    const current = this.#entries.get(path);
    if (current && (entry === undefined || current === entry)) this.#entries.delete(path);
    this.#post({ type: "remove", path, file: entry?.file });
    return Promise.resolve();
  }

  /** True while this worker waits for the owner to fill `path`. */
  filling(path: string): boolean {
    return this.#fills.has(path);
  }

  /**
   * Asks the owner to fill `path` from the origin as `source.stat`
   * describes it: the owner reads the origin itself (one fill of a path at
   * a time, across every thread). The entry arrives before the answer; the
   * fill's growing file, when it has one, before both.
   */
  fill(path: string, source: FillSource): Promise<CacheEntry | undefined> {
    const running = this.#fills.get(path);
    if (running) return running;
    const id = ++this.#nextId;
    const growing = Promise.withResolvers<GrowingFill | undefined>();
    this.#growingAnswers.set(id, growing.resolve);
    const fill = this.#ask(id, { ask: "fill", path, stat: source.stat })
      .then((entry) => entry && (this.#entries.get(path) ?? entry))
      .finally(() => {
        growing.resolve(undefined);
        this.#growingAnswers.delete(id);
        this.#growing.delete(path);
        this.#fills.delete(path);
      });
    this.#fills.set(path, fill);
    this.#growing.set(path, growing.promise);
    return fill;
  }

  /** The growing file of this worker's fill of `path` in flight, as the owner tells it. */
  growing(path: string): Promise<GrowingFill | undefined> | undefined {
    return this.#growing.get(path);
  }

  /** Opens a growing fill's file (see `FileCache.openGrowing`). */
  openGrowing(fill: GrowingFill): Promise<Deno.FsFile | undefined> {
    return openGrowingFile(this.#dir, fill);
  }

  /** The owner's figures. */
  figures(): Promise<CacheFigures> {
    return this.ask({ ask: "figures" });
  }

  /** The owner's figures and entries (in its eviction order), taken together. */
  listing(): Promise<CacheListing> {
    return this.ask({ ask: "listing" });
  }

  /** Asks the owner a question and resolves to its answer. */
  ask<Q extends Question>(question: Q): Promise<Answers[Q["ask"]]> {
    return this.#ask(++this.#nextId, question);
  }

  #ask<Q extends Question>(id: number, question: Q): Promise<Answers[Q["ask"]]> {
    return new Promise((resolve, reject) => {
      this.#questions.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.#post({ type: "question", id, question });
    });
  }
}
