/**
 * What `get` shows on the terminal while it works: the progress line on
 * stderr (live only on a terminal, and never with `--quiet`) and the lines
 * printed above it: summaries and errors.
 *
 * @module
 */

import { ProgressLine } from "../progress.ts";
import { type Invocation, readEnv } from "./args.ts";
import { describeError } from "./exit_status.ts";

/**
 * The least time between two redraws of the progress line, in ms. The
 * environment variable `TCPCACHE_PROGRESS_INTERVAL_MS` overrides it; the
 * tests set it to 0 so that every chunk redraws (it is not a documented
 * option for people).
 */
export const PROGRESS_INTERVAL_MS = 100;

/** What `get` shows while it works: the progress line and the lines above it. */
export interface Display {
  /** The progress line on stderr; `print` writes a line above it. */
  progress: ProgressLine;
  /** The command line, for `--quiet`, `--json` and the server to connect to. */
  invocation: Invocation;
}

/** The display of a `get`: a live progress line when stderr is a terminal and not `--quiet`. */
export function createDisplay(invocation: Invocation): Display {
  const intervalMs = Number(
    readEnv("TCPCACHE_PROGRESS_INTERVAL_MS") ?? String(PROGRESS_INTERVAL_MS),
  );
  const progress = new ProgressLine(writeStderr, {
    live: !invocation.quiet && Deno.stderr.isTerminal(),
    intervalMs: Number.isFinite(intervalMs) ? intervalMs : PROGRESS_INTERVAL_MS,
    columns: terminalColumns,
  });
  return { progress, invocation };
}

/** Prints an error above the progress line, as `tcpcache: MESSAGE`. */
export function reportError(display: Display, error: unknown): void {
  display.progress.print(`tcpcache: ${describeError(error)}`);
}

const encoder = new TextEncoder();

function writeStderr(text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

function terminalColumns(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}
