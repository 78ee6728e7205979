/**
 * The server's counters in the Prometheus text exposition format (version
 * 0.0.4), for `/-/metrics`. Pure: it formats what it is given.
 *
 * @module
 */

/** Requests by outcome: `hit`, `miss`, `bypass`, `ok`, or an error code. */
export type RequestCounts = Record<string, number>;

/** Upper bounds, in seconds, of the request duration histogram's buckets. */
export const DURATION_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** A histogram as data (what survives a copy to another thread). */
export interface HistogramData {
  /** Observations at or below each bound of {@linkcode DURATION_BUCKETS}. */
  readonly counts: number[];
  /** All observations. */
  count: number;
  /** Their sum. */
  sum: number;
}

/** A cumulative histogram of observations, in the shape Prometheus reads. */
export class Histogram implements HistogramData {
  /** Observations at or below each bound of {@linkcode DURATION_BUCKETS}. */
  readonly counts: number[] = DURATION_BUCKETS.map(() => 0);
  /** All observations (the `+Inf` bucket). */
  count = 0;
  /** Their sum. */
  sum = 0;

  /** Adds one observation. */
  observe(value: number): void {
    this.count++;
    this.sum += value;
    for (let i = DURATION_BUCKETS.length - 1; i >= 0 && value <= DURATION_BUCKETS[i]; i--) {
      this.counts[i]++;
    }
  }
}

/** What `/-/metrics` reports. */
export interface MetricsSnapshot {
  /** Requests by protocol and outcome. */
  requests: Record<string, RequestCounts>;
  /** Request durations by protocol. */
  durations: Record<string, HistogramData>;
  hits: number;
  misses: number;
  bypasses: number;
  evictions: number;
  bytesSent: number;
  bytesFromOrigin: number;
  sendTimeouts: number;
  cacheUsed: number;
  cacheCapacity: number;
  cacheEntries: number;
  memoryUsed: number;
  /** The capacity in force: less than `cacheCapacity` while the disk is full. */
  cacheEffectiveCapacity?: number;
  /** Writes to the cache directory that failed. */
  cacheWriteFailures?: number;
  /** Entries of a previous run adopted at start (`--keep-cache`). */
  cacheAdopted?: number;
  /** Open client connections, by protocol. */
  open: Record<string, number>;
  uptimeSeconds: number;
  /** The shield in front of the origin (origin/shield.ts), when there is one. */
  origin?: OriginMetrics;
  /** TLS handshakes and what the access gate refused. */
  access?: AccessMetrics;
}

/** TLS handshakes and the access gate's refusals, as the metrics report them. */
export interface AccessMetrics {
  /** Connections closed at accept by the allow list. */
  denied: number;
  /** TLS handshakes completed. */
  tlsHandshakes: number;
  /** TLS handshakes failed or not finished in time. */
  tlsHandshakeFailures: number;
  /** Wrong tokens presented. */
  authFailures: number;
  /** Token attempts refused unchecked (429). */
  authLimited: number;
}

/** The shield's counters as the metrics report them. */
export interface OriginMetrics {
  /** Stats answered from memory within their lifetime. */
  fresh: number;
  /** Answers sent past their lifetime. */
  stale: number;
  /** 404s answered from memory. */
  negative: number;
  /** Revalidations sent to the origin. */
  revalidations: number;
  /** Conditional requests answered `304`. */
  notModified: number;
  /** Origin requests in flight. */
  inFlight: number;
  /** Whether the breaker keeps requests from the origin now. */
  breakerOpen: boolean;
  /** Times the breaker opened. */
  breakerOpened: number;
  /** Requests refused by the open breaker. */
  breakerRefused: number;
}

/**
 * Formats a snapshot as Prometheus text.
 *
 * @example
 * ```ts
 * import { formatMetrics, Histogram } from "./metrics.ts";
 * const text = formatMetrics({
 *   requests: { tcp: { hit: 3 } }, durations: { tcp: new Histogram() },
 *   hits: 3, misses: 0, bypasses: 0, evictions: 0, bytesSent: 10, bytesFromOrigin: 0,
 *   sendTimeouts: 0, cacheUsed: 0, cacheCapacity: 1, cacheEntries: 0, memoryUsed: 0,
 *   open: { tcp: 1 }, uptimeSeconds: 1,
 * });
 * text.includes('tcpcache_requests_total{protocol="tcp",outcome="hit"} 3'); // true
 * ```
 */
export function formatMetrics(snapshot: MetricsSnapshot): string {
  const lines: string[] = [];
  const metric = (name: string, type: string, help: string) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  metric("tcpcache_requests_total", "counter", "Requests answered, by protocol and outcome.");
  for (const [protocol, counts] of Object.entries(snapshot.requests)) {
    for (const [outcome, count] of Object.entries(counts)) {
      lines.push(`tcpcache_requests_total{protocol="${protocol}",outcome="${outcome}"} ${count}`);
    }
  }
  const counters: [string, string, number][] = [
    ["hits", "Whole or ranged reads served from the cache.", snapshot.hits],
    ["misses", "Reads that filled the cache from the origin.", snapshot.misses],
    ["bypasses", "Reads streamed from the origin without caching.", snapshot.bypasses],
    ["evictions", "Entries evicted to make room.", snapshot.evictions],
    [
      "sent_bytes",
      "Bytes handed to clients (TCP: with headers; HTTP: bodies).",
      snapshot.bytesSent,
    ],
    ["origin_bytes", "Bytes read from the origin.", snapshot.bytesFromOrigin],
    [
      "send_timeouts",
      "Responses dropped because the client stopped reading.",
      snapshot.sendTimeouts,
    ],
  ];
  const origin = snapshot.origin;
  if (origin) {
    counters.push(
      ["origin_fresh", "Origin stats answered from memory within their lifetime.", origin.fresh],
      ["origin_stale", "Answers sent past their freshness lifetime.", origin.stale],
      ["origin_negative", "Not-found answers given from memory.", origin.negative],
      ["origin_revalidations", "Revalidations sent to the origin.", origin.revalidations],
      ["origin_not_modified", "Conditional requests the origin answered 304.", origin.notModified],
      ["origin_breaker_opened", "Times the origin's breaker opened.", origin.breakerOpened],
      [
        "origin_breaker_refused",
        "Requests the open breaker kept from the origin.",
        origin.breakerRefused,
      ],
    );
  }
  const access = snapshot.access;
  if (access) {
    counters.push(
      ["denied_connections", "Connections closed at accept by the allow list.", access.denied],
      ["tls_handshakes", "TLS handshakes completed.", access.tlsHandshakes],
      [
        "tls_handshake_failures",
        "TLS handshakes that failed or did not finish within the idle timeout.",
        access.tlsHandshakeFailures,
      ],
      ["auth_failures", "Wrong tokens presented.", access.authFailures],
      [
        "auth_limited",
        "Token attempts refused unchecked: too many failures from the address.",
        access.authLimited,
      ],
    );
  }
  counters.push(
    [
      "cache_write_failures",
      "Writes to the cache directory that failed.",
      snapshot.cacheWriteFailures ?? 0,
    ],
    [
      "cache_adopted",
      "Entries of a previous run adopted (--keep-cache).",
      snapshot.cacheAdopted ?? 0,
    ],
  );
  for (const [name, help, value] of counters) {
    metric(`tcpcache_${name}_total`, "counter", help);
    lines.push(`tcpcache_${name}_total ${value}`);
  }
  const gauges: [string, string, number][] = [
    ["cache_used_bytes", "Bytes held by cache entries.", snapshot.cacheUsed],
    ["cache_capacity_bytes", "The cache's capacity.", snapshot.cacheCapacity],
    [
      "cache_effective_capacity_bytes",
      "The capacity in force: less than the capacity while the cache's disk is full.",
      snapshot.cacheEffectiveCapacity ?? snapshot.cacheCapacity,
    ],
    ["cache_entries", "Entries in the cache.", snapshot.cacheEntries],
    ["cache_memory_bytes", "Bytes of small entries also held in memory.", snapshot.memoryUsed],
    ["uptime_seconds", "Seconds since the server started.", snapshot.uptimeSeconds],
  ];
  if (origin) {
    gauges.push(
      ["origin_in_flight", "Origin requests in flight.", origin.inFlight],
      ["origin_breaker_open", "1 while the origin's breaker is open.", origin.breakerOpen ? 1 : 0],
    );
  }
  for (const [name, help, value] of gauges) {
    metric(`tcpcache_${name}`, "gauge", help);
    lines.push(`tcpcache_${name} ${value}`);
  }
  metric(
    "tcpcache_open_connections",
    "gauge",
    "Open client connections.",
  );
  for (const [protocol, open] of Object.entries(snapshot.open)) {
    lines.push(`tcpcache_open_connections{protocol="${protocol}"} ${open}`);
  }
  metric("tcpcache_request_duration_seconds", "histogram", "Time to answer a request.");
  for (const [protocol, histogram] of Object.entries(snapshot.durations)) {
    DURATION_BUCKETS.forEach((bound, i) => {
      lines.push(
        `tcpcache_request_duration_seconds_bucket{protocol="${protocol}",le="${bound}"} ${
          histogram.counts[i]
        }`,
      );
    });
    const labels = `protocol="${protocol}"`;
    lines.push(`tcpcache_request_duration_seconds_bucket{${labels},le="+Inf"} ${histogram.count}`);
    lines.push(`tcpcache_request_duration_seconds_sum{${labels}} ${histogram.sum}`);
    lines.push(`tcpcache_request_duration_seconds_count{${labels}} ${histogram.count}`);
  }
  return lines.join("\n") + "\n";
}
