/**
 * The performance benchmark: tcpcache against nginx (sendfile, the same
 * directory), against the bare Deno loop of tcpcache's protocol
 * (bench/reference/bare_tcp.ts: pre-built answers in memory, on one thread
 * and on one thread per core, the ceiling for any Deno server here) and
 * against the original design (a thread-per-connection Python server,
 * bench/reference/original_design.py), in one run, with loopback iperf3 as
 * the ceiling for one stream. Every throughput row also gives each server's
 * CPU per request (utime + stime of its processes over the window); where
 * wrk is installed, nginx's small-file figures are measured with it too, to
 * show whether the Deno driver limits them. Prints a table and the targets,
 * and writes bench/results/bench.json and bench/results/bench.svg.
 *
 *     deno task bench [--duration 5] [--warmup 0.5] [--repeat 3] [--driver-workers 2]
 *
 * Ratios are always tcpcache over nginx measured seconds apart in the same
 * run: absolute figures move with the machine and its other load.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { barChartSvg } from "./bar_chart.ts";
import { cpuModel, cpuSeconds, sampleCpu } from "./cpu.ts";
import type { DriverPool, LoadResult, LoadSpec, Mode } from "./driver.ts";
import { type FileSet, fileWriter, firstFiles, KiB, MiB, numberedPaths } from "./files.ts";
import { checkBodies, warm } from "./preflight.ts";
import {
  countSockets,
  findExecutable,
  HOST,
  log,
  memoryKiB,
  processTree,
  REPO,
  run,
  sampleMemory,
  saysWithin,
  type Server,
  type ServerName,
  startBareTcp,
  startNginx,
  startPython,
  startTcpcache,
  STARTUP_MS,
  stopChildren,
  stopServer,
  track,
} from "./processes.ts";
import {
  bulletList,
  type CodeVersion,
  codeVersion,
  formatFigure,
  markdownTable,
  percent,
  versionLabel,
} from "./report.ts";
import { readCommandLine, runSession } from "./session.ts";
import { runWrk, writeWrkScript } from "./wrk.ts";

const INSTALL_MS = 300_000;

const USAGE = `deno task bench: tcpcache against nginx, the original design and iperf3

Usage: deno run -A bench/bench.ts [options]

Options:
  --duration SECS       counted seconds per measurement (default: 5)
  --warmup SECS         uncounted seconds before each measurement (default: 0.5)
  --repeat N            cold fetches, each on a fresh server (default: 3)
  --driver-workers N    load driver workers (Deno Workers) (default: 2)
  --results DIR         where bench.json and bench.svg go (default: bench/results)
  --no-install          never apt-get install a missing nginx or iperf3
  -h, --help            show this help
`;

// ---------------------------------------------------------------------------
// Options

interface Options {
  durationMs: number;
  warmupMs: number;
  repeat: number;
  driverWorkers: number;
  results: string;
  install: boolean;
}

function parseOptions(args: string[]): Options | "help" {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "5" },
      warmup: { type: "string", default: "0.5" },
      repeat: { type: "string", default: "3" },
      "driver-workers": { type: "string", default: "2" },
      results: { type: "string", default: `${REPO}/bench/results` },
      "no-install": { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  return {
    durationMs: positive("--duration", values.duration, 600) * 1000,
    warmupMs: positive("--warmup", values.warmup, 60, true) * 1000,
    repeat: Math.round(positive("--repeat", values.repeat, 20)),
    driverWorkers: Math.round(positive("--driver-workers", values["driver-workers"], 16)),
    results: values.results,
    install: !values["no-install"],
  };
}

function positive(flag: string, text: string, max: number, zero = false): number {
  const value = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || value > max || (value === 0 && !zero)) {
    throw new Error(`${flag} must be a ${zero ? "" : "positive "}number up to ${max}`);
  }
  return value;
}

// ---------------------------------------------------------------------------
// Tools: nginx, iperf3, python3

/** The programs the references need, or why each is missing. */
interface Tools {
  nginx?: string;
  iperf3?: string;
  python3?: string;
  wrk?: string;
  versions: Record<string, string>;
  skipped: string[];
}

/** apt-get install, once more after apt-get update if the package lists are stale. */
async function aptInstall(): Promise<string> {
  const packages = ["nginx-light", "iperf3", "wrk"];
  log(`installing ${packages.join(" ")} with apt-get (as root)`);
  let result = await run("apt-get", ["install", "-y", ...packages], INSTALL_MS);
  if (!result.ok) {
    await run("apt-get", ["update"], INSTALL_MS);
    result = await run("apt-get", ["install", "-y", ...packages], INSTALL_MS);
  }
  return result.ok ? "" : result.out.trim().split("\n").slice(-3).join(" / ");
}

async function findTools(options: Options): Promise<Tools> {
  const tools: Tools = { versions: {}, skipped: [] };
  let nginx = findExecutable("nginx");
  let iperf3 = findExecutable("iperf3");
  let wrk = findExecutable("wrk");
  let installFailure = "";
  const isRoot = Deno.uid() === 0;
  if ((!nginx || !iperf3 || !wrk) && options.install && isRoot && findExecutable("apt-get")) {
    installFailure = await aptInstall();
    nginx = findExecutable("nginx");
    iperf3 = findExecutable("iperf3");
    wrk = findExecutable("wrk");
  }
  const why = (name: string) =>
    `${name} is not installed` + (
      !options.install
        ? " (--no-install)"
        : !isRoot
        ? " and the bench is not running as root, so it did not apt-get install it"
        : installFailure
        ? ` and apt-get install failed: ${installFailure}`
        : " and there is no apt-get"
    );
  tools.nginx = nginx;
  tools.iperf3 = iperf3;
  tools.wrk = wrk;
  tools.python3 = findExecutable("python3");
  if (!nginx) tools.skipped.push(`nginx reference: ${why("nginx")}; no ratios`);
  if (!iperf3) tools.skipped.push(`iperf3 ceiling: ${why("iperf3")}`);
  if (!wrk) tools.skipped.push(`wrk cross-check of the driver: ${why("wrk")}`);
  if (!tools.python3) tools.skipped.push("original design (Python): python3 is not installed");
  if (nginx) {
    tools.versions.nginx = firstLine((await run(nginx, ["-v"])).out).replace(
      /^nginx version: /,
      "",
    );
  }
  if (iperf3) tools.versions.iperf3 = firstLine((await run(iperf3, ["--version"])).out);
  if (wrk) tools.versions.wrk = firstLine((await run(wrk, ["--version"])).out).split(" [")[0];
  if (tools.python3) {
    tools.versions.python3 = firstLine((await run(tools.python3, ["--version"])).out);
  }
  return tools;
}

function firstLine(text: string): string {
  return text.trim().split("\n")[0] ?? "";
}

// ---------------------------------------------------------------------------
// The files served

interface Files {
  dir: string;
  large64: FileSet;
  large256: FileSet;
  small: FileSet;
  mid: FileSet;
}

/** Writes the files: 64 MiB and 256 MiB, 64 of 1 MiB, 1,000 of 4 KiB. */
async function generateFiles(dir: string): Promise<Files> {
  const write = fileWriter(dir);
  return {
    dir,
    large64: await write(["large/64MiB.bin"], 64 * MiB),
    large256: await write(["large/256MiB.bin"], 256 * MiB),
    mid: await write(numberedPaths("mid", 64), MiB),
    small: await write(numberedPaths("small", 1000), 4 * KiB),
  };
}

// ---------------------------------------------------------------------------
// Measurements and rows

/** One line of the table: a workload's figure for each server measured. */
interface Row {
  /** A stable key, for the JSON and the targets. */
  key: string;
  workload: string;
  unit: "MB/s" | "req/s" | "ms" | "MiB";
  /** The figure by server; for `ms` rows, the median latency. */
  values: Partial<Record<ServerName, number>>;
  /** For `ms` rows: the 99th percentile by server. */
  p99?: Partial<Record<ServerName, number>>;
  /** Throughput rows: the server's CPU microseconds per answer, by server. */
  cpu: Partial<Record<ServerName, number>>;
  /** Whether tcpcache / nginx means something (throughput rows). */
  ratio: boolean;
  notes: string[];
  /** The driver's raw results, for the JSON file. */
  loads: Partial<Record<ServerName, LoadResult | LoadResult[]>>;
}

interface Context {
  options: Options;
  tools: Tools;
  pool: DriverPool;
  root: string;
  files: Files;
  /** The long-lived servers; tcpcache's is sized to hold every file. */
  servers: Partial<Record<ServerName, Server>>;
  rows: Row[];
  /** Errors and misbehaviour worth the reader's attention. */
  problems: string[];
  /** nginx under the Deno driver beside nginx under wrk, row by row. */
  crossChecks: string[];
  /** The ceiling: the best of the iperf3 variants. */
  iperf3MBps?: number;
  /** The code and the machine's load at the start and (once done) the end. */
  versions: Version[];
  /** Each iperf3 variant's MB/s. */
  iperf3: Record<string, number>;
  freshCaches: number;
}

/** How a measurement loads the server. */
interface Shape {
  connections: number;
  mode: Mode;
  bufferSize: number;
  /** Driver workers to use (1 for one client). */
  workers?: number;
  /** A fixed number of requests per connection instead of a timed window. */
  requests?: number;
}

function row(
  ctx: Context,
  key: string,
  workload: string,
  unit: Row["unit"],
  ratio = true,
): Row {
  const made: Row = { key, workload, unit, values: {}, ratio, notes: [], loads: {}, cpu: {} };
  ctx.rows.push(made);
  return made;
}

/** A load's result, with the server's CPU per answer over a timed window. */
interface Measured extends LoadResult {
  /** Utime + stime of the server's processes over the window, per answer, in µs. */
  cpuPerRequestUs?: number;
}

async function measure(
  ctx: Context,
  server: Server,
  set: FileSet,
  shape: Shape,
  label: string,
): Promise<Measured> {
  const timed = shape.requests === undefined;
  const spec: LoadSpec = {
    port: server.port,
    protocol: server.protocol,
    paths: set.paths,
    sizes: set.sizes,
    connections: shape.connections,
    mode: shape.mode,
    durationMs: timed ? ctx.options.durationMs : 0,
    warmupMs: timed ? ctx.options.warmupMs : 0,
    requests: shape.requests,
    bufferSize: shape.bufferSize,
    workers: shape.workers,
  };
  const pids = await processTree(server.pid);
  const [result, cpu] = await Promise.all([
    ctx.pool.run(spec) as Promise<Measured>,
    timed ? sampleCpu(pids, ctx.options.warmupMs, ctx.options.durationMs) : undefined,
  ]);
  if (cpu && result.requestsPerSecond > 0) {
    result.cpuPerRequestUs = cpu.server / result.requestsPerSecond * 1e6;
  }
  log(
    `${label} on ${server.name}: ${formatFigure(result.requestsPerSecond)} req/s, ` +
      `${formatFigure(result.megabytesPerSecond)} MB/s, p50 ${result.p50Ms.toFixed(2)} ms, ` +
      `p99 ${result.p99Ms.toFixed(2)} ms, driver ${percent(result.driverBusy)} busy` +
      (result.errors ? `, ${result.errors} ERRORS: ${result.errorSamples.join(" / ")}` : ""),
  );
  if (result.errors > 0) {
    ctx.problems.push(
      `${label} on ${server.name}: ${result.errors} errors (${result.errorSamples.join(" / ")})`,
    );
  }
  if (server.exited) {
    ctx.problems.push(`${label}: ${server.name} exited; stderr: ${server.stderr.join(" / ")}`);
  }
  return result;
}

/** The servers every row measures, in the order the CPU column lists them. */
const MEASURED: readonly ServerName[] = [
  "tcpcache",
  "tcpcache-workers",
  "nginx",
  "bare-tcp",
  "bare-tcp-workers",
];

/** The long-lived servers that are running, tcpcache first. */
function referenceServers(ctx: Context, withPython: boolean): Server[] {
  const names = [...MEASURED];
  if (withPython) names.push("python");
  return names.map((name) => ctx.servers[name]).filter((s): s is Server => s !== undefined);
}

/** Notes a tcpcache measurement whose cache outcomes are not what the workload is about. */
function checkOutcome(ctx: Context, r: Row, result: LoadResult, want: "hit" | "miss" | "bypass") {
  const c = result.cache;
  if (c[want] !== c.hit + c.miss + c.bypass || c[want] === 0) {
    const note = `tcpcache cache outcomes: ${c.hit} hit, ${c.miss} miss, ${c.bypass} bypass ` +
      `(expected all ${want})`;
    r.notes.push(note);
    ctx.problems.push(`${r.workload}: ${note}`);
  }
}

/** Adds one server's result to a throughput row. */
function record(r: Row, server: Server, result: Measured) {
  r.values[server.name] = r.unit === "MB/s" ? result.megabytesPerSecond : result.requestsPerSecond;
  r.loads[server.name] = result;
  if (result.cpuPerRequestUs !== undefined) r.cpu[server.name] = result.cpuPerRequestUs;
  if (result.errors) r.notes.push(`${server.name}: ${result.errors} errors`);
  if (result.driverBusy >= 0.9) {
    r.notes.push(
      `${server.name} run driver-bound? (driver ${(result.driverBusy * 100).toFixed(0)}% busy)`,
    );
  }
}

// ---------------------------------------------------------------------------
// The workloads

/** Before any timing: the driver's bytes must be the files' bytes, on every server. */
async function selfCheck(ctx: Context): Promise<void> {
  const { small, mid, large64 } = ctx.files;
  const checks: [FileSet, Mode][] = [
    [firstFiles(small, 16), "keep-alive"],
    [firstFiles(small, 16), "new-connection"],
    [firstFiles(mid, 4), "keep-alive"],
    [large64, "keep-alive"],
  ];
  for (const server of referenceServers(ctx, true)) {
    const { compared, problems } = await checkBodies(ctx.pool, server, server.name, checks);
    ctx.problems.push(...problems);
    log(
      `self-check on ${server.name}: ${compared} responses compared byte for byte with the files`,
    );
  }
}

/** Warms tcpcache's cache with every file of the sets; a failure is a problem to report. */
async function warmTcpcache(ctx: Context, server: Server, sets: FileSet[]): Promise<void> {
  const errors = await warm(ctx.pool, server, sets);
  ctx.problems.push(...errors.map((e) => `warming ${server.name}: ${e}`));
}

/**
 * iperf3's default (128 KiB writes) and sendfile with 1 MiB writes, as nginx
 * sends: the higher is the ceiling. Both resend one small buffer that stays
 * in the CPU's caches, so no file server reaches them on a 256 MiB file.
 */
const IPERF3_VARIANTS: [string, string[]][] = [["default", []], ["-Z -l 1M", ["-Z", "-l", "1M"]]];

/** Loopback iperf3, one stream: the most one TCP stream can carry here. */
async function iperf3(ctx: Context): Promise<void> {
  const iperf = ctx.tools.iperf3;
  if (!iperf) return;
  const probe = Deno.listen({ hostname: HOST, port: 0 });
  const port = String(probe.addr.port);
  probe.close();
  // --forceflush: otherwise the "listening" line sits in a pipe buffer.
  const server = track(
    new Deno.Command(iperf, {
      args: ["-s", "-B", HOST, "-p", port, "--forceflush"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).spawn(),
  );
  try {
    if (!await saysWithin(server.stdout, "listening", STARTUP_MS)) {
      throw new Error(
        `the iperf3 server did not say it was listening within ${STARTUP_MS / 1000} s`,
      );
    }
    const seconds = String(Math.max(1, Math.round(ctx.options.durationMs / 1000)));
    for (const [name, extra] of IPERF3_VARIANTS) {
      const client = await run(
        iperf,
        ["-c", HOST, "-p", port, "-t", seconds, "-J", ...extra],
        60_000,
      );
      const report = JSON.parse(client.out.slice(client.out.indexOf("{")));
      if (report.error) throw new Error(report.error);
      ctx.iperf3[name] = report.end.sum_received.bits_per_second / 8 / 1e6;
      log(`iperf3 ${name}, one stream on loopback: ${formatFigure(ctx.iperf3[name])} MB/s`);
    }
    ctx.iperf3MBps = Math.max(...Object.values(ctx.iperf3));
  } catch (error) {
    ctx.tools.skipped.push(`iperf3 ceiling: the run failed (${(error as Error).message})`);
  } finally {
    server.kill("SIGTERM");
    await server.status;
  }
}

/** (1) Large hits: one client, one cached 64 MiB or 256 MiB file, again and again. */
async function largeHits(ctx: Context): Promise<void> {
  const shape: Shape = { connections: 1, mode: "keep-alive", bufferSize: MiB, workers: 1 };
  for (const [mib, set] of [[64, ctx.files.large64], [256, ctx.files.large256]] as const) {
    const r = row(ctx, `large-hit-${mib}`, `(1) large hit, ${mib} MiB, 1 client`, "MB/s");
    // The Python reference caches at most 64 MiB: the 256 MiB file is never a hit there.
    for (const server of referenceServers(ctx, mib === 64)) {
      const result = await measure(ctx, server, set, shape, r.workload);
      record(r, server, result);
      if (server.name.startsWith("tcpcache")) checkOutcome(ctx, r, result, "hit");
    }
    if (ctx.iperf3MBps) {
      r.notes.push(
        `iperf3 ceiling ${formatFigure(ctx.iperf3MBps)} MB/s: tcpcache at ` +
          `${((r.values.tcpcache ?? 0) / ctx.iperf3MBps).toFixed(2)}x`,
      );
    }
  }
}

/** A cache directory that does not exist yet (the server creates it). */
function freshCacheDir(ctx: Context): string {
  return `${ctx.root}/cache-${ctx.freshCaches++}`;
}

async function stopAndClean(server: Server, cacheDir: string): Promise<void> {
  await stopServer(server);
  await Deno.remove(cacheDir, { recursive: true }).catch(() => {});
}

/**
 * (2a) Misses: the first fetch of a file from a fresh server with an empty
 * cache (the files themselves are in the OS page cache, as they are for
 * nginx), a few times; the median counts.
 */
async function misses(ctx: Context): Promise<void> {
  const shape: Shape = { connections: 1, mode: "keep-alive", bufferSize: MiB, requests: 1 };
  for (const [mib, set] of [[64, ctx.files.large64], [256, ctx.files.large256]] as const) {
    const r = row(ctx, `miss-${mib}`, `(2) miss, ${mib} MiB, cold cache (median)`, "MB/s");
    const ours: LoadResult[] = [];
    for (let i = 0; i < ctx.options.repeat; i++) {
      const cacheDir = freshCacheDir(ctx);
      const server = await startTcpcache(ctx.files.dir, cacheDir, "512MiB");
      try {
        const result = await measure(ctx, server, set, shape, r.workload);
        checkOutcome(ctx, r, result, "miss");
        ours.push(result);
      } finally {
        await stopAndClean(server, cacheDir);
      }
    }
    recordMedian(r, "tcpcache", ours);
    const nginx = ctx.servers.nginx;
    if (nginx) {
      const theirs: LoadResult[] = [];
      for (let i = 0; i < ctx.options.repeat; i++) {
        theirs.push(await measure(ctx, nginx, set, shape, r.workload));
      }
      recordMedian(r, "nginx", theirs);
    }
    r.notes.push(`${ctx.options.repeat} fresh servers; nginx: single fetches`);
  }
}

function recordMedian(r: Row, name: ServerName, results: LoadResult[]): void {
  const rates = results.map((x) => x.megabytesPerSecond).sort((a, b) => a - b);
  r.values[name] = rates[Math.floor(rates.length / 2)];
  r.loads[name] = results;
  const errors = results.reduce((a, x) => a + x.errors, 0);
  if (errors) r.notes.push(`${name}: ${errors} errors`);
}

/** (2b) Bypass: files larger than tcpcache's cache, streamed from the directory every time. */
async function bypass(ctx: Context): Promise<void> {
  const cacheDir = freshCacheDir(ctx);
  const server = await startTcpcache(ctx.files.dir, cacheDir, "32MiB");
  const shape: Shape = { connections: 1, mode: "keep-alive", bufferSize: MiB, workers: 1 };
  try {
    for (const [mib, set] of [[64, ctx.files.large64], [256, ctx.files.large256]] as const) {
      const r = row(ctx, `bypass-${mib}`, `(2) bypass, ${mib} MiB > 32 MiB cache`, "MB/s");
      const result = await measure(ctx, server, set, shape, r.workload);
      record(r, server, result);
      checkOutcome(ctx, r, result, "bypass");
      // nginx has no cache to bypass: its figure is the large-hit one, same file.
      const nginx = ctx.rows.find((x) => x.key === `large-hit-${mib}`)?.values.nginx;
      if (nginx !== undefined) r.values.nginx = nginx;
      r.notes.push("nginx: its large-file figure");
    }
  } finally {
    await stopAndClean(server, cacheDir);
  }
}

/**
 * The driver's cross-check: nginx under wrk (C, Debian's package) on the
 * same files and connections as a row just measured with the Deno driver.
 * Where the two drivers carry nginx alike, the Deno driver is not what
 * limits a row's figures.
 */
async function wrkCrossCheck(ctx: Context, r: Row, set: FileSet, shape: Shape): Promise<void> {
  const nginx = ctx.servers.nginx;
  const byDriver = r.values.nginx;
  if (!ctx.tools.wrk || !nginx || byDriver === undefined) return;
  const close = shape.mode === "new-connection";
  const script = await writeWrkScript(`${ctx.root}/${r.key}.lua`, set.paths, close);
  const threads = Math.min(2, shape.connections);
  const base = { port: nginx.port, script, connections: shape.connections, threads };
  await runWrk(ctx.tools.wrk, {
    ...base,
    seconds: Math.max(1, Math.round(ctx.options.warmupMs / 1000)),
  });
  const result = await runWrk(ctx.tools.wrk, {
    ...base,
    seconds: Math.max(1, Math.round(ctx.options.durationMs / 1000)),
  });
  const byWrk = result.requests / result.seconds;
  ctx.crossChecks.push(
    `${r.workload}: nginx ${formatFigure(byDriver)} req/s under the Deno driver, ` +
      `${formatFigure(byWrk)} under wrk -t${threads} (${(byDriver / byWrk).toFixed(2)}x)`,
  );
}

/** (3) Small files: 4 KiB from 1,000 files on keep-alive connections. */
async function smallFiles(ctx: Context): Promise<void> {
  for (const concurrency of [1, 64, 256]) {
    const workload = `(3) small 4 KiB, keep-alive, c=${concurrency}`;
    const r = row(ctx, `small-c${concurrency}`, workload, "req/s");
    const latency = row(
      ctx,
      `small-c${concurrency}-latency`,
      `${workload}: p50 / p99`,
      "ms",
      false,
    );
    latency.p99 = {};
    const shape: Shape = {
      connections: concurrency,
      mode: "keep-alive",
      bufferSize: 16 * KiB,
      workers: concurrency === 1 ? 1 : undefined,
    };
    for (const server of referenceServers(ctx, true)) {
      const result = await measure(ctx, server, ctx.files.small, shape, workload);
      record(r, server, result);
      if (server.name.startsWith("tcpcache")) checkOutcome(ctx, r, result, "hit");
      latency.values[server.name] = result.p50Ms;
      latency.p99[server.name] = result.p99Ms;
    }
    if (concurrency === 64) await wrkCrossCheck(ctx, r, ctx.files.small, shape);
  }
}

/** (4) A new connection for every request: 4 KiB files, 64 at a time. */
async function newConnections(ctx: Context): Promise<void> {
  const workload = "(4) small 4 KiB, new connection each, c=64";
  const r = row(ctx, "new-connection-c64", workload, "req/s");
  const shape: Shape = { connections: 64, mode: "new-connection", bufferSize: 16 * KiB };
  for (const server of referenceServers(ctx, true)) {
    record(r, server, await measure(ctx, server, ctx.files.small, shape, workload));
  }
  await wrkCrossCheck(ctx, r, ctx.files.small, shape);
}

/** (5) Mixed: 16 connections fetching 64 different 1 MiB files. */
async function mixed(ctx: Context): Promise<void> {
  const workload = "(5) mixed, 1 MiB files, 16 connections";
  const r = row(ctx, "mixed-1mib-c16", workload, "MB/s");
  const shape: Shape = { connections: 16, mode: "keep-alive", bufferSize: 256 * KiB };
  for (const server of referenceServers(ctx, true)) {
    record(r, server, await measure(ctx, server, ctx.files.mid, shape, workload));
  }
}

/**
 * (6) Scale: N connections opened and held, each fetching a few 1 MiB files,
 * all still open when the last answer arrives. tcpcache runs on a fresh
 * server per level, so its VmHWM (peak resident memory) is this level's.
 */
async function scale(ctx: Context): Promise<void> {
  for (const connections of [256, 1000]) {
    const workload = `(6) scale, ${connections} connections x 4 x 1 MiB`;
    const r = row(ctx, `scale-${connections}`, workload, "MB/s");
    const memory = row(ctx, `scale-${connections}-rss`, `${workload}: peak RSS`, "MiB", false);
    const cores = navigator.hardwareConcurrency;
    for (const workers of cores > 1 ? [1, cores] : [1]) {
      const cacheDir = freshCacheDir(ctx);
      const ours = await startTcpcache(ctx.files.dir, cacheDir, "512MiB", { workers });
      try {
        await warmTcpcache(ctx, ours, [ctx.files.mid]);
        await holdAndMeasure(ctx, ours, connections, r, memory);
      } finally {
        await stopAndClean(ours, cacheDir);
      }
    }
    if (ctx.servers.nginx) await holdAndMeasure(ctx, ctx.servers.nginx, connections, r, memory);
  }
}

async function holdAndMeasure(
  ctx: Context,
  server: Server,
  connections: number,
  r: Row,
  memory: Row,
): Promise<void> {
  const pids = await processTree(server.pid);
  const sampler = sampleMemory(pids);
  const shape: Shape = { connections, mode: "hold", bufferSize: 64 * KiB, requests: 4 };
  let held = 0;
  let result: LoadResult;
  try {
    result = await measure(ctx, server, ctx.files.mid, shape, r.workload);
    held = await countSockets(pids);
  } finally {
    await ctx.pool.release();
  }
  const sampled = await sampler.stop();
  const { hwm } = await memoryKiB(pids);
  // One process: VmHWM is its exact peak. Several (nginx): the sampled peak
  // of their sum (their VmHWMs need not coincide).
  const peakKiB = pids.length === 1 ? Math.max(hwm, sampled) : sampled;
  record(r, server, result);
  memory.values[server.name] = peakKiB / 1024;
  memory.loads[server.name] = result;
  const expected = connections * 4;
  r.notes.push(`${server.name}: ${result.requests}/${expected} answers, ${held} sockets held`);
  if (result.requests !== expected || result.errors > 0) {
    ctx.problems.push(
      `${r.workload} on ${server.name}: ${result.requests} of ${expected} answers, ` +
        `${result.errors} errors`,
    );
  }
}

// ---------------------------------------------------------------------------
// Report

function cell(r: Row, name: ServerName): string {
  const value = r.values[name];
  if (value === undefined) return "-";
  if (r.unit === "ms") return `${value.toFixed(2)} / ${(r.p99?.[name] ?? 0).toFixed(2)} ms`;
  return `${formatFigure(value)} ${r.unit}`;
}

function ratioCell(r: Row, name: ServerName, server: ServerName = "tcpcache"): string {
  const ours = r.values[server];
  const theirs = r.values[name];
  if (!r.ratio || ours === undefined || theirs === undefined || theirs === 0) return "-";
  return `${(ours / theirs).toFixed(2)}x`;
}

/**
 * Each server's CPU µs per answer: tcpcache (one thread, then one per core) /
 * nginx / the bare loop (likewise).
 */
function cpuCell(r: Row): string {
  const names = MEASURED;
  if (names.every((name) => r.cpu[name] === undefined)) return "-";
  const format = (us?: number) =>
    us === undefined ? "-" : us >= 100 ? formatFigure(Math.round(us)) : us.toFixed(1);
  return names.map((name) => format(r.cpu[name])).join(" / ");
}

/** The results as a Markdown table. */
function table(rows: Row[]): string {
  const cores = navigator.hardwareConcurrency;
  const header = [
    "workload",
    "tcpcache",
    "nginx",
    "÷ nginx",
    "bare Deno",
    "÷ bare",
    `tcpcache, ${cores} threads`,
    "÷ nginx",
    `bare Deno, ${cores} threads`,
    "python (original)",
    `server CPU µs/req: tcpcache / tcpcache ${cores} threads / nginx / bare / bare ${cores} threads`,
    "notes",
  ];
  return markdownTable(
    header,
    rows.map((r) => [
      r.workload,
      cell(r, "tcpcache"),
      cell(r, "nginx"),
      ratioCell(r, "nginx"),
      cell(r, "bare-tcp"),
      ratioCell(r, "bare-tcp"),
      cell(r, "tcpcache-workers"),
      ratioCell(r, "nginx", "tcpcache-workers"),
      cell(r, "bare-tcp-workers"),
      cell(r, "python"),
      cpuCell(r),
      r.notes.join("; "),
    ]),
  );
}

/** One target: its verdict and the figures behind it. */
interface Target {
  target: string;
  met: boolean | undefined;
  figure: string;
}

function targets(ctx: Context): Target[] {
  const get = (key: string) => ctx.rows.find((r) => r.key === key);
  const versus = (
    key: string,
    name: ServerName,
    min: number,
    label: string,
    server: ServerName = "tcpcache",
  ): Target => {
    const r = get(key);
    const ours = r?.values[server];
    const theirs = r?.values[name];
    if (ours === undefined || theirs === undefined) {
      return { target: label, met: undefined, figure: `no ${server} or ${name} figure` };
    }
    const ratio = ours / theirs;
    return {
      target: label,
      met: ratio >= min,
      figure: `${ratio.toFixed(2)}x (${cell(r!, server)} vs ${cell(r!, name)})`,
    };
  };
  const list: Target[] = [];
  for (const mib of [64, 256]) {
    list.push(versus(`large-hit-${mib}`, "nginx", 1.0, `large hit ${mib} MiB >= 1.0x nginx`));
    const ours = get(`large-hit-${mib}`)?.values.tcpcache;
    list.push(
      ours === undefined || !ctx.iperf3MBps
        ? { target: `large hit ${mib} MiB >= 0.75x iperf3`, met: undefined, figure: "no iperf3" }
        : {
          target: `large hit ${mib} MiB >= 0.75x iperf3`,
          met: ours / ctx.iperf3MBps >= 0.75,
          figure: `${(ours / ctx.iperf3MBps).toFixed(2)}x (${formatFigure(ours)} vs ${
            formatFigure(ctx.iperf3MBps)
          } MB/s)`,
        },
    );
  }
  list.push(versus("small-c64", "nginx", 0.9, "small files keep-alive c=64 >= 0.9x nginx"));
  list.push(versus("small-c256", "nginx", 0.9, "small files keep-alive c=256 >= 0.9x nginx"));
  list.push(versus("new-connection-c64", "nginx", 0.6, "new connection per request >= 0.6x nginx"));
  list.push(versus("small-c64", "python", 3, "small files c=64 >= 3x the original design"));
  // The bare loop's ceiling, one thread each (issue 15).
  const ceilingRows: [string, string][] = [
    ["small-c64", "small files c=64"],
    ["small-c256", "small files c=256"],
    ["new-connection-c64", "new connection per request"],
    ["mixed-1mib-c16", "1 MiB files c=16"],
  ];
  for (const [key, label] of ceilingRows) {
    list.push(versus(key, "bare-tcp", 0.9, `${label} >= 0.9x the bare Deno loop`));
    const ours = get(key)?.cpu.tcpcache;
    const bare = get(key)?.cpu["bare-tcp"];
    list.push({
      target: `${label}: server CPU per request <= 1.1x the bare loop's`,
      met: ours === undefined || bare === undefined ? undefined : ours <= 1.1 * bare,
      figure: ours === undefined || bare === undefined
        ? "not measured"
        : `${(ours / bare).toFixed(2)}x (${ours.toFixed(1)} vs ${bare.toFixed(1)} µs)`,
    });
  }
  // One thread per core, the command line's default (issue 15): the floors
  // for a 2-core machine, where the load driver needs a core too.
  const cores = navigator.hardwareConcurrency;
  const threads: [string, string, ServerName, number][] = [
    ["small-c64", "small files c=64", "nginx", 0.55],
    ["small-c256", "small files c=256", "nginx", 0.55],
    ["new-connection-c64", "new connection per request", "nginx", 0.74],
    ["mixed-1mib-c16", "1 MiB files c=16", "nginx", 0.72],
    ["large-hit-256", "large hit 256 MiB", "nginx", 0.36],
    ["small-c64", "small files c=64", "python", 2],
    ["mixed-1mib-c16", "1 MiB files c=16", "python", 2],
  ];
  for (const [key, label, name, min] of threads) {
    const who = name === "python" ? "the original design" : name;
    const text = `${cores} threads: ${label} >= ${min}x ${who}`;
    list.push(versus(key, name, min, text, "tcpcache-workers"));
  }
  // Fair under load (issue 15): the slowest answers at 256 connections.
  const tail = get("small-c256-latency")?.p99;
  for (const server of ["tcpcache", "tcpcache-workers"] as const) {
    const ours = tail?.[server];
    const theirs = tail?.nginx;
    const threads = server === "tcpcache" ? "" : `${cores} threads: `;
    list.push({
      target: `${threads}p99 at 256 connections <= 2x nginx's`,
      met: ours === undefined || !theirs ? undefined : ours <= 2 * theirs,
      figure: ours === undefined || !theirs
        ? "not measured"
        : `${(ours / theirs).toFixed(2)}x (${ours.toFixed(2)} vs ${theirs.toFixed(2)} ms)`,
    });
  }
  const miss = get("miss-64")?.values.tcpcache;
  const hit = get("large-hit-64")?.values.tcpcache;
  list.push({
    target: "64 MiB miss >= 0.5x the 64 MiB large hit",
    met: miss !== undefined && hit ? miss / hit >= 0.5 : undefined,
    figure: miss !== undefined && hit
      ? `${(miss / hit).toFixed(2)}x (${formatFigure(miss)} vs ${formatFigure(hit)} MB/s)`
      : "not measured",
  });
  const rss = get("scale-256-rss")?.values.tcpcache;
  list.push({
    target: "peak RSS < 150 MiB at 256 connections fetching 1 MiB files",
    met: rss === undefined ? undefined : rss < 150,
    figure: rss === undefined ? "not measured" : `${rss.toFixed(1)} MiB`,
  });
  const threadsRss = get("scale-256-rss")?.values["tcpcache-workers"];
  list.push({
    target: `${cores} threads: peak RSS < 200 MiB at 256 connections fetching 1 MiB files`,
    met: threadsRss === undefined ? undefined : threadsRss < 200,
    figure: threadsRss === undefined ? "not measured" : `${threadsRss.toFixed(1)} MiB`,
  });
  const big = get("scale-1000")?.loads.tcpcache as LoadResult | undefined;
  list.push({
    target: "1,000 connections without errors",
    met: big === undefined ? undefined : big.errors === 0 && big.requests === 4000,
    figure: big === undefined
      ? "not measured"
      : `${big.errors} errors, ${big.requests}/4000 answers`,
  });
  return list;
}

function targetLines(list: Target[]): string {
  return list.map((t) => {
    const verdict = t.met === undefined ? "N/A    " : t.met ? "MET    " : "NOT MET";
    return `${verdict}  ${t.target}: ${t.figure}`;
  }).join("\n");
}

function chart(ctx: Context): string {
  const group = (r: Row) => ({
    label: r.workload.replace(/^\([0-9]\) /, ""),
    values: {
      tcpcache: r.values.tcpcache,
      nginx: r.values.nginx,
      "bare Deno": r.values["bare-tcp"],
      "python (original)": r.values.python,
    },
  });
  const rows = (unit: Row["unit"]) => ctx.rows.filter((r) => r.unit === unit && r.ratio);
  return barChartSvg(
    [
      { title: "requests per second (higher is better)", groups: rows("req/s").map(group) },
      { title: "MB/s (10^6 bytes per second, higher is better)", groups: rows("MB/s").map(group) },
    ],
    {
      title: `tcpcache beside ${ctx.tools.versions.nginx ?? "nginx"} (${
        new Date().toISOString().slice(0, 10)
      }, ${navigator.hardwareConcurrency} cores)`,
      series: [
        { name: "tcpcache", color: "#1f77b4" },
        { name: "nginx", color: "#2ca02c" },
        { name: "bare Deno", color: "#9467bd" },
        { name: "python (original)", color: "#ff7f0e" },
      ],
      format: formatFigure,
    },
  );
}

/** A digest of the server's sources (the repo's top-level .ts files), to notice edits mid-run. */
async function sourceDigest(): Promise<string> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(REPO)) {
    if (entry.isFile && entry.name.endsWith(".ts")) names.push(entry.name);
  }
  const parts = await Promise.all(names.sort().map((n) => Deno.readFile(`${REPO}/${n}`)));
  const all = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  parts.reduce((offset, p) => (all.set(p, offset), offset + p.length), 0);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What was measured: the commit, whether the tree was edited, and the sources' digest. */
interface Version extends CodeVersion {
  digest: string;
  /** See {@linkcode cpuSeconds}. */
  cpu: { machine: number; ours: number };
}

async function versionNow(): Promise<Version> {
  return { ...await codeVersion(), digest: await sourceDigest(), cpu: cpuSeconds() };
}

function machine(ctx: Context, started: Date, elapsedS: number) {
  return {
    date: started.toISOString(),
    command: ["deno", "run", "-A", "bench/bench.ts", ...Deno.args].join(" "),
    elapsedSeconds: Math.round(elapsedS),
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    ...ctx.tools.versions,
    options: ctx.options,
    cpu: cpuModel(),
    start: ctx.versions[0],
    end: ctx.versions[1],
    otherCpuSeconds: otherCpu(ctx.versions[0], ctx.versions[1]),
    iperf3MBps: ctx.iperf3,
  };
}

// ---------------------------------------------------------------------------
// Main

async function startReferences(ctx: Context): Promise<void> {
  ctx.servers.tcpcache = await startTcpcache(ctx.files.dir, freshCacheDir(ctx), "512MiB");
  const cores = navigator.hardwareConcurrency;
  if (cores > 1) {
    // The command line's default: one thread per core.
    ctx.servers["tcpcache-workers"] = await startTcpcache(
      ctx.files.dir,
      freshCacheDir(ctx),
      "512MiB",
      { workers: cores },
    );
  }
  if (ctx.tools.nginx) {
    try {
      ctx.servers.nginx = await startNginx(ctx.tools.nginx, `${ctx.root}/nginx`, ctx.files.dir);
    } catch (error) {
      ctx.tools.skipped.push(`nginx reference: ${(error as Error).message}`);
    }
  }
  for (const workers of cores > 1 ? [1, cores] : [1]) {
    try {
      const bare = await startBareTcp(ctx.files.dir, workers);
      ctx.servers[bare.name] = bare;
    } catch (error) {
      ctx.tools.skipped.push(`bare Deno loop, ${workers} threads: ${(error as Error).message}`);
    }
  }
  if (ctx.tools.python3) {
    try {
      ctx.servers.python = await startPython(ctx.tools.python3, ctx.files.dir);
    } catch (error) {
      ctx.tools.skipped.push(`original design (Python): ${(error as Error).message}`);
    }
  }
  const { small, mid, large64, large256 } = ctx.files;
  await warmTcpcache(ctx, ctx.servers.tcpcache, [small, mid, large64, large256]);
  const threads = ctx.servers["tcpcache-workers"];
  if (threads) await warmTcpcache(ctx, threads, [small, mid, large64, large256]);
}

async function bench(ctx: Context): Promise<void> {
  await startReferences(ctx);
  await selfCheck(ctx);
  await iperf3(ctx);
  await largeHits(ctx);
  await misses(ctx);
  await bypass(ctx);
  await smallFiles(ctx);
  await newConnections(ctx);
  await mixed(ctx);
  // Scale last, on fresh tcpcache servers; nginx stays (its memory is sampled, not its peak).
  for (
    const name of [
      "tcpcache",
      "tcpcache-workers",
      "python",
      "bare-tcp",
      "bare-tcp-workers",
    ] as const
  ) {
    const server = ctx.servers[name];
    if (server) await stopServer(server);
    delete ctx.servers[name];
  }
  await scale(ctx);
}

/**
 * Whether the driver could have limited tcpcache: where nginx went faster
 * with the same driver, it could not have; elsewhere its CPU use says.
 */
function driverSummary(ctx: Context): string {
  const compared = ctx.rows.filter((r) =>
    r.ratio && r.values.tcpcache !== undefined && r.values.nginx !== undefined
  );
  const headroom = compared.filter((r) => r.values.nginx! > r.values.tcpcache!);
  const least = headroom.reduce<Row | undefined>(
    (a, r) =>
      !a || r.values.nginx! / r.values.tcpcache! < a.values.nginx! / a.values.tcpcache! ? r : a,
    undefined,
  );
  const busy = ctx.rows.flatMap((r) =>
    Object.values(r.loads).flat().map((l) => l?.driverBusy ?? NaN)
  ).filter(Number.isFinite);
  const lines = [
    `Driver: ${ctx.pool.size} Deno Workers; its busiest thread used ${
      percent(Math.max(0, ...busy))
    } of a core in one window.`,
  ];
  if (least) {
    lines.push(
      `In ${headroom.length} of ${compared.length} rows the same driver carried nginx faster ` +
        `than tcpcache, so it did not limit tcpcache there (least headroom: ` +
        `${(least.values.nginx! / least.values.tcpcache!).toFixed(2)}x, ${least.workload}).`,
    );
  }
  const bound = ctx.rows.filter((r) => r.notes.some((n) => n.includes("driver-bound")));
  if (bound.length > 0) {
    lines.push(
      `The driver was >= 90% busy (marked "driver-bound?") in: ` +
        `${bound.map((r) => r.workload).join("; ")}.`,
    );
  }
  return lines.join("\n");
}

/** CPU seconds other processes used between two versions' samples. */
function otherCpu(start: Version, end: Version): number {
  return (end.cpu.machine - start.cpu.machine) - (end.cpu.ours - start.cpu.ours);
}

/** Problems with the run itself: the server's code changed under it, or the machine was busy. */
function runWarnings(ctx: Context, elapsedS: number): string[] {
  const [start, end] = ctx.versions;
  const warnings: string[] = [];
  if (start.digest !== end.digest) {
    warnings.push(
      `the server's sources changed during the run (${start.commit} -> ${end.commit}): ` +
        `the figures mix versions; run again`,
    );
  }
  const other = otherCpu(start, end);
  const share = other / (elapsedS * navigator.hardwareConcurrency);
  if (share > 0.05) {
    warnings.push(
      `other processes used ${other.toFixed(0)} CPU seconds during the run ` +
        `(${(share * 100).toFixed(0)}% of the machine): absolute figures are low, ratios less so`,
    );
  }
  return warnings;
}

async function report(ctx: Context, started: Date): Promise<void> {
  const elapsedS = (Date.now() - started.getTime()) / 1000;
  ctx.versions.push(await versionNow());
  ctx.problems.push(...runWarnings(ctx, elapsedS));
  const [start] = ctx.versions;
  console.log(
    `${versionLabel(start)}, ${navigator.hardwareConcurrency} cores, ${new Date().toISOString()}\n`,
  );
  const list = targets(ctx);
  console.log(table(ctx.rows));
  console.log(`\nTargets:\n${targetLines(list)}`);
  if (ctx.tools.skipped.length > 0) console.log(bulletList("Skipped", ctx.tools.skipped));
  if (ctx.problems.length > 0) console.log(bulletList("Problems", ctx.problems));
  console.log(`\n${driverSummary(ctx)}`);
  if (ctx.crossChecks.length > 0) console.log(bulletList("Driver against wrk", ctx.crossChecks));
  console.log(
    "MB = 10^6 bytes; latencies run from the request's first byte sent to its last byte.",
  );
  console.log(`Took ${Math.round(elapsedS)} s.`);
  await Deno.mkdir(ctx.options.results, { recursive: true });
  const json = {
    machine: machine(ctx, started, elapsedS),
    rows: ctx.rows,
    targets: list,
    skipped: ctx.tools.skipped,
    problems: ctx.problems,
  };
  await Deno.writeTextFile(
    `${ctx.options.results}/bench.json`,
    JSON.stringify(json, null, 2) + "\n",
  );
  await Deno.writeTextFile(`${ctx.options.results}/bench.svg`, chart(ctx));
  // Through deno fmt (the repo's settings), so that `deno task check` stays clean.
  const files = ["bench.json", "bench.svg"].map((name) => `${ctx.options.results}/${name}`);
  const formatted = await run(Deno.execPath(), ["fmt", "--quiet", ...files], 60_000);
  if (!formatted.ok) log(`deno fmt of the results failed: ${formatted.out.trim()}`);
  log(`wrote ${ctx.options.results}/bench.json and bench.svg`);
}

async function main(args: string[]): Promise<number> {
  const options = readCommandLine("bench", USAGE, args, parseOptions);
  if (typeof options === "number") return options;
  const started = new Date();
  // Before the hard cap: installing a missing tool may take minutes.
  const tools = await findTools(options);
  for (const skipped of tools.skipped) log(`skipping ${skipped}`);
  return await runSession({
    program: "bench",
    tempPrefix: "tcpcache-bench-",
    driverWorkers: options.driverWorkers,
    hardCapMs: 300_000 + 40 * (options.durationMs + options.warmupMs),
  }, async ({ root, pool }) => {
    log(`writing files in ${root}`);
    const ctx: Context = {
      options,
      tools,
      pool,
      root,
      files: await generateFiles(`${root}/files`),
      servers: {},
      rows: [],
      problems: [],
      crossChecks: [],
      freshCaches: 0,
      iperf3: {},
      versions: [await versionNow()],
    };
    await bench(ctx);
    // Every child reaped first, so that their CPU time counts as ours.
    await stopChildren();
    await report(ctx, started);
  });
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
