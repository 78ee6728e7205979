/**
 * Writing to one connection: small responses are coalesced while more
 * pipelined requests wait to be answered, and every write records when it
 * started so a stalled client can be found and dropped.
 *
 * @module
 */

/**
 * The most bytes held back for coalescing before they are written: enough
 * for dozens of small answers, small enough to keep per-connection memory
 * low with thousands of connections.
 */
export const COALESCE_LIMIT = 16 * 1024;

/**
 * Coalescing buffers not in use. A connection borrows one for a turn of its
 * conversation and gives it back once written, so an idle connection holds
 * none, and a new connection allocates none (an allocation per connection
 * was a measurable part of a short connection's cost).
 */
const spareBuffers: Uint8Array[] = [];
/** Where shared bytes are copied on their way to a misaligned place (see `hold`). */
const alignedScratch = new Uint8Array(COALESCE_LIMIT);
/** Spare buffers kept at most (4 MiB): enough for hundreds of busy connections. */
const MAX_SPARE_BUFFERS = 256;

/** Buffered writes to one connection. */
export class Outbox {
  #conn: Deno.Conn;
  #pending: Uint8Array | undefined; // borrowed while anything is held
  #pendingLength = 0;
  #writingSince = 0;
  #writesSinceIdle = 0;
  #noDelay = false;
  #onSent: (bytes: number) => void;

  /** Wraps a connection; `onSent` hears of every byte written. */
  constructor(conn: Deno.Conn, onSent: (bytes: number) => void = () => {}) {
    this.#conn = conn;
    this.#onSent = onSent;
  }

  /**
   * When the write in progress started (`performance.now()`), or 0 when no
   * write is waiting on the client.
   */
  get writingSince(): number {
    return this.#writingSince;
  }

  /**
   * Adds bytes to the response stream. Small pieces are held back (up to
   * {@linkcode COALESCE_LIMIT} bytes) until {@linkcode flush}; large ones are
   * written at once, after what is held back. `bytes` may be reused by the
   * caller once the promise resolves.
   */
  async write(bytes: Uint8Array): Promise<void> {
    if (this.#pendingLength + bytes.length > COALESCE_LIMIT) await this.flush();
    if (bytes.length > COALESCE_LIMIT) {
      await this.#writeNow(bytes);
      return;
    }
    this.hold(bytes);
  }

  /**
   * Turns Nagle's algorithm off (once): for a connection kept alive, as
   * nginx's `tcp_nodelay` does, and for an answer written in several pieces.
   */
  noDelay(): void {
    if (this.#noDelay) return;
    this.#noDelay = true;
    (this.#conn as Partial<Deno.TcpConn>).setNoDelay?.(true);
  }

  /** How many more bytes {@linkcode hold} takes now. */
  get room(): number {
    return COALESCE_LIMIT - this.#pendingLength;
  }

  /**
   * Holds `bytes` back at once, without writing anything, when they fit in
   * the {@linkcode room} left; false (nothing held) when they do not: then
   * {@linkcode write} them. `bytes` may be reused as soon as this returns.
   */
  hold(bytes: Uint8Array): boolean {
    const length = this.#pendingLength + bytes.length;
    if (length > COALESCE_LIMIT) return false;
    this.#pending ??= spareBuffers.pop() ?? new Uint8Array(COALESCE_LIMIT);
    if (bytes.buffer instanceof SharedArrayBuffer && (this.#pendingLength ^ bytes.byteOffset) & 7) {
      // V8 copies out of shared memory word by word only where source and
      // target are equally aligned, byte by byte otherwise: a small cache
      // entry (its bytes are shared between threads) behind a header of any
      // length copies 3x faster through an aligned scratch buffer.
      alignedScratch.set(bytes);
      this.#pending.set(alignedScratch.subarray(0, bytes.length), this.#pendingLength);
    } else {
      this.#pending.set(bytes, this.#pendingLength);
    }
    this.#pendingLength = length;
    return true;
  }

  /**
   * Writes everything held back: the answers so far are complete, and the
   * connection now waits for the client's next request.
   */
  idle(): Promise<void> | undefined {
    const flushed = this.flush();
    this.#writesSinceIdle = 0;
    return flushed;
  }

  /**
   * Writes everything held back; undefined (nothing to wait for) when
   * nothing is.
   */
  flush(): Promise<void> | undefined {
    if (this.#pendingLength === 0) return undefined;
    const pending = this.#pending!;
    const length = this.#pendingLength;
    this.#pending = undefined;
    this.#pendingLength = 0;
    return this.#writeBorrowed(pending, length);
  }

  /** Writes the start of a borrowed buffer, then gives the buffer back. */
  async #writeBorrowed(buffer: Uint8Array, length: number): Promise<void> {
    try {
      await this.#writeNow(buffer.subarray(0, length));
    } finally {
      if (spareBuffers.length < MAX_SPARE_BUFFERS) spareBuffers.push(buffer);
    }
  }

  /**
   * Writes all of `bytes`. The clock restarts at every partial write, so a
   * stall is time without progress, as nginx's send_timeout counts it.
   */
  async #writeNow(bytes: Uint8Array): Promise<void> {
    // Several writes for one turn of the conversation: without this, the
    // last small segment could wait for the client's delayed ACK (~40 ms).
    if (++this.#writesSinceIdle > 1) this.noDelay();
    let written = 0;
    try {
      while (written < bytes.length) {
        this.#writingSince = performance.now();
        const n = await this.#conn.write(bytes.subarray(written));
        if (n <= 0) throw new Error("write made no progress");
        written += n;
        this.#onSent(n);
      }
    } finally {
      this.#writingSince = 0;
    }
  }
}
