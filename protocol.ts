/**
 * The tcpcache wire protocol, version 1: pure encoding and decoding of
 * request lines and response headers, percent-coding and path checks.
 *
 * This module does no I/O, so every change to the wire format is a change
 * here and nowhere else. The contract it implements is `docs/PROTOCOL.md`.
 *
 * @module
 */

/** The TCP port a server listens on and a client connects to by default. */
export const DEFAULT_PORT = 9089;

/** The longest request line, LF included, in bytes. */
export const MAX_REQUEST_LINE = 8192;

/** The largest number (offset, length) a request may carry: 15 digits. */
const MAX_DIGITS = 15;

/**
 * The most entries one `FILES` answer (one page of a listing) holds, and how
 * many it holds when the request names no limit: a client that does not
 * page still gets a directory of up to this many entries whole.
 */
export const FILES_PAGE_LIMIT = 10_000;

/**
 * The spelling of "none" in `FILES`'s positional arguments: the served
 * directory itself as `<dir>`, the start of the listing as `<after>`. No
 * entry is ever named `.`, so it cannot be taken for a name.
 */
const NONE = ".";

/** The error codes of the protocol and their meaning (as in HTTP). */
export const ERROR_CODES = {
  400: "bad request",
  401: "authentication required",
  403: "forbidden",
  404: "not found",
  408: "request timeout",
  413: "request line too long",
  416: "range not satisfiable",
  429: "too many requests",
  500: "server error",
  503: "server busy",
} as const;

/** A protocol error code. */
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * A request the server refuses: it answers `ERR <code> <message>` for it.
 * (A client sees that answer as a `ServerError`, in `client/errors.ts`.)
 */
export class RequestError extends Error {
  /** The three-digit code sent on the wire. */
  readonly code: ErrorCode;

  /** Creates an error with the given code and human-readable message. */
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "RequestError";
    this.code = code;
  }
}

/** A parsed request line: one variant per command. */
export type ProtocolRequest =
  | { command: "GET"; path: string; offset?: number; length?: number }
  | { command: "LIST" }
  | { command: "FILES"; path: string; after?: string; limit?: number }
  | { command: "STAT"; path: string }
  | { command: "PURGE"; path: string; prefix: boolean }
  | { command: "STATS" }
  | { command: "PING" }
  | { command: "QUIT" }
  | { command: "AUTH"; token: string };

/** The command names a request may start with. */
export type Command = ProtocolRequest["command"];

/** How many arguments each command takes: [at least, at most]. */
const ARITY: Record<Command, [number, number]> = {
  GET: [1, 3],
  LIST: [0, 0],
  FILES: [0, 3],
  STAT: [1, 1],
  PURGE: [1, 1],
  STATS: [0, 0],
  PING: [0, 0],
  QUIT: [0, 0],
  AUTH: [1, 1],
};

const utf8 = new TextEncoder();
// ignoreBOM keeps a leading byte-order mark as an ordinary character, as the
// protocol requires; fatal turns invalid UTF-8 into an error (a 400).
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const SPACE = 0x20;
const PERCENT = 0x25;
const DEL = 0x7f;

/**
 * Parses one request line (without its LF; a trailing CR is ignored).
 *
 * @throws {RequestError} 400 for anything malformed.
 * @example
 * ```ts
 * import { parseRequest } from "@tcpcache/tcpcache/protocol";
 * const req = parseRequest(new TextEncoder().encode("GET docs/a%20b.txt 0 10"));
 * // { command: "GET", path: "docs/a b.txt", offset: 0, length: 10 }
 * ```
 */
export function parseRequest(line: Uint8Array): ProtocolRequest {
  if (line.length > 0 && line[line.length - 1] === 0x0d) {
    line = line.subarray(0, line.length - 1);
  }
  if (line.length === 0) throw badRequest("empty request line");
  for (const byte of line) {
    if (byte < SPACE || byte === DEL) {
      throw badRequest("control bytes must be percent-encoded");
    }
  }
  const tokens = splitOnSpace(line);
  if (tokens.some((token) => token.length === 0)) {
    throw badRequest("tokens must be separated by exactly one space");
  }
  const [commandBytes, ...rawArgs] = tokens;
  const command = decodeCommand(commandBytes);
  const [min, max] = ARITY[command];
  if (rawArgs.length < min || rawArgs.length > max) {
    throw badRequest(`${command} takes ${describeArity(min, max)}`);
  }
  const args = rawArgs.map(percentDecode);
  switch (command) {
    case "GET":
      return {
        command,
        path: checkPath(args[0]),
        offset: args[1] === undefined ? undefined : parseNumber(args[1]),
        length: args[2] === undefined ? undefined : parseNumber(args[2]),
      };
    case "FILES":
      return parseFiles(args);
    case "STAT":
      return { command, path: checkPath(args[0]) };
    case "PURGE":
      return parsePurgeTarget(rawArgs[0]);
    case "AUTH":
      return { command, token: args[0] };
    default:
      return { command };
  }
}

function describeArity(min: number, max: number): string {
  if (max === 0) return "no arguments";
  if (min === max) return `${min} argument${min === 1 ? "" : "s"}`;
  return `${min} to ${max} arguments`;
}

function splitOnSpace(line: Uint8Array): Uint8Array[] {
  const tokens: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= line.length; i++) {
    if (i === line.length || line[i] === SPACE) {
      tokens.push(line.subarray(start, i));
      start = i + 1;
    }
  }
  return tokens;
}

function decodeCommand(bytes: Uint8Array): Command {
  let name = "";
  for (const byte of bytes) {
    if (byte > 0x7e) throw badRequest("the command must be ASCII");
    name += String.fromCharCode(byte);
  }
  const command = name.toUpperCase();
  if (!Object.hasOwn(ARITY, command)) {
    throw badRequest(`unknown command: ${percentEncode(name)}`);
  }
  return command as Command;
}

/**
 * Decodes `%XX` escapes to bytes, then the bytes as strict UTF-8.
 *
 * @throws {RequestError} 400 on an invalid escape or invalid UTF-8.
 */
export function percentDecode(bytes: Uint8Array | string): string {
  if (typeof bytes === "string") {
    // Plain ASCII decodes to itself: the common case, spared two copies.
    if (PLAIN_ASCII.test(bytes)) return bytes;
    bytes = utf8.encode(bytes);
  }
  if (!bytes.includes(PERCENT)) return decodeUtf8(bytes);
  const out = new Uint8Array(bytes.length);
  let length = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== PERCENT) {
      out[length++] = bytes[i];
      continue;
    }
    const high = hexValue(bytes[i + 1]);
    const low = hexValue(bytes[i + 2]);
    if (high < 0 || low < 0) throw badRequest("invalid percent escape");
    out[length++] = high * 16 + low;
    i += 2;
  }
  return decodeUtf8(out.subarray(0, length));
}

const PLAIN_ASCII = /^[^%\u0080-\uffff]*$/; // ASCII without "%"

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw badRequest("invalid UTF-8");
  }
}

function hexValue(byte: number | undefined): number {
  if (byte === undefined) return -1;
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x41 + 10;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x61 + 10;
  return -1;
}

const HEX = "0123456789ABCDEF";

/**
 * Percent-encodes a string for the wire: every byte 0x00-0x20, 0x7F, `%`
 * and every non-ASCII byte is escaped, so the encoded text is plain ASCII
 * without spaces. `/` is kept as it is.
 *
 * @example
 * ```ts
 * import { percentEncode } from "@tcpcache/tcpcache/protocol";
 * percentEncode("my docs/ü.txt"); // "my%20docs/%C3%BC.txt"
 * ```
 */
export function percentEncode(text: string): string {
  // Most values (numbers, hex digests, plain names) need no escape at all.
  if (/^[\x21-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = "";
  for (const byte of utf8.encode(text)) {
    if (byte <= SPACE || byte >= DEL || byte === PERCENT) {
      out += "%" + HEX[byte >> 4] + HEX[byte & 15];
    } else {
      out += String.fromCharCode(byte);
    }
  }
  return out;
}

/**
 * Checks a decoded path: relative, no empty, `.` or `..` segments, no NUL.
 * Returns it unchanged when valid.
 *
 * @throws {RequestError} 400 when the path is malformed.
 */
export function checkPath(path: string): string {
  if (path.length === 0) throw badRequest("empty path");
  if (path.includes("\0")) throw badRequest("path contains NUL");
  if (path.startsWith("/")) throw badRequest("path must be relative");
  for (const segment of path.split("/")) {
    if (segment === "" || segment === "." || segment === "..") {
      throw badRequest("path has an empty, '.' or '..' segment");
    }
  }
  return path;
}

/**
 * A `PURGE` target: a path, or, when its raw (still encoded) form ends with
 * `*`, every path that starts with what precedes it (`docs/*`; `*` alone is
 * every path). A file whose name ends with `*` is named `%2A`.
 */
function parsePurgeTarget(raw: Uint8Array): ProtocolRequest {
  const prefix = raw[raw.length - 1] === 0x2a;
  const path = percentDecode(prefix ? raw.subarray(0, raw.length - 1) : raw);
  return { command: "PURGE", path: checkPurgeTarget(path, prefix), prefix };
}

/**
 * Checks a decoded `PURGE` target (both protocols): a valid path, or, for a
 * prefix, what could begin one (`""` is every path). Returns it unchanged.
 *
 * @throws {RequestError} 400 when it is malformed.
 */
export function checkPurgeTarget(path: string, prefix: boolean): string {
  if (!prefix) return checkPath(path);
  if (path !== "") checkPath(path.endsWith("/") ? `${path}x` : path);
  return path;
}

/**
 * True when `key` (a path, or a directory without its slash) falls under a
 * purge of `path`: the path itself, or with `prefix` every path that starts
 * with it, and the directory a `dir/` prefix names.
 */
export function purgeCovers(key: string, path: string, prefix: boolean): boolean {
  return prefix ? key.startsWith(path) || `${key}/` === path : key === path;
}

/**
 * `FILES [<dir> [<after> [<limit>]]]`: `.` is the served directory as `dir`
 * and the start as `after`; absent parts are left out of the request.
 */
function parseFiles(args: string[]): ProtocolRequest {
  const [dir, after, limit] = args;
  const request: Extract<ProtocolRequest, { command: "FILES" }> = {
    command: "FILES",
    path: dir === undefined || dir === NONE ? "" : checkPath(dir),
  };
  const window = checkListingWindow(after, limit === undefined ? undefined : parseNumber(limit));
  if (window.after !== undefined) request.after = window.after;
  if (window.limit !== undefined) request.limit = window.limit;
  return request;
}

/**
 * Compares two names by the bytes of their UTF-8, which is the order of
 * their code points: the order of a listing, and S3's order of keys. (A
 * string's own `<` compares UTF-16 code units, which put U+E000-U+FFFF
 * after the surrogates of U+10000 and above.)
 *
 * @example
 * ```ts
 * import { compareNames } from "@tcpcache/tcpcache/protocol";
 * ["b", "\u{1F600}", "\uFF01", "a"].sort(compareNames); // ["a", "b", "\uFF01", "\u{1F600}"]
 * ```
 */
export function compareNames(a: string, b: string): number {
  if (a === b) return 0;
  // The two orders differ only where both strings hold a unit of U+D800 or
  // above: most names are spared the loop below (a third of a sort's time).
  if (!HIGH_UNIT.test(a) || !HIGH_UNIT.test(b)) return a < b ? -1 : 1;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codePointRank(x) - codePointRank(y);
  }
  return a.length - b.length;
}

const HIGH_UNIT = /[\uD800-\uFFFF]/;

/**
 * A UTF-16 code unit's rank in code point order: surrogates (which stand
 * for U+10000 and above) after U+E000-U+FFFF, every other unit in place.
 */
function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit;
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800;
}

/** Where a page of a listing starts, and how long it is at most (see `FILES`). */
export interface ListingWindow {
  /** List the names after this one (in byte order); absent: from the start. */
  after?: string;
  /** At most this many entries (1 to {@linkcode FILES_PAGE_LIMIT}); absent: that many. */
  limit?: number;
}

/**
 * Checks a page's bounds, decoded, as both protocols take them: `after` is
 * a name (one path segment) or `.` for the start, `limit` 1 to
 * {@linkcode FILES_PAGE_LIMIT}. Returns the window, `.` left out.
 *
 * @throws {RequestError} 400 when either is out of bounds.
 */
export function checkListingWindow(
  after: string | undefined,
  limit: number | undefined,
): ListingWindow {
  const window: ListingWindow = {};
  if (after !== undefined && after !== NONE) {
    if (after === "" || after === ".." || after.includes("/") || after.includes("\0")) {
      throw badRequest(`FILES after must be a name (no '/'), or '.' for the start`);
    }
    window.after = after;
  }
  if (limit !== undefined) {
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > FILES_PAGE_LIMIT) {
      throw badRequest(`FILES limit must be 1 to ${FILES_PAGE_LIMIT}, not ${limit}`);
    }
    window.limit = limit;
  }
  return window;
}

function parseNumber(text: string): number {
  if (!/^[0-9]+$/.test(text) || text.length > MAX_DIGITS) {
    throw badRequest(`not a number: ${percentEncode(text)}`);
  }
  return Number(text);
}

function badRequest(message: string): RequestError {
  return new RequestError(400, message);
}

/** Metadata carried as `key=value` pairs on an `OK` header. */
export type HeaderFields = Record<string, string | number>;

/**
 * Formats a request line (LF included) from a command and its arguments,
 * percent-encoding each argument. A `PURGE` path's final `*` is encoded
 * too, so it names that file; {@linkcode formatPurgePrefix} purges a prefix.
 *
 * @example
 * ```ts
 * import { formatRequest } from "@tcpcache/tcpcache/protocol";
 * formatRequest("GET", ["a b.txt", 0, 10]); // "GET a%20b.txt 0 10\n"
 * ```
 */
export function formatRequest(
  command: Command,
  args: ReadonlyArray<string | number> = [],
): string {
  const encoded = args.map((arg) => percentEncode(String(arg)));
  if (command === "PURGE" && encoded.length > 0) encoded[0] = encoded[0].replace(/\*$/, "%2A");
  return [command, ...encoded].join(" ") + "\n";
}

/**
 * The `FILES` request line (LF included) for one page of the listing of
 * `dir` (`""`: the served directory): the bare forms an older server knows
 * (`FILES`, `FILES dir`) when the window is empty, `.` for what is left out
 * before a part that is given.
 *
 * @example
 * ```ts
 * import { formatFilesRequest } from "@tcpcache/tcpcache/protocol";
 * formatFilesRequest("", { after: "a b.txt" }); // "FILES . a%20b.txt\n"
 * formatFilesRequest("docs", { limit: 100 }); // "FILES docs . 100\n"
 * ```
 */
export function formatFilesRequest(dir: string, window: ListingWindow = {}): string {
  const args: (string | number)[] = [dir === "" ? NONE : dir];
  if (window.after !== undefined || window.limit !== undefined) args.push(window.after ?? NONE);
  if (window.limit !== undefined) args.push(window.limit);
  return formatRequest("FILES", dir === "" && args.length === 1 ? [] : args);
}

/**
 * The request line that purges every cached path starting with `prefix`
 * (`""`: every path).
 *
 * @example
 * ```ts
 * import { formatPurgePrefix } from "@tcpcache/tcpcache/protocol";
 * formatPurgePrefix("docs/"); // "PURGE docs/*\n"
 * ```
 */
export function formatPurgePrefix(prefix: string): string {
  return `PURGE ${percentEncode(prefix).replace(/\*/g, "%2A")}*\n`;
}

/**
 * Formats an `OK` header line (LF included) for a body of `length` bytes.
 *
 * @example
 * ```ts
 * import { formatOk } from "@tcpcache/tcpcache/protocol";
 * formatOk(5, { size: 5, cache: "hit" }); // "OK 5 size=5 cache=hit\n"
 * ```
 */
export function formatOk(length: number, fields: HeaderFields = {}): string {
  let line = `OK ${length}`;
  for (const [key, value] of Object.entries(fields)) {
    line += ` ${key}=${percentEncode(String(value))}`;
  }
  return line + "\n";
}

/**
 * Percent-encodes the control characters of a text (0x00-0x1F, 0x7F, and
 * the line and paragraph separators U+2028/U+2029) and nothing else, so that
 * a name inside a message can neither break its line nor drive a terminal.
 */
export function escapeControls(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f\u2028\u2029]/g, (c) => percentEncode(c));
}

/**
 * Formats an `ERR` line (LF included). The message is human-readable text;
 * its control characters are escaped (see {@linkcode escapeControls}) so it
 * stays one line.
 */
export function formatError(code: ErrorCode, message: string): string {
  return `ERR ${code} ${escapeControls(message)}\n`;
}

/** A parsed response header line. */
export type ResponseHeader =
  | { ok: true; length: number; fields: Record<string, string> }
  | { ok: false; code: number; message: string };

/**
 * Parses a response header line (without its LF).
 *
 * @throws {SyntaxError} when the line is not a valid header.
 */
export function parseResponseHeader(line: string): ResponseHeader {
  if (line.endsWith("\r")) line = line.slice(0, -1);
  const error = /^ERR ([0-9]{3})(?: (.*))?$/s.exec(line);
  if (error) return { ok: false, code: Number(error[1]), message: error[2] ?? "" };
  const [status, length, ...pairs] = line.split(" ");
  if (status !== "OK" || !/^[0-9]{1,15}$/.test(length ?? "")) {
    throw new SyntaxError(`invalid response header: ${percentEncode(line)}`);
  }
  const fields: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0) continue; // not key=value: ignored like an unknown key
    try {
      fields[pair.slice(0, eq)] = percentDecode(pair.slice(eq + 1));
    } catch {
      // a value that does not decode is ignored like an unknown key
    }
  }
  return { ok: true, length: Number(length), fields };
}
