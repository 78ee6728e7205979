/**
 * Buffered reading of a byte stream as the protocol needs it: bounded lines,
 * then bodies of a known length, over one reused buffer.
 *
 * @module
 */

/** Anything with a `read` like `Deno.Conn` or `Deno.FsFile`. */
export interface Reader {
  /** Reads into `buffer`; resolves to the byte count, or null at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
}

/** A line was longer than the bound given to {@linkcode ByteReader.readLine}. */
export class LineTooLongError extends Error {
  constructor(limit: number) {
    super(`line longer than ${limit} bytes`);
    this.name = "LineTooLongError";
  }
}

/** The stream ended in the middle of a line or a body. */
export class UnexpectedEofError extends Error {
  constructor(what: string) {
    super(`connection closed in the middle of ${what}`);
    this.name = "UnexpectedEofError";
  }
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Reads lines and fixed-length bodies from a {@linkcode Reader}. Bytes read
 * past the current line stay buffered for the next call, which is what makes
 * pipelining work.
 *
 * Every read awaits its source, so the bytes of a request are seen in a job
 * of their own: the change watch's freshness rests on it (a check stands
 * for one job; see origin/change_watch.ts). A synchronous socket read that
 * answered in the same job would break it.
 */
export class ByteReader {
  #source: Reader;
  #buffer: Uint8Array;
  #maxSize: number;
  #start = 0;
  #end = 0;

  /**
   * @param source where the bytes come from
   * @param bufferSize the buffer's size; it bounds the longest line
   * @param initialSize a smaller size to start with, for a reader of short
   *   lines (a server's requests): the buffer grows up to `bufferSize` only
   *   when a line or block does not fit
   */
  constructor(source: Reader, bufferSize = 64 * 1024, initialSize = bufferSize) {
    this.#source = source;
    this.#maxSize = bufferSize;
    this.#buffer = new Uint8Array(Math.min(initialSize, bufferSize));
  }

  /** The number of bytes read from the source but not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** True when a whole line is already buffered (a pipelined request). */
  get hasBufferedLine(): boolean {
    return this.#buffer.subarray(this.#start, this.#end).includes(LF);
  }

  /**
   * Reads one line, LF included in `maxBytes` but not in the result.
   * Resolves to null when the stream ends before the first byte of a line.
   *
   * @throws {LineTooLongError} once `maxBytes` bytes arrived without an LF;
   *   no more than the bound is ever looked at.
   * @throws {UnexpectedEofError} when the stream ends inside a line.
   */
  async readLine(maxBytes: number): Promise<Uint8Array | null> {
    if (maxBytes > this.#maxSize) {
      throw new RangeError("maxBytes exceeds the buffer size");
    }
    let scanned = 0;
    while (true) {
      const window = this.#buffer.subarray(this.#start + scanned, this.#end);
      const found = window.indexOf(LF);
      if (found >= 0) {
        const lineEnd = this.#start + scanned + found;
        if (lineEnd - this.#start + 1 > maxBytes) {
          throw new LineTooLongError(maxBytes);
        }
        const line = this.#buffer.slice(this.#start, lineEnd);
        this.#start = lineEnd + 1;
        return line;
      }
      scanned = this.#end - this.#start;
      if (scanned >= maxBytes) throw new LineTooLongError(maxBytes);
      if (!await this.#fill()) {
        if (scanned === 0) return null;
        throw new UnexpectedEofError("a line");
      }
    }
  }

  /**
   * Skips empty lines (CRLF, or a bare LF) at the front of what is buffered:
   * what an HTTP client may send between requests. A lone CR is not an
   * empty line and stays (a CR that is the last byte so far waits for what
   * follows it).
   */
  skipEmptyLines(): void {
    const buffer = this.#buffer;
    while (this.#start < this.#end) {
      const crlf = buffer[this.#start] === CR && this.#start + 1 < this.#end &&
        buffer[this.#start + 1] === LF;
      if (buffer[this.#start] === LF) this.#start += 1;
      else if (crlf) this.#start += 2;
      else break;
    }
  }

  /**
   * Whether a whole block that `findEnd` delimits is already buffered (a
   * pipelined HTTP request). Empty lines in front of it are skipped on the
   * way, as {@linkcode readBlock} would skip them.
   */
  hasBuffered(findEnd: (bytes: Uint8Array, from: number, to: number) => number): boolean {
    this.skipEmptyLines();
    return findEnd(this.#buffer, this.#start, this.#end) !== -1;
  }

  /**
   * Reads a block of bytes up to and including the end that `findEnd`
   * finds (the index just past it, or -1), after skipping empty lines: an
   * HTTP request head. Resolves to null when the stream ends before the
   * block's first byte. The block is a view of the internal buffer, valid
   * only until the next read: parse or copy it first.
   *
   * @throws {LineTooLongError} once `maxBytes` bytes arrived without an end.
   * @throws {UnexpectedEofError} when the stream ends inside the block.
   */
  async readBlock(
    maxBytes: number,
    findEnd: (bytes: Uint8Array, from: number, to: number) => number,
  ): Promise<Uint8Array | null> {
    if (maxBytes > this.#maxSize) {
      throw new RangeError("maxBytes exceeds the buffer size");
    }
    while (true) {
      this.skipEmptyLines();
      const end = findEnd(this.#buffer, this.#start, Math.min(this.#end, this.#start + maxBytes));
      if (end !== -1) {
        const block = this.#buffer.subarray(this.#start, end);
        this.#start = end;
        return block;
      }
      if (this.#end - this.#start >= maxBytes) throw new LineTooLongError(maxBytes);
      const empty = this.#start === this.#end;
      if (!await this.#fill()) {
        if (empty) return null;
        throw new UnexpectedEofError("a request head");
      }
    }
  }

  /**
   * Passes the next `length` bytes to `sink` in chunks. A chunk is a view of
   * the internal buffer, valid only until `sink`'s promise settles: copy it
   * to keep it.
   *
   * @throws {UnexpectedEofError} when the stream ends first.
   */
  async readBody(
    length: number,
    sink: (chunk: Uint8Array) => Promise<void> | void,
  ): Promise<void> {
    let left = length;
    while (left > 0) {
      if (this.#start === this.#end && !await this.#fill()) {
        throw new UnexpectedEofError("a body");
      }
      const take = Math.min(left, this.#end - this.#start);
      await sink(this.#buffer.subarray(this.#start, this.#start + take));
      this.#start += take;
      left -= take;
    }
  }

  /** Reads more bytes into the buffer; false at the end of the stream. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
    } else if (this.#end === this.#buffer.length) {
      if (this.#start === 0 && this.#buffer.length < this.#maxSize) {
        // Full of one unfinished line: grow, up to the bound.
        const grown = new Uint8Array(Math.min(2 * this.#buffer.length, this.#maxSize));
        grown.set(this.#buffer);
        this.#buffer = grown;
      } else {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
    }
    const count = await this.#source.read(this.#buffer.subarray(this.#end));
    if (count === null) return false;
    this.#end += count;
    return true;
  }
}

/** Writes all of `bytes`, however many calls the writer needs. */
export async function writeAll(
  writer: { write(bytes: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let written = 0;
  while (written < bytes.length) {
    const n = await writer.write(bytes.subarray(written));
    if (n <= 0) throw new Error("write made no progress");
    written += n;
  }
}

/**
 * Closes a connection or file that may be closed already (by its peer, a
 * timeout, or the end of its readable stream).
 */
export function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // already closed
  }
}

/** How long a closing connection keeps reading what its client still sends. */
const LINGER_MS = 1000;
/** The most bytes read while lingering. */
const LINGER_BYTES = 1024 * 1024;
// What a linger reads is thrown away: every linger may read into one buffer.
const lingerScratch = new Uint8Array(16 * 1024);

/**
 * Half-closes `conn` and reads what the client still sends, for at most
 * `ms` ({@linkcode LINGER_MS}) and {@linkcode LINGER_BYTES}, before the caller
 * closes it: closing with unread input would reset the connection and could
 * destroy the last response before the client reads it. A read already in
 * flight (`pendingRead`) is waited for first, within the same bound.
 */
export async function linger(
  conn: Deno.Conn,
  pendingRead?: Promise<unknown>,
  ms: number = LINGER_MS,
): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), ms);
  try {
    await conn.closeWrite();
    await pendingRead?.catch(() => {});
    let drained = 0;
    while (drained < LINGER_BYTES) {
      const n = await conn.read(lingerScratch);
      if (n === null) break;
      drained += n;
    }
  } catch {
    // closed by the timer, or by the client
  } finally {
    clearTimeout(timer);
  }
}
