/**
 * The connection guard on its own: a real listener on 127.0.0.1, relaying to
 * a tiny `Deno.serve` handler on another port, which reports each request's
 * start and end the way the HTTP front end does. Timeouts are short; the
 * tests wait on what happens (an answer, a close, a callback), not on time.
 */

import assert from "node:assert/strict";
import { ConnectionGuard, type GuardedConnection, type GuardOptions } from "../../http/guard.ts";
import { ByteReader } from "../../util/byte_reader.ts";
import { eventually } from "../helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** How long a test waits for an event before it fails instead of hanging. */
const SAFETY_MS = 10_000;

/** What the handler behind the guard sees of one request. */
interface Seen {
  path: string;
  /** The guard's connection for it, as `connectionOf` found it. */
  connection: GuardedConnection | undefined;
}

type Handler = (request: Request, seen: Seen) => Response | Promise<Response>;

interface GuardContext {
  guard: ConnectionGuard;
  /** The guard's public port. */
  port: number;
  /** Every request that reached the handler, in order. */
  seen: Seen[];
  /** Lines the guard reported through `onError`. */
  errors: string[];
  /** Replaces the handler (by default: 200, the path as the body). */
  handle(handler: Handler): void;
}

/**
 * Runs `test` against a guard in front of a `Deno.serve` handler, then closes
 * both (the guard without waiting for responses in progress).
 */
async function withGuard(
  options: Partial<GuardOptions>,
  test: (context: GuardContext) => Promise<void>,
): Promise<void> {
  let handler: Handler = (_request, seen) => new Response(`path ${seen.path}\n`);
  const seen: Seen[] = [];
  const errors: string[] = [];
  const upstream: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request, info): Response | Promise<Response> => {
      const connection: GuardedConnection | undefined = guard.connectionOf(info.remoteAddr.port);
      const one: Seen = { path: new URL(request.url).pathname, connection };
      seen.push(one);
      connection?.requestStarted();
      info.completed.finally(() => connection?.requestEnded()).catch(() => {});
      return handler(request, one);
    },
  );
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // The handler above runs only once a client came through this guard.
  const guard: ConnectionGuard = new ConnectionGuard(listener, upstream.addr.port, {
    maxConnections: 16,
    idleTimeoutMs: 10_000,
    sendTimeoutMs: 10_000,
    onError: (line) => errors.push(line),
    ...options,
  });
  const accepting = guard.acceptLoop();
  try {
    await test({
      guard,
      port: listener.addr.port,
      seen,
      errors,
      handle: (next) => handler = next,
    });
  } finally {
    await guard.close(0);
    await accepting;
    await upstream.shutdown();
  }
}

/** A client connection to the guard with an HTTP response reader. */
class Client {
  readonly conn: Deno.TcpConn;
  readonly reader: ByteReader;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.reader = new ByteReader(conn);
  }

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  async send(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    let written = 0;
    while (written < bytes.length) written += await this.conn.write(bytes.subarray(written));
  }

  /** Reads one response with a Content-Length body. */
  async response(): Promise<{ status: number; headers: Headers; body: string }> {
    const statusLine = await this.line();
    assert.ok(statusLine !== null, "a response, not the end of the connection");
    const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1]);
    const headers = new Headers();
    for (let line = await this.line(); line; line = await this.line()) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    const chunks: Uint8Array[] = [];
    await this.reader.readBody(Number(headers.get("content-length") ?? 0), (chunk) => {
      chunks.push(chunk.slice());
    });
    return { status, headers, body: decoder.decode(concat(chunks)) };
  }

  /**
   * Everything until the guard closes the connection ("" when it sent
   * nothing). A guard that never closes it fails the test after 10 s
   * rather than hanging it.
   */
  async rest(): Promise<string> {
    const chunks: Uint8Array[] = [];
    const buffer = new Uint8Array(64 * 1024);
    let gaveUp = false;
    const deadline = setTimeout(() => {
      gaveUp = true;
      this.close();
    }, SAFETY_MS);
    try {
      for (let n = await this.conn.read(buffer); n !== null; n = await this.conn.read(buffer)) {
        chunks.push(buffer.slice(0, n));
      }
    } catch {
      // a reset also ends it
    } finally {
      clearTimeout(deadline);
    }
    assert.ok(!gaveUp, `the guard did not close the connection within ${SAFETY_MS} ms`);
    return decoder.decode(concat(chunks));
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  async line(): Promise<string | null> {
    const line = await this.reader.readLine(64 * 1024);
    return line === null ? null : decoder.decode(line).replace(/\r$/, "");
  }
}

/** `promise`, or a failure naming `what` if it takes longer than {@linkcode SAFETY_MS}. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    deadline = setTimeout(() => reject(new Error(`no ${what} within ${SAFETY_MS} ms`)), SAFETY_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(deadline);
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

function get(path: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`;
}

/** A port with no listener: taken from the system, then freed. */
function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

Deno.test("guard: relays keep-alive requests both ways and ties each to its client's address", async () => {
  await withGuard({}, async (t) => {
    const client = await Client.open(t.port);
    try {
      // Two requests in one write (pipelined), then a third after the answers.
      await client.send(get("/one") + get("/two"));
      const one = await client.response();
      const two = await client.response();
      assert.equal(one.status, 200);
      assert.equal(one.body, "path /one\n");
      assert.equal(two.body, "path /two\n");
      await client.send(get("/three"));
      assert.equal((await client.response()).body, "path /three\n");
      assert.equal(t.guard.open, 1);
    } finally {
      client.close();
    }
    assert.deepEqual(t.seen.map((one) => one.path), ["/one", "/two", "/three"]);
    const { port } = client.conn.localAddr as Deno.NetAddr;
    for (const one of t.seen) {
      assert.ok(one.connection, "connectionOf knew the request's connection");
      assert.equal(one.connection.client, `127.0.0.1:${port}`);
    }
    await eventually(() => t.guard.open === 0, "the closed connection leaves the count");
    assert.equal(t.guard.connectionOf(0), undefined);
    assert.deepEqual(t.errors, []);
  });
});

Deno.test("guard: past maxConnections a new connection gets 503 and is closed; the others keep working", async () => {
  await withGuard({ maxConnections: 2 }, async (t) => {
    const first = await Client.open(t.port);
    const second = await Client.open(t.port);
    try {
      // An answer on each proves both were accepted and counted.
      for (const client of [first, second]) {
        await client.send(get("/held"));
        assert.equal((await client.response()).status, 200);
      }
      assert.equal(t.guard.open, 2);
      const third = await Client.open(t.port);
      try {
        const refused = await third.rest();
        assert.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
        assert.match(refused, /\r\nConnection: close\r\n/i);
        assert.match(refused, /\r\n\r\nserver busy: too many connections\n$/);
        const length = Number(/Content-Length: (\d+)/i.exec(refused)?.[1]);
        assert.equal(length, encoder.encode("server busy: too many connections\n").length);
      } finally {
        third.close();
      }
      assert.equal(t.seen.length, 2, "the refused connection never reached the handler");
      assert.deepEqual(t.errors, [], "a refusal is not an error");
      assert.equal(t.guard.open, 2, "a refusal is not counted as open");
      await first.send(get("/still"));
      assert.equal((await first.response()).body, "path /still\n");
    } finally {
      first.close();
    }
    // A freed slot is taken by the next connection.
    await eventually(() => t.guard.open === 1, "the first connection's slot freed");
    const next = await Client.open(t.port);
    try {
      await next.send(get("/next"));
      assert.equal((await next.response()).body, "path /next\n");
    } finally {
      next.close();
      second.close();
    }
  });
});

Deno.test("guard: a request head not complete within idleTimeoutMs gets 408 and the connection closes", async () => {
  const idleTimeoutMs = 300;
  await withGuard({ idleTimeoutMs }, async (t) => {
    const client = await Client.open(t.port);
    try {
      const started = performance.now();
      await client.send("GET /slow HTTP/1.1\r\nHo");
      const answer = await client.rest();
      const elapsed = performance.now() - started;
      assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.match(answer, /\r\n\r\ntimed out waiting for the request head\n$/);
      assert.ok(elapsed >= idleTimeoutMs, `not before the timeout: ${elapsed} ms`);
    } finally {
      client.close();
    }
    assert.equal(t.seen.length, 0, "the half head never reached the handler");
    await eventually(() => t.guard.open === 0, "the timed-out connection closed");
  });
});

Deno.test("guard: a head sent a byte at a time is timed from its first byte, not its last", async () => {
  const idleTimeoutMs = 300;
  await withGuard({ idleTimeoutMs }, async (t) => {
    const client = await Client.open(t.port);
    const started = performance.now();
    let sent = 0;
    try {
      // Keep trickling bytes of a never-ending header line: each byte is
      // activity, but the head as a whole must still arrive in time.
      const closed = client.rest();
      let done = false;
      closed.finally(() => done = true).catch(() => {}); // its failure is awaited below
      while (!done) {
        await client.send("x").catch(() => done = true);
        sent++;
        await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 20))]);
      }
      const answer = await closed;
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.ok(performance.now() - started >= idleTimeoutMs);
      assert.ok(sent > 3, `several bytes went out before the 408 (${sent})`);
    } finally {
      client.close();
    }
  });
});

Deno.test("guard: a silent connection, and an idle keep-alive one, close after idleTimeoutMs without an answer", async () => {
  const idleTimeoutMs = 300;
  await withGuard({ idleTimeoutMs }, async (t) => {
    // Times taken before the events they bound: the guard's clocks start later.
    const started = performance.now();
    const silent = await Client.open(t.port);
    const keepAlive = await Client.open(t.port);
    try {
      const asked = performance.now();
      await keepAlive.send(get("/once"));
      assert.equal((await keepAlive.response()).body, "path /once\n");
      assert.equal(await silent.rest(), "", "closed with nothing sent: no 408 without a request");
      assert.ok(performance.now() - started >= idleTimeoutMs);
      assert.equal(await keepAlive.rest(), "", "closed after its answer, with nothing more");
      assert.ok(performance.now() - asked >= idleTimeoutMs, "idle counted from the exchange");
    } finally {
      silent.close();
      keepAlive.close();
    }
    assert.equal(t.seen.length, 1);
    await eventually(() => t.guard.open === 0, "both closed");
  });
});

Deno.test("guard: a request in the handler's hands is not idle, however long it takes", async () => {
  const idleTimeoutMs = 200;
  await withGuard({ idleTimeoutMs }, async (t) => {
    const release = Promise.withResolvers<void>();
    const arrived = Promise.withResolvers<void>();
    t.handle(async (_request, seen) => {
      arrived.resolve();
      await release.promise;
      return new Response(`finally ${seen.path}\n`);
    });
    const busy = await Client.open(t.port);
    try {
      await busy.send(get("/slow"));
      await arrived.promise;
      // A connection opened after the request started, and silent: once the
      // guard has closed it, the busy one has been quiet longer than that.
      const witness = await Client.open(t.port);
      try {
        assert.equal(await witness.rest(), "");
      } finally {
        witness.close();
      }
      await eventually(() => t.guard.open === 1, "the witness gone, the busy one still open");
      release.resolve();
      const answer = await busy.response();
      assert.equal(answer.status, 200);
      assert.equal(answer.body, "finally /slow\n");
    } finally {
      release.resolve();
      busy.close();
    }
  });
});

Deno.test("guard: a client that takes no bytes for sendTimeoutMs is dropped and its response freed", async () => {
  const sendTimeoutMs = 300;
  const dropped = Promise.withResolvers<void>();
  const cancelled = Promise.withResolvers<void>();
  let sendTimeouts = 0;
  await withGuard({
    sendTimeoutMs,
    onSendTimeout: () => {
      sendTimeouts++;
      dropped.resolve();
    },
  }, async (t) => {
    const chunk = new Uint8Array(64 * 1024).fill(120);
    t.handle((request) => {
      if (new URL(request.url).pathname !== "/endless") return new Response("small\n");
      // A body that never ends: only a dropped connection stops it.
      return new Response(
        new ReadableStream<Uint8Array>({
          pull: (controller) => controller.enqueue(chunk),
          cancel: () => cancelled.resolve(),
        }),
      );
    });
    const stalled = await Client.open(t.port);
    const other = await Client.open(t.port);
    try {
      const started = performance.now();
      await stalled.send(get("/endless"));
      await within(dropped.promise, "send timeout");
      assert.ok(performance.now() - started >= sendTimeoutMs, "not before the timeout");
      await within(cancelled.promise, "cancel of the body"); // the handler's stream heard of it
      assert.equal(sendTimeouts, 1);
      await eventually(() => t.guard.open === 1, "the stalled connection closed");
      // Another client was never held up, and is not now.
      await other.send(get("/small"));
      assert.equal((await other.response()).body, "small\n");
      // What the stalled client finds: some of the body, then the end.
      const rest = await stalled.rest();
      assert.match(rest, /^HTTP\/1\.1 200 /);
    } finally {
      stalled.close();
      other.close();
    }
  });
});

Deno.test("guard: a client that half-closes after pipelined requests still gets every answer", async () => {
  await withGuard({}, async (t) => {
    const big = new Uint8Array(4 * 1024 * 1024).fill(98);
    const release = Promise.withResolvers<void>();
    t.handle(async (_request, seen) => {
      if (seen.path === "/big") await release.promise;
      return new Response(seen.path === "/big" ? big : `answer ${seen.path}\n`);
    });
    const client = await Client.open(t.port);
    try {
      // Both requests, then the client's half of the connection closes, as
      // `nc -N` does, while the first answer is still being prepared.
      await client.send(get("/big") + get("/last"));
      await client.conn.closeWrite();
      const answers = client.rest();
      // The answers must arrive however late the handler is; waiting a
      // little makes sure that it is late, after the half-close reached the
      // guard (Deno.serve drops the answers it has not begun when the
      // half-close is passed on at once).
      const late = setTimeout(() => release.resolve(), 50);
      const text = await answers;
      clearTimeout(late);
      assert.equal(text.match(/HTTP\/1\.1 200 /g)?.length, 2, text.slice(0, 200));
      assert.ok(text.includes("b".repeat(big.length)), "the big body whole");
      assert.match(text, /\r\n\r\nanswer \/last\n$/);
    } finally {
      release.resolve();
      client.close();
    }
  });
});

Deno.test("guard: when the handler's port cannot be reached, a client gets 503 and is closed", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const guard: ConnectionGuard = new ConnectionGuard(listener, deadPort(), {
    maxConnections: 4,
    idleTimeoutMs: 10_000,
    sendTimeoutMs: 10_000,
  });
  const accepting = guard.acceptLoop();
  try {
    const client = await Client.open(listener.addr.port);
    try {
      const answer = await client.rest();
      assert.match(answer, /^HTTP\/1\.1 503 /);
      assert.match(answer, /server busy: cannot reach the HTTP handler\n$/);
    } finally {
      client.close();
    }
    await eventually(() => guard.open === 0, "the connection left the count");
  } finally {
    await guard.close(0);
    await accepting;
  }
});

Deno.test("guard: close stops accepting, closes idle connections at once, lets a response finish", async () => {
  await withGuard({}, async (t) => {
    const release = Promise.withResolvers<void>();
    const arrived = Promise.withResolvers<void>();
    t.handle(async () => {
      arrived.resolve();
      await release.promise;
      return new Response("last words\n");
    });
    const idle = await Client.open(t.port);
    const busy = await Client.open(t.port);
    try {
      await busy.send(get("/busy"));
      await arrived.promise;
      await eventually(() => t.guard.open === 2, "both accepted");
      const closing = t.guard.close(10_000);
      assert.equal(await idle.rest(), "", "the idle connection closed at once");
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port: t.port }),
        Deno.errors.ConnectionRefused,
      );
      release.resolve();
      const answer = await busy.response();
      assert.equal(answer.body, "last words\n");
      await closing;
      assert.equal(t.guard.open, 0);
    } finally {
      release.resolve();
      idle.close();
      busy.close();
    }
  });
});

Deno.test("guard: close's timeout ends the responses that do not finish", async () => {
  await withGuard({}, async (t) => {
    const arrived = Promise.withResolvers<void>();
    const never = Promise.withResolvers<Response>();
    t.handle(() => {
      arrived.resolve();
      return never.promise;
    });
    const busy = await Client.open(t.port);
    try {
      await busy.send(get("/forever"));
      await arrived.promise;
      const started = performance.now();
      await t.guard.close(200);
      // (Some slack: a timer's clock is not performance.now's.)
      assert.ok(performance.now() - started >= 190, "the response had its time");
      assert.equal(await busy.rest(), "", "then its connection was closed");
    } finally {
      never.resolve(new Response("too late\n"));
      busy.close();
    }
  });
});
