/**
 * The HTTP header rules the front end needs, as pure functions: byte ranges
 * (RFC 9110 §14), conditional requests (§13), entity tags and media types.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** The request fields a rule reads: `Headers`, or the parser's own. */
export interface FieldLookup {
  /** The value of field `name` (lower case), or null. */
  get(name: string): string | null;
}

/** A satisfiable single range: `length` bytes from `offset`. */
export interface HttpRange {
  offset: number;
  length: number;
}

/**
 * Reads a `Range` header against a representation of `size` bytes.
 *
 * Resolves to the range to send, to `"unsatisfiable"` (answer 416), or to
 * undefined when the header is to be ignored and the whole file sent: no
 * header, another unit, a syntax error, or several ranges (which RFC 9110
 * lets a server answer with the whole representation).
 *
 * @example
 * ```ts
 * import { parseRange } from "./headers.ts";
 * parseRange("bytes=0-99", 1000); // { offset: 0, length: 100 }
 * parseRange("bytes=-10", 1000); // { offset: 990, length: 10 }
 * parseRange("bytes=2000-", 1000); // "unsatisfiable"
 * ```
 */
export function parseRange(
  header: string | null,
  size: number,
): HttpRange | "unsatisfiable" | undefined {
  if (header === null) return undefined;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return undefined;
  const [, first, last] = match;
  if (first === "" && last === "") return undefined;
  if (first === "") {
    // A suffix: the last N bytes.
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    const length = Math.min(suffix, size);
    return { offset: size - length, length };
  }
  const offset = Number(first);
  if (!Number.isSafeInteger(offset)) return "unsatisfiable";
  if (last !== "" && Number(last) < offset) return undefined; // invalid: ignored
  if (offset >= size) return "unsatisfiable";
  const end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
  return { offset, length: end - offset + 1 };
}

/** The validators of a representation. */
export interface Validators {
  /** The entity tag, quoted (`"..."` or `W/"..."`). */
  etag: string;
  /** Modification time, ms since the epoch. */
  mtime: number;
}

/**
 * The entity tag of a version of a file, made of the origin's validator,
 * which changes whenever the content may have (size, mtime, inode, change
 * time; or an object's ETag). It is the same before and after the file is
 * cached, so a tag taken from either validates a range of the other; it is
 * strong, since it names exactly one sequence of bytes. (The sha256, when
 * known, travels in `Repr-Digest`.)
 */
export function entityTag(file: { validator: string }): string {
  let tag = recentTags.get(file.validator);
  if (tag === undefined) {
    const digest = createHash("sha256").update(file.validator).digest("hex");
    tag = `"v-${digest.slice(0, 32)}"`;
    if (recentTags.size >= RECENT_TAGS) recentTags.clear();
    recentTags.set(file.validator, tag);
  }
  return tag;
}

/**
 * Tags made lately, by validator: every request asks for its file's tag,
 * and hashing costs more than the rest of a small hit's head.
 */
const recentTags = new Map<string, string>();
const RECENT_TAGS = 4096;

/**
 * True when a `GET`/`HEAD` may be answered 304 Not Modified: `If-None-Match`
 * lists the tag (weak comparison) or `*`; or, without `If-None-Match`,
 * `If-Modified-Since` is no earlier than the modification time (to the
 * second, the resolution of HTTP dates).
 */
export function notModified(headers: FieldLookup, validators: Validators): boolean {
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (ifNoneMatch.trim() === "*") return true;
    const wanted = opaqueTag(validators.etag);
    return ifNoneMatch.split(",").some((tag) => opaqueTag(tag.trim()) === wanted);
  }
  const since = Date.parse(headers.get("if-modified-since") ?? "");
  return !Number.isNaN(since) && Math.floor(validators.mtime / 1000) * 1000 <= since;
}

/**
 * True when a `Range` may be honoured: no `If-Range`, or one that names the
 * current strong tag, or the exact modification date.
 */
export function rangeStillValid(headers: FieldLookup, validators: Validators): boolean {
  const ifRange = headers.get("if-range");
  if (ifRange === null) return true;
  const trimmed = ifRange.trim();
  if (trimmed.startsWith('"')) {
    return !validators.etag.startsWith("W/") && trimmed === validators.etag;
  }
  if (trimmed.startsWith("W/")) return false; // a weak tag never validates a range
  return Date.parse(trimmed) === Math.floor(validators.mtime / 1000) * 1000;
}

/** A tag without its weakness prefix, for weak comparison. */
function opaqueTag(tag: string): string {
  return tag.startsWith("W/") ? tag.slice(2) : tag;
}

const MEDIA_TYPES: Record<string, string> = {
  txt: "text/plain; charset=utf-8",
  md: "text/markdown; charset=utf-8",
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  ts: "text/plain; charset=utf-8",
  json: "application/json",
  csv: "text/csv; charset=utf-8",
  xml: "application/xml",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  ico: "image/x-icon",
  pdf: "application/pdf",
  wasm: "application/wasm",
  zip: "application/zip",
  gz: "application/gzip",
  tar: "application/x-tar",
  mp4: "video/mp4",
  webm: "video/webm",
  mp3: "audio/mpeg",
  wav: "audio/wav",
  woff2: "font/woff2",
};

/** The media type of a path, by its extension; unknown ones are octet streams. */
export function mediaType(path: string): string {
  const name = path.slice(path.lastIndexOf("/") + 1);
  const dot = name.lastIndexOf(".");
  const extension = dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  return MEDIA_TYPES[extension] ?? "application/octet-stream";
}
