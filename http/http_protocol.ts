/**
 * HTTP/1.1 over the connection engine: the same service (one cache, one
 * set of counters) as the TCP protocol, for curl, browsers, download
 * managers and Prometheus. `GET`/`HEAD` of a path serve the file (ranges,
 * conditional requests, `X-Cache`) or list a directory.
 *
 * Request heads are parsed by `request_head.ts` (strict RFC 9112, no
 * bodies); a refused head is answered and the connection closed. The path
 * comes from the request target alone. Heads must arrive whole within the
 * idle timeout, counted from when the server is ready for the next request
 * (stray empty lines between requests do not restart it): a connection that
 * sent nothing is closed, one that sent part of a head gets `408`.
 *
 * The server's own pages live under the literal prefix `/-/` (`/-/` the
 * status page, `/-/metrics`, `/-/stats`, `/-/cache`, `/-/recent`). A served
 * file or folder named `-` stays reachable as `/%2D/...`, which is how
 * directory listings link to it.
 *
 * @module
 */

import type { ConnectionEngine, ConnectionProtocol, Session } from "../engine/connection_engine.ts";
import { entityTag, mediaType, notModified, parseRange, rangeStillValid } from "./headers.ts";
import { listingPage } from "./pages.ts";
import { listingWindow, nextPageQuery } from "./listing_query.ts";
import {
  ALLOWED_METHODS,
  findHeadEnd,
  HttpError,
  MAX_HEAD,
  parseRequestHead,
  type RequestHead,
} from "./request_head.ts";
import type { CacheEntry } from "../cache.ts";
import { OriginChangedError } from "../origin/origin.ts";
import { formatMetrics } from "../service/metrics.ts";
import { checkPath, checkPurgeTarget, percentDecode, RequestError } from "../protocol.ts";
import {
  type FileService,
  isConnectionError,
  type Limits,
  readFull,
  type RequestRecord,
  type Served,
} from "../service/file_service.ts";
import { LineTooLongError } from "../util/byte_reader.ts";
import { type Credential, type Refusal, tooManyFailures, type Verdict } from "../access/gate.ts";

/** An answer, before it is written. */
interface Answer {
  status: number;
  /** Fields besides Date, Content-Length and Connection. */
  fields: [string, string][];
  /** More fields, already rendered (`Name: value\r\n` each). */
  renderedFields?: string;
  /** A body held in memory. */
  body?: Uint8Array;
  /** Or a file's bytes (its `length` is the body's). */
  served?: Served;
  /** The connection closes after this answer. */
  close?: boolean;
  /** No body follows, whatever the length says (HEAD, 304). */
  bodiless?: boolean;
}

/** The status page and its assets, served from `status/`. */
const STATUS_ASSETS: Record<string, { file: string; type: string }> = {
  "/-/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/-/status.js": { file: "status.js", type: "text/javascript; charset=utf-8" },
  "/-/status.css": { file: "status.css", type: "text/css; charset=utf-8" },
};

const REASONS: Record<number, string> = {
  200: "OK",
  206: "Partial Content",
  301: "Moved Permanently",
  304: "Not Modified",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  416: "Range Not Satisfiable",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

/** Bodies up to this size are read whole before the head is sent. */
const SMALL_BODY = 64 * 1024;

const encoder = new TextEncoder();

/** The HTTP/1.1 protocol's answers, for the connection engine to run. */
export class HttpProtocol implements ConnectionProtocol {
  /** Room for one whole head and the start of a pipelined one. */
  readonly readBufferSize = 2 * MAX_HEAD;
  /** The engine this protocol runs on (set once it exists). */
  engine!: ConnectionEngine;
  #service: FileService;
  #limits: Limits;
  #assets = new Map<string, Uint8Array>();
  // Weak: the fields go when their entry leaves the cache and is forgotten.
  #entryFields = new WeakMap<CacheEntry, string>();
  #hitHeads = new WeakMap<
    CacheEntry,
    { second: number; open: Uint8Array; closing: Uint8Array }
  >();
  #date = { second: 0, text: "" };
  /**
   * The file path of each (shared, repeated) head answered as a hit: decoded
   * and checked once, and one string each time, whose hash the cache's and
   * the change watch's maps then find already computed.
   */
  #hitPaths = new WeakMap<RequestHead, string>();

  /** The protocol over `service`, within `limits`. */
  constructor(service: FileService, limits: Limits) {
    this.#service = service;
    this.#limits = limits;
  }

  /** `503` with the reason, and close. */
  busyAnswer(message: string): Uint8Array {
    return this.#encodeWhole(textAnswer(503, `${message}\n`, { close: true }));
  }

  /** Body bytes are counted as they are sent (see `#send`); heads are not. */
  onSent(): void {}

  /** Whether a whole request head is already buffered (pipelined). */
  hasBufferedRequest(session: Session): boolean {
    return session.reader.hasBuffered(findHeadEnd);
  }

  /** The next request head, or null when the connection should end. */
  nextRequest(session: Session, buffered: boolean): Promise<Uint8Array | null> {
    return this.#nextHead(session, buffered);
  }

  /**
   * Answers one request head: false when the connection must close. A
   * whole-file hit from memory is answered at once (see
   * {@linkcode #answerHit}); everything else through {@linkcode #exchange}.
   */
  answer(session: Session, bytes: Uint8Array): boolean | Promise<boolean> {
    const started = performance.now();
    let head: RequestHead;
    try {
      head = parseRequestHead(bytes);
    } catch (error) {
      const refusal = error instanceof HttpError ? error : new HttpError(400, "malformed request");
      return this.#refuse(session, refusal, { command: methodOf(bytes) }).then(() => false);
    }
    if (this.engine.gate.tokens) {
      const verdict = this.#authorize(session, head);
      if (!verdict.allowed) return this.#exchange(session, head, started, verdict);
    }
    return this.#answerHit(session, head, started) ?? this.#exchange(session, head, started);
  }

  /**
   * Whether this request may be answered, by the token of its own
   * `Authorization: Bearer` field (each request carries its own; a token
   * the connection presented before is not compared again). Notes the
   * token's name for the access log.
   */
  #authorize(session: Session, head: RequestHead): Verdict {
    const gate = this.engine.gate;
    const need = head.path.startsWith("/-/") || head.method === "PURGE" ? "admin" : "read";
    const field = head.fields.get("authorization");
    let credential: Credential | undefined;
    if (field !== null) {
      const token = bearerToken(field);
      if (token === undefined) {
        session.user = undefined;
        const message = "use Authorization: Bearer TOKEN";
        return { allowed: false, status: 401, message, error: "invalid_token" };
      }
      credential = session.credential;
      if (credential?.token !== token) {
        const outcome = gate.present(session.address, token);
        if (outcome && "status" in outcome) {
          session.user = undefined;
          return tooManyFailures(outcome.retryMs);
        }
        credential = session.credential = outcome;
      }
    }
    const verdict = gate.judge(credential, need);
    session.user = verdict.allowed ? verdict.grant?.name : verdict.user;
    return verdict;
  }

  /**
   * Waits for the next request head within the idle timeout. Resolves to
   * null when the connection should end: the client closed it, timed out,
   * sent too long a head (431 sent), or the server is stopping.
   */
  async #nextHead(session: Session, pipelined: boolean): Promise<Uint8Array | null> {
    if (this.engine.closing) return null;
    const read = session.reader.readBlock(MAX_HEAD, findHeadEnd);
    try {
      const winner = pipelined ? await read : await this.engine.awaitRequest(session, read);
      if (winner === "shutdown") return null;
      if (winner === "timeout") {
        // Part of a head: tell the client why; nothing at all: just close.
        if (session.reader.buffered > 0) {
          const refusal = new HttpError(408, "the request head took too long");
          await this.#refuse(session, refusal, { pendingRead: read });
        }
        return null;
      }
      return winner;
    } catch (error) {
      if (error instanceof LineTooLongError) {
        await this.#refuse(session, new HttpError(431, `request head over ${MAX_HEAD} bytes`));
      }
      return null;
    }
  }

  /** Answers a refused head (logged and counted), then closes. */
  async #refuse(
    session: Session,
    refusal: HttpError,
    options: { command?: string; pendingRead?: Promise<unknown> } = {},
  ) {
    const started = performance.now();
    const record = this.#newRecord(session, options.command ?? "-");
    this.#service.countRequest();
    record.status = refusal.status;
    this.#service.countError(refusal.status);
    const answer = textAnswer(refusal.status, `${refusal.message}\n`, { close: true });
    if (refusal.status === 405) answer.fields.push(["Allow", ALLOWED_METHODS]);
    await this.engine.finalAnswer(session, this.#encodeWhole(answer), {
      pendingRead: options.pendingRead,
      // Logged before the linger, which only waits for the client to leave.
      sent: () => this.#finish(record, started),
    });
  }

  /**
   * The hottest answer, without waiting for anything: a plain HTTP/1.1
   * `GET` (no range, no precondition) of a whole file held in memory, whose
   * head is made once per entry and second. Written into the outbox at once
   * when it fits there (the engine flushes it); undefined for any other
   * request, which {@linkcode #exchange} answers. What it logs, counts and
   * sends is what `#exchange` would.
   */
  #answerHit(
    session: Session,
    head: RequestHead,
    started: number,
  ): boolean | Promise<boolean> | undefined {
    const fields = head.fields;
    if (
      head.method !== "GET" || head.version !== "HTTP/1.1" ||
      head.path.startsWith("/-/") || head.path.endsWith("/") ||
      fields.get("range") !== null || fields.get("if-none-match") !== null ||
      fields.get("if-modified-since") !== null
    ) return undefined;
    let path = this.#hitPaths.get(head);
    if (path === undefined) {
      try {
        path = percentDecode(head.path.slice(1));
        checkPath(path);
      } catch {
        return undefined; // #exchange refuses it
      }
      this.#hitPaths.set(head, path);
    }
    const hit = this.#service.hitNow(path);
    if (!hit) return undefined;
    const record = this.#newRecord(session, "GET");
    record.path = path;
    record.cache = "hit";
    this.#service.countRequest();
    const headBytes = this.#hitHead(hit.entry, head.keepAlive);
    const body = hit.bytes;
    const outbox = session.outbox;
    if (outbox.room >= headBytes.length + body.length) {
      outbox.hold(headBytes);
      outbox.hold(body);
      record.bytes = body.length;
      this.#service.countSent(body.length);
      this.#finish(record, started);
      return head.keepAlive;
    }
    return this.#writeHit(session, headBytes, body, record, started).then(() => head.keepAlive);
  }

  /** A hit too large to hold back: its head and body written in turn. */
  async #writeHit(
    session: Session,
    headBytes: Uint8Array,
    body: Uint8Array,
    record: RequestRecord,
    started: number,
  ): Promise<void> {
    this.#service.httpActive++;
    try {
      await session.outbox.write(headBytes);
      await session.outbox.write(body);
      record.bytes = body.length;
      this.#service.countSent(body.length);
    } finally {
      this.#service.httpActive--;
      this.#finish(record, started);
    }
  }

  /** Answers one parsed head; resolves to false when the connection must close. */
  async #exchange(
    session: Session,
    head: RequestHead,
    started: number,
    refusal?: Refusal,
  ): Promise<boolean> {
    const record = this.#newRecord(session, head.method);
    this.#service.countRequest();
    this.#service.httpActive++;
    let answer: Answer | undefined;
    try {
      try {
        if (refusal) record.path = loggedTarget(head.path);
        answer = refusal ? refusalAnswer(refusal) : await this.#route(head, record);
      } catch (error) {
        answer = textAnswer(...this.#describe(error));
        // The origin is failing, or the server is busy: when to try again,
        // about the shield's probe interval.
        if (answer.status === 503) answer.fields.push(["Retry-After", "1"]);
      }
      record.status = answer.status;
      if (answer.status >= 400) this.#service.countError(answer.status);
      const keepOpen = head.keepAlive && !answer.close;
      if (head.method === "HEAD") answer.bodiless = true;
      await this.#send(session, answer, head, keepOpen, record);
      return keepOpen;
    } finally {
      answer?.served?.release();
      this.#service.httpActive--;
      this.#finish(record, started);
    }
  }

  /** The request's record for the access log; filled in as it is answered. */
  #newRecord(session: Session, command: string): RequestRecord {
    const record: RequestRecord = {
      time: Date.now(),
      protocol: "http",
      client: session.client,
      command,
      status: 200,
      bytes: 0,
      ms: 0,
    };
    if (session.tls) record.tls = true;
    if (session.user !== undefined) record.user = session.user;
    return record;
  }

  #finish(record: RequestRecord, started: number): void {
    record.ms = performance.now() - started;
    this.#service.record(record, { recent: !record.path?.startsWith("/-/") });
    this.#limits.onRequest?.(record);
  }

  /** The status and message for an error, as both protocols map it. */
  #describe(error: unknown): [number, string] {
    const [code, message] = this.#service.describeError(error);
    return [code, `${message}\n`];
  }

  async #route(head: RequestHead, record: RequestRecord): Promise<Answer> {
    const target = head.path;
    if (target.startsWith("/-/")) {
      record.path = target; // the server's own pages: absolute, unlike file paths
      return await this.#serverPage(target);
    }
    if (head.method === "PURGE") return await this.#purge(target, record);
    const path = target === "/" ? "" : percentDecode(target.slice(1));
    record.path = path;
    if (path === "" || path.endsWith("/")) {
      const dir = path.replace(/\/$/, "");
      if (dir !== "") checkPath(dir);
      return await this.#listing(dir, head);
    }
    checkPath(path);
    try {
      return await this.#serveFile(path, head, record);
    } catch (error) {
      // A directory asked for without its slash: send the browser to it, so
      // that the relative links of its listing resolve.
      if (error instanceof RequestError && error.code === 404) {
        const isDirectory = await this.#service.files(path, { limit: 1 }).then(
          () => true,
          () => false,
        );
        if (isDirectory) {
          return {
            status: 301,
            fields: [["Location", `${pathTarget(path)}/`]],
            body: new Uint8Array(),
          };
        }
      }
      throw error;
    }
  }

  /**
   * `PURGE /path` drops a file from the cache and what is remembered of it;
   * `PURGE /dir/*` every path that starts with `dir/` (a name that ends
   * with `*` is written `%2A`). Answers `{"purged": N}`.
   */
  async #purge(target: string, record: RequestRecord): Promise<Answer> {
    const prefix = target.endsWith("*");
    const path = percentDecode(target.slice(1, prefix ? -1 : undefined));
    record.path = prefix ? `${path}*` : path;
    checkPurgeTarget(path, prefix);
    const purged = await this.#service.purge(path, prefix);
    return jsonAnswer({ purged });
  }

  /**
   * Serves a file. The preconditions are evaluated first, against the
   * version a `GET` would serve now (RFC 9110 §13.2.2): a 304 opens
   * nothing, and a failed `If-Range` drops the range before it is checked.
   */
  async #serveFile(path: string, head: RequestHead, record: RequestRecord): Promise<Answer> {
    const current = await this.#service.current(path);
    const validators = { etag: entityTag(current), mtime: current.mtime };
    if (notModified(head.fields, validators)) {
      return { status: 304, fields: fileFields(path, current), bodiless: true };
    }
    // A HEAD ignores Range (RFC 9110 §14.2): it describes the whole file.
    const rangeField = head.method === "GET" && rangeStillValid(head.fields, validators)
      ? head.fields.get("range")
      : null;
    const range = parseRange(rangeField, current.size);
    if (range === "unsatisfiable") {
      const answer = textAnswer(
        416,
        `range ${rangeField} is past the end (size ${current.size})\n`,
      );
      answer.fields.push(["Content-Range", `bytes */${current.size}`]);
      return answer;
    }
    const served = await this.#service.open(path, range ?? {}, current);
    record.cache = served.outcome;
    const fields: [string, string][] = [
      ["X-Cache", served.stale ? "STALE" : served.outcome.toUpperCase()],
    ];
    // Behind a freshness lifetime (RFC 9111 §5.1): how long since the origin
    // confirmed this version, and a warning when that is past its lifetime.
    if (served.ageMs !== undefined) fields.push(["Age", String(Math.floor(served.ageMs / 1000))]);
    if (served.stale) fields.push(["Warning", '110 - "Response is Stale"']);
    if (range) {
      const last = served.offset + served.length - 1;
      fields.push(["Content-Range", `bytes ${served.offset}-${last}/${served.size}`]);
    }
    const renderedFields = served.entry
      ? this.#fieldsOf(served.entry)
      : renderFields(fileFields(path, served));
    const status = range ? 206 : 200;
    if (!served.bytes && served.length <= SMALL_BODY && head.method === "GET") {
      // Read before anything is sent: a file that turns out shorter than its
      // stat is a 500, and the connection goes on.
      try {
        const body = new Uint8Array(served.length);
        if (await readFull(served.source!, body) < served.length) {
          throw new OriginChangedError(path);
        }
        return { status, fields, renderedFields, body };
      } finally {
        served.release();
      }
    }
    return { status, fields, renderedFields, served };
  }

  /** The file fields of a cache entry, rendered once per entry. */
  #fieldsOf(entry: CacheEntry): string {
    let rendered = this.#entryFields.get(entry);
    if (rendered === undefined) {
      rendered = renderFields(fileFields(entry.path, entry));
      this.#entryFields.set(entry, rendered);
    }
    return rendered;
  }

  /**
   * A page of a directory's listing, bounded as `FILES` is: `?after=` and
   * `?limit=` choose it, and a page that is not the last links to the next
   * (in the page, and in a `Link` field with `rel="next"`, RFC 8288).
   */
  async #listing(dir: string, head: RequestHead): Promise<Answer> {
    const window = listingWindow(head.target);
    const listing = await this.#service.files(dir, window);
    const next = listing.next === undefined ? undefined : nextPageQuery(listing.next, window);
    const accept = head.fields.get("accept") ?? "";
    const answer = accept.includes("application/json") && !accept.includes("text/html")
      ? jsonAnswer(listing)
      : textAnswer(200, listingPage(dir, listing.entries, next), {
        type: "text/html; charset=utf-8",
      });
    if (next !== undefined) answer.fields.push(["Link", `<${next}>; rel="next"`]);
    return answer;
  }

  async #serverPage(pathname: string): Promise<Answer> {
    const service = this.#service;
    switch (pathname) {
      case "/-/metrics":
        return textAnswer(200, formatMetrics(await service.metrics()), {
          type: "text/plain; version=0.0.4; charset=utf-8",
        });
      case "/-/stats":
        return jsonAnswer(await service.stats());
      case "/-/cache":
        return jsonAnswer(await service.listing());
      case "/-/recent":
        // Who asked for what is the clients' business: no addresses here.
        return jsonAnswer((await service.recent()).map((record) => ({ ...record, client: "-" })));
    }
    const asset = STATUS_ASSETS[pathname];
    if (!asset) return textAnswer(404, `not found: ${pathname}\n`);
    return {
      status: 200,
      fields: [["Content-Type", asset.type], ["Cache-Control", "no-cache"]],
      body: await this.#asset(asset.file),
    };
  }

  /** A file of the status page, read once. */
  async #asset(name: string): Promise<Uint8Array> {
    let bytes = this.#assets.get(name);
    if (!bytes) {
      bytes = await Deno.readFile(new URL(`./status/${name}`, import.meta.url));
      this.#assets.set(name, bytes);
    }
    return bytes;
  }

  /**
   * Writes an answer: a small body with its head in one piece, a large one
   * streamed in chunks after it. Body bytes are counted as the connection
   * takes them.
   *
   * @throws {TruncatedBodyError} when the file ends early: the head has
   *   promised more bytes, so the connection must end.
   */
  async #send(
    session: Session,
    answer: Answer,
    head: RequestHead,
    keepOpen: boolean,
    record: RequestRecord,
  ): Promise<void> {
    const length = answer.served?.length ?? answer.body?.length ?? 0;
    const keepAliveField = head.version === "HTTP/1.0" && keepOpen;
    const entry = answer.served?.entry;
    const wholeHit = entry && answer.served!.outcome === "hit" && answer.status === 200 &&
      answer.served!.ageMs === undefined && head.version === "HTTP/1.1" && head.method === "GET";
    const headBytes = wholeHit ? this.#hitHead(entry, keepOpen) : encoder.encode(
      this.#encodeHeadText({ ...answer, close: !keepOpen }, keepAliveField, length),
    );
    const count = (bytes: number) => {
      record.bytes += bytes;
      this.#service.countSent(bytes);
    };
    const served = answer.served;
    if (answer.bodiless || length === 0) {
      await session.outbox.write(headBytes);
    } else if (!served || served.bytes) {
      // Two writes to the outbox, one copy each, one syscall for both.
      await session.outbox.write(headBytes);
      await session.outbox.write(served?.bytes ?? answer.body!);
      count(length);
    } else {
      let headLeft = headBytes.length; // the first chunk begins with the head
      try {
        await this.#service.stream(served, headBytes, async (chunk) => {
          await session.outbox.write(chunk);
          count(chunk.length - headLeft);
          headLeft = 0;
        });
      } catch (error) {
        if (!isConnectionError(error)) {
          this.#limits.onError(`response cut short: ${(error as Error).message}`);
        }
        throw error;
      }
    }
    if (!keepOpen) await session.outbox.flush();
  }

  /**
   * The head of the hottest answer, a whole-file `GET` hit on HTTP/1.1
   * (kept open or closing), as bytes made once per entry and second (the
   * `Date` changes).
   */
  #hitHead(entry: CacheEntry, keepOpen: boolean): Uint8Array {
    const second = Math.floor(Date.now() / 1000);
    let cached = this.#hitHeads.get(entry);
    if (cached?.second !== second) {
      const answer: Answer = {
        status: 200,
        fields: [["X-Cache", "HIT"]],
        renderedFields: this.#fieldsOf(entry),
      };
      const encode = (close: boolean) =>
        encoder.encode(this.#encodeHeadText({ ...answer, close }, false, entry.size));
      cached = { second, open: encode(false), closing: encode(true) };
      this.#hitHeads.set(entry, cached);
    }
    return keepOpen ? cached.open : cached.closing;
  }

  /** The whole of an answer held in memory, after which the connection closes. */
  #encodeWhole(answer: Answer): Uint8Array {
    const body = answer.body ?? new Uint8Array();
    const head = this.#encodeHeadText({ ...answer, close: true }, false, body.length);
    return concat(encoder.encode(head), body);
  }

  /** The status line and fields of `answer`, ending with the empty line. */
  #encodeHeadText(answer: Answer, keepAlive: boolean, length?: number): string {
    const bodyLength = length ?? answer.body?.length ?? 0;
    let text = `HTTP/1.1 ${answer.status} ${REASONS[answer.status] ?? "Unknown"}\r\n` +
      `Date: ${this.#now()}\r\n`;
    text += answer.renderedFields ?? "";
    text += renderFields(answer.fields);
    if (answer.status !== 304) text += `Content-Length: ${bodyLength}\r\n`;
    if (answer.close) text += "Connection: close\r\n";
    else if (keepAlive) text += "Connection: keep-alive\r\n";
    return text + "\r\n";
  }

  /** The Date field's value, made once a second. */
  #now(): string {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.#date.second) {
      this.#date = { second, text: new Date(second * 1000).toUTCString() };
    }
    return this.#date.text;
  }
}

/**
 * The target that names the served `path`, as listings link to it: each
 * segment percent-encoded, and a first segment `-` as `%2D`, so that it is
 * never the server's own `/-/`.
 */
function pathTarget(path: string): string {
  const segments = path.split("/").map((segment) => encodeURIComponent(segment));
  if (segments[0] === "-") segments[0] = "%2D";
  return `/${segments.join("/")}`;
}

/** The fields every answer about a file carries: its type and validators. */
function fileFields(
  path: string,
  version: { mtime: number; validator: string; sha256?: string },
): [string, string][] {
  const fields: [string, string][] = [
    ["Accept-Ranges", "bytes"],
    ["Content-Type", mediaType(path)],
    ["ETag", entityTag(version)],
    ["Last-Modified", new Date(version.mtime).toUTCString()],
  ];
  if (version.sha256) fields.push(["Repr-Digest", reprDigest(version.sha256)]);
  return fields;
}

/** RFC 9530's `Repr-Digest` of a hex sha256: `sha-256=:BASE64:`. */
function reprDigest(hex: string): string {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return `sha-256=:${btoa(String.fromCharCode(...bytes))}:`;
}

/** Fields as they go on the wire, each line ending in CRLF. */
function renderFields(fields: [string, string][]): string {
  let text = "";
  for (const [name, value] of fields) text += `${name}: ${value}\r\n`;
  return text;
}

function jsonAnswer(value: unknown): Answer {
  return {
    status: 200,
    fields: [["Content-Type", "application/json"], ["Cache-Control", "no-store"]],
    body: encoder.encode(JSON.stringify(value)),
  };
}

/**
 * The answer to a request the access gate refused: 401 and 403 with their
 * `WWW-Authenticate` challenge (RFC 6750), 429 with `Retry-After`.
 */
function refusalAnswer(refusal: Refusal): Answer {
  const answer = textAnswer(refusal.status, `${refusal.message}\n`);
  if (refusal.status === 429) {
    answer.fields.push(["Retry-After", String(Math.ceil((refusal.retryMs ?? 1000) / 1000))]);
  } else {
    const error = refusal.error ? `, error="${refusal.error}"` : "";
    answer.fields.push(["WWW-Authenticate", `Bearer realm="tcpcache"${error}`]);
  }
  return answer;
}

/**
 * A refused request's target as the access log shows answered ones: a
 * file's path decoded (the log encodes it), the server's own pages as they
 * are.
 */
function loggedTarget(target: string): string {
  if (target.startsWith("/-/")) return target;
  try {
    return target === "/" ? "" : percentDecode(target.slice(1));
  } catch {
    return target; // not decodable: the raw target, encoded by the log
  }
}

/** The token of an `Authorization: Bearer TOKEN` field; undefined for another scheme. */
function bearerToken(field: string): string | undefined {
  const match = /^bearer +([^ ]+) *$/i.exec(field);
  return match?.[1];
}

/** An answer with a text body (an error's message, a page). */
function textAnswer(
  status: number,
  text: string,
  options: { type?: string; close?: boolean } = {},
): Answer {
  return {
    status,
    fields: [["Content-Type", options.type ?? "text/plain; charset=utf-8"]],
    body: encoder.encode(text),
    close: options.close || status === 503,
  };
}

/** The method of a head that did not parse, for the log, when it is a plain word. */
function methodOf(bytes: Uint8Array): string {
  const space = bytes.indexOf(0x20);
  const word = String.fromCharCode(...bytes.subarray(0, space === -1 ? 0 : Math.min(space, 16)));
  return /^[A-Z]{1,16}$/.test(word) ? word : "-";
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
