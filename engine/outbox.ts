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

/** Buffered writes to one connection. */
export class Outbox {
  #conn: Deno.Conn;
  #pending: Uint8Array | undefined; // allocated on first use
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
    this.#reserve(length);
    this.#pending!.set(bytes, this.#pendingLength);
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
   * Makes room to hold `length` bytes back: the buffer starts small (most
   * connections carry a few short answers) and grows up to the limit.
   */
  #reserve(length: number): void {
    const size = this.#pending?.length ?? 0;
    if (length <= size) return;
    let grown = Math.max(size, 4096);
    while (grown < length) grown *= 2;
    const pending = new Uint8Array(Math.min(grown, COALESCE_LIMIT));
    if (this.#pending) pending.set(this.#pending.subarray(0, this.#pendingLength));
    this.#pending = pending;
  }

  /**
   * Writes everything held back; undefined (nothing to wait for) when
   * nothing is.
   */
  flush(): Promise<void> | undefined {
    if (this.#pendingLength === 0) return undefined;
    const length = this.#pendingLength;
    this.#pendingLength = 0;
    return this.#writeNow(this.#pending!.subarray(0, length));
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
