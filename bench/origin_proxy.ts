/**
 * A TCP proxy between tcpcache and its S3 origin, on 127.0.0.1, that makes
 * the origin far, slow or down to order and counts what reaches it: for
 * the origin-shield measurements (bench/origin_bench.ts) and tests.
 *
 * Modes: `pass` (forward, each request delayed by `delayMs`), `refuse`
 * (nothing listens: connections are refused), `hang` (connections are
 * accepted and requests read, never answered), `throttle` (every request is
 * answered `503 SlowDown`, as S3 throttles). Requests are counted as the
 * request heads seen going to the origin (S3 `GET`s and `HEAD`s have no
 * body, so each head ends with an empty line).
 *
 * @module
 */

/** What the proxy does with connections and requests now. */
export type ProxyMode = "pass" | "refuse" | "hang" | "throttle";

const HEAD_END = new TextEncoder().encode("\r\n\r\n");
const SLOW_DOWN_BODY =
  "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
const SLOW_DOWN = new TextEncoder().encode(
  `HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\ncontent-length: ${SLOW_DOWN_BODY.length}\r\n\r\n${SLOW_DOWN_BODY}`,
);

/** A proxy to `target` (host:port) on 127.0.0.1. */
export class OriginProxy {
  /** Request heads forwarded or answered, since start or {@linkcode reset}. */
  requests = 0;
  /** Connections accepted, since start or {@linkcode reset}. */
  connections = 0;
  /** Connections open now. */
  open = 0;
  /** Added before each request is forwarded, in ms. */
  delayMs: number;
  #target: { hostname: string; port: number };
  #port: number;
  #listener?: Deno.TcpListener;
  #mode: ProxyMode = "pass";
  #conns = new Set<Deno.Conn>();

  private constructor(target: { hostname: string; port: number }, delayMs: number, port: number) {
    this.#target = target;
    this.delayMs = delayMs;
    this.#port = port;
  }

  /** Starts a proxy to `target` on a free port of 127.0.0.1. */
  static start(target: string, delayMs = 0): OriginProxy {
    const [hostname, port] = target.split(":");
    const proxy = new OriginProxy({ hostname, port: Number(port) }, delayMs, 0);
    proxy.#listen();
    return proxy;
  }

  /** The proxy's address, as an endpoint URL. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  /** The mode now. */
  get mode(): ProxyMode {
    return this.#mode;
  }

  /**
   * Changes the mode. Leaving `pass` ends the connections open (a store
   * that went away); `refuse` stops listening, and any other mode listens
   * again on the same port.
   */
  setMode(mode: ProxyMode): void {
    if (mode === this.#mode) return;
    this.#mode = mode;
    for (const conn of this.#conns) closeQuietly(conn);
    this.#conns.clear();
    if (mode === "refuse") {
      this.#listener?.close();
      this.#listener = undefined;
    } else if (!this.#listener) {
      this.#listen();
    }
  }

  /** Zeroes the counters. */
  reset(): void {
    this.requests = 0;
    this.connections = 0;
  }

  /** Stops listening and ends every connection. */
  close(): void {
    this.#listener?.close();
    this.#listener = undefined;
    for (const conn of this.#conns) closeQuietly(conn);
    this.#conns.clear();
  }

  #listen(): void {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: this.#port });
    this.#port = (listener.addr as Deno.NetAddr).port;
    this.#listener = listener;
    (async () => {
      try {
        for await (const conn of listener) this.#serve(conn);
      } catch {
        // closed
      }
    })();
  }

  async #serve(client: Deno.Conn): Promise<void> {
    this.connections++;
    this.open++;
    this.#conns.add(client);
    let origin: Deno.Conn | undefined;
    try {
      if (this.#mode === "pass") {
        origin = await Deno.connect(this.#target);
        this.#conns.add(origin);
        const back = pipe(origin, client);
        await this.#forward(client, origin);
        await back;
      } else {
        await this.#forward(client, undefined);
      }
    } catch {
      // either side went away
    } finally {
      this.open--;
      this.#conns.delete(client);
      closeQuietly(client);
      if (origin) {
        this.#conns.delete(origin);
        closeQuietly(origin);
      }
    }
  }

  /** Client to origin: counts request heads, delays them, or answers them itself. */
  async #forward(client: Deno.Conn, origin: Deno.Conn | undefined): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    let matched = 0; // bytes of HEAD_END matched so far, across reads
    for (;;) {
      const n = await client.read(buffer);
      if (n === null) return;
      const chunk = buffer.slice(0, n);
      let heads = 0;
      for (const byte of chunk) {
        matched = byte === HEAD_END[matched] ? matched + 1 : byte === HEAD_END[0] ? 1 : 0;
        if (matched === HEAD_END.length) {
          heads++;
          matched = 0;
        }
      }
      this.requests += heads;
      if (this.#mode === "hang") continue;
      if (this.#mode === "throttle") {
        for (let i = 0; i < heads; i++) await writeAll(client, SLOW_DOWN);
        continue;
      }
      if (!origin) return;
      if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      await writeAll(origin, chunk);
    }
  }
}

async function pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(256 * 1024);
  try {
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) break;
      await writeAll(to, buffer.subarray(0, n));
    }
  } catch {
    // either side went away
  } finally {
    closeQuietly(to);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}
