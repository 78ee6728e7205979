/**
 * The head of an HTTP/1.1 request (RFC 9112), parsed strictly for a server
 * that takes no request bodies. Pure: bytes in, a {@linkcode RequestHead} or
 * an {@linkcode HttpError} out.
 *
 * The rules, each a refusal after which the server closes the connection
 * (no byte that follows a refused head is ever read as a request):
 *
 * - The request line is `METHOD SP TARGET SP VERSION`, single spaces. The
 *   method is a token; the target is visible ASCII with no `#`.
 * - `HTTP/1.1` and `HTTP/1.0` are served; HTTP/2's preface and any other
 *   version are `505`; anything else malformed is `400`.
 * - The target is origin-form (`/path?query`), or absolute-form
 *   (`http://authority/path`), whose authority is ignored: the path comes
 *   from the target alone, never from `Host`.
 * - HTTP/1.1 needs exactly one `Host`, HTTP/1.0 at most one, and its value
 *   must be a host and port as a URI has them (`400` otherwise).
 * - Field names are tokens, with no whitespace before the colon; a line
 *   that starts with whitespace (obsolete line folding) is `400`; values
 *   hold no control characters but tab.
 * - Any `Transfer-Encoding` is `400`; a `Content-Length` other than 0 is
 *   `413`, and differing `Content-Length`s are `400`.
 * - At most {@linkcode MAX_HEAD} bytes and {@linkcode MAX_FIELDS} fields
 *   (`431`).
 * - Only `GET`, `HEAD` and `PURGE` (drop a cached file) are served: any
 *   other method is `405` as soon as the request line is read, whatever the
 *   fields say.
 * - Lines end in CRLF; a bare LF is accepted as a line end (RFC 9112 §2.2),
 *   a bare CR is `400`, and so is a NUL anywhere.
 *
 * @module
 */

import { BytesMemo } from "../util/bytes_memo.ts";

/** The most bytes a request head may take, its final empty line included. */
export const MAX_HEAD = 8192;
/** The most header fields a request may carry. */
export const MAX_FIELDS = 100;

/** The methods the server answers. */
export const ALLOWED_METHODS = "GET, HEAD, PURGE";

/** A request head refused with an HTTP status; the connection closes after it. */
export class HttpError extends Error {
  /** The status to answer with (400, 405, 408, 413, 431, 505). */
  readonly status: number;

  /** Creates the refusal; `message` goes into the answer's body and the log. */
  constructor(status: number, message: string) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/** The fields of a request, by lower-case name; repeated fields joined by `, `. */
export class HeaderFields {
  #fields = new Map<string, string>();
  #sealed = false;

  /** The value of field `name` (lower case), or null when it was not sent. */
  get(name: string): string | null {
    return this.#fields.get(name) ?? null;
  }

  /**
   * Adds a field as received; a repeat joins the earlier value.
   *
   * @throws {TypeError} once the fields are sealed: a parsed head is shared
   *   by every request that sent the same bytes.
   */
  add(name: string, value: string): void {
    if (this.#sealed) throw new TypeError("the fields of a parsed head are read-only");
    const earlier = this.#fields.get(name);
    this.#fields.set(name, earlier === undefined ? value : `${earlier}, ${value}`);
  }

  /** Makes the fields read-only (see {@linkcode add}). */
  seal(): void {
    this.#sealed = true;
  }
}

/**
 * A request head that passed every rule. Heads are shared between the
 * requests that sent the same bytes (see {@linkcode parseRequestHead}):
 * read it, never change it.
 */
export interface RequestHead {
  /** `GET` or `HEAD`. */
  readonly method: "GET" | "HEAD" | "PURGE";
  /** The request target as sent. */
  readonly target: string;
  /** The target's path, still percent-encoded, starting with `/`; no query. */
  readonly path: string;
  /** The protocol version. */
  readonly version: "HTTP/1.0" | "HTTP/1.1";
  /** The header fields. */
  readonly fields: HeaderFields;
  /** Whether the connection stays open after the answer. */
  readonly keepAlive: boolean;
}

/**
 * Heads parsed lately: what a head means depends on its bytes alone, and
 * clients repeat their heads (see util/bytes_memo.ts). Heads longer than
 * 1 KiB are parsed every time.
 */
const parsedHeads = new BytesMemo<RequestHead>(1024, 1024);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TARGET = /^[\x21-\x22\x24-\x7e]+$/; // visible ASCII without "#"
const ABSOLUTE = /^https?:\/\/([^/?]*)(\/[^?]*)?(\?.*)?$/i;
const REG_NAME = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$/;
const IPV_FUTURE = /^v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+$/i;
const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const DIGITS = /^[0-9]+$/;
/** A CR that does not end a line. */
const BARE_CR = /\r(?!\n)/;
/** A line end: CRLF, or a bare LF (RFC 9112 §2.2). */
const LINE_END = /\r?\n/;
/** Where a dot segment could start: a `/` followed by `.` or `%2e`. */
const DOT_SEGMENT_START = /\/(\.|%2e)/i;

/**
 * Where a request head ends in `bytes[from..to)`: the index just past its
 * empty line (`\r\n\r\n`, or `\n\n` with bare line feeds), or -1 while it is
 * incomplete.
 *
 * @example
 * ```ts
 * import { findHeadEnd } from "./request_head.ts";
 * const bytes = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET");
 * findHeadEnd(bytes, 0, bytes.length); // 27
 * ```
 */
export function findHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  // Searched in a view that ends at `to`: past it lie stale bytes, often the
  // rest of the buffer without a line feed, which indexOf would scan on every
  // call (0.6 us per request with a 2 KiB read buffer before this was bounded).
  const window = bytes.subarray(from, to);
  const end = window.length;
  let at = window.indexOf(0x0a);
  while (at !== -1) {
    // A line feed ends the head when the line it ends is empty.
    if (at + 1 < end && window[at + 1] === 0x0a) return from + at + 2;
    if (at + 2 < end && window[at + 1] === 0x0d && window[at + 2] === 0x0a) return from + at + 3;
    at = window.indexOf(0x0a, at + 1);
  }
  return -1;
}

/**
 * Parses a complete request head: the bytes up to and including its empty
 * line, as {@linkcode findHeadEnd} delimits them.
 *
 * @example
 * ```ts
 * import { parseRequestHead } from "./request_head.ts";
 * const head = parseRequestHead(new TextEncoder().encode("GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"));
 * head.path; // "/a%20b"
 * ```
 *
 * @throws {HttpError} for a head that breaks a rule of this module.
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  if (bytes.length > MAX_HEAD) throw new HttpError(431, `request head over ${MAX_HEAD} bytes`);
  return parsedHeads.get(bytes, parseHeadBytes);
}

/** A head's bytes parsed (made once: a closure per call would be one more object per request). */
const parseHeadBytes = (bytes: Uint8Array) => parseHeadText(latin1(bytes));

function parseHeadText(text: string): RequestHead {
  if (text.includes("\0")) throw new HttpError(400, "NUL in the request head");
  const lines = splitLines(text);
  const [method, target, version] = parseRequestLine(lines[0]);
  if (method !== "GET" && method !== "HEAD" && method !== "PURGE") {
    throw new HttpError(405, `method ${method} not allowed`);
  }
  const authority = target.startsWith("/") ? undefined : ABSOLUTE.exec(target)?.[1];
  if (!target.startsWith("/") && authority === undefined) {
    throw new HttpError(400, "the target must be a path or an absolute http URL");
  }
  const fields = new HeaderFields();
  let hosts = 0;
  let count = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") break; // the final empty line
    if (++count > MAX_FIELDS) throw new HttpError(431, `more than ${MAX_FIELDS} header fields`);
    const [name, value] = parseField(line);
    if (name === "host") hosts++;
    fields.add(name, value);
  }
  checkHost(version, hosts, fields.get("host"));
  checkNoBody(fields);
  // RFC 9110 §4.2: an http URI has a host; userinfo in it is an error.
  if (authority !== undefined && (authority.startsWith(":") || !isHostAndPort(authority))) {
    throw new HttpError(400, "invalid authority in the target");
  }
  if (authority === "") throw new HttpError(400, "an http URL needs a host");
  fields.seal();
  return Object.freeze({
    method,
    target,
    path: method === "PURGE" ? purgeTarget(target) : targetPath(target),
    version,
    fields,
    keepAlive: keepsAlive(version, fields.get("connection")),
  });
}

/** Bytes as latin-1 text, one character per byte. */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    // Apply, not a spread, which iterates (7x slower).
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return text;
}

/** The head's lines, without their line ends; a bare CR is refused. */
function splitLines(text: string): string[] {
  if (BARE_CR.test(text)) throw new HttpError(400, "bare CR in the request head");
  return text.split(LINE_END);
}

function parseRequestLine(line: string): [string, string, "HTTP/1.0" | "HTTP/1.1"] {
  const parts = line.split(" ");
  if (parts.length !== 3) {
    throw new HttpError(400, "the request line must be METHOD TARGET VERSION, single spaces");
  }
  const [method, target, version] = parts;
  if (line === "PRI * HTTP/2.0") throw new HttpError(505, "HTTP/2 is not served here");
  // The served methods and versions need no pattern: the common case is spared two.
  if (method !== "GET" && method !== "HEAD" && method !== "PURGE" && !TOKEN.test(method)) {
    throw new HttpError(400, "the method must be a token");
  }
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    if (!/^HTTP\/[0-9]\.[0-9]$/.test(version)) throw new HttpError(400, "malformed HTTP version");
    throw new HttpError(505, `${version} is not served here`);
  }
  if (!TARGET.test(target)) {
    throw new HttpError(400, "the target must be visible ASCII, without a fragment");
  }
  return [method as "GET" | "HEAD" | "PURGE", target, version];
}

function parseField(line: string): [string, string] {
  if (line.startsWith(" ") || line.startsWith("\t")) {
    throw new HttpError(400, "obsolete line folding");
  }
  const colon = line.indexOf(":");
  const name = colon === -1 ? "" : line.slice(0, colon);
  if (!TOKEN.test(name)) throw new HttpError(400, "a header field name must be a token");
  const value = trimWhitespace(line.slice(colon + 1));
  if (!FIELD_VALUE.test(value)) {
    throw new HttpError(400, `control characters in the ${name} field`);
  }
  return [name.toLowerCase(), value];
}

function checkHost(version: string, hosts: number, host: string | null): void {
  if (hosts > 1) throw new HttpError(400, "more than one Host field");
  if (hosts === 0 && version === "HTTP/1.1") throw new HttpError(400, "HTTP/1.1 needs a Host");
  if (host === null || host === lastValidHost) return;
  if (!isHostAndPort(host)) throw new HttpError(400, "invalid Host");
  lastValidHost = host; // a client repeats its Host on every request
}

let lastValidHost = "";

/** The server takes no bodies: nothing may announce one. */
function checkNoBody(fields: HeaderFields): void {
  if (fields.get("transfer-encoding") !== null) {
    throw new HttpError(400, "Transfer-Encoding on a request is not accepted");
  }
  const length = fields.get("content-length");
  if (length === null) return;
  const values = length.split(",").map(trimWhitespace);
  if (!values.every((value) => DIGITS.test(value) && value === values[0])) {
    throw new HttpError(400, "invalid Content-Length");
  }
  if (Number(values[0]) !== 0) throw new HttpError(413, "request bodies are not accepted");
}

/**
 * A `PURGE` target's path: as for any method, but a target with dot
 * segments is refused rather than resolved, so that `/docs/../*` cannot
 * turn into `/*` (everything) by accident.
 */
function purgeTarget(target: string): string {
  const path = targetPath(target);
  const raw = target.startsWith("/") ? target : (ABSOLUTE.exec(target)![2] ?? "/");
  const query = raw.indexOf("?");
  if (path !== (query === -1 ? raw : raw.slice(0, query))) {
    throw new HttpError(400, "a PURGE target must not have dot segments");
  }
  return path;
}

/**
 * The path of an origin-form or absolute-form target, without its query,
 * its dot segments resolved as a URL's are (RFC 3986 §5.2.4; `%2e` is a
 * dot, as browsers read it): `..` never climbs above the root.
 */
function targetPath(target: string): string {
  const raw = target.startsWith("/") ? target : (ABSOLUTE.exec(target)![2] ?? "/");
  const query = raw.indexOf("?");
  return removeDotSegments(query === -1 ? raw : raw.slice(0, query));
}

function removeDotSegments(path: string): string {
  if (!DOT_SEGMENT_START.test(path)) return path; // most paths: nothing to remove
  const segments = path.split("/").slice(1);
  const out: string[] = [];
  segments.forEach((segment, i) => {
    const dots = segment.replace(/%2e/gi, ".");
    const last = i === segments.length - 1;
    if (dots === "..") out.pop();
    if (dots === "." || dots === "..") {
      if (last) out.push(""); // "/a/.." is the directory "/"
      return;
    }
    out.push(segment);
  });
  return "/" + out.join("/");
}

function keepsAlive(version: string, connection: string | null): boolean {
  if (connection === null) return version === "HTTP/1.1";
  const options = (connection ?? "").toLowerCase().split(",").map(trimWhitespace);
  if (options.includes("close")) return false;
  return version === "HTTP/1.1" || options.includes("keep-alive");
}

/** Strips optional whitespace, which is spaces and tabs only (RFC 9110 §5.6.3). */
function trimWhitespace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isSpaceOrTab(text.charCodeAt(start))) start++;
  while (end > start && isSpaceOrTab(text.charCodeAt(end - 1))) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

function isSpaceOrTab(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** `host [":" port]` as RFC 3986 has them; the host may be empty. */
function isHostAndPort(text: string): boolean {
  const colon = text.startsWith("[") ? text.indexOf("]:") + 1 : text.lastIndexOf(":");
  const host = colon > 0 || text.startsWith(":") ? text.slice(0, colon) : text;
  const port = colon > 0 || text.startsWith(":") ? text.slice(colon + 1) : "";
  if (!/^[0-9]*$/.test(port)) return false;
  if (host.startsWith("[")) {
    if (!host.endsWith("]")) return false;
    const literal = host.slice(1, -1);
    return IPV_FUTURE.test(literal) || isIpv6(literal);
  }
  return REG_NAME.test(host);
}

/** An IPv6 address as RFC 3986 writes one (`::` at most once, IPv4 at the end allowed). */
function isIpv6(text: string): boolean {
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = halves.map((half) => half === "" ? [] : half.split(":"));
  const all = groups.flat();
  let count = all.length;
  const last = all.at(-1);
  if (last !== undefined && last.includes(".")) {
    if (!IPV4.test(last)) return false;
    all.pop();
    count += 1; // an IPv4 address takes two groups
  }
  if (!all.every((group) => HEX_GROUP.test(group))) return false;
  return halves.length === 2 ? count <= 7 : count === 8;
}
