/**
 * A bare HTTP/1.1 server on `Deno.listen`: the ceiling for any Deno HTTP
 * server on this machine. At start it reads every file under `--dir` and
 * builds its whole answer (status line, Content-Length, Content-Type, the
 * bytes) in memory; then it finds the end of each request head, takes the
 * path from the request line and writes the pre-built answer. Keep-alive,
 * pipelining (every complete head in the buffer is answered in turn) and
 * `Connection: close`; nothing else: no parsing beyond that, no limits, no
 * timeouts, no counters, no logging.
 *
 *     deno run -A --unstable-net bench/reference/bare_http.ts --dir DIR [--port 0] [--workers 1]
 *
 * With `--workers N`, N threads accept on the same port (`SO_REUSEPORT`).
 * It prints `bare_http listening on 127.0.0.1:PORT` once they all accept.
 *
 * @module
 */

import { listen, loadFiles, serveOnWorkers } from "./bare_common.ts";

const encoder = new TextEncoder();
const CLOSE = encoder.encode("\r\nconnection: close");
const NOT_FOUND = encoder.encode("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");

/** One file's answers: the keep-alive one, and the `Connection: close` one once asked for. */
interface Answers {
  body: Uint8Array;
  keepAlive: Uint8Array;
  close?: Uint8Array;
}

function answer(body: Uint8Array, close: boolean): Uint8Array {
  const head = encoder.encode(
    `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n` +
      `Content-Type: application/octet-stream\r\n${close ? "Connection: close\r\n" : ""}\r\n`,
  );
  const whole = new Uint8Array(head.length + body.length);
  whole.set(head);
  whole.set(body, head.length);
  return whole;
}

/** The index just past the head starting at `from` (its `\r\n\r\n`), or -1. */
function headEnd(buf: Uint8Array, from: number, to: number): number {
  // A view ending at `to`: indexOf would otherwise scan the stale rest of the buffer.
  const read = buf.subarray(0, to);
  for (let i = read.indexOf(10, from + 3); i >= 0; i = read.indexOf(10, i + 1)) {
    if (buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

/** Whether the head says `Connection: close` (as clients write it; case-insensitive). */
function wantsClose(buf: Uint8Array, from: number, to: number): boolean {
  outer: for (let i = from; i + CLOSE.length <= to; i++) {
    for (let j = 0; j < CLOSE.length; j++) {
      if ((buf[i + j] | (j > 1 ? 32 : 0)) !== CLOSE[j]) continue outer;
    }
    return true;
  }
  return false;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
}

/** Answers the requests of one connection until it closes (or asks to). */
async function serve(conn: Deno.TcpConn, answers: Map<string, Answers>): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  let end = 0;
  for (let n; end < buf.length && (n = await conn.read(buf.subarray(end))) !== null;) {
    end += n;
    let start = 0;
    for (let next; (next = headEnd(buf, start, end)) >= 0; start = next) {
      const space = buf.indexOf(32, start + 4);
      // apply, not a spread: a spread iterates, and cost this loop ~20% of its CPU.
      const target = buf.subarray(start + 4, space) as unknown as number[];
      const path = space < next ? String.fromCharCode.apply(null, target) : "";
      const close = wantsClose(buf, start, next);
      const found = answers.get(path);
      const bytes = !found
        ? NOT_FOUND
        : close
        ? (found.close ??= answer(found.body, true))
        : found.keepAlive;
      await writeAll(conn, bytes);
      if (close) return;
    }
    buf.copyWithin(0, start, end);
    end -= start;
  }
}

async function start(dir: string, port: number, reusePort: boolean): Promise<Deno.Listener> {
  const answers = new Map<string, Answers>();
  for (const [path, body] of await loadFiles(dir)) {
    answers.set(path, { body, keepAlive: answer(body, false) });
  }
  return listen(port, reusePort, (conn) => serve(conn, answers));
}

if (import.meta.main) await serveOnWorkers("bare_http", import.meta.url, start);
