/**
 * The TCP protocol over the connection engine: request lines answered
 * strictly in order from the file service (the cache or the origin), with
 * pipelined answers coalesced. A request line must arrive within the idle
 * timeout (`ERR 408`) and fit in `MAX_REQUEST_LINE` bytes (`ERR 413`); both
 * close the connection, as does a `503`.
 *
 * @module
 */

import { LineTooLongError } from "../util/byte_reader.ts";
import { BytesMemo } from "../util/bytes_memo.ts";
import type { ConnectionEngine, ConnectionProtocol, Session } from "../engine/connection_engine.ts";
import type { CacheEntry } from "../cache.ts";
import { type Need, tooManyFailures, type Verdict } from "../access/gate.ts";
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
  type Limits,
  readFull,
  type RequestRecord,
  type Served,
  TruncatedBodyError,
} from "../service/file_service.ts";

/** How much of a body is sent in the header's write (one syscall). */
const SMALL_BODY = 64 * 1024;
/** Each connection's read buffer: twice the longest request line. */
const READ_BUFFER = 2 * MAX_REQUEST_LINE;

const encoder = new TextEncoder();
/**
 * Request lines parsed lately: a repeat (a poller, a client fetching the
 * same file) is looked up, and its path is one string whose hash the
 * cache's maps have computed (see util/bytes_memo.ts).
 */
const parsedRequests = new BytesMemo<ProtocolRequest>(1024, 1024);
/** A parsed request, frozen: it is shared by every request with the same bytes. */
const parseShared = (line: Uint8Array) => Object.freeze(parseRequest(line));

/** A connection, with what the protocol keeps of the answer in progress. */
interface TcpSession extends Session {
  /** Bytes of the answer in progress, its status, and where it was served from. */
  answer: { bytes: number; status: "OK" | ErrorCode; cache?: "hit" | "miss" | "bypass" };
}

/** The TCP protocol's answers, for the connection engine to run. */
export class TcpProtocol implements ConnectionProtocol {
  /** Each connection's read buffer: twice the longest request line. */
  readonly readBufferSize = READ_BUFFER;
  /** The engine this protocol runs on (set once it exists). */
  engine!: ConnectionEngine;
  #service: FileService;
  #limits: Limits;
  // Weak: a header goes when its entry leaves the cache and is forgotten.
  #hitHeaders = new WeakMap<CacheEntry, Uint8Array>();

  /** The protocol over `service`, within `limits`. */
  constructor(service: FileService, limits: Limits) {
    this.#service = service;
    this.#limits = limits;
  }

  /** `ERR 503` with the reason. */
  busyAnswer(message: string): Uint8Array {
    return encoder.encode(formatError(503, message));
  }

  /** Counts bytes sent. */
  onSent(bytes: number): void {
    this.#service.countSent(bytes);
  }

  /** Whether a whole request line is already buffered (pipelined). */
  hasBufferedRequest(session: Session): boolean {
    return session.reader.hasBufferedLine;
  }

  /** The next request line, or null when the connection should end. */
  nextRequest(session: Session, buffered: boolean): Promise<Uint8Array | null> {
    return this.#nextRequestLine(tcpSession(session), buffered);
  }

  /**
   * Answers one request line: false when the connection must close. A
   * whole-file hit from memory is answered at once (see
   * {@linkcode #answerHit}); everything else through {@linkcode #answer}.
   */
  answer(session: Session, line: Uint8Array): boolean | Promise<boolean> {
    let request: ProtocolRequest | undefined;
    try {
      request = parsedRequests.get(line, parseShared);
    } catch {
      // #answer parses it again, to answer the error
    }
    const tcp = tcpSession(session);
    // With tokens, the hot path is taken only by a request its connection may make.
    if (request && this.engine.gate.tokens && !this.#allowed(tcp, request).allowed) {
      return this.#answer(tcp, line, request);
    }
    return (request && this.#answerHit(tcp, request)) ?? this.#answer(tcp, line, request);
  }

  /**
   * The hottest answer, without waiting for anything: a `GET` of a whole
   * file held in memory, its header made once per entry, held in the
   * outbox (the engine flushes it), or written in turn when it is too large
   * to hold back. Undefined for any other request: {@linkcode #answer}
   * answers those. What it logs and counts is what `#answer` would.
   */
  #answerHit(session: TcpSession, request: ProtocolRequest): true | Promise<true> | undefined {
    if (request.command !== "GET" || request.offset !== undefined) return undefined;
    const started = performance.now();
    const hit = this.#service.hitNow(request.path);
    if (!hit) return undefined; // #answer takes its own times
    const time = Date.now();
    this.#service.countRequest();
    session.answer = { bytes: 0, status: "OK", cache: "hit" };
    const header = this.#hitHeader(hit.entry);
    const body = hit.bytes;
    if (session.outbox.room < header.length + body.length) {
      return this.#writeHit(
        session,
        header,
        body,
        () => this.#log(session, request, time, started),
      );
    }
    session.outbox.hold(header);
    session.outbox.hold(body);
    session.answer.bytes = header.length + body.length;
    this.#log(session, request, time, started);
    return true;
  }

  /** A hit too large to hold back: its header and body written in turn, then logged. */
  async #writeHit(
    session: TcpSession,
    header: Uint8Array,
    body: Uint8Array,
    log: () => void,
  ): Promise<true> {
    try {
      await this.#send(session, header);
      await this.#send(session, body);
      return true;
    } finally {
      log();
    }
  }

  /**
   * Waits for the next request line within the idle timeout. Resolves to
   * null when the connection should end: the client closed it, timed out
   * (408 sent), sent too long a line (413 sent), or the server is stopping.
   */
  async #nextRequestLine(session: TcpSession, pipelined: boolean): Promise<Uint8Array | null> {
    if (this.engine.closing) return null;
    // A pipelined request already here needs neither timer nor race.
    if (pipelined) return await this.#readBufferedLine(session);
    const read = session.reader.readLine(MAX_REQUEST_LINE);
    try {
      const winner = await this.engine.awaitRequest(session, read);
      if (winner === "shutdown") return null;
      if (winner === "timeout") {
        await this.#refuse(session, 408, "timed out waiting for a request line", read);
        return null;
      }
      return winner;
    } catch (error) {
      if (error instanceof LineTooLongError) await this.#lineTooLong(session);
      return null;
    }
  }

  /** Reads a line known to be buffered; only its length can still fail it. */
  async #readBufferedLine(session: TcpSession): Promise<Uint8Array | null> {
    try {
      return await session.reader.readLine(MAX_REQUEST_LINE);
    } catch {
      await this.#lineTooLong(session);
      return null;
    }
  }

  #lineTooLong(session: TcpSession): Promise<void> {
    const message = `request line longer than ${MAX_REQUEST_LINE} bytes`;
    return this.#refuse(session, 413, message);
  }

  /**
   * Refuses a request that never arrived whole (408, 413): counted as a
   * request and logged like any other (command `-`), then the final error.
   */
  async #refuse(
    session: TcpSession,
    code: ErrorCode,
    message: string,
    pendingRead?: Promise<unknown>,
  ): Promise<void> {
    const time = Date.now();
    const started = performance.now();
    this.#service.countRequest();
    session.answer = { bytes: 0, status: code };
    // Logged once sent, before the linger, which only waits for the client to leave.
    const log = () => this.#log(session, undefined, time, started);
    await this.#sendFinalError(session, code, message, pendingRead, log);
  }

  /**
   * Answers one request line and logs it; resolves to false when the
   * connection must close.
   */
  async #answer(
    session: TcpSession,
    line: Uint8Array,
    parsedLine?: ProtocolRequest,
  ): Promise<boolean> {
    const time = Date.now();
    const started = performance.now();
    session.answer = { bytes: 0, status: "OK" };
    let request: ProtocolRequest | undefined;
    try {
      return await this.#answerRequest(session, parsedLine ?? line, (parsed) => request = parsed);
    } finally {
      this.#log(session, request, time, started);
    }
  }

  /**
   * Records the answer kept in `session.answer` to `request` (undefined: a
   * line that never arrived whole or did not parse) for the metrics and the
   * access log.
   */
  #log(
    session: TcpSession,
    request: ProtocolRequest | undefined,
    time: number,
    started: number,
  ): void {
    const { status, bytes, cache } = session.answer;
    const record: RequestRecord = {
      time,
      protocol: "tcp",
      client: session.client,
      command: request?.command ?? "-",
      path: request && "path" in request ? loggedPath(request) : undefined,
      status,
      bytes,
      ms: performance.now() - started,
      cache,
    };
    if (session.tls) record.tls = true;
    if (session.user !== undefined) record.user = session.user;
    this.#service.record(record);
    this.#limits.onRequest?.(record);
  }

  async #answerRequest(
    session: TcpSession,
    line: Uint8Array | ProtocolRequest,
    parsed: (request: ProtocolRequest) => void,
  ): Promise<boolean> {
    this.#service.countRequest();
    let request: ProtocolRequest;
    try {
      request = line instanceof Uint8Array ? parseRequest(line) : line;
    } catch (error) {
      await this.#sendError(session, ...this.#service.describeError(error));
      return true;
    }
    parsed(request);
    if (request.command === "AUTH") {
      await this.#authenticate(session, request.token);
      return true;
    }
    const verdict = this.#allowed(session, request);
    if (!verdict.allowed) {
      await this.#sendError(session, verdict.status, verdict.message);
      return true;
    }
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
        case "PURGE": {
          const purged = await this.#service.purge(request.path, request.prefix);
          await this.#send(session, formatOk(0, { purged }));
          return true;
        }
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

  /**
   * Whether the connection may make `request` (always, without tokens);
   * notes the token's name for the access log.
   */
  #allowed(session: TcpSession, request: ProtocolRequest): Verdict {
    const verdict = this.engine.gate.judge(session.credential, needOf(request));
    session.user = verdict.allowed ? verdict.grant?.name : verdict.user;
    return verdict;
  }

  /**
   * `AUTH TOKEN`: `OK 0` and the connection holds the token's grant; a
   * wrong token `ERR 401` (and the connection holds nothing); too many
   * wrong ones from this address `ERR 429`, unchecked. Without tokens,
   * `OK 0`: there is nothing to prove.
   */
  async #authenticate(session: TcpSession, token: string): Promise<void> {
    const outcome = this.engine.gate.present(session.address, token);
    if (outcome && "status" in outcome) {
      await this.#sendError(session, 429, tooManyFailures(outcome.retryMs).message);
      return;
    }
    session.credential = outcome;
    session.user = outcome?.grant?.name;
    if (outcome && !outcome.grant) {
      await this.#sendError(session, 401, "invalid token");
      return;
    }
    await this.#send(session, formatOk(0));
  }

  /** The JSON body of LIST, FILES, STAT and STATS. */
  #describe(request: ProtocolRequest): unknown {
    switch (request.command) {
      case "LIST":
        return this.#service.listing();
      case "FILES":
        return this.#service.files(request.path, { after: request.after, limit: request.limit });
      case "STAT":
        return this.#service.stat(request.path);
      default:
        return this.#service.stats();
    }
  }

  /** Serves `GET`: the service finds the bytes, this sends them. */
  async #servePath(
    session: TcpSession,
    request: Extract<ProtocolRequest, { command: "GET" }>,
  ): Promise<void> {
    const served = await this.#service.open(request.path, request);
    try {
      session.answer.cache = served.outcome;
      const plainHit = served.outcome === "hit" && served.ageMs === undefined;
      if (served.bytes && plainHit && served.length === served.size) {
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
  async #sendBody(session: TcpSession, served: Served): Promise<void> {
    const fields: HeaderFields = {
      size: served.size,
      offset: served.offset,
      mtime: served.mtime,
      cache: served.outcome,
    };
    if (served.sha256) fields.sha256 = served.sha256;
    // Sent while it is copied in: the sha256 comes by STAT after the body.
    if (served.streamed) fields.streamed = 1;
    // Behind a freshness lifetime: seconds since the origin confirmed this
    // version, and whether that is past its lifetime (docs/PROTOCOL.md).
    if (served.ageMs !== undefined) fields.age = Math.floor(served.ageMs / 1000);
    if (served.stale) fields.stale = 1;
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
    await this.#service.stream(served, header, (chunk) => this.#send(session, chunk));
  }

  async #sendJson(session: TcpSession, value: unknown): Promise<void> {
    const body = encoder.encode(JSON.stringify(await value));
    await this.#send(session, concat(formatOk(body.length, { type: "json" }), body));
  }

  async #sendError(session: TcpSession, code: ErrorCode, message: string): Promise<void> {
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
    session: TcpSession,
    code: ErrorCode,
    message: string,
    pendingRead?: Promise<unknown>,
    sent?: () => void,
  ): Promise<void> {
    this.#service.countError(code);
    session.answer.status = code;
    const answer = encoder.encode(formatError(code, message));
    session.answer.bytes += answer.length;
    await this.engine.finalAnswer(session, answer, { pendingRead, sent });
  }

  #send(session: TcpSession, data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    session.answer.bytes += bytes.length;
    return session.outbox.write(bytes);
  }
}

/** The session with the protocol's own state, added on first use. */
function tcpSession(session: Session): TcpSession {
  if (!("answer" in session)) Object.assign(session, { answer: { bytes: 0, status: "OK" } });
  return session as TcpSession;
}

function concat(header: string, body: Uint8Array): Uint8Array {
  const head = encoder.encode(header);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/** What a request needs: the cache's internals need an admin token. */
function needOf(request: ProtocolRequest): Need {
  switch (request.command) {
    case "STATS":
    case "LIST":
    case "PURGE":
      return "admin";
    default:
      return "read";
  }
}

/** The path a request names, as the access log shows it (a purged prefix with its `*`). */
function loggedPath(request: ProtocolRequest & { path: string }): string {
  return request.command === "PURGE" && request.prefix ? `${request.path}*` : request.path;
}
