/**
 * The change watch under load, over real sockets: a file rewritten (by this
 * process, not the server's) after its client received the previous answer
 * is never answered with the old bytes, while many clients of both
 * protocols, and pipelining ones, keep the server's turns full. This guards
 * the one check per turn of the event loop (origin/change_watch.ts): a
 * check that stood past its turn (a timer instead of a microtask) gave
 * about a thousand stale answers here.
 */

import assert from "node:assert/strict";

const SERVER = new URL("../../server.ts", import.meta.url).pathname;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Buffered reads from one connection. */
class Reader {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(0);

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The bytes up to and including the first `separator`. */
  async until(separator: string): Promise<string> {
    const bytes = encoder.encode(separator);
    while (true) {
      const at = indexOf(this.#buffer, bytes);
      if (at >= 0) return decoder.decode(this.#take(at + bytes.length));
      await this.#more();
    }
  }

  /** Exactly `length` bytes. */
  async exactly(length: number): Promise<string> {
    while (this.#buffer.length < length) await this.#more();
    return decoder.decode(this.#take(length));
  }

  #take(length: number): Uint8Array {
    const taken = this.#buffer.slice(0, length);
    this.#buffer = this.#buffer.slice(length);
    return taken;
  }

  async #more(): Promise<void> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("the server closed the connection");
    const grown = new Uint8Array(this.#buffer.length + n);
    grown.set(this.#buffer);
    grown.set(chunk.subarray(0, n), this.#buffer.length);
    this.#buffer = grown;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

async function tcpGet(conn: Deno.Conn, reader: Reader, path: string): Promise<string> {
  await conn.write(encoder.encode(`GET ${path}\n`));
  const header = await reader.until("\n");
  const length = /^OK ([0-9]+)/.exec(header);
  if (!length) throw new Error(`unexpected answer: ${header}`);
  return await reader.exactly(Number(length[1]));
}

async function httpBody(reader: Reader): Promise<string> {
  const head = await reader.until("\r\n\r\n");
  const length = /content-length: ([0-9]+)/i.exec(head);
  if (!/^HTTP\/1\.1 200 /.test(head) || !length) throw new Error(`unexpected answer: ${head}`);
  return await reader.exactly(Number(length[1]));
}

/** Version `round` of client `id`'s file: its length changes too. */
function version(id: number, round: number): string {
  return `${id}:${round}:${"x".repeat(100 + (round % 97))}`;
}

Deno.test("change watch under load: a file changed after its client's last answer is never served old", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "tcpcache-watch-load-" }));
  const dir = `${root}/files`;
  await Deno.mkdir(dir);
  const clients = 24;
  const rounds = 60;
  for (let id = 0; id < clients; id++) Deno.writeTextFileSync(`${dir}/f${id}`, version(id, 0));
  Deno.writeTextFileSync(`${dir}/noise`, "noise".repeat(100));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--dir", dir, "--cache-dir", `${root}/cache`, "--quiet"]
      .concat(["--port", "0", "--http-port", "0"]),
    stdout: "piped",
    stderr: "null",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let ready = "";
    while (!/listening on .*\n/.test(ready)) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`the server exited before it was ready: ${ready}`);
      ready += value;
    }
    const tcpPort = Number(/listening on 127\.0\.0\.1:([0-9]+)/.exec(ready)![1]);
    const httpPort = Number(/HTTP on http:\/\/127\.0\.0\.1:([0-9]+)\//.exec(ready)![1]);
    let stop = false;
    // Pipelining HTTP clients: eight requests per write, so turns carry many requests.
    const noise = Array.from({ length: 6 }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: httpPort });
      const reader = new Reader(conn);
      const burst = encoder.encode("GET /noise HTTP/1.1\r\nHost: t\r\n\r\n".repeat(8));
      try {
        while (!stop) {
          await conn.write(burst);
          for (let k = 0; k < 8; k++) await httpBody(reader);
        }
      } finally {
        conn.close();
      }
    });
    const stale: string[] = [];
    let answers = 0;
    const workers = Array.from({ length: clients }, async (_, id) => {
      const http = id % 2 === 0;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: http ? httpPort : tcpPort });
      const reader = new Reader(conn);
      const get = async () => {
        if (!http) return await tcpGet(conn, reader, `f${id}`);
        await conn.write(encoder.encode(`GET /f${id} HTTP/1.1\r\nHost: t\r\n\r\n`));
        return await httpBody(reader);
      };
      try {
        for (let round = 1; round <= rounds; round++) {
          // The previous answer is in: a change now must be seen by the next request.
          Deno.writeTextFileSync(`${dir}/f${id}`, version(id, round));
          for (let k = 0; k < 3; k++) {
            const body = await get();
            answers++;
            if (body !== version(id, round)) {
              stale.push(`f${id} round ${round}: ${body.slice(0, 10)}`);
            }
          }
        }
      } finally {
        conn.close();
      }
    });
    await Promise.all(workers);
    stop = true;
    await Promise.all(noise);
    assert.equal(answers, clients * rounds * 3);
    assert.deepEqual(stale.slice(0, 5), [], `${stale.length} stale answers`);
    // And the watch was on: hits were trusted, not stat'ed.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: tcpPort });
    try {
      const reader = new Reader(conn);
      await conn.write(encoder.encode("STATS\n"));
      const header = await reader.until("\n");
      const stats = JSON.parse(await reader.exactly(Number(/^OK ([0-9]+)/.exec(header)![1])));
      assert.equal(stats.freshness, "watch");
      assert.ok(stats.hits > clients * rounds, `hits: ${stats.hits}`);
    } finally {
      conn.close();
    }
  } finally {
    child.kill();
    await child.status;
    await lines.cancel().catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
});
