/**
 * What the client's command line makes of an error: the message it prints
 * (with what to do next, where there is something to do) and the exit
 * status. The one place that maps error classes to answers.
 *
 * @module
 */

import {
  ConnectionError,
  IntegrityError,
  InterruptedDownloadError,
  ResumeError,
  ServerError,
} from "../../client/errors.ts";

/** Ctrl-C stopped a download (or kept it from starting): exit 130. */
export class Interrupted extends Error {
  /** How many bytes the download kept in its `.part`, and where. */
  readonly kept?: InterruptedDownloadError;

  /** `cause` is what the interrupted download threw, if it had started. */
  constructor(cause?: unknown) {
    const kept = cause instanceof InterruptedDownloadError ? cause : undefined;
    super(kept ? `interrupted; ${kept.received} bytes kept in ${kept.partial}` : "interrupted");
    this.kept = kept;
  }
}

/**
 * The message for an error, with what to do next where there is something to do.
 *
 * @example
 * ```ts
 * import { describeError } from "./exit_status.ts";
 * console.log(describeError(new Error("not found: x.txt"))); // not found: x.txt
 * ```
 */
export function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof InterruptedDownloadError || (error instanceof Interrupted && error.kept)) {
    return `${message} (get --continue finishes it)`;
  }
  if (error instanceof ServerError && error.code === 401) {
    return `${message} (the server needs a token: --token-file FILE or $TCPCACHE_TOKEN)`;
  }
  return message;
}

/**
 * 0 no error; 1 a server error, failed verification or local failure; 3 a
 * connection failure; 130 interrupted by Ctrl-C (128 + SIGINT, as shells do).
 *
 * @example
 * ```ts
 * import { exitStatus } from "./exit_status.ts";
 * console.log(exitStatus(undefined)); // 0
 * ```
 */
export function exitStatus(error: unknown): number {
  if (error === undefined) return 0;
  if (error instanceof Interrupted) return 130;
  if (error instanceof ServerError || error instanceof IntegrityError) return 1;
  if (error instanceof ResumeError) return 1;
  if (error instanceof ConnectionError) return 3;
  return 1;
}
