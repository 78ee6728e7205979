/**
 * Limits over real sockets: stalled readers, open-file bounds, descriptor
 * exhaustion, pipelining floods and backpressure, shutdown on signals.
 */

import assert from "node:assert/strict";
import { connect } from "../../client.ts";
import { CACHE_MARKER, JOURNAL_FILE } from "../../cache.ts";
import {
  eventually,
  openDescriptors,
  RawConnection,
  seededBytes,
  sha256,
  withServer,
  writeTree,
} from "../helpers.ts";

const MiB = 1024 * 1024;
const SERVER = new URL("../../server.ts", import.meta.url).pathname;

Deno.test("a client that stops reading is dropped after the send timeout, freeing its file", async () => {
  const big = seededBytes(24 * MiB, 1);
  await withServer(
    { "big.bin": big, "small.txt": "small" },
    { sendTimeoutMs: 300 },
    async ({ port, server }) => {
      const warm = await connect({ port });
      await warm.get("big.bin");
      warm.close();
      const baseline = openDescriptors();
      const stalled = await RawConnection.open(port);
      try {
        await stalled.send("GET big.bin\n");
        await stalled.reader.readLine(1024);
        // Others are served while the stalled transfer waits.
        const fast = await connect({ port });
        assert.equal(new TextDecoder().decode((await fast.get("small.txt")).bytes), "small");
        fast.close();
        await eventually(async () => (await server.stats()).sendTimeouts === 1, "the send timeout");
        await eventually(
          async () => (await server.stats()).connections.open === 0,
          "the connection to end",
        );
        stalled.close();
        // The cache file and the socket are closed on the server's side.
        await eventually(() => openDescriptors() <= baseline, "descriptors to be freed");
      } finally {
        stalled.close();
      }
    },
  );
});

Deno.test("one open file allowed: concurrent hits, misses and bypasses still all complete", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 8; i++) files[`f${i}.bin`] = seededBytes(100_000 * (i + 1), i + 1);
  await withServer(files, { maxOpenFiles: 1, cacheSize: 2 * MiB }, async ({ port }) => {
    const clients = await Promise.all(Array.from({ length: 24 }, () => connect({ port })));
    try {
      const results = await Promise.all(clients.map((client, i) => client.get(`f${i % 8}.bin`)));
      results.forEach((result, i) =>
        assert.equal(sha256(result.bytes!), sha256(files[`f${i % 8}.bin`]))
      );
      assert.ok(results.some((result) => result.cache === "bypass" || result.cache === "miss"));
    } finally {
      clients.forEach((client) => client.close());
    }
  });
});

Deno.test("a million pipelined PINGs are answered, in order, with bounded buffering", async () => {
  await withServer({}, {}, async ({ port, server }) => {
    const conn = await RawConnection.open(port);
    try {
      const count = 1_000_000;
      const batch = new TextEncoder().encode("PING\n".repeat(10_000));
      const writing = (async () => {
        for (let sent = 0; sent < count; sent += 10_000) await conn.send(batch);
      })();
      const expected = new TextEncoder().encode("OK 0\n");
      const before = Deno.memoryUsage().rss;
      let peakRss = before;
      let position = 0;
      await conn.reader.readBody(count * expected.length, (chunk) => {
        for (let i = 0; i < chunk.length; i++, position++) {
          if (chunk[i] !== expected[position % expected.length]) {
            assert.fail(`answer ${Math.floor(position / expected.length)} is not OK 0`);
          }
        }
        peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
      });
      await writing;
      assert.equal((await server.stats()).requests, count);
      // The server never queues answers without bound: the process grows by far
      // less than the 5 MB of answers (a generous bound, as RSS is coarse).
      assert.ok(peakRss - before < 64 * MiB, `grew by ${(peakRss - before) / MiB} MiB`);
    } finally {
      conn.close();
    }
  });
});

Deno.test("a client that pipelines without reading gets backpressure, then every answer", async () => {
  const file = seededBytes(4096, 7);
  await withServer({ "f.bin": file }, {}, async ({ port, server }) => {
    const conn = await RawConnection.open(port);
    try {
      const count = 20_000; // about 90 MB of answers: far more than socket buffers hold
      const request = new TextEncoder().encode("GET f.bin\n".repeat(1000));
      const writing = (async () => {
        for (let sent = 0; sent < count; sent += 1000) await conn.send(request);
      })();
      // Without reading, the server stops: it answers only what the buffers hold.
      let last = -1;
      await eventually(async () => {
        const now = (await server.stats()).requests;
        const settled = now === last && now > 0;
        last = now;
        if (!settled) await new Promise((resolve) => setTimeout(resolve, 50));
        return settled;
      }, "the server to stop reading");
      assert.ok(last < count, `the server answered all ${count} without being read`);
      for (let i = 0; i < count; i++) {
        const response = await conn.response();
        if (i % 1000 === 0) assert.equal(sha256(response.body), sha256(file));
        else assert.equal(response.body.length, file.length);
      }
      await writing;
      assert.equal((await server.stats()).requests, count);
    } finally {
      conn.close();
    }
  });
});

/** A server in a child process, for limits that apply to a whole process. */
class ServerProcess {
  readonly child: Deno.ChildProcess;
  readonly port: number;
  readonly #lines: ReadableStreamDefaultReader<string>;

  /** The HTTP port, when the server was started with `--http-port`. */
  readonly httpPort?: number;

  private constructor(
    child: Deno.ChildProcess,
    ready: string,
    lines: ReadableStreamDefaultReader<string>,
  ) {
    this.child = child;
    this.port = Number(/listening on 127\.0\.0\.1:([0-9]+)/.exec(ready)![1]);
    const http = /HTTP on http:\/\/127\.0\.0\.1:([0-9]+)\//.exec(ready);
    if (http) this.httpPort = Number(http[1]);
    this.#lines = lines;
  }

  /** Starts `server.ts` with `args` (through `prefix`, e.g. prlimit) and waits for its ready line. */
  static async start(args: string[], prefix: string[] = []): Promise<ServerProcess> {
    const deno = [Deno.execPath(), "run", "--allow-net", "--allow-read", "--allow-write", SERVER];
    // --quiet: nothing reads stdout past the ready line, and a full pipe would block.
    const command = [...prefix, ...deno, "--port", "0", "--quiet", ...args];
    const child = new Deno.Command(command[0], {
      args: command.slice(1),
      stdout: "piped",
      stderr: "null",
      env: { NO_COLOR: "1" },
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (true) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`server exited before it was ready: ${text}`);
      text += value;
      if (/listening on .*\n/.test(text)) return new ServerProcess(child, text, lines);
    }
  }

  /** Sends a signal and resolves to the exit status. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.child.kill(signal);
    const status = await this.child.status;
    await this.#lines.cancel();
    return status;
  }
}

Deno.test("out of file descriptors: the server sheds clients with 503 and keeps serving", async () => {
  const root = await Deno.makeTempDir();
  try {
    await writeTree(`${root}/files`, { "a.txt": "alpha" });
    const server = await ServerProcess.start(
      ["--dir", `${root}/files`, "--cache-dir", `${root}/cache`, "--max-connections", "1000"],
      ["prlimit", "--nofile=48:48"],
    );
    const conns: RawConnection[] = [];
    try {
      const answers = new Map<string, number>();
      for (let i = 0; i < 60; i++) {
        const conn = await RawConnection.open(server.port);
        conns.push(conn);
        await conn.send("PING\n");
        const response = await conn.response();
        const key = response.ok ? "OK" : `${response.code} ${response.message}`;
        answers.set(key, (answers.get(key) ?? 0) + 1);
        if (!response.ok) conn.close(); // as a client does once refused
      }
      assert.ok((answers.get("OK") ?? 0) > 5, JSON.stringify([...answers]));
      assert.ok(
        (answers.get("503 server busy: out of file descriptors") ?? 0) > 5,
        JSON.stringify([...answers]),
      );
      assert.equal([...answers.values()].reduce((a, b) => a + b), 60);
      for (const conn of conns) conn.close();
      conns.length = 0;
      // Descriptors freed: it serves again, files included.
      await eventually(async () => {
        const conn = await RawConnection.open(server.port);
        try {
          const response = await conn.request("GET a.txt");
          return response.ok && new TextDecoder().decode(response.body) === "alpha";
        } finally {
          conn.close();
        }
      }, "the server to serve again");
      assert.equal((await server.stop()).code, 0);
    } finally {
      for (const conn of conns) conn.close();
      try {
        server.child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("out of file descriptors over HTTP: 503, the process lives, both ports serve again", async () => {
  const root = await Deno.makeTempDir();
  const request = new TextEncoder().encode("GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
  /** The status of the answer to `request` on a new connection, which stays open. */
  const ask = async (port: number, held: Deno.Conn[]) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    held.push(conn);
    await conn.write(request);
    const buffer = new Uint8Array(4096);
    let text = "";
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return /^HTTP\/1\.1 ([0-9]{3})/.exec(text)?.[1] ?? `no answer: ${JSON.stringify(text)}`;
  };
  try {
    await writeTree(`${root}/files`, { "a.txt": "alpha" });
    const server = await ServerProcess.start(
      [
        ...["--dir", `${root}/files`, "--cache-dir", `${root}/cache`],
        ...["--http-port", "0", "--max-connections", "1000"],
      ],
      ["prlimit", "--nofile=48:48"],
    );
    const held: Deno.Conn[] = [];
    try {
      const answers = new Map<string, number>();
      for (let i = 0; i < 60; i++) {
        const status = await ask(server.httpPort!, held);
        answers.set(status, (answers.get(status) ?? 0) + 1);
        if (status !== "200") held.pop()!.close(); // as a client does once refused
      }
      assert.ok((answers.get("200") ?? 0) > 5, JSON.stringify([...answers]));
      assert.ok((answers.get("503") ?? 0) > 5, JSON.stringify([...answers]));
      for (const conn of held.splice(0)) conn.close();
      // Descriptors freed: both ports serve again, and the process never died.
      await eventually(async () => await ask(server.httpPort!, held) === "200", "HTTP again");
      const client = await connect({ port: server.port });
      try {
        assert.equal(new TextDecoder().decode((await client.get("a.txt")).bytes), "alpha");
      } finally {
        client.close();
      }
      for (const conn of held.splice(0)) conn.close();
      assert.equal((await server.stop()).code, 0);
    } finally {
      for (const conn of held) conn.close();
      try {
        server.child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("SIGTERM: transfers in progress finish, stalled ones are cut at the shutdown timeout, exit 0", async () => {
  const root = await Deno.makeTempDir();
  const big = seededBytes(16 * MiB, 3);
  try {
    await writeTree(`${root}/files`, { "big.bin": big });
    const args = [
      "--dir",
      `${root}/files`,
      "--cache-dir",
      `${root}/cache`,
      "--shutdown-timeout",
      "1",
    ];
    const server = await ServerProcess.start(args);
    const reading = await RawConnection.open(server.port);
    const stalled = await RawConnection.open(server.port);
    try {
      await reading.send("GET big.bin\n");
      await stalled.send("GET big.bin\n");
      await reading.reader.readLine(1024);
      await stalled.reader.readLine(1024);
      const exited = server.stop("SIGTERM");
      // The reading client gets every byte although the server is stopping.
      const body = new Uint8Array(big.length);
      let filled = 0;
      await reading.reader.readBody(big.length, (chunk) => {
        body.set(chunk, filled);
        filled += chunk.length;
      });
      assert.equal(sha256(body), sha256(big));
      // The stalled one holds the server only until the shutdown timeout.
      const status = await exited;
      assert.equal(status.code, 0);
      await assert.rejects(RawConnection.open(server.port), "no longer listening");
      // The cache directory is left for the next start to clean.
      assert.ok((await Deno.stat(`${root}/cache/${CACHE_MARKER}`)).isFile);
      const again = await ServerProcess.start(args);
      // The previous run's files are removed in the background, after the port opens.
      const names = () => [...Deno.readDirSync(`${root}/cache`)].map((e) => e.name).sort();
      for (let i = 0; i < 100 && names().length > 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.deepEqual(names(), [CACHE_MARKER, JOURNAL_FILE].sort());
      assert.equal((await again.stop("SIGINT")).code, 0);
    } finally {
      reading.close();
      stalled.close();
      try {
        server.child.kill("SIGKILL");
      } catch {
        // already exited
      }
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("--max-connections-per-address: one address past its share gets 503, others are served", async () => {
  await withServer(
    { "a.txt": "alpha" },
    { maxConnectionsPerAddress: 3, httpPort: 0 },
    async ({ port, server }) => {
      const held: RawConnection[] = [];
      try {
        for (let i = 0; i < 3; i++) {
          const conn = await RawConnection.open(port);
          held.push(conn);
          assert.ok((await conn.request("PING")).ok);
        }
        const refused = await RawConnection.open(port);
        const answer = await refused.response();
        assert.equal(answer.line, "ERR 503 server busy: too many connections from your address");
        assert.ok(await refused.closedByServer());
        refused.close();
        // HTTP counts its own connections: the same address is served there.
        const http = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/a.txt`);
        assert.equal(await http.text(), "alpha");
        held.pop()!.close();
        await eventually(async () => (await server.stats()).connections.open === 2, "one closed");
        const again = await RawConnection.open(port);
        assert.ok((await again.request("PING")).ok, "a freed place is usable again");
        again.close();
        assert.equal((await server.stats()).connections.rejected, 1);
      } finally {
        for (const conn of held) conn.close();
      }
    },
  );
});
