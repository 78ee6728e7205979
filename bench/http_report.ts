/**
 * The HTTP benchmark's report (bench/http_bench.ts): every measurement with
 * its ratios to nginx and to the bare Deno loop under the same driver, the
 * server's CPU per request, descriptors per connection, and issue 14's
 * targets, each met or not, with the floor that applied.
 *
 * @module
 */

import type { CpuUse } from "./cpu.ts";
import type { Mode, Protocol } from "./driver.ts";
import type { Server } from "./processes.ts";
import {
  bulletList,
  codeVersion,
  formatFigure,
  markdownTable,
  percent,
  versionLabel,
} from "./report.ts";

/** One way into a server that a driver can load. */
export interface Endpoint {
  /** nginx, the bare loop, tcpcache's HTTP front end, tcpcache's TCP protocol. */
  key: "nginx" | "bare" | "http" | "tcp";
  label: string;
  protocol: Protocol;
  port: number;
  /** The server; its process tree's CPU and descriptors count. */
  server: Server;
}

/** A load shape, applied to every endpoint in turn. */
export interface Workload {
  key: string;
  title: string;
  /** What the throughput is counted in: answers, or body megabytes (10^6 bytes). */
  unit: "req/s" | "MB/s";
  files: "small" | "mid" | "large";
  connections: number;
  mode: Exclude<Mode, "hold">;
  /** The Deno driver's read buffer per connection. */
  bufferSize: number;
}

/** What one driver measured over the counted window. */
export interface Load {
  requests: number;
  /** Body bytes received in the window; under wrk, every byte read, heads included. */
  bytes: number;
  seconds: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  errorSamples: string[];
  /**
   * How busy the driver was, as a fraction of what it can use: the Deno
   * driver's busiest worker, or wrk's CPU over its threads.
   */
  driverBusy: number;
  /** The driver's CPU in cores: the Deno driver's workers, or wrk. */
  driverCores: number;
  /** Every other process's CPU in cores, besides the server and the driver. */
  otherCores: number;
}

/** One workload on one endpoint with one driver. */
export interface Measurement {
  workload: Workload;
  endpoint: Endpoint;
  driver: "wrk" | "deno";
  load: Load;
  /** CPU over the window (cores). */
  cpu: CpuUse;
  /** Connections accepted per answer over the window (~1 for new connections, ~0 otherwise). */
  connectionsPerRequest: number;
  /** tcpcache's cache outcomes during the load (undefined for the others). */
  outcomes?: { hits: number; misses: number; bypasses: number };
}

/** What the report is made from: the benchmark's context. */
export interface ReportInput {
  seconds: number;
  /** How many times each row was measured (the report shows its median round). */
  rounds: number;
  wrk?: string;
  endpoints: Endpoint[];
  measurements: Measurement[];
  descriptors: Map<string, { idle: number; held: number; perConnection: number }>;
  problems: string[];
}

/** Throughput: answers or body MB per second. */
function rate(m: Measurement): number {
  const amount = m.workload.unit === "MB/s" ? m.load.bytes / 1e6 : m.load.requests;
  return amount / m.load.seconds;
}

/** The server's CPU microseconds per answer: its cores over the answers per second. */
function cpuPerRequest(m: Measurement): number {
  return m.cpu.server / (m.load.requests / m.load.seconds) * 1e6;
}

function ratio(a: number, b: number): string {
  const r = a / b;
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : "-";
}

/** Looks up one measurement. */
function finder(input: ReportInput) {
  return (workload: string, key: Endpoint["key"], driver: Measurement["driver"]) =>
    input.measurements.find((m) =>
      m.workload.key === workload && m.endpoint.key === key && m.driver === driver
    );
}

// ---------------------------------------------------------------------------
// The tables

/** Every measurement, with its ratios to nginx and to the bare loop under the same driver. */
function resultsTable(input: ReportInput): string {
  const find = finder(input);
  const header = [
    "workload",
    "server",
    "driver",
    "throughput",
    "÷ nginx",
    "÷ bare",
    "server CPU µs/req",
    "server cores (busiest thread)",
    "driver / other cores",
    "p50 / p99 ms",
    "errors",
    "conns/req",
  ];
  const rows = input.measurements.map((m) => {
    const same = (key: Endpoint["key"]) => find(m.workload.key, key, m.driver);
    const nginx = same("nginx");
    const bare = same("bare");
    return [
      m.workload.title,
      m.endpoint.label,
      m.driver === "wrk" ? "wrk" : "Deno",
      `${formatFigure(rate(m))} ${m.workload.unit}`,
      nginx ? ratio(rate(m), rate(nginx)) : "-",
      bare ? ratio(rate(m), rate(bare)) : "-",
      formatFigure(cpuPerRequest(m)),
      `${m.cpu.server.toFixed(2)} (${percent(m.cpu.busiest)})`,
      `${m.load.driverCores.toFixed(2)} / ${m.load.otherCores.toFixed(2)}`,
      `${m.load.p50Ms.toFixed(2)} / ${m.load.p99Ms.toFixed(2)}`,
      String(m.load.errors),
      m.connectionsPerRequest.toFixed(2),
    ];
  });
  return markdownTable(header, rows);
}

function descriptorsTable(input: ReportInput): string {
  const rows = [...input.descriptors].map(([label, d]) => [
    label,
    String(d.idle),
    String(d.held),
    d.perConnection.toFixed(2),
  ]);
  return markdownTable(
    ["server", "descriptors, no client", "with 64 idle connections", "per connection"],
    rows,
  );
}

// ---------------------------------------------------------------------------
// Issue 14's targets

/** One target as judged in this run. */
interface Verdict {
  target: string;
  measured: string;
  threshold: string;
  /** Where the threshold came from: the floor, or 0.9x the bare loop. */
  basis: string;
  met: boolean;
  /** The measurements it was judged on (their windows' noise is shown beside it). */
  used: Measurement[];
}

/**
 * A "tcpcache ≥ floor × reference" target. Where the bare loop itself is
 * below the floor in this run, 0.9x the bare loop is the floor instead.
 */
function ratioVerdict(
  target: string,
  ours: Measurement | undefined,
  reference: Measurement | undefined,
  bare: Measurement | undefined,
  floor: number,
): Verdict {
  if (!ours || !reference || !bare) {
    return {
      target,
      measured: "not measured",
      threshold: `${floor}x`,
      basis: "-",
      met: false,
      used: [],
    };
  }
  const measured = rate(ours) / rate(reference);
  const bareRatio = rate(bare) / rate(reference);
  const useBare = bareRatio < floor;
  const threshold = useBare ? 0.9 * bareRatio : floor;
  return {
    target,
    measured: `${measured.toFixed(2)}x (${formatFigure(rate(ours))} vs ` +
      `${formatFigure(rate(reference))} ${ours.workload.unit})`,
    threshold: `${threshold.toFixed(2)}x`,
    basis: useBare
      ? `0.9x the bare loop (bare at ${bareRatio.toFixed(2)}x, below ${floor}x)`
      : `the issue's floor (bare at ${bareRatio.toFixed(2)}x)`,
    met: measured >= threshold,
    used: [ours, reference, bare],
  };
}

/** "Server CPU per request ≤ nginx's"; 1.1x the bare loop's where the bare loop costs more. */
function cpuVerdict(ours?: Measurement, nginx?: Measurement, bare?: Measurement): Verdict {
  const target = "4 KiB keep-alive c=64: server CPU per request ≤ nginx's";
  if (!ours || !nginx || !bare) {
    return {
      target,
      measured: "not measured",
      threshold: "nginx's",
      basis: "-",
      met: false,
      used: [],
    };
  }
  const [cpu, nginxCpu, bareCpu] = [ours, nginx, bare].map(cpuPerRequest);
  const useBare = bareCpu > nginxCpu;
  const threshold = useBare ? 1.1 * bareCpu : nginxCpu;
  return {
    target,
    measured: `${cpu.toFixed(1)} µs`,
    threshold: `≤ ${threshold.toFixed(1)} µs`,
    basis: useBare
      ? `1.1x the bare loop's (bare ${bareCpu.toFixed(1)} µs > nginx ${nginxCpu.toFixed(1)} µs)`
      : `nginx's (bare ${bareCpu.toFixed(1)} µs)`,
    met: cpu <= threshold,
    used: [ours, nginx, bare],
  };
}

function descriptorVerdict(input: ReportInput): Verdict {
  const d = input.descriptors.get("tcpcache HTTP");
  const target = "Descriptors per HTTP connection: 1";
  if (!d) {
    return { target, measured: "not measured", threshold: "1", basis: "-", met: false, used: [] };
  }
  return {
    target,
    measured: `${d.perConnection.toFixed(2)} (${d.idle} → ${d.held} with 64 idle connections)`,
    threshold: "1",
    basis: "the issue's",
    met: Math.round(d.perConnection * 100) / 100 <= 1,
    used: [],
  };
}

/** Issue 14's targets, in its words; HTTP vs TCP with the Deno driver on both sides. */
function verdicts(input: ReportInput): Verdict[] {
  const find = finder(input);
  const http = input.wrk ? "wrk" : "deno";
  const vsNginx = (workload: string, target: string, floor: number) =>
    ratioVerdict(
      target,
      find(workload, "http", http),
      find(workload, "nginx", http),
      find(workload, "bare", http),
      floor,
    );
  const vsTcp = (workload: string, target: string) =>
    ratioVerdict(
      target,
      find(workload, "http", "deno"),
      find(workload, "tcp", "deno"),
      find(workload, "bare", "deno"),
      0.9,
    );
  const driver = input.wrk ? "wrk -t2 -c64" : "the Deno driver, c=64";
  return [
    vsNginx("small", `4 KiB keep-alive c=64: HTTP ≥ 1.0x nginx (${driver})`, 1.0),
    vsTcp("small", "4 KiB keep-alive c=64: HTTP ≥ 0.9x tcpcache's TCP protocol"),
    cpuVerdict(
      find("small", "http", http),
      find("small", "nginx", http),
      find("small", "bare", http),
    ),
    vsNginx("new-connection", "New connection per request: ≥ 0.7x nginx", 0.7),
    vsTcp("mid", "Large files over HTTP (1 MiB, c=16): ≥ 0.9x the TCP protocol's MB/s"),
    vsTcp("large", "Large files over HTTP (64 MiB, c=1): ≥ 0.9x the TCP protocol's MB/s"),
    descriptorVerdict(input),
  ];
}

function targetsTable(list: Verdict[]): string {
  const rows = list.map((v) => [
    v.target,
    v.measured,
    v.threshold,
    v.basis,
    v.used.length > 0 ? Math.max(...v.used.map((m) => m.load.otherCores)).toFixed(2) : "-",
    v.met ? "**met**" : "not met",
  ]);
  const header = ["target", "measured", "threshold", "threshold from", "other cores*", "result"];
  return markdownTable(header, rows);
}

/** One workload's comparisons across drivers and of CPU per request, HTTP against TCP. */
function comparisons(input: ReportInput, workload: string): string {
  const find = finder(input);
  const [httpWrk, httpDeno, tcp] = [find(workload, "http", "wrk"), find(workload, "http", "deno")]
    .concat([find(workload, "tcp", "deno")]);
  const [nginxWrk, nginxDeno] = [find(workload, "nginx", "wrk"), find(workload, "nginx", "deno")];
  const parts = [];
  if (httpDeno && tcp) {
    parts.push(
      `server CPU per request HTTP / TCP ${ratio(cpuPerRequest(httpDeno), cpuPerRequest(tcp))}`,
    );
  }
  if (httpWrk && tcp) {
    parts.push(`HTTP under wrk / TCP under the Deno driver ${ratio(rate(httpWrk), rate(tcp))}`);
  }
  if (nginxWrk && nginxDeno) {
    parts.push(`nginx under the Deno driver / under wrk ${ratio(rate(nginxDeno), rate(nginxWrk))}`);
  }
  const title = input.measurements.find((m) => m.workload.key === workload)?.workload.title;
  return `${title}: ${parts.join("; ")}`;
}

// ---------------------------------------------------------------------------
// The whole report

function legend(input: ReportInput): string {
  return [
    `Each figure: ${input.seconds} s counted after 1 s of warm-up (wrk: a separate 1 s run); ` +
    `each row is the median by throughput of ${input.rounds} rounds, the servers measured in ` +
    "turn in every round. " +
    "÷ nginx and ÷ bare compare with the same workload under the same driver. MB = 10^6 bytes " +
    "of body (under wrk: every byte read, heads included).",
    "server CPU µs/req: utime + stime of the server's process tree over the window, divided by " +
    "the answers in it. server cores: the same CPU per second of wall time (busiest thread in " +
    "parentheses: near 100% is a bottleneck). driver / other cores: the driver's CPU (the Deno " +
    "driver's workers, or wrk, which reads 8 KiB at a time), and every other process's on the " +
    "machine, both in cores over the window.",
    "conns/req: TCP connections accepted on the machine (PassiveOpens) per answer in the window.",
    "HTTP against the TCP protocol is judged with the Deno driver on both sides (wrk does not " +
    "speak the TCP protocol); against nginx, with wrk where it is installed.",
  ].join("\n");
}

function noteNoise(input: ReportInput): void {
  const busy = input.measurements.filter((m) => m.load.otherCores >= 0.2);
  if (busy.length > 0) {
    input.problems.push(
      `other processes used >= 0.2 cores in ${busy.length} of ${input.measurements.length} ` +
        `windows (up to ${Math.max(...busy.map((m) => m.load.otherCores)).toFixed(2)}): ` +
        "those figures may be low",
    );
  }
  const bound = input.measurements.filter((m) => m.load.driverBusy >= 0.9);
  for (const m of bound) {
    input.problems.push(
      `${m.workload.title} on ${m.endpoint.label} (${m.driver}): the driver was ` +
        `${percent(m.load.driverBusy)} busy, so it may have set the pace`,
    );
  }
}

/** Prints the report on stdout. */
export async function report(
  input: ReportInput,
  run: { started: number; tools: string; args: string[] },
): Promise<void> {
  const version = versionLabel(await codeVersion());
  console.log(`$ ${["deno", "task", "bench:http", ...run.args].join(" ")}`);
  console.log(
    `${version}, ${run.tools}, ${navigator.hardwareConcurrency} cores, ` +
      `${new Date().toISOString()}\n`,
  );
  console.log(resultsTable(input));
  console.log(`\n${descriptorsTable(input)}\n`);
  console.log(legend(input));
  const workloads = [...new Set(input.measurements.map((m) => m.workload.key))];
  console.log(bulletList("Compared", workloads.map((w) => comparisons(input, w))));
  noteNoise(input);
  if (input.problems.length > 0) console.log(bulletList("Problems", input.problems));
  console.log("\nIssue 14's targets, this run:\n");
  console.log(targetsTable(verdicts(input)));
  console.log(
    "\n* The most CPU other processes used in the windows a target was judged on: above ~0.2 " +
      "cores, a neighbour took part of the machine from one of the figures compared.",
  );
  console.log(`\nTook ${Math.round((performance.now() - run.started) / 1000)} s.`);
}
