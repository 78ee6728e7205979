/**
 * The benchmark's load driver. It speaks tcpcache's protocol (`GET path\n`,
 * answered by `OK <len> ...\n` and the body) and plain HTTP/1.1 keep-alive,
 * so one driver measures tcpcache, nginx and the Python reference alike.
 *
 * The main thread creates a {@linkcode DriverPool}; each of its Deno Workers
 * runs this same module and drives many connections from its own event loop.
 * A worker allocates one read buffer per connection from a pool and reuses it
 * for every read; bodies are counted (or, in the self-check, compared with the
 * file) and dropped. Latencies go into a fixed log-scale histogram, so the
 * per-request cost is a few additions whatever the run's length.
 *
 * @module
 */

import { writeAll } from "../util/byte_reader.ts";

/** The wire protocol a job speaks. */
export type Protocol = "tcpcache" | "http";

/**
 * How a job uses its connections:
 * - `keep-alive`: each connection sends request after request;
 * - `new-connection`: each request gets a fresh connection, closed after it;
 * - `hold`: like keep-alive for a fixed number of requests, then the
 *   connections stay open until {@linkcode DriverPool.release}.
 */
export type Mode = "keep-alive" | "new-connection" | "hold";

/** A load to apply, as the main thread describes it to a {@linkcode DriverPool}. */
export interface LoadSpec {
  /** The server's port on 127.0.0.1. */
  port: number;
  /** The protocol to speak. */
  protocol: Protocol;
  /** Paths relative to the served directory, without a leading `/`. */
  paths: string[];
  /** The expected body length of each path (same order as `paths`). */
  sizes: number[];
  /** Connections in all, spread evenly over the workers. */
  connections: number;
  /** How the connections are used. */
  mode: Mode;
  /**
   * Milliseconds of counted load; 0 for a fixed number of requests per
   * connection (`requests`), all counted.
   */
  durationMs: number;
  /**
   * Milliseconds of uncounted load before the window (connections opened,
   * caches and TCP windows warm).
   * @default {0}
   */
  warmupMs?: number;
  /**
   * Requests per connection when `durationMs` is 0.
   * @default {1}
   */
  requests?: number;
  /**
   * Each connection's read buffer, in bytes.
   * @default {65536}
   */
  bufferSize?: number;
  /**
   * Workers to use, at most the pool's size.
   * @default {all of the pool}
   */
  workers?: number;
  /**
   * Local files to compare each body with byte for byte (same order as
   * `paths`): the driver's self-check, not for timing.
   */
  verifyFiles?: string[];
}

/** What one load measured, merged over the workers. */
export interface LoadResult {
  /** Responses completed, complete and correct, inside the window. */
  requests: number;
  /** Body bytes received inside the window. */
  bytes: number;
  /** The window's length in milliseconds (for fixed counts: first request to last byte). */
  windowMs: number;
  /** Requests per second. */
  requestsPerSecond: number;
  /** Body megabytes (10^6 bytes) per second. */
  megabytesPerSecond: number;
  /** Median latency in milliseconds, from request sent to last body byte. */
  p50Ms: number;
  /** 99th percentile latency in milliseconds. */
  p99Ms: number;
  /** Failed requests and connections: wrong status, wrong length, resets, refused connects. */
  errors: number;
  /** The first few errors, described. */
  errorSamples: string[];
  /** Connections opened. */
  connects: number;
  /** tcpcache's `cache=` outcomes (zero for other servers). */
  cache: { hit: number; miss: number; bypass: number };
  /**
   * The busiest worker's CPU use during the window, as a fraction of one
   * core: near 1 means the driver, not the server, set the pace. NaN when
   * the window was too short (under 250 ms) to tell.
   */
  driverBusy: number;
}

// ---------------------------------------------------------------------------
// Latency histogram

/** Buckets per factor e of latency: about 2% resolution. */
const BUCKETS_PER_E = 50;
/** Enough buckets for latencies up to e^20 µs (about 8 minutes). */
const BUCKET_COUNT = 20 * BUCKETS_PER_E;

function bucketOf(microseconds: number): number {
  if (microseconds <= 1) return 0;
  return Math.min(BUCKET_COUNT - 1, Math.floor(Math.log(microseconds) * BUCKETS_PER_E));
}

/** The latency in milliseconds at quantile `q` of a histogram (bucket midpoints). */
function quantileMs(histogram: ArrayLike<number>, q: number): number {
  let total = 0;
  for (let i = 0; i < histogram.length; i++) total += histogram[i];
  if (total === 0) return 0;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < histogram.length; i++) {
    seen += histogram[i];
    if (seen >= rank) return Math.exp((i + 0.5) / BUCKETS_PER_E) / 1000;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Messages between the pool and its workers

/**
 * One worker's share of a load: the spec's fields (its own count of
 * connections), with the window as timestamps and the defaults filled in.
 */
interface WorkerJob extends
  Pick<
    LoadSpec,
    "port" | "protocol" | "paths" | "sizes" | "connections" | "mode" | "verifyFiles"
  > {
  /** Epoch milliseconds when the counted window opens. */
  windowStart: number;
  /** Epoch milliseconds when it closes (Infinity for fixed counts). */
  windowEnd: number;
  requests: number;
  bufferSize: number;
  /** The first path this worker asks for, so that workers spread over the files. */
  firstPath: number;
}

/** One worker's measurements: its tally, and the CPU its thread used. */
interface WorkerResult extends Tally {
  /** CPU milliseconds this worker's thread used in the window, and the window (0: too short). */
  cpuMs: number;
  cpuWallMs: number;
}

type ToWorker = { type: "job"; job: WorkerJob } | { type: "release" } | { type: "abort" };
type FromWorker = { type: "result"; result: WorkerResult } | { type: "released" };

// ---------------------------------------------------------------------------
// The pool (main thread)

/** Extra time past a load's expected end before its connections are cut. */
const STALL_GRACE_MS = 30_000;

/**
 * Deno Workers running this module: one load at a time, spread over them.
 *
 * @example
 * ```ts
 * const pool = new DriverPool(2);
 * const result = await pool.run({
 *   port: 9089, protocol: "tcpcache", paths: ["hello.txt"], sizes: [303],
 *   connections: 8, mode: "keep-alive", durationMs: 3000,
 * });
 * console.log(result.requestsPerSecond, result.p99Ms);
 * pool.close();
 * ```
 */
export class DriverPool {
  #workers: Worker[];
  /** Workers that hold connections after a `hold` load. */
  #holding: Worker[] = [];

  /** Starts `size` workers. */
  constructor(size: number) {
    this.#workers = Array.from(
      { length: size },
      (_, i) => new Worker(import.meta.url, { type: "module", name: `driver-${i}` }),
    );
  }

  /** The number of workers. */
  get size(): number {
    return this.#workers.length;
  }

  /**
   * Applies a load and resolves with what it measured. A load that runs past
   * its expected end by {@linkcode STALL_GRACE_MS} has its connections cut;
   * the requests they were waiting for count as errors ("stalled").
   */
  async run(spec: LoadSpec): Promise<LoadResult> {
    const workers = this.#workers.slice(0, Math.max(1, Math.min(spec.workers ?? 99, this.size)));
    const used = workers.slice(0, Math.min(workers.length, spec.connections));
    const warmupMs = spec.warmupMs ?? 0;
    // Workers have their own clocks' origins: agree on epoch time instead.
    const windowStart = epochNow() + warmupMs;
    const windowEnd = spec.durationMs > 0 ? windowStart + spec.durationMs : Infinity;
    const jobs = used.map((_, i): WorkerJob => ({
      port: spec.port,
      protocol: spec.protocol,
      paths: spec.paths,
      sizes: spec.sizes,
      connections: share(spec.connections, used.length, i),
      mode: spec.mode,
      windowStart,
      windowEnd,
      requests: spec.requests ?? 1,
      bufferSize: spec.bufferSize ?? 64 * 1024,
      firstPath: Math.floor(i * spec.paths.length / used.length),
      verifyFiles: spec.verifyFiles,
    }));
    const results = await Promise.all(used.map((worker, i) => this.#runJob(worker, jobs[i])));
    if (spec.mode === "hold") this.#holding = used;
    return merge(results, spec.durationMs);
  }

  /** Closes the connections a `hold` load left open. */
  async release(): Promise<void> {
    const holding = this.#holding;
    this.#holding = [];
    await Promise.all(holding.map((worker) => exchange(worker, { type: "release" }, "released")));
  }

  /** Stops the workers. */
  close(): void {
    for (const worker of this.#workers) worker.terminate();
  }

  async #runJob(worker: Worker, job: WorkerJob): Promise<WorkerResult> {
    const answer = exchange(worker, { type: "job", job }, "result");
    const expectedEnd = job.windowEnd === Infinity ? epochNow() + 60_000 : job.windowEnd;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, expectedEnd - epochNow() + STALL_GRACE_MS);
    });
    stalled.then(() => worker.postMessage({ type: "abort" } satisfies ToWorker));
    try {
      const message = await answer;
      return (message as { result: WorkerResult }).result;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Sends a message and resolves with the first answer of type `expect`. */
function exchange(worker: Worker, message: ToWorker, expect: string): Promise<FromWorker> {
  return new Promise((resolve, reject) => {
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      if (event.data.type === expect) resolve(event.data);
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      reject(new Error(`driver worker failed: ${event.message}`));
    };
    worker.postMessage(message);
  });
}

/** Worker `i`'s part of `total` split over `parts`. */
function share(total: number, parts: number, i: number): number {
  return Math.floor(total / parts) + (i < total % parts ? 1 : 0);
}

function merge(results: WorkerResult[], durationMs: number): LoadResult {
  const histogram = new Array<number>(BUCKET_COUNT).fill(0);
  const sum = (pick: (r: WorkerResult) => number) => results.reduce((a, r) => a + pick(r), 0);
  for (const result of results) {
    result.histogram.forEach((count, i) => histogram[i] += count);
  }
  const first = Math.min(...results.map((r) => r.firstStart));
  const last = Math.max(...results.map((r) => r.lastEnd));
  const windowMs = durationMs > 0 ? durationMs : Math.max(last - first, 1e-3);
  const requests = sum((r) => r.requests);
  const bytes = sum((r) => r.bytes);
  return {
    requests,
    bytes,
    windowMs,
    requestsPerSecond: requests / (windowMs / 1000),
    megabytesPerSecond: bytes / 1e6 / (windowMs / 1000),
    p50Ms: quantileMs(histogram, 0.5),
    p99Ms: quantileMs(histogram, 0.99),
    errors: sum((r) => r.errors),
    errorSamples: results.flatMap((r) => r.errorSamples).slice(0, 10),
    connects: sum((r) => r.connects),
    cache: {
      hit: sum((r) => r.cache.hit),
      miss: sum((r) => r.cache.miss),
      bypass: sum((r) => r.cache.bypass),
    },
    driverBusy: Math.max(...results.map((r) => r.cpuWallMs > 0 ? r.cpuMs / r.cpuWallMs : NaN)),
  };
}

// ---------------------------------------------------------------------------
// Response parsing (worker side)

const LF = 10;
const CR = 13;
const encoder = new TextEncoder();
const CACHE_KEY = encoder.encode(" cache=");
/** The first letter of a `cache=` value: hit, miss, bypass. */
const HIT = 104;
const MISS = 109;
const BYPASS = 98;
const CONTENT_LENGTH = encoder.encode("\r\ncontent-length:");

/** A response that was not the one expected; the connection is dropped. */
class ResponseError extends Error {}

/** Where `pattern` occurs in `buf[from, to)`, letters compared case-insensitively; -1 if not. */
function indexOfBytes(buf: Uint8Array, pattern: Uint8Array, from: number, to: number): number {
  outer: for (let i = from; i + pattern.length <= to; i++) {
    for (let j = 0; j < pattern.length; j++) {
      const b = buf[i + j];
      if ((b >= 65 && b <= 90 ? b | 32 : b) !== pattern[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/** The decimal number at `buf[from...]`, up to the first non-digit; -1 if none. */
function parseDigits(buf: Uint8Array, from: number, to: number): number {
  let value = 0;
  let i = from;
  while (i < to && buf[i] === 32) i++;
  const start = i;
  for (; i < to && buf[i] >= 48 && buf[i] <= 57 && i - start < 16; i++) {
    value = value * 10 + buf[i] - 48;
  }
  return i === start ? -1 : value;
}

function latin1(buf: Uint8Array, from: number, to: number): string {
  return String.fromCharCode(...buf.subarray(from, Math.min(to, from + 200)));
}

/** Counters a worker keeps while a job runs. */
interface Tally {
  requests: number;
  bytes: number;
  errors: number;
  errorSamples: string[];
  connects: number;
  histogram: number[];
  cache: { hit: number; miss: number; bypass: number };
  /** Epoch milliseconds of the first request sent and the last response completed. */
  firstStart: number;
  lastEnd: number;
}

/**
 * One client connection with its pooled read buffer. `start`..`end` is the
 * part of the buffer read but not yet consumed.
 */
class Client {
  readonly conn: Deno.TcpConn;
  /** The pooled read buffer, given back when the connection closes. */
  readonly buf: Uint8Array;
  #start = 0;
  #end = 0;

  constructor(conn: Deno.TcpConn, buf: Uint8Array) {
    this.conn = conn;
    this.buf = buf;
  }

  /**
   * Sends one request and reads its whole answer, handing each piece of the
   * body to `onBody`. Throws a {@linkcode ResponseError} (or the socket's
   * error) when the answer is not a complete success of `expected` bytes.
   * Resolves with the first byte of tcpcache's `cache=` value, or 0.
   */
  async fetch(
    request: Uint8Array,
    protocol: Protocol,
    expected: number,
    onBody: (buf: Uint8Array, from: number, to: number) => void,
  ): Promise<number> {
    await writeAll(this.conn, request);
    const headerEnd = await this.#readHeader(protocol);
    const { length, outcome } = protocol === "tcpcache"
      ? this.#parseTcpcache(headerEnd)
      : this.#parseHttp(headerEnd);
    this.#start = headerEnd;
    if (length !== expected) {
      throw new ResponseError(`body of ${length} bytes, expected ${expected}`);
    }
    await this.#readBody(length, onBody);
    if (this.#start !== this.#end) {
      throw new ResponseError(`${this.#end - this.#start} bytes after the body`);
    }
    return outcome;
  }

  /** Reads until the header is complete; returns the index just past it. */
  async #readHeader(protocol: Protocol): Promise<number> {
    let searched = this.#start;
    while (true) {
      const end = protocol === "tcpcache"
        ? this.#findLine(searched)
        : this.#findBlankLine(searched);
      if (end >= 0) return end;
      searched = Math.max(this.#start, this.#end - 3);
      if (this.#end === this.buf.length) {
        if (this.#start === 0) throw new ResponseError("header larger than the read buffer");
        this.buf.copyWithin(0, this.#start, this.#end);
        searched -= this.#start;
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.conn.read(this.buf.subarray(this.#end));
      if (n === null) {
        throw new ResponseError(
          this.#end > this.#start ? "connection closed inside a header" : "connection closed",
        );
      }
      this.#end += n;
    }
  }

  #findLine(from: number): number {
    const lf = this.buf.indexOf(LF, from);
    return lf >= 0 && lf < this.#end ? lf + 1 : -1;
  }

  #findBlankLine(from: number): number {
    const buf = this.buf;
    for (let i = buf.indexOf(LF, from); i >= 0 && i < this.#end; i = buf.indexOf(LF, i + 1)) {
      if (i >= 3 && buf[i - 1] === CR && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
    }
    return -1;
  }

  /** `OK <len> ... cache=hit|miss|bypass ...` */
  #parseTcpcache(headerEnd: number): { length: number; outcome: number } {
    const buf = this.buf;
    const start = this.#start;
    if (buf[start] !== 79 || buf[start + 1] !== 75 || buf[start + 2] !== 32) {
      throw new ResponseError(`answer "${latin1(buf, start, headerEnd - 1)}"`);
    }
    const length = parseDigits(buf, start + 3, headerEnd);
    if (length < 0) throw new ResponseError(`no length in "${latin1(buf, start, headerEnd - 1)}"`);
    const key = indexOfBytes(buf, CACHE_KEY, start, headerEnd);
    return { length, outcome: key >= 0 ? buf[key + CACHE_KEY.length] : 0 };
  }

  /** `HTTP/1.1 200 ...`, then a `Content-Length` among the headers. */
  #parseHttp(headerEnd: number): { length: number; outcome: number } {
    const buf = this.buf;
    const start = this.#start;
    // "HTTP/1.1 200": the status code is at offset 9.
    if (buf[start + 9] !== 50 || buf[start + 10] !== 48 || buf[start + 11] !== 48) {
      throw new ResponseError(`answer "${latin1(buf, start, buf.indexOf(CR, start))}"`);
    }
    const at = indexOfBytes(buf, CONTENT_LENGTH, start, headerEnd);
    if (at < 0) throw new ResponseError("no Content-Length header");
    return { length: parseDigits(buf, at + CONTENT_LENGTH.length, headerEnd), outcome: 0 };
  }

  async #readBody(
    length: number,
    onBody: (buf: Uint8Array, from: number, to: number) => void,
  ): Promise<void> {
    const buf = this.buf;
    let remaining = length;
    const buffered = Math.min(this.#end - this.#start, remaining);
    if (buffered > 0) onBody(buf, this.#start, this.#start + buffered);
    this.#start += buffered;
    remaining -= buffered;
    while (remaining > 0) {
      // The buffer is all consumed here: read into the whole of it.
      const n = await this.conn.read(buf);
      if (n === null) {
        throw new ResponseError(`connection closed after ${length - remaining} of ${length} bytes`);
      }
      const take = Math.min(n, remaining);
      onBody(buf, 0, take);
      this.#start = take;
      this.#end = n;
      remaining -= take;
    }
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }
}

// ---------------------------------------------------------------------------
// The load (worker side)

/** Read buffers of the worker, reused across connections and jobs. */
const bufferPool = new Map<number, Uint8Array[]>();

function takeBuffer(size: number): Uint8Array {
  return bufferPool.get(size)?.pop() ?? new Uint8Array(size);
}

function giveBuffer(buf: Uint8Array): void {
  const free = bufferPool.get(buf.length) ?? [];
  free.push(buf);
  bufferPool.set(buf.length, free);
}

/** One job's state in a worker. */
class Load {
  job: WorkerJob;
  tally: Tally;
  requests: Uint8Array[];
  expected: Uint8Array[] | undefined;
  /** Connections open now, so an abort can cut them. */
  live = new Set<Client>();
  /** Connections a `hold` load keeps until released. */
  held: Client[] = [];
  aborted = false;
  #next: number;

  constructor(job: WorkerJob) {
    this.job = job;
    this.#next = job.firstPath;
    this.requests = job.paths.map((path) =>
      encoder.encode(
        job.protocol === "tcpcache"
          ? `GET ${path}\n`
          : `GET /${path} HTTP/1.1\r\nHost: bench\r\n\r\n`,
      )
    );
    this.expected = job.verifyFiles?.map((file) => Deno.readFileSync(file));
    this.tally = {
      requests: 0,
      bytes: 0,
      errors: 0,
      errorSamples: [],
      connects: 0,
      histogram: new Array<number>(BUCKET_COUNT).fill(0),
      cache: { hit: 0, miss: 0, bypass: 0 },
      firstStart: Infinity,
      lastEnd: 0,
    };
  }

  /** Whether another request may start. */
  running(done: number): boolean {
    if (this.aborted) return false;
    if (this.job.windowEnd === Infinity) return done < this.job.requests;
    return epochNow() < this.job.windowEnd;
  }

  nextPath(): number {
    return this.#next++ % this.job.paths.length;
  }

  fail(what: string): void {
    this.tally.errors++;
    if (this.tally.errorSamples.length < 5) this.tally.errorSamples.push(what);
  }

  async open(): Promise<Client> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.job.port });
    conn.setNoDelay(true);
    this.tally.connects++;
    const client = new Client(conn, takeBuffer(this.job.bufferSize));
    this.live.add(client);
    return client;
  }

  close(client: Client): void {
    this.live.delete(client);
    try {
      client.conn.close();
    } catch {
      // already closed by an abort
    }
    giveBuffer(client.buf);
  }

  /** One request on `client`, timed and counted. Throws when it failed. */
  async request(client: Client, startedAt: number): Promise<void> {
    const index = this.nextPath();
    const t = this.tally;
    const { windowStart, windowEnd } = this.job;
    const expected = this.expected?.[index];
    let offset = 0;
    const outcome = await client.fetch(
      this.requests[index],
      this.job.protocol,
      this.job.sizes[index],
      (buf, from, to) => {
        if (expected) this.verify(buf.subarray(from, to), expected, offset, index);
        offset += to - from;
        const now = epochNow();
        if (now >= windowStart && now <= windowEnd) t.bytes += to - from;
      },
    );
    const now = epochNow();
    t.firstStart = Math.min(t.firstStart, now - (performance.now() - startedAt));
    t.lastEnd = Math.max(t.lastEnd, now);
    if (now < windowStart || now > windowEnd) return;
    t.requests++;
    t.histogram[bucketOf((performance.now() - startedAt) * 1000)]++;
    if (outcome === HIT) t.cache.hit++;
    else if (outcome === MISS) t.cache.miss++;
    else if (outcome === BYPASS) t.cache.bypass++;
  }

  verify(chunk: Uint8Array, expected: Uint8Array, offset: number, index: number): void {
    for (let i = 0; i < chunk.length; i++) {
      if (chunk[i] !== expected[offset + i]) {
        throw new ResponseError(`${this.job.paths[index]}: wrong byte at ${offset + i}`);
      }
    }
  }

  /** Cuts every open connection: the requests waiting on them fail. */
  abort(): void {
    this.aborted = true;
    for (const client of this.live) {
      try {
        client.conn.close();
      } catch {
        // already closed
      }
    }
  }
}

/** Epoch milliseconds with a fraction: comparable across workers, finer than `Date.now()`. */
function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

function describe(error: unknown, load: Load): string {
  const text = error instanceof Error ? error.message : String(error);
  return load.aborted ? `stalled, cut by the driver: ${text}` : text;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Keep-alive and hold: one connection, request after request; a failure reopens it. */
async function keepAlive(load: Load): Promise<void> {
  let client: Client | undefined;
  for (let done = 0; load.running(done); done++) {
    try {
      client ??= await load.open();
      await load.request(client, performance.now());
    } catch (error) {
      load.fail(describe(error, load));
      if (client) load.close(client);
      // A refused connect must not turn into a busy loop against a dead server.
      else await pause(10);
      client = undefined;
    }
  }
  if (!client) return;
  if (load.job.mode === "hold" && !load.aborted) load.held.push(client);
  else load.close(client);
}

/** A fresh connection for each request, closed by the client after the answer. */
async function newConnections(load: Load): Promise<void> {
  for (let done = 0; load.running(done); done++) {
    const started = performance.now();
    let client: Client | undefined;
    try {
      client = await load.open();
      await load.request(client, started);
    } catch (error) {
      load.fail(describe(error, load));
      if (!client) await pause(10);
    } finally {
      if (client) load.close(client);
    }
  }
}

/** The shortest span over which a thread's CPU use is worth reporting. */
const MIN_CPU_WINDOW_MS = 250;

/** CPU milliseconds (user and system) the calling thread has used. */
function threadCpuMs(): number {
  try {
    // Synchronous on purpose: an async read would run on another thread.
    const stat = Deno.readTextFileSync("/proc/thread-self/stat");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

async function runJob(load: Load): Promise<WorkerResult> {
  const { job } = load;
  let cpuStart = threadCpuMs();
  let wallStart = epochNow();
  // Measure the thread's CPU over the counted window, not the warm-up.
  const timer = setTimeout(() => {
    cpuStart = threadCpuMs();
    wallStart = epochNow();
  }, Math.max(0, job.windowStart - epochNow()));
  const loop = job.mode === "new-connection" ? newConnections : keepAlive;
  await Promise.all(Array.from({ length: job.connections }, () => loop(load)));
  clearTimeout(timer);
  // CPU ticks are 10 ms: a shorter span says nothing about how busy the thread was.
  const cpuMs = threadCpuMs() - cpuStart;
  const wallMs = epochNow() - wallStart;
  const measurable = Number.isFinite(cpuMs) && wallMs >= MIN_CPU_WINDOW_MS;
  return { ...load.tally, cpuMs: measurable ? cpuMs : 0, cpuWallMs: measurable ? wallMs : 0 };
}

/** The worker's side: one job at a time, answered with its measurements. */
function serveJobs(): void {
  const scope = self as unknown as {
    postMessage(message: FromWorker): void;
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  };
  let current: Load | undefined;
  scope.onmessage = async (event) => {
    const message = event.data;
    if (message.type === "job") {
      current = new Load(message.job);
      scope.postMessage({ type: "result", result: await runJob(current) });
    } else if (message.type === "abort") {
      current?.abort();
    } else if (message.type === "release") {
      for (const client of current?.held ?? []) current?.close(client);
      scope.postMessage({ type: "released" });
    }
  };
}

if (import.meta.main && "WorkerGlobalScope" in globalThis) serveJobs();
