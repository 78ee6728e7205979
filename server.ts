/**
 * The tcpcache server: accepts TCP connections, runs one async task per
 * connection, and answers requests strictly in order from the cache or the
 * served directory.
 *
 * Run it: `deno run -A server.ts --dir files` (see `--help`).
 *
 * @module
 */

import { ByteReader, LineTooLongError, writeAll } from "./byte_reader.ts";
import { Outbox } from "./outbox.ts";
import { Semaphore } from "./semaphore.ts";
import { type CacheEntry, DEFAULT_CAPACITY, FileCache, type FillSource } from "./cache.ts";
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
   * Bytes of small cache entries (64 KiB or less) also held in memory, so
   * that their hits need no file open; 0 turns it off.
   * @default {33554432}
   */
  memoryBudget?: number;
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
   * Milliseconds a client may go without taking a byte of a response before
   * the server drops the connection and frees what it held.
   * @default {60000}
   */
  sendTimeoutMs?: number;
  /**
   * Milliseconds `close()` waits for responses in progress before it closes
   * their connections.
   * @default {10000}
   */
  shutdownTimeoutMs?: number;
  /**
   * Files (origin and cache) open at once; further requests wait for one.
   * A cache fill holds two.
   * @default {512}
   */
  maxOpenFiles?: number;
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
  /**
   * Called once per request, after its answer was handed to the connection
   * (the server's access log).
   * @default {undefined}
   */
  onRequest?: (record: RequestRecord) => void;
  /**
   * Reports failures with their stack traces.
   * @default {false}
   */
  debug?: boolean;
}

/** One answered request, as `onRequest` hears of it. */
export interface RequestRecord {
  /** When the request line arrived, ms since the epoch. */
  time: number;
  /** The client's address, `host:port`. */
  client: string;
  /** The command (`-` when the line did not parse). */
  command: string;
  /** The path, for commands that take one. */
  path?: string;
  /** `OK`, or the error code sent. */
  status: "OK" | ErrorCode;
  /** Bytes of the answer, header included. */
  bytes: number;
  /** Milliseconds from the request line to the answer's last byte handed over. */
  ms: number;
  /** Where a `GET` was served from. */
  cache?: "hit" | "miss" | "bypass";
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
  /** Connections dropped because the client stopped taking bytes. */
  sendTimeouts: number;
  errors: Record<string, number>;
  /** `memory`: bytes of small entries also held in memory. */
  cache: { capacity: number; used: number; entries: number; policy: string; memory: number };
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
   * finish (for at most `shutdownTimeoutMs`, then closes them too), and
   * resolves once every connection is closed.
   */
  close(): Promise<void>;
}

/** How much of a body is sent in the header's write (one syscall). */
const SMALL_BODY = 64 * 1024;
/**
 * Chunk sizes for streaming bodies and filling the cache: big chunks make
 * fewer system calls on a big file; small ones keep memory low when hundreds
 * of connections each fetch a file of a few MiB. Each transfer holds two.
 */
const CHUNK_SIZES = { small: 64 * 1024, large: 256 * 1024 } as const;
/** Bodies from this size on are moved in large chunks. */
const LARGE_BODY = 8 * 1024 * 1024;
/** Each connection's read buffer: twice the longest request line. */
const READ_BUFFER = 2 * MAX_REQUEST_LINE;
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
  // The origin and the port first: a server that cannot serve its directory
  // or take its port must not create or empty a cache directory (which may
  // be a running server's).
  const origin = options.origin ??
    await DirectoryOrigin.open(options.dir ?? SAMPLE_DIR, { hide: cacheDir });
  const listener = Deno.listen({
    hostname: options.host ?? "127.0.0.1",
    port: options.port ?? DEFAULT_PORT,
  });
  let cache: FileCache;
  try {
    cache = await FileCache.open({
      dir: cacheDir,
      capacity: options.cacheSize ?? DEFAULT_CAPACITY,
      policy: options.policy,
      memoryBudget: options.memoryBudget,
      onWarning: onError,
    });
  } catch (error) {
    listener.close();
    throw error;
  }
  const limits: Limits = {
    maxConnections: options.maxConnections ?? 1024,
    idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    sendTimeoutMs: options.sendTimeoutMs ?? 60_000,
    maxOpenFiles: options.maxOpenFiles ?? 512,
    onError,
    onRequest: options.onRequest,
    debug: options.debug ?? false,
  };
  const server = new Server(listener, cache, origin, limits);
  const accepting = server.acceptLoop();
  return {
    addr: listener.addr,
    cache,
    stats: () => server.stats(),
    close: () => {
      server.shutdown(options.shutdownTimeoutMs ?? 10_000);
      return accepting;
    },
  };
}

interface Limits {
  maxConnections: number;
  idleTimeoutMs: number;
  sendTimeoutMs: number;
  maxOpenFiles: number;
  onError: (message: string) => void;
  onRequest?: (record: RequestRecord) => void;
  debug: boolean;
}

/** A response's body: bytes in memory, or a byte range of an open file. */
type Body =
  | { bytes: Uint8Array }
  | { file: Deno.FsFile; path: string; offset: number; length: number };

/** Raised when a body could not be completed after its header was sent. */
class TruncatedBodyError extends Error {}

/** One client connection and what the server keeps for it. */
interface Session {
  conn: Deno.TcpConn;
  /** The client's address, `host:port`, for the access log. */
  client: string;
  reader: ByteReader;
  outbox: Outbox;
  /** Bytes of the answer in progress, and where it was served from. */
  answer: { bytes: number; status: "OK" | ErrorCode; cache?: "hit" | "miss" | "bypass" };
  /** Set while waiting for a request line: ends the wait at shutdown. */
  wake?: () => void;
}

/** The state shared by every connection of one server. */
class Server {
  #listener: Deno.TcpListener;
  #cache: FileCache;
  #origin: Origin;
  #limits: Limits;
  #started = Date.now();
  #connections = new Set<Promise<void>>();
  #sessions = new Set<Session>();
  #closing = false;
  #sweeper: ReturnType<typeof setInterval>;
  #files: Semaphore;
  // A descriptor held in reserve: when accept fails for lack of descriptors,
  // closing it makes room to accept one client and tell it ERR 503.
  #spare: Deno.FsFile | undefined;
  #lastAcceptReport = 0;
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
    sendTimeouts: 0,
  };
  #errors: Record<string, number> = {};
  #buffers = { small: [] as Uint8Array[], large: [] as Uint8Array[] };
  // Weak: a header goes when its entry leaves the cache and is forgotten.
  #hitHeaders = new WeakMap<CacheEntry, Uint8Array>();

  constructor(listener: Deno.TcpListener, cache: FileCache, origin: Origin, limits: Limits) {
    this.#listener = listener;
    this.#cache = cache;
    this.#origin = origin;
    this.#limits = limits;
    this.#files = new Semaphore(limits.maxOpenFiles);
    this.#spare = openSpare();
    const every = Math.max(10, Math.min(1000, limits.sendTimeoutMs / 4));
    this.#sweeper = setInterval(() => this.#dropStalledWriters(), every);
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
      sendTimeouts: c.sendTimeouts,
      errors: { ...this.#errors },
      cache: {
        capacity: this.#cache.capacity,
        used: this.#cache.used,
        entries: this.#cache.count,
        policy: this.#cache.policy,
        memory: this.#cache.memoryUsed,
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
        await this.#acceptFailed(error);
        continue;
      }
      this.#counts.total++;
      if (this.#counts.open >= this.#limits.maxConnections) {
        this.#track(this.#reject(conn, "server busy: too many connections"));
        continue;
      }
      this.#counts.open++;
      this.#track(this.#serveConnection(conn).finally(() => this.#counts.open--));
    }
    await Promise.all(this.#connections);
    clearInterval(this.#sweeper);
    this.#spare?.close();
    this.#spare = undefined;
  }

  /** Keeps a connection's task until it ends, so that close() waits for it. */
  #track(task: Promise<void>): void {
    const tracked = task.finally(() => this.#connections.delete(tracked));
    this.#connections.add(tracked);
  }

  /**
   * Stops accepting and wakes every connection waiting for a request; after
   * `timeoutMs`, closes the connections still busy.
   */
  shutdown(timeoutMs: number): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#listener.close();
    for (const session of this.#sessions) session.wake?.();
    const deadline = setTimeout(() => {
      for (const session of this.#sessions) closeQuietly(session.conn);
    }, timeoutMs);
    Promise.all(this.#connections).then(() => clearTimeout(deadline));
  }

  /**
   * Out of descriptors: sheds one waiting client with a 503, using the spare
   * descriptor, which is taken back once that client is gone (meanwhile
   * accepting goes on, backing off). Other failures: backs off briefly, and
   * reports at most one a second.
   */
  async #acceptFailed(error: unknown): Promise<void> {
    if (isOutOfDescriptors(error) && this.#spare) {
      this.#spare.close();
      this.#spare = undefined;
      try {
        const conn = await this.#listener.accept();
        this.#counts.total++;
        const refused = this.#reject(conn, "server busy: out of file descriptors");
        this.#track(refused.finally(() => this.#spare ??= openSpare()));
      } catch {
        this.#spare = openSpare(); // the client left first
      }
      return;
    }
    if (isOutOfDescriptors(error)) {
      await new Promise((resolve) => setTimeout(resolve, 10)); // the spare is in use
      return;
    }
    const now = Date.now();
    if (now - this.#lastAcceptReport >= 1000) {
      this.#lastAcceptReport = now;
      this.#limits.onError(`accept failed: ${(error as Error).message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  /** Answers `ERR 503` right after accept, and closes. */
  async #reject(conn: Deno.Conn, message: string): Promise<void> {
    this.#counts.rejected++;
    this.#countError(503);
    try {
      await writeAll(conn, encoder.encode(formatError(503, message)));
      await linger(conn);
    } catch {
      // the client is gone
    } finally {
      closeQuietly(conn);
    }
  }

  /** Drops connections whose client has not taken a byte for the send timeout. */
  #dropStalledWriters(): void {
    const now = performance.now();
    for (const session of this.#sessions) {
      const since = session.outbox.writingSince;
      if (since !== 0 && now - since > this.#limits.sendTimeoutMs) {
        this.#counts.sendTimeouts++;
        this.#sessions.delete(session);
        closeQuietly(session.conn); // the pending write fails, and the task ends
      }
    }
  }

  async #serveConnection(conn: Deno.TcpConn): Promise<void> {
    const { hostname, port } = conn.remoteAddr;
    const session: Session = {
      conn,
      client: `${hostname}:${port}`,
      answer: { bytes: 0, status: "OK" },
      reader: new ByteReader(conn, READ_BUFFER),
      outbox: new Outbox(conn, (n) => this.#counts.bytesSent += n),
    };
    this.#sessions.add(session);
    try {
      conn.setNoDelay(true);
      while (!this.#closing) {
        // Answers to pipelined requests are coalesced; they go out once no
        // further request is waiting in the buffer.
        const pipelined = session.reader.hasBufferedLine;
        if (!pipelined) await session.outbox.flush();
        const line = await this.#nextRequestLine(session, pipelined);
        if (line === null) break;
        const keepOpen = await this.#answer(session, line);
        if (!keepOpen) break;
      }
      await session.outbox.flush();
    } catch {
      // The client went away, stalled, or a body could not be completed:
      // the connection ends here, and nothing else depends on it.
    } finally {
      this.#sessions.delete(session);
      closeQuietly(conn);
    }
  }

  /**
   * Waits for the next request line within the idle timeout. Resolves to
   * null when the connection should end: the client closed it, timed out
   * (408 sent), sent too long a line (413 sent), or the server is stopping.
   */
  async #nextRequestLine(session: Session, pipelined: boolean): Promise<Uint8Array | null> {
    if (this.#closing) return null;
    // A pipelined request already here needs neither timer nor race.
    if (pipelined) return await this.#readBufferedLine(session);
    // A fresh promise per wait: racing one long-lived promise would keep
    // every request's reaction alive until it settles (a leak).
    const wakeUp = Promise.withResolvers<"timeout" | "shutdown">();
    const timer = setTimeout(() => wakeUp.resolve("timeout"), this.#limits.idleTimeoutMs);
    session.wake = () => wakeUp.resolve("shutdown");
    const read = session.reader.readLine(MAX_REQUEST_LINE);
    read.catch(() => {}); // settled after close when the race is lost
    try {
      const winner = await Promise.race([read, wakeUp.promise]);
      if (winner === "shutdown") return null;
      if (winner === "timeout") {
        await this.#sendFinalError(session, 408, "timed out waiting for a request line", read);
        return null;
      }
      return winner;
    } catch (error) {
      if (error instanceof LineTooLongError) await this.#lineTooLong(session);
      return null;
    } finally {
      clearTimeout(timer);
      session.wake = undefined;
    }
  }

  /** Reads a line known to be buffered; only its length can still fail it. */
  async #readBufferedLine(session: Session): Promise<Uint8Array | null> {
    try {
      return await session.reader.readLine(MAX_REQUEST_LINE);
    } catch {
      await this.#lineTooLong(session);
      return null;
    }
  }

  #lineTooLong(session: Session): Promise<void> {
    const message = `request line longer than ${MAX_REQUEST_LINE} bytes`;
    return this.#sendFinalError(session, 413, message);
  }

  /**
   * Answers one request line and logs it; resolves to false when the
   * connection must close.
   */
  async #answer(session: Session, line: Uint8Array): Promise<boolean> {
    const time = Date.now();
    const started = performance.now();
    session.answer = { bytes: 0, status: "OK" };
    let request: Request | undefined;
    try {
      return await this.#answerRequest(session, line, (parsed) => request = parsed);
    } finally {
      this.#limits.onRequest?.({
        time,
        client: session.client,
        command: request?.command ?? "-",
        path: request && "path" in request ? request.path : undefined,
        status: session.answer.status,
        bytes: session.answer.bytes,
        ms: performance.now() - started,
        cache: session.answer.cache,
      });
    }
  }

  async #answerRequest(
    session: Session,
    line: Uint8Array,
    parsed: (request: Request) => void,
  ): Promise<boolean> {
    this.#counts.requests++;
    let request: Request;
    try {
      request = parseRequest(line);
    } catch (error) {
      await this.#sendError(session, ...this.#describeError(error));
      return true;
    }
    parsed(request);
    try {
      switch (request.command) {
        case "PING":
          await this.#send(session, formatOk(0));
          return true;
        case "QUIT":
          await this.#send(session, formatOk(0));
          return false;
        case "GET":
          await this.#servePath(session, request);
          return true;
        default:
          await this.#sendJson(session, await this.#describe(request));
          return true;
      }
    } catch (error) {
      // Past a header, or with the client gone, no answer can follow.
      if (error instanceof TruncatedBodyError || isConnectionError(error)) throw error;
      const [code, message] = this.#describeError(error);
      if (code === 503) {
        await this.#sendFinalError(session, code, message);
        return false;
      }
      await this.#sendError(session, code, message);
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
    session: Session,
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
        entry = await this.#fill(path, stat);
        if (!entry) break;
        outcome = "miss";
        if (entry.validator !== stat.validator) continue; // joined an older fill
      }
      const admitted = entry;
      const inMemory = admitted.bytes;
      if (inMemory) {
        this.#countServed(session, path, outcome);
        if (outcome === "hit" && whole) {
          // The hottest path: a whole small file from memory, its header made once.
          await this.#send(session, this.#hitHeader(admitted));
          await this.#send(session, inMemory);
          return;
        }
        const body = inMemory.subarray(range.offset, range.offset + range.length);
        await this.#sendBody(session, headerOf(admitted, range, outcome), { bytes: body });
        return;
      }
      const served = await this.#files.with(1, async () => {
        const file = await this.#cache.openEntry(admitted);
        if (!file) {
          // Evicted between lookup and open (then this does nothing), or its
          // file vanished: an entry without a file must not stay.
          await this.#cache.remove(path, admitted);
          return false;
        }
        try {
          this.#countServed(session, path, outcome);
          const fields = headerOf(admitted, range, outcome);
          await this.#sendBody(session, fields, { file, path, ...range });
        } finally {
          file.close();
        }
        return true;
      });
      if (served) return;
    }
    await this.#bypass(session, path, request);
  }

  /** The header of a whole-file hit on `entry`, encoded once per entry. */
  #hitHeader(entry: CacheEntry): Uint8Array {
    let header = this.#hitHeaders.get(entry);
    if (!header) {
      header = encoder.encode(formatOk(entry.size, headerOf(entry, { offset: 0 }, "hit")));
      this.#hitHeaders.set(entry, header);
    }
    return header;
  }

  #countServed(session: Session, path: string, outcome: "hit" | "miss"): void {
    if (outcome === "hit") this.#cache.touch(path);
    this.#counts[outcome === "hit" ? "hits" : "misses"]++;
    session.answer.cache = outcome;
  }

  /**
   * Fills the cache from the origin. A fill holds two file handles (origin
   * and cache file); a request that joins a fill in flight holds none.
   */
  #fill(path: string, stat: OriginStat): Promise<CacheEntry | undefined> {
    const fill = () => this.#cache.fill(path, this.#originSource(path, stat));
    return this.#cache.filling(path) ? fill() : this.#files.with(2, fill);
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
  #bypass(
    session: Session,
    path: string,
    request: Extract<Request, { command: "GET" }>,
  ): Promise<void> {
    return this.#files.with(1, async () => {
      const { file, stat } = await this.#origin.open(path);
      try {
        const range = checkRange(stat.size, request.offset, request.length);
        this.#counts.bypasses++;
        session.answer.cache = "bypass";
        const fields: HeaderFields = {
          size: stat.size,
          offset: range.offset,
          mtime: stat.mtime,
          cache: "bypass",
        };
        await this.#sendBody(
          session,
          fields,
          { file, path, ...range },
          (n) => this.#counts.bytesFromOrigin += n,
        );
      } finally {
        file.close();
      }
    });
  }

  /** The origin as a fill source: reads and checks that the file held still. */
  #originSource(path: string, stat: OriginStat): FillSource {
    return {
      stat,
      read: async (sink) => {
        const opened = await this.#origin.open(path);
        const buffers = this.#takeBuffers(stat.size);
        try {
          if (opened.stat.validator !== stat.validator) throw new OriginChangedError(path);
          // Read to the end, not just `size` bytes: a file that grew is caught.
          await readChunks(opened.file, buffers, Infinity, async (chunk) => {
            this.#counts.bytesFromOrigin += chunk.length;
            await sink(chunk);
          });
          const after = toOriginStat(await opened.file.stat());
          if (after.validator !== stat.validator) throw new OriginChangedError(path);
        } finally {
          opened.file.close();
          this.#returnBuffers(buffers);
        }
      },
    };
  }

  /**
   * Sends an `OK` header and a body. A small body goes out with its header
   * in one piece; a large one is streamed in chunks from a pooled buffer.
   *
   * @throws {TruncatedBodyError} when the file ends early: the header has
   *   promised more bytes, so the connection must end.
   */
  async #sendBody(
    session: Session,
    fields: HeaderFields,
    body: Body,
    onRead?: (n: number) => void,
  ): Promise<void> {
    if ("bytes" in body) {
      await this.#send(session, concat(formatOk(body.bytes.length, fields), body.bytes));
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
      await this.#send(session, message);
      return;
    }
    await this.#send(session, header);
    const buffers = this.#takeBuffers(length);
    try {
      const sent = await readChunks(file, buffers, length, async (chunk) => {
        onRead?.(chunk.length);
        await this.#send(session, chunk);
      });
      if (sent < length) throw new TruncatedBodyError(`${path} ended early`);
    } catch (error) {
      if (isConnectionError(error)) throw error;
      this.#limits.onError(`response cut short: ${(error as Error).message}`);
      throw new TruncatedBodyError((error as Error).message);
    } finally {
      this.#returnBuffers(buffers);
    }
  }

  async #sendJson(session: Session, value: unknown): Promise<void> {
    const body = encoder.encode(JSON.stringify(value));
    await this.#sendBody(session, { type: "json" }, { bytes: body });
  }

  async #sendError(session: Session, code: ErrorCode, message: string): Promise<void> {
    this.#countError(code);
    session.answer.status = code;
    await this.#send(session, formatError(code, message));
  }

  /**
   * Sends the error after which the server closes (408, 413, 503), then
   * lingers: it stops writing and reads what the client still sends, for a
   * moment, so that closing does not reset the connection before the client
   * has read the error. `pendingRead` is a read still in flight, if any.
   */
  async #sendFinalError(
    session: Session,
    code: ErrorCode,
    message: string,
    pendingRead?: Promise<unknown>,
  ): Promise<void> {
    try {
      await this.#sendError(session, code, message);
      await session.outbox.flush();
    } catch {
      return; // the client is gone: nothing to linger for
    }
    await linger(session.conn, pendingRead);
  }

  #send(session: Session, data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    session.answer.bytes += bytes.length;
    return session.outbox.write(bytes);
  }

  /** Maps any error to the answer the client gets; the one place that does. */
  #describeError(error: unknown): [ErrorCode, string] {
    if (error instanceof ProtocolError) return [error.code, error.message];
    if (error instanceof OriginChangedError) return [500, `${error.message}; try again`];
    if (isOutOfDescriptors(error)) return [503, "server busy: out of file descriptors"];
    const message = error instanceof Error ? error.message : String(error);
    const detail = this.#limits.debug && error instanceof Error ? error.stack : message;
    this.#limits.onError(`request failed: ${detail}`);
    return [500, `server error: ${message}`];
  }

  #countError(code: ErrorCode): void {
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
  }

  /** Two pooled buffers for moving `length` bytes, sized for it. */
  #takeBuffers(length: number): [Uint8Array, Uint8Array] {
    const kind = length >= LARGE_BODY ? "large" : "small";
    const take = () => this.#buffers[kind].pop() ?? new Uint8Array(CHUNK_SIZES[kind]);
    return [take(), take()];
  }

  #returnBuffers(buffers: Uint8Array[]): void {
    for (const buffer of buffers) {
      const pool = buffer.length === CHUNK_SIZES.large ? this.#buffers.large : this.#buffers.small;
      if (pool.length < 32) pool.push(buffer);
    }
  }
}

/** How long a closing connection keeps reading what its client still sends. */
const LINGER_MS = 1000;
/** The most bytes read while lingering. */
const LINGER_BYTES = 1024 * 1024;

/**
 * Half-closes `conn` and reads what the client still sends, for at most
 * {@linkcode LINGER_MS} and {@linkcode LINGER_BYTES}, before the caller
 * closes it: closing with unread input would reset the connection and could
 * destroy the last response before the client reads it. A read already in
 * flight (`pendingRead`) is waited for first, within the same bound.
 */
async function linger(conn: Deno.Conn, pendingRead?: Promise<unknown>): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), LINGER_MS);
  try {
    await conn.closeWrite();
    await pendingRead?.catch(() => {});
    const scratch = new Uint8Array(16 * 1024);
    let drained = 0;
    while (drained < LINGER_BYTES) {
      const n = await conn.read(scratch);
      if (n === null) break;
      drained += n;
    }
  } catch {
    // closed by the timer, or by the client
  } finally {
    clearTimeout(timer);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function openSpare(): Deno.FsFile | undefined {
  try {
    return Deno.openSync("/dev/null");
  } catch {
    return undefined;
  }
}

function isOutOfDescriptors(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  return code === "EMFILE" || code === "ENFILE" ||
    /Too many open files/.test((error as Error | undefined)?.message ?? "");
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

/**
 * Reads up to `limit` bytes of `file` (to its end with `Infinity`) and hands
 * each chunk to `consume`. Two buffers take turns, so the next chunk is read
 * while the current one is consumed (sent, or hashed and written). Resolves
 * to the bytes read, which is less than `limit` when the file ends first.
 */
async function readChunks(
  file: Deno.FsFile,
  buffers: [Uint8Array, Uint8Array],
  limit: number,
  consume: (chunk: Uint8Array) => Promise<void>,
): Promise<number> {
  let [current, next] = buffers;
  let total = 0;
  let reading: Promise<number | null> | undefined = file.read(
    current.subarray(0, Math.min(limit, current.length)),
  );
  try {
    while (reading) {
      const n = await reading;
      reading = undefined;
      if (n === null) break;
      total += n;
      if (total < limit) {
        reading = file.read(next.subarray(0, Math.min(limit - total, next.length)));
      }
      await consume(current.subarray(0, n));
      [current, next] = [next, current];
    }
    return total;
  } finally {
    await reading?.catch(() => {}); // no buffer goes back to the pool while a read fills it
  }
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

if (import.meta.main) {
  // The command line lives in its own module, which imports this one: no
  // top-level await here, or the two would wait on each other forever.
  import("./server_cli.ts").then(({ serverMain }) => serverMain(Deno.args)).then(Deno.exit);
}
