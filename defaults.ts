/**
 * Every default of tcpcache, stated once: the code, the JSDoc of each
 * option and the `--help` texts all read them from here.
 *
 * @module
 */

import type { PolicyName } from "./policies/policy.ts";
import { DEFAULT_PORT } from "./protocol.ts";

const MiB = 1024 * 1024;

/**
 * The defaults of the server, the cache, the origins and the client.
 *
 * @example
 * ```ts
 * import { DEFAULTS } from "@tcpcache/tcpcache";
 * console.log(`tcpcache listens on ${DEFAULTS.host}:${DEFAULTS.port}`);
 * ```
 */
export const DEFAULTS = {
  /** The address the server listens on, and the client connects to. */
  host: "127.0.0.1",
  /** The TCP protocol's port. */
  port: DEFAULT_PORT,
  /** The cache directory, created empty at start. */
  cacheDir: "./cache",
  /** The cache's capacity in bytes: 64 MiB. */
  cacheSize: 64 * MiB,
  /** The eviction policy. */
  policy: "fifo" as PolicyName,
  /** Small entries kept in memory as well, in bytes in all: 32 MiB. */
  memoryCache: 32 * MiB,
  /** The largest entry kept in memory: 64 KiB. */
  memoryEntryLimit: 64 * 1024,
  /** Connections served at once; more get `ERR 503`. */
  maxConnections: 1024,
  /**
   * Directory listings (`FILES`, HTTP directory pages) read from the origin
   * at once, per thread; more wait their turn.
   */
  maxListings: 4,
  /**
   * The least default of connections at once from one address; the default
   * is half the connections, and never less than this
   * (`connectionsPerAddress`).
   */
  minConnectionsPerAddress: 64,
  /** Time to send a request line (or an HTTP head) before `408`. */
  idleTimeoutMs: 60_000,
  /** Time a client may take no bytes before it is dropped. */
  sendTimeoutMs: 60_000,
  /** On SIGTERM/SIGINT, time for the responses in progress. */
  shutdownTimeoutMs: 10_000,
  /**
   * Whether a served directory is watched for changes (Linux inotify), so
   * that a hit needs no stat; otherwise every request stats its file.
   */
  changeWatch: true,
  /** Files open at once; more requests wait. */
  maxOpenFiles: 512,
  /** Time for an S3 origin to answer, and for each read of a body to progress. */
  originTimeoutMs: 10_000,
  /** Retries of a failed S3 request, with backoff. */
  originRetries: 4,
  /** Requests to an S3 origin at once (bodies being read included); more wait. */
  originConnections: 64,
  /** A file's freshness lifetime (`--max-age`): 0, every request asks the origin. */
  maxAgeMs: 0,
  /**
   * An origin request not answered within this counts as a failure for the
   * breaker, and a request that has a stale copy to fall back on waits no
   * longer than this for the origin.
   */
  originPatienceMs: 1000,
  /** Consecutive origin failures that open the breaker. */
  breakerFailures: 3,
  /** While the breaker is open, the time between probes of the origin. */
  probeIntervalMs: 1000,
  /** The first retry's backoff; it doubles with each retry. */
  originBackoffMs: 100,
  /** The S3 region when none is given. */
  s3Region: "us-east-1",
  /** The connections a client's `get` opens at once. */
  parallel: 1,
} as const;

/**
 * The default of connections at once from one address: half of
 * `maxConnections` (one client cannot take the slots of everyone else, and a
 * load driver on one machine still opens hundreds), and at least
 * `DEFAULTS.minConnectionsPerAddress`, so that a small limit is not split
 * further.
 */
export function connectionsPerAddress(maxConnections: number): number {
  return Math.max(DEFAULTS.minConnectionsPerAddress, Math.floor(maxConnections / 2));
}
