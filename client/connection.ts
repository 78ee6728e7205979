/**
 * One connection to a tcpcache server, for programs: requests are pipelined
 * and answered in order, bodies are streamed to a sink and verified by
 * sha256.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { ByteReader, writeAll } from "../util/byte_reader.ts";
import { DEFAULTS } from "../defaults.ts";
import { ConnectionError, IntegrityError, ServerError, UnverifiedError } from "./errors.ts";
import {
  compareNames,
  formatFilesRequest,
  formatRequest,
  type ListingWindow,
  parseResponseHeader,
} from "../protocol.ts";

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's host name or address.
   * @default {DEFAULTS.host}
   */
  host?: string;
  /**
   * The server's port.
   * @default {DEFAULTS.port}
   */
  port?: number;
  /**
   * Speak TLS, and verify the server's certificate (against `caCerts`, or
   * the system's roots) and that it names `host`. A certificate that does
   * not verify fails the connection: there is no fallback to plain TCP.
   * @default {false}
   */
  tls?: boolean;
  /**
   * The certificates (PEM) of the authorities to trust instead of the
   * system's roots: a private CA. Implies `tls`.
   * @default {undefined}
   */
  caCerts?: string[];
  /**
   * A token to present right after connecting (`AUTH`), for a server that
   * needs one.
   * @default {undefined}
   */
  token?: string;
}

/** The options that say how to reach a server, not which: TLS, its CAs, the token. */
export type ConnectionSecurity = Pick<ConnectOptions, "tls" | "caCerts" | "token">;

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
  /**
   * The whole file's sha256, when the server knows it (for a streamed miss,
   * once `STAT` has answered it: not yet in the header).
   */
  sha256?: string;
  /** True when the whole file was received and matched `sha256`. */
  verified: boolean;
  /**
   * True for a miss the server sent while copying it into its cache
   * (`streamed=1`): its sha256 came by `STAT` after the body.
   */
  streamed?: boolean;
  /**
   * True when the server sent a version past its freshness lifetime
   * (`stale=1`: it serves stale copies while revalidating, or while its
   * origin fails; see docs/origin.md).
   */
  stale?: boolean;
  /** Seconds since the origin last confirmed this version, when the server says (`age=`). */
  ageSeconds?: number;
  /** The body, unless a `sink` took it. */
  bytes?: Uint8Array;
}

/** An answer to `LIST`: the cache's entries, next to be evicted first. */
export interface CacheListing {
  /** The cache's capacity in bytes. */
  capacity: number;
  /** Bytes the entries hold. */
  used: number;
  /** The eviction policy's name. */
  policy: string;
  /** The entries in eviction order; `admitted` is ms since the epoch. */
  entries: { path: string; size: number; admitted: number }[];
}

/** A directory's listing, whole (see {@linkcode TcpCacheClient.files}). */
export interface FileListing {
  /** The directory listed ("" for the served directory itself). */
  path: string;
  /**
   * Its files and subdirectories, in byte order of their names; `mtime` is
   * ms since the epoch.
   */
  entries: { name: string; type: "file" | "dir"; size: number; mtime: number }[];
}

/** One answer to `FILES`: a page of a listing (see {@linkcode TcpCacheClient.filesPage}). */
export interface FilesPage extends FileListing {
  /** Present when more entries follow: the `after` of the next page. */
  next?: string;
}

/** An answer to `STAT`. */
export interface FileStat {
  /** The file's path. */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** Its modification time, ms since the epoch. */
  mtime: number;
  /** Whether the cache holds this version of it. */
  cached: boolean;
  /** Its hex sha256 when the cache holds it, else null. */
  sha256: string | null;
}

/** An answer to `STATS` (see `ServerStats` in server.ts for every field). */
export type Stats = Record<string, unknown> & {
  version: string;
  requests: number;
  hits: number;
  misses: number;
  bypasses: number;
};

type Header = { length: number; fields: Record<string, string> };

/** A failure of the caller's own code (a sink writing to disk), not of the connection. */
class LocalFailure extends Error {
  constructor(readonly error: unknown) {
    super("the caller's callback failed", { cause: error });
    this.name = "LocalFailure";
  }
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
 * Checks a streamed miss's bytes (their sha256, `actual`) against the digest
 * `STAT` answers for the same version (same size and mtime), and resolves
 * to it. No digest to check against is an error too: the bytes are never
 * accepted unchecked.
 *
 * @throws {IntegrityError} when they differ.
 * @throws {UnverifiedError} when `STAT` has no digest of this version.
 */
async function verifyStreamed(
  path: string,
  received: GetResult,
  actual: string,
  asked: Promise<FileStat>,
): Promise<string> {
  let stat: FileStat;
  try {
    stat = await asked;
  } catch (error) {
    if (!(error instanceof ServerError)) throw error;
    throw new UnverifiedError(path, `STAT answered ${error.code} ${error.message}`);
  }
  if (stat.size !== received.size || stat.mtime !== received.mtime) {
    throw new UnverifiedError(path, "it changed on the server right after it was sent");
  }
  if (!stat.sha256) throw new UnverifiedError(path, "the server has no sha256 of it");
  if (stat.sha256 !== actual) throw new IntegrityError(path, stat.sha256, actual);
  received.verified = true;
  return stat.sha256;
}

/**
 * Connects to a tcpcache server.
 *
 * @example
 * ```ts
 * import { connect } from "@tcpcache/tcpcache/client";
 * const client = await connect({ host: "127.0.0.1", port: 9089 });
 * const { bytes, cache } = await client.get("hello.txt");
 * console.log(cache, new TextDecoder().decode(bytes));
 * client.close();
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<TcpCacheClient> {
  const host = options.host ?? DEFAULTS.host;
  const port = options.port ?? DEFAULTS.port;
  const tls = options.tls || options.caCerts !== undefined;
  let conn: Deno.Conn;
  try {
    const tcp = await Deno.connect({ hostname: host, port });
    tcp.setNoDelay(true); // TLS rides on it: its small writes must not wait either
    conn = tcp;
    if (tls) {
      conn = await Deno.startTls(tcp, { hostname: host, caCerts: options.caCerts });
      // The handshake now, so that a certificate that does not verify is
      // this error, not a broken first request.
      await (conn as Deno.TlsConn).handshake().catch((error) => {
        conn.close();
        const message = (error as Error).message;
        // A plain server's first bytes are not a TLS record.
        const hint = /corrupt message|InvalidContentType/.test(message)
          ? " (does this port speak TLS?)"
          : "";
        throw new Error(`TLS handshake failed: ${message}${hint}`, { cause: error });
      });
    }
  } catch (error) {
    throw new ConnectionError(`cannot connect to ${host}:${port}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const client = new TcpCacheClient(conn);
  if (options.token !== undefined) {
    try {
      await client.authenticate(options.token);
    } catch (error) {
      client.close();
      throw error;
    }
  }
  return client;
}

/**
 * What a client of tcpcache offers, whether one connection
 * ({@linkcode TcpCacheClient}) or a whole cluster (`ClusterClient` in
 * client/cluster.ts).
 */
export interface CacheClient {
  /** Fetches a file or a byte range of it (see {@linkcode TcpCacheClient.get}). */
  get(path: string, options?: GetOptions): Promise<GetResult>;
  /** The cache's entries, in eviction order. */
  list(): Promise<CacheListing>;
  /** A directory of the served tree, whole (every page of its listing). */
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
   * the server's sha256: the one in the header, or, for a miss the server
   * streams while it copies it in (`streamed=1`), the one `STAT` answers
   * right after the body, on this connection.
   *
   * @throws {ServerError} when the server answers an error (e.g. 404).
   * @throws {IntegrityError} when the bytes do not match the sha256.
   * @throws {UnverifiedError} for a streamed miss whose sha256 the server
   *   could not give (the file changed or vanished right after).
   * @throws whatever `sink` or `onHeader` throws; the connection is then
   *   closed, since the rest of the body was not read.
   */
  async get(path: string, options: GetOptions = {}): Promise<GetResult> {
    const args: (string | number)[] = [path];
    if (options.offset !== undefined || options.length !== undefined) {
      args.push(options.offset ?? 0);
      if (options.length !== undefined) args.push(options.length);
    }
    // A streamed miss's digest, asked as soon as its header is read: the
    // answer follows the body (answers come in order). Awaited only once
    // the GET's own answer is done, or the two would wait for each other.
    let digest: { stat: Promise<FileStat>; actual?: string } | undefined;
    const result = await this.#exchange(formatRequest("GET", args), async ({ length, fields }) => {
      const size = Number(fields.size ?? length);
      const offset = Number(fields.offset ?? 0);
      const whole = offset === 0 && length === size;
      const mtime = Number(fields.mtime ?? 0);
      const cache = fields.cache as GetResult["cache"];
      if (whole && fields.streamed === "1" && !fields.sha256) {
        digest = { stat: this.stat(path) };
        digest.stat.catch(() => {}); // the GET's own failure is the one reported
      }
      await local(() =>
        options.onHeader?.({ size, offset, length, mtime, cache, sha256: fields.sha256 })
      );
      const hash = whole && (fields.sha256 || digest) ? createHash("sha256") : undefined;
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
      if (hash && digest) {
        digest.actual = hash.digest("hex");
      } else if (hash) {
        const actual = hash.digest("hex");
        if (actual !== fields.sha256) throw new IntegrityError(path, fields.sha256, actual);
      }
      const result: GetResult = {
        size,
        offset,
        length,
        mtime,
        cache,
        sha256: fields.sha256,
        verified: hash !== undefined,
        bytes,
      };
      if (fields.stale === "1") result.stale = true;
      if (fields.age !== undefined) result.ageSeconds = Number(fields.age);
      return result;
    });
    if (digest) {
      result.streamed = true;
      result.sha256 = await verifyStreamed(path, result, digest.actual!, digest.stat);
    }
    return result;
  }

  /** The cache's contents, in eviction order. */
  list(): Promise<CacheListing> {
    return this.#json(formatRequest("LIST"));
  }

  /**
   * The entries of a directory on the server ("" for the served directory),
   * all of them: the server answers a page at a time (up to 10,000 entries
   * each), and this asks for the next page until there is none.
   *
   * @throws {ServerError} when the server answers an error (e.g. 404).
   * @throws {ConnectionError} when a page does not move past the one before.
   */
  async files(dir = ""): Promise<FileListing> {
    const entries: FileListing["entries"] = [];
    let page = await this.filesPage(dir);
    entries.push(...page.entries);
    while (page.next !== undefined) {
      const after: string = page.next;
      page = await this.filesPage(dir, { after });
      entries.push(...page.entries);
      // A server that sent the same page again would have this ask forever.
      if (page.next !== undefined && compareNames(page.next, after) <= 0) {
        throw new ConnectionError(`the server's listing of ${dir || "."} did not move on`);
      }
    }
    return { path: page.path, entries };
  }

  /**
   * One page of a directory's listing: at most `window.limit` entries
   * (at most, and by default, 10,000) whose names follow `window.after`;
   * `next`, when present, is the `after` of the page that follows.
   *
   * @throws {ServerError} when the server answers an error: 400 for a
   *   window out of bounds, 404 for no such directory.
   */
  filesPage(dir = "", window: ListingWindow = {}): Promise<FilesPage> {
    return this.#json(formatFilesRequest(dir, window));
  }

  /** A file's size, mtime, and whether (and with which sha256) it is cached. */
  stat(path: string): Promise<FileStat> {
    return this.#json(formatRequest("STAT", [path]));
  }

  /** The server's counters. */
  stats(): Promise<Stats> {
    return this.#json(formatRequest("STATS"));
  }

  /**
   * Presents a token (`AUTH`): the server then answers this connection's
   * requests as the token allows.
   *
   * @throws {ServerError} 401 for a token the server does not know, 429
   *   when this address made too many wrong attempts.
   */
  async authenticate(token: string): Promise<void> {
    await this.#exchange(formatRequest("AUTH", [token]), () => {});
  }

  /** Checks that the server answers. */
  async ping(): Promise<void> {
    await this.#exchange(formatRequest("PING"), () => {});
  }

  /** Says goodbye (`QUIT`) and closes the connection. */
  async quit(): Promise<void> {
    await this.#exchange(formatRequest("QUIT"), () => {});
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

  /** Sends `request` (a formatted line) and parses its answer's JSON body. */
  #json<T>(request: string): Promise<T> {
    return this.#exchange(request, async ({ length }) => {
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
    request: string,
    readBody: (header: Header) => Promise<T> | T,
  ): Promise<T> {
    const line = new TextEncoder().encode(request);
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
