/**
 * The cluster benchmark: what spreading paths over several tcpcache nodes
 * (client/cluster.ts, rendezvous hashing) does to throughput and to the hit ratio.
 *
 *     deno run -A bench/cluster_bench.ts [--duration 5] [--warmup 1] [--driver-workers 6]
 *
 * Part 1, throughput with 1, 2 and 3 nodes: separate tcpcache processes on
 * 127.0.0.1, each with its own cache directory, all serving one directory.
 * For k nodes the paths are partitioned exactly as a cluster client routes
 * them (`rankNodes(path, nodes)[0]`), every path is warmed on its own node,
 * and then every node is loaded at once, by its own driver pool, with its
 * share of the paths; the figures are summed. The total connection count
 * and the total driver worker count are the same at every k, so only the
 * number of server processes changes. Two workloads: 4 KiB files on
 * keep-alive connections (req/s) and 1 MiB files (MB/s).
 *
 * All the nodes and the driver share this machine's cores, so part 1 shows
 * the cost of distributing and where the CPU ceiling is, not scale-out: the
 * CPU table beside it says how much of the machine each k used.
 *
 * Part 2, hit ratio: a seeded Zipf trace replayed, GET by GET, against
 * three in-process servers of capacity C behind a `ClusterClient`, and
 * against one server of capacity 3C behind one connection. Partitioning
 * gives each node a disjoint key set, so the question is how much the
 * uneven split of popular keys and bytes over the nodes costs against one
 * shared cache of the same total size.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CacheClient, connect, type Stats } from "../client.ts";
import { ClusterClient, rankNodes } from "../client.ts";
import { type ServerHandle, startServer } from "../server.ts";
import { type Trace, zipfTrace } from "../sim/trace.ts";
import { cpuModel, cpuSeconds, type CpuUse, sampleCpu } from "./cpu.ts";
import { DriverPool, type LoadResult, type Mode } from "./driver.ts";
import { type FileSet, fileWriter, firstFiles, KiB, MiB, numberedPaths } from "./files.ts";
import { checkBodies, warm } from "./preflight.ts";
import { HOST, log, type Server, startTcpcache, stopServer } from "./processes.ts";
import { bulletList, formatFigure, markdownTable, percent } from "./report.ts";
import { codeVersion, versionLabel } from "./report.ts";
import { readCommandLine, runSession } from "./session.ts";

const USAGE = `bench/cluster_bench.ts: throughput with 1-3 tcpcache nodes, and a cluster's hit ratio

Usage: deno run -A bench/cluster_bench.ts [options]

Options:
  --duration SECS       counted seconds per throughput measurement (default: 5)
  --warmup SECS         uncounted seconds before each one (default: 1)
  --driver-workers N    load driver workers in all, split over the nodes' pools
                        (default: 6, which 1, 2 and 3 divide evenly; at least 3)
  --second-capacity     also replay the hit-ratio trace with 3C = 10% of the
                        working set, not only 20% (about 30 s more)
  -h, --help            show this help
`;

/** The most nodes part 1 runs. */
const MAX_NODES = 3;

/** The command line, read. */
interface Options {
  /** Counted milliseconds per throughput measurement. */
  durationMs: number;
  /** Uncounted milliseconds before each. */
  warmupMs: number;
  /** Driver workers in all, split over the nodes' pools. */
  driverWorkers: number;
  /** Also the hit-ratio replay with 3C at 10% of the working set. */
  secondCapacity: boolean;
}

/** The flags, as node:util's parseArgs takes them. */
const FLAGS = {
  duration: { type: "string", default: "5" },
  warmup: { type: "string", default: "1" },
  // 6 by default: 1, 2 and 3 pools split it evenly.
  "driver-workers": { type: "string", default: "6" },
  "second-capacity": { type: "boolean", default: false },
  help: { type: "boolean", short: "h" },
} as const;

function parseOptions(args: string[]): Options | "help" {
  const { values } = parseArgs({ args, options: FLAGS });
  if (values.help) return "help";
  const workers = Number(values["driver-workers"]);
  if (!Number.isInteger(workers) || workers < MAX_NODES || workers > 32) {
    throw new Error(`--driver-workers must be a whole number from ${MAX_NODES} to 32`);
  }
  return {
    durationMs: secondsOption("--duration", values.duration, 0.5) * 1000,
    warmupMs: secondsOption("--warmup", values.warmup, 0) * 1000,
    driverWorkers: workers,
    secondCapacity: values["second-capacity"],
  };
}

/** A number of seconds from `min` to 60. */
function secondsOption(flag: string, text: string, min: number): number {
  const value = Number(text);
  if (text.trim() === "" || !(value >= min && value <= 60)) {
    throw new Error(`${flag} must be a number of seconds from ${min} to 60`);
  }
  return value;
}

/** `total` split in proportion to `weights`, by largest remainders, at least 1 each. */
function apportion(total: number, weights: number[]): number[] {
  const sum = weights.reduce((a, w) => a + w, 0);
  const exact = weights.map((w) => (total * w) / sum);
  const parts = exact.map((x) => Math.max(1, Math.floor(x)));
  const byRemainder = exact.map((x, i) => ({ i, rest: x - Math.floor(x) }))
    .sort((a, b) => b.rest - a.rest);
  for (let j = 0; parts.reduce((a, p) => a + p, 0) < total; j++) {
    parts[byRemainder[j % parts.length].i]++;
  }
  return parts;
}

// ---------------------------------------------------------------------------
// Part 1: throughput with 1, 2 and 3 nodes

/** A tcpcache process and the address a cluster client would name it by. */
interface Node {
  server: Server;
  address: string;
}

interface Workload {
  title: string;
  unit: "req/s" | "MB/s";
  files: "small" | "mid";
  /** In all, over the nodes, at every k. */
  connections: number;
  bufferSize: number;
}

const WORKLOADS: Workload[] = [
  {
    title: "4 KiB files, keep-alive",
    unit: "req/s",
    files: "small",
    connections: 64,
    bufferSize: 16 * KiB,
  },
  {
    title: "1 MiB files, keep-alive",
    unit: "MB/s",
    files: "mid",
    connections: 64,
    bufferSize: 256 * KiB,
  },
];

/** One node's part of a measurement. */
interface NodeLoad {
  files: FileSet;
  connections: number;
  workers: number;
  result: LoadResult;
  /** Its server process's CPU over the window. */
  cpu: CpuUse;
}

/** One workload on k nodes at once. */
interface Measurement {
  workload: Workload;
  loads: NodeLoad[];
  /** The machine over the window: every node's process together, the driver, the rest. */
  cpu: CpuUse;
  /** Cores the whole machine used over the window, interrupts included. */
  machineBusy: number;
}

interface Throughput {
  options: Options;
  files: { small: FileSet; mid: FileSet };
  nodes: Node[];
  measurements: Measurement[];
  problems: string[];
}

/**
 * 1,000 files of 4 KiB and 128 of 1 MiB: enough paths that hashing splits
 * them roughly evenly over three nodes.
 */
async function writeThroughputFiles(dir: string): Promise<Throughput["files"]> {
  const write = fileWriter(dir);
  return {
    small: await write(numberedPaths("small", 1000), 4 * KiB),
    mid: await write(numberedPaths("mid", 128), MiB),
  };
}

/** Every node up front, each with its own cache, big enough for every file. */
async function startNodes(root: string): Promise<Node[]> {
  const starting = Array.from(
    { length: MAX_NODES },
    (_, i) => startTcpcache(`${root}/files`, `${root}/cache-${i}`, "256MiB"),
  );
  const servers = await Promise.all(starting);
  return servers.map((server) => ({ server, address: `${HOST}:${server.port}` }));
}

/** The set's files by node: each path goes where a cluster client would send it. */
function partition(set: FileSet, addresses: string[]): FileSet[] {
  const parts = addresses.map((): FileSet => ({ paths: [], sizes: [], local: [] }));
  set.paths.forEach((path, i) => {
    const part = parts[addresses.indexOf(rankNodes(path, addresses)[0])];
    part.paths.push(path);
    part.sizes.push(set.sizes[i]);
    part.local.push(set.local[i]);
  });
  if (parts.some((part) => part.paths.length === 0)) {
    throw new Error(`a node got none of ${set.paths.length} paths`);
  }
  return parts;
}

/** Before timing: each node sends the files' own bytes (a sample of each set). */
async function selfCheck(ctx: Throughput, pool: DriverPool): Promise<void> {
  for (const node of ctx.nodes) {
    const checks: [FileSet, Mode][] = [
      [firstFiles(ctx.files.small, 16), "keep-alive"],
      [firstFiles(ctx.files.mid, 2), "keep-alive"],
    ];
    const { problems } = await checkBodies(pool, node.server, node.address, checks);
    ctx.problems.push(...problems);
  }
  log(`self-check: bodies compared byte for byte on ${ctx.nodes.length} nodes`);
}

/** What a measurement on k nodes is made of: who gets which paths, connections and workers. */
interface Plan {
  nodes: Node[];
  shares: FileSet[];
  connections: number[];
  workers: number[];
}

/**
 * Connections go to the nodes in proportion to their paths, as a client
 * cycling over all the paths would send them; workers are split evenly, as
 * each node gets its own pool (a pool runs one load at a time).
 */
function plan(ctx: Throughput, workload: Workload, k: number): Plan {
  const nodes = ctx.nodes.slice(0, k);
  const shares = partition(ctx.files[workload.files], nodes.map((node) => node.address));
  return {
    nodes,
    shares,
    connections: apportion(workload.connections, shares.map((s) => s.paths.length)),
    workers: apportion(ctx.options.driverWorkers, nodes.map(() => 1)),
  };
}

/** One workload on the first k nodes at once, each loaded by its own pool. */
async function measureNodes(ctx: Throughput, workload: Workload, k: number): Promise<void> {
  const p = plan(ctx, workload, k);
  const pools = p.workers.map((n) => new DriverPool(n));
  try {
    // Warming also gives the new pools' workers time to load.
    const warming = pools.map((pool, i) => warm(pool, p.nodes[i].server, [p.shares[i]]));
    for (const [i, errors] of (await Promise.all(warming)).entries()) {
      ctx.problems.push(...errors.map((e) => `warming ${p.nodes[i].address}: ${e}`));
    }
    const measurement = await loadAll(ctx.options, workload, p, pools);
    ctx.measurements.push(measurement);
    noteTrouble(ctx, measurement, p.nodes);
    log(`${workload.title}, ${k} node(s): ${formatFigure(total(measurement))} ${workload.unit}`);
  } finally {
    for (const pool of pools) pool.close();
  }
}

/**
 * Starts every node's load in the same turn, so that their windows
 * coincide, and samples the CPU over that window: all the nodes together,
 * each alone, and the whole machine.
 */
async function loadAll(
  options: Options,
  workload: Workload,
  p: Plan,
  pools: DriverPool[],
): Promise<Measurement> {
  const { durationMs, warmupMs } = options;
  const loads = Promise.all(pools.map((pool, i) =>
    pool.run({
      port: p.nodes[i].server.port,
      protocol: "tcpcache",
      paths: p.shares[i].paths,
      sizes: p.shares[i].sizes,
      connections: p.connections[i],
      mode: "keep-alive",
      durationMs,
      warmupMs,
      bufferSize: workload.bufferSize,
    })
  ));
  const pids = p.nodes.map((node) => node.server.pid);
  const cpus = Promise.all(
    [pids, ...pids.map((pid) => [pid])].map((list) => sampleCpu(list, warmupMs, durationMs)),
  );
  const [results, [all, ...each], machineBusy] = await Promise.all([
    loads,
    cpus,
    machineCores(warmupMs, durationMs),
  ]);
  const nodeLoads = results.map((result, i): NodeLoad => ({
    files: p.shares[i],
    connections: p.connections[i],
    workers: p.workers[i],
    result,
    cpu: each[i],
  }));
  return { workload, loads: nodeLoads, cpu: all, machineBusy };
}

/**
 * The cores the machine used over a window that opens after `warmupMs`:
 * the one figure that cannot exceed the core count (the loopback's softirq
 * time is also partly inside the processes' own figures).
 */
async function machineCores(warmupMs: number, durationMs: number): Promise<number> {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(warmupMs);
  const [before, opened] = [cpuSeconds().machine, performance.now()];
  await sleep(durationMs);
  return (cpuSeconds().machine - before) / ((performance.now() - opened) / 1000);
}

function figure(result: LoadResult, unit: Workload["unit"]): number {
  return unit === "MB/s" ? result.megabytesPerSecond : result.requestsPerSecond;
}

/** The nodes' figures summed: they ran over the same window. */
function total(m: Measurement): number {
  return m.loads.reduce((sum, load) => sum + figure(load.result, m.workload.unit), 0);
}

/** Errors, anything but a hit while timing, a node that exited. */
function noteTrouble(ctx: Throughput, m: Measurement, nodes: Node[]): void {
  m.loads.forEach(({ result }, i) => {
    const where = `${m.workload.title}, ${m.loads.length} node(s), ${nodes[i].address}`;
    const { hit, miss, bypass } = result.cache;
    if (result.errors > 0) {
      ctx.problems.push(`${where}: ${result.errors} errors (${result.errorSamples.join(" / ")})`);
    }
    if (miss > 0 || bypass > 0 || hit !== result.requests || hit === 0) {
      ctx.problems.push(
        `${where}: ${hit} hit, ${miss} miss, ${bypass} bypass of ${result.requests}`,
      );
    }
    if (nodes[i].server.exited) {
      ctx.problems.push(`${where}: the node exited; stderr: ${nodes[i].server.stderr.join(" / ")}`);
    }
  });
}

async function throughput(ctx: Throughput, pool: DriverPool): Promise<void> {
  await selfCheck(ctx, pool);
  for (const workload of WORKLOADS) {
    for (let k = 1; k <= MAX_NODES; k++) await measureNodes(ctx, workload, k);
  }
}

/** Per k: the summed figure, its ratio to one node, each node's, and the cache outcomes. */
function throughputTable(ctx: Throughput): string {
  const header = [
    "workload",
    "nodes",
    "total",
    "vs 1 node",
    "per node",
    "paths per node",
    "conns (driver workers) per node",
    "p50 / p99 ms (worst node)",
    "errors",
    "all hits",
  ];
  return markdownTable(header, ctx.measurements.map((m) => throughputRow(ctx, m)));
}

function throughputRow(ctx: Throughput, m: Measurement): string[] {
  const one = ctx.measurements.find((x) => x.workload === m.workload && x.loads.length === 1);
  const per = (pick: (load: NodeLoad) => string) => m.loads.map(pick).join(" / ");
  const results = m.loads.map((load) => load.result);
  const worst = (pick: (r: LoadResult) => number) => Math.max(...results.map(pick)).toFixed(2);
  const errors = results.reduce((a, r) => a + r.errors, 0);
  const allHits = results.every((r) => r.cache.hit === r.requests && r.requests > 0);
  return [
    m.workload.title,
    String(m.loads.length),
    `${formatFigure(total(m))} ${m.workload.unit}`,
    one ? `${(total(m) / total(one)).toFixed(2)}x` : "-",
    per((load) => formatFigure(figure(load.result, m.workload.unit))),
    per((load) => String(load.files.paths.length)),
    per((load) => `${load.connections} (${load.workers})`),
    `${worst((r) => r.p50Ms)} / ${worst((r) => r.p99Ms)}`,
    String(errors),
    allHits ? "yes" : "NO (see Problems)",
  ];
}

/** Per k: where the machine's cores went over the window. */
function cpuTable(ctx: Throughput): string {
  const header = [
    "workload",
    "nodes",
    "servers (cores)",
    "per node",
    "busiest server thread",
    "driver (busiest worker)",
    "others / softirq",
    `machine busy (of ${navigator.hardwareConcurrency})`,
    "server CPU per unit",
  ];
  return markdownTable(header, ctx.measurements.map(cpuRow));
}

function cpuRow(m: Measurement): string[] {
  const { server, driver, others, softirq } = m.cpu;
  const driverBusy = Math.max(...m.loads.map((load) => load.result.driverBusy));
  // Each node's own sample names its main thread; the combined one knows only the first's.
  const busiest = m.loads.reduce((a, load) => load.cpu.busiest > a.cpu.busiest ? load : a);
  const node = m.loads.length > 1 ? `node ${m.loads.indexOf(busiest) + 1}: ` : "";
  return [
    m.workload.title,
    String(m.loads.length),
    server.toFixed(2),
    m.loads.map((load) => load.cpu.server.toFixed(2)).join(" / "),
    `${node}${percent(busiest.cpu.busiest)} ${busiest.cpu.busiestName}`,
    `${driver.toFixed(2)} (${percent(driverBusy)})`,
    `${others.toFixed(2)} / ${softirq.toFixed(2)}`,
    m.machineBusy.toFixed(2),
    serverCpuPerUnit(m),
  ];
}

/** The servers' CPU per request or per GB: what distribution costs whatever the rate. */
function serverCpuPerUnit(m: Measurement): string {
  const seconds = m.loads[0].result.windowMs / 1000;
  const used = m.cpu.server * seconds;
  const requests = m.loads.reduce((a, load) => a + load.result.requests, 0);
  const bytes = m.loads.reduce((a, load) => a + load.result.bytes, 0);
  return m.workload.unit === "MB/s"
    ? `${formatFigure((used * 1000) / (bytes / 1e9))} ms/GB`
    : `${formatFigure((used * 1e6) / requests)} us/req`;
}

// ---------------------------------------------------------------------------
// Part 2: hit ratio, three nodes of C against one node of 3C

/** The trace's shape; the scenarios vary the exponent and the cache's size. */
const ZIPF = {
  objects: 3000,
  requests: 20_000,
  sizes: { kind: "lognormal", median: 8 * KiB, sigma: 1 },
  seed: 42,
} as const;

interface Scenario {
  alpha: number;
  /** The total capacity (3C) as a share of the bytes of the objects the trace asks for. */
  fraction: number;
}

/**
 * A replay costs about half a millisecond a GET here (in-process servers,
 * each miss a cache file written), so the second only on request.
 */
const SCENARIOS: Scenario[] = [
  { alpha: 0.9, fraction: 0.2 },
  { alpha: 0.9, fraction: 0.1 },
];

/** GETs in flight at once: answers come in order per connection, so the outcomes do not change. */
const PIPELINE = 32;

/** What one replay of a trace found, from STATS summed over the nodes. */
interface Replay {
  setup: string;
  hits: number;
  misses: number;
  bypasses: number;
  bytesFromOrigin: number;
  /** Each node's share of the requests (one entry for the single node). */
  nodeRequests: number[];
  policy: string;
  failures: string[];
  seconds: number;
}

interface HitRatioRun {
  scenario: Scenario;
  trace: Trace;
  /** Bytes of the distinct objects the trace asks for. */
  workingSet: number;
  distinct: number;
  capacityPerNode: number;
  replays: Replay[];
}

function objectPath(key: string): string {
  return `zipf/${key}.bin`;
}

/** Each distinct object of the trace and its size. */
function objectsOf(trace: Trace): Map<string, number> {
  const objects = new Map<string, number>();
  trace.keys.forEach((key, i) => objects.set(key, trace.sizes[i]));
  return objects;
}

/** Writes every object the traces ask for (the same seed draws the same sizes). */
async function writeObjects(dir: string, traces: Trace[]): Promise<void> {
  const write = fileWriter(dir);
  const written = new Set<string>();
  for (const trace of traces) {
    for (const [key, size] of objectsOf(trace)) {
      if (!written.has(key)) await write([objectPath(key)], size);
      written.add(key);
    }
  }
}

/** Replays the trace in order, up to {@linkcode PIPELINE} GETs at once, checking each length. */
async function replayTrace(client: CacheClient, trace: Trace): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const lane = async () => {
    while (next < trace.keys.length) {
      const i = next++;
      const path = objectPath(trace.keys[i]);
      try {
        const got = await client.get(path);
        if (got.length !== trace.sizes[i] || got.bytes?.length !== trace.sizes[i]) {
          failures.push(`${path}: ${got.bytes?.length} bytes, expected ${trace.sizes[i]}`);
        }
      } catch (error) {
        failures.push(`${path}: ${(error as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PIPELINE }, lane));
  return failures;
}

/** Fresh in-process servers of `capacity` bytes each, with empty caches. */
async function startCaches(
  root: string,
  count: number,
  capacity: number,
  problems: string[],
): Promise<ServerHandle[]> {
  const dir = await Deno.makeTempDir({ dir: root, prefix: "caches-" });
  return await Promise.all(Array.from({ length: count }, (_, i) =>
    startServer({
      dir: `${root}/objects`,
      cacheDir: `${dir}/${i}`,
      port: 0,
      cacheSize: capacity,
      onError: (message) => problems.push(`in-process server: ${message}`),
    })));
}

/** One replay: `count` servers of `capacity`, a cluster client when there are several. */
async function replayOn(
  root: string,
  trace: Trace,
  count: number,
  capacity: number,
  problems: string[],
): Promise<Replay> {
  const servers = await startCaches(root, count, capacity, problems);
  const addresses = servers.map((s) => `${s.addr.hostname}:${s.addr.port}`);
  const client: CacheClient = count === 1
    ? await connect({ host: servers[0].addr.hostname, port: servers[0].addr.port })
    : new ClusterClient(addresses);
  try {
    const started = performance.now();
    const failures = await replayTrace(client, trace);
    const seconds = (performance.now() - started) / 1000;
    const stats = await client.stats();
    // A cluster's STATS carries each node's own counters under `nodes`.
    const nodes = count === 1
      ? [stats]
      : addresses.map((a) => (stats.nodes as Record<string, Stats>)[a]);
    return {
      setup: count === 1 ? `1 node of ${mib(capacity)}` : `${count} nodes of ${mib(capacity)}`,
      hits: stats.hits,
      misses: stats.misses,
      bypasses: stats.bypasses,
      bytesFromOrigin: Number(stats.bytesFromOrigin),
      nodeRequests: nodes.map((n) => n.hits + n.misses + n.bypasses),
      policy: (nodes[0].cache as { policy?: string }).policy ?? "?",
      failures,
      seconds,
    };
  } finally {
    client.close();
    await Promise.all(servers.map((s) => s.close()));
  }
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(2)} MiB`;
}

async function hitRatios(
  root: string,
  scenarios: Scenario[],
  problems: string[],
): Promise<HitRatioRun[]> {
  const traces = scenarios.map((s) => zipfTrace({ ...ZIPF, alpha: s.alpha }));
  await writeObjects(`${root}/objects`, traces);
  const runs: HitRatioRun[] = [];
  for (const [i, scenario] of scenarios.entries()) {
    const trace = traces[i];
    const objects = objectsOf(trace);
    const workingSet = [...objects.values()].reduce((a, b) => a + b, 0);
    const capacityPerNode = Math.floor((scenario.fraction * workingSet) / 3);
    const run: HitRatioRun = {
      scenario,
      trace,
      workingSet,
      distinct: objects.size,
      capacityPerNode,
      replays: [],
    };
    for (const [count, capacity] of [[3, capacityPerNode], [1, 3 * capacityPerNode]]) {
      const replay = await replayOn(root, trace, count, capacity, problems);
      run.replays.push(replay);
      problems.push(...replay.failures.slice(0, 5).map((f) => `replay on ${replay.setup}: ${f}`));
      log(`alpha ${scenario.alpha}, ${replay.setup}: hit ratio ${hitRatio(replay).toFixed(3)}`);
    }
    runs.push(run);
  }
  return runs;
}

function hitRatio(r: Replay): number {
  return r.hits / (r.hits + r.misses + r.bypasses);
}

function hitRatioTable(runs: HitRatioRun[]): string {
  const header = [
    "alpha",
    "3C / working set",
    "setup",
    "hit ratio",
    "hits / misses / bypasses",
    "from origin (of bytes asked)",
    "requests per node",
    "failed GETs",
    "replay seconds",
  ];
  const rows = runs.flatMap((run) => {
    const asked = run.trace.sizes.reduce((a, b) => a + b, 0);
    return run.replays.map((r) => [
      String(run.scenario.alpha),
      `${mib(3 * run.capacityPerNode)} / ${mib(run.workingSet)} (${
        percent(run.scenario.fraction)
      })`,
      r.setup,
      hitRatio(r).toFixed(3),
      `${r.hits} / ${r.misses} / ${r.bypasses}`,
      `${mib(r.bytesFromOrigin)} (${percent(r.bytesFromOrigin / asked)})`,
      r.nodeRequests.join(" / "),
      String(r.failures.length),
      r.seconds.toFixed(1),
    ]);
  });
  return markdownTable(header, rows);
}

function traceLine(runs: HitRatioRun[]): string {
  const { objects, requests, sizes, seed } = ZIPF;
  const byAlpha = new Map(runs.map((r) => [r.scenario.alpha, r.distinct]));
  const distinct = [...byAlpha].map(([alpha, n]) => `${n} (alpha ${alpha})`).join(", ");
  const policy = runs[0]?.replays[0]?.policy ?? "?";
  return `Trace: zipfTrace over ${objects} objects, ${requests} requests, seed ${seed}, sizes ` +
    `lognormal (median ${sizes.median / KiB} KiB, sigma ${sizes.sigma}); distinct objects ` +
    `asked: ${distinct}. Working set: the bytes of those objects. Eviction policy: ${policy} ` +
    `(the server's default). Hit ratio = hits / (hits + misses + bypasses) from STATS, summed ` +
    `over the nodes; every GET's body length checked (and its sha256, by the client). The ` +
    "cluster's split of the keys follows its nodes' ports, so its figures move a little " +
    "from run to run; the single node's do not.";
}

// ---------------------------------------------------------------------------
// Main

async function main(args: string[]): Promise<number> {
  const options = readCommandLine("cluster_bench", USAGE, args, parseOptions);
  if (typeof options === "number") return options;
  const started = performance.now();
  const windows = 2 * MAX_NODES * (options.durationMs + options.warmupMs);
  const setup = {
    program: "cluster_bench",
    tempPrefix: "tcpcache-cluster-bench-",
    // Only the self-check's: each measurement makes its own pools.
    driverWorkers: 1,
    hardCapMs: 240_000 + windows,
  };
  return await runSession(setup, async ({ root, pool }) => {
    const version = await codeVersion();
    log(`writing files in ${root}`);
    const ctx: Throughput = {
      options,
      files: await writeThroughputFiles(`${root}/files`),
      nodes: await startNodes(root),
      measurements: [],
      problems: [],
    };
    await throughput(ctx, pool);
    // The node processes go before part 2, which runs its servers in this process.
    await Promise.all(ctx.nodes.map((node) => stopServer(node.server)));
    const scenarios = SCENARIOS.slice(0, options.secondCapacity ? 2 : 1);
    const runs = await hitRatios(root, scenarios, ctx.problems);
    report(ctx, runs, versionLabel(version), started);
  });
}

function report(ctx: Throughput, runs: HitRatioRun[], version: string, started: number): void {
  const { durationMs, warmupMs, driverWorkers } = ctx.options;
  console.log(`$ ${["deno", "run", "-A", "bench/cluster_bench.ts", ...Deno.args].join(" ")}`);
  console.log(
    `${version}, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores ` +
      `(${cpuModel()}), ${new Date().toISOString()}\n`,
  );
  console.log("## 1. Throughput with 1, 2 and 3 nodes (all cache hits)\n");
  console.log(throughputTable(ctx));
  console.log("\nWhere the CPU went (cores, over each counted window):\n");
  console.log(cpuTable(ctx));
  console.log(
    `\nEvery node, and the driver (${driverWorkers} Deno Workers in all, split evenly into one ` +
      `pool per node), runs on this machine's ${navigator.hardwareConcurrency} cores: more ` +
      "nodes add processes, not cores, so this shows the cost of distributing and the CPU " +
      "ceiling, not scale-out. Files: 1,000 of 4 KiB and 128 of 1 MiB, every one warmed on its " +
      "node (rankNodes(path, nodes)[0]) before timing; 256 MiB of cache per node. The split " +
      "follows the nodes' addresses, whose ports change from run to run. Connections " +
      "(64 in all) go to the nodes in proportion to their paths. Machine busy: all of " +
      "/proc/stat's non-idle time; the loopback's softirq time is partly inside the processes' " +
      "figures too, so the columns need not add up. " +
      `${durationMs / 1000} s per measurement after ${warmupMs / 1000} s of warm-up; ` +
      "MB = 10^6 bytes.\n",
  );
  console.log("## 2. Hit ratio: 3 nodes of C behind a ClusterClient vs 1 node of 3C\n");
  console.log(hitRatioTable(runs));
  console.log(`\n${traceLine(runs)}`);
  const busy = ctx.measurements.filter((m) => m.cpu.others >= 0.2);
  if (busy.length > 0) {
    ctx.problems.push(
      `other processes used >= 0.2 cores in ${busy.length} of ${ctx.measurements.length} ` +
        "throughput windows: the absolute figures are low, the ratios less so",
    );
  }
  if (ctx.problems.length > 0) console.log(bulletList("Problems", ctx.problems));
  console.log(`Took ${Math.round((performance.now() - started) / 1000)} s.`);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
