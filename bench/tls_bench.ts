/**
 * The TLS benchmark: what serving over TLS (`--tls-cert`, `--tls-key`)
 * costs tcpcache's HTTP/1.1 front end, and how its TLS handshakes compare
 * with nginx's on the same certificate and key, in one run.
 *
 *     deno task bench:tls [--duration 5] [--rounds 3] [--workers 2,1]
 *
 * TLS is paid per byte (encryption) and per connection (the handshake), so
 * both are measured, with `wrk` as the driver:
 *  1. tcpcache over HTTPS against the same server flags over plain HTTP (two
 *     processes, the same files, warm caches): 4 KiB files on 64 keep-alive
 *     connections (target: HTTPS ≥ 0.85x HTTP's req/s), 1 MiB files on 16
 *     (target: ≥ 0.70x HTTP's MB/s), and both on one connection, one request
 *     at a time. Deno's TLS connections cannot set TCP_NODELAY themselves
 *     (tcpcache sets it on its TLS listener through FFI, under --allow-ffi),
 *     and with Nagle's algorithm on, the tail of an answer written in several
 *     parts can wait ~40 ms for the client's delayed ACK: the kernel's count
 *     of delayed-ACK timeouts per answer shows it (plain HTTP, with
 *     TCP_NODELAY, has none), and on one connection so does the mean latency.
 *  2. A new connection per request (`Connection: close`, 64 clients): tcpcache
 *     over HTTPS against nginx over HTTPS as it ships (session tickets, so wrk
 *     resumes most sessions) and with resumption off (every handshake full),
 *     nginx with as many worker processes as tcpcache has threads; tcpcache's
 *     and nginx's plain HTTP for reference. The HTTPS figure less the HTTP one,
 *     in server CPU per connection, is what a TLS handshake costs each server.
 *     A probe with `openssl s_client` says how often each TLS server resumes a
 *     session that a reconnecting client offers, as wrk does.
 *  3. tcpcache's TCP protocol over TLS is not measured: wrk speaks only HTTP,
 *     and the Deno driver (bench/driver.ts) only plain TCP.
 *
 * Every row reports the server's CPU per request (utime + stime of its
 * process tree over the window, divided by the answers in it). Within a
 * workload the servers take turns in every one of `--rounds` rounds; a row's
 * figures are its median round, a ratio the median of the rounds' ratios
 * (each round's two figures are seconds apart, and this machine's speed
 * drifts by tens of percent within minutes). The certificate is made for
 * the run with `openssl`: a private CA and an EC P-256 leaf for 127.0.0.1
 * and localhost. Prints Markdown tables: the targets, met or missed (stalls
 * called out beneath), then every measurement. The exit status is 0 whatever
 * they say (it is a report).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type CpuUse, sampleCpu } from "./cpu.ts";
import { type FileSet, fileWriter, KiB, MiB, numberedPaths } from "./files.ts";
import {
  findExecutable,
  HOST,
  log,
  nginxConfig,
  processTree,
  run,
  type Server,
  startTcpcache,
  STARTUP_MS,
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
import { runWrk, writeWrkScript, type WrkResult } from "./wrk.ts";

/** Uncounted load before each window (a separate wrk run): whole seconds. */
const WARMUP_S = 1;
/** Reconnections of the resumption probe, per TLS server. */
const PROBE_RECONNECTS = 16;
/**
 * Delayed-ACK timeouts per 100 answers from which a row counts as stalled:
 * plain HTTP, with TCP_NODELAY, has none.
 */
const STALL_ACKS_PER_100 = 1;

const USAGE =
  `bench/tls_bench.ts: what TLS costs tcpcache over HTTP, and its handshakes beside nginx's

Usage: deno task bench:tls [options]
       deno run -A bench/tls_bench.ts [options]

Options:
  --duration SECS   counted whole seconds per measurement (default: 5; 1 s of warm-up each)
  --rounds N        measure every row N times, servers in turn, and report each row's
                    median round and each ratio's median over the rounds (default: 3; 1 to 9)
  --workers LIST    tcpcache's threads (--workers), and nginx's worker processes, in
                    each phase, comma-separated (default: 2,1)
  -h, --help        show this help
`;

interface Options {
  seconds: number;
  rounds: number;
  workers: number[];
}

/** The command line's options, or "help"; throws on a bad one. */
function parseOptions(args: string[]): Options | "help" {
  const { values } = parseArgs({
    args,
    options: {
      duration: { type: "string", default: "5" },
      rounds: { type: "string", default: "3" },
      workers: { type: "string", default: "2,1" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const seconds = Number(values.duration);
  if (!/^[0-9]+$/.test(values.duration) || seconds < 1 || seconds > 60) {
    throw new Error("--duration must be a whole number of seconds from 1 to 60");
  }
  if (!/^[1-9]$/.test(values.rounds)) throw new Error("--rounds must be a number from 1 to 9");
  if (!/^[1-8](,[1-8]){0,3}$/.test(values.workers)) {
    throw new Error("--workers must be up to 4 numbers from 1 to 8, comma-separated");
  }
  return { seconds, rounds: Number(values.rounds), workers: values.workers.split(",").map(Number) };
}

// ---------------------------------------------------------------------------
// The certificate, the files, the workloads

/** The run's certificate files: a private CA, and a leaf it signed with its key. */
interface Certificate {
  ca: string;
  cert: string;
  key: string;
}

/** Makes a CA and a leaf for 127.0.0.1 and localhost (EC P-256, valid 2 days) in `dir`. */
async function makeCertificate(dir: string): Promise<Certificate> {
  await Deno.mkdir(dir, { recursive: true });
  const [ca, caKey, csr, cert, key, extensions] = ["ca.pem", "ca.key", "leaf.csr", "leaf.pem"]
    .concat(["leaf.key", "leaf.ext"]).map((name) => `${dir}/${name}`);
  await Deno.writeTextFile(
    extensions,
    "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n" +
      "subjectAltName = DNS:localhost,IP:127.0.0.1\n",
  );
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const steps = [
    ["req", "-x509", ...ec, "-keyout", caKey, "-out", ca, "-days", "2"]
      .concat(["-subj", "/CN=tcpcache bench CA"]),
    ["req", ...ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
    ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-days", "2"]
      .concat(["-extfile", extensions, "-out", cert]),
  ];
  for (const args of steps) {
    const { ok, out } = await run("openssl", args);
    if (!ok) throw new Error(`openssl ${args.slice(0, 2).join(" ")} failed: ${out.trim()}`);
  }
  return { ca, cert, key };
}

interface Files {
  small: FileSet;
  mid: FileSet;
}

/** 1,000 files of 4 KiB and 64 of 1 MiB (as bench/http_bench.ts serves). */
async function writeFiles(dir: string): Promise<Files> {
  const write = fileWriter(dir);
  return {
    small: await write(numberedPaths("small", 1000), 4 * KiB),
    mid: await write(numberedPaths("mid", 64), MiB),
  };
}

/** The servers' ways in, by what they serve. */
type EndpointKey = "tcpcache-tls" | "tcpcache" | "nginx-tls" | "nginx-full" | "nginx";

/** One port of one server. */
interface Endpoint {
  key: EndpointKey;
  label: string;
  scheme: "https" | "http";
  port: number;
  /** The server; its process tree's CPU counts. */
  server: Server;
}

/** A load shape, applied to some endpoints in turn. */
interface Workload {
  key: "small" | "one" | "mid" | "one-mid" | "new";
  title: string;
  /** Answers, or megabytes (10^6 bytes, wrk's: heads included) per second. */
  unit: "req/s" | "MB/s";
  files: keyof Files;
  connections: number;
  threads: number;
  /** `Connection: close` on every request: a new connection (and handshake) each. */
  close: boolean;
  endpoints: EndpointKey[];
}

const WORKLOADS: Workload[] = [
  {
    key: "small",
    title: "4 KiB, keep-alive c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    threads: 2,
    close: false,
    endpoints: ["tcpcache-tls", "tcpcache", "nginx-tls", "nginx"],
  },
  {
    key: "one",
    title: "4 KiB, keep-alive c=1",
    unit: "req/s",
    files: "small",
    connections: 1,
    threads: 1,
    close: false,
    endpoints: ["tcpcache-tls", "tcpcache"],
  },
  {
    key: "mid",
    title: "1 MiB, keep-alive c=16",
    unit: "MB/s",
    files: "mid",
    connections: 16,
    threads: 2,
    close: false,
    endpoints: ["tcpcache-tls", "tcpcache", "nginx-tls", "nginx"],
  },
  {
    key: "one-mid",
    title: "1 MiB, keep-alive c=1",
    unit: "MB/s",
    files: "mid",
    connections: 1,
    threads: 1,
    close: false,
    endpoints: ["tcpcache-tls", "tcpcache"],
  },
  {
    key: "new",
    title: "4 KiB, new conn each, c=64",
    unit: "req/s",
    files: "small",
    connections: 64,
    threads: 2,
    close: true,
    endpoints: ["tcpcache-tls", "nginx-tls", "nginx-full", "tcpcache", "nginx"],
  },
];

// ---------------------------------------------------------------------------
// Servers

/** `count` distinct ports that were free a moment ago (the servers bind them next). */
function freePorts(count: number): number[] {
  const probes = Array.from({ length: count }, () => Deno.listen({ hostname: HOST, port: 0 }));
  const ports = probes.map((probe) => probe.addr.port);
  for (const probe of probes) probe.close();
  return ports;
}

/** nginx's three ports: HTTPS as nginx ships, HTTPS without resumption, plain HTTP. */
interface NginxPorts {
  tls: number;
  full: number;
  plain: number;
}

/**
 * The servers of the bench's nginx (bench/processes.ts's config around them)
 * on the certificate: HTTPS as nginx ships (TLS 1.3 session tickets on, so
 * clients resume), HTTPS with tickets and the session cache off (every
 * handshake a full one), and plain HTTP.
 */
function nginxServers(files: string, certificate: Certificate, ports: NginxPorts): string {
  return `  ssl_certificate ${certificate.cert};
  ssl_certificate_key ${certificate.key};
  ssl_protocols TLSv1.2 TLSv1.3;
  root ${files};
  server {
    listen ${HOST}:${ports.tls} ssl;
  }
  server {
    listen ${HOST}:${ports.full} ssl;
    ssl_session_tickets off;
    ssl_session_cache off;
  }
  server {
    listen ${HOST}:${ports.plain};
  }
`;
}

/** Starts nginx with {@linkcode nginxServers}; ready once every port accepts a connection. */
async function startTlsNginx(
  nginx: string,
  root: string,
  certificate: Certificate,
  workers: number,
): Promise<{ server: Server; ports: NginxPorts }> {
  const dir = `${root}/nginx-${workers}`;
  const [tls, full, plain] = freePorts(3);
  const ports = { tls, full, plain };
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    nginxConfig(dir, nginxServers(`${root}/files`, certificate, ports), workers),
  );
  const args = ["-p", dir, "-c", `${dir}/nginx.conf`, "-e", `${dir}/error.log`];
  const child = track(
    new Deno.Command(nginx, { args, stdin: "null", stdout: "null", stderr: "inherit" }).spawn(),
  );
  const server: Server = {
    name: "nginx",
    protocol: "http",
    port: plain,
    pid: child.pid,
    child,
    stderr: [],
    exited: false,
  };
  child.status.then(() => server.exited = true);
  const until = Date.now() + STARTUP_MS;
  const waiting = new Set([tls, full, plain]);
  while (waiting.size > 0 && Date.now() < until && !server.exited) {
    for (const port of waiting) {
      try {
        (await Deno.connect({ hostname: HOST, port })).close();
        waiting.delete(port);
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
  }
  if (waiting.size === 0) return { server, ports };
  await stopServer(server);
  const errorLog = await Deno.readTextFile(`${dir}/error.log`).catch(() => "");
  throw new Error(`nginx did not start: ${errorLog.trim()}`);
}

/** Every endpoint of one phase, by key. */
type Endpoints = Record<EndpointKey, Endpoint>;

/** tcpcache over HTTPS and over HTTP, and nginx, all on `workers` threads or processes. */
async function startServers(
  ctx: Context,
  workers: number,
): Promise<{ endpoints: Endpoints; servers: Server[] }> {
  const tcpcache = (name: string, tls?: Certificate) =>
    startTcpcache(`${ctx.root}/files`, `${ctx.root}/cache-${name}-${workers}`, "256MiB", {
      httpPort: 0,
      workers,
      tls,
    });
  const tls = await tcpcache("tls", ctx.certificate);
  const plain = await tcpcache("plain");
  const nginx = await startTlsNginx(ctx.nginx, ctx.root, ctx.certificate, workers);
  const endpoint = (
    key: EndpointKey,
    label: string,
    scheme: Endpoint["scheme"],
    port: number,
    server: Server,
  ) => ({ key, label, scheme, port, server });
  const endpoints: Endpoints = {
    "tcpcache-tls": endpoint("tcpcache-tls", "tcpcache HTTPS", "https", tls.httpPort!, tls),
    "tcpcache": endpoint("tcpcache", "tcpcache HTTP", "http", plain.httpPort!, plain),
    "nginx-tls": endpoint("nginx-tls", "nginx HTTPS", "https", nginx.ports.tls, nginx.server),
    "nginx-full": endpoint(
      "nginx-full",
      "nginx HTTPS, no resumption",
      "https",
      nginx.ports.full,
      nginx.server,
    ),
    "nginx": endpoint("nginx", "nginx HTTP", "http", nginx.ports.plain, nginx.server),
  };
  const list = Object.values(endpoints).map((e) => `${e.label} :${e.port} (pid ${e.server.pid})`);
  log(`${workers} thread(s): ${list.join(", ")}`);
  return { endpoints, servers: [tls, plain, nginx.server] };
}

// ---------------------------------------------------------------------------
// Before timing: warm caches, check bytes and certificates, probe resumption

/** GET over the endpoint's scheme, its body; HTTPS checks the certificate against the run's CA. */
async function request(ctx: Context, endpoint: Endpoint, path: string): Promise<Uint8Array> {
  const url = `${endpoint.scheme}://${HOST}:${endpoint.port}${path}`;
  const response = await fetch(url, {
    client: endpoint.scheme === "https" ? ctx.client : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const body = new Uint8Array(await response.arrayBuffer());
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`);
  return body;
}

/** Whether two byte arrays hold the same bytes. */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Fetches files from the endpoint and compares each with its file byte for
 * byte: every file on tcpcache (which warms its cache), the first few of each
 * set on nginx.
 */
async function fetchAndCompare(ctx: Context, endpoint: Endpoint): Promise<void> {
  const all = endpoint.key.startsWith("tcpcache");
  for (const set of [ctx.files.small, ctx.files.mid]) {
    const count = all ? set.paths.length : 4;
    for (let i = 0; i < count; i++) {
      const body = await request(ctx, endpoint, `/${set.paths[i]}`);
      if (!sameBytes(body, await Deno.readFile(set.local[i]))) {
        throw new Error(`${endpoint.label}: /${set.paths[i]} came back with other bytes`);
      }
    }
  }
}

/** tcpcache's answers that were no cache hit so far (`misses + bypasses` of `/-/stats`). */
async function notHits(ctx: Context, endpoint: Endpoint): Promise<number> {
  const stats = JSON.parse(new TextDecoder().decode(await request(ctx, endpoint, "/-/stats")));
  return stats.misses + stats.bypasses;
}

/**
 * Reconnects {@linkcode PROBE_RECONNECTS} times with `openssl s_client`, each
 * time offering the session the previous connection was given, as wrk does;
 * resolves with how many connections resumed it. One client alone: under
 * wrk's 64 the share may differ (a server's session cache can be too small).
 */
async function resumptions(ctx: Context, endpoint: Endpoint): Promise<number> {
  const session = (i: number) => `${ctx.root}/session-${endpoint.port}-${i}.pem`;
  const path = ctx.files.small.paths[0];
  const ask = `GET /${path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`;
  let resumed = 0;
  for (let i = 0; i <= PROBE_RECONNECTS; i++) {
    const args = ["s_client", "-connect", `${HOST}:${endpoint.port}`, "-ign_eof"]
      .concat(["-sess_out", session(i)], i > 0 ? ["-sess_in", session(i - 1)] : []);
    const child = track(
      new Deno.Command("openssl", {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
        signal: AbortSignal.timeout(10_000),
      }).spawn(),
    );
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(ask));
    await writer.close();
    const said = new TextDecoder().decode((await child.output()).stdout);
    if (i > 0 && /^Reused, /m.test(said)) resumed++;
  }
  return resumed;
}

// ---------------------------------------------------------------------------
// Measuring

/**
 * Two TCP counters of this network namespace so far: connections accepted
 * (`PassiveOpens`), and delayed ACKs sent when their timer ran out
 * (`DelayedACKs`): with Nagle's algorithm on at the sender, each can be an
 * answer's tail held back ~40 ms.
 */
async function tcpCounters(): Promise<{ opens: number; delayedAcks: number }> {
  const counter = async (file: string, prefix: string, name: string) => {
    const lines = (await Deno.readTextFile(file)).split("\n").filter((l) => l.startsWith(prefix));
    const [names, values] = lines.map((l) => l.split(/\s+/));
    return Number(values[names.indexOf(name)]);
  };
  return {
    opens: await counter("/proc/net/snmp", "Tcp:", "PassiveOpens"),
    delayedAcks: await counter("/proc/net/netstat", "TcpExt:", "DelayedACKs"),
  };
}

/** One workload on one endpoint in one phase. */
interface Measurement {
  workers: number;
  /** From 0: the ratios pair the endpoints' figures of one round. */
  round: number;
  workload: Workload;
  endpoint: Endpoint;
  load: WrkResult;
  cpu: CpuUse;
  /** wrk's CPU in cores over the window. */
  wrkCores: number;
  /** Connections accepted per answer over the window (~1 with `Connection: close`). */
  connectionsPerRequest: number;
  /** Delayed ACKs timed out per 100 answers over the window. */
  delayedAcksPer100: number;
  /** tcpcache's answers in the window that were not cache hits (undefined for nginx). */
  notHits?: number;
}

/** An uncounted wrk run, then the counted one with the server's CPU sampled over it. */
async function measure(
  ctx: Context,
  workers: number,
  round: number,
  workload: Workload,
  endpoint: Endpoint,
): Promise<Measurement> {
  const base = {
    port: endpoint.port,
    scheme: endpoint.scheme,
    script: ctx.scripts.get(workload.key)!,
    connections: workload.connections,
    threads: workload.threads,
  };
  await runWrk(ctx.wrk, { ...base, seconds: WARMUP_S });
  const tcpcache = endpoint.key.startsWith("tcpcache");
  const before = tcpcache ? await notHits(ctx, endpoint) : 0;
  const pids = await processTree(endpoint.server.pid);
  const counted = await tcpCounters();
  const [load, cpu] = await Promise.all([
    runWrk(ctx.wrk, { ...base, seconds: ctx.seconds }),
    sampleCpu(pids, 0, ctx.seconds * 1000),
  ]);
  const counters = await tcpCounters();
  const wrkCores = load.cpuSeconds / load.seconds;
  const m: Measurement = {
    workers,
    round,
    workload,
    endpoint,
    load,
    // sampleCpu counts wrk among the machine's other processes.
    cpu: { ...cpu, others: Math.max(0, cpu.others - wrkCores) },
    wrkCores,
    connectionsPerRequest: (counters.opens - counted.opens) / load.requests,
    delayedAcksPer100: (counters.delayedAcks - counted.delayedAcks) / load.requests * 100,
    notHits: tcpcache ? await notHits(ctx, endpoint) - before : undefined,
  };
  log(
    `${workers} thread(s), ${workload.title}, ${endpoint.label}: ` +
      `${formatFigure(rate(m))} ${workload.unit}, ${load.errors} errors, ` +
      `${m.delayedAcksPer100.toFixed(1)} delayed ACKs per 100 answers`,
  );
  return m;
}

/**
 * One phase: servers on `workers` threads, their caches warmed and bytes
 * checked, the resumption probe, then every workload `ctx.rounds` times with
 * its endpoints in turn. Resolves with every round's measurements.
 */
async function phase(ctx: Context, workers: number): Promise<Measurement[]> {
  const { endpoints, servers } = await startServers(ctx, workers);
  try {
    for (const endpoint of Object.values(endpoints)) await fetchAndCompare(ctx, endpoint);
    log(`${workers} thread(s): caches warm, bodies compared byte for byte`);
    for (const key of ["tcpcache-tls", "nginx-tls", "nginx-full"] as const) {
      const label = `${endpoints[key].label}, ${workers} thread(s)`;
      ctx.resumed.set(label, await resumptions(ctx, endpoints[key]));
    }
    const measured: Measurement[] = [];
    for (const workload of WORKLOADS) {
      for (let round = 0; round < ctx.rounds; round++) {
        for (const key of workload.endpoints) {
          measured.push(await measure(ctx, workers, round, workload, endpoints[key]));
        }
      }
    }
    for (const server of servers) {
      if (server.exited) ctx.problems.push(`${server.name} (pid ${server.pid}) exited early`);
    }
    return measured;
  } finally {
    for (const server of servers) await stopServer(server);
  }
}

/** Answers or body megabytes per second. */
function rate(m: Measurement): number {
  return (m.workload.unit === "MB/s" ? m.load.bytes / 1e6 : m.load.requests) / m.load.seconds;
}

/** The server's CPU microseconds per answer: its cores over the answers per second. */
function cpuPerRequest(m: Measurement): number {
  return m.cpu.server / (m.load.requests / m.load.seconds) * 1e6;
}

/** Each row's median round by throughput: one slow window must not decide a figure. */
function medianRounds(measurements: Measurement[]): Measurement[] {
  const rows = new Map<string, Measurement[]>();
  for (const m of measurements) {
    const key = `${m.workers} ${m.workload.key} ${m.endpoint.key}`;
    rows.set(key, [...rows.get(key) ?? [], m]);
  }
  return [...rows.values()].map((rounds) => median(rounds, rate));
}

/** The middle item by `value` (the lower middle of an even count). */
function median<T>(items: T[], value: (item: T) => number): T {
  return [...items].sort((a, b) => value(a) - value(b))[Math.floor((items.length - 1) / 2)];
}

// ---------------------------------------------------------------------------
// The report

/** One line of the targets table. */
interface Comparison {
  workers: number;
  what: string;
  measured: string;
  reference: string;
  /** The median of the rounds' ratios: each round's two figures are seconds apart. */
  ratio: number;
  /** Each round's ratio. */
  rounds: number[];
  /** The least ratio that meets the target; undefined when the row only reports. */
  floor?: number;
  /** The stall check's verdict, for the rows judged by it. */
  noStalls?: boolean;
  target: string;
}

/** Mean latency in ms: wrk's connections over its answers per second (each waits for its answer). */
function meanMs(m: Measurement): number {
  return m.workload.connections / (m.load.requests / m.load.seconds) * 1000;
}

/** `1,234 req/s, 56.7 µs/req`, and with `stalls` the figures that show them. */
function figures(m: Measurement, stalls = false): string {
  const rateAndCpu = `${formatFigure(rate(m))} ${m.workload.unit}, ` +
    `${formatFigure(cpuPerRequest(m))} µs/req`;
  if (!stalls) return rateAndCpu;
  return `${rateAndCpu}, mean ${meanMs(m).toFixed(3)} ms, ` +
    `${m.delayedAcksPer100.toFixed(1)} delayed ACKs/100`;
}

/** The comparisons of one phase, from all its rounds. */
function comparisons(workers: number, all: Measurement[]): Comparison[] {
  const rounds = (workload: Workload["key"], key: EndpointKey) =>
    all.filter((m) =>
      m.workers === workers && m.workload.key === workload && m.endpoint.key === key
    )
      .sort((a, b) => a.round - b.round);
  const list: Comparison[] = [];
  const compare = (
    workload: Workload["key"],
    [ours, reference]: [EndpointKey, EndpointKey],
    target: string,
    judge: { floor?: number; stalls?: boolean } = {},
  ) => {
    const [a, b] = [rounds(workload, ours), rounds(workload, reference)];
    if (a.length === 0 || a.length !== b.length) return;
    const ratios = a.map((m, i) => rate(m) / rate(b[i]));
    const [typical, typicalReference] = [median(a, rate), median(b, rate)];
    const acks = median(a, (m) => m.delayedAcksPer100).delayedAcksPer100;
    list.push({
      workers,
      what: `${typical.workload.title}: ${typical.endpoint.label} ÷ ` +
        typicalReference.endpoint.label,
      measured: figures(typical, judge.stalls),
      reference: figures(typicalReference, judge.stalls),
      ratio: median(ratios, (r) => r),
      rounds: ratios,
      floor: judge.floor,
      noStalls: judge.stalls ? acks < STALL_ACKS_PER_100 : undefined,
      target,
    });
  };
  const tlsOverPlain: [EndpointKey, EndpointKey] = ["tcpcache-tls", "tcpcache"];
  const stallTarget = `no ~40 ms stalls: < ${STALL_ACKS_PER_100} delayed ACK per 100 answers`;
  compare("small", tlsOverPlain, "≥ 0.85x (TLS costs ≤ 15%)", { floor: 0.85 });
  compare("mid", tlsOverPlain, "≥ 0.70x (TLS costs ≤ 30%)", { floor: 0.70 });
  // The same on nginx, same certificate, driver and cores: what TLS costs here at all.
  compare("small", ["nginx-tls", "nginx"], "- (the same for nginx)");
  compare("mid", ["nginx-tls", "nginx"], "- (the same for nginx)");
  compare("one", tlsOverPlain, stallTarget, { stalls: true });
  compare("one-mid", tlsOverPlain, stallTarget, { stalls: true });
  compare("new", ["tcpcache-tls", "nginx-tls"], "- (nginx as shipped: wrk resumes sessions)");
  compare("new", ["tcpcache-tls", "nginx-full"], "- (nginx: full handshakes only)");
  compare("new", tlsOverPlain, "- (what TLS costs a new connection)");
  compare("new", ["nginx-tls", "nginx"], "- (the same for nginx)");
  // What a TLS connection costs each server: HTTPS less HTTP, in CPU per new connection.
  const handshake = (key: EndpointKey, plain: EndpointKey) => {
    const [tls, reference] = [rounds("new", key), rounds("new", plain)];
    if (tls.length === 0 || reference.length === 0) return NaN;
    return cpuPerRequest(median(tls, rate)) - cpuPerRequest(median(reference, rate));
  };
  const [ours, nginx, nginxFull] = [
    handshake("tcpcache-tls", "tcpcache"),
    handshake("nginx-tls", "nginx"),
    handshake("nginx-full", "nginx"),
  ];
  list.push({
    workers,
    what: "Server CPU per TLS connection (HTTPS − HTTP, new connections): tcpcache ÷ nginx",
    measured: `tcpcache ${formatFigure(ours)} µs`,
    reference: `nginx ${formatFigure(nginx)} µs (no resumption: ${formatFigure(nginxFull)} µs)`,
    ratio: ours / nginx,
    rounds: [],
    target: "- (lower is better; from the median rounds)",
  });
  return list;
}

/** met / MISSED (by how much) / reported, for the targets table. */
function resultCell(c: Comparison): string {
  if (c.noStalls !== undefined) return c.noStalls ? "**met**" : "**MISSED: STALLS**";
  if (c.floor === undefined) return "reported";
  if (c.ratio >= c.floor) return "**met**";
  return `**MISSED**: TLS costs ${percent(1 - c.ratio)}, ≤ ${percent(1 - c.floor)} wanted`;
}

/** The comparisons as a Markdown table, each with its target and result. */
function targetsTable(list: Comparison[]): string {
  const header = ["threads", "comparison", "measured", "reference", "ratio", "rounds"]
    .concat(["target", "result"]);
  const rows = list.map((c) => [
    String(c.workers),
    c.what,
    c.measured,
    c.reference,
    Number.isFinite(c.ratio) ? `${c.ratio.toFixed(2)}x` : "-",
    c.rounds.map((r) => r.toFixed(2)).join(", ") || "-",
    c.target,
    resultCell(c),
  ]);
  return markdownTable(header, rows);
}

/** Every row's median round as a Markdown table. */
function measurementsTable(rows: Measurement[]): string {
  const header = [
    "threads",
    "workload",
    "server",
    "throughput",
    "mean / p50 / p99 ms",
    "server CPU µs/req",
    "server cores (busiest thread)",
    "wrk / other cores",
    "delayed ACKs /100",
    "errors",
    "conns/req",
    "cache misses",
  ];
  return markdownTable(
    header,
    rows.map((m) => [
      String(m.workers),
      m.workload.title,
      m.endpoint.label,
      `${formatFigure(rate(m))} ${m.workload.unit}`,
      `${meanMs(m).toFixed(2)} / ${m.load.p50Ms.toFixed(2)} / ${m.load.p99Ms.toFixed(2)}`,
      formatFigure(cpuPerRequest(m)),
      `${m.cpu.server.toFixed(2)} (${percent(m.cpu.busiest)})`,
      `${m.wrkCores.toFixed(2)} / ${m.cpu.others.toFixed(2)}`,
      m.delayedAcksPer100.toFixed(1),
      String(m.load.errors),
      m.connectionsPerRequest.toFixed(2),
      m.notHits === undefined ? "-" : String(m.notHits),
    ]),
  );
}

/**
 * Rows whose answers waited for delayed ACKs, beside the same workload over
 * plain HTTP: ~40 ms each, which TCP_NODELAY would have spared.
 */
function stalls(rows: Measurement[]): string[] {
  return rows.filter((m) => m.delayedAcksPer100 >= STALL_ACKS_PER_100).map((m) => {
    const plain = rows.find((p) =>
      p.workers === m.workers && p.workload === m.workload && p.endpoint.key === "tcpcache"
    );
    const beside = plain && plain !== m
      ? ` (tcpcache HTTP: ${plain.delayedAcksPer100.toFixed(1)}, mean ${
        meanMs(plain).toFixed(2)
      } ms)`
      : "";
    return `${m.workers} thread(s), ${m.workload.title}, ${m.endpoint.label}: ` +
      `${m.delayedAcksPer100.toFixed(1)} delayed ACKs per 100 answers, mean latency ` +
      `${meanMs(m).toFixed(2)} ms${beside}`;
  });
}

/** What the reader must know about the windows: errors, misses, busy neighbours. */
function problems(ctx: Context): string[] {
  const found = [...ctx.problems];
  for (const m of ctx.measurements) {
    const what = `${m.workers} thread(s), ${m.workload.title}, ${m.endpoint.label}, round ` +
      `${m.round + 1}`;
    if (m.load.errors > 0) found.push(`${what}: ${m.load.errorSamples.join(" / ")}`);
    if (m.notHits) found.push(`${what}: ${m.notHits} answers were not cache hits`);
    if (m.cpu.others >= 0.2) {
      found.push(`${what}: other processes used ${m.cpu.others.toFixed(2)} cores`);
    }
    if (m.workload.close && m.connectionsPerRequest < 0.95) {
      found.push(`${what}: only ${m.connectionsPerRequest.toFixed(2)} connections per answer`);
    }
  }
  return found;
}

/** What the tables' columns mean. */
function legend(ctx: Context): string {
  return [
    `Each figure: ${ctx.seconds} s counted after a separate ${WARMUP_S} s wrk run, in ` +
    `${ctx.rounds} rounds, the servers measured in turn in every round. measured, reference ` +
    "and the Measurements table: each row's median round by throughput. ratio: the median of " +
    "the rounds' ratios (rounds: each one's; a round's two figures are seconds apart). " +
    "threads: tcpcache's --workers, nginx's worker_processes. MB = 10^6 bytes read by wrk, " +
    "heads included.",
    "server CPU µs/req: utime + stime of the server's process tree over the window, divided by " +
    "the answers in it. server cores: the same per second of wall time (busiest thread in " +
    "parentheses). wrk / other cores: wrk's CPU (over TLS it does the client's half of every " +
    "handshake and decrypts, on the same 2 cores as the server) and every other process's.",
    "mean ms: connections ÷ answers per second (each connection waits for its answer); p50 and " +
    "p99: wrk's. delayed ACKs /100: delayed-ACK timeouts on the machine (TcpExt DelayedACKs) " +
    "per 100 answers; with Nagle's algorithm on at the server, each can hold an answer's tail " +
    "back ~40 ms. conns/req: TCP connections accepted on the machine (PassiveOpens) per " +
    "answer. cache misses: tcpcache's answers in the window that were not hits (0: warm).",
  ].join("\n");
}

/**
 * Prints the report on stdout. `version` is the code's at the start: the
 * servers ran it, unless someone changed it during the run (then said).
 */
async function report(
  ctx: Context,
  run: { started: number; args: string[]; version: CodeVersion },
): Promise<void> {
  const { started, args } = run;
  const version = versionLabel(run.version);
  const now = await codeVersion();
  if (now.commit !== run.version.commit || now.dirty !== run.version.dirty) {
    ctx.problems.push(
      `the code changed during the run (${versionLabel(now)} at the end): each phase's servers ` +
        "ran the code as it was when the phase began",
    );
  }
  const tools = await versions(ctx);
  const argsText = args.map((a) => ` ${a}`).join("");
  console.log(`$ deno task bench:tls${argsText}\n(deno run -A bench/tls_bench.ts${argsText})`);
  console.log(
    `${version}, ${tools}, ${navigator.hardwareConcurrency} cores, ${new Date().toISOString()}\n`,
  );
  const rows = medianRounds(ctx.measurements);
  console.log("Targets and comparisons:\n");
  console.log(targetsTable(ctx.workers.flatMap((w) => comparisons(w, ctx.measurements))));
  const stalled = stalls(rows);
  if (stalled.length > 0) {
    console.log(
      bulletList(
        "**STALLS: answers waited ~40 ms for delayed ACKs (Nagle's algorithm on at the server)**",
        stalled,
      ),
    );
  }
  console.log("\nMeasurements:\n");
  console.log(measurementsTable(rows));
  console.log(`\n${legend(ctx)}`);
  const probe = [...ctx.resumed].map(([label, n]) => `${label}: ${n} of ${PROBE_RECONNECTS}`);
  console.log(bulletList("Sessions resumed by one reconnecting openssl s_client", probe));
  console.log(
    bulletList("Not measured", [
      "tcpcache's TCP protocol over TLS: wrk speaks only HTTP, and bench/driver.ts only plain TCP",
    ]),
  );
  const found = problems(ctx);
  if (found.length > 0) console.log(bulletList("Problems", found));
  console.log(`\nTook ${Math.round((performance.now() - started) / 1000)} s.`);
}

/** The versions of Deno, nginx, wrk and OpenSSL, for the report's header. */
async function versions(ctx: Context): Promise<string> {
  const first = (text: string) => text.trim().split("\n")[0] ?? "";
  const nginx = first((await run(ctx.nginx, ["-v"])).out).replace("nginx version: ", "");
  const wrk = first((await run(ctx.wrk, ["--version"])).out).split(" [")[0];
  const openssl = first((await run("openssl", ["version"])).out).split(" (")[0];
  return `Deno ${Deno.version.deno}, ${nginx}, ${wrk}, ${openssl}`;
}

// ---------------------------------------------------------------------------
// Main

/** What the run works with. */
interface Context {
  seconds: number;
  rounds: number;
  workers: number[];
  root: string;
  wrk: string;
  nginx: string;
  certificate: Certificate;
  /** fetch's client for HTTPS: it trusts the run's CA. */
  client: Deno.HttpClient;
  files: Files;
  /** wrk's script for each workload. */
  scripts: Map<Workload["key"], string>;
  /** The resumption probe's count, by endpoint label and threads. */
  resumed: Map<string, number>;
  measurements: Measurement[];
  problems: string[];
}

/** Writes the files and certificate, then measures every phase; resolves with it all. */
async function bench(root: string, options: Options): Promise<Context> {
  const wrk = findExecutable("wrk");
  const nginx = findExecutable("nginx");
  if (!wrk || !nginx || !findExecutable("openssl")) {
    throw new Error("this benchmark needs wrk, nginx and openssl on PATH");
  }
  log(`writing files and a certificate in ${root}`);
  const files = await writeFiles(`${root}/files`);
  const certificate = await makeCertificate(`${root}/certs`);
  const scripts = new Map<Workload["key"], string>();
  for (const w of WORKLOADS) {
    scripts.set(w.key, await writeWrkScript(`${root}/${w.key}.lua`, files[w.files].paths, w.close));
  }
  const ctx: Context = {
    ...options,
    root,
    wrk,
    nginx,
    certificate,
    client: Deno.createHttpClient({ caCerts: [await Deno.readTextFile(certificate.ca)] }),
    files,
    scripts,
    resumed: new Map(),
    measurements: [],
    problems: [],
  };
  try {
    for (const workers of options.workers) ctx.measurements.push(...await phase(ctx, workers));
  } finally {
    ctx.client.close();
  }
  return ctx;
}

/** Runs the benchmark in a session and prints the report; resolves with the exit status. */
async function main(args: string[]): Promise<number> {
  const options = readCommandLine("tls_bench", USAGE, args, parseOptions);
  if (typeof options === "number") return options;
  const started = performance.now();
  const setup = {
    program: "tls_bench",
    tempPrefix: "tcpcache-tls-bench-",
    // wrk is the only driver: the session's Deno driver gets no workers.
    driverWorkers: 0,
    hardCapMs: 1_800_000,
  };
  return await runSession(setup, async ({ root }) => {
    const version = await codeVersion();
    const ctx = await bench(root, options);
    await report(ctx, { started, args, version });
  });
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
