/**
 * The tcpcache client: a connection object for programs, and downloads to
 * files that survive interruptions. The command line for people
 * (`deno task client get docs/readme.txt`, see `--help`) is in
 * `client_cli.ts`; running this file runs it.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { ByteReader, writeAll } from "./byte_reader.ts";
import { type Command, DEFAULT_PORT, formatRequest, parseResponseHeader } from "./protocol.ts";

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

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's host name or address.
   * @default {"127.0.0.1"}
   */
  host?: string;
  /**
   * The server's port.
   * @default {9089}
   */
  port?: number;
}

/** Options of {@linkcode TcpCacheClient.get}. */
export interface GetOptions {
  /**
   * The first byte wanted.
   * @default {0}
   */
  offset?: number;
  /**
   * How many bytes are wanted; the rest of the file when omitted.
   * @default {undefined}
   */
  length?: number;
  /**
   * Receives the body chunk by chunk instead of collecting it in memory. A
   * chunk is only valid until the returned promise settles.
   * @default {undefined}
   */
  sink?: (chunk: Uint8Array) => Promise<void> | void;
  /**
   * Called with the response's header, before the first byte of the body
   * (to learn the size, for progress).
   * @default {undefined}
   */
  onHeader?: (header: GetHeader) => void;
}

/** The header of a `GET` response (see {@linkcode GetResult}). */
export type GetHeader = Omit<GetResult, "verified" | "bytes">;

/** What {@linkcode TcpCacheClient.get} resolves to. */
export interface GetResult {
  /** The whole file's size. */
  size: number;
  /** The first byte sent. */
  offset: number;
  /** The number of bytes sent. */
  length: number;
  /** The file's modification time, ms since the epoch. */
  mtime: number;
  /** Where the server took the bytes from. */
  cache: "hit" | "miss" | "bypass";
  /** The whole file's sha256, when the server knows it. */
  sha256?: string;
  /** True when the whole file was received and matched `sha256`. */
  verified: boolean;
  /** The body, unless a `sink` took it. */
  bytes?: Uint8Array;
}

/** An entry of `LIST`. */
export interface CacheListing {
  capacity: number;
  used: number;
  policy: string;
  entries: { path: string; size: number; admitted: number }[];
}

/** An answer to `FILES`. */
export interface FileListing {
  path: string;
  entries: { name: string; type: "file" | "dir"; size: number; mtime: number }[];
}

/** An answer to `STAT`. */
export interface FileStat {
  path: string;
  size: number;
  mtime: number;
  cached: boolean;
  sha256: string | null;
}

/** An answer to `STATS` (see `ServerStats` in server.ts). */
export type Stats = Record<string, unknown> & {
  version: string;
  requests: number;
  hits: number;
  misses: number;
  bypasses: number;
};

type Header = { length: number; fields: Record<string, string> };

/** A failure of the caller's own code (a sink writing to disk), not of the connection. */
class LocalFailure {
  constructor(readonly error: unknown) {}
}

/** Runs a caller's callback; its failure is passed on as it is, never as a broken connection. */
async function local(callback: () => unknown): Promise<void> {
  try {
    await callback();
  } catch (error) {
    throw new LocalFailure(error);
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

/**
 * Connects to a tcpcache server.
 *
 * @example
 * ```ts
 * import { connect } from "./client.ts";
 * const client = await connect({ host: "127.0.0.1", port: 9089 });
 * const { bytes, cache } = await client.get("hello.txt");
 * console.log(cache, new TextDecoder().decode(bytes));
 * client.close();
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<TcpCacheClient> {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? DEFAULT_PORT;
  try {
    const conn = await Deno.connect({ hostname: host, port });
    conn.setNoDelay(true);
    return new TcpCacheClient(conn);
  } catch (error) {
    throw new ConnectionError(`cannot connect to ${host}:${port}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * What a client of tcpcache offers, whether one connection
 * ({@linkcode TcpCacheClient}) or a whole cluster (`ClusterClient` in
 * cluster.ts).
 */
export interface CacheClient {
  /** Fetches a file or a byte range of it (see {@linkcode TcpCacheClient.get}). */
  get(path: string, options?: GetOptions): Promise<GetResult>;
  /** The cache's entries, in eviction order. */
  list(): Promise<CacheListing>;
  /** A directory of the served tree. */
  files(dir?: string): Promise<FileListing>;
  /** A file's size, mtime and cache state. */
  stat(path: string): Promise<FileStat>;
  /** The server's counters. */
  stats(): Promise<Stats>;
  /** Resolves when the server answers. */
  ping(): Promise<void>;
  /** Closes the connection(s). */
  close(): void;
}

/**
 * One connection to a server. Requests may be issued without waiting for
 * earlier ones: they are pipelined, and answered in order.
 */
export class TcpCacheClient implements CacheClient {
  #conn: Deno.Conn;
  #reader: ByteReader;
  #writes: Promise<unknown> = Promise.resolve();
  #reads: Promise<unknown> = Promise.resolve();

  /** Wraps an open connection (see {@linkcode connect}). */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
  }

  /**
   * Fetches a file or a byte range of it. A whole file is verified against
   * the server's sha256 when it sends one.
   *
   * @throws {ServerError} when the server answers an error (e.g. 404).
   * @throws {IntegrityError} when the bytes do not match the sha256.
   * @throws whatever `sink` or `onHeader` throws; the connection is then
   *   closed, since the rest of the body was not read.
   */
  get(path: string, options: GetOptions = {}): Promise<GetResult> {
    const args: (string | number)[] = [path];
    if (options.offset !== undefined || options.length !== undefined) {
      args.push(options.offset ?? 0);
      if (options.length !== undefined) args.push(options.length);
    }
    return this.#exchange("GET", args, async ({ length, fields }) => {
      const size = Number(fields.size ?? length);
      const offset = Number(fields.offset ?? 0);
      const whole = offset === 0 && length === size;
      const mtime = Number(fields.mtime ?? 0);
      const cache = fields.cache as GetResult["cache"];
      await local(() =>
        options.onHeader?.({ size, offset, length, mtime, cache, sha256: fields.sha256 })
      );
      const hash = whole && fields.sha256 ? createHash("sha256") : undefined;
      let bytes: Uint8Array | undefined;
      let filled = 0;
      if (!options.sink) bytes = new Uint8Array(length);
      await this.#reader.readBody(length, async (chunk) => {
        hash?.update(chunk);
        if (bytes) {
          bytes.set(chunk, filled);
          filled += chunk.length;
        } else {
          await local(() => options.sink!(chunk));
        }
      });
      if (hash) {
        const actual = hash.digest("hex");
        if (actual !== fields.sha256) throw new IntegrityError(path, fields.sha256, actual);
      }
      return {
        size,
        offset,
        length,
        mtime,
        cache,
        sha256: fields.sha256,
        verified: hash !== undefined,
        bytes,
      };
    });
  }

  /** The cache's contents, in eviction order. */
  list(): Promise<CacheListing> {
    return this.#json("LIST");
  }

  /** The entries of a directory on the server ("" for the served directory). */
  files(dir = ""): Promise<FileListing> {
    return this.#json("FILES", dir === "" ? [] : [dir]);
  }

  /** A file's size, mtime, and whether (and with which sha256) it is cached. */
  stat(path: string): Promise<FileStat> {
    return this.#json("STAT", [path]);
  }

  /** The server's counters. */
  stats(): Promise<Stats> {
    return this.#json("STATS");
  }

  /** Checks that the server answers. */
  async ping(): Promise<void> {
    await this.#exchange("PING", [], () => {});
  }

  /** Says goodbye (`QUIT`) and closes the connection. */
  async quit(): Promise<void> {
    await this.#exchange("QUIT", [], () => {});
    this.close();
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  #json<T>(command: Command, args: string[] = []): Promise<T> {
    return this.#exchange(command, args, async ({ length }) => {
      const body = new Uint8Array(length);
      let filled = 0;
      await this.#reader.readBody(length, (chunk) => {
        body.set(chunk, filled);
        filled += chunk.length;
      });
      return JSON.parse(new TextDecoder().decode(body)) as T;
    });
  }

  /**
   * Sends a request at once and reads its answer after every earlier
   * answer: writes and reads are two queues, so requests pipeline.
   */
  #exchange<T>(
    command: Command,
    args: (string | number)[],
    readBody: (header: Header) => Promise<T> | T,
  ): Promise<T> {
    const line = new TextEncoder().encode(formatRequest(command, args));
    const written = this.#writes.then(() => writeAll(this.#conn, line));
    this.#writes = written.catch(() => {});
    const answered = this.#reads.then(async () => {
      await written.catch((error) => {
        throw new ConnectionError(`connection broken: ${error.message}`, { cause: error });
      });
      return readBody(await this.#readHeader());
    });
    this.#reads = answered.catch(() => {});
    return answered.catch((error) => {
      if (error instanceof LocalFailure) {
        // The body was not read to its end: the connection is out of step.
        this.close();
        throw error.error;
      }
      if (error instanceof ServerError || error instanceof IntegrityError) throw error;
      if (error instanceof ConnectionError) throw error;
      throw new ConnectionError(`connection broken: ${error.message}`, { cause: error });
    });
  }

  async #readHeader(): Promise<Header> {
    const line = await this.#reader.readLine(64 * 1024);
    if (line === null) throw new ConnectionError("the server closed the connection");
    const header = parseResponseHeader(new TextDecoder().decode(line));
    if (!header.ok) throw new ServerError(header.code, header.message);
    return header;
  }
}

/** Options of {@linkcode download}. */
export interface DownloadOptions {
  /**
   * Called with each chunk's size as it arrives (for progress).
   * @default {undefined}
   */
  onProgress?: (bytes: number) => void;
  /**
   * Called with the response's header before the body (for progress: the
   * size, and the offset a resume starts at).
   * @default {undefined}
   */
  onHeader?: (header: GetHeader) => void;
  /**
   * Continue `DEST.part` when it exists: ask only for the bytes after it
   * (a range request), then verify the whole file. Without a `.part` this is
   * an ordinary download. When the server has no sha256 for the file (it is
   * not in its cache), the file is accepted unverified (`verified: false`)
   * only if the `.part` carries the file's modification time, as an
   * interrupted {@linkcode download} leaves it; otherwise the `.part` is
   * removed and {@linkcode ResumeError} thrown.
   * @default {false}
   */
  resume?: boolean;
}

/** What {@linkcode download} resolves to. */
export interface DownloadResult extends GetHeader {
  /** Where the file was saved. */
  dest: string;
  /**
   * True when the whole file matched the server's sha256 (false when the
   * server had none: a file too large for its cache).
   */
  verified: boolean;
}

/** A `.part` being continued: its handle (at its end), size, digest so far, mtime. */
interface PartialFile {
  file: Deno.FsFile;
  size: number;
  hash: ReturnType<typeof createHash>;
  mtime: number | undefined;
}

/**
 * Downloads a whole file to `dest`. The bytes go to `dest.part`, which is
 * renamed to `dest` only once complete and verified, so `dest` never holds
 * partial content.
 *
 * When the connection breaks in the middle of the body, the `.part` is kept
 * (stamped with the server's mtime of the file) and
 * {@linkcode InterruptedDownloadError} is thrown: `resume: true` continues
 * it later. On any other failure (a server error, a sha256 mismatch) the
 * `.part` is removed.
 *
 * @example
 * ```ts
 * import { connect, download } from "./client.ts";
 * const client = await connect({ port: 9089 });
 * const result = await download(client, "docs/readme.txt", "readme.txt", { resume: true });
 * console.log(result.cache, result.verified);
 * client.close();
 * ```
 *
 * @throws {ServerError} when the server answers an error (e.g. 404).
 * @throws {IntegrityError} when the file does not match the server's sha256.
 * @throws {InterruptedDownloadError} when the body broke off (`.part` kept).
 * @throws {ResumeError} when a `.part` cannot be continued (it is removed).
 */
export async function download(
  client: CacheClient,
  path: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const partial = `${dest}.part`;
  const kept = options.resume ? await openPartial(partial) : undefined;
  const resumeAt = kept?.size ?? 0;
  const file = kept?.file ??
    await Deno.open(partial, { write: true, create: true, truncate: true });
  let header: GetHeader | undefined;
  let received = resumeAt;
  let verified: boolean;
  let result: GetResult;
  try {
    try {
      result = await client.get(path, {
        offset: resumeAt > 0 ? resumeAt : undefined,
        onHeader: (fields) => {
          header = fields;
          options.onHeader?.(fields);
        },
        sink: async (chunk) => {
          kept?.hash.update(chunk);
          await writeAll(file, chunk);
          received += chunk.length;
          options.onProgress?.(chunk.length);
        },
      });
    } finally {
      file.close();
    }
    verified = result.verified;
    if (kept && resumeAt > 0) verified = await verifyResumed(client, path, partial, kept, result);
  } catch (error) {
    throw await keepOrDiscard(error, { partial, path, header, received, resumeAt });
  }
  await Deno.rename(partial, dest);
  const { bytes: _, ...fields } = result;
  return { ...fields, verified, dest };
}

/** Opens a `.part` to continue it and hashes what it holds; undefined when there is none. */
async function openPartial(partial: string): Promise<PartialFile | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(partial, { read: true, write: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    const info = await file.stat();
    const hash = createHash("sha256");
    const buffer = new Uint8Array(256 * 1024);
    let size = 0;
    while (true) {
      const n = await file.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      size += n;
    }
    return { file, size, hash, mtime: info.mtime?.getTime() };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * Verifies a continued download as a whole: against the sha256 in the range
 * response (sent when the file is cached), else the one `STAT` reports. With
 * neither, the `.part` is accepted unverified only when it carries the
 * file's mtime (it came from an interrupted download of this version). The
 * caller removes the `.part` when this throws.
 */
async function verifyResumed(
  client: CacheClient,
  path: string,
  partial: string,
  kept: PartialFile,
  result: GetResult,
): Promise<boolean> {
  const actual = kept.hash.digest("hex");
  const expected = result.sha256 ?? (await client.stat(path)).sha256;
  if (expected) {
    if (expected === actual) return true;
    throw new IntegrityError(path, expected, actual, `${partial} discarded`);
  }
  if (kept.mtime === result.mtime) return false;
  throw new ResumeError(
    `cannot verify ${partial}: the server has no sha256 for ${path} (it is not cached) and ` +
      `the partial file is not from an interrupted download of this version; discarded`,
  );
}

/**
 * What a failed download leaves: a `.part` with bytes in it survives a broken
 * connection (to be continued), stamped with the server's mtime; any other
 * failure removes it. Resolves to the error to throw.
 */
async function keepOrDiscard(
  error: unknown,
  at: {
    partial: string;
    path: string;
    header: GetHeader | undefined;
    received: number;
    resumeAt: number;
  },
): Promise<unknown> {
  const { partial, header, received } = at;
  if (error instanceof ConnectionError && received > 0) {
    if (header?.mtime) {
      await Deno.utime(partial, new Date(), new Date(header.mtime)).catch(() => {});
    }
    return new InterruptedDownloadError(
      `${error.message}; ${received} bytes kept in ${partial}`,
      partial,
      received,
      { cause: error },
    );
  }
  await Deno.remove(partial).catch(() => {});
  if (at.resumeAt > 0 && error instanceof ServerError && error.code === 416) {
    return new ResumeError(
      `${partial} (${at.resumeAt} bytes) is longer than ${at.path} on the server; discarded`,
    );
  }
  return error;
}

/**
 * The client's command line (see `client_cli.ts`), loaded on first use so
 * that programs using only the library do not load it. Resolves to the exit
 * status: 0 success, 1 a server error or failed verification, 2 a usage
 * error, 3 a connection failure.
 */
export async function clientMain(args: string[]): Promise<number> {
  const cli = await import("./client_cli.ts");
  return await cli.clientMain(args);
}

if (import.meta.main) {
  // Not a top-level await: client_cli.ts imports this module, and would wait
  // forever for a module still suspended at its end.
  clientMain(Deno.args).then((status) => Deno.exit(status));
}
