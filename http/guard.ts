/**
 * The connection limits of the HTTP front end. `Deno.serve` (Deno 2.9) has
 * no connection limit and no timeouts: a client that opens a connection and
 * sends nothing, or a request head one byte a minute, holds it forever. So
 * clients connect to this guard, which keeps the TCP side's limits, and the
 * guard relays each connection to `Deno.serve` on a private loopback port.
 *
 * - Past `maxConnections`, a new connection gets `503` and is closed.
 * - A request head must arrive whole within `idleTimeoutMs` of its first
 *   byte (else `408`), and a connection with no request in progress closes
 *   after `idleTimeoutMs` without a byte (keep-alive idle).
 * - A client that takes no byte of a response for `sendTimeoutMs` is
 *   dropped, and the response's file and buffers are freed.
 *
 * @module
 */

import { closeQuietly, linger, writeAll } from "../util/byte_reader.ts";
import { sweepInterval } from "../service/file_service.ts";

/** Options of {@linkcode ConnectionGuard}. */
export interface GuardOptions {
  /** Connections at once; past it, `503`. */
  maxConnections: number;
  /** Milliseconds for a request head, and for an idle keep-alive connection. */
  idleTimeoutMs: number;
  /** Milliseconds a client may go without taking a byte. */
  sendTimeoutMs: number;
  /** Hears of each connection dropped for the send timeout. */
  onSendTimeout?: () => void;
  /** Where problems are reported, one line each. */
  onError?: (message: string) => void;
}

/**
 * One client connection, as the HTTP handler sees it: the handler says when
 * it starts and ends each request, which is what tells an idle keep-alive
 * connection from one waiting for its answer.
 */
export interface GuardedConnection {
  /** The client's address, `host:port`. */
  readonly client: string;
  /** A request of this connection reached the handler. */
  requestStarted(): void;
  /** Its response was delivered, or failed to be. */
  requestEnded(): void;
}

/** Bytes moved per read while relaying responses (two buffers per connection). */
const RELAY_CHUNK = 128 * 1024;
const CR = 13;
const LF = 10;

/** Relays connections from a public listener to a private upstream port. */
export class ConnectionGuard {
  #listener: Deno.TcpListener;
  #upstreamPort: number;
  #options: GuardOptions;
  #relays = new Set<Relay>();
  #open = 0; // counted at accept, before the relay exists
  #tasks = new Set<Promise<void>>();
  // The guard's own end of each upstream connection (its local port), so
  // that a request reaching Deno.serve can be tied to its client.
  #byUpstreamPort = new Map<number, GuardedConnection>();
  #sweeper: ReturnType<typeof setInterval>;
  #closing = false;
  #lastAcceptReport = 0;

  constructor(listener: Deno.TcpListener, upstreamPort: number, options: GuardOptions) {
    this.#listener = listener;
    this.#upstreamPort = upstreamPort;
    this.#options = options;
    const shortest = Math.min(options.idleTimeoutMs, options.sendTimeoutMs);
    this.#sweeper = setInterval(() => this.#sweep(), sweepInterval(shortest));
  }

  /** Open client connections. */
  get open(): number {
    return this.#open;
  }

  /** The client connection behind an upstream request's remote port. */
  connectionOf(upstreamPort: number): GuardedConnection | undefined {
    return this.#byUpstreamPort.get(upstreamPort);
  }

  /** Accepts until {@linkcode ConnectionGuard.close}; survives failed accepts. */
  async acceptLoop(): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closing) break;
        // Out of descriptors, or a client that reset before it was accepted:
        // back off a little, and say so at most once a second.
        const now = Date.now();
        if (now - this.#lastAcceptReport >= 1000) {
          this.#lastAcceptReport = now;
          this.#options.onError?.(`http: accept failed: ${(error as Error).message}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
        continue;
      }
      if (this.#open >= this.#options.maxConnections) {
        this.#track(refuse(conn, 503, "server busy: too many connections"));
      } else {
        this.#open++;
        this.#track(this.#relay(conn).finally(() => this.#open--));
      }
    }
  }

  /**
   * Stops accepting; after `timeoutMs`, closes the connections still open
   * (the front end first lets their responses finish). Resolves once all
   * are closed.
   */
  async close(timeoutMs: number): Promise<void> {
    this.#closing = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    const deadline = setTimeout(() => {
      for (const relay of this.#relays) relay.close();
    }, timeoutMs);
    // Idle connections go at once; busy ones when their responses are done.
    const idle = setInterval(() => {
      for (const relay of this.#relays) if (relay.idle) relay.close();
    }, 10);
    for (const relay of this.#relays) if (relay.idle) relay.close();
    await Promise.all(this.#tasks);
    clearTimeout(deadline);
    clearInterval(idle);
    clearInterval(this.#sweeper);
  }

  #track(task: Promise<void>): void {
    const tracked = task.finally(() => this.#tasks.delete(tracked));
    this.#tasks.add(tracked);
  }

  async #relay(client: Deno.TcpConn): Promise<void> {
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: this.#upstreamPort });
    } catch {
      await refuse(client, 503, "server busy: cannot reach the HTTP handler");
      return;
    }
    const { hostname, port } = client.remoteAddr;
    const relay = new Relay(client, upstream, `${hostname}:${port}`);
    const upstreamPort = upstream.localAddr.port;
    this.#relays.add(relay);
    this.#byUpstreamPort.set(upstreamPort, relay);
    try {
      await relay.run();
    } finally {
      this.#relays.delete(relay);
      this.#byUpstreamPort.delete(upstreamPort);
    }
  }

  #sweep(): void {
    const now = performance.now();
    const { idleTimeoutMs, sendTimeoutMs } = this.#options;
    for (const relay of this.#relays) {
      if (relay.writingSince !== 0 && now - relay.writingSince > sendTimeoutMs) {
        this.#options.onSendTimeout?.();
        relay.close();
      } else if (relay.headStartedAt !== 0 && now - relay.headStartedAt > idleTimeoutMs) {
        relay.timeOut("timed out waiting for the request head");
      } else if (relay.idle && now - relay.lastActivity > idleTimeoutMs) {
        relay.close();
      }
    }
  }
}

/** One client connection and its upstream twin. */
class Relay implements GuardedConnection {
  readonly client: string;
  /** Requests in the handler's hands (started, not yet ended). */
  active = 0;
  /** When the head being received began, or 0 between requests. */
  headStartedAt = 0;
  /** When a write to the client began and has not finished, or 0. */
  writingSince = 0;
  /** When a byte last moved in either direction. */
  lastActivity = performance.now();
  #clientConn: Deno.TcpConn;
  #upstream: Deno.TcpConn;
  #lineEnds = 0; // line ends in a row in the head being received
  #responding = false; // bytes of a response have gone to the client
  #headsSent = 0; // complete request heads passed upstream
  #requestsEnded = 0;
  #allAnswered?: () => void; // wakes a half-closed client's wait
  #closed = false;

  constructor(clientConn: Deno.TcpConn, upstream: Deno.TcpConn, client: string) {
    this.#clientConn = clientConn;
    this.#upstream = upstream;
    this.client = client;
  }

  /** No request in progress and none arriving. */
  get idle(): boolean {
    return this.active === 0 && this.headStartedAt === 0 && this.writingSince === 0;
  }

  requestStarted(): void {
    this.active++;
  }

  requestEnded(): void {
    this.active--;
    this.#requestsEnded++;
    this.lastActivity = performance.now(); // its last bytes may still be on their way
    if (this.#requestsEnded >= this.#headsSent) this.#allAnswered?.();
  }

  /** Relays both ways until either side closes. */
  async run(): Promise<void> {
    this.#clientConn.setNoDelay(true);
    this.#upstream.setNoDelay(true);
    await Promise.all([this.#pumpRequests(), this.#pumpResponses()]);
  }

  /** Answers `408` when no response is under way, then closes. */
  timeOut(message: string): void {
    if (this.#closed) return;
    if (this.active > 0 || this.#responding) {
      this.close();
      return;
    }
    this.#closed = true;
    this.#upstream.close();
    refuse(this.#clientConn, 408, message);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#allAnswered?.();
    closeQuietly(this.#clientConn);
    closeQuietly(this.#upstream);
  }

  async #pumpRequests(): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    try {
      while (true) {
        const n = await this.#clientConn.read(buffer);
        if (n === null) break;
        this.lastActivity = performance.now();
        this.#watchHeads(buffer.subarray(0, n));
        await writeAll(this.#upstream, buffer.subarray(0, n));
      }
      // The client sent its last request and half-closed. Passing the
      // half-close on at once would make Deno.serve drop the requests it
      // has not answered yet: wait until each has been.
      if (this.#requestsEnded < this.#headsSent && !this.#closed) {
        await new Promise<void>((resolve) => this.#allAnswered = resolve);
      }
      await this.#upstream.closeWrite().catch(() => {});
    } catch {
      this.close();
    }
  }

  /**
   * Copies responses to the client. Two buffers take turns, so the next
   * chunk is read from upstream while the current one is written: the copy
   * then costs CPU but little latency.
   */
  async #pumpResponses(): Promise<void> {
    let [current, next] = [new Uint8Array(RELAY_CHUNK), new Uint8Array(RELAY_CHUNK)];
    let reading: Promise<number | null> | undefined;
    try {
      reading = this.#upstream.read(current);
      while (true) {
        const n = await reading;
        reading = undefined;
        if (n === null) break;
        reading = this.#upstream.read(next);
        reading.catch(() => {}); // may fail while the write below runs
        this.#responding = true;
        this.writingSince = performance.now();
        await writeAll(this.#clientConn, current.subarray(0, n));
        this.writingSince = 0;
        this.lastActivity = performance.now();
        [current, next] = [next, current];
      }
    } catch {
      // either side went away
    } finally {
      this.close();
      await reading?.catch(() => {});
    }
  }

  /**
   * Times request heads in the client's bytes: a head starts with its first
   * byte and ends with an empty line (CRLF CRLF, or LF LF, which HTTP
   * parsers accept too). Only the timing depends on this: whether a request
   * is in progress is what the handler says. (The front end takes no
   * request bodies; it answers a request with one and closes.)
   */
  #watchHeads(bytes: Uint8Array): void {
    for (const byte of bytes) {
      if (this.headStartedAt === 0) {
        if (byte === CR || byte === LF) continue; // stray line breaks between requests
        this.headStartedAt = performance.now();
        this.#responding = false;
      }
      if (byte === LF) this.#lineEnds++;
      else if (byte !== CR) this.#lineEnds = 0;
      if (this.#lineEnds === 2) {
        this.#lineEnds = 0;
        this.headStartedAt = 0;
        this.#headsSent++;
      }
    }
  }
}

/** Answers a bare HTTP error and closes, after letting the client read it. */
async function refuse(conn: Deno.Conn, status: 408 | 503, message: string): Promise<void> {
  const reason = status === 408 ? "Request Timeout" : "Service Unavailable";
  const body = `${message}\n`;
  const response = `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${new TextEncoder().encode(body).length}\r\nConnection: close\r\n\r\n${body}`;
  try {
    await writeAll(conn, new TextEncoder().encode(response));
    await linger(conn); // so that closing does not reset the answer away
  } catch {
    // the client is gone
  } finally {
    closeQuietly(conn);
  }
}
