/**
 * The cache's journal: a record of its entries that a restart with
 * `--keep-cache` can trust, or knows not to.
 *
 * One line per record, `<crc32 hex> <json>`, appended with one write each:
 * a header (the capacity and policy it was written under; a run that keeps
 * the journal appends its own header rather than rewrite it), then an `a`
 * (admitted) record per entry after its file is renamed into place and a
 * `d` (dropped) record before its file is unlinked. Why an append-only log
 * and not one index rewritten on every change: admissions and evictions
 * come by the thousand, and an append costs one small write whatever the
 * cache holds, where a rewrite costs the whole index. The log is compacted
 * (rewritten in eviction order, under a temporary name, synced and renamed
 * over) when it has grown to twice what it describes, and when the cache
 * closes.
 *
 * What a kill -9 leaves: every write the process made is in the page cache,
 * so the journal ends with the last whole record it wrote. A file renamed
 * into place whose record never made it has no record, and is removed at
 * the next start; a record whose file is gone is dropped. What a machine
 * crash leaves: possibly a torn last record (its checksum fails: skipped),
 * or records whose files lost their bytes; every entry is checked against
 * its recorded size and sha256 before it is served, so such a file is
 * removed, never served.
 *
 * @module
 */

import { crc32 } from "../util/crc32.ts";

/** The journal's file name inside the cache directory. */
export const JOURNAL_FILE = "journal";
/** The version written in the header; a journal of another version is not read. */
const JOURNAL_VERSION = 1;

/** One cache entry as the journal records it (a `CacheEntry` without its bytes). */
export interface JournalEntry {
  /** The protocol path it was fetched under. */
  path: string;
  /** Its size in bytes. */
  size: number;
  /** The origin file's mtime when it was copied, ms since the epoch. */
  mtime: number;
  /** The origin validator it was copied under (see `OriginStat`). */
  validator: string;
  /** Hex sha256 of the whole file. */
  sha256: string;
  /** When it was admitted, ms since the epoch. */
  admitted: number;
  /** Its file name inside the cache directory. */
  file: string;
}

/** What a journal was written under. */
export interface JournalHeader {
  /** The cache's capacity in bytes. */
  capacity: number;
  /** The eviction policy's name. */
  policy: string;
}

/** A journal as read back at start. */
export interface JournalContents {
  /** Its header; undefined when the journal is missing or cannot be trusted at all. */
  header?: JournalHeader;
  /**
   * The entries it describes, oldest admission first (after a compaction:
   * in the eviction order of that moment, next victim first).
   */
  entries: JournalEntry[];
  /** Records skipped: a failed checksum, a torn last line, a record that makes no sense. */
  damaged: number;
  /** Why nothing of it can be trusted, when that is so (no header, another version). */
  untrusted?: string;
  /** The records it holds, damaged ones included (to know when it is worth compacting). */
  records: number;
  /** False when its last line is torn (no newline at the end): an append must start a new line. */
  endsWhole: boolean;
}

/** A cache file's name as tcpcache makes them: nothing else is ever opened or adopted. */
const FILE_NAME = /^[0-9a-z]+\.[0-9]+$/;

/** Records parsed between two calls of `readJournal`'s `pause`... */
const RECORDS_BETWEEN_PAUSES = 4096;
/** ...or bytes, whichever comes first. */
const BYTES_BETWEEN_PAUSES = 4 * 1024 * 1024;
/**
 * The longest record read: a path is at most 8 KiB (the request line's
 * bound), so a longer line is damage, skipped without checking it.
 */
const MAX_RECORD = 64 * 1024;
/** The largest journal read (about five million entries): a larger one is not trusted. */
const MAX_JOURNAL = 1024 * 1024 * 1024;

/**
 * Reads the journal in `dir`, calling `pause` every few thousand records (a
 * journal of a million entries takes seconds to check and parse: the
 * caller's other work goes on meanwhile).
 */
export async function readJournal(
  dir: string,
  pause: () => Promise<void> = () => Promise.resolve(),
): Promise<JournalContents> {
  let bytes: Uint8Array;
  try {
    // Only a regular file of a sane size: a FIFO would never end, a symbolic
    // link would lead the appends elsewhere, /dev/zero would fill memory.
    const stat = await Deno.lstat(`${dir}/${JOURNAL_FILE}`);
    if (!stat.isFile) throw new Error("the journal is not a regular file");
    if (stat.size > MAX_JOURNAL) throw new Error(`the journal is larger than ${MAX_JOURNAL} bytes`);
    bytes = await Deno.readFile(`${dir}/${JOURNAL_FILE}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { entries: [], damaged: 0, untrusted: "no journal", records: 0, endsWhole: true };
    }
    throw error;
  }
  const decoder = new TextDecoder();
  const byFile = new Map<string, JournalEntry>();
  let header: JournalHeader | undefined;
  let damaged = 0;
  let records = 0;
  let start = 0;
  const endsWhole = bytes.length === 0 || bytes[bytes.length - 1] === 0x0a;
  const untrusted = (why: string) => ({ entries: [], damaged, untrusted: why, records, endsWhole });
  let pausedAt = 0;
  while (start < bytes.length) {
    if (++records % RECORDS_BETWEEN_PAUSES === 0 || start - pausedAt > BYTES_BETWEEN_PAUSES) {
      pausedAt = start;
      await pause();
    }
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length; // a torn last line: its checksum decides
    const record = parseRecord(bytes.subarray(start, end), decoder);
    start = end + 1;
    if (record === undefined) {
      damaged++;
    } else if ("v" in record) {
      if (record.v !== JOURNAL_VERSION) {
        return untrusted(`journal version ${record.v} is not ${JOURNAL_VERSION}`);
      }
      // A later header is a later run's, appended: the records go on.
      header = { capacity: record.capacity, policy: record.policy };
    } else if (header === undefined) {
      return untrusted("journal has no header");
    } else if ("a" in record && isEntry(record.a)) {
      byFile.delete(record.a.file); // re-added at the end: the order is the admission order
      byFile.set(record.a.file, record.a);
    } else if ("d" in record && typeof record.d === "string") {
      byFile.delete(record.d);
    } else {
      damaged++;
    }
  }
  if (header === undefined) return untrusted("journal has no header");
  // A path admitted twice keeps its last entry (the earlier file is then unknown, and removed).
  const byPath = new Map<string, JournalEntry>();
  for (const entry of byFile.values()) {
    byPath.delete(entry.path);
    byPath.set(entry.path, entry);
  }
  return { header, entries: [...byPath.values()], damaged, records, endsWhole };
}

type JournalRecord =
  | { v: number; capacity: number; policy: string }
  | { a: JournalEntry }
  | { d: string };

function parseRecord(line: Uint8Array, decoder: TextDecoder): JournalRecord | undefined {
  if (line.length < 10 || line.length > MAX_RECORD || line[8] !== 0x20) return undefined;
  const sum = Number.parseInt(decoder.decode(line.subarray(0, 8)), 16);
  const body = line.subarray(9);
  if (sum !== crc32(body)) return undefined;
  try {
    const record = JSON.parse(decoder.decode(body));
    return record !== null && typeof record === "object" ? record : undefined;
  } catch {
    return undefined;
  }
}

function isEntry(value: unknown): value is JournalEntry {
  const entry = value as JournalEntry;
  return typeof entry === "object" && entry !== null &&
    typeof entry.path === "string" && typeof entry.validator === "string" &&
    typeof entry.sha256 === "string" && /^[0-9a-f]{64}$/.test(entry.sha256) &&
    typeof entry.file === "string" && FILE_NAME.test(entry.file) &&
    Number.isSafeInteger(entry.size) && entry.size >= 0 &&
    Number.isFinite(entry.mtime) && Number.isFinite(entry.admitted);
}

/** True when `name` could be a cache file's name (see {@linkcode readJournal}). */
export function isCacheFileName(name: string): boolean {
  return FILE_NAME.test(name);
}

/** The journal being written: one record per admission and per removal. */
export class Journal {
  #dir: string;
  #header: JournalHeader;
  #file: Deno.FsFile;
  #encoder = new TextEncoder();
  /** Records in the file. */
  #records: number;
  /** Entries they describe. */
  #described: number;
  /**
   * Hears of writes that fail (a full disk): the journal then lacks a
   * record, which costs at most a kept entry at the next start, never a
   * wrong one.
   */
  onError: (error: unknown) => void = () => {};

  private constructor(
    dir: string,
    header: JournalHeader,
    file: Deno.FsFile,
    counts: { records: number; described: number },
  ) {
    this.#dir = dir;
    this.#header = header;
    this.#file = file;
    this.#records = counts.records;
    this.#described = counts.described;
  }

  /**
   * Writes a new journal describing `entries` (in order) over whatever
   * `dir` held, and opens it for appending.
   *
   * @throws when the journal cannot be written (an unusable directory).
   */
  static create(dir: string, header: JournalHeader, entries: Iterable<JournalEntry>): Journal {
    const described = writeWhole(dir, header, entries);
    const file = Deno.openSync(`${dir}/${JOURNAL_FILE}`, { append: true });
    return new Journal(dir, header, file, { records: described + 1, described });
  }

  /**
   * Goes on with the journal a previous run left (`contents`, as
   * {@linkcode readJournal} read it), after a header of this run's own: a
   * restart that keeps the cache appends one line instead of rewriting the
   * whole journal before its ports may open.
   *
   * @throws when the journal cannot be written (an unusable directory).
   */
  static continue(dir: string, header: JournalHeader, contents: JournalContents): Journal {
    const file = Deno.openSync(`${dir}/${JOURNAL_FILE}`, { append: true });
    const journal = new Journal(dir, header, file, {
      records: contents.records,
      described: contents.entries.length,
    });
    try {
      // After a torn last line, a line of its own: else the header would be torn too.
      if (!contents.endsWhole) file.writeSync(new Uint8Array([0x0a]));
      writeAllSync(file, encodeHeader(header, journal.#encoder));
      journal.#records++;
    } catch (error) {
      file.close();
      throw error;
    }
    return journal;
  }

  /** Records an admission (after the entry's file is in place). */
  admitted(entry: JournalEntry): void {
    const { path, size, mtime, validator, sha256, admitted, file } = entry;
    this.#append({ a: { path, size, mtime, validator, sha256, admitted, file } });
    this.#described++;
  }

  /** Records a removal (before the entry's file is unlinked). */
  dropped(file: string): void {
    this.#append({ d: file });
    this.#described--;
  }

  /**
   * True when the journal has grown to twice the entries it describes (and
   * past a thousand records): time to {@linkcode compact} it.
   */
  get wantsCompaction(): boolean {
    return this.#records > 1000 && this.#records > 2 * this.#described + 1;
  }

  /** Rewrites the journal to describe `entries` only, in that order. */
  compact(entries: Iterable<JournalEntry>): void {
    try {
      this.#described = writeWhole(this.#dir, this.#header, entries);
      this.#file.close();
      this.#file = Deno.openSync(`${this.#dir}/${JOURNAL_FILE}`, { append: true });
      this.#records = this.#described + 1;
    } catch (error) {
      this.onError(error);
    }
  }

  /** Closes the journal file. */
  close(): void {
    this.#file.close();
  }

  #append(record: JournalRecord): void {
    try {
      this.#file.writeSync(encodeRecord(record, this.#encoder));
      this.#records++;
    } catch (error) {
      this.onError(error);
    }
  }
}

/** The header record of a run. */
function encodeHeader(header: JournalHeader, encoder: TextEncoder): Uint8Array {
  return encodeRecord(
    { v: JOURNAL_VERSION, capacity: header.capacity, policy: header.policy },
    encoder,
  );
}

/** One record as a line: its checksum, a space, its JSON, a newline. */
function encodeRecord(record: JournalRecord, encoder: TextEncoder): Uint8Array {
  const body = encoder.encode(JSON.stringify(record));
  const line = new Uint8Array(body.length + 10);
  line.set(encoder.encode(crc32(body).toString(16).padStart(8, "0") + " "));
  line.set(body, 9);
  line[line.length - 1] = 0x0a;
  return line;
}

/**
 * Writes a whole journal under a temporary name, syncs it and renames it
 * over the journal (then syncs the directory), so that even a machine crash
 * leaves the old journal or the new one, never half of one. Returns the
 * number of entries written.
 */
function writeWhole(dir: string, header: JournalHeader, entries: Iterable<JournalEntry>): number {
  const encoder = new TextEncoder();
  const temporary = `${dir}/${JOURNAL_FILE}.new`;
  const lines: Uint8Array[] = [encodeHeader(header, encoder)];
  let count = 0;
  for (const { path, size, mtime, validator, sha256, admitted, file } of entries) {
    lines.push(
      encodeRecord({ a: { path, size, mtime, validator, sha256, admitted, file } }, encoder),
    );
    count++;
  }
  // A new file, never one found there: a symbolic link left in its place
  // would have the journal written wherever it leads.
  try {
    Deno.removeSync(temporary);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const file = Deno.openSync(temporary, { write: true, createNew: true });
  try {
    let buffered: Uint8Array[] = [];
    let bufferedBytes = 0;
    const flush = () => {
      const chunk = new Uint8Array(bufferedBytes);
      let at = 0;
      for (const line of buffered) (chunk.set(line, at), at += line.length);
      writeAllSync(file, chunk);
      buffered = [];
      bufferedBytes = 0;
    };
    for (const line of lines) {
      buffered.push(line);
      bufferedBytes += line.length;
      if (bufferedBytes >= 1 << 20) flush();
    }
    flush();
    file.syncSync();
  } finally {
    file.close();
  }
  Deno.renameSync(temporary, `${dir}/${JOURNAL_FILE}`);
  syncDirectory(dir);
  return count;
}

/** Writes all of `bytes` (a write to a regular file may take less than all). */
function writeAllSync(file: Deno.FsFile, bytes: Uint8Array): void {
  for (let written = 0; written < bytes.length;) written += file.writeSync(bytes.subarray(written));
}

/** Makes a rename in `dir` durable (best effort: not every platform can open a directory). */
function syncDirectory(dir: string): void {
  try {
    const handle = Deno.openSync(dir, { read: true });
    try {
      handle.syncSync();
    } finally {
      handle.close();
    }
  } catch {
    // The rename stands in the page cache; only a machine crash could undo it.
  }
}
