/**
 * The human output of `list`, `files`, `stat` and `stats`: tables padded to
 * their widest cell, and records as aligned `key: value` lines with readable
 * forms (dates, byte units) beside the raw values. Pure: the caller prints.
 *
 * @module
 */

import type { CacheListing, FileListing } from "../../client/connection.ts";
import type { ClusterListing } from "../../client/cluster.ts";
import { escapeControls } from "../../protocol.ts";
import { formatBytes } from "../../util/units.ts";
import { formatElapsed } from "../progress.ts";

/** Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC). */
function formatTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}

/** Lays rows out in columns padded to their widest cell. */
function formatTable(rows: string[][], rightAligned: number[] = []): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) =>
    row.map((cell, column) => {
      const last = column === row.length - 1;
      if (rightAligned.includes(column)) return cell.padStart(widths[column]);
      return last ? cell : cell.padEnd(widths[column]);
    }).join("  ")
  ).join("\n");
}

/**
 * `list`: the cache's entries in eviction order (with each entry's node for a
 * cluster), then a summary line.
 *
 * @example
 * ```ts
 * import { formatListing } from "./format.ts";
 * const listing = { capacity: 1024, used: 0, policy: "fifo", entries: [] };
 * console.log(formatListing(listing));
 * // 0 entries, 0 B of 1.0 KiB used (0.0%), policy fifo; #1 is evicted next
 * ```
 */
export function formatListing(listing: CacheListing | ClusterListing): string {
  const cluster = "nodes" in listing;
  const rows = [["#", "SIZE", "ADMITTED (UTC)", ...(cluster ? ["NODE"] : []), "PATH"]];
  listing.entries.forEach((entry, i) => {
    rows.push([
      String(i + 1),
      formatBytes(entry.size),
      formatTime(entry.admitted),
      ...("node" in entry ? [entry.node as string] : []),
      escapeControls(entry.path),
    ]);
  });
  const percent = listing.capacity > 0 ? (100 * listing.used / listing.capacity).toFixed(1) : "0";
  const count = listing.entries.length;
  const order = cluster ? "each node's entries in its eviction order" : "#1 is evicted next";
  let summary = `${count} ${count === 1 ? "entry" : "entries"}, ` +
    `${formatBytes(listing.used)} of ${formatBytes(listing.capacity)} used (${percent}%), ` +
    `policy ${listing.policy}; ${order}`;
  if (cluster) {
    const down = listing.nodes.filter((node) => !node.up).map((node) => node.node);
    summary += `; ${listing.nodes.length - down.length} of ${listing.nodes.length} nodes up` +
      (down.length > 0 ? ` (down: ${down.join(", ")})` : "");
  }
  return count === 0 ? summary : `${formatTable(rows, [0, 1])}\n${summary}`;
}

/**
 * `files`: the directory's path, then its entries (directories end in `/`).
 *
 * @example
 * ```ts
 * import { formatFiles } from "./format.ts";
 * console.log(formatFiles({ path: "docs", entries: [] })); // /docs: empty
 * ```
 */
export function formatFiles(listing: FileListing): string {
  const title = `/${escapeControls(listing.path)}`;
  if (listing.entries.length === 0) return `${title}: empty`;
  const rows = [["TYPE", "SIZE", "MODIFIED (UTC)", "NAME"]];
  for (const entry of listing.entries) {
    const dir = entry.type === "dir";
    rows.push([
      entry.type,
      dir ? "-" : formatBytes(entry.size),
      formatTime(entry.mtime),
      escapeControls(entry.name) + (dir ? "/" : ""),
    ]);
  }
  return `${title}\n${formatTable(rows, [1])}`;
}

/**
 * Formats the fields of a (nested) record as `key: value` lines, nested keys
 * indented and every value starting in one column: `stat` and `stats`.
 *
 * @example
 * ```ts
 * import { formatFields } from "./format.ts";
 * console.log(formatFields({ path: "a.txt", size: 2048 }));
 * // path: a.txt
 * // size: 2048 (2.0 KiB)
 * ```
 */
export function formatFields(record: Record<string, unknown>): string {
  const lines: [label: string, value: string | undefined][] = [];
  const collect = (object: Record<string, unknown>, indent: string) => {
    for (const [key, value] of Object.entries(object)) {
      const label = `${indent}${key}:`;
      if (value !== null && typeof value === "object") {
        const inner = value as Record<string, unknown>;
        lines.push([label, Object.keys(inner).length === 0 ? "{}" : undefined]);
        collect(inner, indent + "  ");
      } else {
        lines.push([label, describeValue(key, value)]);
      }
    }
  };
  collect(record, "");
  const width = Math.max(...lines.map(([label, value]) => value === undefined ? 0 : label.length));
  return lines.map(([label, value]) =>
    value === undefined ? label : `${label.padEnd(width)} ${value}`
  ).join("\n");
}

/** A value with a readable form beside it: times as dates, byte counts in units. */
function describeValue(key: string, value: unknown): string {
  if (typeof value === "string") return escapeControls(value);
  if (typeof value !== "number") return String(value);
  if (key === "mtime" || key === "admitted") return `${value} (${formatTime(value)} UTC)`;
  if (key === "uptimeMs") return `${value} (${formatElapsed(value / 1000)})`;
  if (/^(size|used|capacity|bytes|memory)/.test(key) && value >= 1024) {
    return `${value} (${formatBytes(value)})`;
  }
  return String(value);
}
