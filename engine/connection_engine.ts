/**
 * The connection engine both protocols run on: one accept loop per
 * listener, one async task per connection, and the limits that keep one
 * client from hurting the others.
 *
 * - Past `maxConnections` open connections, a new one gets the protocol's
 *   "busy" answer (`ERR 503`, HTTP `503`) and is closed.
 * - Out of descriptors, a spare descriptor is given up to accept one waiting
 *   client and tell it the same; the loop goes on, backing off.
 * - A request must arrive within `idleTimeoutMs` of the server being ready
 *   for it ({@linkcode ConnectionEngine.awaitRequest}).
 * - One sweeper per listener enforces both timeouts, a few times per
 *   shortest timeout, so that no request pays for a timer of its own: a
 *   timeout fires up to a quarter of itself (at most a second) late.
 * - A client that takes no byte of an answer for `sendTimeoutMs` is
 *   dropped, which frees what its answer held.
 * - At shutdown, connections waiting for a request are woken and end;
 *   answers in progress get `timeoutMs` to finish.
 *
 * What a connection says is the protocol's business
 * ({@linkcode ConnectionProtocol}): `tcp/` and `http/` each implement one.
 *
 * @module
 */

import { ByteReader, closeQuietly, linger, writeAll } from "../util/byte_reader.ts";
import { Outbox } from "./outbox.ts";
import type { ConnectionSlots } from "./connection_slots.ts";
import { isOutOfDescriptors, type Limits, sweepInterval } from "../service/file_service.ts";
import type { AccessGate, Credential } from "../access/gate.ts";
import { shutDown } from "./socket_control.ts";
import { withTimeout } from "../util/timeout.ts";

/** A listener the engine accepts from: plain TCP, or TLS (`--tls-cert`). */
export type EngineListener = Deno.TcpListener | Deno.TlsListener;

/** One client connection and what the engine keeps for it. */
export interface Session {
  /** The connection. */
  readonly conn: Deno.Conn;
  /** The client's address, `host:port`, for the access log. */
  readonly client: string;
  /** The client's address alone, for the access gate's per-address limit. */
  readonly address: string;
  /** Whether the connection is TLS (its handshake is done before the first request). */
  readonly tls: boolean;
  /** Set until a TLS connection's handshake is done: closing it then needs its socket shut down. */
  handshaking?: boolean;
  /** The token the client presented, once it did (see access/gate.ts). */
  credential?: Credential;
  /** The name of the token the current request was allowed with, for the access log. */
  user?: string;
  /** Buffered reads of the client's requests. */
  readonly reader: ByteReader;
  /** Coalesced, timed writes of the answers. */
  readonly outbox: Outbox;
  /** Set while waiting for a request: ends the wait (timeout or shutdown). */
  wake?: (outcome: WaitOutcome) => void;
  /** While waiting for a request: when the wait times out (`performance.now()`). */
  deadline?: number;
  /** Set once a request arrived behind another, before it was answered. */
  pipelined?: boolean;
}

/** Connection counts of one listener, as `STATS` reports them. */
export interface ConnectionCounts {
  /** Open now. */
  open: number;
  /** Accepted since the start. */
  total: number;
  /** Refused as busy. */
  rejected: number;
}

/** A protocol served over the engine's connections. */
export interface ConnectionProtocol {
  /** Bytes of each connection's read buffer: it bounds a request's head. */
  readonly readBufferSize: number;
  /** Whether a whole request is already buffered (pipelined). */
  hasBufferedRequest(session: Session): boolean;
  /**
   * Reads the next request, within the idle timeout when it is not buffered
   * yet (see {@linkcode ConnectionEngine.awaitRequest}). Resolves to null
   * when the connection should end (closed, timed out, refused, stopping).
   */
  nextRequest(session: Session, buffered: boolean): Promise<Uint8Array | null>;
  /**
   * Answers one request: false when the connection must close. An answer
   * given at once (held in the outbox) returns its verdict directly, saving
   * the hottest path a promise; otherwise it resolves to it. A rejection
   * means the client went away or stalled.
   */
  answer(session: Session, request: Uint8Array): boolean | Promise<boolean>;
  /** The answer that tells a refused client why (then it is closed). */
  busyAnswer(message: string): Uint8Array;
  /** Hears of every byte written to a client. */
  onSent(bytes: number): void;
}

/** Options of a {@linkcode ConnectionEngine}. */
export interface EngineOptions {
  /** The connection limit and the timeouts. */
  limits: Limits;
  /** The listener's connection counts, kept up to date by the engine. */
  counts: ConnectionCounts;
  /**
   * The connection limit shared with other threads serving the same port;
   * without it, this engine's open connections count against the limit.
   */
  slots?: ConnectionSlots;
  /** Hears of each client refused as busy (an error answer to count). */
  onRefused: () => void;
  /** Hears of each client dropped for taking no bytes. */
  onSendTimeout: () => void;
  /**
   * Who may connect (the allow list is checked at accept, before a byte is
   * read) and who may read (the protocols ask it per request).
   */
  gate: AccessGate;
  /** Whether the listener is a TLS one (its connections are shaken hands with first). */
  tls?: boolean;
  /** Hears of each client refused by the allow list. */
  onDenied: () => void;
  /** Hears of each TLS handshake: done, or failed (or never finished within the idle timeout). */
  onHandshake: (succeeded: boolean) => void;
}

/** What {@linkcode ConnectionEngine.awaitRequest} saw instead of a request. */
export type WaitOutcome = "timeout" | "shutdown";

/** Accepts and serves one listener's connections with one protocol. */
export class ConnectionEngine {
  #listener: EngineListener;
  #tls: boolean;
  #gate: AccessGate;
  #protocol: ConnectionProtocol;
  #limits: Limits;
  #counts: ConnectionCounts;
  #slots: ConnectionSlots | undefined;
  #events: Pick<EngineOptions, "onRefused" | "onSendTimeout" | "onDenied" | "onHandshake">;
  #connections = new Set<Promise<void>>();
  /** Open connections by client address (see `Limits.maxConnectionsPerAddress`). */
  #perAddress = new Map<string, number>();
  #sessions = new Set<Session>();
  #closing = false;
  #sweeper: ReturnType<typeof setInterval>;
  // A descriptor held in reserve: when accept fails for lack of descriptors,
  // closing it makes room to accept one client and tell it the server is busy.
  #spare: Deno.FsFile | undefined;
  #lastAcceptReport = 0;

  /** An engine for `listener`; call {@linkcode acceptLoop} to start it. */
  constructor(
    listener: EngineListener,
    protocol: ConnectionProtocol,
    options: EngineOptions,
  ) {
    this.#listener = listener;
    this.#tls = options.tls ?? false;
    this.#gate = options.gate;
    this.#protocol = protocol;
    this.#limits = options.limits;
    this.#counts = options.counts;
    this.#slots = options.slots;
    this.#events = options;
    this.#spare = openSpare();
    this.#sweeper = setInterval(
      () => this.#sweep(),
      sweepInterval(Math.min(this.#limits.sendTimeoutMs, this.#limits.idleTimeoutMs)),
    );
  }

  /** The access gate its protocol asks. */
  get gate(): AccessGate {
    return this.#gate;
  }

  /**
   * Accepts from `listener` from now on (a TLS listener with a reloaded
   * certificate, on the same port) and closes the one before. Connections
   * accepted before go on with what they had.
   */
  replaceListener(listener: EngineListener): void {
    const old = this.#listener;
    this.#listener = listener;
    old.close();
    if (this.#closing) listener.close();
  }

  /** True once {@linkcode shutdown} was called. */
  get closing(): boolean {
    return this.#closing;
  }

  /**
   * Accepts until shutdown, then waits for every connection to end. An
   * accept that fails (a client that reset before it was accepted, a
   * momentary lack of descriptors) must not end the loop, or the server
   * would silently stop accepting.
   */
  async acceptLoop(): Promise<void> {
    while (!this.#closing) {
      const listener = this.#listener;
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closing) break;
        if (listener !== this.#listener) continue; // replaced (closed) while accepting
        await this.#acceptFailed(error);
        continue;
      }
      // The allow list comes first: a refused peer costs a close, and no
      // byte of what it sent is read. (On a TLS port, Deno's TLS layer has
      // begun the handshake on its own by now: docs/network.md.)
      if (!this.#admitted(conn)) continue;
      this.#counts.total++;
      const address = (conn.remoteAddr as Deno.NetAddr).hostname;
      const fromAddress = this.#perAddress.get(address) ?? 0;
      if (fromAddress >= this.#limits.maxConnectionsPerAddress) {
        this.#track(this.#refuse(conn, "server busy: too many connections from your address"));
        continue;
      }
      if (this.#slots?.short()) {
        // Refused quickly: the descriptor is what the process lacks.
        this.#track(this.#refuse(conn, OUT_OF_DESCRIPTORS, SHORTAGE_LINGER_MS));
        continue;
      }
      if (!this.#takeSlot()) {
        this.#track(this.#refuse(conn, "server busy: too many connections"));
        continue;
      }
      this.#counts.open++;
      this.#perAddress.set(address, fromAddress + 1);
      this.#track(this.#serveConnection(conn));
    }
    await Promise.all(this.#connections);
    clearInterval(this.#sweeper);
    this.#spare?.close();
    this.#spare = undefined;
  }

  /**
   * Stops accepting and wakes every connection waiting for a request; after
   * `timeoutMs`, closes the connections still busy.
   */
  shutdown(timeoutMs: number): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#listener.close();
    for (const session of this.#sessions) session.wake?.("shutdown");
    const deadline = setTimeout(() => {
      for (const session of this.#sessions) closeConn(session.conn, session.handshaking);
    }, timeoutMs);
    Promise.all(this.#connections).then(() => clearTimeout(deadline));
  }

  /**
   * Waits for `read` (the next request) for at most the idle timeout from
   * now, or until shutdown. A read that loses the race is left to settle
   * when the connection closes.
   */
  awaitRequest<T>(session: Session, read: Promise<T>): Promise<T | WaitOutcome> {
    if (this.#closing) {
      read.catch(() => {}); // settles when the connection closes
      return Promise.resolve("shutdown");
    }
    session.deadline = performance.now() + this.#limits.idleTimeoutMs;
    // One fresh promise per wait, settled by whichever comes first (racing
    // one long-lived promise would keep every request's reaction alive
    // until it settles: a leak). A read that loses settles unheard.
    return new Promise<T | WaitOutcome>((resolve, reject) => {
      let settled = false;
      const settle = () => {
        if (settled) return false;
        settled = true;
        session.wake = undefined;
        session.deadline = undefined;
        return true;
      };
      session.wake = (outcome) => settle() && resolve(outcome);
      read.then((value) => settle() && resolve(value), (error) => settle() && reject(error));
    });
  }

  /**
   * Sends the answer after which the connection closes (a timeout, a
   * refused request, busy), then lingers: it stops writing and reads what
   * the client still sends, for a moment, so that closing does not reset
   * the connection before the client has read the answer. `pendingRead` is
   * a read still in flight, if any; `sent` hears when the answer is out
   * (or the client gone), before the linger.
   */
  async finalAnswer(
    session: Session,
    answer: Uint8Array,
    options: { pendingRead?: Promise<unknown>; sent?: () => void } = {},
  ): Promise<void> {
    const delivered = await session.outbox.write(answer)
      .then(() => session.outbox.flush())
      .then(() => true, () => false);
    options.sent?.();
    if (delivered) await linger(session.conn, options.pendingRead);
  }

  /** Keeps a connection's task until it ends, so that shutdown waits for it. */
  #track(task: Promise<void>): void {
    const tracked = task.finally(() => this.#connections.delete(tracked));
    this.#connections.add(tracked);
  }

  async #serveConnection(conn: Deno.Conn): Promise<void> {
    const { hostname, port } = conn.remoteAddr as Deno.NetAddr;
    const session: Session = {
      conn,
      client: `${hostname}:${port}`,
      address: hostname,
      tls: this.#tls,
      handshaking: this.#tls,
      // Requests are short: start small, grow to the bound only when needed.
      reader: new ByteReader(conn, this.#protocol.readBufferSize, 2048),
      outbox: new Outbox(conn, (n) => this.#protocol.onSent(n)),
    };
    this.#sessions.add(session);
    try {
      if (this.#tls && !await this.#handshake(session)) return;
      const serverClosed = await this.#converse(session);
      const flushed = session.outbox.flush();
      if (flushed) await flushed;
      // Closing with the client's unread bytes in the kernel would reset the
      // connection and could destroy the end of the last answer. A client
      // that pipelines may have more on the way, so it is given a moment;
      // one that sent a request and waits (most) is closed at once, as
      // nginx's `lingering_close on` does: lingering costs every closing
      // connection a timer and a read, a third of its CPU.
      if (serverClosed && (session.pipelined || session.reader.buffered > 0)) await linger(conn);
    } catch {
      // The client went away, stalled, or a body could not be completed:
      // the connection ends here, and nothing else depends on it. What is
      // held back (answers to earlier requests) still goes out if it can.
      await session.outbox.flush()?.catch(() => {});
    } finally {
      this.#sessions.delete(session);
      closeConn(conn, session.handshaking);
      this.#counts.open--;
      const left = this.#perAddress.get(hostname)! - 1;
      if (left === 0) this.#perAddress.delete(hostname);
      else this.#perAddress.set(hostname, left);
      this.#slots?.release();
    }
  }

  /**
   * Completes a TLS connection's handshake within the idle timeout: false
   * (counted) when it fails or does not finish in time, or when the server
   * stops meanwhile.
   */
  async #handshake(session: Session): Promise<boolean> {
    const handshake = (session.conn as Deno.TlsConn).handshake();
    const outcome = await this.awaitRequest(session, handshake).catch(() => "failed" as const);
    if (outcome === "shutdown") return false;
    const succeeded = outcome !== "failed" && outcome !== "timeout";
    if (succeeded) session.handshaking = false;
    this.#events.onHandshake(succeeded);
    return succeeded;
  }

  /** Whether the allow list admits `conn`'s peer; if not, it is counted and closed. */
  #admitted(conn: Deno.Conn): boolean {
    if (this.#gate.admits((conn.remoteAddr as Deno.NetAddr).hostname)) return true;
    this.#events.onDenied();
    closeConn(conn, this.#tls);
    return false;
  }

  /**
   * Answers requests in order until the client or the server ends the
   * connection. Answers to pipelined requests are coalesced: they go out
   * once no further request is waiting in the buffer. Resolves to true when
   * an answer ended the conversation (the server closes).
   */
  async #converse(session: Session): Promise<boolean> {
    const protocol = this.#protocol;
    while (!this.#closing) {
      const buffered = protocol.hasBufferedRequest(session);
      if (buffered) session.pipelined = true;
      else {
        // Nothing to wait for is not waited for: an await costs a turn.
        const flushed = session.outbox.idle();
        if (flushed) await flushed;
      }
      const request = await protocol.nextRequest(session, buffered);
      if (request === null) return false;
      const answered = protocol.answer(session, request);
      if (!(typeof answered === "boolean" ? answered : await answered)) return true;
      // Kept alive: small answers must not wait on Nagle's algorithm. (A
      // connection closed after one answer is spared the system call.)
      session.outbox.noDelay();
    }
    return false;
  }

  /**
   * Out of descriptors: sheds one waiting client as busy, using the spare
   * descriptor, which is taken back once that client is gone (meanwhile
   * accepting goes on, backing off). Other failures: backs off briefly, and
   * reports at most one a second.
   */
  async #acceptFailed(error: unknown): Promise<void> {
    if (isOutOfDescriptors(error)) {
      this.#slots?.outOfDescriptors();
      if (this.#spare) {
        this.#spare.close();
        this.#spare = undefined;
        try {
          const conn = await this.#listener.accept();
          if (!this.#admitted(conn)) {
            this.#spare = openSpare();
            return;
          }
          this.#counts.total++;
          const refused = this.#refuse(conn, OUT_OF_DESCRIPTORS);
          this.#track(refused.finally(() => this.#spare ??= openSpare()));
        } catch {
          this.#spare = openSpare(); // the client left first
        }
        return;
      }
      // Without a spare, take one back as soon as a descriptor is free: with
      // worker threads another thread's accept may have taken the one this
      // thread freed, and clients queued on this thread's listener wait for
      // a descriptor to be told they must go.
      this.#spare = openSpare();
    } else {
      const now = Date.now();
      if (now - this.#lastAcceptReport >= 1000) {
        this.#lastAcceptReport = now;
        this.#limits.onError(`accept failed: ${(error as Error).message}`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  /** Takes a connection slot: false when the limit is reached. */
  #takeSlot(): boolean {
    if (this.#slots) return this.#slots.take();
    return this.#counts.open < this.#limits.maxConnections;
  }

  /** Tells a client right after accept that the server is busy, and closes. */
  async #refuse(conn: Deno.Conn, message: string, lingerMs?: number): Promise<void> {
    this.#counts.rejected++;
    this.#events.onRefused();
    // Over TLS the answer needs the handshake; a client that does not finish
    // it soon is not waited for (the write would wait as long as it likes).
    let handshaking = this.#tls;
    try {
      if (handshaking) {
        await withTimeout((conn as Deno.TlsConn).handshake(), REFUSAL_HANDSHAKE_MS, "handshake");
        handshaking = false;
      }
      await writeAll(conn, this.#protocol.busyAnswer(message));
      await linger(conn, undefined, lingerMs);
    } catch {
      // the client is gone, or did not finish its handshake
    } finally {
      closeConn(conn, handshaking);
    }
  }

  /**
   * Ends the waits for a request that are past their deadline, and drops
   * connections whose client has not taken a byte for the send timeout.
   */
  #sweep(): void {
    const now = performance.now();
    for (const session of this.#sessions) {
      if (session.deadline !== undefined && now >= session.deadline) session.wake?.("timeout");
      const since = session.outbox.writingSince;
      if (since !== 0 && now - since > this.#limits.sendTimeoutMs) {
        this.#events.onSendTimeout();
        this.#sessions.delete(session);
        closeQuietly(session.conn); // the pending write fails, and the task ends
      }
    }
  }
}

/** How long a TLS client refused as busy has to finish its handshake and hear why. */
const REFUSAL_HANDSHAKE_MS = 1000;

/**
 * Closes a connection; one whose TLS handshake has not finished has its
 * socket shut down first, or it would stay open (engine/socket_control.ts).
 */
function closeConn(conn: Deno.Conn, handshaking = false): void {
  if (handshaking) shutDown(conn);
  closeQuietly(conn);
}

/**
 * How long a client refused while descriptors are short may keep its
 * descriptor for the answer to reach it (see `linger`).
 */
const SHORTAGE_LINGER_MS = 100;
/** What a client refused for lack of descriptors is told. */
const OUT_OF_DESCRIPTORS = "server busy: out of file descriptors";

function openSpare(): Deno.FsFile | undefined {
  try {
    return Deno.openSync("/dev/null");
  } catch {
    return undefined;
  }
}
