/**
 * Hostile HTTP clients over real sockets, one regression test per problem
 * of the HTTP front end's security review (issue 14): Host changing the
 * path, HTTP/1.1 without Host, a declared body trickled to hold a slot,
 * request smuggling shapes, HTTP/2 prior knowledge, a trickled head,
 * refusals missing from the log and the metrics, descriptors per
 * connection, and an aborted download logged as the whole file.
 *
 * Every wait is on an event (an answer, a close, a counter, a log record),
 * bounded so that a server that never does it fails the test instead of
 * hanging it; only the trickles are timed, because timing is what they are.
 */

import assert from "node:assert/strict";
import type { RequestRecord } from "../../server.ts";
import {
  eventually,
  openDescriptors,
  seededBytes,
  type TestServer,
  withServer,
} from "../helpers.ts";

const MiB = 1024 * 1024;
/** How long a test waits for the server to answer or close before it fails. */
const SAFETY_MS = 15_000;

const tree = {
  "tiny.txt": "tiny file\n",
  "secret.txt": "SECRET CONTENTS\n",
  "dir/inner.txt": "inner\n",
};

/** One HTTP answer read off a raw socket. */
interface Answer {
  status: number;
  /** The status line and fields, as received. */
  head: string;
  body: Uint8Array;
}

function httpPort(server: TestServer): number {
  return server.server.httpAddr!.port;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

async function connect(server: TestServer): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: httpPort(server) });
}

/**
 * Everything the server sends until it closes the connection (end of
 * stream or reset). Fails when it has not closed after {@linkcode SAFETY_MS}.
 */
async function readUntilClosed(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, SAFETY_MS);
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      for (const byte of buffer.subarray(0, n)) chunks.push(byte);
    }
  } catch {
    // a reset also ends it
  } finally {
    clearTimeout(timer);
  }
  assert.ok(!timedOut, `the server kept the connection open for ${SAFETY_MS} ms`);
  return Uint8Array.from(chunks);
}

/** The answers in `bytes`, one after another (each body by its Content-Length). */
function parseAnswers(bytes: Uint8Array): Answer[] {
  const text = String.fromCharCode(...bytes); // latin-1: one character per byte
  const answers: Answer[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf("\r\n\r\n", at);
    assert.ok(end !== -1, `an incomplete answer: ${JSON.stringify(text.slice(at, at + 200))}`);
    const head = text.slice(at, end);
    const status = /^HTTP\/1\.[01] (\d{3}) /.exec(head);
    assert.ok(status, `not an HTTP answer: ${JSON.stringify(head.slice(0, 200))}`);
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    answers.push({
      status: Number(status[1]),
      head,
      body: bytes.slice(end + 4, end + 4 + length),
    });
    at = end + 4 + length;
  }
  return answers;
}

/** Sends `request` on a new connection; the answers the server gave before it closed. */
async function exchange(server: TestServer, request: string): Promise<Answer[]> {
  const conn = await connect(server);
  try {
    await conn.write(Uint8Array.from(request, (char) => char.charCodeAt(0)));
    return parseAnswers(await readUntilClosed(conn));
  } finally {
    closeQuietly(conn);
  }
}

function text(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/**
 * Writes `bytes` one piece every `intervalMs` until they are all sent,
 * `stop()` says so, or a write fails (the server closed). Resolves to how
 * many pieces went out and whether a write failed.
 */
async function trickle(
  conn: Deno.Conn,
  pieces: Uint8Array[],
  intervalMs: number,
  stop: () => boolean,
): Promise<{ sent: number; failed: boolean }> {
  let sent = 0;
  for (const piece of pieces) {
    if (stop()) break;
    try {
      await conn.write(piece);
    } catch {
      return { sent, failed: true };
    }
    sent++;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  return { sent, failed: false };
}

function bytesOf(text: string): Uint8Array[] {
  return Array.from(text, (char) => Uint8Array.of(char.charCodeAt(0)));
}

Deno.test("Host never changes the path: Host: x/- is not /-/stats, Host: x# is not the root", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const stats = await exchange(
      server,
      "GET /stats HTTP/1.1\r\nHost: x/-\r\nConnection: close\r\n\r\n",
    );
    assert.equal(stats.length, 1);
    assert.ok([400, 404].includes(stats[0].status), `GET /stats with Host: x/-: ${stats[0].head}`);
    assert.ok(!text(stats[0].body).includes("uptimeMs"), "not the stats page");

    const tiny = await exchange(
      server,
      "GET /tiny.txt HTTP/1.1\r\nHost: x#\r\nConnection: close\r\n\r\n",
    );
    assert.equal(tiny.length, 1);
    assert.ok([400, 200].includes(tiny[0].status), `GET /tiny.txt with Host: x#: ${tiny[0].head}`);
    if (tiny[0].status === 200) assert.equal(text(tiny[0].body), "tiny file\n");
    assert.ok(!/<html|tiny\.txt<\/a>|"entries"/i.test(text(tiny[0].body)), "not a listing");

    // An absolute-form target: its authority is ignored, the path is its own.
    const absolute = await exchange(
      server,
      "GET http://evil/-/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.equal(absolute[0].status, 200);
    assert.ok(text(absolute[0].body).includes("uptimeMs"), "the path of the target is /-/stats");
    const evilAuthority = await exchange(
      server,
      "GET http://x/-/tiny.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.equal(evilAuthority[0].status, 404, "/-/tiny.txt is not the file tiny.txt");
  });
});

Deno.test("HTTP/1.1 without Host is 400 and the connection closes; HTTP/1.0 without Host is served", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const answers = await exchange(
      server,
      "GET /tiny.txt HTTP/1.1\r\n\r\nGET /tiny.txt HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert.deepEqual(answers.map((answer) => answer.status), [400]);
    assert.match(answers[0].head, /\r\nConnection: close/i);

    const old = await exchange(server, "GET /tiny.txt HTTP/1.0\r\n\r\n");
    assert.deepEqual(old.map((answer) => answer.status), [200]);
    assert.equal(text(old[0].body), "tiny file\n");
  });
});

Deno.test("a declared body trickled a byte at a time is refused at once (413) and cannot hold its slot", async () => {
  const records: RequestRecord[] = [];
  // An idle timeout far longer than the waits below: if the connection
  // ends while the trickle goes on, the refusal ended it, not the timeout.
  await withServer(tree, {
    httpPort: 0,
    idleTimeoutMs: 60_000,
    onRequest: (record) => records.push(record),
  }, async (server) => {
    const conn = await connect(server);
    let done = false;
    try {
      await conn.write(new TextEncoder().encode(
        "GET /tiny.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
      ));
      const trickling = trickle(conn, bytesOf("\n".repeat(200)), 200, () => done);
      const answers = parseAnswers(await readUntilClosed(conn));
      assert.deepEqual(answers.map((answer) => answer.status), [413]);
      assert.match(answers[0].head, /\r\nConnection: close/i);
      // The server lets go of the connection while the client still sends.
      await eventually(
        async () => (await server.server.stats()).protocols.http.connections === 0,
        "the refused connection closed by the server",
      );
      done = true;
      const { sent } = await trickling;
      assert.ok(sent < 200, "the trickle outlived the connection's slot");
      assert.deepEqual(records.map((record) => record.status), [413]);
    } finally {
      done = true;
      closeQuietly(conn);
    }
  });
});

Deno.test("request smuggling shapes get exactly one answer, a refusal, and the connection closes", async () => {
  const secret = "GET /secret.txt HTTP/1.1\r\nHost: a\r\n\r\n";
  const shapes: [string, string, number][] = [
    [
      "CL.TE",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "0\r\n\r\n" + secret,
      400,
    ],
    [
      "TE.CL",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n" +
      `${secret.length.toString(16)}\r\n${secret}\r\n0\r\n\r\n`,
      400,
    ],
    [
      "CL.CL, 0 then the smuggled request's length",
      `GET /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: ${secret.length}\r\n\r\n` +
      secret,
      400,
    ],
    [
      "CL.CL, the smuggled request's length then 0",
      `GET /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: ${secret.length}\r\nContent-Length: 0\r\n\r\n` +
      secret,
      400,
    ],
    [
      "CL as a list",
      `GET /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 0, ${secret.length}\r\n\r\n` + secret,
      400,
    ],
    [
      "a body on a GET",
      `GET /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: ${secret.length}\r\n\r\n` + secret,
      413,
    ],
    [
      "TE with a space before the colon",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + secret,
      400,
    ],
    [
      "TE folded",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" +
      secret,
      400,
    ],
    [
      "TE after a tab",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n" + secret,
      400,
    ],
    [
      "TE chunked, identity",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" +
      secret,
      400,
    ],
    [
      "a bare CR before the TE",
      "GET /tiny.txt HTTP/1.1\r\nHost: a\rTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + secret,
      400,
    ],
    [
      "POST with a body",
      `POST /tiny.txt HTTP/1.1\r\nHost: a\r\nContent-Length: ${secret.length}\r\n\r\n` + secret,
      405,
    ],
  ];
  const records: RequestRecord[] = [];
  await withServer(
    tree,
    { httpPort: 0, onRequest: (record) => records.push(record) },
    async (server) => {
      for (const [shape, request, status] of shapes) {
        const answers = await exchange(server, request);
        assert.deepEqual(answers.map((answer) => answer.status), [status], shape);
        assert.match(answers[0].head, /\r\nConnection: close/i, shape);
        assert.ok(!text(answers[0].body).includes("SECRET"), shape);
      }
      // Each connection's one request was logged (once its connection ended),
      // and nothing else: the smuggled request was never read as one.
      await eventually(() => records.length >= shapes.length, "a log record per connection");
      assert.deepEqual(
        records.map((record) => record.status),
        shapes.map(([, , status]) => status),
      );
      assert.ok(records.every((record) => record.path !== "secret.txt"));
      assert.equal((await server.server.stats()).requests, shapes.length);
    },
  );
});

Deno.test("HTTP/2 prior knowledge (the connection preface) gets 505 and close", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    // The preface, then an HTTP/2 SETTINGS frame, as `curl --http2-prior-knowledge` sends.
    const settings = "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    const answers = await exchange(server, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings);
    assert.deepEqual(answers.map((answer) => answer.status), [505]);
    assert.match(answers[0].head, /\r\nConnection: close/i);
  });
});

Deno.test("a head past 8 KiB is 431 and close, whether it ends or not", async () => {
  await withServer(tree, { httpPort: 0, idleTimeoutMs: 60_000 }, async (server) => {
    const padding = `X-Pad: ${"p".repeat(9000)}\r\n`;
    // Without an end: refused once the bound is passed, not at the idle timeout.
    const endless = await exchange(server, `GET /tiny.txt HTTP/1.1\r\nHost: t\r\n${padding}`);
    assert.deepEqual(endless.map((answer) => answer.status), [431]);
    const whole = await exchange(server, `GET /tiny.txt HTTP/1.1\r\nHost: t\r\n${padding}\r\n`);
    assert.deepEqual(whole.map((answer) => answer.status), [431]);
    const fields = Array.from({ length: 101 }, (_, i) => `X-${i}: ${i}\r\n`).join("");
    const many = await exchange(server, `GET /tiny.txt HTTP/1.1\r\nHost: t\r\n${fields}\r\n`);
    assert.deepEqual(many.map((answer) => answer.status), [431]);
  });
});

Deno.test("a head trickled a byte every 100 ms is cut with 408 at the idle timeout", async () => {
  await withServer(tree, { httpPort: 0, idleTimeoutMs: 1000 }, async (server) => {
    // Sent whole, this head would be served: 60 bytes at 100 ms take 6 s.
    const head = "GET /tiny.txt HTTP/1.1\r\nHost: t\r\nX-Padding: " + "p".repeat(12) + "\r\n\r\n";
    assert.ok(head.length >= 60);
    const conn = await connect(server);
    let done = false;
    try {
      const trickling = trickle(conn, bytesOf(head), 100, () => done);
      const answers = parseAnswers(await readUntilClosed(conn));
      done = true;
      const { sent } = await trickling;
      assert.deepEqual(answers.map((answer) => answer.status), [408]);
      assert.ok(sent < head.length, `408 only after the whole head (${sent} bytes) was sent`);
    } finally {
      done = true;
      closeQuietly(conn);
    }
  });
});

Deno.test("stray empty lines between requests do not restart the idle timeout", async () => {
  await withServer(tree, { httpPort: 0, idleTimeoutMs: 1000 }, async (server) => {
    const conn = await connect(server);
    let done = false;
    try {
      // A first request, answered, on a connection kept alive.
      await conn.write(new TextEncoder().encode("GET /tiny.txt HTTP/1.1\r\nHost: t\r\n\r\n"));
      const first = new Uint8Array(4096);
      let got = "";
      while (!got.endsWith("tiny file\n")) {
        const n = await conn.read(first);
        assert.ok(n !== null, "the first answer");
        got += text(first.subarray(0, n));
      }
      assert.match(got, /^HTTP\/1\.1 200 /);
      // Then CRLF after CRLF, 100 ms apart: 50 of them would take 5 s.
      const pieces = Array.from({ length: 50 }, () => Uint8Array.of(0x0d, 0x0a));
      const trickling = trickle(conn, pieces, 100, () => done);
      const rest = parseAnswers(await readUntilClosed(conn));
      done = true;
      const { sent } = await trickling;
      assert.ok(sent < 50, "the connection outlived the idle timeout");
      assert.ok(
        rest.every((answer) => answer.status === 408),
        `nothing but a 408: ${rest.map((answer) => answer.status)}`,
      );
    } finally {
      done = true;
      closeQuietly(conn);
    }
  });
});

Deno.test("a refused head is in the access log and in /-/metrics as a request with outcome 400", async () => {
  const records: RequestRecord[] = [];
  await withServer(
    tree,
    { httpPort: 0, onRequest: (record) => records.push(record) },
    async (server) => {
      const refused = await exchange(server, "GET /tiny.txt HTTP/1.1\r\nHost : t\r\n\r\n");
      assert.deepEqual(refused.map((answer) => answer.status), [400]);
      await eventually(() => records.length === 1, "the refusal's access log record");
      assert.equal(records[0].protocol, "http");
      assert.equal(records[0].status, 400);
      assert.match(records[0].client, /^127\.0\.0\.1:\d+$/);

      const metrics = await exchange(
        server,
        "GET /-/metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
      );
      assert.equal(metrics[0].status, 200);
      assert.match(
        text(metrics[0].body),
        /^tcpcache_requests_total\{protocol="http",outcome="400"\} 1$/m,
      );
      assert.equal((await server.server.stats()).errors["400"], 1);
    },
  );
});

Deno.test("one descriptor per HTTP connection: 50 idle connections add 50 on each side", async () => {
  await withServer(tree, { httpPort: 0, idleTimeoutMs: 60_000 }, async (server) => {
    // One exchange first, so that the server's descriptors are in their steady state.
    assert.equal((await exchange(server, "GET /tiny.txt HTTP/1.0\r\n\r\n"))[0].status, 200);
    await eventually(
      async () => (await server.server.stats()).protocols.http.connections === 0,
      "warm-up closed",
    );
    const before = openDescriptors();
    const conns: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 50; i++) conns.push(await connect(server));
      await eventually(
        async () => (await server.server.stats()).protocols.http.connections === 50,
        "50 connections accepted",
      );
      const added = openDescriptors() - before;
      assert.equal(added, 100, `50 client sockets + 50 server sockets, got ${added} descriptors`);
    } finally {
      for (const conn of conns) closeQuietly(conn);
    }
    await eventually(
      async () => (await server.server.stats()).protocols.http.connections === 0,
      "all closed",
    );
    await eventually(() => openDescriptors() === before, "descriptors back to their count");
  });
});

Deno.test("an aborted download is logged with the bytes the client took, not the file's size", async () => {
  const size = 70 * MiB;
  const records: RequestRecord[] = [];
  await withServer(
    { "huge.bin": seededBytes(size, 7) },
    { httpPort: 0, onRequest: (record) => records.push(record) },
    async (server) => {
      const conn = await connect(server);
      let received = 0;
      try {
        await conn.write(new TextEncoder().encode("GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
        const buffer = new Uint8Array(64 * 1024);
        while (received < MiB) {
          const n = await conn.read(buffer);
          assert.ok(n !== null, "the download ended before 1 MiB");
          received += n;
        }
      } finally {
        closeQuietly(conn);
      }
      await eventually(() => records.length === 1, "the aborted download's log record");
      const [record] = records;
      assert.equal(record.path, "huge.bin");
      // What the kernel's socket buffers took beyond the client's reads is
      // a few MiB at most; the whole file is 70.
      assert.ok(
        record.bytes >= received - 4096 && record.bytes < size / 4,
        `logged ${record.bytes} bytes; the client read ${received} of ${size}`,
      );
      assert.ok((await server.server.stats()).bytesSent < size / 4, "bytes counted as sent");
    },
  );
});
