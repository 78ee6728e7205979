/**
 * The soak test: a real server process under many concurrent clients for a
 * while, with a cache small enough to evict constantly, and every byte that
 * comes back checked.
 *
 * It generates a file tree (deterministic from the seed), starts `server.ts`
 * as a subprocess on 127.0.0.1, and runs N clients that loop over a seeded
 * mix of whole-file GETs, ranges, requests that must fail, pipelined batches
 * and abrupt disconnects. Every 250 ms it checks `LIST` (the byte bound) and
 * samples the server's RSS and open descriptors. At the end it prints a
 * markdown table, stops the server with SIGTERM (which must exit 0), removes
 * the temporary directory, and exits 1 if anything unexpected happened.
 *
 * Run it: `deno run -A bench/soak.ts [--duration 30] [--clients 200]
 * [--cache-size 8MiB] [--seed 1] [--workers 2] [--json FILE]` (see `--help`).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ByteReader, writeAll } from "../util/byte_reader.ts";
import {
  type CacheListing,
  connect,
  ConnectionError,
  type GetResult,
  IntegrityError,
  ServerError,
  type TcpCacheClient,
} from "../client.ts";
import { formatRequest, parseResponseHeader } from "../protocol.ts";
import { formatBytes, parseSize } from "../util/units.ts";
import { readyPorts } from "./processes.ts";
import { markdownTable } from "./report.ts";

const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
const HOST = "127.0.0.1";

/** How often LIST is checked and the server's RSS and descriptors sampled. */
const CHECK_INTERVAL_MS = 250;
/** How long clients may take to finish their last request after the end. */
const DRAIN_MS = 30_000;
/** How long the server may take to print its ready line. */
const STARTUP_MS = 60_000;
/** How long the server may take to exit after SIGTERM. */
const SHUTDOWN_MS = 20_000;
/** How long the descriptor count may take to settle once every client closed. */
const FD_SETTLE_MS = 5_000;
/** Descriptors above the starting count tolerated at the end. */
const FD_SLACK = 2;
/** The whole run's hard cap, on top of the duration. */
const HARD_CAP_EXTRA_MS = 180_000;
/** How many failure descriptions the report keeps (all are counted). */
const MAX_DETAILS = 40;

const SMALL_FILES = 1500;
const SMALL_DIRS = 30;
const MEDIUM_FILES = 24;
const LARGE_FILES = 3;
const KiB = 1024;
const MiB = 1024 * 1024;

const encoder = new TextEncoder();

// ---------------------------------------------------------------------------
// Options

interface SoakOptions {
  durationMs: number;
  clients: number;
  cacheSizeText: string;
  capacity: number;
  seed: number;
  workers: number;
  json?: string;
}

const USAGE = `tcpcache soak test: a server process under concurrent clients, every byte verified

Usage: deno run -A bench/soak.ts [options]

Options:
  --duration SECS     how long the clients run (default: 30)
  --clients N         concurrent clients (default: 200)
  --cache-size SIZE   the server's cache capacity (default: 8MiB)
  --seed N            seeds the file tree and every client's mix (default: 1)
  --workers N         the server's threads, sharing one cache (default: 2)
  --json FILE         also write the summary as JSON to FILE
  -h, --help          show this help

Exit status: 0 when nothing unexpected happened, 1 otherwise, 2 on a usage error.
`;

function parseOptions(args: string[]): SoakOptions | "help" {
  const { values, positionals } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "30" },
      clients: { type: "string", default: "200" },
      "cache-size": { type: "string", default: "8MiB" },
      seed: { type: "string", default: "1" },
      workers: { type: "string", default: "2" },
      json: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) return "help";
  if (positionals.length > 0) throw new Error(`unexpected argument: ${positionals[0]}`);
  const duration = Number(values.duration);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(values.duration) || duration <= 0) {
    throw new Error(`--duration must be a positive number of seconds, not "${values.duration}"`);
  }
  const clients = Number(values.clients);
  if (!/^[0-9]+$/.test(values.clients) || clients < 1 || clients > 900) {
    throw new Error(`--clients must be a whole number from 1 to 900, not "${values.clients}"`);
  }
  const seed = Number(values.seed);
  if (!/^[0-9]+$/.test(values.seed) || seed > 0xffffffff) {
    throw new Error(`--seed must be a whole number from 0 to 4294967295, not "${values.seed}"`);
  }
  const workers = Number(values.workers);
  if (!/^[0-9]+$/.test(values.workers) || workers < 1 || workers > 64) {
    throw new Error(`--workers must be a whole number from 1 to 64, not "${values.workers}"`);
  }
  const capacity = parseSize(values["cache-size"]);
  if (capacity < 1) throw new Error("--cache-size must be at least 1 byte");
  return {
    durationMs: Math.round(duration * 1000),
    clients,
    cacheSizeText: values["cache-size"],
    capacity,
    seed,
    workers,
    json: values.json,
  };
}

// ---------------------------------------------------------------------------
// Seeded randomness

/** mulberry32: small, fast, and good enough to drive a workload. */
class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    const t0 = this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(t0 ^ (t0 >>> 15), t0 | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [low, high]. */
  between(low: number, high: number): number {
    return low + this.int(high - low + 1);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

/** Mixes two numbers into a 32-bit seed (a murmur3 finaliser). */
function mixSeed(a: number, b: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be59b, 0xc2b2ae35);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---------------------------------------------------------------------------
// The file tree

type FileKind = "small" | "medium" | "large";

/** A generated file, its content kept in memory for verification. */
interface SoakFile {
  path: string;
  kind: FileKind;
  size: number;
  content: Uint8Array;
  sha256: string;
  mtime: number;
}

interface FileTree {
  small: SoakFile[];
  /** Small files with names that need percent-encoding, and the empty file. */
  odd: SoakFile[];
  medium: SoakFile[];
  large: SoakFile[];
  byPath: Map<string, SoakFile>;
  totalBytes: number;
}

/** Names that exercise percent-encoding on the way in and JSON on the way out. */
const ODD_NAMES = [
  "odd/with space.bin",
  "odd/percent %41 sign.bin",
  "odd/ünïcödé ß.bin",
  "odd/tab\tand\u00a0nbsp.bin",
  "odd/\ufeffbom first.bin",
  "odd/plus+amp&eq=semi;.bin",
];

/** Pseudo-random bytes from a seed (xorshift32 a word at a time). */
function seededContent(size: number, seed: number): Uint8Array {
  const words = new Uint32Array(Math.ceil(size / 4));
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, size);
}

/** A size from 1 B to 64 KiB, spread evenly over the orders of magnitude. */
function smallSize(rng: Rng): number {
  return Math.max(1, Math.min(64 * KiB, Math.round(Math.exp(rng.next() * Math.log(64 * KiB)))));
}

async function generateTree(root: string, seed: number, capacity: number): Promise<FileTree> {
  const rng = new Rng(mixSeed(seed, 0x7e1e));
  const specs: { path: string; kind: FileKind; size: number; odd?: boolean }[] = [];
  // The edges of the server's one-write threshold (64 KiB) and the smallest file.
  const fixedSizes = [1, 64 * KiB - 1, 64 * KiB];
  for (let i = 0; i < SMALL_FILES; i++) {
    const dir = `small/d${String(i % SMALL_DIRS).padStart(2, "0")}`;
    const size = i < fixedSizes.length ? fixedSizes[i] : smallSize(rng);
    specs.push({ path: `${dir}/s${String(i).padStart(4, "0")}.bin`, kind: "small", size });
  }
  for (const name of ODD_NAMES) {
    specs.push({ path: name, kind: "small", size: smallSize(rng), odd: true });
  }
  specs.push({ path: "odd/empty.bin", kind: "small", size: 0, odd: true });
  for (let i = 0; i < MEDIUM_FILES; i++) {
    specs.push({ path: `medium/m${i}.bin`, kind: "medium", size: rng.between(100 * KiB, 2 * MiB) });
  }
  for (let i = 0; i < LARGE_FILES; i++) {
    // Always larger than the cache, whatever --cache-size says.
    const size = Math.max(rng.between(10 * MiB, 20 * MiB), capacity + rng.between(1, MiB));
    specs.push({ path: `large/l${i}.bin`, kind: "large", size });
  }

  const tree: FileTree = {
    small: [],
    odd: [],
    medium: [],
    large: [],
    byPath: new Map(),
    totalBytes: 0,
  };
  const dirs = new Set(specs.map((spec) => spec.path.slice(0, spec.path.lastIndexOf("/"))));
  for (const dir of dirs) await Deno.mkdir(`${root}/${dir}`, { recursive: true });
  const BATCH = 64;
  for (let start = 0; start < specs.length; start += BATCH) {
    await Promise.all(
      specs.slice(start, start + BATCH).map(async (spec, i) => {
        const content = seededContent(spec.size, mixSeed(seed, start + i + 1));
        const full = `${root}/${spec.path}`;
        await Deno.writeFile(full, content);
        const info = await Deno.stat(full);
        const file: SoakFile = {
          path: spec.path,
          kind: spec.kind,
          size: spec.size,
          content,
          sha256: createHash("sha256").update(content).digest("hex"),
          mtime: info.mtime?.getTime() ?? 0,
        };
        tree.byPath.set(file.path, file);
        tree.totalBytes += file.size;
      }),
    );
  }
  // In spec order, not completion order, so the picks are deterministic.
  for (const spec of specs) {
    const file = tree.byPath.get(spec.path)!;
    if (spec.odd) tree.odd.push(file);
    else tree[spec.kind].push(file);
  }
  return tree;
}

// ---------------------------------------------------------------------------
// The server process

interface ServerProcess {
  child: Deno.ChildProcess;
  pid: number;
  port: number;
  /** Settles with the exit status; never rejects. */
  status: Promise<Deno.CommandStatus>;
  exited: boolean;
  stderr: StderrLog;
}

interface StderrLog {
  lines: number;
  sample: string[];
  done: Promise<void>;
}

/** Keeps a count of the server's stderr lines and the first few of them. */
function collectStderr(stream: ReadableStream<Uint8Array>): StderrLog {
  const log: StderrLog = { lines: 0, sample: [], done: Promise.resolve() };
  log.done = (async () => {
    let pending = "";
    try {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        pending += text;
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          log.lines++;
          if (log.sample.length < 20) log.sample.push(line.slice(0, 300));
        }
        if (pending.length > 4096) pending = pending.slice(0, 4096);
      }
    } catch {
      // the pipe broke: the process is gone
    }
    if (pending !== "") {
      log.lines++;
      if (log.sample.length < 20) log.sample.push(pending.slice(0, 300));
    }
  })();
  return log;
}

/** Starts `server.ts` and resolves once its ready line names the port. */
async function spawnServer(
  dir: string,
  cacheDir: string,
  cacheSize: string,
  workers: number,
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-net",
      SERVER,
      "--workers",
      String(workers),
      "--dir",
      dir,
      "--cache-dir",
      cacheDir,
      "--cache-size",
      cacheSize,
      "--host",
      HOST,
      "--port",
      "0",
      "--max-connections",
      "2000",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = collectStderr(child.stderr);
  const server: ServerProcess = {
    child,
    pid: child.pid,
    port: 0,
    status: child.status,
    exited: false,
    stderr,
  };
  server.status.then(() => server.exited = true);

  try {
    server.port = (await readyPorts(child, STARTUP_MS)).port;
  } catch (error) {
    if (!server.exited) child.kill("SIGKILL");
    await server.status;
    await stderr.done;
    const said = stderr.sample.length > 0 ? `; it said:\n${stderr.sample.join("\n")}` : "";
    throw new Error(`the server did not start: ${(error as Error).message}${said}`);
  }
  return server;
}

// ---------------------------------------------------------------------------
// Process statistics from /proc

async function readMemory(pid: number): Promise<{ rssKiB: number; hwmKiB: number } | undefined> {
  try {
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const rss = /^VmRSS:\s+([0-9]+) kB/m.exec(status);
    const hwm = /^VmHWM:\s+([0-9]+) kB/m.exec(status);
    if (!rss || !hwm) return undefined;
    return { rssKiB: Number(rss[1]), hwmKiB: Number(hwm[1]) };
  } catch {
    return undefined;
  }
}

/** User and system CPU seconds a process has used (Linux ticks of 1/100 s). */
async function readCpu(pid: number): Promise<{ user: number; system: number }> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // The command name may hold spaces and parentheses: count from the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { user: Number(fields[11]) / 100, system: Number(fields[12]) / 100 };
  } catch {
    return { user: 0, system: 0 };
  }
}

async function countFds(pid: number): Promise<number | undefined> {
  try {
    let count = 0;
    for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
    return count;
  } catch {
    return undefined;
  }
}

/** What the server's descriptors point at, grouped: "socket x12, /tmp/... x1". */
async function describeFds(pid: number): Promise<string> {
  const kinds = new Map<string, number>();
  try {
    for await (const entry of Deno.readDir(`/proc/${pid}/fd`)) {
      let target: string;
      try {
        target = (await Deno.readLink(`/proc/${pid}/fd/${entry.name}`)).replace(
          /^(socket|pipe|anon_inode):.*/,
          "$1",
        );
      } catch {
        continue;
      }
      kinds.set(target, (kinds.get(target) ?? 0) + 1);
    }
  } catch {
    return "unavailable";
  }
  return [...kinds].map(([target, n]) => `${target} x${n}`).join(", ");
}

// ---------------------------------------------------------------------------
// Counters

type Outcome = "hit" | "miss" | "bypass";
type FailureKind = "unexpected" | "connection" | "verification" | "bound" | "other";

function noOutcomes(): Record<Outcome, number> {
  return { hit: 0, miss: 0, bypass: 0 };
}

class Tally {
  requests = 0;
  bytesVerified = 0;
  connections = 0;
  whole = noOutcomes();
  range = noOutcomes();
  expected: Record<string, number> = { "400": 0, "404": 0, "413": 0, "416": 0 };
  failures: Record<FailureKind, number> = {
    unexpected: 0,
    connection: 0,
    verification: 0,
    bound: 0,
    other: 0,
  };
  details: string[] = [];
  disconnects = { midBody: 0, beforeBody: 0, midLine: 0 };
  listChecks = 0;
  peakUsed = 0;
  peakEntries = 0;
  peakRssKiB = 0;
  lastRssKiB = 0;
  peakFds = 0;
  lastFds = 0;
  /** RSS against requests sent, while the clients run: the leak trend. */
  rssByRequests: { requests: number; rssKiB: number }[] = [];

  fail(kind: FailureKind, message: string): void {
    this.failures[kind]++;
    if (this.details.length < MAX_DETAILS) this.details.push(`${kind}: ${message}`);
  }

  get failureCount(): number {
    return Object.values(this.failures).reduce((a, b) => a + b, 0);
  }
}

// ---------------------------------------------------------------------------
// The run's shared state

interface Closable {
  close(): void;
}

class Run {
  readonly tally = new Tally();
  readonly live = new Set<Closable>();
  deadline = 0;
  /** Set when the server died under us: clients stop, nothing more is counted. */
  aborted = false;
  /** Set when the drain ran out: connections are closed under the clients. */
  forced = false;

  constructor(
    readonly options: SoakOptions,
    readonly tree: FileTree,
    readonly server: ServerProcess,
  ) {}

  get running(): boolean {
    return !this.aborted && !this.forced && performance.now() < this.deadline;
  }

  /** True while errors still count (not after an abort or a forced close). */
  get counting(): boolean {
    return !this.aborted && !this.forced;
  }

  async connect(): Promise<TcpCacheClient> {
    const client = await connect({ host: HOST, port: this.server.port });
    this.tally.connections++;
    this.live.add(client);
    return client;
  }

  release(client: TcpCacheClient | undefined): void {
    if (!client) return;
    this.live.delete(client);
    client.close();
  }

  /** Opens a raw socket, runs `use` on it, and always closes it. */
  async withRawConn(label: string, use: (conn: Deno.TcpConn) => Promise<void>): Promise<void> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: HOST, port: this.server.port });
    } catch (error) {
      if (this.counting) this.tally.fail("connection", `${label}: connect: ${describe(error)}`);
      return;
    }
    this.tally.connections++;
    conn.setNoDelay(true);
    const closable = { close: () => closeQuietly(conn) };
    this.live.add(closable);
    try {
      await use(conn);
    } catch (error) {
      // A reply that is not the protocol is the server's fault; the rest is the connection's.
      const kind = error instanceof SyntaxError ? "unexpected" : "connection";
      if (this.counting) this.tally.fail(kind, `${label}: ${describe(error)}`);
    } finally {
      this.live.delete(closable);
      closeQuietly(conn);
    }
  }
}

function closeQuietly(conn: Closable): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

// ---------------------------------------------------------------------------
// Verification

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const left = Buffer.from(a.buffer as ArrayBuffer, a.byteOffset, a.length);
  const right = Buffer.from(b.buffer as ArrayBuffer, b.byteOffset, b.length);
  return left.equals(right);
}

/** The index of the first byte where `chunk` differs from `expected` (or ends). */
function firstDifference(chunk: Uint8Array, expected: Uint8Array): number {
  const n = Math.min(chunk.length, expected.length);
  for (let i = 0; i < n; i++) if (chunk[i] !== expected[i]) return i;
  return n;
}

/** Compares a body, chunk by chunk, with the bytes it should be. */
class RangeCheck {
  #expected: Uint8Array;
  #position: number;
  received = 0;
  mismatchAt = -1;

  constructor(file: SoakFile, offset: number) {
    this.#expected = file.content;
    this.#position = offset;
  }

  readonly sink = (chunk: Uint8Array): void => {
    if (this.mismatchAt < 0) {
      const expected = this.#expected.subarray(this.#position, this.#position + chunk.length);
      if (!sameBytes(chunk, expected)) {
        this.mismatchAt = this.#position + firstDifference(chunk, expected);
      }
    }
    this.#position += chunk.length;
    this.received += chunk.length;
  };
}

/** Checks a GET answer's header fields; resolves to a problem or undefined. */
function checkHeader(
  file: SoakFile,
  result: GetResult,
  offset: number,
  length: number,
): string | undefined {
  if (result.size !== file.size) return `size=${result.size}, expected ${file.size}`;
  if (result.offset !== offset) return `offset=${result.offset}, expected ${offset}`;
  if (result.length !== length) return `length ${result.length}, expected ${length}`;
  if (result.mtime !== file.mtime) return `mtime=${result.mtime}, expected ${file.mtime}`;
  return undefined;
}

/** Checks and counts a GET's cache outcome against the contract. */
function countOutcome(run: Run, file: SoakFile, result: GetResult, whole: boolean, what: string) {
  const cache = result.cache as string;
  if (cache !== "hit" && cache !== "miss" && cache !== "bypass") {
    run.tally.fail("unexpected", `${what}: cache=${cache}`);
    return;
  }
  (whole ? run.tally.whole : run.tally.range)[cache]++;
  if (cache !== "bypass" && file.size > run.options.capacity) {
    run.tally.fail("unexpected", `${what}: a file larger than the cache came as cache=${cache}`);
  }
  if (cache === "miss" && !whole) {
    run.tally.fail("unexpected", `${what}: a range was admitted (cache=miss)`);
  }
  if (cache === "hit" && result.sha256 === undefined) {
    run.tally.fail("unexpected", `${what}: cache=hit without sha256`);
  }
}

// ---------------------------------------------------------------------------
// Operations over a TcpCacheClient. Each counts what it sends and what comes
// back; a broken connection propagates as ConnectionError to the client loop.

/** What an operation leaves behind: the connection usable, or to be replaced. */
type After = "keep" | "reconnect";

/** Codes after which the server closes the connection. */
const CLOSING_CODES = new Set([408, 413, 503]);

/** GET of a whole file (or a range that covers it, `GET p 0 size`), or a range. */
async function getAndVerify(
  run: Run,
  client: TcpCacheClient,
  file: SoakFile,
  range?: { offset: number; length?: number },
): Promise<After> {
  const offset = range?.offset ?? 0;
  const length = range?.length ?? file.size - offset;
  const whole = offset === 0 && length === file.size;
  const what = range
    ? `GET ${file.path} ${offset}${range.length === undefined ? "" : ` ${range.length}`}`
    : `GET ${file.path}`;
  const hash = whole ? createHash("sha256") : undefined;
  const check = new RangeCheck(file, offset);
  const sink = hash
    ? (chunk: Uint8Array) => {
      hash.update(chunk);
      check.received += chunk.length;
    }
    : check.sink;
  run.tally.requests++;
  let result: GetResult;
  try {
    result = await client.get(file.path, { ...range, sink });
  } catch (error) {
    if (error instanceof IntegrityError) {
      run.tally.fail("verification", `${what}: ${error.message}`);
      return "keep";
    }
    if (error instanceof ServerError) {
      run.tally.fail("unexpected", `${what}: ERR ${error.code} ${error.message}`);
      return CLOSING_CODES.has(error.code) ? "reconnect" : "keep";
    }
    throw error;
  }
  const problem = checkHeader(file, result, offset, length);
  if (problem) run.tally.fail("verification", `${what}: header ${problem}`);
  if (hash) {
    const digest = hash.digest("hex");
    if (digest !== file.sha256) {
      run.tally.fail("verification", `${what}: sha256 ${digest}, expected ${file.sha256}`);
    } else if (result.sha256 !== undefined && result.sha256 !== file.sha256) {
      run.tally.fail("verification", `${what}: header sha256=${result.sha256} is wrong`);
    } else if (!problem) {
      run.tally.bytesVerified += check.received;
    }
  } else if (check.mismatchAt >= 0) {
    run.tally.fail("verification", `${what}: wrong byte at file offset ${check.mismatchAt}`);
  } else if (!problem) {
    run.tally.bytesVerified += check.received;
  }
  countOutcome(run, file, result, whole, what);
  return "keep";
}

/** Sends a GET that must fail with `code`. */
async function expectError(
  run: Run,
  client: TcpCacheClient,
  code: number,
  path: string,
  range?: { offset: number; length?: number },
): Promise<After> {
  const what = `GET ${JSON.stringify(path)}${
    range ? ` ${range.offset} ${range.length ?? ""}` : ""
  }`;
  run.tally.requests++;
  try {
    await client.get(path, { ...range, sink: () => {} });
    run.tally.fail("unexpected", `${what}: expected ERR ${code}, got OK`);
  } catch (error) {
    if (error instanceof ServerError) {
      if (error.code === code) run.tally.expected[String(code)]++;
      else run.tally.fail("unexpected", `${what}: expected ERR ${code}, got ERR ${error.code}`);
      return CLOSING_CODES.has(error.code) ? "reconnect" : "keep";
    }
    if (error instanceof IntegrityError) {
      run.tally.fail("unexpected", `${what}: expected ERR ${code}, got OK (${error.message})`);
      return "keep";
    }
    throw error;
  }
  return "keep";
}

/** A small file, hot ones (low indices) far more often, now and then an odd name. */
function pickSmall(run: Run, rng: Rng): SoakFile {
  const { small, odd } = run.tree;
  if (rng.next() < 0.04) return rng.pick(odd);
  const r = rng.next();
  return small[Math.floor(small.length * r * r * r)];
}

function pickAny(run: Run, rng: Rng): SoakFile {
  const r = rng.next();
  if (r < 0.45) return pickSmall(run, rng);
  if (r < 0.85) return rng.pick(run.tree.medium);
  return rng.pick(run.tree.large);
}

function chooseRange(rng: Rng, file: SoakFile): { offset: number; length?: number } {
  const r = rng.next();
  const size = file.size;
  if (r < 0.08) return { offset: size }; // empty, at the end
  if (r < 0.14) return { offset: rng.int(size + 1), length: 0 }; // empty, anywhere
  if (r < 0.24) return { offset: 0, length: size }; // the whole file, spelled as a range
  if (r < 0.44) return { offset: size - rng.int(Math.min(size, 512 * KiB) + 1) }; // to the end
  const offset = rng.int(size + 1);
  return { offset, length: rng.int(Math.min(size - offset, 256 * KiB) + 1) };
}

function getRange(run: Run, rng: Rng, client: TcpCacheClient): Promise<After> {
  const file = pickAny(run, rng);
  return getAndVerify(run, client, file, chooseRange(rng, file));
}

function expect404(run: Run, rng: Rng, client: TcpCacheClient): Promise<After> {
  const file = pickSmall(run, rng);
  const paths = [
    `missing/nope-${rng.int(1e6)}.bin`,
    `small/d${String(rng.int(SMALL_DIRS)).padStart(2, "0")}/s9${rng.int(1000)}.bin`,
    "small/d00", // a directory is no regular file
    `${file.path}/below-a-file`,
  ];
  return expectError(run, client, 404, rng.pick(paths));
}

function expect400(run: Run, rng: Rng, client: TcpCacheClient): Promise<After> {
  const file = pickSmall(run, rng);
  const cases: [string, { offset: number; length?: number }?][] = [
    ["small/../etc/passwd"],
    ["/etc/passwd"],
    ["small//d00"],
    ["./x"],
    ["small/d00/."],
    [".."],
    ["nul\0byte"],
    [file.path, { offset: -1 }],
    [file.path, { offset: 1e16 }], // 17 digits
    [file.path, { offset: 0, length: 1.5 }],
  ];
  const [path, range] = rng.pick(cases);
  return expectError(run, client, 400, path, range);
}

function expect416(run: Run, rng: Rng, client: TcpCacheClient): Promise<After> {
  const file = pickAny(run, rng);
  const r = rng.next();
  if (r < 0.1) return expectError(run, client, 416, file.path, { offset: 999_999_999_999_999 });
  if (r < 0.55) {
    return expectError(run, client, 416, file.path, { offset: file.size + 1 + rng.int(1000) });
  }
  const offset = rng.int(file.size + 1);
  const length = file.size - offset + 1 + rng.int(1000);
  return expectError(run, client, 416, file.path, { offset, length });
}

/** Two to four requests sent at once on one connection, answered in order. */
async function pipelined(run: Run, rng: Rng, client: TcpCacheClient): Promise<After> {
  const count = rng.between(2, 4);
  const requests: Promise<After>[] = [];
  for (let i = 0; i < count; i++) {
    const r = rng.next();
    if (r < 0.5) requests.push(getAndVerify(run, client, pickSmall(run, rng)));
    else if (r < 0.75) requests.push(getRange(run, rng, client));
    else if (r < 0.85) requests.push(expect404(run, rng, client));
    else if (r < 0.95) requests.push(expect416(run, rng, client));
    else requests.push(expect400(run, rng, client));
  }
  const settled = await Promise.allSettled(requests);
  for (const outcome of settled) {
    if (outcome.status === "rejected") throw outcome.reason;
  }
  return settled.some((s) => s.status === "fulfilled" && s.value === "reconnect")
    ? "reconnect"
    : "keep";
}

async function quit(run: Run, _rng: Rng, client: TcpCacheClient): Promise<After> {
  run.tally.requests++;
  await client.quit();
  return "reconnect";
}

// ---------------------------------------------------------------------------
// Operations over raw sockets: what TcpCacheClient cannot send

/** Request lines the server must answer with ERR 400 and keep the connection. */
const MALFORMED = [
  "GET %zz\n", // invalid escape
  "GET %ff%fe\n", // invalid UTF-8
  "GET small%2F..%2Fd00\n", // '..' once decoded
  "FROB x\n", // unknown command
  "GET  small/d00/s0000.bin\n", // two spaces
  "GET\n", // no path
  "GET a 1 2 3\n", // too many arguments
  "GET a 1234567890123456\n", // 16 digits
  "GET a\x01b\n", // a raw control byte
  "\n", // empty line
  "PING extra\n", // PING takes no argument
].map((line) => encoder.encode(line));

const PING_QUIT = encoder.encode("PING\nQUIT\n");
/** Exactly the line limit and no LF: the server must answer 413 and close. */
const TOO_LONG = encoder.encode("GET " + "x".repeat(8192 - 4));

async function readHeader(reader: ByteReader): Promise<ReturnType<typeof parseResponseHeader>> {
  const line = await reader.readLine(8192);
  if (line === null) throw new ConnectionError("the server closed the connection");
  return parseResponseHeader(new TextDecoder().decode(line));
}

/** Malformed lines, pipelined, then PING and QUIT: 400s, OK 0, OK 0, close. */
function rawMalformed(run: Run, rng: Rng): Promise<void> {
  const lines = Array.from({ length: rng.between(1, 3) }, () => rng.pick(MALFORMED));
  return run.withRawConn("malformed lines", async (conn) => {
    const message = new Uint8Array(lines.reduce((n, l) => n + l.length, 0) + PING_QUIT.length);
    let at = 0;
    for (const line of lines) {
      message.set(line, at);
      at += line.length;
    }
    message.set(PING_QUIT, at);
    run.tally.requests += lines.length + 2;
    await writeAll(conn, message);
    const reader = new ByteReader(conn, 16 * KiB);
    for (const line of lines) {
      const header = await readHeader(reader);
      const sent = JSON.stringify(new TextDecoder().decode(line));
      if (!header.ok && header.code === 400) run.tally.expected["400"]++;
      else run.tally.fail("unexpected", `${sent}: expected ERR 400, got ${JSON.stringify(header)}`);
      if (header.ok && header.length > 0) return; // out of step; the connection ends here
    }
    for (const command of ["PING", "QUIT"]) {
      const header = await readHeader(reader);
      if (!header.ok || header.length !== 0) {
        run.tally.fail("unexpected", `${command} after 400s: ${JSON.stringify(header)}`);
        return;
      }
    }
    if (await reader.readLine(8192) !== null) {
      run.tally.fail("unexpected", "the server sent more after QUIT");
    }
  });
}

function raw413(run: Run, _rng: Rng): Promise<void> {
  return run.withRawConn("413", async (conn) => {
    run.tally.requests++;
    await writeAll(conn, TOO_LONG);
    const reader = new ByteReader(conn, 16 * KiB);
    const header = await readHeader(reader);
    if (!header.ok && header.code === 413) {
      run.tally.expected["413"]++;
    } else {
      const got = JSON.stringify(header);
      run.tally.fail("unexpected", `over-long line: expected ERR 413, got ${got}`);
    }
    if (await reader.readLine(8192) !== null) {
      run.tally.fail("unexpected", "the connection stayed open after 413");
    }
  });
}

/**
 * Goes away abruptly: after part of a body (verifying what came), right
 * after sending a GET, or in the middle of a request line.
 */
function disconnect(run: Run, rng: Rng): Promise<void> {
  const r = rng.next();
  const kind = rng.next();
  const file = kind < 0.2
    ? run.tree.small[rng.int(run.tree.small.length)]
    : kind < 0.6
    ? rng.pick(run.tree.medium)
    : rng.pick(run.tree.large);
  const request = encoder.encode(formatRequest("GET", [file.path]));
  if (r < 0.2) {
    return run.withRawConn("disconnect mid-line", async (conn) => {
      await writeAll(conn, request.subarray(0, rng.between(1, request.length - 1)));
      run.tally.disconnects.midLine++;
    });
  }
  if (r < 0.4) {
    return run.withRawConn("disconnect before the body", async (conn) => {
      run.tally.requests++;
      await writeAll(conn, request);
      run.tally.disconnects.beforeBody++;
    });
  }
  const cut = rng.int(file.size); // strictly less than the whole body
  return run.withRawConn("disconnect mid-body", async (conn) => {
    run.tally.requests++;
    await writeAll(conn, request);
    const reader = new ByteReader(conn, 64 * KiB);
    const header = await readHeader(reader);
    const what = `GET ${file.path} (cut after ${cut} bytes)`;
    if (!header.ok) {
      run.tally.fail("unexpected", `${what}: ERR ${header.code} ${header.message}`);
      return;
    }
    if (header.length !== file.size || Number(header.fields.size) !== file.size) {
      run.tally.fail("verification", `${what}: header ${JSON.stringify(header)}`);
      return;
    }
    const check = new RangeCheck(file, 0);
    await reader.readBody(cut, check.sink);
    if (check.mismatchAt >= 0) {
      run.tally.fail("verification", `${what}: wrong byte at file offset ${check.mismatchAt}`);
    } else {
      run.tally.bytesVerified += check.received;
    }
    run.tally.disconnects.midBody++;
  });
}

// ---------------------------------------------------------------------------
// The client loop

type ClientOp = (run: Run, rng: Rng, client: TcpCacheClient) => Promise<After>;
type RawOp = (run: Run, rng: Rng) => Promise<void>;
type MixEntry = { weight: number; op: ClientOp; raw?: undefined } | {
  weight: number;
  raw: RawOp;
  op?: undefined;
};

const getSmall: ClientOp = (run, rng, client) => getAndVerify(run, client, pickSmall(run, rng));
const getMedium: ClientOp = (run, rng, client) =>
  getAndVerify(run, client, rng.pick(run.tree.medium));
const getLarge: ClientOp = (run, rng, client) =>
  getAndVerify(run, client, rng.pick(run.tree.large));

/** The mix, by weight. Large whole files are rare: each is 10-20 MiB. */
const MIX: MixEntry[] = [
  { weight: 40, op: getSmall },
  { weight: 10, op: getMedium },
  { weight: 1, op: getLarge },
  { weight: 14, op: getRange },
  { weight: 4, op: expect404 },
  { weight: 4, op: expect400 },
  { weight: 4, op: expect416 },
  { weight: 5, op: pipelined },
  { weight: 1, op: quit },
  { weight: 2, raw: rawMalformed },
  { weight: 0.5, raw: raw413 },
  { weight: 3, raw: disconnect },
];
const MIX_TOTAL = MIX.reduce((sum, entry) => sum + entry.weight, 0);

function chooseOp(rng: Rng): MixEntry {
  let r = rng.next() * MIX_TOTAL;
  for (const entry of MIX) {
    r -= entry.weight;
    if (r < 0) return entry;
  }
  return MIX[0];
}

async function runClient(run: Run, index: number): Promise<void> {
  const rng = new Rng(mixSeed(run.options.seed, 0x10000 + index));
  let client: TcpCacheClient | undefined;
  while (run.running) {
    const entry = chooseOp(rng);
    try {
      if (entry.raw) {
        await entry.raw(run, rng);
        continue;
      }
      client ??= await run.connect();
      const after = await entry.op(run, rng, client);
      if (after === "reconnect") {
        run.release(client);
        client = undefined;
      }
    } catch (error) {
      if (run.counting) {
        const kind = error instanceof ConnectionError ? "connection" : "unexpected";
        run.tally.fail(kind, `client ${index}: ${describe(error)}`);
      }
      run.release(client);
      client = undefined;
    }
  }
  run.release(client);
}

// ---------------------------------------------------------------------------
// The monitor: LIST and /proc every 250 ms

function checkListing(run: Run, listing: CacheListing): void {
  const { tally, options, tree } = run;
  tally.listChecks++;
  const problems: string[] = [];
  if (listing.capacity !== options.capacity) {
    problems.push(`capacity ${listing.capacity}, expected ${options.capacity}`);
  }
  if (listing.used > listing.capacity) problems.push(`used ${listing.used} > ${listing.capacity}`);
  let sum = 0;
  const seen = new Set<string>();
  for (const entry of listing.entries) {
    sum += entry.size;
    const file = tree.byPath.get(entry.path);
    if (seen.has(entry.path)) problems.push(`${JSON.stringify(entry.path)} listed twice`);
    seen.add(entry.path);
    if (!file) problems.push(`unknown path ${JSON.stringify(entry.path)}`);
    else if (file.size !== entry.size) {
      problems.push(`${JSON.stringify(entry.path)} has size ${entry.size}, expected ${file.size}`);
    }
  }
  if (sum !== listing.used) problems.push(`entries sum to ${sum}, used says ${listing.used}`);
  for (const problem of problems) tally.fail("bound", `LIST: ${problem}`);
  tally.peakUsed = Math.max(tally.peakUsed, listing.used);
  tally.peakEntries = Math.max(tally.peakEntries, listing.entries.length);
}

async function sample(run: Run): Promise<void> {
  const { tally, server } = run;
  const memory = await readMemory(server.pid);
  if (memory) {
    tally.lastRssKiB = memory.rssKiB;
    tally.peakRssKiB = Math.max(tally.peakRssKiB, memory.rssKiB);
    if (run.running) tally.rssByRequests.push({ requests: tally.requests, rssKiB: memory.rssKiB });
  }
  const fds = await countFds(server.pid);
  if (fds !== undefined) {
    tally.lastFds = fds;
    tally.peakFds = Math.max(tally.peakFds, fds);
  }
}

/**
 * How RSS grew with requests over the second half of the run (the first
 * half is warm-up: pools, JIT, heap sizing), by least squares. A server
 * that retains something per request shows a steady positive slope.
 */
function rssTrend(
  samples: { requests: number; rssKiB: number }[],
): { kibPer1000Requests: number; growthKiB: number } | undefined {
  const half = samples.slice(Math.floor(samples.length / 2));
  if (half.length < 4) return undefined;
  const n = half.length;
  const meanX = half.reduce((sum, p) => sum + p.requests, 0) / n;
  const meanY = half.reduce((sum, p) => sum + p.rssKiB, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (const p of half) {
    covariance += (p.requests - meanX) * (p.rssKiB - meanY);
    variance += (p.requests - meanX) ** 2;
  }
  if (variance === 0) return undefined;
  return {
    kibPer1000Requests: 1000 * covariance / variance,
    growthKiB: half[n - 1].rssKiB - half[0].rssKiB,
  };
}

/** Sleeps `ms` unless `stop` settles first. */
function pause(ms: number, stop: Promise<unknown>): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const elapsed = new Promise((resolve) => timer = setTimeout(resolve, ms));
  return Promise.race([elapsed, stop]).finally(() => clearTimeout(timer));
}

async function monitor(run: Run, stop: Promise<unknown>, started: number): Promise<void> {
  let stopped = false;
  stop.then(() => stopped = true);
  let client: TcpCacheClient | undefined;
  let tick = 0;
  let nextProgress = started + 5000;
  while (!stopped && run.counting) {
    await sample(run);
    try {
      client ??= await run.connect();
      checkListing(run, await client.list());
    } catch (error) {
      if (run.counting && !stopped) run.tally.fail("connection", `monitor: ${describe(error)}`);
      run.release(client);
      client = undefined;
    }
    const now = performance.now();
    if (now >= nextProgress) {
      nextProgress += 5000;
      const t = run.tally;
      console.error(
        `soak: ${((now - started) / 1000).toFixed(1)} s, ${t.requests} requests, ` +
          `${formatBytes(t.bytesVerified)} verified, rss ${formatBytes(t.lastRssKiB * KiB)}, ` +
          `${t.lastFds} fds, ${t.failureCount} failures`,
      );
    }
    // Keep to the 250 ms grid; a slow check skips ticks rather than piling up.
    tick = Math.max(tick + 1, Math.ceil((now - started) / CHECK_INTERVAL_MS));
    await pause(started + tick * CHECK_INTERVAL_MS - performance.now(), stop);
  }
  run.release(client);
}

// ---------------------------------------------------------------------------
// The report

interface Report {
  passed: boolean;
  seed: number;
  durationS: number;
  elapsedS: number;
  drainS: number;
  clients: number;
  cacheCapacity: number;
  files: {
    small: number;
    medium: number;
    large: number;
    largerThanCache: number;
    totalBytes: number;
  };
  requests: number;
  requestsPerSecond: number;
  bytesVerified: number;
  connectionsOpened: number;
  outcomes: { whole: Record<Outcome, number>; range: Record<Outcome, number> };
  expectedErrors: Record<string, number>;
  unexpectedErrors: number;
  connectionFailures: number;
  verificationFailures: number;
  cacheBoundViolations: number;
  otherFailures: number;
  disconnects: { midBody: number; beforeBody: number; midLine: number };
  listChecks: number;
  cachePeakUsed: number;
  cachePeakEntries: number;
  rss: {
    peakKiB: number;
    hwmKiB: number;
    finalKiB: number;
    /** Over the second half of the run: KiB per 1000 requests, and the growth. */
    trend?: { kibPer1000Requests: number; growthKiB: number };
  };
  /** CPU seconds used while the clients ran and drained. */
  cpu: { serverUser: number; serverSystem: number; soakUser: number; soakSystem: number };
  fds: { start: number; peak: number; final: number; finalDescription?: string };
  shutdown?: Shutdown;
  server: {
    exitCode: number | null;
    signal: string | null;
    stats?: unknown;
    stderrLines: number;
    stderrSample: string[];
  };
  failures: string[];
}

function summaryRows(report: Report): [string, string][] {
  const o = report.outcomes;
  const e = report.expectedErrors;
  const d = report.disconnects;
  const c = report.cpu;
  const trend = report.rss.trend;
  const evictions = (report.server.stats as { evictions?: number } | undefined)?.evictions;
  return [
    ["result", report.passed ? "PASS" : "FAIL"],
    ["duration", `${report.elapsedS.toFixed(1)} s (+ ${report.drainS.toFixed(1)} s drain)`],
    ["clients", String(report.clients)],
    ["seed", String(report.seed)],
    [
      "cache capacity",
      `${formatBytes(report.cacheCapacity)}, peak used ${formatBytes(report.cachePeakUsed)} ` +
      `(${report.cachePeakEntries} entries max)` +
      (evictions === undefined ? "" : `, ${evictions} evictions`),
    ],
    [
      "files",
      `${report.files.small} small, ${report.files.medium} medium, ${report.files.large} large ` +
      `(${formatBytes(report.files.totalBytes)}); ${report.files.largerThanCache} larger than ` +
      "the cache",
    ],
    ["requests", String(report.requests)],
    ["requests/s", report.requestsPerSecond.toFixed(0)],
    ["bytes verified", `${formatBytes(report.bytesVerified)} (${report.bytesVerified} B)`],
    ["connections opened", String(report.connectionsOpened)],
    ["whole files: hit / miss / bypass", `${o.whole.hit} / ${o.whole.miss} / ${o.whole.bypass}`],
    ["ranges: hit / miss / bypass", `${o.range.hit} / ${o.range.miss} / ${o.range.bypass}`],
    ["expected 400 / 404 / 413 / 416", `${e["400"]} / ${e["404"]} / ${e["413"]} / ${e["416"]}`],
    [
      "disconnects: mid-body / before body / mid-line",
      `${d.midBody} / ${d.beforeBody} / ${d.midLine}`,
    ],
    ["unexpected errors", String(report.unexpectedErrors)],
    ["connection failures", String(report.connectionFailures)],
    ["verification failures", String(report.verificationFailures)],
    ["cache bound violations", `${report.cacheBoundViolations} (${report.listChecks} LIST checks)`],
    ["other failures", String(report.otherFailures)],
    [
      "server RSS: peak / VmHWM / final",
      `${formatBytes(report.rss.peakKiB * KiB)} / ${formatBytes(report.rss.hwmKiB * KiB)} / ` +
      `${formatBytes(report.rss.finalKiB * KiB)}`,
    ],
    [
      "server RSS trend, second half",
      trend
        ? `${trend.growthKiB >= 0 ? "+" : "-"}${formatBytes(Math.abs(trend.growthKiB) * KiB)}, ` +
          `${trend.kibPer1000Requests.toFixed(0)} KiB per 1000 requests`
        : "too few samples",
    ],
    [
      "CPU s (user + system): server / soak",
      `${c.serverUser.toFixed(1)} + ${c.serverSystem.toFixed(1)} / ` +
      `${c.soakUser.toFixed(1)} + ${c.soakSystem.toFixed(1)}`,
    ],
    [
      "server open fds: start / peak / final",
      `${report.fds.start} / ${report.fds.peak} / ${report.fds.final}`,
    ],
    [
      "server exit after SIGTERM",
      (report.server.signal ? `signal ${report.server.signal}` : `code ${report.server.exitCode}`) +
      (report.shutdown
        ? ` in ${report.shutdown.seconds.toFixed(2)} s; ${report.shutdown.idle} idle ` +
          `connections; response in progress ${report.shutdown.inFlight}`
        : ""),
    ],
    ["server stderr lines", String(report.server.stderrLines)],
  ];
}

// ---------------------------------------------------------------------------
// Main

/** Resolves true when `promise` settles within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function fetchStats(run: Run): Promise<unknown> {
  let client: TcpCacheClient | undefined;
  try {
    client = await run.connect();
    return await client.stats();
  } catch (error) {
    run.tally.fail("connection", `STATS at the end: ${describe(error)}`);
    return undefined;
  } finally {
    run.release(client);
  }
}

/** Waits for the descriptor count to come back to `start` (or the time to run out). */
async function settledFds(pid: number, start: number): Promise<number> {
  const until = performance.now() + FD_SETTLE_MS;
  let count = await countFds(pid) ?? -1;
  while (count > start && performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    count = await countFds(pid) ?? -1;
  }
  return count;
}

interface Shutdown {
  /** Seconds from SIGTERM to the exit. */
  seconds: number;
  /** Connections that were open and idle at SIGTERM. */
  idle: number;
  /** What became of a large response in progress at SIGTERM. */
  inFlight: string;
}

/**
 * Stops the server with SIGTERM as a supervisor would: with idle connections
 * open and a large response in progress, which must still complete in full.
 */
async function stopServer(run: Run): Promise<Shutdown> {
  const { server, tally } = run;
  const idle: TcpCacheClient[] = [];
  for (let i = 0; i < 3; i++) {
    try {
      const client = await run.connect();
      tally.requests++;
      await client.ping();
      idle.push(client);
    } catch (error) {
      tally.fail("connection", `idle connection before SIGTERM: ${describe(error)}`);
    }
  }
  // The largest file: more than the socket buffers hold, so it is still
  // being sent when the signal lands.
  const file = run.tree.large.reduce((a, b) => (b.size > a.size ? b : a));
  let conn: Deno.TcpConn | undefined;
  let reader: ByteReader | undefined;
  let inFlight = "not tried";
  try {
    conn = await Deno.connect({ hostname: HOST, port: server.port });
    tally.connections++;
    tally.requests++;
    await writeAll(conn, encoder.encode(formatRequest("GET", [file.path])));
    reader = new ByteReader(conn, 64 * KiB);
    const header = await readHeader(reader);
    if (!header.ok || header.length !== file.size) {
      tally.fail("unexpected", `GET ${file.path} before SIGTERM: ${JSON.stringify(header)}`);
      reader = undefined;
    }
  } catch (error) {
    tally.fail("connection", `GET ${file.path} before SIGTERM: ${describe(error)}`);
    reader = undefined;
  }
  const signalled = performance.now();
  server.child.kill("SIGTERM");
  if (conn && reader) {
    const open = conn;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(open);
    }, SHUTDOWN_MS);
    try {
      const check = new RangeCheck(file, 0);
      await reader.readBody(file.size, check.sink);
      if (check.mismatchAt >= 0) {
        tally.fail(
          "verification",
          `GET ${file.path} across SIGTERM: wrong byte at ${check.mismatchAt}`,
        );
      } else {
        tally.bytesVerified += check.received;
      }
      if (await reader.readLine(8192) !== null) {
        tally.fail("unexpected", "the server sent more after the last response at SIGTERM");
      }
      inFlight = `completed (${formatBytes(file.size)})`;
    } catch (error) {
      inFlight = timedOut ? "stalled" : "cut short";
      tally.fail("other", `a response in progress at SIGTERM was ${inFlight}: ${describe(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }
  closeQuietly(conn ?? { close() {} });
  if (!await settlesWithin(server.status, SHUTDOWN_MS)) {
    tally.fail("other", `the server did not exit within ${SHUTDOWN_MS / 1000} s of SIGTERM`);
    server.child.kill("SIGKILL");
  }
  const seconds = (performance.now() - signalled) / 1000;
  for (const client of idle) run.release(client);
  return { seconds, idle: idle.length, inFlight };
}

async function soak(options: SoakOptions, root: string, onServer: (s: ServerProcess) => void) {
  console.error(`soak: generating files in ${root}`);
  const tree = await generateTree(`${root}/files`, options.seed, options.capacity);
  console.error(
    `soak: ${tree.byPath.size} files, ${formatBytes(tree.totalBytes)}; starting the server`,
  );
  const server = await spawnServer(
    `${root}/files`,
    `${root}/cache`,
    options.cacheSizeText,
    options.workers,
  );
  onServer(server);
  const run = new Run(options, tree, server);
  const { tally } = run;
  const fdStart = await countFds(server.pid) ?? -1;
  await sample(run);

  let stopping = false;
  server.status.then((status) => {
    if (!run.aborted && !stopping) {
      run.aborted = true;
      tally.fail("other", `the server exited during the soak (code ${status.code})`);
    }
  });

  console.error(
    `soak: server pid ${server.pid} on port ${server.port}; ${options.clients} clients for ` +
      `${options.durationMs / 1000} s`,
  );
  const cpuBefore = await Promise.all([readCpu(server.pid), readCpu(Deno.pid)]);
  const started = performance.now();
  run.deadline = started + options.durationMs;
  const clientsDone = Promise.withResolvers<void>();
  const monitorDone = monitor(run, clientsDone.promise, started);
  const clients = Array.from({ length: options.clients }, (_, i) => runClient(run, i));
  const allClients = Promise.all(clients);
  await pause(options.durationMs, allClients);
  const elapsed = performance.now() - started;

  let finished = 0;
  for (const client of clients) client.then(() => finished++);
  if (!await settlesWithin(allClients, DRAIN_MS)) {
    tally.fail(
      "other",
      `${options.clients - finished} clients were still busy ${DRAIN_MS / 1000} s after the end`,
    );
    run.forced = true;
    for (const conn of run.live) closeQuietly(conn);
    await settlesWithin(allClients, 5000);
  }
  const drain = performance.now() - started - elapsed;
  const cpuAfter = await Promise.all([readCpu(server.pid), readCpu(Deno.pid)]);
  clientsDone.resolve();
  if (!await settlesWithin(monitorDone, SHUTDOWN_MS)) {
    tally.fail("other", `LIST did not answer within ${SHUTDOWN_MS / 1000} s`);
    run.forced = true;
    for (const conn of run.live) closeQuietly(conn);
    await settlesWithin(monitorDone, 5000);
  }
  await sample(run);

  const stats = server.exited ? undefined : await fetchStats(run);
  const fdFinal = server.exited ? -1 : await settledFds(server.pid, fdStart);
  let fdDescription: string | undefined;
  if (fdFinal > fdStart + FD_SLACK) {
    fdDescription = await describeFds(server.pid);
    tally.fail(
      "other",
      `the server holds ${fdFinal} descriptors after every client closed, ${fdStart} at start ` +
        `(${fdDescription})`,
    );
  }
  const memory = await readMemory(server.pid);
  const errors500 = (stats as { errors?: Record<string, number> } | undefined)?.errors?.["500"];
  if (errors500) tally.fail("other", `the server counted ${errors500} errors 500`);

  stopping = true;
  let shutdown: Shutdown | undefined;
  if (!server.exited) shutdown = await stopServer(run);
  const status = await server.status;
  if (status.code !== 0 && !run.aborted) {
    tally.fail("other", `the server exited with code ${status.code} (signal ${status.signal})`);
  }
  await settlesWithin(server.stderr.done, 2000);

  const report: Report = {
    passed: tally.failureCount === 0,
    seed: options.seed,
    durationS: options.durationMs / 1000,
    elapsedS: elapsed / 1000,
    drainS: drain / 1000,
    clients: options.clients,
    cacheCapacity: options.capacity,
    files: {
      small: tree.small.length + tree.odd.length,
      medium: tree.medium.length,
      large: tree.large.length,
      largerThanCache: [...tree.byPath.values()].filter((f) => f.size > options.capacity).length,
      totalBytes: tree.totalBytes,
    },
    requests: tally.requests,
    requestsPerSecond: tally.requests / (elapsed / 1000),
    bytesVerified: tally.bytesVerified,
    connectionsOpened: tally.connections,
    outcomes: { whole: tally.whole, range: tally.range },
    expectedErrors: tally.expected,
    unexpectedErrors: tally.failures.unexpected,
    connectionFailures: tally.failures.connection,
    verificationFailures: tally.failures.verification,
    cacheBoundViolations: tally.failures.bound,
    otherFailures: tally.failures.other,
    disconnects: tally.disconnects,
    listChecks: tally.listChecks,
    cachePeakUsed: tally.peakUsed,
    cachePeakEntries: tally.peakEntries,
    rss: {
      peakKiB: tally.peakRssKiB,
      hwmKiB: Math.max(memory?.hwmKiB ?? 0, tally.peakRssKiB),
      trend: rssTrend(tally.rssByRequests),
      finalKiB: memory?.rssKiB ?? tally.lastRssKiB,
    },
    cpu: {
      serverUser: cpuAfter[0].user - cpuBefore[0].user,
      serverSystem: cpuAfter[0].system - cpuBefore[0].system,
      soakUser: cpuAfter[1].user - cpuBefore[1].user,
      soakSystem: cpuAfter[1].system - cpuBefore[1].system,
    },
    fds: { start: fdStart, peak: tally.peakFds, final: fdFinal, finalDescription: fdDescription },
    shutdown,
    server: {
      exitCode: status.code,
      signal: status.signal,
      stats,
      stderrLines: server.stderr.lines,
      stderrSample: server.stderr.sample,
    },
    failures: tally.details,
  };
  return report;
}

async function main(args: string[]): Promise<number> {
  let options: SoakOptions;
  try {
    const parsed = parseOptions(args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    options = parsed;
  } catch (error) {
    console.error(`soak: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  const root = await Deno.makeTempDir({ prefix: "tcpcache-soak-" });
  let server: ServerProcess | undefined;
  const abandon = (why: string, code: number) => {
    console.error(`soak: ${why}; killing the server and removing ${root}`);
    try {
      if (server && !server.exited) server.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    try {
      Deno.removeSync(root, { recursive: true });
    } catch {
      // nothing to remove
    }
    Deno.exit(code);
  };
  const hardCap = setTimeout(
    () =>
      abandon(`hard time cap reached (${(options.durationMs + HARD_CAP_EXTRA_MS) / 1000} s)`, 1),
    options.durationMs + HARD_CAP_EXTRA_MS,
  );
  const onInterrupt = () => abandon("interrupted", 130);
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    const report = await soak(options, root, (s) => server = s);
    console.log(markdownTable(["metric", "value"], summaryRows(report)));
    if (report.failures.length > 0) {
      console.log(`\nFailures (first ${report.failures.length}):\n`);
      for (const failure of report.failures) console.log(`- ${failure.replaceAll("\n", " ")}`);
    }
    if (report.server.stderrSample.length > 0) {
      console.log(`\nServer stderr (first ${report.server.stderrSample.length} lines):\n`);
      for (const line of report.server.stderrSample) console.log(`    ${line}`);
    }
    if (options.json) {
      await Deno.writeTextFile(options.json, JSON.stringify(report, null, 2) + "\n");
    }
    return report.passed ? 0 : 1;
  } catch (error) {
    console.error(`soak: ${describe(error)}`);
    return 1;
  } finally {
    clearTimeout(hardCap);
    Deno.removeSignalListener("SIGINT", onInterrupt);
    const s = server as ServerProcess | undefined;
    if (s && !s.exited) {
      s.child.kill("SIGKILL");
      await s.status;
    }
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
