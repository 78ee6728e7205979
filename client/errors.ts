/**
 * The errors the client throws, and which of them leave a connection usable.
 *
 * @module
 */

/** The server answered `ERR <code> <message>`. */
export class ServerError extends Error {
  /** The three-digit code the server sent. */
  readonly code: number;

  /** Creates the error for a server's `ERR` answer. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "ServerError";
    this.code = code;
  }
}

/** The connection broke, or the server's answer was not the protocol. */
export class ConnectionError extends Error {
  /** Creates the error, keeping what caused it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionError";
  }
}

/** A whole download's bytes did not match the sha256 the server sent. */
export class IntegrityError extends Error {
  /** Creates the error for `path`; `detail` says what became of the bytes. */
  constructor(path: string, expected: string, actual: string, detail?: string) {
    super(
      `sha256 mismatch for ${path}: server said ${expected}, received ${actual}` +
        (detail ? `; ${detail}` : ""),
    );
    this.name = "IntegrityError";
  }
}

/**
 * A streamed miss (the server sent it while copying it into its cache, with
 * its sha256 to be asked after the body) whose sha256 the server could not
 * give: the file changed or vanished on the server right after it was sent.
 * The bytes may well be right, but they are not accepted unchecked; asking
 * again gets the file as it is now. The connection stays usable.
 */
export class UnverifiedError extends IntegrityError {
  /** Creates the error for `path`, saying why no digest could be had. */
  constructor(path: string, reason: string) {
    super(path, "", "");
    this.message = `cannot verify ${path}: ${reason}; try again`;
    this.name = "UnverifiedError";
  }
}

/**
 * A download broke off in the middle of the body. The bytes that arrived are
 * kept in `partial`, so {@linkcode download} with `resume` can continue.
 */
export class InterruptedDownloadError extends ConnectionError {
  /** The partial file (`DEST.part`). */
  readonly partial: string;
  /** How many bytes it holds. */
  readonly received: number;

  /** Creates the error for `partial`, holding `received` bytes. */
  constructor(message: string, partial: string, received: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "InterruptedDownloadError";
    this.partial = partial;
    this.received = received;
  }
}

/**
 * A partial file cannot be continued: it is longer than the file on the
 * server, or the server has no sha256 to verify it and it does not carry the
 * file's modification time. It has been removed.
 */
export class ResumeError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "ResumeError";
  }
}

/**
 * True when a connection is still usable after `error`: the server answered
 * an error that leaves it open (400, 403, 404, 416, 500), or the bytes
 * failed verification after they were all read. After a `408`, `413` or
 * `503` the server closes the connection; after anything else (a broken
 * connection, a failing sink) the client has closed it.
 */
export function leavesConnectionUsable(error: unknown): boolean {
  if (error instanceof ServerError) return ![408, 413, 503].includes(error.code);
  return error instanceof IntegrityError || error instanceof ResumeError;
}
