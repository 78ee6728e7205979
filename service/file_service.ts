/**
 * What the server does for a request, whatever protocol it came in on: the
 * cache lookup, admission and eviction, the origin reads, the counters and
 * the error answers. The TCP protocol (`tcp/tcp_protocol.ts`) and HTTP
 * (`http/http_protocol.ts`) are two ways of speaking to one service, so both share one
 * cache and one set of counters.
 *
 * @module
 */

import { closeQuietly } from "../util/byte_reader.ts";
import type { CacheEntry, CacheFigures, CacheView, FillSource, GrowingFill } from "../cache.ts";
import { FILL_FAILED, FillProgress } from "../util/fill_progress.ts";
import { firstBytes, GrowingSource } from "./growing_source.ts";
import { RecentDigests } from "./recent_digests.ts";
import { Histogram, type MetricsSnapshot, type RequestCounts } from "./metrics.ts";
import {
  type CacheOutcome,
  type ProtocolName,
  type RequestRecord,
  sumCounters,
  type ThreadCounters,
  zeroCounts,
} from "./counters.ts";
import {
  type ByteSource,
  type Origin,
  OriginChangedError,
  type OriginDirEntry,
  type OriginStat,
  type ShieldedStat,
} from "../origin/origin.ts";
import {
  type ErrorCode,
  FILES_PAGE_LIMIT,
  type ListingWindow,
  purgeCovers,
  RequestError,
} from "../protocol.ts";
import { Semaphore } from "../util/semaphore.ts";
import { DEFAULTS } from "../defaults.ts";
import { idleShieldFigures, ShieldedOrigin, type ShieldFigures } from "../origin/shield.ts";
import { VERSION } from "../version.ts";

export type { CacheOutcome, ProtocolName, RequestRecord } from "./counters.ts";
/** The counters `STATS` reports. */
export interface ServerStats {
  /** The server's version. */
  version: string;
  /** Milliseconds since the server started. */
  uptimeMs: number;
  /** TCP protocol connections. */
  connections: { open: number; total: number; rejected: number };
  /** Requests over both protocols. */
  requests: number;
  /** `GET`s served from the cache. */
  hits: number;
  /** `GET`s read from the origin and admitted to the cache. */
  misses: number;
  /** `GET`s read from the origin and not admitted (too big, refused, or failed to store). */
  bypasses: number;
  /** Entries evicted to make room. */
  evictions: number;
  /** Bytes sent to clients, over both protocols. */
  bytesSent: number;
  /** Bytes read from the origin. */
  bytesFromOrigin: number;
  /** Responses dropped because the client stopped taking bytes. */
  sendTimeouts: number;
  /** Error answers sent, by code. */
  errors: Record<string, number>;
  /**
   * Requests answered, by protocol; for HTTP also the open connections and
   * the responses in progress (`active`).
   */
  protocols: {
    tcp: { requests: number };
    http: { requests: number; connections: number; active: number };
  };
  /** The cache's figures (see `CacheFigures`), without its evictions (counted above). */
  cache: Omit<CacheFigures, "evictions">;
  /** How a file's freshness is checked (see `Origin.freshness`). */
  freshness: "watch" | "stat";
  /** The origin's shield: lifetimes, stale answers, health (see {@linkcode OriginFigures}). */
  origin: OriginFigures;
  /**
   * Requests received by each thread that serves (`--workers`), the main
   * thread first: how evenly the kernel spreads the connections.
   */
  threads: number[];
  /** TLS, the allow list and the tokens: what is on, and what they refused. */
  access: AccessFigures;
}

/** What is on of TLS, the allow list and tokens (`ServerStats.access`). */
export interface AccessSettings {
  /** Whether both protocols are served over TLS (1.2 or 1.3). */
  tls: boolean;
  /** The networks that may connect; null when everyone may. */
  allow: string[] | null;
  /** How many tokens are in force (0: no token needed). */
  tokens: number;
  /** How many of them have the admin scope. */
  adminTokens: number;
}

/** {@linkcode AccessSettings} and the counts of what they did. */
export interface AccessFigures extends AccessSettings {
  /** Connections closed at accept: their address is not on the allow list. */
  denied: number;
  /** TLS handshakes completed. */
  tlsHandshakes: number;
  /** TLS handshakes that failed or did not finish within the idle timeout. */
  tlsHandshakeFailures: number;
  /** Wrong tokens presented. */
  authFailures: number;
  /** Token attempts refused unchecked, their address having no failures left (429). */
  authLimited: number;
}

/** The counts of TLS and the access gate (see `ThreadCounters`). */
export type AccessCount =
  | "deniedConnections"
  | "tlsHandshakes"
  | "tlsHandshakeFailures"
  | "authFailures"
  | "authLimited";

/**
 * What the shield in front of the origin did (origin/shield.ts), for the
 * whole server: `fresh` stats answered from memory, `stale` answers sent,
 * and the owner's revalidations, `304`s, negative answers and breaker.
 */
export interface OriginFigures extends Omit<ShieldFigures, "fresh"> {
  /** Origin stats answered from memory within their lifetime, on every thread. */
  fresh: number;
  /** `GET`s answered with a version past its lifetime, on every thread. */
  stale: number;
}

/** The whole server's {@linkcode OriginFigures}: every thread's counts and the owner's shield. */
function originFigures(counters: ThreadCounters, shield: ShieldFigures | undefined): OriginFigures {
  return {
    ...(shield ?? idleShieldFigures()),
    fresh: counters.freshAnswers,
    stale: counters.staleAnswers,
  };
}

/** The cache's figures as `STATS.cache` gives them: evictions are a top-level counter. */
function withoutEvictions(figures: CacheFigures): Omit<CacheFigures, "evictions"> {
  const { evictions: _, ...rest } = figures;
  return rest;
}

/** A `GET` resolved to its bytes, ready to send. */
export interface Served {
  path: string;
  outcome: CacheOutcome;
  /** The whole file's size. */
  size: number;
  mtime: number;
  /** The origin's validator of this version (see `OriginStat.validator`). */
  validator: string;
  /** Hex sha256 of the whole file, when the cache knows it (hits and misses). */
  sha256?: string;
  /**
   * A whole-file miss sent while it is copied in (from
   * {@linkcode STREAMED_MISS_FROM} bytes): its sha256 is not known yet, so
   * the answer cannot carry it; the body's last bytes are held until it is,
   * and `STAT` answers it after (docs/PROTOCOL.md).
   */
  streamed?: boolean;
  /** The first byte sent. */
  offset: number;
  /** The bytes sent. */
  length: number;
  /** The cache entry served (hits and misses). */
  entry?: CacheEntry;
  /** The bytes themselves, when served from memory. */
  bytes?: Uint8Array;
  /** Otherwise, where to read them: positioned at `offset`. */
  source?: ByteSource;
  /**
   * For bytes read from the origin (a bypass): throws when the file changed
   * while it was read. Called once every byte is read and before the last
   * of them is sent, so that a changed file ends in a short body, never in
   * a whole one that mixes versions.
   */
  checkUnchanged?: () => Promise<void>;
  /**
   * True when the origin has not confirmed this version within its
   * freshness lifetime (`--stale-while-revalidate`, `--stale-if-error`).
   */
  stale?: boolean;
  /** Milliseconds since the origin last confirmed this version, where that is known. */
  ageMs?: number;
  /** Closes the source and gives back its file permit; safe to call twice. */
  release(): void;
}

/** A part of a file to send: from `offset` (0), `length` bytes (to the end). */
export interface RangeRequest {
  offset?: number;
  length?: number;
}

/** Raised when a body could not be completed after its header was sent. */
export class TruncatedBodyError extends Error {}

/** The limits the TCP server and the HTTP front end both keep. */
export interface Limits {
  /** Connections at once (TCP and HTTP counted apart); past it, 503. */
  maxConnections: number;
  /**
   * Connections at once from one address, per listener and thread (the
   * server's limit split between its threads); past it, 503.
   */
  maxConnectionsPerAddress: number;
  /** Milliseconds a client has to send a request. */
  idleTimeoutMs: number;
  /** Milliseconds a client may go without taking a byte of a response. */
  sendTimeoutMs: number;
  /** Where problems are reported, one line each. */
  onError: (message: string) => void;
  /** Hears of every answered request. */
  onRequest?: (record: RequestRecord) => void;
}

/**
 * How often to look for clients that stopped taking bytes (or requests that
 * ran out of time): a quarter of the shortest timeout, between 10 ms and 1 s.
 */
export function sweepInterval(shortestTimeoutMs: number): number {
  return Math.max(10, Math.min(1000, shortestTimeoutMs / 4));
}

/** Options of {@linkcode FileService}. */
export interface ServiceOptions {
  /** Files (origin and cache) open at once; a cache fill holds two. */
  maxOpenFiles: number;
  /** Where problems are reported, one line each. */
  onError: (message: string) => void;
  /** Reports failures with their stack traces. */
  debug: boolean;
  /**
   * Bytes of large buffers this thread may hand out at once (see
   * {@linkcode LARGE_CHUNK_BUDGET}): with worker threads, each gets its share.
   * @default {LARGE_CHUNK_BUDGET}
   */
  largeChunkBudget?: number;
  /**
   * Pages of directory listings read from the origin at once (a page of
   * 10,000 entries of a big directory takes a few hundred ms); more wait
   * their turn.
   * @default {DEFAULTS.maxListings}
   */
  maxListings?: number;
}

/** The `FILES` answer: one page of a directory's listing. */
export interface FilesAnswer {
  /** The directory, as asked ("" for the served directory). */
  path: string;
  /** The page's entries, in byte order of their names. */
  entries: OriginDirEntry[];
  /** Present when more entries follow: the `after` of the next page. */
  next?: string;
}

/**
 * A cache entry as served (one object per request, the path of every hit):
 * its bytes or source are filled in by the caller.
 */
function servedEntry(
  entry: CacheEntry,
  outcome: "hit" | "miss",
  range: { offset: number; length: number },
): Served {
  return {
    path: entry.path,
    outcome,
    size: entry.size,
    mtime: entry.mtime,
    validator: entry.validator,
    sha256: entry.sha256,
    entry,
    offset: range.offset,
    length: range.length,
    release: NOTHING_TO_RELEASE,
  };
}

/**
 * A cache file read on this thread, synchronously, as nginx reads files in
 * its event loop: the cache directory is local and its files were written
 * moments ago, so a read is a copy from the page cache, and an asynchronous
 * read would add a hand-off to Deno's blocking pool and back per chunk
 * (about a third of a 1 MiB hit's CPU). Origin files, which may sit on a
 * slow mount, are still read asynchronously.
 */
function readsHere(file: Deno.FsFile): ByteSource {
  return {
    read: (into) => {
      try {
        return Promise.resolve(file.readSync(into));
      } catch (error) {
        return Promise.reject(error);
      }
    },
    close: () => file.close(),
  };
}

/** The `release` of a body in memory: it holds no file and no permit. */
const NOTHING_TO_RELEASE = () => {};
/** How many times a request retries after losing a race with eviction. */
const LOOKUP_ATTEMPTS = 3;
/**
 * Chunk sizes for streaming bodies and filling the cache: big chunks make
 * fewer system calls on a big file; small ones keep memory low when hundreds
 * of connections each fetch a file of a few MiB. Each transfer holds two.
 */
export const CHUNK_SIZES = { small: 64 * 1024, large: 256 * 1024 } as const;
/**
 * The largest answer (head and body) read whole into one buffer and written
 * with one call: a 1 MiB file and its head. Measured on loopback (`wrk -c16`,
 * 1 MiB files): one 1 MiB write costs ~250 µs less server CPU than four of
 * 256 KiB, and one read ~30 µs less than four. Whole-answer buffers come out
 * of the large buffers' budget ({@linkcode LARGE_CHUNK_BUDGET}).
 */
export const WHOLE_ANSWER = 1024 * 1024 + 16 * 1024;
/** The pooled buffers' sizes. */
const BUFFER_SIZES = { ...CHUNK_SIZES, whole: WHOLE_ANSWER } as const;
/** Spare buffers kept of each size: 2 MiB, 8 MiB and 8.5 MiB at most. */
const SPARE_BUFFERS = { small: 32, large: 32, whole: 16 } as const;
/** Bodies from this size on are moved in large chunks. */
export const LARGE_BODY = 8 * 1024 * 1024;
/**
 * Smaller bodies (past one small chunk) are moved in large chunks too while
 * the large buffers handed out stay within this: a 1 MiB body then takes 4
 * reads and 4 writes instead of 16 of each, and when hundreds of connections
 * fetch such files at once, the rest fall back to small chunks.
 */
export const LARGE_CHUNK_BUDGET = 16 * 1024 * 1024;
/** How many recent requests the status page can show. */
const RECENT_REQUESTS = 50;
/**
 * Whole-file misses from this size on are sent while they are copied in
 * (`streamed=1`), instead of once the copy is done. A smaller file is copied
 * in a few milliseconds from a local disk and then goes out in one or a few
 * writes with its sha256 in the header; from here on the wait for the copy
 * grows with the file (20 s for 5 GiB), and the client's extra `STAT` is
 * nothing beside it.
 */
export const STREAMED_MISS_FROM = LARGE_BODY;
/** How many streamed misses' digests each thread remembers for `STAT` (see service/recent_digests.ts). */
const RECENT_DIGESTS = 1024;

/** What a fill that found another fill of its path in flight resolves to. */
const JOIN_FILL = Symbol("join the fill in flight");

/** The cache, the origin and the counters, shared by every protocol. */
export class FileService {
  /** The cache served from. */
  readonly cache: CacheView;
  /** The origin behind it. */
  readonly origin: Origin;
  /** TCP connection counters, kept by the TCP server. */
  readonly connections = { open: 0, total: 0, rejected: 0 };
  /** HTTP responses in progress, kept by the HTTP front end. */
  httpActive = 0;
  /** Open HTTP connections, as the HTTP front end counts them. */
  httpConnections: () => number = () => 0;
  #options: ServiceOptions;
  #started = Date.now();
  #files: Semaphore;
  #listings: Semaphore;
  #counts = zeroCounts();
  #errors: Record<string, number> = {};
  #byProtocol: Record<ProtocolName, RequestCounts> = { tcp: {}, http: {} };
  #durations: Record<ProtocolName, Histogram> = { tcp: new Histogram(), http: new Histogram() };
  #recent: RequestRecord[] = [];
  #buffers = { small: [] as Uint8Array[], large: [] as Uint8Array[], whole: [] as Uint8Array[] };
  /** Bytes of large buffers handed out (see {@linkcode LARGE_CHUNK_BUDGET}). */
  #largeOut = 0;
  #largeChunkBudget: number;
  #recentDigests = new RecentDigests(RECENT_DIGESTS);

  /**
   * The counters of every thread that serves, this one's included: with
   * `--workers`, the worker pool gathers them (`server/worker_pool.ts`).
   */
  threads: () => Promise<ThreadCounters[]> = () => Promise.resolve([this.counters()]);

  /**
   * The origin's shield as the thread that owns it sees it (origin/shield.ts):
   * with `--workers`, a worker asks the main thread.
   */
  originFigures: () => Promise<ShieldFigures | undefined> = () =>
    Promise.resolve(this.origin instanceof ShieldedOrigin ? this.origin.figures() : undefined);

  constructor(cache: CacheView, origin: Origin, options: ServiceOptions) {
    this.cache = cache;
    this.origin = origin;
    this.#options = options;
    this.#files = new Semaphore(options.maxOpenFiles);
    this.#listings = new Semaphore(options.maxListings ?? DEFAULTS.maxListings);
    this.#largeChunkBudget = options.largeChunkBudget ?? LARGE_CHUNK_BUDGET;
  }

  /** Counts a request as it arrives. */
  countRequest(): void {
    this.#counts.requests++;
  }

  /** Counts bytes handed to a client. */
  countSent(bytes: number): void {
    this.#counts.bytesSent += bytes;
  }

  /** What is on of TLS, the allow list and tokens, for `STATS` (set by the server). */
  accessSettings: () => AccessSettings = () => ({
    tls: false,
    allow: null,
    tokens: 0,
    adminTokens: 0,
  });

  /** Counts an event of TLS or of the access gate. */
  countAccess(count: AccessCount): void {
    this.#counts[count]++;
  }

  /** Counts a response dropped because its client stopped reading. */
  countSendTimeout(): void {
    this.#counts.sendTimeouts++;
  }

  /** Counts an error answer. */
  countError(code: ErrorCode | number): void {
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
  }

  /**
   * Records an answered request for the metrics and, unless `recent` is
   * false (the status page's own polling), for the recent requests.
   */
  record(record: RequestRecord, options: { recent?: boolean } = {}): void {
    const failed = typeof record.status === "number" && record.status >= 400;
    const outcome = record.cache ?? (failed ? String(record.status) : "ok");
    const counts = this.#byProtocol[record.protocol];
    counts[outcome] = (counts[outcome] ?? 0) + 1;
    this.#durations[record.protocol].observe(record.ms / 1000);
    if (options.recent === false) return;
    this.#recent.push(record);
    if (this.#recent.length > RECENT_REQUESTS) this.#recent.shift();
  }

  /** This thread's counters, as plain data. */
  counters(): ThreadCounters {
    const histogram = ({ counts, count, sum }: Histogram) => ({ counts: [...counts], count, sum });
    return {
      ...this.#counts,
      errors: { ...this.#errors },
      byProtocol: { tcp: { ...this.#byProtocol.tcp }, http: { ...this.#byProtocol.http } },
      durations: {
        tcp: histogram(this.#durations.tcp),
        http: histogram(this.#durations.http),
      },
      connections: { ...this.connections },
      http: { connections: this.httpConnections(), active: this.httpActive },
      recent: [...this.#recent],
    };
  }

  /** The whole server's most recent requests, oldest first. */
  async recent(): Promise<RequestRecord[]> {
    return (await this.#serverCounters()).recent;
  }

  /** The whole server's counters in the shape `/-/metrics` reports them. */
  async metrics(): Promise<MetricsSnapshot> {
    const [counters, cache, shield] = await Promise.all([
      this.#serverCounters(),
      this.cache.figures(),
      this.originFigures(),
    ]);
    const origin = originFigures(counters, shield);
    return {
      requests: counters.byProtocol,
      durations: counters.durations,
      hits: counters.hits,
      misses: counters.misses,
      bypasses: counters.bypasses,
      evictions: cache.evictions,
      bytesSent: counters.bytesSent,
      bytesFromOrigin: counters.bytesFromOrigin,
      sendTimeouts: counters.sendTimeouts,
      cacheUsed: cache.used,
      cacheCapacity: cache.capacity,
      cacheEntries: cache.entries,
      memoryUsed: cache.memory,
      cacheEffectiveCapacity: cache.effectiveCapacity,
      cacheWriteFailures: cache.writeFailures,
      cacheAdopted: cache.adopted,
      open: { tcp: counters.connections.open, http: counters.http.connections },
      uptimeSeconds: (Date.now() - this.#started) / 1000,
      origin: {
        fresh: origin.fresh,
        stale: origin.stale,
        negative: origin.negative,
        revalidations: origin.revalidations,
        notModified: origin.notModified,
        inFlight: origin.inFlight,
        breakerOpen: origin.breaker.state !== "closed",
        breakerOpened: origin.breaker.opened,
        breakerRefused: origin.breaker.refused,
      },
      access: {
        denied: counters.deniedConnections,
        tlsHandshakes: counters.tlsHandshakes,
        tlsHandshakeFailures: counters.tlsHandshakeFailures,
        authFailures: counters.authFailures,
        authLimited: counters.authLimited,
      },
    };
  }

  /** The whole server's counters, as `STATS` reports them. */
  async stats(): Promise<ServerStats> {
    const [threads, cache, shield] = await Promise.all([
      this.threads(),
      this.cache.figures(),
      this.originFigures(),
    ]);
    const c = sumCounters(threads, RECENT_REQUESTS);
    const requestsOf = (counts: RequestCounts) => Object.values(counts).reduce((a, b) => a + b, 0);
    return {
      version: VERSION,
      uptimeMs: Date.now() - this.#started,
      connections: c.connections,
      requests: c.requests,
      hits: c.hits,
      misses: c.misses,
      bypasses: c.bypasses,
      evictions: cache.evictions,
      bytesSent: c.bytesSent,
      bytesFromOrigin: c.bytesFromOrigin,
      sendTimeouts: c.sendTimeouts,
      errors: c.errors,
      protocols: {
        tcp: { requests: requestsOf(c.byProtocol.tcp) },
        http: {
          requests: requestsOf(c.byProtocol.http),
          connections: c.http.connections,
          active: c.http.active,
        },
      },
      cache: withoutEvictions(cache),
      freshness: this.origin.freshness ?? "stat",
      origin: originFigures(c, shield),
      threads: threads.map((thread) => thread.requests),
      access: {
        ...this.accessSettings(),
        denied: c.deniedConnections,
        tlsHandshakes: c.tlsHandshakes,
        tlsHandshakeFailures: c.tlsHandshakeFailures,
        authFailures: c.authFailures,
        authLimited: c.authLimited,
      },
    };
  }

  /** The `LIST` answer: the cache's entries in eviction order. */
  async listing(): Promise<{ capacity: number; used: number; policy: string; entries: unknown[] }> {
    // One snapshot of both: LIST's entries always add up to its `used`.
    const { figures: cache, entries } = await this.cache.listing();
    return {
      capacity: cache.capacity,
      used: cache.used,
      policy: cache.policy,
      entries: entries.map((entry) => ({
        path: entry.path,
        size: entry.size,
        admitted: entry.admitted,
      })),
    };
  }

  async #serverCounters(): Promise<ThreadCounters> {
    return sumCounters(await this.threads(), RECENT_REQUESTS);
  }

  /**
   * The `FILES` answer: one page of a directory of the origin (at most
   * {@linkcode FILES_PAGE_LIMIT} entries, and `next` where more follow),
   * read while holding one of the `maxListings` turns, so that clients
   * asking for huge directories cannot have the server list many at once.
   */
  async files(path: string, window: ListingWindow = {}): Promise<FilesAnswer> {
    const page = await this.#listings.with(1, () =>
      this.origin.list(path, {
        after: window.after,
        limit: window.limit ?? FILES_PAGE_LIMIT,
      }));
    // `next` only when more follow: a listing that fits in one page is the
    // JSON an older server sent, key for key.
    return page.next === undefined
      ? { path, entries: page.entries }
      : { path, entries: page.entries, next: page.next };
  }

  /**
   * The `STAT` answer: an origin file, whether a fresh copy is cached, and
   * its sha256 when known (a fresh copy's, or that of a miss of this version
   * streamed lately, cached or not: what a client checks a streamed miss
   * against).
   */
  async stat(path: string): Promise<Record<string, unknown>> {
    const { size, mtime, sha256, validator } = await this.current(path);
    const cached = this.cache.lookup(path)?.validator === validator;
    return { path, size, mtime, cached, sha256: sha256 ?? null };
  }

  /**
   * The version of `path` a `GET` would serve now, without opening it: its
   * stat, and its sha256 when a fresh copy is cached or this thread
   * streamed a miss of it lately (for conditional requests, answered
   * without reading a byte, and for `STAT`).
   */
  async current(path: string): Promise<OriginStat & { sha256?: string }> {
    const stat = await this.#originStat(path);
    const entry = this.cache.lookup(path);
    if (entry?.validator === stat.validator) return { ...stat, sha256: entry.sha256 };
    const streamed = this.#recentDigests.get(path, stat.validator);
    return streamed === undefined ? stat : { ...stat, sha256: streamed };
  }

  /**
   * Resolves a `GET` of `path` (or of a range of it): from the cache when a
   * fresh entry is there; otherwise fills the cache from the origin and
   * serves the new entry (from {@linkcode STREAMED_MISS_FROM} bytes, while
   * it is copied in); otherwise (too large, a range of an uncached file, no
   * room) streams from the origin. The caller sends the bytes and
   * then calls `release()`. `known` is the origin's stat when the caller
   * has just taken it (see {@linkcode FileService.current}): one origin
   * round trip per request, not two.
   *
   * @throws {RequestError} 404/403 for the path, 416 for the range.
   */
  async open(path: string, range: RangeRequest = {}, known?: ShieldedStat): Promise<Served> {
    const stat = known ?? await this.#originStat(path);
    try {
      return await this.#openAt(path, range, stat);
    } catch (error) {
      // The origin changed within the lifetime of what was remembered of it:
      // forget that (and the stale entry) and ask again, once, rather than
      // fail every request for the rest of the lifetime.
      if (!(error instanceof OriginChangedError) || !stat.fromMemory) throw error;
      await this.purge(path, false);
      return await this.#openAt(path, range, await this.#originStat(path));
    }
  }

  async #openAt(path: string, range: RangeRequest, stat: ShieldedStat): Promise<Served> {
    const { offset, length } = checkRange(stat.size, range.offset, range.length);
    const whole = offset === 0 && length === stat.size;
    for (let attempt = 0; attempt < LOOKUP_ATTEMPTS; attempt++) {
      let entry = this.cache.lookup(path);
      let outcome: "hit" | "miss" = "hit";
      if (entry && entry.validator !== stat.validator) {
        await this.cache.remove(path, entry);
        entry = undefined;
      }
      if (!entry) {
        // A cache of no bytes (its directory unusable) admits nothing, empty files included.
        if (!whole || stat.size > this.cache.capacity || this.cache.capacity === 0) break;
        if (stat.size >= STREAMED_MISS_FROM) {
          const streamed = await this.#streamMiss(path, stat);
          if (!("filled" in streamed)) return this.#withAge(streamed, stat);
          entry = streamed.filled;
        } else {
          entry = await this.#fill(path, stat);
        }
        if (!entry) break;
        // An entry a previous run admitted (`--keep-cache`, adopted at this
        // request) read nothing from the origin: a hit.
        outcome = entry.admitted < this.#started ? "hit" : "miss";
        if (entry.validator !== stat.validator) continue; // joined an older fill
      }
      const served = await this.#openEntry(entry, outcome, { offset, length });
      if (served) return this.#withAge(served, stat);
    }
    return this.#withAge(await this.#openOrigin(path, stat, { offset, length }), stat);
  }

  /**
   * Drops `path` from the cache (with `prefix`, every path that starts
   * with it) and what is remembered of it, so the next request asks the
   * origin. Resolves to the number of entries dropped. On a worker thread
   * the owner of the cache does it (see `server/worker_pool.ts`).
   */
  purge: (path: string, prefix: boolean) => Promise<number> = (path, prefix) =>
    this.purgeHere(path, prefix);

  /** {@linkcode purge} on the thread that owns the cache. */
  async purgeHere(path: string, prefix: boolean): Promise<number> {
    this.origin.forget?.(path, prefix);
    const doomed = prefix
      ? (await this.cache.listing()).entries.filter((entry) => purgeCovers(entry.path, path, true))
      : [this.cache.lookup(path)].filter((entry) => entry !== undefined);
    for (const entry of doomed) await this.cache.remove(entry.path, entry);
    // Entries a previous run left and not yet adopted go too: else they would come back.
    const kept = await this.cache.forgetKept?.((kept) => purgeCovers(kept, path, prefix)) ?? 0;
    return doomed.length + kept;
  }

  /**
   * A whole-file hit answered at once, without waiting for anything: where
   * the origin stats synchronously (a local directory) and a fresh entry of
   * `path` is held in memory, the hottest answer there is. Undefined in
   * every other case, including errors: the caller then takes
   * {@linkcode open}'s way, which answers them. The hit is counted; there
   * is nothing to release. Resolves to the entry and its bytes (take them
   * now: an entry's bytes go when it leaves the cache).
   */
  hitNow(path: string): { entry: CacheEntry; bytes: Uint8Array } | undefined {
    const entry = this.cache.lookup(path);
    if (!entry?.bytes || !this.origin.statNow) return undefined;
    let stat: OriginStat;
    try {
      stat = this.origin.statNow(path);
    } catch {
      return undefined;
    }
    if (stat.validator !== entry.validator) return undefined;
    if ((stat as ShieldedStat).fromMemory) this.#counts.freshAnswers++;
    this.#countServed(path, "hit");
    return { entry, bytes: entry.bytes };
  }

  /**
   * Fills the cache with `path` as `stat` describes it, or joins the fill in
   * flight (single flight): for a worker thread's replica, whose own fills
   * come here. Resolves to the entry, or undefined when it was not admitted.
   * `onGrowing` hears of the fill's growing file as
   * {@linkcode CacheView.growing} gives it, when a fill is started or joined.
   */
  admit(
    path: string,
    stat: OriginStat,
    onGrowing?: (growing: Promise<GrowingFill | undefined> | undefined) => void,
  ): Promise<CacheEntry | undefined> {
    return this.#fill(path, stat, onGrowing);
  }

  /**
   * Sends a served answer: hands `head` and then the body's bytes to
   * `consume` (the first chunk begins with `head`). An answer of up to
   * {@linkcode WHOLE_ANSWER} bytes, head included, is read whole into one
   * buffer behind its head and consumed in one piece, so it goes out in one
   * write; a larger one is read in chunks, the next while the current one
   * is consumed.
   *
   * @throws {TruncatedBodyError} when the source ended early, or failed.
   */
  async stream(
    served: Served,
    head: Uint8Array,
    consume: (chunk: Uint8Array) => Promise<void>,
  ): Promise<void> {
    if (served.bytes) {
      await consume(head);
      await consume(served.bytes);
      return;
    }
    const whole = this.#takeWhole(head.length + served.length);
    const buffers = whole ? undefined : this.#takeBuffers(served.length);
    const { checkUnchanged } = served;
    try {
      if (whole) {
        whole.set(head);
        const body = whole.subarray(head.length, head.length + served.length);
        if (await readFull(served.source!, body) < served.length) {
          throw new TruncatedBodyError(`${served.path} ended early`);
        }
        await checkUnchanged?.();
        await consume(whole.subarray(0, head.length + served.length));
        return;
      }
      await consume(head);
      let read = 0;
      const consumeChecked = checkUnchanged
        ? async (chunk: Uint8Array) => {
          read += chunk.length;
          if (read >= served.length) await checkUnchanged();
          await consume(chunk);
        }
        : consume;
      const sent = await readChunks(served.source!, buffers!, served.length, consumeChecked);
      if (sent < served.length) throw new TruncatedBodyError(`${served.path} ended early`);
    } catch (error) {
      if (isConnectionError(error)) throw error;
      this.#options.onError(`response cut short: ${(error as Error).message}`);
      throw error instanceof TruncatedBodyError ? error : new TruncatedBodyError(String(error));
    } finally {
      this.#returnBuffers(whole ? [whole] : buffers!);
    }
  }

  /**
   * Maps any error to the answer a client gets: the one place that does,
   * for both protocols.
   */
  describeError(error: unknown): [ErrorCode, string] {
    if (error instanceof RequestError) return [error.code, error.message];
    if (error instanceof OriginChangedError) return [500, `${error.message}; try again`];
    if (isOutOfDescriptors(error)) return [503, "server busy: out of file descriptors"];
    const message = error instanceof Error ? error.message : String(error);
    const detail = this.#options.debug && error instanceof Error ? error.stack : message;
    this.#options.onError(`request failed: ${detail}`);
    return [500, `server error: ${message}`];
  }

  /** Serves an entry from memory or from its cache file; undefined if the file is gone. */
  async #openEntry(
    entry: CacheEntry,
    outcome: "hit" | "miss",
    range: { offset: number; length: number },
  ): Promise<Served | undefined> {
    const served = servedEntry(entry, outcome, range);
    if (entry.bytes) {
      this.#countServed(entry.path, outcome);
      served.bytes = range.length === entry.size
        ? entry.bytes
        : entry.bytes.subarray(range.offset, range.offset + range.length);
      return served;
    }
    const releasePermit = await this.#files.acquire(1);
    let file: Deno.FsFile | undefined;
    try {
      file = await this.cache.openEntry(entry);
      if (file && range.offset > 0) file.seekSync(range.offset, Deno.SeekMode.Start);
    } catch (error) {
      file?.close();
      releasePermit();
      throw error;
    }
    if (!file) {
      releasePermit();
      // Evicted between lookup and open (then this does nothing), or its
      // file vanished: an entry without a file must not stay.
      await this.cache.remove(entry.path, entry);
      return undefined;
    }
    this.#countServed(entry.path, outcome);
    const opened = file;
    served.source = readsHere(opened);
    served.release = once(() => (closeQuietly(opened), releasePermit()));
    return served;
  }

  /**
   * Streams from the origin without admitting anything.
   *
   * @throws {OriginChangedError} when the file is no longer the one stat'ed:
   *   the range was chosen against its size, and the header would describe
   *   the new version while the body held a part of it.
   */
  async #openOrigin(
    path: string,
    stat: OriginStat,
    range: { offset: number; length: number },
  ): Promise<Served> {
    const releasePermit = await this.#files.acquire(1);
    try {
      const opened = await this.origin.open(path, range);
      try {
        if (opened.stat.validator !== stat.validator) throw new OriginChangedError(path);
        const { offset, length } = range;
        this.#counts.bypasses++;
        const source: ByteSource = {
          read: async (into) => {
            const n = await opened.read(into);
            if (n !== null) this.#counts.bytesFromOrigin += n;
            return n;
          },
          close: () => opened.close(),
        };
        return {
          path,
          outcome: "bypass",
          size: stat.size,
          mtime: stat.mtime,
          validator: stat.validator,
          offset,
          length,
          source,
          checkUnchanged: async () => {
            // The bytes of the open file: its size and mtime. Not its change
            // time, which also moves when the file is renamed over, linked
            // or chmod-ed while its bytes stay whole.
            const now = await opened.restat();
            if (now.size !== stat.size || now.mtime !== stat.mtime) {
              throw new OriginChangedError(path);
            }
          },
          release: once(() => (closeQuietly(opened), releasePermit())),
        };
      } catch (error) {
        opened.close();
        throw error;
      }
    } catch (error) {
      releasePermit();
      throw error;
    }
  }

  #countServed(path: string, outcome: "hit" | "miss"): void {
    if (outcome === "hit") this.cache.touch(path);
    this.#counts[outcome === "hit" ? "hits" : "misses"]++;
  }

  /**
   * Fills the cache from the origin. A fill holds two file permits (origin
   * and cache file); a request that joins a fill in flight holds none.
   * `onGrowing` is told of the fill's growing file (see
   * {@linkcode CacheView.growing}) when a fill is started or joined.
   */
  async #fill(
    path: string,
    stat: OriginStat,
    onGrowing?: (growing: Promise<GrowingFill | undefined> | undefined) => void,
  ): Promise<CacheEntry | undefined> {
    const fill = () => {
      const filling = this.cache.fill(path, this.#originSource(path, stat));
      onGrowing?.(this.cache.growing(path));
      return filling;
    };
    if (!this.cache.filling(path)) {
      const filled = await this.#files.with(2, async () => {
        // While this request waited for permits, another may have filled the
        // path or begun to: take its entry, or join it without the permits,
        // rather than read the origin again.
        const entry = this.cache.lookup(path);
        if (entry?.validator === stat.validator) return entry;
        return this.cache.filling(path) ? JOIN_FILL : await fill();
      });
      if (filled !== JOIN_FILL) return filled;
    }
    return await fill();
  }

  /**
   * A whole-file miss sent while it is copied in: starts the fill (or joins
   * the one in flight) and, once it has written its first bytes, reads its
   * growing cache file (see service/growing_source.ts). Until then nothing
   * is sent, so that a fill that fails at once is still a clean error. When
   * there is nothing to stream (the fill found the entry, or is of another
   * version, or ended before its file could be opened), resolves to what
   * the fill resolves to, as {@linkcode #fill} does; its errors are thrown.
   */
  async #streamMiss(
    path: string,
    stat: OriginStat,
  ): Promise<Served | { filled: CacheEntry | undefined }> {
    const started = Promise.withResolvers<GrowingFill | undefined>();
    const filled = this.#fill(
      path,
      stat,
      (growing) => growing ? growing.then(started.resolve) : started.resolve(undefined),
    );
    // A fill that ends before a growing file was seen has none to stream.
    filled.then(() => started.resolve(undefined), () => started.resolve(undefined));
    const growing = await started.promise;
    if (growing?.validator !== stat.validator) return { filled: await filled };
    const progress = new FillProgress(growing.progress);
    await firstBytes(progress);
    // Failed before its first byte: the fill's error is this request's answer.
    if (progress.state === FILL_FAILED) return { filled: await filled };
    const releasePermit = await this.#files.acquire(1);
    let file: Deno.FsFile | undefined;
    try {
      file = await this.cache.openGrowing(growing);
    } catch (error) {
      releasePermit();
      throw error;
    }
    if (!file && !progress.spilled) {
      // Done and already gone, or failed: the fill's outcome says which.
      releasePermit();
      return { filled: await filled };
    }
    // From here on the fill's failure reaches this request through its progress.
    filled.catch(() => {});
    this.#countServed(path, "miss");
    const source = new GrowingSource(growing, file, {
      openOrigin: (offset) => this.origin.open(path, { offset, length: stat.size - offset }),
      countOrigin: (bytes) => this.#counts.bytesFromOrigin += bytes,
      onDigest: (sha256) => this.#recentDigests.remember(path, stat.validator, sha256),
    });
    return {
      path,
      outcome: "miss",
      size: stat.size,
      mtime: stat.mtime,
      validator: stat.validator,
      offset: 0,
      length: stat.size,
      source,
      streamed: true,
      release: once(() => (source.close(), releasePermit())),
    };
  }

  /** `served`, marked with the age (and staleness) of the stat it was chosen by. */
  #withAge(served: Served, stat: ShieldedStat): Served {
    if (stat.ageMs !== undefined) served.ageMs = stat.ageMs;
    if (stat.stale) {
      served.stale = true;
      this.#counts.staleAnswers++;
    }
    return served;
  }

  /** Stats an origin file; one that is gone leaves the cache too. */
  async #originStat(path: string): Promise<ShieldedStat> {
    try {
      const stat = await this.origin.stat(path);
      if (stat.fromMemory) this.#counts.freshAnswers++;
      return stat;
    } catch (error) {
      if (error instanceof RequestError && error.code === 404) await this.cache.remove(path);
      throw error;
    }
  }

  /** The origin as a fill source: reads and checks that the file held still. */
  #originSource(path: string, stat: OriginStat): FillSource {
    return {
      stat,
      streamed: stat.size >= STREAMED_MISS_FROM,
      read: async (sink) => {
        const opened = await this.origin.open(path);
        const buffers = this.#takeBuffers(stat.size);
        try {
          if (opened.stat.validator !== stat.validator) throw new OriginChangedError(path);
          // Read to the end, not just `size` bytes: a file that grew is caught.
          await readChunks(opened, buffers, Infinity, async (chunk) => {
            this.#counts.bytesFromOrigin += chunk.length;
            await sink(chunk);
          });
          if ((await opened.restat()).validator !== stat.validator) {
            throw new OriginChangedError(path);
          }
        } finally {
          opened.close();
          this.#returnBuffers(buffers);
        }
      },
    };
  }

  /** Two pooled buffers for moving `length` bytes, sized for it. */
  #takeBuffers(length: number): [Uint8Array, Uint8Array] {
    const large = length >= LARGE_BODY ||
      (length > CHUNK_SIZES.small && this.#largeRoom(2 * CHUNK_SIZES.large));
    const kind = large ? "large" : "small";
    return [this.#take(kind), this.#take(kind)];
  }

  /**
   * One pooled buffer for a whole answer of `length` bytes, or undefined
   * when it is not worth one (a small body: two small chunks cost as much)
   * or the large buffers' budget is spent.
   */
  #takeWhole(length: number): Uint8Array | undefined {
    if (length <= CHUNK_SIZES.small || length > WHOLE_ANSWER) return undefined;
    return this.#largeRoom(WHOLE_ANSWER) ? this.#take("whole") : undefined;
  }

  /** True when `bytes` more of large buffers stay within the budget. */
  #largeRoom(bytes: number): boolean {
    return this.#largeOut + bytes <= this.#largeChunkBudget;
  }

  #take(kind: keyof typeof BUFFER_SIZES): Uint8Array {
    if (kind !== "small") this.#largeOut += BUFFER_SIZES[kind];
    return this.#buffers[kind].pop() ?? new Uint8Array(BUFFER_SIZES[kind]);
  }

  #returnBuffers(buffers: Uint8Array[]): void {
    for (const buffer of buffers) {
      const kind = buffer.length === WHOLE_ANSWER
        ? "whole"
        : buffer.length === CHUNK_SIZES.large
        ? "large"
        : "small";
      if (kind !== "small") this.#largeOut -= buffer.length;
      const pool = this.#buffers[kind];
      if (pool.length < SPARE_BUFFERS[kind]) pool.push(buffer);
    }
  }
}

/**
 * Checks a requested range against a file's size.
 *
 * @throws {RequestError} 416 when it reaches past the end.
 */
function checkRange(
  size: number,
  offset = 0,
  length?: number,
): { offset: number; length: number } {
  if (offset > size) {
    throw new RequestError(416, `offset ${offset} is past the end (size ${size})`);
  }
  const wanted = length ?? size - offset;
  if (offset + wanted > size) {
    throw new RequestError(416, `range ${offset}+${wanted} is past the end (size ${size})`);
  }
  return { offset, length: wanted };
}

/**
 * Reads up to `limit` bytes of `source` (to its end with `Infinity`) and
 * hands each chunk to `consume`. Two buffers take turns, so the next chunk is
 * read while the current one is consumed (sent, or hashed and written).
 * Resolves to the bytes read, which is less than `limit` when the source
 * ends first.
 */
async function readChunks(
  source: ByteSource,
  buffers: [Uint8Array, Uint8Array],
  limit: number,
  consume: (chunk: Uint8Array) => Promise<void>,
): Promise<number> {
  let [current, next] = buffers;
  let total = 0;
  let reading: Promise<number | null> | undefined = source.read(
    current.subarray(0, Math.min(limit, current.length)),
  );
  try {
    while (reading) {
      const n = await reading;
      reading = undefined;
      if (n === null) break;
      total += n;
      if (total < limit) {
        reading = source.read(next.subarray(0, Math.min(limit - total, next.length)));
        // It may fail while `consume` runs, before the loop awaits it: mark it
        // handled now, or the runtime reports an unhandled rejection.
        reading.catch(() => {});
      }
      await consume(current.subarray(0, n));
      [current, next] = [next, current];
    }
    return total;
  } finally {
    await reading?.catch(() => {}); // no buffer goes back to the pool while a read fills it
  }
}

/** Reads until `target` is full or the source ends; resolves to the count. */
export async function readFull(source: ByteSource, target: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < target.length) {
    const n = await source.read(target.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/** True for the errors of a connection whose peer went away. */
export function isConnectionError(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.BadResource;
}

/** True for the errors of a process out of file descriptors. */
export function isOutOfDescriptors(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  return code === "EMFILE" || code === "ENFILE" ||
    /Too many open files/.test((error as Error | undefined)?.message ?? "");
}

function once(action: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    action();
  };
}
