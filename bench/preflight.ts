/**
 * What the benchmarks do before timing anything: warm a cache, and check
 * that the driver receives the files' own bytes, so that no figure counts
 * wrong or mixed-up bodies.
 *
 * @module
 */

import type { DriverPool, Mode, Protocol } from "./driver.ts";
import { type FileSet, KiB } from "./files.ts";

/** Where a load goes: a port on the benchmark's host and the protocol spoken there. */
export interface Target {
  port: number;
  protocol: Protocol;
}

/**
 * Fetches every file of the sets once (from one driver worker, on up to 4
 * connections), so that a caching server holds them all. Returns a line
 * per set that had errors: none when every file came back whole.
 */
export async function warm(pool: DriverPool, target: Target, sets: FileSet[]): Promise<string[]> {
  const errors: string[] = [];
  for (const set of sets) {
    const connections = Math.min(4, set.paths.length);
    const result = await pool.run({
      port: target.port,
      protocol: target.protocol,
      paths: set.paths,
      sizes: set.sizes,
      connections,
      mode: "keep-alive",
      durationMs: 0,
      requests: Math.ceil(set.paths.length / connections),
      bufferSize: 256 * KiB,
      workers: 1,
    });
    if (result.errors > 0) {
      errors.push(`${result.errors} errors: ${result.errorSamples.join(" / ")}`);
    }
  }
  return errors;
}

/** What {@linkcode checkBodies} found. */
export interface BodyCheck {
  /** Responses compared byte for byte with the files. */
  compared: number;
  /** One line per check that went wrong, naming the target by `label`. */
  problems: string[];
}

/**
 * Fetches each set with its mode on two connections, each connection going
 * through the whole set, and compares every body with the file's bytes.
 */
export async function checkBodies(
  pool: DriverPool,
  target: Target,
  label: string,
  checks: [FileSet, Mode][],
): Promise<BodyCheck> {
  const found: BodyCheck = { compared: 0, problems: [] };
  for (const [set, mode] of checks) {
    const result = await pool.run({
      port: target.port,
      protocol: target.protocol,
      paths: set.paths,
      sizes: set.sizes,
      verifyFiles: set.local,
      connections: 2,
      mode,
      durationMs: 0,
      requests: set.paths.length,
      bufferSize: 64 * KiB,
    });
    found.compared += result.requests;
    if (result.errors > 0) {
      found.problems.push(
        `self-check on ${label} (${mode}): ${result.errors} errors: ` +
          result.errorSamples.join(" / "),
      );
    }
  }
  return found;
}
