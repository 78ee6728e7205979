/**
 * One thread's counters as plain data, and their sum. With `--workers N`
 * every thread counts its own requests (a counter shared between threads
 * would cost every request an atomic operation); `STATS`, `LIST` and
 * `/-/metrics` gather the threads' snapshots when asked and add them up.
 *
 * @module
 */

import { DURATION_BUCKETS, Histogram, type HistogramData, type RequestCounts } from "./metrics.ts";

/** The protocols a request can arrive on. */
export type ProtocolName = "tcp" | "http";

/** Where a `GET` was served from. */
export type CacheOutcome = "hit" | "miss" | "bypass";

/** One answered request, as the access log and the status page hear of it. */
export interface RequestRecord {
  /** When the request arrived, ms since the epoch. */
  time: number;
  /** The protocol it came in on. */
  protocol: ProtocolName;
  /** The client's address, `host:port`. */
  client: string;
  /** The command (`GET`, `LIST`, ...; `-` when the request did not parse). */
  command: string;
  /** The path, for commands that take one. */
  path?: string;
  /** TCP: `OK`, or the error code sent. HTTP: the status code. */
  status: "OK" | number;
  /** Bytes of the answer, header included. */
  bytes: number;
  /** Milliseconds from the request to the answer's last byte handed over. */
  ms: number;
  /** Where a `GET` was served from. */
  cache?: CacheOutcome;
  /** Set when the request came over TLS. */
  tls?: true;
  /** The name of the token the request was allowed with (never the token). */
  user?: string;
}

/** One thread's counters, as plain data. */
export interface ThreadCounters {
  /** Requests received, over both protocols. */
  requests: number;
  /** `GET`s served from the cache. */
  hits: number;
  /** `GET`s that filled the cache. */
  misses: number;
  /** `GET`s streamed from the origin without caching. */
  bypasses: number;
  /** Bytes handed to clients. */
  bytesSent: number;
  /** Bytes read from the origin. */
  bytesFromOrigin: number;
  /** Responses dropped because the client stopped taking bytes. */
  sendTimeouts: number;
  /** Origin stats answered from memory within their lifetime (origin/shield.ts). */
  freshAnswers: number;
  /** `GET`s answered with a stale version (past its lifetime). */
  staleAnswers: number;
  /** Connections closed at accept because the allow list does not hold their address. */
  deniedConnections: number;
  /** TLS handshakes completed. */
  tlsHandshakes: number;
  /** TLS handshakes that failed or did not finish within the idle timeout. */
  tlsHandshakeFailures: number;
  /** Wrong tokens presented. */
  authFailures: number;
  /** Token attempts refused unchecked: the address had no failures left (429). */
  authLimited: number;
  /** Error answers, by code. */
  errors: Record<string, number>;
  /** Answered requests by protocol and outcome. */
  byProtocol: Record<ProtocolName, RequestCounts>;
  /** Request durations by protocol. */
  durations: Record<ProtocolName, HistogramData>;
  /** TCP protocol connections. */
  connections: { open: number; total: number; rejected: number };
  /** HTTP connections open, and responses in progress. */
  http: { connections: number; active: number };
  /** The most recent requests, oldest first. */
  recent: RequestRecord[];
}

/**
 * The sum of several threads' counters; `recent` keeps the newest
 * `recentLimit` requests of all, oldest first.
 */
export function sumCounters(threads: ThreadCounters[], recentLimit: number): ThreadCounters {
  const total: ThreadCounters = {
    ...zeroCounts(),
    errors: {},
    byProtocol: { tcp: {}, http: {} },
    durations: { tcp: new Histogram(), http: new Histogram() },
    connections: { open: 0, total: 0, rejected: 0 },
    http: { connections: 0, active: 0 },
    recent: [],
  };
  for (const thread of threads) {
    for (const key of SUMMED) total[key] += thread[key];
    addCounts(total.errors, thread.errors);
    for (const protocol of PROTOCOLS) {
      addCounts(total.byProtocol[protocol], thread.byProtocol[protocol]);
      const sum = total.durations[protocol];
      const part = thread.durations[protocol];
      sum.count += part.count;
      sum.sum += part.sum;
      for (let i = 0; i < DURATION_BUCKETS.length; i++) sum.counts[i] += part.counts[i];
    }
    total.connections.open += thread.connections.open;
    total.connections.total += thread.connections.total;
    total.connections.rejected += thread.connections.rejected;
    total.http.connections += thread.http.connections;
    total.http.active += thread.http.active;
    total.recent.push(...thread.recent);
  }
  total.recent.sort((a, b) => a.time - b.time);
  total.recent = total.recent.slice(-recentLimit);
  return total;
}

/** The plain counts of a thread that has counted nothing yet. */
export function zeroCounts(): Pick<ThreadCounters, typeof SUMMED[number]> {
  return {
    requests: 0,
    hits: 0,
    misses: 0,
    bypasses: 0,
    bytesSent: 0,
    bytesFromOrigin: 0,
    sendTimeouts: 0,
    freshAnswers: 0,
    staleAnswers: 0,
    deniedConnections: 0,
    tlsHandshakes: 0,
    tlsHandshakeFailures: 0,
    authFailures: 0,
    authLimited: 0,
  };
}

const SUMMED = [
  "requests",
  "hits",
  "misses",
  "bypasses",
  "bytesSent",
  "bytesFromOrigin",
  "sendTimeouts",
  "freshAnswers",
  "staleAnswers",
  "deniedConnections",
  "tlsHandshakes",
  "tlsHandshakeFailures",
  "authFailures",
  "authLimited",
] as const;

const PROTOCOLS: readonly ProtocolName[] = ["tcp", "http"];

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [key, value] of Object.entries(from)) into[key] = (into[key] ?? 0) + value;
}
