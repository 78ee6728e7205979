/**
 * The TCP protocol's side of the server: accepts connections, runs one async
 * task per connection, and answers request lines strictly in order from the
 * file service (the cache or the origin). Limits: at most `maxConnections`
 * at once (more get `ERR 503`), an idle timeout for a request line (`ERR
 * 408`), and a send timeout after which a client that takes no bytes is
 * dropped.
 *
 * @module
 */

import {
  ByteReader,
  closeQuietly,
  LineTooLongError,
  linger,
  writeAll,
} from "../util/byte_reader.ts";
import { Outbox } from "./outbox.ts";
import type { CacheEntry } from "../cache.ts";
import { OriginChangedError } from "../origin/origin.ts";
import {
  type ErrorCode,
  formatError,
  formatOk,
  type HeaderFields,
  MAX_REQUEST_LINE,
  parseRequest,
  type ProtocolRequest,
} from "../protocol.ts";
import {
  type FileService,
  isConnectionError,
  isOutOfDescriptors,
  type Limits,
  readFull,
  type RequestRecord,
  type Served,
  sweepInterval,
  TruncatedBodyError,
} from "../service/file_service.ts";

/** How much of a body is sent in the header's write (one syscall). */
const SMALL_BODY = 64 * 1024;
/** Each connection's read buffer: twice the longest request line. */
const READ_BUFFER = 2 * MAX_REQUEST_LINE;

const encoder = new TextEncoder();

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

/**
 * The TCP protocol's listener and the state its connections share. Serves
 * until {@linkcode TcpServer.shutdown}.
 */
export class TcpServer {
  #listener: Deno.TcpListener;
  #service: FileService;
  #limits: Limits;
  #connections = new Set<Promise<void>>();
  #sessions = new Set<Session>();
  #closing = false;
  #sweeper: ReturnType<typeof setInterval>;
  // A descriptor held in reserve: when accept fails for lack of descriptors,
  // closing it makes room to accept one client and tell it ERR 503.
  #spare: Deno.FsFile | undefined;
  #lastAcceptReport = 0;
  // Weak: a header goes when its entry leaves the cache and is forgotten.
  #hitHeaders = new WeakMap<CacheEntry, Uint8Array>();

  constructor(listener: Deno.TcpListener, service: FileService, limits: Limits) {
    this.#listener = listener;
    this.#service = service;
    this.#limits = limits;
    this.#spare = openSpare();
    this.#sweeper = setInterval(
      () => this.#dropStalledWriters(),
      sweepInterval(limits.sendTimeoutMs),
    );
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
      const connections = this.#service.connections;
      connections.total++;
      if (connections.open >= this.#limits.maxConnections) {
        this.#track(this.#reject(conn, "server busy: too many connections"));
        continue;
      }
      connections.open++;
      this.#track(this.#serveConnection(conn).finally(() => connections.open--));
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
        this.#service.connections.total++;
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
    this.#service.connections.rejected++;
    this.#service.countError(503);
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
        this.#service.countSendTimeout();
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
      outbox: new Outbox(conn, (n) => this.#service.countSent(n)),
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
    let request: ProtocolRequest | undefined;
    try {
      return await this.#answerRequest(session, line, (parsed) => request = parsed);
    } finally {
      const record: RequestRecord = {
        time,
        protocol: "tcp",
        client: session.client,
        command: request?.command ?? "-",
        path: request && "path" in request ? request.path : undefined,
        status: session.answer.status,
        bytes: session.answer.bytes,
        ms: performance.now() - started,
        cache: session.answer.cache,
      };
      this.#service.record(record);
      this.#limits.onRequest?.(record);
    }
  }

  async #answerRequest(
    session: Session,
    line: Uint8Array,
    parsed: (request: ProtocolRequest) => void,
  ): Promise<boolean> {
    this.#service.countRequest();
    let request: ProtocolRequest;
    try {
      request = parseRequest(line);
    } catch (error) {
      await this.#sendError(session, ...this.#service.describeError(error));
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
      const [code, message] = this.#service.describeError(error);
      if (code === 503) {
        await this.#sendFinalError(session, code, message);
        return false;
      }
      await this.#sendError(session, code, message);
      return true;
    }
  }

  /** The JSON body of LIST, FILES, STAT and STATS. */
  #describe(request: ProtocolRequest): unknown {
    switch (request.command) {
      case "LIST":
        return this.#service.listing();
      case "FILES":
        return this.#service.files(request.path);
      case "STAT":
        return this.#service.stat(request.path);
      default:
        return this.#service.stats();
    }
  }

  /** Serves `GET`: the service finds the bytes, this sends them. */
  async #servePath(
    session: Session,
    request: Extract<ProtocolRequest, { command: "GET" }>,
  ): Promise<void> {
    const served = await this.#service.open(request.path, request);
    try {
      session.answer.cache = served.outcome;
      if (served.bytes && served.outcome === "hit" && served.length === served.size) {
        // The hottest path: a whole small file from memory, its header made once.
        await this.#send(session, this.#hitHeader(served.entry!));
        await this.#send(session, served.bytes);
        return;
      }
      await this.#sendBody(session, served);
    } finally {
      served.release();
    }
  }

  /** The header of a whole-file hit on `entry`, encoded once per entry. */
  #hitHeader(entry: CacheEntry): Uint8Array {
    let header = this.#hitHeaders.get(entry);
    if (!header) {
      const fields = { size: entry.size, offset: 0, mtime: entry.mtime, cache: "hit" };
      header = encoder.encode(formatOk(entry.size, { ...fields, sha256: entry.sha256 }));
      this.#hitHeaders.set(entry, header);
    }
    return header;
  }

  /**
   * Sends an `OK` header and a body. A small body goes out with its header
   * in one piece; a large one is streamed in chunks from a pooled buffer.
   *
   * @throws {TruncatedBodyError} when the file ends early: the header has
   *   promised more bytes, so the connection must end.
   */
  async #sendBody(session: Session, served: Served): Promise<void> {
    const fields: HeaderFields = {
      size: served.size,
      offset: served.offset,
      mtime: served.mtime,
      cache: served.outcome,
    };
    if (served.sha256) fields.sha256 = served.sha256;
    const header = encoder.encode(formatOk(served.length, fields));
    if (served.length <= SMALL_BODY) {
      const message = new Uint8Array(header.length + served.length);
      message.set(header);
      const body = message.subarray(header.length);
      if (served.bytes) body.set(served.bytes);
      else if (await readFull(served.source!, body) < served.length) {
        throw new OriginChangedError(served.path);
      }
      await this.#send(session, message);
      return;
    }
    await this.#send(session, header);
    await this.#service.stream(served, (chunk) => this.#send(session, chunk));
  }

  async #sendJson(session: Session, value: unknown): Promise<void> {
    const body = encoder.encode(JSON.stringify(await value));
    await this.#send(session, concat(formatOk(body.length, { type: "json" }), body));
  }

  async #sendError(session: Session, code: ErrorCode, message: string): Promise<void> {
    this.#service.countError(code);
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
}

function openSpare(): Deno.FsFile | undefined {
  try {
    return Deno.openSync("/dev/null");
  } catch {
    return undefined;
  }
}

function concat(header: string, body: Uint8Array): Uint8Array {
  const head = encoder.encode(header);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}
