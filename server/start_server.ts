/**
 * Starting a server: the composition root. It opens the origin, takes the
 * ports, opens the cache, and joins them in one file service that the TCP
 * protocol (`tcp/`) and the HTTP front end (`http/`) both answer from.
 * Starting fails before anything is written when the origin cannot be
 * served or a port cannot be taken.
 *
 * @module
 */

import { FileCache } from "../cache.ts";
import { connectionsPerAddress, DEFAULTS } from "../defaults.ts";
import type { PolicyFactory, PolicyName } from "../policies/policy.ts";
import { ConnectionSlots, slotMemory } from "../engine/connection_slots.ts";
import { DirectoryOrigin } from "../origin/directory.ts";
import type { Origin } from "../origin/origin.ts";
import { S3Origin } from "../origin/s3.ts";
import { ShieldedOrigin, type ShieldOptions } from "../origin/shield.ts";
import { BREAKER_SHARED_BYTES } from "../origin/breaker.ts";
import {
  FileService,
  LARGE_CHUNK_BUDGET,
  type Limits,
  type RequestRecord,
  type ServerStats,
} from "../service/file_service.ts";
import {
  listen,
  type PortSharing,
  serveHttp,
  serveTcp,
  sharedPortsAvailable,
  type TlsFiles,
} from "./listeners.ts";
import { type AccessReload, applyReload, checkAccessConfig, openGate } from "./access_setup.ts";
import type { EngineListener } from "../engine/connection_engine.ts";
import { canControlSockets } from "../engine/socket_control.ts";
import { type AccessLogSink, formatAccessLog } from "../service/access_line.ts";
import { WorkerPool } from "./worker_pool.ts";
import { SLOT_LISTENERS } from "./worker_messages.ts";

export type { RequestRecord, ServerStats } from "../service/file_service.ts";

/** The sample files served when no `--dir` is given. */
export const SAMPLE_DIR: string = decodeURIComponent(
  new URL("../sample", import.meta.url).pathname,
);

/** Options of {@linkcode startServer}. */
export interface ServerOptions {
  /**
   * The directory to serve.
   * @default {SAMPLE_DIR}
   */
  dir?: string;
  /**
   * The address to listen on.
   * @default {DEFAULTS.host}
   */
  host?: string;
  /**
   * The port to listen on; 0 picks a free one (see the handle's `addr`).
   * @default {DEFAULTS.port}
   */
  port?: number;
  /**
   * The port of the HTTP front end, on the same host; 0 picks a free one
   * (see the handle's `httpAddr`). Off when not given.
   * @default {undefined}
   */
  httpPort?: number;
  /**
   * The cache directory, created empty at start (see `FileCache.open`).
   * @default {DEFAULTS.cacheDir}
   */
  cacheDir?: string;
  /**
   * The cache's capacity in bytes.
   * @default {DEFAULTS.cacheSize}
   */
  cacheSize?: number;
  /**
   * The eviction policy: a name from `POLICIES`, or a function that makes
   * a policy of one's own.
   * @default {DEFAULTS.policy}
   */
  policy?: PolicyName | PolicyFactory;
  /**
   * Bytes of small cache entries (`DEFAULTS.memoryEntryLimit` or less) also held in memory, so
   * that their hits need no file open; 0 turns it off.
   * @default {DEFAULTS.memoryCache}
   */
  memoryBudget?: number;
  /**
   * Connections served at once; past it, new ones get `ERR 503`.
   * @default {DEFAULTS.maxConnections}
   */
  maxConnections?: number;
  /**
   * Refuse to start when the cache directory cannot be created or written;
   * otherwise the server starts without a cache (every GET read from the
   * origin), says so on `onError`, and `STATS.cache.unavailable` says why.
   * A directory that holds files tcpcache did not make always refuses.
   * @default {false}
   */
  requireCache?: boolean;
  /**
   * Keep the entries a previous run left in the cache directory (each
   * checked against its journal record before it is served), instead of
   * emptying it. Either way the ports open first and the previous run's
   * files are adopted or removed in the background.
   * @default {false}
   */
  keepCache?: boolean;
  /**
   * Connections at once from one client address, per port; past it, new
   * ones from that address get `ERR 503` (HTTP `503`). With worker threads
   * each thread allows its share (the kernel spreads a client's connections
   * over them), so the whole server allows about this many.
   * @default {connectionsPerAddress(maxConnections)}
   */
  maxConnectionsPerAddress?: number;
  /**
   * Milliseconds a client has to send a complete request line, counted from
   * when the server is ready for it; past it, `ERR 408` and close.
   * @default {DEFAULTS.idleTimeoutMs}
   */
  idleTimeoutMs?: number;
  /**
   * Milliseconds a client may go without taking a byte of a response before
   * the server drops the connection and frees what it held.
   * @default {DEFAULTS.sendTimeoutMs}
   */
  sendTimeoutMs?: number;
  /**
   * Milliseconds `close()` waits for responses in progress before it closes
   * their connections.
   * @default {DEFAULTS.shutdownTimeoutMs}
   */
  shutdownTimeoutMs?: number;
  /**
   * Files (origin and cache) open at once; further requests wait for one.
   * A cache fill holds two.
   * @default {DEFAULTS.maxOpenFiles}
   */
  maxOpenFiles?: number;
  /**
   * Directory listings (`FILES`, HTTP directory pages) read from the origin
   * at once, per thread; further ones wait their turn.
   * @default {DEFAULTS.maxListings}
   */
  maxListings?: number;
  /**
   * Watch `dir` for changes (Linux inotify) and trust a file's stat until
   * one is reported, so that a hit needs no stat; false: stat every request.
   * Either way a changed file is never served stale (docs/server.md).
   * @default {DEFAULTS.changeWatch}
   */
  changeWatch?: boolean;
  /**
   * The origin to serve instead of `dir` (tests inject faults through it).
   * @default {undefined}
   */
  origin?: Origin;
  /**
   * How the origin is shielded (origin/shield.ts, docs/origin.md): a
   * freshness lifetime, stale answers while revalidating or while the origin
   * fails, remembered 404s, the breaker, and a cap on origin requests at
   * once. Every lifetime defaults to 0: each request asks the origin.
   * @default {{}}
   */
  originShield?: OriginShieldOptions;
  /**
   * Where problems are reported, one line each.
   * @default {console.error}
   */
  onError?: (message: string) => void;
  /**
   * Called once per request, after its answer was handed to the connection
   * (the server's access log).
   * @default {undefined}
   */
  onRequest?: (record: RequestRecord) => void;
  /**
   * The access log: each answered request's line (see `formatAccessLog`),
   * formatted on the thread that answered it and handed to `add` on this
   * thread (a worker's lines in batches).
   * @default {undefined}
   */
  accessLog?: AccessLogSink;
  /**
   * Reports failures with their stack traces.
   * @default {false}
   */
  debug?: boolean;
  /**
   * Threads that serve: this one, and `workers - 1` worker threads that
   * accept on the same ports (`SO_REUSEPORT`, which needs Deno's
   * `--unstable-net`) and share the one cache, which this thread owns
   * (docs/architecture.md). Needs a directory or an S3 origin (not another
   * injected one) and a policy given by name. The command line's default is
   * the number of cores.
   * @default {1}
   */
  workers?: number;
  /**
   * Serve both protocols over TLS (1.2 and 1.3) with this certificate
   * chain and key, PEM; plain TCP when not given. The certificate can be
   * replaced while serving ({@linkcode ServerHandle.reload}).
   * @default {undefined}
   */
  tls?: TlsFiles;
  /**
   * The networks that may connect, `CIDR,CIDR,...` (IPv4 and IPv6; an
   * address alone is one host): any other client is closed at accept,
   * before a byte is read. Everyone may connect when not given.
   * @default {undefined}
   */
  allow?: string;
  /**
   * The text of a token file (access/tokens.ts: `TOKEN [NAME] [read|admin]`
   * per line): every request then needs a token (TCP `AUTH`, HTTP
   * `Authorization: Bearer`), and the cache's internals an admin one. No
   * token is needed when not given.
   * @default {undefined}
   */
  authTokens?: string;
}

/** The shield's options a server takes (see `ShieldOptions` for each). */
export type OriginShieldOptions = Pick<
  ShieldOptions,
  | "maxAgeMs"
  | "honourOriginLifetime"
  | "staleWhileRevalidateMs"
  | "staleIfErrorMs"
  | "negativeMaxAgeMs"
  | "connections"
  | "breakerFailures"
  | "probeIntervalMs"
>;

/** A running server, as {@linkcode startServer} returns it. */
export interface ServerHandle {
  /** The address it listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** The HTTP front end's address, when it runs. */
  readonly httpAddr?: Deno.NetAddr;
  /** The cache it serves from. */
  readonly cache: FileCache;
  /** The counters `STATS` reports, as of now, of every thread. */
  stats(): Promise<ServerStats>;
  /**
   * Has every worker thread hand the access log the lines it holds
   * (`ServerOptions.accessLog`), and resolves once they have reached it.
   */
  flushLogs(): Promise<void>;
  /** The threads serving (see `ServerOptions.workers`). */
  readonly workers: number;
  /**
   * Puts a new certificate (when TLS is on) or new tokens (when tokens are
   * on) in force on every thread, without closing a connection: new
   * connections get the new certificate, and each connection's token is
   * checked against the new tokens on its next request.
   *
   * @throws {Error} when what is given cannot be used, or asks to turn
   *   TLS or tokens on; the old certificate and tokens then stay.
   */
  reload(changes: AccessReload): Promise<void>;
  /**
   * Stops accepting, closes idle connections, lets responses in progress
   * finish (for at most `shutdownTimeoutMs`, then closes them too), and
   * resolves once every connection is closed.
   */
  close(): Promise<void>;
}

/**
 * Starts a server and resolves once it is listening.
 *
 * @example
 * ```ts
 * import { startServer } from "@tcpcache/tcpcache/server";
 * const server = await startServer({ port: 0, cacheDir: await Deno.makeTempDir() + "/c" });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.close();
 * ```
 */
export async function startServer(options: ServerOptions = {}): Promise<ServerHandle> {
  const cacheDir = options.cacheDir ?? DEFAULTS.cacheDir;
  const onError = options.onError ?? console.error;
  const workers = workerCount(options);
  const shared = workers > 1;
  // The origin and the port first: a server that cannot serve its directory
  // or take its port must not create or empty a cache directory (which may
  // be a running server's).
  const dir = options.dir ?? SAMPLE_DIR;
  const directory = options.origin
    ? undefined
    : await DirectoryOrigin.open(dir, { hide: cacheDir, watchChanges: options.changeWatch });
  const origin = options.origin ?? directory!;
  const hostname = options.host ?? DEFAULTS.host;
  const access = { tls: options.tls, allow: options.allow, tokens: options.authTokens };
  // A certificate is replaced by taking its port a second time beside the
  // old listener (SO_REUSEPORT), so a TLS port is opened shareable.
  const sharedPorts = shared || (access.tls !== undefined && sharedPortsAvailable());
  const sharing: PortSharing = sharedPorts ? "first" : "alone";
  let listener: EngineListener;
  try {
    checkAccessConfig(access);
    listener = listen(hostname, options.port ?? DEFAULTS.port, sharing, access.tls);
  } catch (error) {
    directory?.close();
    throw error;
  }
  const maxConnections = options.maxConnections ?? DEFAULTS.maxConnections;
  const limits: Limits = {
    maxConnections,
    maxConnectionsPerAddress: Math.ceil(
      (options.maxConnectionsPerAddress ?? connectionsPerAddress(maxConnections)) / workers,
    ),
    idleTimeoutMs: options.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
    sendTimeoutMs: options.sendTimeoutMs ?? DEFAULTS.sendTimeoutMs,
    onError,
    onRequest: heardBy(options.onRequest, options.accessLog),
  };
  let httpListener: EngineListener | undefined;
  let cache: FileCache;
  try {
    if (options.httpPort !== undefined) {
      httpListener = listen(hostname, options.httpPort, sharing, access.tls);
    }
    cache = await FileCache.open({
      dir: cacheDir,
      capacity: options.cacheSize ?? DEFAULTS.cacheSize,
      policy: options.policy,
      memoryBudget: options.memoryBudget,
      onWarning: onError,
      requireDirectory: options.requireCache ?? false,
      keep: options.keepCache ?? false,
    });
    if (cache.unavailable) {
      onError(
        `${cache.unavailable}: SERVING WITHOUT A CACHE, every request reads the origin ` +
          "(--require-cache refuses to start instead)",
      );
    }
  } catch (error) {
    // Clients that reached a port meanwhile see it closed.
    listener.close();
    httpListener?.close();
    directory?.close();
    throw error;
  }
  const maxOpenFiles = options.maxOpenFiles ?? DEFAULTS.maxOpenFiles;
  const debug = options.debug ?? false;
  // The large buffers' budget is the process's: each thread gets its share.
  const largeChunkBudget = Math.floor(LARGE_CHUNK_BUDGET / workers);
  const breakerShared = new SharedArrayBuffer(BREAKER_SHARED_BYTES);
  const shieldOptions: ShieldOptions = {
    // An S3 origin's requests are connections; a directory's opens are
    // bounded by maxOpenFiles already.
    connections: origin instanceof S3Origin ? DEFAULTS.originConnections : undefined,
    ...options.originShield,
    carryLimit: cache.capacity,
    connectionWaitMs: DEFAULTS.originTimeoutMs,
  };
  const shield = new ShieldedOrigin(origin, { ...shieldOptions, breakerShared });
  const maxListings = options.maxListings ?? DEFAULTS.maxListings;
  const files = new FileService(cache, shield, {
    maxOpenFiles,
    maxListings,
    onError,
    debug,
    largeChunkBudget,
  });
  // With worker threads, each port's connection limit is counted in memory
  // that every thread shares: TCP in the first cell, HTTP in the second.
  const slotCells = shared ? slotMemory(SLOT_LISTENERS, workers) : undefined;
  const slots = (index: number) =>
    slotCells &&
    new ConnectionSlots(slotCells, SLOT_LISTENERS, index, limits.maxConnections, 0);
  const gate = openGate(access, files, workers);
  if (access.tls && !canControlSockets()) {
    onError(
      "TLS without --allow-ffi: Nagle's algorithm stays on for TLS connections (large " +
        "answers may wait 40 ms for delayed ACKs), and a client that never finishes its " +
        "handshake keeps its socket after it is closed (docs/network.md)",
    );
  }
  const tls = access.tls !== undefined;
  const engines = [serveTcp(listener, files, limits, { gate, tls, slots: slots(0) })];
  if (httpListener) {
    engines.push(serveHttp(httpListener, files, limits, { gate, tls, slots: slots(1) }));
  }
  const ports = [listener.addr.port, ...(httpListener ? [httpListener.addr.port] : [])];
  const accepting = engines.map((engine) => engine.acceptLoop());
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs;
  const stopHere = async () => {
    for (const engine of engines) engine.shutdown(shutdownTimeoutMs);
    await Promise.all(accepting);
    shield.close();
    directory?.close();
  };
  const closeCache = async () => {
    await cache.close().catch((error) => onError(`closing the cache: ${error.message}`));
  };
  let pool: WorkerPool | undefined;
  if (shared) {
    try {
      pool = await WorkerPool.start(
        workers - 1,
        {
          dir: options.origin ? undefined : dir,
          s3: options.origin instanceof S3Origin ? options.origin.options : undefined,
          changeWatch: options.changeWatch,
          hostname,
          port: listener.addr.port,
          httpPort: httpListener?.addr.port,
          cacheDir,
          capacity: cache.capacity,
          // FIFO's order ignores hits: reporting them would cost for nothing.
          // (With worker threads the policy is given by name, so "fifo" is ours.)
          reportHits: cache.policy !== "fifo",
          limits: {
            maxConnections: limits.maxConnections,
            maxConnectionsPerAddress: limits.maxConnectionsPerAddress,
            idleTimeoutMs: limits.idleTimeoutMs,
            sendTimeoutMs: limits.sendTimeoutMs,
          },
          maxOpenFiles,
          maxListings,
          largeChunkBudget,
          logRequests: options.onRequest !== undefined,
          logFormat: options.accessLog?.format,
          debug,
          slots: slotCells!,
          breaker: breakerShared,
          shield: shieldOptions,
          access,
          threads: workers,
        },
        cache,
        files,
        shield,
        { onError, onRequest: options.onRequest, onLogLines: options.accessLog?.add },
      );
    } catch (error) {
      await stopHere();
      await closeCache();
      throw new Error(`cannot start worker threads: ${(error as Error).message}`);
    }
  }
  return {
    addr: listener.addr,
    httpAddr: httpListener?.addr,
    cache,
    workers,
    stats: () => files.stats(),
    flushLogs: async () => await pool?.flushLogs(),
    reload: async (changes) => {
      if (changes.tls) {
        if (!tls) throw new Error("TLS was off at start: turning it on needs a restart");
        if (!sharedPorts) {
          throw new Error("replacing the certificate needs Deno's --unstable-net (SO_REUSEPORT)");
        }
      }
      if (changes.tokens !== undefined && !gate.tokens) {
        throw new Error("tokens were off at start: turning them on needs a restart");
      }
      const here = engines.map((engine, i) => ({ engine, hostname, port: ports[i] }));
      applyReload(changes, gate, here);
      await pool?.reload(changes);
    },
    close: async () => {
      await Promise.all([pool?.stop(shutdownTimeoutMs), stopHere()]);
      // Last: no thread admits or evicts any more, so the journal written now is the final word.
      await closeCache();
    },
  };
}

/** Who hears of an answered request on this thread: the hook, the access log, both or none. */
function heardBy(
  onRequest: ((record: RequestRecord) => void) | undefined,
  accessLog: AccessLogSink | undefined,
): ((record: RequestRecord) => void) | undefined {
  if (!accessLog) return onRequest;
  const log = (record: RequestRecord) => accessLog.add(formatAccessLog(record, accessLog.format));
  return onRequest ? (record) => (onRequest(record), log(record)) : log;
}

/** The threads `options` asks for; more than one needs what a worker can rebuild. */
function workerCount(options: ServerOptions): number {
  const workers = options.workers ?? 1;
  if (!Number.isSafeInteger(workers) || workers < 1) {
    throw new RangeError(`invalid worker count: ${workers}`);
  }
  if (workers > 1 && options.origin && !(options.origin instanceof S3Origin)) {
    throw new RangeError("worker threads need a directory or an S3 origin");
  }
  if (workers > 1 && typeof options.policy === "function") {
    throw new RangeError("worker threads need a policy given by name");
  }
  if (workers > 1 && !sharedPortsAvailable()) {
    throw new RangeError("worker threads need Deno's --unstable-net (to share the ports)");
  }
  return workers;
}
