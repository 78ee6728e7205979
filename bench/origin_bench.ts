/**
 * The origin shield, measured (docs/origin.md): tcpcache in front of a real
 * S3 store, Ceph's RADOS Gateway on 127.0.0.1 (tests/origin/s3/ceph_rgw.sh),
 * through a proxy of ours that adds latency, refuses, hangs or throttles,
 * and counts the requests that reach the store (bench/origin_proxy.ts).
 * Each figure is taken for the defaults ("before": every request asks the
 * store) and for a shielded server ("after").
 *
 *     deno task bench:origin [--delay-ms 20] [--seconds 6] [--outage-seconds 10]
 *                            [--before OTHER/server.ts]
 *
 * `--before` runs the "before" rows on another tree's server (an earlier
 * commit, with its defaults): the before/after table of docs/origin.md.
 * Needs Ceph (`bash tests/origin/s3/ceph_rgw.sh install`); says so and exits
 * 0 when it is missing. Writes bench/results/origin.json.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { AwsClient } from "aws4fetch";
import { connect } from "../client/connection.ts";
import { OriginProxy } from "./origin_proxy.ts";
import { log, readyPorts, REPO, track } from "./processes.ts";

const SCRIPT = fileURLToPath(new URL("../tests/origin/s3/ceph_rgw.sh", import.meta.url));
const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
const KiB = 1024;

const args = new Map<string, string>();
for (let i = 0; i < Deno.args.length; i += 2) {
  args.set(Deno.args[i].replace(/^--/, ""), Deno.args[i + 1]);
}
const DELAY_MS = Number(args.get("delay-ms") ?? 20);
const SECONDS = Number(args.get("seconds") ?? 6);
const OUTAGE_SECONDS = Number(args.get("outage-seconds") ?? 10);
const BEFORE_SERVER = args.get("before") ?? SERVER;

/** The objects: 200 small, 4 of 1 MiB (the shape), and 50 never fetched before an outage. */
const SMALL = Array.from({ length: 200 }, (_, i) => `small/f${String(i).padStart(3, "0")}.bin`);
const MID = Array.from({ length: 4 }, (_, i) => `mid/m${i}.bin`);
const COLD = Array.from({ length: 50 }, (_, i) => `cold/c${String(i).padStart(2, "0")}.bin`);

/** The shielded server's flags. */
const SHIELD = [
  "--max-age",
  "60",
  "--stale-while-revalidate",
  "10",
  "--stale-if-error",
  "600",
  "--negative-max-age",
  "10",
];

interface Tcpcache {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const installed = ["ceph-mon", "ceph-osd", "radosgw"].every((name) =>
    ["/usr/bin", "/usr/sbin"].some((dir) => exists(`${dir}/${name}`))
  );
  if (!installed) {
    log("origin bench skipped: Ceph is not installed (bash tests/origin/s3/ceph_rgw.sh install)");
    return;
  }
  const work = await Deno.makeTempDir({ prefix: "tcpcache-origin-bench-" });
  const gatewayDir = `${work}/ceph`;
  await Deno.mkdir(gatewayDir);
  const started = await new Deno.Command("bash", {
    args: [SCRIPT, "start", gatewayDir],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!started.success) {
    log(
      `origin bench skipped: the gateway did not start: ${
        new TextDecoder().decode(started.stderr)
      }`,
    );
    return;
  }
  const env = parseEnv(await Deno.readTextFile(`${gatewayDir}/env`));
  const proxy = OriginProxy.start(env.S3_ENDPOINT.replace("http://", ""), DELAY_MS);
  const results: Record<string, unknown> = { delayMs: DELAY_MS, seconds: SECONDS };
  try {
    const files = await upload(env, `${work}/files`);
    log(`gateway ${env.S3_ENDPOINT}, proxy ${proxy.endpoint} (+${DELAY_MS} ms per request)`);

    // 1. Hits at +20 ms, one connection: directory origin, defaults, shielded.
    const dir = await startTcpcache(["--dir", files], `${work}/cache-dir`, env);
    results.directory = await hitRun(dir, proxy);
    await dir.stop();
    for (const [name, flags] of [["before", []], ["after", SHIELD]] as const) {
      const server = await startS3(proxy, [...flags], `${work}/cache-${name}`, env, name);
      results[`hits-${name}`] = await hitRun(server, proxy);
      await server.stop();
    }

    // 2. The store refuses, hangs, throttles for a while, objects cached and
    //    past their lifetime; then it comes back.
    for (
      const [name, flags] of [["before", []], ["after", [
        "--max-age",
        "1",
        "--stale-if-error",
        "600",
      ]]] as const
    ) {
      for (const mode of ["refuse", "hang", "throttle"] as const) {
        const server = await startS3(
          proxy,
          [...flags],
          `${work}/cache-out-${name}-${mode}`,
          env,
          name,
        );
        results[`outage-${mode}-${name}`] = await outage(server, proxy, mode);
        await server.stop();
      }
    }

    // 3. +2 s store, 32 concurrent requests of one path after its lifetime.
    for (
      const [name, flags] of [["lock", ["--max-age", "1"]], ["swr", [
        "--max-age",
        "1",
        "--stale-while-revalidate",
        "60",
      ]]] as const
    ) {
      const server = await startS3(proxy, [...flags], `${work}/cache-c-${name}`, env);
      results[`collapsed-${name}`] = await collapsed(server, proxy);
      await server.stop();
    }
  } finally {
    proxy.close();
    await new Deno.Command("bash", {
      args: [SCRIPT, "stop", gatewayDir],
      stdout: "null",
      stderr: "null",
    }).output();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  await Deno.mkdir(`${REPO}/bench/results`, { recursive: true });
  await Deno.writeTextFile(
    `${REPO}/bench/results/origin.json`,
    JSON.stringify(results, null, 2) + "\n",
  );
  console.log(JSON.stringify(results, null, 2));
}

/** One connection fetching the 200 small objects in turn for SECONDS (after one warm round). */
async function hitRun(server: Tcpcache, proxy: OriginProxy) {
  const client = await connect({ port: server.port });
  try {
    for (const path of [...SMALL, ...MID]) await client.get(path);
    proxy.reset();
    const cpu0 = cpuMs(server.pid);
    const times: number[] = [];
    const end = performance.now() + SECONDS * 1000;
    for (let i = 0; performance.now() < end; i++) {
      const t0 = performance.now();
      await client.get(SMALL[i % SMALL.length]);
      times.push(performance.now() - t0);
    }
    const cpu = cpuMs(server.pid) - cpu0;
    return {
      requests: times.length,
      perSecond: Math.round(times.length / SECONDS),
      p50Ms: round(percentile(times, 0.5)),
      p99Ms: round(percentile(times, 0.99)),
      originRequests: proxy.requests,
      originRequestsPerHit: round(proxy.requests / times.length, 4),
      serverCpuUsPerHit: round(cpu * 1000 / times.length, 1),
    };
  } finally {
    client.close();
  }
}

/** OUTAGE_SECONDS of `mode`, cached and uncached GETs timed, then recovery. */
async function outage(server: Tcpcache, proxy: OriginProxy, mode: "refuse" | "hang" | "throttle") {
  let client = await connect({ port: server.port });
  for (const path of SMALL) await client.get(path);
  await sleep(1_100); // past the shielded server's lifetime
  proxy.setMode(mode);
  proxy.reset();
  const cached: number[] = [];
  const uncached: number[] = [];
  let cachedErrors = 0;
  let uncachedOk = 0;
  const end = performance.now() + OUTAGE_SECONDS * 1000;
  for (let i = 0; performance.now() < end; i++) {
    const cold = i % 10 === 9;
    const path = cold ? COLD[i % COLD.length] : SMALL[i % SMALL.length];
    const t0 = performance.now();
    try {
      await client.get(path);
      if (cold) uncachedOk++;
    } catch {
      if (!cold) cachedErrors++;
      client.close(); // a 503 closes the connection
      client = await connect({ port: server.port });
    }
    (cold ? uncached : cached).push(performance.now() - t0);
  }
  const reached = proxy.requests;
  const stats = await client.stats();
  proxy.setMode("pass");
  const back = performance.now();
  let recoveredMs = NaN;
  while (performance.now() - back < 30_000) {
    try {
      const answer = await client.get(SMALL[0]);
      if (!answer.stale) {
        recoveredMs = performance.now() - back;
        break;
      }
    } catch {
      client.close();
      client = await connect({ port: server.port });
    }
    await sleep(10);
  }
  client.close();
  const breaker = (stats.origin as { breaker?: Record<string, unknown> } | undefined)?.breaker ??
    null;
  return {
    cached: { requests: cached.length, errors: cachedErrors, ...spread(cached) },
    uncached: { requests: uncached.length, answered: uncachedOk, ...spread(uncached) },
    originRequestsSeen: reached,
    breaker,
    freshAgainAfterMs: round(recoveredMs),
  };
}

/** A 2 s store; 32 clients ask for one path whose lifetime has passed. */
async function collapsed(server: Tcpcache, proxy: OriginProxy) {
  const first = await connect({ port: server.port });
  await first.get(SMALL[0]);
  first.close();
  await sleep(1_100);
  proxy.delayMs = 2_000;
  proxy.reset();
  const times = await Promise.all(Array.from({ length: 32 }, async () => {
    const client = await connect({ port: server.port });
    try {
      const t0 = performance.now();
      await client.get(SMALL[0]);
      return performance.now() - t0;
    } finally {
      client.close();
    }
  }));
  await sleep(2_500); // a background revalidation lands
  const result = { originRequests: proxy.requests, ...spread(times) };
  proxy.delayMs = DELAY_MS;
  return result;
}

/** A server on the bucket through the proxy; a "before" row runs `--before`'s server. */
async function startS3(
  proxy: OriginProxy,
  flags: string[],
  cacheDir: string,
  env: Record<string, string>,
  row = "after",
) {
  return await startTcpcache(
    ["--origin", "s3://bench/obj", "--s3-endpoint", proxy.endpoint, ...flags],
    cacheDir,
    env,
    row === "before" ? BEFORE_SERVER : SERVER,
  );
}

async function startTcpcache(
  flags: string[],
  cacheDir: string,
  env: Record<string, string>,
  server = SERVER,
): Promise<Tcpcache> {
  const child = track(
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        server,
        ...flags,
        "--cache-dir",
        cacheDir,
        "--port",
        "0",
        "--workers",
        "1",
        "--quiet",
      ],
      env,
      stdout: "piped",
      stderr: "inherit",
    }).spawn(),
  );
  const { port } = await readyPorts(child);
  return {
    port,
    pid: child.pid,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** Creates the bucket, uploads the objects, and writes the same files to `dir`. */
async function upload(env: Record<string, string>, dir: string): Promise<string> {
  const aws = new AwsClient({
    accessKeyId: env.AWS_ACCESS_KEY_ID,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
    region: env.AWS_REGION,
    service: "s3",
  });
  const created = await aws.fetch(`${env.S3_ENDPOINT}/bench`, { method: "PUT" });
  await created.body?.cancel();
  const objects: [string, number][] = [
    ...SMALL.map((path) => [path, 4 * KiB] as [string, number]),
    ...MID.map((path) => [path, 1024 * KiB] as [string, number]),
    ...COLD.map((path) => [path, 4 * KiB] as [string, number]),
  ];
  for (const [path, size] of objects) {
    const bytes = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
    const body = new Uint8Array(size);
    for (let at = 0; at < size; at += bytes.length) body.set(bytes.subarray(0, size - at), at);
    const put = await aws.fetch(`${env.S3_ENDPOINT}/bench/obj/${path}`, { method: "PUT", body });
    if (!put.ok) throw new Error(`PUT ${path}: ${put.status} ${await put.text()}`);
    await put.body?.cancel();
    await Deno.mkdir(`${dir}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    await Deno.writeFile(`${dir}/${path}`, body);
  }
  return dir;
}

function spread(times: number[]) {
  return {
    p50Ms: round(percentile(times, 0.5)),
    p99Ms: round(percentile(times, 0.99)),
    maxMs: round(Math.max(...times, 0)),
  };
}

function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function round(value: number, digits = 2): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** The process's CPU time (user + system), ms. */
function cpuMs(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (import.meta.main) await main();
