/**
 * An origin behind a shield: what the server knows of each file and for how
 * long, so that hits need not ask the origin, and what it does when the
 * origin is slow or down. It wraps any {@linkcode Origin} and is one itself.
 *
 * - **Freshness lifetime** (`maxAgeMs`, or what an S3 object states when
 *   `honourOriginLifetime`): within it, a file's stat is answered from
 *   memory and the origin hears nothing. After it, one revalidation: a
 *   conditional `GET` where the origin has entity tags (a `304` refreshes
 *   the lifetime and moves no bytes; a `200` brings the new bytes, which
 *   the cache fill that follows takes instead of a second `GET`), a stat
 *   otherwise.
 * - **Collapsed revalidation**: one revalidation of a path at a time; every
 *   request for it waits on that one, or, within `staleWhileRevalidateMs`
 *   after the lifetime, gets the stored stat at once while it runs.
 * - **Stale-if-error**: when the origin fails (no answer, 5xx, throttled, or
 *   the breaker is open), a stat within `staleIfErrorMs` after the lifetime
 *   is answered, marked stale; a request with such a fallback waits for the
 *   origin at most `stalePatienceMs`.
 * - **Origin health**: a {@linkcode Breaker}; while it is open, requests
 *   fail at once (or are answered stale) and one probe per interval goes.
 * - **Negative caching**: a 404 is remembered for `negativeMaxAgeMs`.
 * - **A cap on origin requests at once** (`connections`), bodies included.
 *
 * With every option at its default (0) the shield keeps the plain contract:
 * each request asks the origin, nothing is ever stale; only the breaker and
 * the cap act.
 *
 * @module
 */

import { DEFAULTS } from "../defaults.ts";
import { purgeCovers, RequestError } from "../protocol.ts";
import { Breaker, type BreakerFigures } from "./breaker.ts";
import type {
  ByteRange,
  Origin,
  OriginDirPage,
  OriginFile,
  OriginListWindow,
  OriginStat,
  ShieldedStat,
} from "./origin.ts";
import { Semaphore } from "../util/semaphore.ts";

/** What the shield knows of a path, as it answers a worker thread (plain data). */
export interface StatAnswer {
  /** The stat, when the file is there. */
  stat?: ShieldedStat;
  /** The error to answer instead (404, 503, ...): code and message. */
  error?: { code: number; message: string };
  /** Until when (ms since the epoch) the answer may be reused without asking again. */
  freshUntil: number;
}

/** Options of {@linkcode ShieldedOrigin}. */
export interface ShieldOptions {
  /** A file's freshness lifetime, ms (0: every request asks the origin). */
  maxAgeMs?: number;
  /** Use the lifetime an object states (S3 `Cache-Control`/`Expires`) where it states one. */
  honourOriginLifetime?: boolean;
  /** After the lifetime, how long the stored stat is answered at once while it is revalidated. */
  staleWhileRevalidateMs?: number;
  /** After the lifetime, how long the stored stat is answered (stale) when the origin fails. */
  staleIfErrorMs?: number;
  /** How long a 404 is remembered. */
  negativeMaxAgeMs?: number;
  /**
   * The longest a request with a stale fallback waits for the origin before
   * it is answered stale (the revalidation goes on); an origin request not
   * answered by then also counts as a failure for the breaker.
   * @default {DEFAULTS.originPatienceMs}
   */
  stalePatienceMs?: number;
  /** Origin requests at once, bodies being read included (default: no cap). */
  connections?: number;
  /** The longest a request waits for one of the `connections`. */
  connectionWaitMs?: number;
  /**
   * Consecutive failures that open the breaker.
   * @default {DEFAULTS.breakerFailures}
   */
  breakerFailures?: number;
  /**
   * While the breaker is open, ms between probes.
   * @default {DEFAULTS.probeIntervalMs}
   */
  probeIntervalMs?: number;
  /** Where the breaker publishes its state for worker threads. */
  breakerShared?: SharedArrayBuffer;
  /**
   * The largest body a revalidation brings along (a changed file's `200`):
   * the cache's capacity; a larger file is revalidated by a stat.
   */
  carryLimit?: number;
  /** The clock, ms since the epoch. */
  now?: () => number;
}

/** The shield's counters, as `STATS` and the metrics report them. */
export interface ShieldFigures {
  /** Stats answered from memory within their lifetime. */
  fresh: number;
  /** 404s answered from memory. */
  negative: number;
  /** Revalidations sent to the origin (conditional or stat). */
  revalidations: number;
  /** Conditional requests answered `304 Not Modified`. */
  notModified: number;
  /** Stale stats answered while a revalidation ran (stale-while-revalidate). */
  staleWhileRevalidate: number;
  /** Stale stats answered because the origin failed (stale-if-error). */
  staleIfError: number;
  /** Changed bodies carried by a revalidation to the fill that took them. */
  carried: number;
  /** Origin requests in flight now. */
  inFlight: number;
  /** The breaker. */
  breaker: BreakerFigures;
}

/** The shield's counters before anything happened. */
function zeroCounts() {
  return {
    fresh: 0,
    negative: 0,
    revalidations: 0,
    notModified: 0,
    staleWhileRevalidate: 0,
    staleIfError: 0,
    carried: 0,
  };
}

/** The figures of an origin that nothing has been asked of (or of no shield). */
export function idleShieldFigures(): ShieldFigures {
  return {
    ...zeroCounts(),
    inFlight: 0,
    breaker: {
      state: "closed",
      consecutiveFailures: 0,
      opened: 0,
      closed: 0,
      refused: 0,
      probes: 0,
    },
  };
}

/** What the shield remembers of one path. */
interface Known {
  /** The file's stat; absent for a remembered 404. */
  stat?: OriginStat;
  /** The 404's message, for a remembered one. */
  missing?: string;
  /** When the origin last answered for it. */
  checkedAt: number;
  /** For how long after that it is fresh. */
  lifetimeMs: number;
}

/** Paths remembered at most; the oldest is forgotten first. */
const MAX_KNOWN = 100_000;
/** How long a carried body waits for its fill before it is dropped. */
const CARRY_MS = 5_000;

/** An origin behind the shield. */
export class ShieldedOrigin implements Origin {
  /** The origin shielded. */
  readonly inner: Origin;
  /** The breaker: the origin's health. */
  readonly breaker: Breaker;
  #options: ShieldOptions;
  #now: () => number;
  #known = new Map<string, Known>();
  /** Directories whose listing was a 404, until when (negative caching). */
  #unlisted = new Map<string, number>();
  #revalidating = new Map<string, Promise<Known>>();
  #carried = new Map<string, { file: OriginFile; timer: ReturnType<typeof setTimeout> }>();
  /** Bumped by every purge: a revalidation that started before one is not remembered. */
  #epoch = 0;
  /** The last check sent to the origin: what the breaker's background probe asks again. */
  #lastAsked?: { path: string; stale: Known | undefined };
  #probeTimer?: ReturnType<typeof setTimeout>;
  #connections?: Semaphore;
  #inFlight = 0;
  #counts = zeroCounts();

  /** Shields `inner` as `options` say. */
  constructor(inner: Origin, options: ShieldOptions = {}) {
    this.inner = inner;
    this.#options = { ...options, maxAgeMs: options.maxAgeMs ?? DEFAULTS.maxAgeMs };
    this.#now = options.now ?? Date.now;
    this.breaker = new Breaker({
      failures: options.breakerFailures ?? DEFAULTS.breakerFailures,
      probeIntervalMs: options.probeIntervalMs ?? DEFAULTS.probeIntervalMs,
      now: this.#now,
      shared: options.breakerShared,
    });
    // While the breaker is open, one probe per interval goes even when no
    // request comes to carry it: recovery must not wait for traffic that
    // worker threads may be answering from what they keep.
    this.breaker.onOpen(() => this.#scheduleProbe());
    const connections = options.connections ?? Infinity;
    if (Number.isFinite(connections)) this.#connections = new Semaphore(connections);
    const lifetimes = this.#options.maxAgeMs! > 0 || (options.negativeMaxAgeMs ?? 0) > 0 ||
      options.honourOriginLifetime === true;
    if (inner.statNow) {
      this.statNow = inner.freshness === "watch" || !lifetimes
        ? (path) => inner.statNow!(path)
        : (path) => this.#statNowWithin(path);
    }
  }

  /** As the origin shielded: a watched directory needs no lifetime. */
  get freshness(): "watch" | "stat" | undefined {
    return this.inner.freshness;
  }

  /**
   * Where the origin can answer at once (a local directory), it does: a
   * watched one unshielded (its stat is exact), another within the
   * lifetimes (a stat per lifetime, not per hit).
   */
  statNow?: (path: string) => ShieldedStat;

  async stat(path: string): Promise<ShieldedStat> {
    // A watched directory reports every change: its stat is exact and costs
    // nothing, so there is nothing to shield.
    if (this.inner.freshness === "watch") return await this.inner.stat(path);
    const answer = await this.lookup(path);
    if (answer.error) throw new RequestError(answer.error.code as 404, answer.error.message);
    return answer.stat!;
  }

  /**
   * What a stat of `path` answers, as data: for {@linkcode stat}, and for
   * worker threads, which reuse it until `freshUntil` without asking.
   */
  async lookup(path: string): Promise<StatAnswer> {
    const now = this.#now();
    const known = this.#known.get(path);
    const age = known ? now - known.checkedAt : Infinity;
    if (known && age < known.lifetimeMs) {
      if (known.missing) this.#counts.negative++;
      else this.#counts.fresh++;
      return fromMemory(answerOf(known, age, false, known.checkedAt + known.lifetimeMs));
    }
    const stale = known?.stat ? known : undefined;
    // An object that forbids stale answers (`no-cache`, `must-revalidate`)
    // is revalidated like any other, but never served past its lifetime.
    const servable = stale && !(this.#options.honourOriginLifetime && stale.stat!.noStale);
    const overdue = servable ? age - stale.lifetimeMs : Infinity;
    const revalidation = this.#revalidate(path, stale);
    if (overdue < (this.#options.staleWhileRevalidateMs ?? 0)) {
      revalidation.catch(() => {}); // it reports its own failure to the breaker
      this.#counts.staleWhileRevalidate++;
      return fromMemory(answerOf(stale!, age, true, now));
    }
    const fallback = overdue < (this.#options.staleIfErrorMs ?? 0) ? stale : undefined;
    if (this.breaker.state !== "closed") {
      // The origin is failing: this request was refused at once, or carries
      // the one probe. Nobody waits for a probe: it answers the next ones.
      revalidation.catch(() => {});
      if (fallback) {
        this.#counts.staleIfError++;
        return fromMemory(answerOf(fallback, age, true, now));
      }
      return { error: { code: 503, message: this.#refusal().message }, freshUntil: 0 };
    }
    try {
      const fresh = fallback
        ? await withPatience(
          revalidation,
          this.#options.stalePatienceMs ?? DEFAULTS.originPatienceMs,
        )
        : await revalidation;
      const ageNow = this.#now() - fresh.checkedAt;
      return answerOf(fresh, ageNow, false, fresh.checkedAt + fresh.lifetimeMs);
    } catch (error) {
      if (fallback && (error === IMPATIENT || isOriginFailure(error))) {
        this.#counts.staleIfError++;
        return fromMemory(answerOf(fallback, this.#now() - fallback.checkedAt, true, this.#now()));
      }
      if (error instanceof RequestError) {
        return { error: { code: error.code, message: error.message }, freshUntil: 0 };
      }
      throw error;
    }
  }

  /** {@linkcode statNow} within the lifetimes: a local stat, remembered. */
  #statNowWithin(path: string): ShieldedStat {
    const now = this.#now();
    const known = this.#known.get(path);
    if (known && now - known.checkedAt < known.lifetimeMs) {
      if (known.missing) {
        this.#counts.negative++;
        throw new RequestError(404, known.missing);
      }
      this.#counts.fresh++;
      return { ...known.stat!, ageMs: now - known.checkedAt, fromMemory: true };
    }
    this.#counts.revalidations++;
    try {
      const stat = this.inner.statNow!(path);
      this.#remember(path, { stat, checkedAt: now, lifetimeMs: this.#lifetimeOf(stat) });
      return { ...stat, ageMs: 0 };
    } catch (error) {
      if (error instanceof RequestError && error.code === 404) this.#gone(path, error);
      throw error;
    }
  }

  async open(path: string, range?: ByteRange): Promise<OriginFile> {
    if (!range) {
      const carried = this.#carried.get(path);
      if (carried) {
        this.#carried.delete(path);
        clearTimeout(carried.timer);
        this.#counts.carried++;
        return carried.file;
      }
    }
    return await this.#ask(() => this.inner.open(path, range), "body");
  }

  async list(path: string, window: OriginListWindow): Promise<OriginDirPage> {
    const missingUntil = this.#unlisted.get(path);
    if (missingUntil !== undefined && this.#now() < missingUntil) {
      this.#counts.negative++;
      throw new RequestError(404, `not found: ${path}`);
    }
    try {
      return await this.#ask(() => this.inner.list(path, window), "untimed");
    } catch (error) {
      const lifetimeMs = this.#options.negativeMaxAgeMs ?? 0;
      if (error instanceof RequestError && error.code === 404 && lifetimeMs > 0) {
        this.#unlisted.delete(path);
        this.#unlisted.set(path, this.#now() + lifetimeMs);
        if (this.#unlisted.size > MAX_KNOWN) {
          this.#unlisted.delete(this.#unlisted.keys().next().value!);
        }
      }
      throw error;
    }
  }

  /**
   * Forgets what is known of `path` (or of every path under it, with
   * `prefix`): the next request asks the origin (a purge).
   */
  forget(path: string, prefix = false): void {
    this.#epoch++; // revalidations in flight answer their waiters, but are not remembered
    const matches = (key: string) => purgeCovers(key, path, prefix);
    for (const memory of [this.#known, this.#unlisted, this.#revalidating]) {
      for (const key of memory.keys()) if (matches(key)) memory.delete(key);
    }
    for (const [key, { file, timer }] of this.#carried) {
      if (!matches(key)) continue;
      clearTimeout(timer);
      file.close();
      this.#carried.delete(key);
    }
  }

  /** The counters. */
  figures(): ShieldFigures {
    return { ...this.#counts, inFlight: this.#inFlight, breaker: this.breaker.figures() };
  }

  /** Ms until the origin is asked again, when the breaker keeps it from being asked now. */
  get retryAfterMs(): number {
    return this.breaker.retryAfterMs;
  }

  #scheduleProbe(): void {
    clearTimeout(this.#probeTimer);
    const interval = this.#options.probeIntervalMs ?? DEFAULTS.probeIntervalMs;
    this.#probeTimer = setTimeout(() => {
      const asked = this.#lastAsked;
      if (this.breaker.state === "closed" || !asked) return;
      // Allowed as the probe when due; refused (and then rescheduled by
      // the next opening) when a request's probe is already out.
      this.#revalidate(asked.path, asked.stale).catch(() => {});
      if (this.breaker.state === "open") this.#scheduleProbe();
    }, interval + 1);
    Deno.unrefTimer(this.#probeTimer);
  }

  /** Drops the bodies no fill took (at shutdown). */
  close(): void {
    clearTimeout(this.#probeTimer);
    for (const [path, { file, timer }] of this.#carried) {
      clearTimeout(timer);
      file.close();
      this.#carried.delete(path);
    }
  }

  /** The one revalidation of `path` in flight, started if there is none. */
  #revalidate(path: string, stale: Known | undefined): Promise<Known> {
    let revalidation = this.#revalidating.get(path);
    if (!revalidation) {
      const started = this.#check(path, stale).finally(() => {
        if (this.#revalidating.get(path) === started) this.#revalidating.delete(path);
      });
      revalidation = started;
      this.#revalidating.set(path, revalidation);
    }
    return revalidation;
  }

  /** Asks the origin about `path`, and remembers the answer. */
  async #check(path: string, stale: Known | undefined): Promise<Known> {
    this.#counts.revalidations++;
    this.#lastAsked = { path, stale };
    const epoch = this.#epoch;
    const etag = stale?.stat?.etag;
    let stat: OriginStat;
    try {
      if (
        etag && this.inner.openIfChanged && stale!.stat!.size <= (this.#options.carryLimit ?? 0)
      ) {
        // A changed file's body holds its origin connection until the fill
        // reads it (or the carry expires).
        const changed = await this.#ask(() => this.inner.openIfChanged!(path, etag), "body");
        if (!changed || changed.stat.validator === stale!.stat!.validator) {
          changed?.close(); // a store that ignored the condition: the same bytes again
          this.#counts.notModified++;
          stat = stale!.stat!;
        } else {
          stat = changed.stat;
          if (epoch === this.#epoch) this.#carry(path, changed);
          else changed.close();
        }
      } else {
        stat = await this.#ask(() => this.inner.stat(path), "timed");
      }
    } catch (error) {
      if (error instanceof RequestError && error.code === 404 && epoch === this.#epoch) {
        this.#gone(path, error);
      }
      throw error;
    }
    const known = { stat, checkedAt: this.#now(), lifetimeMs: this.#lifetimeOf(stat) };
    // A purge while it ran: its answer may predate what the purge was for.
    if (epoch === this.#epoch) this.#remember(path, known);
    return known;
  }

  /** The origin said `path` is not there: remembered for the negative lifetime, or forgotten. */
  #gone(path: string, error: RequestError): void {
    const lifetimeMs = this.#options.negativeMaxAgeMs ?? 0;
    if (lifetimeMs > 0) {
      this.#remember(path, { missing: error.message, checkedAt: this.#now(), lifetimeMs });
    } else {
      this.#known.delete(path);
    }
  }

  #lifetimeOf(stat: OriginStat): number {
    if (this.#options.honourOriginLifetime && stat.lifetimeMs !== undefined) return stat.lifetimeMs;
    return this.#options.maxAgeMs!;
  }

  #remember(path: string, known: Known): void {
    this.#known.delete(path); // re-inserted last: the map's order is the age of the knowledge
    this.#known.set(path, known);
    if (this.#known.size > MAX_KNOWN) this.#known.delete(this.#known.keys().next().value!);
  }

  /** Keeps a changed file's body for the fill that follows, for a while. */
  #carry(path: string, file: OriginFile): void {
    const previous = this.#carried.get(path);
    if (previous) {
      clearTimeout(previous.timer);
      previous.file.close();
    }
    const timer = setTimeout(() => {
      if (this.#carried.get(path)?.file !== file) return;
      this.#carried.delete(path);
      file.close();
    }, CARRY_MS);
    Deno.unrefTimer(timer);
    this.#carried.set(path, { file, timer });
  }

  /**
   * One origin request: refused at once while the breaker is open, held to
   * the cap on requests at once (a body's permit is given back when it is
   * closed), and its outcome reported to the breaker.
   */
  async #ask<T>(request: () => Promise<T>, kind: "timed" | "untimed" | "body"): Promise<T> {
    const body = kind === "body";
    if (!this.breaker.allow()) throw this.#refusal();
    let release = () => {};
    try {
      release = await this.#connection();
    } catch (error) {
      this.breaker.abandon(); // the origin was not asked: nothing learnt of it
      throw error;
    }
    this.#inFlight++;
    let held = true;
    const done = () => {
      if (!held) return;
      held = false;
      this.#inFlight--;
      release();
    };
    // An origin that does not start answering within the patience is
    // failing, as far as its health goes: counted now, not after its own
    // timeout (and retries), so that a hung origin opens the breaker in
    // seconds. When the breaker opens, every request still waiting on the
    // origin stops waiting (a 503, or its stale copy); its call goes on.
    // Only a check of a file is timed (a stat, a conditional GET's head): a
    // listing of many entries or a local open may rightly take longer.
    let slow = false;
    const slowTimer = kind === "untimed" ? undefined : setTimeout(() => {
      slow = true;
      this.breaker.failure();
    }, this.#options.stalePatienceMs ?? DEFAULTS.originPatienceMs);
    const gaveUp = Promise.withResolvers<never>();
    const abandoned = new RequestError(503, "origin unavailable: it stopped answering");
    const stopListening = this.breaker.onOpen(() => gaveUp.reject(abandoned));
    const call = request();
    const settle = (outcome: "answered" | "failed") => {
      clearTimeout(slowTimer);
      stopListening();
      if (outcome === "answered") this.breaker.success();
      else if (outcome === "failed" && !slow) this.breaker.failure();
    };
    try {
      const result = await Promise.race([call, gaveUp.promise]);
      settle("answered");
      // A body (a conditional GET's may be none: 304) holds its connection until closed.
      if (body && result) return holdUntilClosed(result as unknown as OriginFile, done) as T;
      done();
      return result;
    } catch (error) {
      if (error === abandoned) {
        // Given up on: the call still holds its connection until it ends.
        stopListening();
        call.then((late) => {
          settle("answered");
          if (body) (late as OriginFile | undefined)?.close();
          done();
        }, (failure) => {
          settle(isOriginFailure(failure) ? "failed" : "answered");
          done();
        });
        throw error;
      }
      settle(isOriginFailure(error) ? "failed" : "answered");
      done();
      throw error;
    }
  }

  /** The answer to a request kept from the origin while the breaker is open. */
  #refusal(): RequestError {
    const seconds = Math.ceil(this.breaker.retryAfterMs / 1000);
    return new RequestError(
      503,
      `origin unavailable: not asked while it is failing (next try in ${seconds} s)`,
    );
  }

  /** One of the capped origin requests, within the wait allowed. */
  async #connection(): Promise<() => void> {
    if (!this.#connections) return () => {};
    const acquiring = this.#connections.acquire(1);
    const waitMs = this.#options.connectionWaitMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        acquiring.then((release) => release()); // taken late: given back at once
        reject(
          new RequestError(503, `origin busy: every origin connection in use for ${waitMs} ms`),
        );
      }, waitMs);
    });
    try {
      return await Promise.race([acquiring, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A file whose `close` also runs `done` (once). */
function holdUntilClosed(file: OriginFile, done: () => void): OriginFile {
  return {
    stat: file.stat,
    read: (into) => file.read(into),
    restat: () => file.restat(),
    close: () => {
      done();
      file.close();
    },
  };
}

/**
 * True for a failure of the origin itself (no answer, 5xx, throttled: the
 * origins answer those `503`), as opposed to an answer about the file.
 */
export function isOriginFailure(error: unknown): boolean {
  return error instanceof RequestError && error.code === 503;
}

/** The rejection of a wait that ran out of patience (see `withPatience`). */
const IMPATIENT = new Error("the origin took longer than the patience allowed");

/** `promise`, or a rejection with {@linkcode IMPATIENT} after `ms`. */
function withPatience<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<never>((_, reject) => timer = setTimeout(() => reject(IMPATIENT), ms));
  promise.catch(() => {}); // a revalidation that fails after the patience ran out is not unhandled
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

function answerOf(known: Known, ageMs: number, stale: boolean, freshUntil: number): StatAnswer {
  if (known.missing) {
    return { error: { code: 404, message: known.missing }, freshUntil };
  }
  const stat: ShieldedStat = { ...known.stat!, ageMs: Math.max(0, ageMs) };
  if (stale) stat.stale = true;
  return { stat, freshUntil };
}

/** `answer`'s stat marked as answered from memory (see `ShieldedStat.fromMemory`). */
function fromMemory(answer: StatAnswer): StatAnswer {
  if (answer.stat) answer.stat.fromMemory = true;
  return answer;
}
