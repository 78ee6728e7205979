/**
 * The HTTP front end's benchmark: what serving over HTTP/1.1 costs beside
 * tcpcache's own line protocol, from the same server process and the same
 * cache, with nginx as the reference for what an HTTP server can do here.
 *
 *     deno run -A bench/http_bench.ts [--duration 3]
 *
 * One tcpcache process is started with both `--port` and `--http-port`, so
 * the two protocols share one cache and differ only in how the bytes leave:
 * the TCP protocol writes them itself, while every HTTP byte goes through
 * `Deno.serve` and then through the connection guard's relay in JS
 * (http/guard.ts). To tell those two costs apart, the same loads also go to
 * `Deno.serve`'s private loopback port directly (found in /proc), skipping
 * the relay: a diagnostic column, not a way clients are meant to connect.
 *
 * Workloads, each on every endpoint in turn, all cache hits:
 *  1. one keep-alive connection fetching a 64 MiB file again and again (MB/s);
 *  2. 64 keep-alive connections fetching 4 KiB files (req/s);
 *  3. 64 clients, a new connection for each 4 KiB request (req/s).
 *
 * Beside each figure it reports the server's CPU (whole process and its
 * busiest thread: a thread near 100% is the bottleneck) and the driver's, as
 * driver and server share the machine's cores. Ratios compare figures taken
 * seconds apart in one run; absolute figures move with the machine.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CpuUse, sampleCpu } from "./cpu.ts";
import type { DriverPool, LoadResult, LoadSpec, Mode, Protocol } from "./driver.ts";
import { type FileSet, fileWriter, firstFiles, KiB, MiB, numberedPaths } from "./files.ts";
import { checkBodies, warm } from "./preflight.ts";
import {
  findExecutable,
  HOST,
  listeningPorts,
  log,
  processTree,
  run,
  type Server,
  startNginx,
  startTcpcache,
} from "./processes.ts";
import {
  bulletList,
  codeVersion,
  formatFigure,
  markdownTable,
  percent,
  versionLabel,
} from "./report.ts";
import { readCommandLine, runSession } from "./session.ts";

const SMALL_FILES = 1000;
const DRIVER_WORKERS = 2;
const WARMUP_MS = 500;

const USAGE = `bench/http_bench.ts: tcpcache's TCP protocol vs its HTTP front end vs nginx

Usage: deno run -A bench/http_bench.ts [options]

Options:
  --duration SECS   counted seconds per measurement (default: 3; 0.5 s warm-up each)
  -h, --help        show this help
`;

function parseOptions(args: string[]): { durationMs: number } | "help" {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "3" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const seconds = Number(values.duration);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(values.duration) || seconds <= 0 || seconds > 60) {
    throw new Error("--duration must be a positive number of seconds up to 60");
  }
  return { durationMs: seconds * 1000 };
}

// ---------------------------------------------------------------------------
// Files and the server

/** One 64 MiB file and 1,000 of 4 KiB. */
async function writeFiles(dir: string): Promise<{ large: FileSet; small: FileSet }> {
  const write = fileWriter(dir);
  return {
    large: await write(["large/64MiB.bin"], 64 * MiB),
    small: await write(numberedPaths("small", SMALL_FILES), 4 * KiB),
  };
}

/** The tcpcache process with its HTTP front end, and Deno.serve's port behind the relay. */
interface Tcpcache {
  /** Its `port` is the TCP protocol's. */
  server: Server;
  httpPort: number;
  /** Deno.serve's private port behind the relay, if /proc showed it. */
  directPort?: number;
}

/** One tcpcache with both ports, so that the two protocols share one cache. */
async function startTcpcacheHttp(root: string): Promise<Tcpcache> {
  const server = await startTcpcache(`${root}/files`, `${root}/cache`, "256MiB", { httpPort: 0 });
  if (server.httpPort === undefined) throw new Error("tcpcache's ready line named no HTTP port");
  // The one listener that is neither announced port is the one the relay forwards to.
  const known = [server.port, server.httpPort];
  const direct = (await listeningPorts(server.pid)).filter((port) => !known.includes(port));
  return {
    server,
    httpPort: server.httpPort,
    directPort: direct.length === 1 ? direct[0] : undefined,
  };
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
interface Outcomes {
  hits: number;
  misses: number;
  bypasses: number;
}

async function outcomes(httpPort: number): Promise<Outcomes> {
  const { status, body } = await httpRequest(httpPort, "GET", "/-/stats");
  if (status !== 200) throw new Error(`/-/stats answered ${status}`);
  const { hits, misses, bypasses } = JSON.parse(body);
  return { hits, misses, bypasses };
}

// ---------------------------------------------------------------------------
// Endpoints and workloads

type EndpointKey = "tcp" | "http" | "direct" | "nginx";

/** One way into a server that the driver can load. */
interface Endpoint {
  key: EndpointKey;
  label: string;
  protocol: Protocol;
  port: number;
  /** The server's process; its descendants' CPU counts too (nginx's workers). */
  pid: number;
  /** A tcpcache endpoint: its `/-/stats` must show hits only. */
  tcpcache: boolean;
  server: Server;
}

interface Workload {
  key: string;
  title: string;
  unit: "MB/s" | "req/s";
  files: "large" | "small";
  connections: number;
  mode: Mode;
  bufferSize: number;
  /** Driver workers: one for a single client. */
  workers?: number;
}

const WORKLOADS: Workload[] = [
  {
    key: "large",
    title: "(1) large hit 64 MiB, 1 conn keep-alive",
    unit: "MB/s",
    files: "large",
    connections: 1,
    mode: "keep-alive",
    bufferSize: MiB,
    workers: 1,
  },
  {
    key: "small",
    title: "(2) small 4 KiB hits, keep-alive c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    mode: "keep-alive",
    bufferSize: 16 * KiB,
  },
  {
    key: "new-connection",
    title: "(3) small 4 KiB hits, new conn each, c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    mode: "new-connection",
    bufferSize: 16 * KiB,
  },
];

/** One workload on one endpoint. */
interface Measurement {
  workload: Workload;
  endpoint: Endpoint;
  result: LoadResult;
  cpu: CpuUse;
  /** tcpcache's outcomes during the load (undefined for nginx). */
  outcomes?: Outcomes;
}

interface Context {
  pool: DriverPool;
  durationMs: number;
  files: { large: FileSet; small: FileSet };
  tcpcache: Tcpcache;
  endpoints: Endpoint[];
  measurements: Measurement[];
  /** What the reader must know: errors, misses, a server that exited. */
  problems: string[];
}

function endpointsOf(tcpcache: Tcpcache, nginx?: Server): Endpoint[] {
  const { server, httpPort, directPort } = tcpcache;
  const ours = (key: EndpointKey, label: string, protocol: Protocol, port: number): Endpoint => ({
    key,
    label,
    protocol,
    port,
    pid: server.pid,
    tcpcache: true,
    server,
  });
  const list = [
    ours("tcp", "tcpcache TCP", "tcpcache", server.port),
    ours("http", "tcpcache HTTP", "http", httpPort),
  ];
  if (directPort !== undefined) list.push(ours("direct", "HTTP w/o relay*", "http", directPort));
  if (nginx) {
    list.push({
      key: "nginx",
      label: "nginx",
      protocol: "http",
      port: nginx.port,
      pid: nginx.pid,
      tcpcache: false,
      server: nginx,
    });
  }
  return list;
}

// ---------------------------------------------------------------------------
// Before timing: warm the cache, check it, check the bytes

/** Fetches every file once over the TCP protocol: the cache is shared, so HTTP hits too. */
async function warmCache(ctx: Context): Promise<void> {
  const errors = await warm(ctx.pool, ctx.tcpcache.server, [ctx.files.small, ctx.files.large]);
  if (errors.length > 0) throw new Error(`warming failed: ${errors.join(" / ")}`);
}

/** The HTTP side must see the warm cache: `X-Cache: HIT` on a sample of files. */
async function checkHttpHits(ctx: Context): Promise<void> {
  const paths = [...ctx.files.large.paths, ...ctx.files.small.paths.slice(0, 8)];
  for (const path of paths) {
    const { status, head } = await httpRequest(ctx.tcpcache.httpPort, "HEAD", `/${path}`);
    const cache = /^x-cache:\s*(\S+)/im.exec(head)?.[1];
    if (status !== 200 || cache !== "HIT") {
      ctx.problems.push(`HEAD /${path} over HTTP after warming: ${status}, X-Cache ${cache}`);
    }
  }
  log(`X-Cache checked over HTTP on ${paths.length} files`);
}

/** Before any timing: the driver's bytes must be the files' bytes, on every endpoint. */
async function selfCheck(ctx: Context): Promise<void> {
  const small = firstFiles(ctx.files.small, 16);
  const checks: [FileSet, Mode][] = [
    [small, "keep-alive"],
    [small, "new-connection"],
    [ctx.files.large, "keep-alive"],
  ];
  for (const endpoint of ctx.endpoints) {
    ctx.problems.push(...(await checkBodies(ctx.pool, endpoint, endpoint.label, checks)).problems);
  }
  log(`self-check: bodies compared byte for byte on ${ctx.endpoints.length} endpoints`);
}

// ---------------------------------------------------------------------------
// Measuring

async function measure(ctx: Context, workload: Workload, endpoint: Endpoint): Promise<void> {
  const set = ctx.files[workload.files];
  const spec: LoadSpec = {
    port: endpoint.port,
    protocol: endpoint.protocol,
    paths: set.paths,
    sizes: set.sizes,
    connections: workload.connections,
    mode: workload.mode,
    durationMs: ctx.durationMs,
    warmupMs: WARMUP_MS,
    bufferSize: workload.bufferSize,
    workers: workload.workers,
  };
  const pids = await processTree(endpoint.pid);
  const before = endpoint.tcpcache ? await outcomes(ctx.tcpcache.httpPort) : undefined;
  const [result, cpu] = await Promise.all([
    ctx.pool.run(spec),
    sampleCpu(pids, WARMUP_MS, ctx.durationMs),
  ]);
  const after = before ? await outcomes(ctx.tcpcache.httpPort) : undefined;
  const delta = before && after ? difference(after, before) : undefined;
  const m: Measurement = { workload, endpoint, result, cpu, outcomes: delta };
  ctx.measurements.push(m);
  log(`${workload.title} on ${endpoint.label}: ${formatFigure(figure(m))} ${workload.unit}`);
  noteProblems(ctx, m);
}

function difference(after: Outcomes, before: Outcomes): Outcomes {
  return {
    hits: after.hits - before.hits,
    misses: after.misses - before.misses,
    bypasses: after.bypasses - before.bypasses,
  };
}

function noteProblems(ctx: Context, m: Measurement): void {
  const what = `${m.workload.title} on ${m.endpoint.label}`;
  const { result, outcomes } = m;
  if (result.errors > 0) {
    ctx.problems.push(`${what}: ${result.errors} errors (${result.errorSamples.join(" / ")})`);
  }
  if (outcomes && (outcomes.misses > 0 || outcomes.bypasses > 0 || outcomes.hits === 0)) {
    ctx.problems.push(
      `${what}: ${outcomes.hits} hits, ${outcomes.misses} misses, ${outcomes.bypasses} bypasses`,
    );
  }
  const { server } = m.endpoint;
  if (server.exited) {
    ctx.problems.push(`${what}: the server exited; stderr: ${server.stderr.join(" / ")}`);
  }
}

function figure(m: Measurement): number {
  return m.workload.unit === "MB/s" ? m.result.megabytesPerSecond : m.result.requestsPerSecond;
}

// ---------------------------------------------------------------------------
// Report

/** The headline: each workload's figure per endpoint, and the ratios asked about. */
function summaryTable(ctx: Context): string {
  const keys: EndpointKey[] = ["tcp", "http", "direct", "nginx"];
  const present = keys.filter((k) => ctx.endpoints.some((e) => e.key === k));
  const header = ["workload", ...present.map((k) => labelOf(ctx, k))]
    .concat(["http/tcp", "http/nginx", "http/w-o-relay"]);
  const rows = WORKLOADS.map((w) => {
    const value = (key: EndpointKey) => {
      const m = ctx.measurements.find((x) => x.workload === w && x.endpoint.key === key);
      return m ? figure(m) : NaN;
    };
    const ratio = (a: EndpointKey, b: EndpointKey) => {
      const r = value(a) / value(b);
      return Number.isFinite(r) ? `${r.toFixed(2)}x` : "-";
    };
    return [`${w.title} [${w.unit}]`, ...present.map((k) => formatFigure(value(k)))]
      .concat([ratio("http", "tcp"), ratio("http", "nginx"), ratio("http", "direct")]);
  });
  return markdownTable(header, rows);
}

function labelOf(ctx: Context, key: EndpointKey): string {
  return ctx.endpoints.find((e) => e.key === key)?.label ?? key;
}

/** Per measurement: latency, errors, where the CPU went, and the cache outcomes. */
function detailTable(ctx: Context): string {
  const header = [
    "workload",
    "endpoint",
    "figure",
    "p50 / p99 ms",
    "errors",
    "server CPU",
    "busiest server thread",
    "server CPU per unit",
    "driver (busiest worker)",
    "other procs / softirq",
    "cache outcomes",
  ];
  const rows = ctx.measurements.map((m) => [
    m.workload.key,
    m.endpoint.label,
    `${formatFigure(figure(m))} ${m.workload.unit}`,
    `${m.result.p50Ms.toFixed(2)} / ${m.result.p99Ms.toFixed(2)}`,
    String(m.result.errors),
    `${m.cpu.server.toFixed(2)} cores`,
    `${percent(m.cpu.busiest)} ${m.cpu.busiestName}`,
    cpuPerUnit(m),
    `${m.cpu.driver.toFixed(2)} (${percent(m.result.driverBusy)})`,
    `${m.cpu.others.toFixed(2)} / ${m.cpu.softirq.toFixed(2)}`,
    m.outcomes
      ? `${m.outcomes.hits} hit ${m.outcomes.misses} miss ${m.outcomes.bypasses} byp`
      : "-",
  ]);
  return markdownTable(header, rows);
}

/** The server's CPU per GB sent, or per request: comparable whatever the throughput. */
function cpuPerUnit(m: Measurement): string {
  const cpuSecondsUsed = m.cpu.server * (m.result.windowMs / 1000);
  if (m.workload.unit === "MB/s") {
    return `${formatFigure(cpuSecondsUsed * 1000 / (m.result.bytes / 1e9))} ms/GB`;
  }
  return `${formatFigure(cpuSecondsUsed * 1e6 / m.result.requests)} us/req`;
}

async function report(ctx: Context, started: number, nginxVersion: string): Promise<void> {
  const command = ["deno", "run", "-A", "bench/http_bench.ts", ...Deno.args].join(" ");
  const version = versionLabel(await codeVersion());
  console.log(`$ ${command}`);
  console.log(
    `${version}, Deno ${Deno.version.deno}, ${nginxVersion || "no nginx"}, ` +
      `${navigator.hardwareConcurrency} cores, ${new Date().toISOString()}\n`,
  );
  console.log(summaryTable(ctx));
  console.log(`\n${detailTable(ctx)}\n`);
  if (ctx.tcpcache.directPort !== undefined) {
    console.log(
      "* Deno.serve's private port behind the relay (found in /proc), loaded directly: a " +
        "diagnostic of the relay's cost, not an entry point.",
    );
  } else {
    console.log("Deno.serve's private port was not found in /proc: no relay-less figures.");
  }
  console.log(
    "CPU in cores over each counted window (100% = one core; other procs: the rest of the " +
      "machine's processes, whose share the figures did not get); MB = 10^6 bytes; " +
      `${ctx.durationMs / 1000} s per measurement after ${WARMUP_MS / 1000} s of warm-up; ` +
      `driver: ${ctx.pool.size} Deno Workers on the same machine.`,
  );
  const busy = ctx.measurements.filter((m) => m.cpu.others >= 0.2);
  if (busy.length > 0) {
    // The machine's two cores are shared by the driver and the server: a neighbour skews both.
    ctx.problems.push(
      `other processes used >= 0.2 cores in ${busy.length} of ${ctx.measurements.length} ` +
        `windows (up to ${Math.max(...busy.map((m) => m.cpu.others)).toFixed(2)}): ` +
        "absolute figures are low, ratios less so",
    );
  }
  if (ctx.problems.length > 0) console.log(bulletList("Problems", ctx.problems));
  console.log(`Took ${Math.round((performance.now() - started) / 1000)} s.`);
}

// ---------------------------------------------------------------------------
// Main

async function startNginxIfThere(root: string, dir: string): Promise<Server | undefined> {
  const nginx = findExecutable("nginx");
  if (!nginx) {
    log("nginx is not installed: no nginx column");
    return undefined;
  }
  return await startNginx(nginx, `${root}/nginx`, dir);
}

async function bench(ctx: Omit<Context, "tcpcache" | "endpoints">, root: string) {
  const tcpcache = await startTcpcacheHttp(root);
  log(
    `tcpcache pid ${tcpcache.server.pid}: TCP ${tcpcache.server.port}, ` +
      `HTTP ${tcpcache.httpPort}, Deno.serve ${tcpcache.directPort ?? "not found"}`,
  );
  const nginx = await startNginxIfThere(root, `${root}/files`);
  const full: Context = { ...ctx, tcpcache, endpoints: endpointsOf(tcpcache, nginx) };
  await warmCache(full);
  await checkHttpHits(full);
  await selfCheck(full);
  // Endpoints in turn within each workload, so that each ratio's two figures are seconds apart.
  for (const workload of WORKLOADS) {
    for (const endpoint of full.endpoints) await measure(full, workload, endpoint);
  }
  return full;
}

async function main(args: string[]): Promise<number> {
  const options = readCommandLine("http_bench", USAGE, args, parseOptions);
  if (typeof options === "number") return options;
  const started = performance.now();
  const setup = {
    program: "http_bench",
    tempPrefix: "tcpcache-http-bench-",
    driverWorkers: DRIVER_WORKERS,
    hardCapMs: 600_000,
  };
  return await runSession(setup, async ({ root, pool }) => {
    log(`writing files in ${root}`);
    const files = await writeFiles(`${root}/files`);
    const nginxPath = findExecutable("nginx");
    const nginxVersion = nginxPath ? (await run(nginxPath, ["-v"])).out.trim() : "";
    const { durationMs } = options;
    const ctx = await bench({ pool, durationMs, files, measurements: [], problems: [] }, root);
    await report(ctx, started, nginxVersion.replace(/^nginx version: /, ""));
  });
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
