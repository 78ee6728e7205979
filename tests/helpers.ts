/**
 * What the test suites share: temporary file trees, a server started on a
 * free port, and a raw socket that speaks the protocol byte by byte, plain
 * or over TLS with a token (see {@linkcode overTlsWithToken}).
 *
 * @module
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { ByteReader, writeAll } from "../util/byte_reader.ts";
import { parseResponseHeader } from "../protocol.ts";
import { type ServerHandle, type ServerOptions, startServer } from "../server.ts";
import { connect, type GetResult, type TcpCacheClient } from "../client.ts";
import { makeCertificates, type TestCertificates } from "./access/certs.ts";
import { fnv1a } from "../util/bytes_memo.ts";
import { CACHE_MARKER, type FillSource, JOURNAL_FILE } from "../cache.ts";

/**
 * How the helpers reach a server: plain TCP, or TLS (a private CA's
 * certificate) with an admin token presented on every connection.
 */
interface Transport {
  /** The server's TLS certificate and its token file. */
  server: Pick<ServerOptions, "tls" | "authTokens">;
  /** The CA to trust and the token to present. */
  client: { caCerts: string[]; token: string };
}

/** The token of the TLS transport (admin: the suites read STATS and LIST). */
export const TEST_TOKEN = "e2e-admin-token-0123456789abcdef";

let transport: Transport | undefined;
let certificates: Promise<TestCertificates> | undefined;

/**
 * Runs `test` with every server the helpers start serving TLS with a token,
 * and every connection they open (`RawConnection.open`, `connectTo`)
 * speaking TLS and presenting it: the same suite, over the secure transport.
 */
export async function overTlsWithToken(test: () => Promise<void>): Promise<void> {
  certificates ??= makeCertificates().then((made) => {
    globalThis.addEventListener("unload", () => Deno.removeSync(made.dir, { recursive: true }));
    return made;
  });
  const { leaf, ca } = await certificates;
  transport = {
    server: { tls: { cert: leaf.cert, key: leaf.key }, authTokens: `${TEST_TOKEN} e2e admin\n` },
    client: { caCerts: [ca.cert], token: TEST_TOKEN },
  };
  try {
    await test();
  } finally {
    transport = undefined;
  }
}

/** Whether the helpers speak TLS with a token now (see {@linkcode overTlsWithToken}). */
export function secureTransport(): boolean {
  return transport !== undefined;
}

/** The requests `connections` connections made to authenticate (`AUTH`), over this transport. */
export function authRequests(connections: number): number {
  return transport ? connections : 0;
}

/** A client of 127.0.0.1:`port`, over the helpers' transport. */
export function connectTo(port: number): Promise<TcpCacheClient> {
  return connect({ host: "127.0.0.1", port, ...transport?.client });
}

/** The options a test's own `startServer` call needs for the helpers' transport. */
export function transportOptions(): Pick<ServerOptions, "tls" | "authTokens"> {
  return { ...transport?.server };
}

/** The binary's full path on `PATH` (executable), or undefined. */
export function which(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir === "") continue;
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && ((info.mode ?? 0o111) & 0o111) !== 0) return `${dir}/${name}`;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** Files to create: path relative to the root → contents. */
export type Tree = Record<string, string | Uint8Array>;

/** Writes `tree` below `root`, creating directories as needed. */
export async function writeTree(root: string, tree: Tree): Promise<void> {
  for (const [path, content] of Object.entries(tree)) {
    const full = `${root}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    if (typeof content === "string") await Deno.writeTextFile(full, content);
    else await Deno.writeFile(full, content);
  }
}

/** Deterministic pseudo-random bytes (xorshift32), so failures reproduce. */
export function seededBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export { seededRandom } from "../util/seeded_random.ts";

/** Hex sha256 of `bytes`. */
export function sha256(bytes: Uint8Array | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A server on a free port over a temporary served directory. */
export interface TestServer {
  /** The running server. */
  server: ServerHandle;
  /** Its port on 127.0.0.1. */
  port: number;
  /** The served directory. */
  dir: string;
  /** The cache directory. */
  cacheDir: string;
  /** Lines the server reported through `onError`. */
  errors: string[];
}

/**
 * Runs `test` against a fresh server that serves `tree`, then closes the
 * server and removes every temporary file, whether the test passed or not.
 */
export async function withServer(
  tree: Tree,
  options: Omit<ServerOptions, "dir" | "cacheDir">,
  test: (context: TestServer) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-test-" });
  const dir = `${root}/files`;
  const cacheDir = `${root}/cache`;
  await Deno.mkdir(dir);
  await writeTree(dir, tree);
  const errors: string[] = [];
  const server = await startServer({
    onError: (line) => errors.push(line),
    ...transport?.server,
    ...options,
    dir,
    cacheDir,
    port: options.port ?? 0,
  });
  try {
    await test({ server, port: server.addr.port, dir, cacheDir, errors });
  } finally {
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
}

/** A response read off a raw socket; `fields` is empty and `code` 0 for `OK`. */
export interface RawResponse {
  ok: boolean;
  line: string;
  fields: Record<string, string>;
  code: number;
  message: string;
  body: Uint8Array;
}

/** A plain TCP connection for sending exactly the bytes a test wants. */
export class RawConnection {
  readonly conn: Deno.Conn;
  readonly reader: ByteReader;

  private constructor(conn: Deno.Conn) {
    this.conn = conn;
    this.reader = new ByteReader(conn);
  }

  /**
   * Connects to 127.0.0.1:`port`; over the helpers' secure transport, with
   * TLS, and the token presented (`AUTH`) before it is handed over unless
   * `authenticate` is false.
   */
  static async open(port: number, options = { authenticate: true }): Promise<RawConnection> {
    if (!transport) return new RawConnection(await Deno.connect({ hostname: "127.0.0.1", port }));
    const { caCerts, token } = transport.client;
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port, caCerts });
    const raw = new RawConnection(conn);
    if (!options.authenticate) return raw;
    const answer = await raw.request(`AUTH ${token}`);
    assert.equal(answer.line, "OK 0", "the test token is accepted");
    return raw;
  }

  /** Sends text (UTF-8) or bytes as they are. */
  async send(data: string | Uint8Array): Promise<void> {
    await writeAll(this.conn, typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Reads one response: its header line and, for `OK`, its body. */
  async response(): Promise<RawResponse> {
    const raw = await this.reader.readLine(64 * 1024);
    if (raw === null) throw new Error("connection closed before a response");
    const line = new TextDecoder().decode(raw);
    const header = parseResponseHeader(line);
    const body = new Uint8Array(header.ok ? header.length : 0);
    let filled = 0;
    await this.reader.readBody(body.length, (chunk) => {
      body.set(chunk, filled);
      filled += chunk.length;
    });
    return header.ok
      ? { ok: true, line, fields: header.fields, code: 0, message: "", body }
      : { ok: false, line, fields: {}, code: header.code, message: header.message, body };
  }

  /** Sends a request line (LF added) and reads its response. */
  async request(line: string): Promise<RawResponse> {
    await this.send(line + "\n");
    return await this.response();
  }

  /** True once the server has closed the connection with nothing more to read. */
  async closedByServer(): Promise<boolean> {
    if (this.reader.buffered > 0) return false;
    try {
      return await this.conn.read(new Uint8Array(4096)) === null;
    } catch {
      return true; // reset by the server also ends it
    }
  }

  /** Closes the connection from this side. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}

/** `server.ts` run as a subprocess (see {@linkcode spawnServer}). */
export interface SpawnedServer {
  /** The process (signal it with `kill`). */
  child: Deno.ChildProcess;
  /** The TCP protocol's port, from the ready line. */
  port: number;
  /** The next whole line the server writes on stderr. */
  nextErrorLine(): Promise<string>;
  /** Stops the server (SIGTERM, else SIGKILL once it has gone) and resolves to its status. */
  stop(): Promise<Deno.CommandStatus>;
}

/**
 * Starts `server.ts` with `-A` and `args` (plus `--port 0`), and resolves
 * once its ready line is out; the caller stops it with `stop()`.
 */
export async function spawnServer(args: string[]): Promise<SpawnedServer> {
  const server = new URL("../server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", server, "--port", "0", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  const nextErrorLine = async () => {
    while (!pending.includes("\n")) {
      const { value, done } = await stderr.read();
      if (done) break;
      pending += value;
    }
    const end = pending.indexOf("\n");
    const line = end < 0 ? pending : pending.slice(0, end);
    pending = end < 0 ? "" : pending.slice(end + 1);
    return line;
  };
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // exited already
    }
    const status = await child.status;
    await stderr.cancel().catch(() => {});
    return status;
  };
  try {
    const [, port] = await waitForOutput(child, child.stdout, /listening on [^ ]+:([0-9]+)/);
    return { child, port: Number(port), nextErrorLine, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The body of an `OK` response parsed as JSON. */
export function json<T = Record<string, unknown>>(response: RawResponse): T {
  if (!response.ok) throw new Error(`expected OK, got: ${response.line}`);
  return JSON.parse(new TextDecoder().decode(response.body)) as T;
}

/**
 * Waits for a condition that only polling can see (a server's counters, the
 * descriptors of a process), checking every 10 ms for about 10 s at most.
 */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`timed out waiting for: ${what}`);
}

/** The number of open file descriptors of a process (Linux). */
export function openDescriptors(pid: number | "self" = "self"): number {
  return [...Deno.readDirSync(`/proc/${pid}/fd`)].length;
}

/**
 * Reads a child's output until `pattern` matches it, and resolves to the
 * match; the rest of the output is then drained in the background (a full
 * pipe would block the child). A child that ends first, or says nothing
 * that matches within `timeoutMs`, is killed and the call fails with what
 * it said.
 */
export async function waitForOutput(
  child: Deno.ChildProcess,
  output: ReadableStream<Uint8Array>,
  pattern: RegExp,
  timeoutMs = 30_000,
): Promise<RegExpExecArray> {
  const lines = output.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    while (true) {
      const { value, done } = await lines.read();
      if (done) throw new Error(`the process ended before its output matched ${pattern}:\n${seen}`);
      seen += value;
      const match = pattern.exec(seen);
      if (match) {
        (async () => {
          while (!(await lines.read().catch(() => ({ done: true }))).done) { /* drain */ }
        })();
        return match;
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Two indexes whose byte strings `make(i)` share one FNV-1a hash (the key of
 * util/bytes_memo.ts), found by search: a collision to test the memo with.
 */
export function collidingPair(make: (i: number) => Uint8Array): [number, number] {
  const seen = new Map<number, number>();
  for (let i = 0; i < 1_000_000; i++) {
    const hash = fnv1a(make(i));
    const earlier = seen.get(hash);
    if (earlier !== undefined) return [earlier, i];
    seen.set(hash, i);
  }
  throw new Error("no collision among a million strings");
}

/**
 * One GET of `path` on a connection of its own (with worker threads, any
 * thread may answer it).
 */
export async function getOnce(port: number, path: string): Promise<GetResult> {
  const client = await connect({ port });
  try {
    return await client.get(path);
  } finally {
    client.close();
  }
}

/** A fill source over bytes in memory, counting how often it is read. */
export function memorySource(
  bytes: Uint8Array,
  options: { chunk?: number; version?: string; onChunk?: () => Promise<void> | void } = {},
): FillSource & { reads: number } {
  const chunk = options.chunk ?? 4096;
  const source = {
    reads: 0,
    stat: { size: bytes.length, mtime: 1000, validator: options.version ?? `v${bytes.length}` },
    read: async (sink: (chunk: Uint8Array) => Promise<void>) => {
      source.reads++;
      for (let i = 0; i < bytes.length; i += chunk) {
        await options.onChunk?.();
        await sink(bytes.subarray(i, i + chunk));
      }
    },
  };
  return source;
}

/** The bytes of `parts`, one after the other. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * The names in a cache directory other than its bookkeeping (the marker and
 * the journal), sorted: the entries' files, and any stray or partial one.
 */
export function cacheFileNames(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((entry) => entry.name)
    .filter((name) => name !== CACHE_MARKER && name !== JOURNAL_FILE).sort();
}
