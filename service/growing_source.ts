/**
 * A whole-file miss read while it is copied into the cache: the bytes come
 * from the fill's growing cache file, as far as the fill's progress says
 * they are written, and the reader waits for more. The read that would
 * complete the body resolves only once the fill is done (committed, its
 * sha256 known), so that a client that asks for the digest after the body
 * finds it; when the fill fails, reading fails and the body ends short,
 * never in a whole file made of a part. Should the cache directory fail
 * midway (the file stops growing), the rest is read from the origin, and
 * the fill, which reads on for the digest, still vouches for the whole.
 *
 * @module
 */

import type { GrowingFill } from "../cache.ts";
import { type ByteSource, OriginChangedError, type OriginFile } from "../origin/origin.ts";
import { FILL_DONE, FILL_FAILED, FILL_RUNNING, FillProgress } from "../util/fill_progress.ts";

/** What a {@linkcode GrowingSource} needs beside the fill. */
export interface GrowingSourceOptions {
  /** Opens the origin file from `offset` to its end (the cache file stopped growing). */
  openOrigin(offset: number): Promise<OriginFile>;
  /** Counts bytes read from the origin by this reader. */
  countOrigin(bytes: number): void;
  /** Hears the whole file's hex sha256 once the last byte is read, before it is sent. */
  onDigest(sha256: string): void;
}

/** Waits until a fill has written its first bytes, ended, or stopped writing. */
export async function firstBytes(progress: FillProgress): Promise<void> {
  while (true) {
    const sequence = progress.sequence;
    if (progress.written > 0 || progress.state !== FILL_RUNNING || progress.spilled) return;
    await progress.changed(sequence);
  }
}

/** The bytes of a fill in flight, from the first, as a {@linkcode ByteSource}. */
export class GrowingSource implements ByteSource {
  #fill: GrowingFill;
  #progress: FillProgress;
  #file: Deno.FsFile | undefined;
  #origin: OriginFile | undefined;
  #options: GrowingSourceOptions;
  #position = 0;
  #closed = false;

  /**
   * Reads `fill` through `file`, opened on its growing file (undefined when
   * the cache file had already stopped growing and was gone: every byte
   * then comes from the origin).
   */
  constructor(fill: GrowingFill, file: Deno.FsFile | undefined, options: GrowingSourceOptions) {
    this.#fill = fill;
    this.#progress = new FillProgress(fill.progress);
    this.#file = file;
    this.#options = options;
  }

  /**
   * Reads the next bytes, waiting for the fill to write them.
   *
   * @throws {Error} when the fill failed (the origin failed or changed), or
   *   when the rest, read from the origin, is not the version being filled.
   */
  async read(into: Uint8Array): Promise<number | null> {
    const { size } = this.#fill;
    if (this.#position >= size) return null;
    if (into.length === 0) return 0;
    const progress = this.#progress;
    while (true) {
      if (this.#closed) throw new Error(`the read of ${this.#fill.path} was closed`);
      const sequence = progress.sequence;
      this.#checkNotFailed();
      const written = progress.written;
      if (this.#file && this.#position < written) {
        return await this.#advance(this.#readFile(into, written));
      }
      if (progress.spilled) return await this.#advance(await this.#readOrigin(into));
      await progress.changed(sequence);
    }
  }

  /** Closes the cache file and the origin file, whichever are open. */
  close(): void {
    this.#closed = true;
    this.#file?.close();
    this.#file = undefined;
    this.#origin?.close();
    this.#origin = undefined;
  }

  #checkNotFailed(): void {
    if (this.#progress.state === FILL_FAILED) {
      throw new Error(`the origin failed while ${this.#fill.path} was copied in`);
    }
  }

  /** Reads from the cache file, no further than the bytes written. */
  #readFile(into: Uint8Array, written: number): number {
    // The cache directory is local and these bytes were written moments
    // ago: a synchronous read, as for hits (see FileService).
    const n = this.#file!.readSync(
      into.subarray(0, Math.min(into.length, written - this.#position)),
    );
    if (!n) throw new Error(`the cache file of ${this.#fill.path} is shorter than its fill`);
    return n;
  }

  /** Reads from the origin, where the cache file stopped growing. */
  async #readOrigin(into: Uint8Array): Promise<number> {
    const { path, size, validator } = this.#fill;
    if (!this.#origin) {
      this.#file?.close();
      this.#file = undefined;
      this.#origin = await this.#options.openOrigin(this.#position);
      if (this.#origin.stat.validator !== validator) throw new OriginChangedError(path);
    }
    const n = await this.#origin.read(
      into.subarray(0, Math.min(into.length, size - this.#position)),
    );
    if (!n) throw new OriginChangedError(path);
    this.#options.countOrigin(n);
    return n;
  }

  /**
   * Moves past `n` bytes just read. The read that reaches the end waits for
   * the fill to be done, and checks that the origin's part (if any) held
   * still, before its bytes are handed on.
   */
  async #advance(n: number): Promise<number> {
    this.#position += n;
    if (this.#position < this.#fill.size) return n;
    const progress = this.#progress;
    while (progress.state === FILL_RUNNING) {
      const sequence = progress.sequence;
      if (progress.state !== FILL_RUNNING) break;
      await progress.changed(sequence);
    }
    this.#checkNotFailed();
    if (this.#origin) {
      const now = await this.#origin.restat();
      if (now.size !== this.#fill.size || now.mtime !== this.#fill.mtime) {
        throw new OriginChangedError(this.#fill.path);
      }
    }
    if (progress.state === FILL_DONE) this.#options.onDigest(progress.sha256!);
    return n;
  }
}
