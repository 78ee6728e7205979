/**
 * A bare server of tcpcache's TCP protocol on `Deno.listen`: the ceiling for
 * any Deno server of that protocol on this machine. At start it reads every
 * file under `--dir` and builds its whole answer (`OK <len> size=<len>
 * offset=0 cache=hit\n` and the bytes) in memory; then it reads each request
 * line, takes the path from `GET <path>` and writes the pre-built answer.
 * Keep-alive and pipelining (every complete line in the buffer is answered
 * in turn); nothing else: no other command, no limits, no timeouts, no
 * counters, no logging.
 *
 *     deno run -A --unstable-net bench/reference/bare_tcp.ts --dir DIR [--port 0] [--workers 1]
 *
 * With `--workers N`, N threads accept on the same port (`SO_REUSEPORT`).
 * It prints `bare_tcp listening on 127.0.0.1:PORT` once they all accept.
 *
 * @module
 */

import { listen, loadFiles, serveOnWorkers } from "./bare_common.ts";

const encoder = new TextEncoder();
const NOT_FOUND = encoder.encode("ERR 404 not found\n");

function answer(body: Uint8Array): Uint8Array {
  const head = encoder.encode(`OK ${body.length} size=${body.length} offset=0 cache=hit\n`);
  const whole = new Uint8Array(head.length + body.length);
  whole.set(head);
  whole.set(body, head.length);
  return whole;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
}

/** Answers the requests of one connection until it closes. */
async function serve(conn: Deno.TcpConn, answers: Map<string, Uint8Array>): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  let end = 0;
  for (let n; end < buf.length && (n = await conn.read(buf.subarray(end))) !== null;) {
    end += n;
    // A view ending at the bytes read: indexOf would otherwise scan the stale rest.
    const read = buf.subarray(0, end);
    let start = 0;
    for (let lf; (lf = read.indexOf(10, start)) >= 0; start = lf + 1) {
      // `GET ` then the path; apply, not a spread (a spread iterates).
      const path = String.fromCharCode.apply(null, read.subarray(start + 4, lf) as never);
      await writeAll(conn, answers.get(path) ?? NOT_FOUND);
    }
    buf.copyWithin(0, start, end);
    end -= start;
  }
}

async function start(dir: string, port: number, reusePort: boolean): Promise<Deno.Listener> {
  const answers = new Map<string, Uint8Array>();
  for (const [path, body] of await loadFiles(dir)) answers.set(path.slice(1), answer(body));
  return listen(port, reusePort, (conn) => serve(conn, answers));
}

if (import.meta.main) await serveOnWorkers("bare_tcp", import.meta.url, start);
