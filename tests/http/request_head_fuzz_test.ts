/**
 * A seeded fuzz test of the request-head parser against a model of its
 * rules written here, from the module doc of `http/request_head.ts` and
 * RFC 9112 / RFC 9110 / RFC 3986 / RFC 5234; the model neither calls nor
 * copies the parser's code.
 *
 * Heads are made by building a valid one from parts (methods, targets,
 * versions, Host values, fields, Content-Length and Transfer-Encoding
 * variants, line ends), changing its structure (a duplicated line, a space
 * before a colon, a folded line, a changed case, many fields, a long head),
 * then changing its bytes (insert, delete or replace with CR, LF, NUL, SP,
 * HT, ':', '#', high bytes...). Every head must end in an answer: accepted
 * with the model's method, target, path, version, keep-alive and fields, or
 * refused with an `HttpError` whose status is one the model finds. A head
 * that breaks several rules may be refused for any of them (the module doc
 * names no order between rules), so the model gives the set of statuses its
 * violations carry; a head that breaks one rule has exactly one.
 *
 * `findHeadEnd` is checked against the model's own search for the empty
 * line on the same bytes, at random `from` and `to`.
 */

import assert from "node:assert/strict";
import {
  findHeadEnd,
  HttpError,
  MAX_FIELDS,
  MAX_HEAD,
  parseRequestHead,
  type RequestHead,
} from "../../http/request_head.ts";
import { seededRandom } from "../helpers.ts";

/** How many heads each seed makes. */
const HEADS = 20_000;
const SEEDS = [0x9e3779b9, 12_345];

// ---------------------------------------------------------------------------
// The model.

/** What the model expects of a head. */
type Expected =
  | { accepted: true; head: ModelHead }
  | { accepted: false; statuses: Set<number>; reasons: string[] };

interface ModelHead {
  method: string;
  target: string;
  path: string;
  version: string;
  keepAlive: boolean;
  /** Each field name (lower case) with its values in order. */
  fields: Map<string, string[]>;
}

const CR = 0x0d;
const LF = 0x0a;

/** RFC 9110 §5.6.2: tchar. */
function isTchar(code: number): boolean {
  return (code >= 0x30 && code <= 0x39) || (code >= 0x41 && code <= 0x5a) ||
    (code >= 0x61 && code <= 0x7a) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(code));
}

function isToken(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) if (!isTchar(text.charCodeAt(i))) return false;
  return true;
}

function isDigits(text: string): boolean {
  if (text.length === 0) return false;
  for (const char of text) if (char < "0" || char > "9") return false;
  return true;
}

function isHexDigit(char: string): boolean {
  return (char >= "0" && char <= "9") || (char >= "a" && char <= "f") ||
    (char >= "A" && char <= "F");
}

/** RFC 3986 §2.3 unreserved. */
function isUnreserved(char: string): boolean {
  return (char >= "a" && char <= "z") || (char >= "A" && char <= "Z") ||
    (char >= "0" && char <= "9") || "-._~".includes(char);
}

/** RFC 3986 §2.2 sub-delims. */
function isSubDelim(char: string): boolean {
  return char.length === 1 && "!$&'()*+,;=".includes(char);
}

/** `*( unreserved / pct-encoded / sub-delims / extra )` of RFC 3986. */
function isPctString(text: string, extra = ""): boolean {
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === "%") {
      if (!isHexDigit(text[i + 1] ?? "") || !isHexDigit(text[i + 2] ?? "")) return false;
      i += 2;
    } else if (!isUnreserved(char) && !isSubDelim(char) && !extra.includes(char)) {
      return false;
    }
  }
  return true;
}

/** RFC 3986 §3.2.2 IPv4address: four dec-octets, no leading zeros. */
function isIPv4(text: string): boolean {
  const octets = text.split(".");
  return octets.length === 4 &&
    octets.every((octet) =>
      isDigits(octet) && octet.length <= 3 && Number(octet) <= 255 &&
      (octet.length === 1 || octet[0] !== "0")
    );
}

/** RFC 3986 §3.2.2 IPv6address: eight h16 groups, or fewer with one "::". */
function isIPv6(text: string): boolean {
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groupsOf = (half: string) => half === "" ? [] : half.split(":");
  const groups = halves.flatMap(groupsOf);
  let count = 0;
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i];
    const last = i === groups.length - 1;
    if (last && group.includes(".")) {
      if (!isIPv4(group)) return false;
      count += 2; // ls32
    } else if (group.length >= 1 && group.length <= 4 && [...group].every(isHexDigit)) {
      count += 1;
    } else {
      return false;
    }
  }
  return halves.length === 2 ? count <= 7 : count === 8;
}

/** RFC 3986 §3.2.2 IP-literal, the brackets' contents: IPv6address / IPvFuture. */
function isIPLiteral(inside: string): boolean {
  if (/^[vV]/.test(inside)) {
    const dot = inside.indexOf(".");
    const version = inside.slice(1, dot);
    const rest = inside.slice(dot + 1);
    // IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ), no pct-encoding.
    return dot > 1 && [...version].every(isHexDigit) && rest.length > 0 &&
      !rest.includes("%") && isPctString(rest, ":");
  }
  return isIPv6(inside);
}

/**
 * `host [ ":" port ]` as RFC 3986 §3.2.2-3 has them (the Host field's
 * grammar, RFC 9110 §7.2); `nonEmpty` for an http URI's authority
 * (RFC 9110 §4.2.1: an empty host is invalid).
 */
function isHostAndPort(text: string, nonEmpty: boolean): boolean {
  let host: string;
  let rest: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1 || !isIPLiteral(text.slice(1, close))) return false;
    host = text.slice(0, close + 1);
    rest = text.slice(close + 1);
  } else {
    const colon = text.indexOf(":");
    host = colon === -1 ? text : text.slice(0, colon);
    rest = colon === -1 ? "" : text.slice(colon);
    if (!isPctString(host)) return false; // reg-name (IPv4address is one too)
  }
  if (rest !== "" && !(rest[0] === ":" && [...rest.slice(1)].every((c) => c >= "0" && c <= "9"))) {
    return false;
  }
  return !nonEmpty || host.length > 0;
}

/**
 * The path of a request target, or null when it is neither origin-form nor
 * an http(s) absolute-form (RFC 9112 §3.2.1-2, RFC 9110 §4.2.1-2). The
 * characters of path and query are those the module doc allows (visible
 * ASCII but '#'), checked before; the authority is an http URI's.
 */
function modelTargetPath(target: string): string | null {
  const beforeQuery = (text: string) => removeDots(text.split("?")[0]);
  if (target.startsWith("/")) return beforeQuery(target);
  const schemeEnd = target.indexOf("://");
  if (schemeEnd === -1) return null;
  const scheme = target.slice(0, schemeEnd).toLowerCase();
  if (scheme !== "http" && scheme !== "https") return null;
  const afterScheme = target.slice(schemeEnd + 3);
  let authorityEnd = afterScheme.length;
  for (const stop of ["/", "?"]) {
    const at = afterScheme.indexOf(stop);
    if (at !== -1 && at < authorityEnd) authorityEnd = at;
  }
  // RFC 9110 §4.2.4: a recipient SHOULD treat userinfo ("user@") in an
  // http URI as an error; this server does.
  const authority = afterScheme.slice(0, authorityEnd);
  if (!isHostAndPort(authority, true)) return null;
  return beforeQuery(afterScheme.slice(authorityEnd));
}

/**
 * RFC 3986 §5.2.4 remove_dot_segments on an absolute path, a segment that
 * reads "." or ".." once each `%2e` is a dot counting as one (the module
 * doc: "as browsers read it").
 */
function removeDots(path: string): string {
  const dots = (segment: string) => segment.replace(/%2e/gi, ".");
  let input = path;
  let output = "";
  while (input !== "") {
    // `input` always starts with "/" here: take its first segment.
    const next = input.indexOf("/", 1);
    const segment = next === -1 ? input.slice(1) : input.slice(1, next);
    const rest = next === -1 ? "" : input.slice(next);
    if (dots(segment) === ".") {
      input = rest === "" ? "/" : rest; // B: "/./" and a final "/." become "/"
    } else if (dots(segment) === "..") {
      output = output.slice(0, Math.max(0, output.lastIndexOf("/"))); // C
      input = rest === "" ? "/" : rest;
    } else {
      output += "/" + segment; // E
      input = rest;
    }
  }
  return output === "" ? "/" : output;
}

/** ASCII-only lower case, as HTTP's case-insensitive tokens compare. */
function asciiLower(text: string): string {
  return text.replace(/[A-Z]/g, (char) => char.toLowerCase());
}

/** Strips OWS (SP and HT only, RFC 9110 §5.6.3) from both ends. */
function stripOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text[start] === " " || text[start] === "\t")) start++;
  while (end > start && (text[end - 1] === " " || text[end - 1] === "\t")) end--;
  return text.slice(start, end);
}

/**
 * Where the head that starts at `from` ends: just past the LF of the first
 * line after the first one that is empty or holds only a CR; -1 when no such
 * line ends before `to`.
 */
function modelHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  let lineStart = from;
  let lineNumber = 0;
  for (let i = from; i < to; i++) {
    if (bytes[i] !== LF) continue;
    const length = i - lineStart;
    if (lineNumber > 0 && (length === 0 || (length === 1 && bytes[lineStart] === CR))) return i + 1;
    lineNumber++;
    lineStart = i + 1;
  }
  return -1;
}

/** The model's answer to a complete head (the bytes through its empty line). */
function model(bytes: Uint8Array): Expected {
  const reasons: string[] = [];
  const statuses = new Set<number>();
  const refuse = (status: number, reason: string) => {
    statuses.add(status);
    reasons.push(`${status} ${reason}`);
  };
  if (bytes.length > MAX_HEAD) refuse(431, "head too long");
  if (bytes.includes(0)) refuse(400, "NUL");

  // Lines: LF ends one, a CR just before it belongs to the line end, and
  // any other CR is a bare CR (RFC 9112 §2.2).
  const lines: string[] = [];
  let line = "";
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte === LF) {
      lines.push(line);
      line = "";
    } else if (byte === CR && bytes[i + 1] === LF) {
      // part of CRLF
    } else {
      if (byte === CR) refuse(400, "bare CR");
      line += String.fromCharCode(byte);
    }
  }
  // What is refused before the request line is read: size, NUL, bare CR.
  const early = { statuses: new Set(statuses), reasons: [...reasons] };
  // The head was delimited by its empty line, so the last line is that one.
  const requestLine = lines[0];
  const fieldLines = lines.slice(1, -1);

  // The request line (RFC 9112 §3): method SP target SP version.
  let version: string | null = null;
  const parts = requestLine.split(" ");
  const [method, target, versionText] = parts;
  let path: string | null = null;
  if (parts.length !== 3) {
    refuse(400, "request line not three parts");
  } else {
    if (!isToken(method)) refuse(400, "method not a token");
    else if (method !== "GET" && method !== "HEAD") refuse(405, "method");
    const versionShape = versionText.length === 8 && versionText.startsWith("HTTP/") &&
      isDigits(versionText[5]) && versionText[6] === "." && isDigits(versionText[7]);
    if (!versionShape) refuse(400, "version malformed");
    else if (versionText !== "HTTP/1.1" && versionText !== "HTTP/1.0") refuse(505, "version");
    else version = versionText;
    let visible = target.length > 0;
    for (let i = 0; i < target.length; i++) {
      const code = target.charCodeAt(i);
      if (code < 0x21 || code > 0x7e || code === 0x23) visible = false;
    }
    if (!visible) refuse(400, "target bytes");
    else {
      path = modelTargetPath(target);
      if (path === null) refuse(400, "target form");
    }
    // The module doc: another method is 405 as soon as the request line is
    // read, whatever the fields say (only what comes before may differ).
    const lineValid = reasons.length === early.reasons.length + 1 &&
      reasons.at(-1) === "405 method";
    if (lineValid) {
      return {
        accepted: false,
        statuses: new Set([...early.statuses, 405]),
        reasons: [...early.reasons, "405 method"],
      };
    }
  }

  // Field lines (RFC 9112 §5, RFC 9110 §5.5).
  if (fieldLines.length > MAX_FIELDS) refuse(431, "too many fields");
  const fields = new Map<string, string[]>();
  for (const field of fieldLines) {
    if (field.startsWith(" ") || field.startsWith("\t")) {
      refuse(400, "obs-fold");
      continue;
    }
    const colon = field.indexOf(":");
    if (colon === -1 || !isToken(field.slice(0, colon))) {
      refuse(400, "field name");
      continue;
    }
    const value = stripOws(field.slice(colon + 1));
    let clean = true;
    for (let i = 0; i < value.length; i++) {
      const code = value.charCodeAt(i);
      if (code !== 0x09 && (code < 0x20 || code === 0x7f)) clean = false;
    }
    if (!clean) refuse(400, "control in value");
    const name = asciiLower(field.slice(0, colon));
    fields.set(name, [...fields.get(name) ?? [], value]);
  }

  // Host (RFC 9112 §3.2).
  const hosts = fields.get("host") ?? [];
  if (hosts.length > 1) refuse(400, "two Hosts");
  if (hosts.length === 0 && version === "HTTP/1.1") refuse(400, "no Host");
  if (hosts.length === 1 && !isHostAndPort(hosts[0], false)) refuse(400, "Host value");

  // No bodies (RFC 9112 §6, the module doc).
  if (fields.has("transfer-encoding")) refuse(400, "Transfer-Encoding");
  const lengths = (fields.get("content-length") ?? []).flatMap((value) => value.split(","))
    .map(stripOws);
  if (lengths.length > 0) {
    if (!lengths.every(isDigits)) refuse(400, "Content-Length syntax");
    else if (!lengths.every((length) => length === lengths[0])) {
      refuse(400, "Content-Lengths differ");
    } else if (/[^0]/.test(lengths[0])) refuse(413, "a body");
  }

  if (statuses.size > 0) return { accepted: false, statuses, reasons };
  // Keep-alive (RFC 9112 §9.3).
  const options = (fields.get("connection") ?? []).flatMap((value) => value.split(","))
    .map((option) => asciiLower(stripOws(option)));
  const keepAlive = !options.includes("close") &&
    (version === "HTTP/1.1" || options.includes("keep-alive"));
  return {
    accepted: true,
    head: { method, target, path: path!, version: version!, keepAlive, fields },
  };
}

// ---------------------------------------------------------------------------
// The generator.

class Generator {
  readonly random: () => number;

  constructor(seed: number) {
    this.random = seededRandom(seed);
  }

  chance(p: number): boolean {
    return this.random() < p;
  }

  int(below: number): number {
    return Math.floor(this.random() * below);
  }

  /** One of `items`; the first `favoured` of them with 3/4 of the weight together. */
  pick<T>(items: readonly T[], favoured = 0): T {
    if (favoured > 0 && this.chance(0.75)) return items[this.int(favoured)];
    return items[this.int(items.length)];
  }
}

const METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PRI", "get", "G(T", "CONNECT"];
const TARGETS = [
  "/",
  "/tiny.txt",
  "/a%20b/c.txt?x=1&y=/z",
  "/-/stats",
  "/dir/",
  "/a/../b/./c",
  "/%2e%2E/x/.%2e/",
  "/..",
  "/a//../b/..",
  "http://h/a/../../b?c=/../d",
  "//x",
  "/?",
  "http://h/x",
  "http://h:80/a?b",
  "https://[::1]:8443/p",
  "HTTP://h",
  "http://h?q=/x",
  "http://u:p@h/x",
  "*",
  "h:80",
  "/a#b",
  "/caf\xe9",
  "http:///x",
  "http://a:b/x",
  "http://[/x",
  "ftp://h/x",
  "http:/x",
];
const VERSIONS = [
  "HTTP/1.1",
  "HTTP/1.0",
  "HTTP/1.2",
  "HTTP/2.0",
  "http/1.1",
  "HTTP/1",
  "HTTP/1.10",
];
const HOSTS = [
  "h",
  "example.com:8080",
  "[::1]",
  "[::1]:80",
  "127.0.0.1",
  "",
  "x/-",
  "x#",
  "a b",
  "a:b",
  "a:1:2",
  "%41",
  "%",
  "%zz",
  "[v1.x]",
  "[:]",
  "[1:2:3:4:5:6:7:8]",
  "[1::2::3]",
  "[::ffff:1.2.3.4]",
  "[1:2:3:4:5:6:7:8:9]",
  "h:",
  ":80",
  "caf\xe9",
  "u@h",
  "[V1.x]",
  "[v1.x]:80",
];
const OTHER_FIELDS = [
  "Accept: */*",
  "User-Agent: fuzz/1.0 (x; y)",
  "Connection: close",
  "Connection: keep-alive",
  "Connection: Keep-Alive, close",
  "Connection: upgrade",
  "Connection: close\xa0",
  "X-Obs: caf\xe9",
  "Range: bytes=0-1",
  'If-None-Match: "x", W/"y"',
  "Accept-Encoding: gzip,\tbr",
  "X-Empty:",
  "X-Tab:\tv\t",
];
const BODY_FIELDS = [
  "Transfer-Encoding: chunked",
  "Transfer-Encoding: chunked, identity",
  "Transfer-Encoding:\tchunked",
  "Transfer-Encoding:",
  "Content-Length: 0",
  "Content-Length: 5",
  "Content-Length: 0, 5",
  "Content-Length: 0, 0",
  "Content-Length: +0",
  "Content-Length: -1",
  "Content-Length: 00",
  "Content-Length: 1000000",
  "Content-Length: 0\xa0",
];
/** Bytes that matter to the grammar, for the byte-level changes. */
const INTERESTING = [
  0x0d,
  0x0a,
  0x00,
  0x20,
  0x09,
  0x3a,
  0x23,
  0x2f,
  0x3f,
  0x40,
  0x25,
  0x5b,
  0x5d,
  0x2c,
  0x7f,
  0x80,
  0xa0,
  0xe9,
  0xff,
  0x01,
  0x0b,
  0x30,
  0x35,
  0x61,
  0x2d,
  0x2e,
];

/** Flips the case of some letters. */
function recase(g: Generator, text: string): string {
  return [...text].map((char) =>
    g.chance(0.3) ? (char === char.toLowerCase() ? char.toUpperCase() : char.toLowerCase()) : char
  ).join("");
}

/** A head built from parts, changed in structure and then in bytes. */
function generate(g: Generator): Uint8Array {
  const requestLine = `${g.pick(METHODS, 2)} ${g.pick(TARGETS, 3)} ${g.pick(VERSIONS, 2)}`;
  const fields: string[] = [];
  if (g.chance(0.85)) fields.push(`Host: ${g.pick(HOSTS, 5)}`);
  for (let n = g.int(5); n > 0; n--) fields.push(g.pick(OTHER_FIELDS));
  if (g.chance(0.25)) fields.push(g.pick(BODY_FIELDS));
  if (g.chance(0.05)) fields.push(g.pick(BODY_FIELDS));
  if (g.chance(0.05)) {
    const count = MAX_FIELDS - 3 + g.int(6);
    for (let i = fields.length; i < count; i++) fields.push(`X-F${i}: ${i}`);
  }
  // Fields in any order, some names in another case.
  for (let i = fields.length - 1; i > 0; i--) {
    const j = g.int(i + 1);
    [fields[i], fields[j]] = [fields[j], fields[i]];
  }
  for (let i = 0; i < fields.length; i++) {
    if (!g.chance(0.15)) continue;
    const colon = fields[i].indexOf(":");
    fields[i] = recase(g, fields[i].slice(0, colon)) + fields[i].slice(colon);
  }
  // Structural changes.
  if (fields.length > 0 && g.chance(0.08)) fields.push(fields[g.int(fields.length)]);
  if (fields.length > 0 && g.chance(0.04)) {
    const i = g.int(fields.length);
    fields[i] = fields[i].replace(":", g.pick([" :", "\t:", " : "]));
  }
  if (fields.length > 0 && g.chance(0.04)) fields.splice(g.int(fields.length + 1), 0, " folded");
  if (g.chance(0.05)) {
    // A head near MAX_HEAD: a padding field that brings it to within a few bytes.
    const size = fieldsSize(requestLine, fields) + 12;
    fields.push(`X-Pad: ${"p".repeat(Math.max(0, MAX_HEAD - size - 4 + g.int(9)))}`);
  }

  const lineEnd = () => g.chance(0.7) ? "\r\n" : "\n";
  let text = requestLine + lineEnd();
  for (const field of fields) text += field + lineEnd();
  text += lineEnd();
  const bytes = [...text].map((char) => char.charCodeAt(0));

  // Byte changes.
  for (let n = g.chance(0.5) ? 0 : 1 + g.int(3); n > 0; n--) {
    const at = g.int(bytes.length + 1);
    const byte = g.chance(0.8) ? g.pick(INTERESTING) : 0x21 + g.int(0x5e);
    const change = g.int(4);
    if (change === 0) bytes.splice(at, 0, byte);
    else if (change === 1) bytes.splice(at, 1);
    else if (change === 2) bytes[Math.min(at, bytes.length - 1)] = byte;
    else {
      // a letter changes case
      const char = String.fromCharCode(bytes[at] ?? 0);
      const other = char === char.toLowerCase() ? char.toUpperCase() : char.toLowerCase();
      if (other.length === 1 && other.charCodeAt(0) < 0x80) bytes[at] = other.charCodeAt(0);
    }
  }
  return Uint8Array.from(bytes);
}

function fieldsSize(requestLine: string, fields: string[]): number {
  return requestLine.length + 2 + fields.reduce((sum, field) => sum + field.length + 2, 0) + 2;
}

// ---------------------------------------------------------------------------
// The comparison.

/** The parser's answer: the head, or its HttpError. */
function parserAnswer(bytes: Uint8Array): RequestHead | HttpError {
  try {
    return parseRequestHead(bytes);
  } catch (error) {
    if (error instanceof HttpError) return error;
    throw new Error(`threw ${error} (not an HttpError) on ${show(bytes)}`);
  }
}

/** The bytes as a JavaScript string literal (`\xHH` for what is not printable ASCII). */
function show(bytes: Uint8Array): string {
  let text = '"';
  for (const byte of bytes) {
    if (byte === 0x0d) text += "\\r";
    else if (byte === 0x0a) text += "\\n";
    else if (byte === 0x09) text += "\\t";
    else if (byte === 0x22 || byte === 0x5c) text += "\\" + String.fromCharCode(byte);
    else if (byte >= 0x20 && byte < 0x7f) text += String.fromCharCode(byte);
    else text += "\\x" + byte.toString(16).padStart(2, "0");
  }
  return text + '"';
}

/**
 * Where the parser and the model differ on `head`, or null when they agree:
 * `kind` groups the same difference across inputs, `detail` is this one.
 */
function disagreement(head: Uint8Array): { kind: string; detail: string } | null {
  const expected = model(head);
  const got = parserAnswer(head);
  const refused = got instanceof HttpError;
  const answer = refused ? `${got.status} "${got.message}"` : "accepted";
  if (!expected.accepted) {
    if (refused && expected.statuses.has(got.status)) return null;
    const reasons = [...new Set(expected.reasons)].sort().join("; ");
    return { kind: `model refuses (${reasons}), parser: ${answer}`, detail: "" };
  }
  if (refused) return { kind: `model accepts, parser refuses: ${answer}`, detail: "" };
  const want = expected.head;
  for (const key of ["method", "target", "path", "version", "keepAlive"] as const) {
    if (got[key] !== want[key]) {
      return {
        kind: `${key} differs`,
        detail: `model ${JSON.stringify(want[key])}, parser ${JSON.stringify(got[key])}`,
      };
    }
  }
  for (const [name, values] of want.fields) {
    const value = got.fields.get(name);
    if (value !== values.join(", ")) {
      return {
        kind: `field ${name} differs`,
        detail: `model ${JSON.stringify(values.join(", "))}, parser ${JSON.stringify(value)}`,
      };
    }
  }
  for (const name of ["x-absent", "transfer-encoding", "content-length", "host", "connection"]) {
    if (!want.fields.has(name) && got.fields.get(name) !== null) {
      return { kind: `field ${name} invented`, detail: "" };
    }
  }
  return null;
}

Deno.test(`fuzz: ${HEADS} generated heads per seed, parser against the model`, () => {
  const tally = new Map<string, number>();
  const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);
  // By kind of difference: how many heads, and the shortest of them.
  const found = new Map<string, { shortest: string; count: number }>();
  for (const seed of SEEDS) {
    const g = new Generator(seed);
    for (let n = 0; n < HEADS; n++) {
      const bytes = generate(g);

      // The head's end, at the start and at a random window.
      const end = findHeadEnd(bytes, 0, bytes.length);
      assert.equal(end, modelHeadEnd(bytes, 0, bytes.length), `findHeadEnd of ${show(bytes)}`);
      const from = g.int(bytes.length + 1);
      const to = from + g.int(bytes.length - from + 1);
      assert.equal(
        findHeadEnd(bytes, from, to),
        modelHeadEnd(bytes, from, to),
        `findHeadEnd(${from}, ${to}) of ${show(bytes)}`,
      );
      // Whatever the bytes, the parser answers (a head or an HttpError).
      parserAnswer(bytes);
      if (end === -1) {
        count("no end");
        continue;
      }
      const head = bytes.subarray(0, end);
      const expected = model(head);
      count(expected.accepted ? "accepted" : [...expected.statuses].sort().join("|"));
      const problem = disagreement(head);
      if (problem !== null) {
        const example = `${problem.detail} ${show(head)}`.trim();
        const seen = found.get(problem.kind) ?? { shortest: example, count: 0 };
        seen.count++;
        if (example.length < seen.shortest.length) seen.shortest = example;
        found.set(problem.kind, seen);
      }
    }
  }
  const report = [...found].map(([kind, { shortest, count }]) =>
    `  ${kind} (${count} heads), the shortest:\n    ${shortest}`
  ).join("\n");
  assert.equal(found.size, 0, `the parser and the model disagree:\n${report}`);

  // The generator reached every answer, each status alone as well.
  for (const key of ["accepted", "400", "405", "413", "431", "505", "no end"]) {
    assert.ok((tally.get(key) ?? 0) >= 50, `only ${tally.get(key) ?? 0} heads gave ${key}`);
  }
});

Deno.test("fuzz: the model itself on heads whose answer is known", () => {
  const cases: [string, number | "accepted"][] = [
    ["GET / HTTP/1.1\r\nHost: h\r\n\r\n", "accepted"],
    ["GET http://h:80/x?y HTTP/1.1\nHost: [::1]:80\n\n", "accepted"],
    ["GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "accepted"],
    ["GET / HTTP/1.1\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: x/-\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: %zz\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nHost: [1::2::3]\r\n\r\n", 400],
    ["GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 405],
    ["GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", 413],
    ["GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\xa0\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505],
  ];
  for (const [text, answer] of cases) {
    const expected = model(Uint8Array.from(text, (char) => char.charCodeAt(0)));
    const got = expected.accepted ? "accepted" : [...expected.statuses].join("|");
    assert.equal(got, String(answer), JSON.stringify(text));
  }
  assert.ok(isIPv6("1:2:3:4:5:6:7::") && isIPv6("::") && isIPv6("::ffff:1.2.3.4"));
  assert.ok(!isIPv6("1:2:3:4:5:6:7:8:9") && !isIPv6(":1::") && !isIPv6("1:2"));
  assert.ok(isIPLiteral("v1.x:y") && !isIPLiteral("v.x") && !isIPLiteral("v1."));
  const dots: [string, string][] = [
    ["/a/b/../c", "/a/c"],
    ["/a/..", "/"],
    ["/a/b/..", "/a/"],
    ["/a/.", "/a/"],
    ["/../..", "/"],
    ["/a/%2E%2e/b", "/b"],
    ["/a//../b", "/a/b"],
    ["//x", "//x"],
    ["", "/"],
  ];
  for (const [path, resolved] of dots) assert.equal(removeDots(path), resolved, path);
});
