/**
 * `deno task bench:listing`: what one listing of a huge directory costs the
 * server. A directory of N empty files (100,000 by default) is served by
 * server.ts in its own process; the whole directory is listed over the TCP
 * protocol (following `next` from page to page, so an older server that
 * answers in one piece is measured the same way) while another connection
 * sends `PING` every 5 ms. Reported: the listing's time and bytes, the
 * server process's resident memory before and at its peak during the
 * listing, and the PING round trips meanwhile.
 *
 *     deno task bench:listing [--files N] [--listers N] [--limit N] [--server PATH/server.ts]
 *
 * `--listers` lists the directory on that many connections at once;
 * `--limit` asks for pages of that many entries; `--server` runs another
 * checkout's server.ts (a before/after comparison).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { ByteReader, writeAll } from "../util/byte_reader.ts";
import { parseResponseHeader, percentEncode } from "../protocol.ts";
import { memoryKiB, REPO } from "./processes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One request/answer connection to the server. */
class Line {
  #conn: Deno.Conn;
  #reader: ByteReader;
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
  }

  async request(line: string): Promise<Uint8Array> {
    await writeAll(this.#conn, encoder.encode(`${line}\n`));
    const head = await this.#reader.readLine(65536);
    if (head === null) throw new Error("the server closed the connection");
    const header = parseResponseHeader(decoder.decode(head));
    if (!header.ok) throw new Error(`${line}: ERR ${header.code} ${header.message}`);
    const body = new Uint8Array(header.length);
    let filled = 0;
    await this.#reader.readBody(header.length, (chunk) => {
      body.set(chunk, filled);
      filled += chunk.length;
    });
    return body;
  }

  close(): void {
    this.#conn.close();
  }
}

/** Resets the process's peak resident size (VmHWM) to its current one. */
function resetPeak(pid: number): void {
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** What one run measured. */
interface Figures {
  entries: number;
  pages: number;
  bytes: number;
  ms: number;
  rssBefore: number;
  rssPeak: number;
  pings: number[];
}

/** Lists `dir` whole on `line`, page after page, following `next`. */
async function listWhole(line: Line, limit: string | undefined) {
  let [bytes, entries, pages] = [0, 0, 0];
  let next: string | undefined;
  do {
    const after = next === undefined ? "" : ` ${percentEncode(next)}`;
    const bound = limit ? ` ${limit}` : "";
    // The bare request first: what an older server understands too.
    const request = after || bound ? `FILES big${after || " ."}${bound}` : "FILES big";
    const body = await line.request(request);
    bytes += body.length;
    const answer = JSON.parse(decoder.decode(body)) as { entries: unknown[]; next?: string };
    entries += answer.entries.length;
    next = answer.next;
    pages++;
  } while (next !== undefined);
  return { bytes, entries, pages };
}

/**
 * `listers` clients list the directory whole at once while another PINGs
 * every 5 ms, from a thread of its own: the listers' parsing of pages on
 * this one would otherwise delay the PINGs' answers and be counted as the
 * server's.
 */
async function measure(port: number, pid: number, listers: number, limit?: string) {
  const lines = await Promise.all(
    Array.from({ length: listers }, async () => new Line(await Deno.connect({ port }))),
  );
  const pinger = new Worker(import.meta.url, { type: "module", name: "pinger" });
  const ready = Promise.withResolvers<void>();
  const answered = Promise.withResolvers<number[]>();
  pinger.onmessage = (event: MessageEvent<number[] | "ready">) => {
    if (event.data === "ready") ready.resolve();
    else answered.resolve(event.data);
  };
  pinger.postMessage(port);
  await ready.promise;
  const rssBefore = (await memoryKiB([pid])).rss;
  resetPeak(pid);
  const started = performance.now();
  const lists = await Promise.all(lines.map((line) => listWhole(line, limit)));
  const ms = performance.now() - started;
  pinger.postMessage("stop");
  const pings = await answered.promise;
  pinger.terminate();
  const rssPeak = (await memoryKiB([pid])).hwm;
  for (const line of lines) line.close();
  const { bytes, entries, pages } = lists[0];
  return { entries, pages, bytes, ms, rssBefore, rssPeak, pings } satisfies Figures;
}

function report(figures: Figures, listers: number): string {
  const { entries, pages, bytes, ms, rssBefore, rssPeak, pings } = figures;
  pings.sort((a, b) => a - b);
  const at = (q: number) => pings[Math.min(pings.length - 1, Math.floor(q * pings.length))];
  const mib = (kib: number) => (kib / 1024).toFixed(1);
  return [
    `${listers} lister(s), each: ${entries} entries in ${pages} page(s), ` +
    `${(bytes / 1e6).toFixed(2)} MB of JSON; all done in ${(ms / 1000).toFixed(2)} s`,
    `server RSS: ${mib(rssBefore)} MiB before, peak ${mib(rssPeak)} MiB ` +
    `(+${mib(rssPeak - rssBefore)})`,
    `PING meanwhile: ${pings.length} answered, median ${at(0.5).toFixed(1)} ms, ` +
    `p99 ${at(0.99).toFixed(1)} ms, max ${pings[pings.length - 1].toFixed(1)} ms`,
  ].join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      files: { type: "string", default: "100000" },
      server: { type: "string", default: `${REPO}/server.ts` },
      limit: { type: "string" },
      listers: { type: "string", default: "1" },
    },
  });
  const count = Number(values.files);
  const root = Deno.makeTempDirSync({ prefix: "tcpcache-listing-" });
  const dir = `${root}/files/big`;
  Deno.mkdirSync(dir, { recursive: true });
  for (let i = 0; i < count; i++) {
    Deno.writeFileSync(`${dir}/file-${String(i).padStart(6, "0")}.txt`, new Uint8Array());
  }
  // A directory at rest, as a big one being listed usually is: one changed
  // within the last seconds is read again for every page (directory_names.ts).
  const minuteAgo = new Date(Date.now() - 60_000);
  Deno.utimeSync(dir, minuteAgo, minuteAgo);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", values.server, "--port", "0", "--quiet"]
      .concat(["--dir", `${root}/files`, "--cache-dir", `${root}/cache`]),
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const port = await readPort(child.stdout);
    const listers = Number(values.listers);
    console.log(`server: ${values.server}`);
    console.log(report(await measure(port, child.pid, listers, values.limit), listers));
  } finally {
    child.kill("SIGTERM");
    await child.status;
    Deno.removeSync(root, { recursive: true });
  }
}

/** The port of the server's ready line; the rest of its output is drained. */
async function readPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the server ended before its ready line:\n${seen}`);
    seen += value;
    const match = /listening on [^ ]+:([0-9]+)/.exec(seen);
    if (match) {
      (async () => {
        while (!(await reader.read().catch(() => ({ done: true }))).done) { /* drain */ }
      })();
      return Number(match[1]);
    }
  }
}

/** The pinger's thread: PINGs `port` every 5 ms until told to stop, then posts the round trips. */
function pingFromWorker(): void {
  const scope = self as unknown as {
    postMessage(message: number[] | "ready"): void;
    onmessage: ((event: MessageEvent<number | "stop">) => void) | null;
  };
  let pinging = true;
  scope.onmessage = async (event) => {
    if (event.data === "stop") {
      pinging = false;
      return;
    }
    const line = new Line(await Deno.connect({ port: event.data }));
    await line.request("PING");
    scope.postMessage("ready");
    const pings: number[] = [];
    while (pinging) {
      const sent = performance.now();
      await line.request("PING");
      pings.push(performance.now() - sent);
      // A PING every 5 ms: a flood would take the CPU the listing needs.
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    line.close();
    scope.postMessage(pings);
  };
}

if (import.meta.main && "WorkerGlobalScope" in globalThis) pingFromWorker();
else if (import.meta.main) await main();
