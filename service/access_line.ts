/**
 * The access log's line for a request, the same whichever thread answered
 * it (worker threads format their own lines and send the main thread text).
 *
 * @module
 */

import { percentEncode } from "../protocol.ts";
import type { RequestRecord } from "./counters.ts";

/** The access log's two formats. */
export type LogFormat = "text" | "json";

/** Where the access log's lines go: the main thread's writer. */
export interface AccessLogSink {
  /** The lines' format. */
  format: LogFormat;
  /** Takes one line, or several joined by line ends (none at the end). */
  add(lines: string): void;
}

/**
 * One access-log line: `TIME CLIENT COMMAND PATH STATUS BYTES MS CACHE TLS
 * USER` as text (`-` for what does not apply; TLS is `tls` for a request
 * that came over TLS, USER the name of the token it was allowed with), or
 * the record as JSON.
 */
export function formatAccessLog(record: RequestRecord, format: LogFormat): string {
  const time = isoTime(record.time);
  const ms = Math.round(record.ms * 1000) / 1000;
  if (format === "json") return JSON.stringify({ ...record, time, ms });
  // The served directory itself (HTTP `/`, TCP `FILES`) is `/`: a path is never empty here.
  const path = record.path === undefined
    ? "-"
    : record.path === ""
    ? "/"
    : encodedPath(record.path);
  return `${time} ${record.client} ${record.command} ${path} ${record.status} ${record.bytes} ${
    ms.toFixed(3)
  } ${record.cache ?? "-"} ${record.tls ? "tls" : "-"} ${record.user ?? "-"}`;
}

// Under load, many requests share a millisecond and most share a few paths:
// the last time and the paths seen lately are formatted once each.
let lastTime = NaN;
let lastIsoTime = "";
const encodedPaths = new Map<string, string>();

/** `time` (ms since the epoch) as ISO 8601, the last one remembered. */
function isoTime(time: number): string {
  if (time !== lastTime) {
    lastTime = time;
    lastIsoTime = new Date(time).toISOString();
  }
  return lastIsoTime;
}

/** `path` percent-encoded for the log, from a bounded memo. */
function encodedPath(path: string): string {
  let encoded = encodedPaths.get(path);
  if (encoded === undefined) {
    if (encodedPaths.size >= 4096) encodedPaths.clear();
    encoded = percentEncode(path);
    encodedPaths.set(path, encoded);
  }
  return encoded;
}
