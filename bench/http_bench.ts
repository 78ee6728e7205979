/**
 * The HTTP benchmark that issue 14's targets are judged by: tcpcache's
 * HTTP/1.1 front end beside nginx (sendfile, the same files), a bare HTTP/1.1
 * loop on `Deno.listen` (bench/reference/bare_http.ts: pre-built answers in
 * memory, the ceiling for any Deno HTTP server here) and tcpcache's own TCP
 * protocol, in one run.
 *
 *     deno task bench:http [--duration 5] [--rounds 3]
 *
 * One tcpcache process serves both `--port` and `--http-port`, so the two
 * protocols share one cache. Workloads, all cache hits after warm-up:
 *  1. 4 KiB files, 64 keep-alive connections (`wrk -t2 -c64`);
 *  2. 4 KiB files, a new connection per request (64 clients);
 *  3. 1 MiB files, 16 keep-alive connections (MB/s);
 *  4. one 64 MiB file, one keep-alive connection (MB/s).
 *
 * HTTP servers are loaded with `wrk` (Debian's package) where it is
 * installed, and with the Deno driver (bench/driver.ts) too; the TCP
 * protocol only with the Deno driver. HTTP against the TCP protocol is
 * judged with the same driver on both sides. Every row reports the server's
 * CPU per request: utime + stime of its process tree over the window,
 * divided by the requests answered in it. Ends with issue 14's targets, met
 * or not; the exit status is 0 whatever they say (it is a report).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { sampleCpu } from "./cpu.ts";
import type { DriverPool, LoadSpec } from "./driver.ts";
import { type FileSet, fileWriter, firstFiles, KiB, MiB, numberedPaths } from "./files.ts";
import {
  type Endpoint,
  type Load,
  type Measurement,
  report,
  type Workload,
} from "./http_report.ts";
import { checkBodies, warm } from "./preflight.ts";
import {
  findExecutable,
  HOST,
  log,
  processTree,
  run,
  type Server,
  startBareHttp,
  startNginx,
  startTcpcache,
} from "./processes.ts";
import { formatFigure } from "./report.ts";
import { readCommandLine, runSession } from "./session.ts";
import { runWrk, writeWrkScript } from "./wrk.ts";

const DRIVER_WORKERS = 2;
/** Uncounted load before each window: whole seconds, as wrk takes no fractions. */
const WARMUP_S = 1;
/** Idle connections held open to count the descriptors each costs. */
const IDLE_CONNECTIONS = 64;

const USAGE =
  `bench/http_bench.ts: tcpcache over HTTP/1.1 vs nginx, a bare Deno loop and its TCP protocol

Usage: deno task bench:http [options]
       deno run -A bench/http_bench.ts [options]

Options:
  --duration SECS   counted whole seconds per measurement (default: 5; 1 s of warm-up each)
  --rounds N        measure every row N times, servers in turn, and report each row's
                    median round (default: 3; 1 to 9)
  --no-wrk          load HTTP with the Deno driver only, even where wrk is installed
  -h, --help        show this help
`;

interface Options {
  seconds: number;
  rounds: number;
  wrk: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "5" },
      rounds: { type: "string", default: "3" },
      "no-wrk": { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const seconds = Number(values.duration);
  if (!/^[0-9]+$/.test(values.duration) || seconds < 1 || seconds > 60) {
    throw new Error("--duration must be a whole number of seconds from 1 to 60");
  }
  const rounds = Number(values.rounds);
  if (!/^[1-9]$/.test(values.rounds)) throw new Error("--rounds must be a number from 1 to 9");
  return { seconds, rounds, wrk: !values["no-wrk"] };
}

// ---------------------------------------------------------------------------
// Files, workloads and servers

interface Files {
  small: FileSet;
  mid: FileSet;
  large: FileSet;
}

/** 1,000 files of 4 KiB, 64 of 1 MiB and one of 64 MiB. */
async function writeFiles(dir: string): Promise<Files> {
  const write = fileWriter(dir);
  return {
    small: await write(numberedPaths("small", 1000), 4 * KiB),
    mid: await write(numberedPaths("mid", 64), MiB),
    large: await write(["large/64MiB.bin"], 64 * MiB),
  };
}

const WORKLOADS: Workload[] = [
  {
    key: "small",
    title: "4 KiB, keep-alive c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    mode: "keep-alive",
    bufferSize: 16 * KiB,
  },
  {
    key: "new-connection",
    title: "4 KiB, new conn each, c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    mode: "new-connection",
    bufferSize: 16 * KiB,
  },
  {
    key: "mid",
    title: "1 MiB, keep-alive c=16",
    unit: "MB/s",
    files: "mid",
    connections: 16,
    mode: "keep-alive",
    bufferSize: 256 * KiB,
  },
  {
    key: "large",
    title: "64 MiB, keep-alive c=1",
    unit: "MB/s",
    files: "large",
    connections: 1,
    mode: "keep-alive",
    bufferSize: MiB,
  },
];

/** Where the loads go, and with what. */
interface Context {
  pool: DriverPool;
  seconds: number;
  rounds: number;
  /** wrk's path, when it is installed and wanted. */
  wrk?: string;
  root: string;
  files: Files;
  tcpcache: Server;
  endpoints: Endpoint[];
  measurements: Measurement[];
  /** Descriptors per idle connection, by endpoint label. */
  descriptors: Map<string, { idle: number; held: number; perConnection: number }>;
  /** What the reader must know: errors, misses, a server that exited. */
  problems: string[];
}

function httpEndpoint(key: Endpoint["key"], label: string, port: number, server: Server) {
  return { key, label, protocol: "http" as const, port, server };
}

/** Starts tcpcache (both protocols), nginx (when installed) and the bare loop. */
async function startServers(root: string): Promise<{ tcpcache: Server; endpoints: Endpoint[] }> {
  const files = `${root}/files`;
  const tcpcache = await startTcpcache(files, `${root}/cache`, "256MiB", { httpPort: 0 });
  if (tcpcache.httpPort === undefined) throw new Error("tcpcache's ready line named no HTTP port");
  const endpoints: Endpoint[] = [];
  const nginx = findExecutable("nginx");
  if (nginx) {
    const server = await startNginx(nginx, `${root}/nginx`, files);
    endpoints.push(httpEndpoint("nginx", "nginx", server.port, server));
  } else {
    log("nginx is not installed: no nginx rows, no ratios to nginx");
  }
  const bare = await startBareHttp(files);
  endpoints.push(httpEndpoint("bare", "bare Deno loop", bare.port, bare));
  endpoints.push(httpEndpoint("http", "tcpcache HTTP", tcpcache.httpPort, tcpcache));
  endpoints.push({
    key: "tcp",
    label: "tcpcache TCP",
    protocol: "tcpcache",
    port: tcpcache.port,
    server: tcpcache,
  });
  log(`servers: ${endpoints.map((e) => `${e.label} :${e.port} (pid ${e.server.pid})`).join(", ")}`);
  return { tcpcache, endpoints };
}

// ---------------------------------------------------------------------------
// Plain HTTP requests from the main thread (warm-up checks, counters)

/** One request on its own connection (`Connection: close`), read to the end. */
async function httpRequest(
  port: number,
  method: "GET" | "HEAD",
  path: string,
): Promise<{ status: number; head: string; body: string }> {
  const conn = await Deno.connect({ hostname: HOST, port });
  const timer = setTimeout(() => closeQuietly(conn), 10_000);
  try {
    const request = `${method} ${path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    const text = await new Response(conn.readable).text();
    const end = text.indexOf("\r\n\r\n");
    return {
      status: Number(text.slice(9, 12)),
      head: text.slice(0, end),
      body: text.slice(end + 4),
    };
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** tcpcache's cache outcomes so far, over both protocols (from `/-/stats`). */
async function outcomes(ctx: Context): Promise<Measurement["outcomes"]> {
  const { status, body } = await httpRequest(ctx.tcpcache.httpPort!, "GET", "/-/stats");
  if (status !== 200) throw new Error(`/-/stats answered ${status}`);
  const { hits, misses, bypasses } = JSON.parse(body);
  return { hits, misses, bypasses };
}

// ---------------------------------------------------------------------------
// Before timing: warm the cache, check it, check the bytes, count descriptors

/** Fetches every file once over the TCP protocol: the cache is shared, so HTTP hits too. */
async function warmCache(ctx: Context): Promise<void> {
  const { small, mid, large } = ctx.files;
  const errors = await warm(ctx.pool, ctx.tcpcache, [small, mid, large]);
  if (errors.length > 0) throw new Error(`warming failed: ${errors.join(" / ")}`);
}

/** The HTTP side must see the warm cache: `X-Cache: HIT` on a sample of files. */
async function checkHttpHits(ctx: Context): Promise<void> {
  const { small, mid, large } = ctx.files;
  const paths = [...large.paths, ...mid.paths.slice(0, 4), ...small.paths.slice(0, 8)];
  for (const path of paths) {
    const { status, head } = await httpRequest(ctx.tcpcache.httpPort!, "HEAD", `/${path}`);
    const cache = /^x-cache:\s*(\S+)/im.exec(head)?.[1];
    if (status !== 200 || cache !== "HIT") {
      ctx.problems.push(`HEAD /${path} over HTTP after warming: ${status}, X-Cache ${cache}`);
    }
  }
}

/** Before any timing: the driver's bytes must be the files' bytes, on every endpoint. */
async function selfCheck(ctx: Context): Promise<void> {
  const { small, mid, large } = ctx.files;
  const checks: [FileSet, "keep-alive" | "new-connection"][] = [
    [firstFiles(small, 16), "keep-alive"],
    [firstFiles(small, 16), "new-connection"],
    [firstFiles(mid, 4), "keep-alive"],
    [large, "keep-alive"],
  ];
  for (const endpoint of ctx.endpoints) {
    ctx.problems.push(...(await checkBodies(ctx.pool, endpoint, endpoint.label, checks)).problems);
  }
  log(`self-check: bodies compared byte for byte on ${ctx.endpoints.length} endpoints`);
}

/** Descriptors the server's processes hold open (sockets, files, pipes: all of /proc/PID/fd). */
async function countDescriptors(pids: number[]): Promise<number> {
  let count = 0;
  for (const pid of pids) {
    try {
      for await (const _ of Deno.readDir(`/proc/${pid}/fd`)) count++;
    } catch {
      // gone
    }
  }
  return count;
}

/** The count once it holds still for 100 ms (closed connections take a moment to go). */
async function settledDescriptors(pids: number[]): Promise<number> {
  let last = await countDescriptors(pids);
  for (let i = 0; i < 20; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = await countDescriptors(pids);
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** Opens {@linkcode IDLE_CONNECTIONS} connections (one small request each) and counts. */
async function countPerConnection(ctx: Context, endpoint: Endpoint): Promise<void> {
  const pids = await processTree(endpoint.server.pid);
  const idle = await settledDescriptors(pids);
  const set = firstFiles(ctx.files.small, IDLE_CONNECTIONS);
  const result = await ctx.pool.run({
    port: endpoint.port,
    protocol: endpoint.protocol,
    paths: set.paths,
    sizes: set.sizes,
    connections: IDLE_CONNECTIONS,
    mode: "hold",
    durationMs: 0,
    requests: 1,
    bufferSize: 16 * KiB,
  });
  const held = await settledDescriptors(pids);
  await ctx.pool.release();
  if (result.errors > 0) {
    ctx.problems.push(`descriptor count on ${endpoint.label}: ${result.errorSamples.join(" / ")}`);
  }
  const perConnection = (held - idle) / IDLE_CONNECTIONS;
  ctx.descriptors.set(endpoint.label, { idle, held, perConnection });
  log(`${endpoint.label}: ${idle} descriptors idle, ${held} with ${IDLE_CONNECTIONS} connections`);
}

// ---------------------------------------------------------------------------
// Measuring

/** TCP connections this network namespace has accepted so far (`PassiveOpens`). */
async function passiveOpens(): Promise<number> {
  const lines = (await Deno.readTextFile("/proc/net/snmp")).split("\n");
  const [names, values] = lines.filter((l) => l.startsWith("Tcp:")).map((l) => l.split(/\s+/));
  return Number(values[names.indexOf("PassiveOpens")]);
}

/** Connections accepted between `warmupMs` and `warmupMs + durationMs` from now. */
async function sampleOpens(warmupMs: number, durationMs: number): Promise<number> {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(warmupMs);
  const before = await passiveOpens();
  await sleep(durationMs);
  return await passiveOpens() - before;
}

/** The Deno driver's load: warm-up and window in one run. */
async function loadWithDriver(ctx: Context, workload: Workload, endpoint: Endpoint) {
  const set = ctx.files[workload.files];
  const spec: LoadSpec = {
    port: endpoint.port,
    protocol: endpoint.protocol,
    paths: set.paths,
    sizes: set.sizes,
    connections: workload.connections,
    mode: workload.mode,
    durationMs: ctx.seconds * 1000,
    warmupMs: WARMUP_S * 1000,
    bufferSize: workload.bufferSize,
    workers: workload.connections === 1 ? 1 : undefined,
  };
  const pids = await processTree(endpoint.server.pid);
  const [result, cpu, opens] = await Promise.all([
    ctx.pool.run(spec),
    sampleCpu(pids, WARMUP_S * 1000, ctx.seconds * 1000),
    sampleOpens(WARMUP_S * 1000, ctx.seconds * 1000),
  ]);
  const load: Load = {
    requests: result.requests,
    bytes: result.bytes,
    seconds: result.windowMs / 1000,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    errors: result.errors,
    errorSamples: result.errorSamples,
    driverBusy: result.driverBusy,
    driverCores: cpu.driver,
    otherCores: cpu.others,
  };
  return { load, cpu, opens };
}

/** wrk's load: an uncounted warm-up run, then the counted one. */
async function loadWithWrk(ctx: Context, wrk: string, workload: Workload, endpoint: Endpoint) {
  const close = workload.mode === "new-connection";
  const set = ctx.files[workload.files];
  const script = await writeWrkScript(`${ctx.root}/${workload.key}.lua`, set.paths, close);
  const threads = Math.min(2, workload.connections);
  const base = { port: endpoint.port, script, connections: workload.connections, threads };
  await runWrk(wrk, { ...base, seconds: WARMUP_S });
  const pids = await processTree(endpoint.server.pid);
  const opensBefore = await passiveOpens();
  const [result, cpu] = await Promise.all([
    runWrk(wrk, { ...base, seconds: ctx.seconds }),
    sampleCpu(pids, 0, ctx.seconds * 1000),
  ]);
  const opens = await passiveOpens() - opensBefore;
  // wrk counts the bytes it read, heads and the unfinished answer at the end included:
  // on 4 KiB answers the heads are ~5%, on 1 MiB ones under 0.1%.
  const wrkCores = result.cpuSeconds / result.seconds;
  const load: Load = {
    ...result,
    driverBusy: wrkCores / threads,
    driverCores: wrkCores,
    // The machine's other processes, over the window, counted wrk.
    otherCores: Math.max(0, cpu.others - wrkCores),
  };
  if (result.bytes < result.requests * set.sizes[0]) {
    ctx.problems.push(
      `${workload.title} on ${endpoint.label} under wrk: ${result.bytes} bytes read for ` +
        `${result.requests} answers of ${set.sizes[0]} bytes`,
    );
  }
  return { load, cpu, opens };
}

async function measure(
  ctx: Context,
  workload: Workload,
  endpoint: Endpoint,
  driver: "wrk" | "deno",
): Promise<void> {
  const ours = endpoint.server === ctx.tcpcache;
  const before = ours ? await outcomes(ctx) : undefined;
  const { load, cpu, opens } = driver === "wrk"
    ? await loadWithWrk(ctx, ctx.wrk!, workload, endpoint)
    : await loadWithDriver(ctx, workload, endpoint);
  const after = ours ? await outcomes(ctx) : undefined;
  const m: Measurement = {
    workload,
    endpoint,
    driver,
    load,
    cpu,
    connectionsPerRequest: opens / load.requests,
    outcomes: before && after
      ? {
        hits: after.hits - before.hits,
        misses: after.misses - before.misses,
        bypasses: after.bypasses - before.bypasses,
      }
      : undefined,
  };
  ctx.measurements.push(m);
  const figure = workload.unit === "MB/s" ? load.bytes / 1e6 : load.requests;
  log(
    `${workload.title}, ${endpoint.label} (${driver}): ` +
      `${formatFigure(figure / load.seconds)} ${workload.unit}, ${load.errors} errors`,
  );
  noteProblems(ctx, m);
}

function noteProblems(ctx: Context, m: Measurement): void {
  const what = `${m.workload.title} on ${m.endpoint.label} (${m.driver})`;
  const { load, outcomes } = m;
  if (load.errors > 0) {
    ctx.problems.push(`${what}: ${load.errors} errors (${load.errorSamples.join(" / ")})`);
  }
  if (outcomes && (outcomes.misses > 0 || outcomes.bypasses > 0 || outcomes.hits === 0)) {
    ctx.problems.push(
      `${what}: ${outcomes.hits} hits, ${outcomes.misses} misses, ${outcomes.bypasses} bypasses`,
    );
  }
  if (m.workload.mode === "new-connection" && m.connectionsPerRequest < 0.95) {
    ctx.problems.push(
      `${what}: only ${m.connectionsPerRequest.toFixed(2)} connections per request`,
    );
  }
  if (m.endpoint.server.exited) {
    ctx.problems.push(
      `${what}: the server exited; stderr: ${m.endpoint.server.stderr.join(" / ")}`,
    );
  }
}

/**
 * Every workload on every endpoint, endpoints in turn within a workload so
 * that each ratio's two figures are seconds apart: HTTP under wrk (where
 * there is wrk), then everything under the Deno driver; all of that
 * `ctx.rounds` times.
 */
async function measureAll(ctx: Context): Promise<void> {
  for (const workload of WORKLOADS) {
    for (let round = 0; round < ctx.rounds; round++) {
      for (const endpoint of ctx.endpoints) {
        if (ctx.wrk && endpoint.protocol === "http") await measure(ctx, workload, endpoint, "wrk");
      }
      for (const endpoint of ctx.endpoints) await measure(ctx, workload, endpoint, "deno");
    }
  }
}

/**
 * Each row's median round, by throughput: this machine's speed drifts by
 * tens of percent within minutes, and one slow window must not decide a
 * ratio. The rounds interleave the servers, so a drift touches all alike.
 */
function medianRounds(measurements: Measurement[]): Measurement[] {
  const rows = new Map<string, Measurement[]>();
  for (const m of measurements) {
    const key = `${m.workload.key} ${m.endpoint.key} ${m.driver}`;
    rows.set(key, [...rows.get(key) ?? [], m]);
  }
  const figure = (m: Measurement) =>
    (m.workload.unit === "MB/s" ? m.load.bytes : m.load.requests) / m.load.seconds;
  return [...rows.values()].map((rounds) =>
    rounds.sort((a, b) => figure(a) - figure(b))[Math.floor((rounds.length - 1) / 2)]
  );
}

// ---------------------------------------------------------------------------
// Main

async function versions(wrk: string | undefined): Promise<string> {
  const nginx = findExecutable("nginx");
  const nginxVersion = nginx ? (await run(nginx, ["-v"])).out.trim() : "no nginx";
  const wrkVersion = wrk ? (await run(wrk, ["--version"])).out.split(" [")[0].trim() : "no wrk";
  return `Deno ${Deno.version.deno}, ${nginxVersion.replace("nginx version: ", "")}, ${wrkVersion}`;
}

async function bench(session: { root: string; pool: DriverPool }, options: Options) {
  const { root, pool } = session;
  log(`writing files in ${root}`);
  const files = await writeFiles(`${root}/files`);
  const wrk = options.wrk ? findExecutable("wrk") : undefined;
  if (!wrk) log(options.wrk ? "wrk is not installed: the Deno driver loads HTTP" : "--no-wrk");
  const { tcpcache, endpoints } = await startServers(root);
  const ctx: Context = {
    pool,
    seconds: options.seconds,
    rounds: options.rounds,
    wrk,
    root,
    files,
    tcpcache,
    endpoints,
    measurements: [],
    descriptors: new Map(),
    problems: [],
  };
  await warmCache(ctx);
  await checkHttpHits(ctx);
  await selfCheck(ctx);
  for (const endpoint of endpoints) await countPerConnection(ctx, endpoint);
  await measureAll(ctx);
  ctx.measurements = medianRounds(ctx.measurements);
  return ctx;
}

async function main(args: string[]): Promise<number> {
  const options = readCommandLine("http_bench", USAGE, args, parseOptions);
  if (typeof options === "number") return options;
  const started = performance.now();
  const setup = {
    program: "http_bench",
    tempPrefix: "tcpcache-http-bench-",
    driverWorkers: DRIVER_WORKERS,
    hardCapMs: 900_000,
  };
  return await runSession(setup, async (session) => {
    const ctx = await bench(session, options);
    await report(ctx, { started, tools: await versions(ctx.wrk), args });
  });
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
