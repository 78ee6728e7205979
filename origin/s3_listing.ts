/**
 * One page of an S3 "directory" (the keys under a prefix, `/` the
 * delimiter) in name order, read with ListObjectsV2's `start-after` and
 * `max-keys`: a page costs the store requests for that page, never the
 * whole prefix.
 *
 * S3 lists in key order, where a directory (a common prefix) sorts as its
 * name followed by `/`: `a-b`, `a.txt`, `a/`, `a0`. A listing is in name
 * order (`a`, `a-b`, `a.txt`, `a0`), so a directory can sort before names
 * that the store sends ahead of it. Such a directory's name is a prefix of
 * the last key read, followed by a byte below `/` (or is that key itself):
 * each of those few candidates is asked for (one key's listing) before the
 * page is cut.
 *
 * @module
 */

import type { OriginDirEntry, OriginDirPage, OriginListWindow } from "./origin.ts";
import { compareNames } from "../protocol.ts";
import { elements, text } from "./s3_xml.ts";

/** Sends one ListObjectsV2 request (`query` without the bucket); resolves to its XML. */
export type ListObjects = (query: URLSearchParams) => Promise<string>;

/** Keys one ListObjectsV2 answer holds at most: S3's own ceiling. */
const MAX_KEYS = 1000;

const SLASH = 0x2f;

/**
 * The page of `window` of the keys under `prefix` (empty or ending with
 * `/`), asked through `ask`. An empty first page is the caller's to judge
 * (S3 has no empty directories).
 */
export async function listS3Page(
  ask: ListObjects,
  prefix: string,
  window: OriginListWindow,
): Promise<OriginDirPage> {
  const { after, limit } = window;
  const kept: OriginDirEntry[] = [];
  /** The greatest key the store sent, less the prefix (a directory's with its `/`). */
  let lastKey = "";
  let token: string | undefined;
  let truncated = false;
  const keep = (entry: OriginDirEntry) => {
    if (isListable(entry.name) && (after === undefined || compareNames(entry.name, after) > 0)) {
      kept.push(entry);
    }
  };
  do {
    const query = new URLSearchParams({ "list-type": "2", prefix, delimiter: "/" });
    query.set("max-keys", String(Math.min(MAX_KEYS, limit - kept.length)));
    if (token) query.set("continuation-token", token);
    else if (after !== undefined) query.set("start-after", prefix + after);
    const xml = await ask(query);
    for (const item of elements(xml, "Contents")) {
      const key = (text(item, "Key") ?? "").slice(prefix.length);
      if (compareNames(key, lastKey) > 0) lastKey = key;
      keep({
        name: key,
        type: "file",
        size: Number(text(item, "Size") ?? 0),
        mtime: Date.parse(text(item, "LastModified") ?? "") || 0,
      });
    }
    for (const item of elements(xml, "CommonPrefixes")) {
      const key = (text(item, "Prefix") ?? "").slice(prefix.length);
      if (compareNames(key, lastKey) > 0) lastKey = key;
      keep({ name: key.replace(/\/$/, ""), type: "dir", size: 0, mtime: 0 });
    }
    truncated = text(xml, "IsTruncated") === "true";
    token = truncated ? text(xml, "NextContinuationToken") : undefined;
  } while (token && kept.length < limit);
  const more = truncated || kept.length > limit;
  if (truncated) {
    for (const name of await unreadDirectories(ask, prefix, lastKey, kept, after)) {
      kept.push({ name, type: "dir", size: 0, mtime: 0 });
    }
  }
  kept.sort(byNameThenFileFirst);
  if (!more) return { entries: kept };
  const entries = kept.slice(0, limit);
  // A key and a directory of one name are both listed; the cursor is a
  // name, so a page never ends between them: the pair goes to the next
  // page, or (at limit 1) both stay.
  const following = kept[entries.length];
  if (following && following.name === entries[entries.length - 1].name) {
    if (entries.length > 1) entries.pop();
    else entries.push(following);
  }
  return { entries, next: entries[entries.length - 1].name };
}

/**
 * The directories not yet read that sort (by name) before or at the last
 * key read: prefixes of that key followed by a byte below `/`, or the key
 * itself, that are past `after` and have keys below them.
 */
async function unreadDirectories(
  ask: ListObjects,
  prefix: string,
  lastKey: string,
  kept: OriginDirEntry[],
  after: string | undefined,
): Promise<string[]> {
  const candidates: string[] = [];
  for (let end = 1; end <= lastKey.length; end++) {
    const next = lastKey.charCodeAt(end);
    if (end < lastKey.length && !(next < SLASH)) continue;
    const name = lastKey.slice(0, end);
    if (name.endsWith("/") || !isListable(name)) continue;
    if (after !== undefined && compareNames(name, after) <= 0) continue;
    if (kept.some((entry) => entry.type === "dir" && entry.name === name)) continue;
    candidates.push(name);
  }
  const found: string[] = [];
  for (const name of candidates) {
    const query = new URLSearchParams({ "list-type": "2", prefix: `${prefix}${name}/` });
    query.set("max-keys", "1");
    const xml = await ask(query);
    if (elements(xml, "Contents").length + elements(xml, "CommonPrefixes").length > 0) {
      found.push(name);
    }
  }
  return found;
}

function byNameThenFileFirst(a: OriginDirEntry, b: OriginDirEntry): number {
  return compareNames(a.name, b.name) || (a.type === b.type ? 0 : a.type === "file" ? -1 : 1);
}

/** A name that a protocol path can reach: one segment, not `.` or `..`. */
export function isListable(name: string): boolean {
  return name !== "" && name !== "." && name !== ".." && !name.includes("/");
}
