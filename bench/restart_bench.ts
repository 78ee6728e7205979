/**
 * Restarts, measured: what a restart costs the origin, how soon the port
 * answers over a large cache directory, and a disk that fills before the
 * cache does. Each figure is taken for this tree's server ("after") and,
 * with `--before`, for another tree's server ("before": an earlier commit,
 * which has no `--keep-cache` and empties its cache directory before it
 * answers).
 *
 *     deno task bench:restart [--before OTHER/server.ts] [--entries 55000]
 *                             [--requests 2000] [--parts 1,2,3]
 *
 *  1. Restart cost: ~200 files, ~250 MiB in all, fetched through a 256 MiB
 *     cache; SIGTERM; the server started again on the same cache directory
 *     (with `--keep-cache` for "after keep") and every file fetched again:
 *     the origin bytes read after the restart, the time to fetch them all,
 *     and how the answers were labelled.
 *  2. Port open time: a cache directory of `--entries` small entries (files
 *     and a journal fabricated as a previous run leaves them): the time from
 *     spawn to the first answered `PING`, beside the same over an empty cache
 *     directory, and the time until the previous run's files are adopted or
 *     removed.
 *  3. A disk that fills early: a 20 MiB tmpfs (mounted for the run: needs
 *     root; skipped otherwise) as the cache directory of a 64 MiB cache, 200
 *     files of 1 MiB asked `--requests` times in a seeded Zipf order (s 0.9),
 *     whose popular files change halfway:
 *     the hit ratio (overall and over the second half), evictions, entries,
 *     and what STATS says of the disk.
 *
 * Every server runs one thread (`--workers 1`). The machines are shared
 * and noisy: compare rows of one run. Prints Markdown tables on stdout.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { seededRandom } from "../util/seeded_random.ts";
import { connect, type TcpCacheClient } from "../client/connection.ts";
import { Journal, type JournalEntry } from "../cache_disk/journal.ts";
import { CACHE_MARKER, JOURNAL_FILE } from "../cache.ts";
import { log, readyPorts, REPO, stopChildren, track } from "./processes.ts";

const MiB = 1024 * 1024;
const AFTER = `${REPO}/server.ts`;

const flags = new Map<string, string>();
for (let i = 0; i < Deno.args.length; i += 2) {
  flags.set(Deno.args[i].replace(/^--/, ""), Deno.args[i + 1]);
}
const BEFORE = flags.get("before");
const ENTRIES = Number(flags.get("entries") ?? 55_000);
const REQUESTS = Number(flags.get("requests") ?? 2_000);
const PARTS = new Set((flags.get("parts") ?? "1,2,3").split(",").map(Number));

/** The servers compared: "before" only with `--before`. */
const SERVERS: [string, string][] = BEFORE ? [["before", BEFORE], ["after", AFTER]] : [
  ["after", AFTER],
];

/** A server the bench started, with the time from its spawn to its first answered `PING`. */
interface Running {
  port: number;
  pingMs: number;
  spawned: number;
  client: TcpCacheClient;
  stop(): Promise<number>;
}

/** The cache's part of `STATS` (the "after" fields are missing before). */
interface CacheStats {
  capacity: number;
  used: number;
  entries: number;
  evictions?: number;
  effectiveCapacity?: number;
  degraded?: string;
  writeFailures?: number;
  adopted?: number;
  adopting?: number;
  housekeeping?: string;
  housekeepingBytes?: number;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Starts `server` with `args` on a port chosen here, and probes the port
 * from the spawn on: resolves once a `PING` is answered.
 */
async function start(server: string, args: string[]): Promise<Running> {
  const port = freePort();
  const spawned = performance.now();
  const child = track(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", server, "--quiet", "--workers", "1", ...args, "--port", String(port)],
      cwd: REPO,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn(),
  );
  const ready = readyPorts(child, 300_000);
  ready.catch(() => {});
  let exited = false;
  child.status.then(() => exited = true);
  let client: TcpCacheClient | undefined;
  let pingMs = NaN;
  while (client === undefined) {
    if (exited) throw new Error(`${server} exited at start`);
    let candidate: TcpCacheClient | undefined;
    try {
      candidate = await connect({ port });
      await candidate.ping();
      pingMs = performance.now() - spawned;
      client = candidate;
    } catch {
      candidate?.close();
      await sleep(2);
    }
  }
  await ready;
  const connected = client;
  return {
    port,
    pingMs,
    spawned,
    client: connected,
    stop: async () => {
      connected.close();
      child.kill("SIGTERM");
      return (await child.status).code;
    },
  };
}

async function cacheStats(client: TcpCacheClient): Promise<CacheStats> {
  return (await client.stats()).cache as unknown as CacheStats;
}

/** `size` seeded bytes, made quickly (a seeded 64 KiB block, repeated with a counter). */
function seededFile(size: number, seed: number): Uint8Array {
  const random = seededRandom(seed);
  const block = new Uint8Array(Math.min(size, 65536));
  for (let i = 0; i < block.length; i++) block[i] = Math.floor(random() * 256);
  const out = new Uint8Array(size);
  for (let at = 0, n = 0; at < size; at += block.length, n++) {
    out.set(block.subarray(0, size - at), at);
    out[at] = n & 0xff;
  }
  return out;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Writes `files` (path → size) below `dir`. */
function writeOrigin(dir: string, files: [string, number][]): void {
  for (const [i, [path, size]] of files.entries()) {
    Deno.mkdirSync(`${dir}/${path.slice(0, path.lastIndexOf("/"))}`, { recursive: true });
    Deno.writeFileSync(`${dir}/${path}`, seededFile(size, i + 1));
  }
}

/** Fetches every path in turn on `client`, bodies discarded (the client verifies each). */
async function fetchAll(client: TcpCacheClient, paths: string[]) {
  const labels: Record<string, number> = {};
  const t0 = performance.now();
  for (const path of paths) {
    const result = await client.get(path, { sink: () => {} });
    labels[result.cache] = (labels[result.cache] ?? 0) + 1;
  }
  return { seconds: (performance.now() - t0) / 1000, labels };
}

/**
 * Waits until the previous run's files are adopted or removed: STATS says
 * so (after), and with `empty`, the directory holds only the server's own
 * files (STATS says 0 while the old files are still being counted).
 * Resolves to the milliseconds since the spawn.
 */
async function housekept(server: Running, cacheDir: string, empty: boolean): Promise<number> {
  for (;;) {
    const cache = await cacheStats(server.client);
    const done = cache.housekeeping === undefined
      ? (cache.adopting ?? 0) === 0 && (cache.housekeepingBytes ?? 0) === 0 // before it existed
      : cache.housekeeping === "done";
    if (done && (!empty || onlyOwnFiles(cacheDir))) return performance.now() - server.spawned;
    await sleep(50);
  }
}

function onlyOwnFiles(dir: string): boolean {
  for (const { name } of Deno.readDirSync(dir)) {
    if (name !== CACHE_MARKER && name !== JOURNAL_FILE) return false;
  }
  return true;
}

// 1. Restart cost.

async function restartCost(work: string): Promise<string> {
  const random = seededRandom(11);
  const raw = Array.from({ length: 200 }, () => 0.5 + random());
  const scale = 250 * MiB / raw.reduce((sum, x) => sum + x, 0);
  const files = raw.map((x, i): [string, number] => [`r/f${i}.bin`, Math.floor(x * scale)]);
  const total = files.reduce((sum, [, size]) => sum + size, 0);
  const origin = `${work}/restart-files`;
  writeOrigin(origin, files);
  const paths = files.map(([path]) => path);
  const rows: string[] = [];
  const variants: [string, string, string[]][] = SERVERS.flatMap(([name, server]) =>
    name === "before"
      ? [[name, server, []]]
      : [[`${name}, default`, server, []], [`${name}, --keep-cache`, server, ["--keep-cache"]]]
  );
  for (const [name, server, extra] of variants) {
    const cacheDir = `${work}/restart-cache-${rows.length}`;
    const args = ["--dir", origin, "--cache-dir", cacheDir, "--cache-size", "256MiB"];
    log(`restart cost: ${name}: filling`);
    const first = await start(server, [...args, ...extra]);
    await fetchAll(first.client, paths);
    const entries = (await cacheStats(first.client)).entries;
    await first.stop();
    log(`restart cost: ${name}: restarted`);
    const second = await start(server, [...args, ...extra]);
    const origin0 = (await second.client.stats()).bytesFromOrigin as number;
    const again = await fetchAll(second.client, paths);
    const stats = await second.client.stats();
    const read = (stats.bytesFromOrigin as number) - origin0;
    const doneMs = extra.length > 0 ? await housekept(second, cacheDir, false) : NaN;
    const cache = stats.cache as unknown as CacheStats;
    await second.stop();
    rows.push(
      `| ${name} | ${entries} | ${second.pingMs.toFixed(0)} | ${read.toLocaleString("en")} | ` +
        `${again.seconds.toFixed(2)} | ${label(again.labels)} | ${cache.adopted ?? "-"} | ` +
        `${Number.isNaN(doneMs) ? "-" : (doneMs / 1000).toFixed(2)} |`,
    );
    await Deno.remove(cacheDir, { recursive: true });
  }
  await Deno.remove(origin, { recursive: true });
  return `### 1. Restart cost: ${files.length} files, ${(total / MiB).toFixed(1)} MiB ` +
    `(${
      total.toLocaleString("en")
    } bytes), --cache-size 256MiB, SIGTERM, start again, fetch all\n\n` +
    "| server | entries before the restart | spawn to PING (ms) | origin bytes read after the restart | refetch all (s) | answers | adopted | adoption done (s after spawn) |\n" +
    "| --- | --- | --- | --- | --- | --- | --- | --- |\n" + rows.join("\n") + "\n";
}

function label(labels: Record<string, number>): string {
  return Object.entries(labels).map(([name, n]) => `${name} ${n}`).join(", ");
}

// 2. Port open time.

/**
 * A cache directory as a previous run leaves it: `count` small entry files,
 * the marker, and a journal that vouches for them (their origin files need
 * not exist: adoption checks the cache files against the journal only).
 */
function fabricateCache(cacheDir: string, count: number, capacity: number): void {
  Deno.mkdirSync(cacheDir, { recursive: true });
  const entries: JournalEntry[] = [];
  const now = Date.now();
  for (let i = 0; i < count; i++) {
    const content = seededFile(32 + (i * 7919) % 200, i + 1);
    const file = `fab1.${i + 1}`;
    Deno.writeFileSync(`${cacheDir}/${file}`, content);
    entries.push({
      path: `p${Math.floor(i / 500)}/e${i}.txt`,
      size: content.length,
      mtime: now,
      validator: `${content.length}:${now}:0:${now}`,
      sha256: sha256(content),
      admitted: now,
      file,
    });
  }
  Deno.writeTextFileSync(`${cacheDir}/${CACHE_MARKER}`, "a previous run's cache\n");
  Journal.create(cacheDir, { capacity, policy: "fifo" }, entries).close();
}

async function portOpenTime(work: string): Promise<string> {
  const origin = `${work}/port-files`;
  Deno.mkdirSync(origin, { recursive: true });
  Deno.writeTextFileSync(`${origin}/a.txt`, "a\n");
  const capacity = 256 * MiB;
  const args = (
    dir: string,
  ) => ["--dir", origin, "--cache-dir", dir, "--cache-size", String(capacity)];
  const rows: string[] = [];
  const row = (name: string, ping: number, done: number, note: string) =>
    rows.push(
      `| ${name} | ${ping.toFixed(0)} | ${
        Number.isNaN(done) ? "-" : (done / 1000).toFixed(2)
      } | ${note} |`,
    );
  for (const [name, server] of SERVERS) {
    for (let i = 0; i < 2; i++) {
      const empty = await start(server, args(`${work}/port-empty-${name}-${i}`));
      await empty.stop();
      if (i === 1) row(`${name}, empty cache dir`, empty.pingMs, NaN, "");
    }
    const cacheDir = `${work}/port-cache-${name}`;
    log(`port open time: ${name}: fabricating ${ENTRIES} entries`);
    fabricateCache(cacheDir, ENTRIES, capacity);
    if (name === "before") {
      const before = await start(server, args(cacheDir));
      await before.stop();
      row(`${name}, ${ENTRIES} entries`, before.pingMs, before.pingMs, "emptied before it answers");
      continue;
    }
    const kept = await start(server, [...args(cacheDir), "--keep-cache"]);
    const first = await cacheStats(kept.client);
    const adopted = await housekept(kept, cacheDir, false);
    await kept.stop();
    row(
      `${name} --keep-cache, ${ENTRIES} entries`,
      kept.pingMs,
      adopted,
      `${first.housekeeping}, adopting ${first.adopting} at the first STATS; done = all adopted`,
    );
    // The same directory (its journal compacted at the stop), started without the flag.
    const emptied = await start(server, args(cacheDir));
    const counted = (await cacheStats(emptied.client)).housekeepingBytes;
    const removed = await housekept(emptied, cacheDir, true);
    await emptied.stop();
    row(
      `${name} default, ${ENTRIES} entries`,
      emptied.pingMs,
      removed,
      `housekeepingBytes ${counted} at the first STATS; done = all removed`,
    );
  }
  await Deno.remove(origin, { recursive: true });
  return `### 2. Port open time: ${ENTRIES} entries in the cache directory\n\n` +
    "| server | spawn to first PING (ms) | adopted / removed (s after spawn) | notes |\n" +
    "| --- | --- | --- | --- |\n" + rows.join("\n") + "\n";
}

// 3. A disk that fills early.

async function diskFillsEarly(work: string): Promise<string> {
  const origin = `${work}/zipf-files`;
  const files = Array.from({ length: 200 }, (_, i): [string, number] => [`z/f${i}.bin`, MiB]);
  writeOrigin(origin, files);
  // Zipf (s 0.9) over the files in a seeded shuffled order.
  const weights = files.map((_, k) => 1 / (k + 1) ** 0.9);
  const sum = weights.reduce((a, b) => a + b, 0);
  const cdf: number[] = [];
  weights.reduce((acc, w) => (cdf.push((acc + w) / sum), acc + w), 0);
  const random = seededRandom(5);
  const shuffled = () => {
    const rank = files.map((_, i) => i);
    for (let i = rank.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [rank[i], rank[j]] = [rank[j], rank[i]];
    }
    return rank;
  };
  // Halfway the popular files change (another seeded order): a cache frozen
  // by a full disk keeps the first half's favourites; one that adapts follows.
  const ranks = [shuffled(), shuffled()];
  const order = Array.from({ length: REQUESTS }, (_, i) => {
    const u = random();
    const k = cdf.findIndex((p) => p >= u);
    const rank = ranks[i < REQUESTS / 2 ? 0 : 1];
    return files[rank[k === -1 ? files.length - 1 : k]][0];
  });
  const mount = `${work}/tmpfs`;
  Deno.mkdirSync(mount);
  const rows: string[] = [];
  for (const [name, server] of SERVERS) {
    const mounted = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=20m", "tmpfs", mount],
      stderr: "piped",
    }).output();
    if (!mounted.success) {
      return `### 3. A disk that fills early: skipped (mount -t tmpfs failed: ${
        new TextDecoder().decode(mounted.stderr).trim()
      })\n`;
    }
    try {
      log(`disk fills early: ${name}: ${REQUESTS} requests`);
      const cacheDir = `${mount}/cache`;
      const running = await start(server, [
        ...["--dir", origin, "--cache-dir", cacheDir, "--cache-size", "64MiB"],
      ]);
      let secondHalfHits = 0;
      for (const [i, path] of order.entries()) {
        const result = await running.client.get(path, { sink: () => {} });
        if (i >= order.length / 2 && result.cache === "hit") secondHalfHits++;
      }
      const stats = await running.client.stats();
      await running.stop();
      const cache = stats.cache as unknown as CacheStats;
      const evictions = cache.evictions ?? (stats.evictions as number);
      rows.push(
        `| ${name} | ${pct(stats.hits / REQUESTS)} | ${pct(secondHalfHits / (REQUESTS / 2))} | ` +
          `${evictions} | ${cache.entries} | ${(cache.used / MiB).toFixed(1)} | ` +
          `${
            cache.effectiveCapacity === undefined ? "-" : (cache.effectiveCapacity / MiB).toFixed(1)
          } | ` +
          `${cache.degraded ?? "-"} | ${cache.writeFailures ?? "-"} |`,
      );
    } finally {
      await new Deno.Command("umount", { args: [mount] }).output();
    }
  }
  await Deno.remove(origin, { recursive: true });
  return `### 3. A disk that fills early: a 20 MiB tmpfs, --cache-size 64MiB, 200 files of 1 MiB, ` +
    `${REQUESTS} requests (Zipf s 0.9, seeded; the popular files change halfway)\n\n` +
    "| server | hit ratio | hit ratio, 2nd half | evictions | entries | used (MiB) | effectiveCapacity (MiB) | degraded | writeFailures |\n" +
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n" + rows.join("\n") + "\n";
}

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

async function main(): Promise<void> {
  const work = await Deno.makeTempDir({ prefix: "tcpcache-restart-bench-" });
  const sections: string[] = [];
  try {
    if (PARTS.has(1)) sections.push(await restartCost(work));
    if (PARTS.has(2)) sections.push(await portOpenTime(work));
    if (PARTS.has(3)) sections.push(await diskFillsEarly(work));
  } finally {
    await stopChildren();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
  console.log(
    `## Restarts (deno task bench:restart${BEFORE ? ` --before ${BEFORE}` : ""})\n\n` +
      sections.join("\n"),
  );
}

if (import.meta.main) await main();
