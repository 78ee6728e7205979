/**
 * Downloads to files that survive interruptions: the bytes go to `DEST.part`
 * and are renamed to `DEST` once complete and verified; a download that
 * breaks off keeps its `.part` so that a later one can resume it.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { CacheClient, GetHeader, GetResult } from "./connection.ts";
import { writeAll } from "../util/byte_reader.ts";
import {
  ConnectionError,
  IntegrityError,
  InterruptedDownloadError,
  ResumeError,
  ServerError,
} from "./errors.ts";
/** Options of {@linkcode download}. */
export interface DownloadOptions {
  /**
   * Called with each chunk's size as it arrives (for progress).
   * @default {undefined}
   */
  onProgress?: (bytes: number) => void;
  /**
   * Called with the response's header before the body (for progress: the
   * size, and the offset a resume starts at).
   * @default {undefined}
   */
  onHeader?: (header: GetHeader) => void;
  /**
   * Continue `DEST.part` when it exists: ask only for the bytes after it
   * (a range request), then verify the whole file. Without a `.part` this is
   * an ordinary download. When the server has no sha256 for the file (it is
   * not in its cache), the file is accepted unverified (`verified: false`)
   * only if the `.part` carries the file's modification time, as an
   * interrupted {@linkcode download} leaves it; otherwise the `.part` is
   * removed and {@linkcode ResumeError} thrown.
   * @default {false}
   */
  resume?: boolean;
}

/** What {@linkcode download} resolves to. */
export interface DownloadResult extends GetHeader {
  /** Where the file was saved. */
  dest: string;
  /**
   * True when the whole file matched the server's sha256 (false when the
   * server had none: a file too large for its cache).
   */
  verified: boolean;
}

/** A `.part` being continued: its handle (at its end), size, digest so far, mtime. */
interface PartialFile {
  file: Deno.FsFile;
  size: number;
  hash: ReturnType<typeof createHash>;
  mtime: number | undefined;
}

/**
 * Downloads a whole file to `dest`. The bytes go to `dest.part`, which is
 * renamed to `dest` only once complete and verified, so `dest` never holds
 * partial content.
 *
 * When the connection breaks in the middle of the body, the `.part` is kept
 * (stamped with the server's mtime of the file) and
 * {@linkcode InterruptedDownloadError} is thrown: `resume: true` continues
 * it later. On any other failure (a server error, a sha256 mismatch) the
 * `.part` is removed.
 *
 * @example
 * ```ts
 * import { connect, download } from "@tcpcache/tcpcache/client";
 * const client = await connect({ port: 9089 });
 * const result = await download(client, "docs/readme.txt", "readme.txt", { resume: true });
 * console.log(result.cache, result.verified);
 * client.close();
 * ```
 *
 * @throws {ServerError} when the server answers an error (e.g. 404).
 * @throws {IntegrityError} when the file does not match the server's sha256.
 * @throws {InterruptedDownloadError} when the body broke off (`.part` kept).
 * @throws {ResumeError} when a `.part` cannot be continued (it is removed).
 */
export async function download(
  client: CacheClient,
  path: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const partial = `${dest}.part`;
  const kept = options.resume ? await openPartial(partial) : undefined;
  const resumeAt = kept?.size ?? 0;
  const file = kept?.file ??
    await Deno.open(partial, { write: true, create: true, truncate: true });
  let header: GetHeader | undefined;
  let received = resumeAt;
  let verified: boolean;
  let result: GetResult;
  try {
    try {
      result = await client.get(path, {
        offset: resumeAt > 0 ? resumeAt : undefined,
        onHeader: (fields) => {
          header = fields;
          options.onHeader?.(fields);
        },
        sink: async (chunk) => {
          kept?.hash.update(chunk);
          await writeAll(file, chunk);
          received += chunk.length;
          options.onProgress?.(chunk.length);
        },
      });
    } finally {
      file.close();
    }
    verified = result.verified;
    if (kept && resumeAt > 0) verified = await verifyResumed(client, path, partial, kept, result);
  } catch (error) {
    throw await keepOrDiscard(error, { partial, path, header, received, resumeAt });
  }
  await Deno.rename(partial, dest);
  const { bytes: _, ...fields } = result;
  return { ...fields, verified, dest };
}

/** Opens a `.part` to continue it and hashes what it holds; undefined when there is none. */
async function openPartial(partial: string): Promise<PartialFile | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(partial, { read: true, write: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    const info = await file.stat();
    const hash = createHash("sha256");
    const buffer = new Uint8Array(256 * 1024);
    let size = 0;
    while (true) {
      const n = await file.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
      size += n;
    }
    return { file, size, hash, mtime: info.mtime?.getTime() };
  } catch (error) {
    file.close();
    throw error;
  }
}

/**
 * Verifies a continued download as a whole: against the sha256 in the range
 * response (sent when the file is cached), else the one `STAT` reports. With
 * neither, the `.part` is accepted unverified only when it carries the
 * file's mtime (it came from an interrupted download of this version). The
 * caller removes the `.part` when this throws.
 */
async function verifyResumed(
  client: CacheClient,
  path: string,
  partial: string,
  kept: PartialFile,
  result: GetResult,
): Promise<boolean> {
  const actual = kept.hash.digest("hex");
  const expected = result.sha256 ?? (await client.stat(path)).sha256;
  if (expected) {
    if (expected === actual) return true;
    throw new IntegrityError(path, expected, actual, `${partial} discarded`);
  }
  if (kept.mtime === result.mtime) return false;
  throw new ResumeError(
    `cannot verify ${partial}: the server has no sha256 for ${path} (it is not cached) and ` +
      `the partial file is not from an interrupted download of this version; discarded`,
  );
}

/**
 * What a failed download leaves: a `.part` with bytes in it survives a broken
 * connection (to be continued), stamped with the server's mtime; any other
 * failure removes it. Resolves to the error to throw.
 */
async function keepOrDiscard(
  error: unknown,
  at: {
    partial: string;
    path: string;
    header: GetHeader | undefined;
    received: number;
    resumeAt: number;
  },
): Promise<unknown> {
  const { partial, header, received } = at;
  if (error instanceof ConnectionError && received > 0) {
    if (header?.mtime) {
      await Deno.utime(partial, new Date(), new Date(header.mtime)).catch(() => {});
    }
    return new InterruptedDownloadError(
      `${error.message}; ${received} bytes kept in ${partial}`,
      partial,
      received,
      { cause: error },
    );
  }
  await Deno.remove(partial).catch(() => {});
  if (at.resumeAt > 0 && error instanceof ServerError && error.code === 416) {
    return new ResumeError(
      `${partial} (${at.resumeAt} bytes) is longer than ${at.path} on the server; discarded`,
    );
  }
  return error;
}
