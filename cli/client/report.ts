/**
 * What became of the files of a `get`, and how it is reported: the summary
 * line of one file, the tally of a batch or a mirror, and their JSON. Pure:
 * the callers print.
 *
 * @module
 */

import type { DownloadResult } from "../../client/download.ts";
import { ServerError } from "../../client/errors.ts";
import { formatBytes } from "../../util/units.ts";
import { formatElapsed, formatRate } from "../progress.ts";
import { describeError } from "./exit_status.ts";

/** A file to download, and where to. */
export interface Job {
  /** The file's path on the server. */
  path: string;
  /** Where it is saved here. */
  dest: string;
}

/** What became of a file of a `get`. */
export interface Outcome {
  /** The file. */
  job: Job;
  /** The download, when it succeeded. */
  result?: DownloadResult;
  /** Already present with the server's size and sha256 (a mirror). */
  skipped?: { size: number; sha256: string };
  /** Why it failed, when it did. */
  error?: unknown;
}

/**
 * The summary's figures: `300 KiB in 0.012 s, 24 MiB/s, hit, verified sha256`.
 *
 * @example
 * ```ts
 * import { describeTransfer } from "./report.ts";
 * const result = { size: 6, offset: 0, length: 6, mtime: 0, cache: "hit" as const, verified: true };
 * console.log(describeTransfer(result, 0.5)); // 6 B in 0.500 s, 12 B/s, hit, verified sha256
 * ```
 */
export function describeTransfer(result: Omit<DownloadResult, "dest">, seconds: number): string {
  const parts = [
    `${formatBytes(result.size)} in ${formatElapsed(seconds)}`,
    formatRate(result.length, seconds),
    result.cache ?? "cache unknown",
  ];
  if (result.offset > 0) parts.push(`resumed at ${formatBytes(result.offset)}`);
  parts.push(result.verified ? "verified sha256" : "not verified: no sha256 from the server");
  return parts.join(", ");
}

/** `2 saved, 1 skipped, 1 failed (600 KiB in 0.050 s, 12 MiB/s)` */
export function tally(outcomes: Outcome[], seconds: number): string {
  const count = (which: (outcome: Outcome) => unknown) => outcomes.filter(which).length;
  const bytes = outcomes.reduce((sum, outcome) => sum + (outcome.result?.length ?? 0), 0);
  const counts = [`${count((o) => o.result)} saved`];
  const skipped = count((o) => o.skipped);
  if (skipped > 0) counts.push(`${skipped} up to date`);
  counts.push(`${count((o) => o.error !== undefined)} failed`);
  const figures = bytes === 0
    ? `nothing transferred, ${formatElapsed(seconds)}`
    : `${formatBytes(bytes)} in ${formatElapsed(seconds)}, ${formatRate(bytes, seconds)}`;
  return `${counts.join(", ")} (${figures})`;
}

/** A batch's or a mirror's outcome as JSON: every file, and how many were saved, skipped, failed. */
export function batchJson(outcomes: Outcome[]): Record<string, unknown> {
  return {
    files: outcomes.map(outcomeJson),
    saved: outcomes.filter((outcome) => outcome.result).length,
    skipped: outcomes.filter((outcome) => outcome.skipped).length,
    failed: outcomes.filter((outcome) => outcome.error !== undefined).length,
  };
}

/** One file's outcome as JSON: `saved` is where it went (or would have gone). */
export function outcomeJson(outcome: Outcome): Record<string, unknown> {
  const { job, result, skipped, error } = outcome;
  if (result) {
    const { dest: _, ...fields } = result;
    return { path: job.path, status: "saved", saved: job.dest, ...fields };
  }
  if (skipped) return { path: job.path, status: "skipped", saved: job.dest, ...skipped };
  const code = error instanceof ServerError ? { code: error.code } : {};
  return {
    path: job.path,
    status: "failed",
    saved: job.dest,
    error: describeError(error),
    ...code,
  };
}
