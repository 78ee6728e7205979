/**
 * The tcpcache server: accepts TCP connections, runs one async task per
 * connection, and answers requests strictly in order from the cache or the
 * served directory.
 *
 * Run it: `deno run -A server.ts --dir files` (see `--help`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ByteReader, LineTooLongError, writeAll } from "./byte_reader.ts";
import {
  type CacheEntry,
  DEFAULT_CAPACITY,
  FileCache,
  type FillSource,
  POLICIES,
} from "./cache.ts";
import {
  DirectoryOrigin,
  type Origin,
  OriginChangedError,
  type OriginStat,
  toOriginStat,
} from "./origin.ts";
import {
  DEFAULT_PORT,
  type ErrorCode,
  formatError,
  formatOk,
  type HeaderFields,
  MAX_REQUEST_LINE,
  parseRequest,
  ProtocolError,
  type Request,
} from "./protocol.ts";
import { parseSize } from "./units.ts";
import { VERSION } from "./version.ts";

/** The sample files served when no `--dir` is given. */
export const SAMPLE_DIR: string = decodeURIComponent(new URL("./sample", import.meta.url).pathname);

/** Options of {@linkcode startServer}. */
export interface ServerOptions {
  /**
   * The directory to serve.
   * @default {SAMPLE_DIR}
   */
  dir?: string;
  /**
   * The address to listen on.
   * @default {"127.0.0.1"}
   */
  host?: string;
  /**
   * The port to listen on; 0 picks a free one (see the handle's `addr`).
   * @default {9089}
   */
  port?: number;
  /**
   * The cache directory, created empty at start (see `FileCache.open`).
   * @default {"./cache"}
   */
  cacheDir?: string;
  /**
   * The cache's capacity in bytes.
   * @default {67108864}
   */
  cacheSize?: number;
  /**
   * The eviction policy's name.
   * @default {"fifo"}
   */
  policy?: string;
  /**
   * Connections served at once; past it, new ones get `ERR 503`.
   * @default {1024}
   */
  maxConnections?: number;
  /**
   * Milliseconds a client has to send a complete request line, counted from
   * when the server is ready for it; past it, `ERR 408` and close.
   * @default {60000}
   */
  idleTimeoutMs?: number;
  /**
   * The origin to serve instead of `dir` (tests inject faults through it).
   * @default {undefined}
   */
  origin?: Origin;
  /**
   * Where problems are reported, one line each.
   * @default {console.error}
   */
  onError?: (message: string) => void;
}

/** The counters `STATS` reports. */
export interface ServerStats {
  version: string;
  uptimeMs: number;
  connections: { open: number; total: number; rejected: number };
  requests: number;
  hits: number;
  misses: number;
  bypasses: number;
  evictions: number;
  bytesSent: number;
  bytesFromOrigin: number;
  errors: Record<string, number>;
  cache: { capacity: number; used: number; entries: number; policy: string };
}

/** A running server, as {@linkcode startServer} returns it. */
export interface ServerHandle {
  /** The address it listens on (with the real port when 0 was asked). */
  readonly addr: Deno.NetAddr;
  /** The cache it serves from. */
  readonly cache: FileCache;
  /** The counters `STATS` reports, as of now. */
  stats(): ServerStats;
  /**
   * Stops accepting, closes idle connections, lets responses in progress
   * finish, and resolves once every connection is closed.
   */
  close(): Promise<void>;
}

/** How much of a body is sent in the header's write (one syscall). */
const SMALL_BODY = 64 * 1024;
/** The chunk size for streaming large bodies and filling the cache. */
const CHUNK_SIZE = 256 * 1024;
/** How many times a request retries after losing a race with eviction. */
const LOOKUP_ATTEMPTS = 3;

const encoder = new TextEncoder();

/**
 * Starts a server and resolves once it is listening.
 *
 * @example
 * ```ts
 * import { startServer } from "./server.ts";
 * const server = await startServer({ port: 0, cacheDir: await Deno.makeTempDir() + "/c" });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.close();
 * ```
 */
export async function startServer(options: ServerOptions = {}): Promise<ServerHandle> {
  const cacheDir = options.cacheDir ?? "./cache";
  const onError = options.onError ?? console.error;
  // The origin first: a server that cannot serve its directory must not
  // create or empty a cache directory.
  const origin = options.origin ??
    await DirectoryOrigin.open(options.dir ?? SAMPLE_DIR, { hide: cacheDir });
  const cache = await FileCache.open({
    dir: cacheDir,
    capacity: options.cacheSize ?? DEFAULT_CAPACITY,
    policy: options.policy,
    onWarning: onError,
  });
  const listener = Deno.listen({
    hostname: options.host ?? "127.0.0.1",
    port: options.port ?? DEFAULT_PORT,
  });
  const server = new Server(listener, cache, origin, {
    maxConnections: options.maxConnections ?? 1024,
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    onError,
  });
  const accepting = server.acceptLoop();
  return {
    addr: listener.addr,
    cache,
    stats: () => server.stats(),
    close: () => {
      server.shutdown();
      return accepting;
    },
  };
}

interface Limits {
  maxConnections: number;
  idleTimeoutMs: number;
  onError: (message: string) => void;
}

/** A response's body: bytes in memory, or a byte range of an open file. */
type Body =
  | { bytes: Uint8Array }
  | { file: Deno.FsFile; path: string; offset: number; length: number };

/** Raised when a body could not be completed after its header was sent. */
class TruncatedBodyError extends Error {}

/** The state shared by every connection of one server. */
class Server {
  #listener: Deno.TcpListener;
  #cache: FileCache;
  #origin: Origin;
  #limits: Limits;
  #started = Date.now();
  #connections = new Set<Promise<void>>();
  #closing = false;
  #shutdown = Promise.withResolvers<"shutdown">();
  #counts = {
    open: 0,
    total: 0,
    rejected: 0,
    requests: 0,
    hits: 0,
    misses: 0,
    bypasses: 0,
    bytesSent: 0,
    bytesFromOrigin: 0,
  };
  #errors: Record<string, number> = {};
  #buffers: Uint8Array[] = [];

  constructor(listener: Deno.TcpListener, cache: FileCache, origin: Origin, limits: Limits) {
    this.#listener = listener;
    this.#cache = cache;
    this.#origin = origin;
    this.#limits = limits;
  }

  stats(): ServerStats {
    const c = this.#counts;
    return {
      version: VERSION,
      uptimeMs: Date.now() - this.#started,
      connections: { open: c.open, total: c.total, rejected: c.rejected },
      requests: c.requests,
      hits: c.hits,
      misses: c.misses,
      bypasses: c.bypasses,
      evictions: this.#cache.evictions,
      bytesSent: c.bytesSent,
      bytesFromOrigin: c.bytesFromOrigin,
      errors: { ...this.#errors },
      cache: {
        capacity: this.#cache.capacity,
        used: this.#cache.used,
        entries: this.#cache.count,
        policy: this.#cache.policy,
      },
    };
  }

  /**
   * Accepts until shutdown. An accept that fails (a client that reset before
   * it was accepted, a momentary lack of descriptors) must not end the loop,
   * or the server would silently stop accepting.
   */
  async acceptLoop(): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing) break;
        this.#limits.onError(`accept failed: ${(error as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      this.#counts.total++;
      if (this.#counts.open >= this.#limits.maxConnections) {
        this.#reject(conn);
        continue;
      }
      this.#counts.open++;
      const task = this.#serveConnection(conn).finally(() => {
        this.#counts.open--;
        this.#connections.delete(task);
      });
      this.#connections.add(task);
    }
    await Promise.all(this.#connections);
  }

  /** Stops accepting and wakes every connection waiting for a request. */
  shutdown(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#listener.close();
    this.#shutdown.resolve("shutdown");
  }

  #reject(conn: Deno.Conn): void {
    this.#counts.rejected++;
    this.#countError(503);
    const reply = encoder.encode(formatError(503, "server busy: too many connections"));
    writeAll(conn, reply).catch(() => {}).finally(() => conn.close());
  }

  async #serveConnection(conn: Deno.TcpConn): Promise<void> {
    const reader = new ByteReader(conn);
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
      while (!this.#closing) {
        const line = await this.#nextRequestLine(conn, reader);
        if (line === null) break;
        const keepOpen = await this.#answer(conn, line);
        if (!keepOpen) break;
      }
    } catch {
      // The client went away or a body could not be completed: the
      // connection ends here, and nothing else depends on it.
    } finally {
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  }

  /**
   * Waits for the next request line within the idle timeout. Resolves to
   * null when the connection should end: the client closed it, timed out
   * (408 sent), sent too long a line (413 sent), or the server is stopping.
   */
  async #nextRequestLine(conn: Deno.Conn, reader: ByteReader): Promise<Uint8Array | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#limits.idleTimeoutMs);
    });
    const read = reader.readLine(MAX_REQUEST_LINE);
    read.catch(() => {}); // settled after close when the race is lost
    try {
      const winner = await Promise.race([read, timeout, this.#shutdown.promise]);
      if (winner === "shutdown") return null;
      if (winner === "timeout") {
        await this.#sendError(conn, 408, "timed out waiting for a request line");
        return null;
      }
      return winner;
    } catch (error) {
      if (error instanceof LineTooLongError) {
        await this.#sendError(conn, 413, `request line longer than ${MAX_REQUEST_LINE} bytes`);
      }
      return null;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Answers one request line; resolves to false when the connection must close. */
  async #answer(conn: Deno.Conn, line: Uint8Array): Promise<boolean> {
    this.#counts.requests++;
    let request: Request;
    try {
      request = parseRequest(line);
    } catch (error) {
      await this.#sendError(conn, ...this.#describeError(error));
      return true;
    }
    try {
      switch (request.command) {
        case "PING":
          await this.#send(conn, formatOk(0));
          return true;
        case "QUIT":
          await this.#send(conn, formatOk(0));
          return false;
        case "GET":
          await this.#servePath(conn, request);
          return true;
        default:
          await this.#sendJson(conn, await this.#describe(request));
          return true;
      }
    } catch (error) {
      // Past a header, or with the client gone, no answer can follow.
      if (error instanceof TruncatedBodyError || isConnectionError(error)) throw error;
      await this.#sendError(conn, ...this.#describeError(error));
      return true;
    }
  }

  /** The JSON body of LIST, FILES, STAT and STATS. */
  async #describe(request: Request): Promise<unknown> {
    switch (request.command) {
      case "LIST":
        return {
          capacity: this.#cache.capacity,
          used: this.#cache.used,
          policy: this.#cache.policy,
          entries: this.#cache.entries().map((entry) => ({
            path: entry.path,
            size: entry.size,
            admitted: entry.admitted,
          })),
        };
      case "FILES":
        return { path: request.path, entries: await this.#origin.list(request.path) };
      case "STAT": {
        const stat = await this.#originStat(request.path);
        const entry = this.#cache.lookup(request.path);
        const fresh = entry?.validator === stat.validator;
        return {
          path: request.path,
          size: stat.size,
          mtime: stat.mtime,
          cached: fresh,
          sha256: fresh ? entry.sha256 : null,
        };
      }
      default:
        return this.stats();
    }
  }

  /**
   * Serves `GET`: from the cache when a fresh entry is there; otherwise fills
   * the cache from the origin and serves the new entry; otherwise (too large,
   * a range of an uncached file, no room) streams from the origin.
   */
  async #servePath(
    conn: Deno.Conn,
    request: Extract<Request, { command: "GET" }>,
  ): Promise<void> {
    const { path } = request;
    const stat = await this.#originStat(path);
    const range = checkRange(stat.size, request.offset, request.length);
    const whole = range.offset === 0 && range.length === stat.size;
    for (let attempt = 0; attempt < LOOKUP_ATTEMPTS; attempt++) {
      let entry = this.#cache.lookup(path);
      let outcome: "hit" | "miss" = "hit";
      if (entry && entry.validator !== stat.validator) {
        await this.#cache.remove(path, entry);
        entry = undefined;
      }
      if (!entry) {
        if (!whole || stat.size > this.#cache.capacity) break;
        entry = await this.#cache.fill(path, this.#originSource(path, stat));
        if (!entry) break;
        outcome = "miss";
        if (entry.validator !== stat.validator) continue; // joined an older fill
      }
      const file = await this.#cache.openEntry(entry);
      if (!file) continue; // evicted between lookup and open
      try {
        if (outcome === "hit") this.#cache.touch(path);
        this.#counts[outcome === "hit" ? "hits" : "misses"]++;
        await this.#sendBody(conn, headerOf(entry, range, outcome), { file, path, ...range });
      } finally {
        file.close();
      }
      return;
    }
    await this.#bypass(conn, path, request);
  }

  /** Stats an origin file; one that is gone leaves the cache too. */
  async #originStat(path: string): Promise<OriginStat> {
    try {
      return await this.#origin.stat(path);
    } catch (error) {
      if (error instanceof ProtocolError && error.code === 404) await this.#cache.remove(path);
      throw error;
    }
  }

  /** Streams from the origin without admitting anything. */
  async #bypass(
    conn: Deno.Conn,
    path: string,
    request: Extract<Request, { command: "GET" }>,
  ): Promise<void> {
    const { file, stat } = await this.#origin.open(path);
    try {
      const range = checkRange(stat.size, request.offset, request.length);
      this.#counts.bypasses++;
      const fields: HeaderFields = {
        size: stat.size,
        offset: range.offset,
        mtime: stat.mtime,
        cache: "bypass",
      };
      await this.#sendBody(
        conn,
        fields,
        { file, path, ...range },
        (n) => this.#counts.bytesFromOrigin += n,
      );
    } finally {
      file.close();
    }
  }

  /** The origin as a fill source: reads and checks that the file held still. */
  #originSource(path: string, stat: OriginStat): FillSource {
    return {
      stat,
      read: async (sink) => {
        const opened = await this.#origin.open(path);
        const buffer = this.#takeBuffer();
        try {
          if (opened.stat.validator !== stat.validator) throw new OriginChangedError(path);
          while (true) {
            const n = await opened.file.read(buffer);
            if (n === null) break;
            this.#counts.bytesFromOrigin += n;
            await sink(buffer.subarray(0, n));
          }
          const after = toOriginStat(await opened.file.stat());
          if (after.validator !== stat.validator) throw new OriginChangedError(path);
        } finally {
          opened.file.close();
          this.#returnBuffer(buffer);
        }
      },
    };
  }

  /**
   * Sends an `OK` header and a body. A small body goes out in the header's
   * write; a large one is streamed in chunks from a pooled buffer.
   *
   * @throws {TruncatedBodyError} when the file ends early: the header has
   *   promised more bytes, so the connection must end.
   */
  async #sendBody(
    conn: Deno.Conn,
    fields: HeaderFields,
    body: Body,
    onRead?: (n: number) => void,
  ): Promise<void> {
    if ("bytes" in body) {
      await this.#send(conn, concat(formatOk(body.bytes.length, fields), body.bytes));
      return;
    }
    const header = encoder.encode(formatOk(body.length, fields));
    const { file, path, offset, length } = body;
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
    if (length <= SMALL_BODY) {
      const message = new Uint8Array(header.length + length);
      message.set(header);
      if (await readFull(file, message.subarray(header.length)) < length) {
        throw new OriginChangedError(path);
      }
      onRead?.(length);
      await this.#send(conn, message);
      return;
    }
    await this.#send(conn, header);
    const buffer = this.#takeBuffer();
    try {
      let left = length;
      while (left > 0) {
        const n = await file.read(buffer.subarray(0, Math.min(left, buffer.length)));
        if (n === null) throw new TruncatedBodyError(`${path} ended early`);
        onRead?.(n);
        await this.#send(conn, buffer.subarray(0, n));
        left -= n;
      }
    } catch (error) {
      if (isConnectionError(error)) throw error;
      this.#limits.onError(`response cut short: ${(error as Error).message}`);
      throw new TruncatedBodyError((error as Error).message);
    } finally {
      this.#returnBuffer(buffer);
    }
  }

  async #sendJson(conn: Deno.Conn, value: unknown): Promise<void> {
    const body = encoder.encode(JSON.stringify(value));
    await this.#sendBody(conn, { type: "json" }, { bytes: body });
  }

  async #sendError(conn: Deno.Conn, code: ErrorCode, message: string): Promise<void> {
    this.#countError(code);
    await this.#send(conn, formatError(code, message)).catch(() => {});
  }

  async #send(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    await writeAll(conn, bytes);
    this.#counts.bytesSent += bytes.length;
  }

  /** Maps any error to the answer the client gets; the one place that does. */
  #describeError(error: unknown): [ErrorCode, string] {
    if (error instanceof ProtocolError) return [error.code, error.message];
    if (error instanceof OriginChangedError) return [500, `${error.message}; try again`];
    const message = error instanceof Error ? error.message : String(error);
    this.#limits.onError(`request failed: ${message}`);
    return [500, `server error: ${message}`];
  }

  #countError(code: ErrorCode): void {
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
  }

  #takeBuffer(): Uint8Array {
    return this.#buffers.pop() ?? new Uint8Array(CHUNK_SIZE);
  }

  #returnBuffer(buffer: Uint8Array): void {
    if (this.#buffers.length < 64) this.#buffers.push(buffer);
  }
}

/**
 * Checks a requested range against a file's size.
 *
 * @throws {ProtocolError} 416 when it reaches past the end.
 */
function checkRange(
  size: number,
  offset = 0,
  length?: number,
): { offset: number; length: number } {
  if (offset > size) {
    throw new ProtocolError(416, `offset ${offset} is past the end (size ${size})`);
  }
  const wanted = length ?? size - offset;
  if (offset + wanted > size) {
    throw new ProtocolError(416, `range ${offset}+${wanted} is past the end (size ${size})`);
  }
  return { offset, length: wanted };
}

function headerOf(
  entry: CacheEntry,
  range: { offset: number },
  outcome: "hit" | "miss",
): HeaderFields {
  return {
    size: entry.size,
    offset: range.offset,
    mtime: entry.mtime,
    cache: outcome,
    sha256: entry.sha256,
  };
}

/** Reads until `target` is full or the file ends; resolves to the count. */
async function readFull(file: Deno.FsFile, target: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < target.length) {
    const n = await file.read(target.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

function concat(header: string, body: Uint8Array): Uint8Array {
  const head = encoder.encode(header);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

function isConnectionError(error: unknown): boolean {
  return error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.BadResource;
}

const USAGE = `tcpcache server ${VERSION}: serves a directory over TCP through a byte-bounded cache

Usage: deno run -A server.ts [options]
       tcpcache serve [options]

Options:
  --dir DIR             directory to serve (default: the bundled sample files)
  --host HOST           address to listen on (default: 127.0.0.1)
  --port PORT           port to listen on, 0 for any free one (default: ${DEFAULT_PORT})
  --cache-dir DIR       cache directory, created empty at start (default: ./cache)
  --cache-size SIZE     cache capacity: bytes or K, KiB, M, MiB, G, GiB, KB, MB, GB
                        (default: 64MiB)
  --policy NAME         eviction policy: ${Object.keys(POLICIES).join(", ")} (default: fifo)
  --max-connections N   connections served at once; more get ERR 503 (default: 1024)
  --idle-timeout SECS   time to send a request line before ERR 408 (default: 60)
  -h, --help            show this help

Example:
  deno run -A server.ts --dir files --port 9089 --cache-size 128MiB
`;

/**
 * The server's command line: parses `args`, starts the server, prints the
 * `listening on HOST:PORT` line and serves until SIGINT or SIGTERM.
 * Resolves to the process exit code.
 */
export async function serverMain(args: string[]): Promise<number> {
  let options: ServerOptions;
  try {
    const parsed = parseServerArgs(args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    options = parsed;
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  let server: ServerHandle;
  try {
    server = await startServer(options);
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}`);
    return 1;
  }
  // Handlers first: a supervisor may signal as soon as it reads the line.
  const stopped = Promise.withResolvers<void>();
  const stop = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const { hostname, port } = server.addr;
  console.log(
    `tcpcache ${VERSION} listening on ${hostname}:${port} ` +
      `(dir ${options.dir ?? SAMPLE_DIR}, cache ${options.cacheDir ?? "./cache"}, ` +
      `capacity ${server.cache.capacity} bytes, policy ${server.cache.policy})`,
  );
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  await server.close();
  return 0;
}

function parseServerArgs(args: string[]): ServerOptions | "help" {
  const { values, positionals } = parseArgs({
    args,
    options: {
      dir: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "cache-dir": { type: "string" },
      "cache-size": { type: "string" },
      policy: { type: "string" },
      "max-connections": { type: "string" },
      "idle-timeout": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) return "help";
  if (positionals.length > 0) throw new Error(`unexpected argument: ${positionals[0]}`);
  return {
    dir: values.dir,
    host: values.host,
    port: values.port === undefined ? undefined : parseInteger("--port", values.port, 65535),
    cacheDir: values["cache-dir"],
    cacheSize: values["cache-size"] === undefined ? undefined : parseSize(values["cache-size"]),
    policy: values.policy,
    maxConnections: values["max-connections"] === undefined
      ? undefined
      : parseInteger("--max-connections", values["max-connections"], 1e9, 1),
    idleTimeoutMs: values["idle-timeout"] === undefined
      ? undefined
      : parseSeconds("--idle-timeout", values["idle-timeout"]),
  };
}

function parseInteger(flag: string, text: string, max: number, min = 0): number {
  const value = Number(text);
  if (!/^[0-9]+$/.test(text) || value < min || value > max) {
    throw new Error(`${flag} must be a whole number from ${min} to ${max}, not "${text}"`);
  }
  return value;
}

function parseSeconds(flag: string, text: string): number {
  const seconds = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || seconds <= 0) {
    throw new Error(`${flag} must be a positive number of seconds, not "${text}"`);
  }
  return Math.round(seconds * 1000);
}

if (import.meta.main) {
  Deno.exit(await serverMain(Deno.args));
}
