/**
 * Restarts of a real server subprocess over its cache directory
 * (`--keep-cache`, the journal, the background housekeeping): kill -9 at
 * seeded random moments while fills are in flight, then a restart that must
 * adopt exactly what the journal vouches for and nothing else; and a cache
 * directory of 50,000 entries, whose adoption (or removal, without
 * `--keep-cache`) must not keep the port closed.
 *
 * Reproduce one iteration of the kill test with
 * `TCPCACHE_RESTART_SEED=<seed> deno test -A tests/server/restart_test.ts`
 * (or run others: `TCPCACHE_RESTART_SEED=2000-2099`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, type TcpCacheClient } from "../../client.ts";
import { CACHE_MARKER, JOURNAL_FILE } from "../../cache.ts";
import { Journal, type JournalEntry, readJournal } from "../../cache_disk/journal.ts";
import { toOriginStat } from "../../origin/directory.ts";
import {
  cacheFileNames,
  json,
  RawConnection,
  seededBytes,
  seededRandom,
  sha256,
  waitForOutput,
} from "../helpers.ts";

const MiB = 1024 * 1024;
const SERVER = new URL("../../server.ts", import.meta.url).pathname;
/** The files of the cache directory that are not entries. */

/** A file of the origin and what the test knows of it. */
interface OriginFile {
  path: string;
  size: number;
  sha256: string;
}

/** The cache's part of `STATS`, as far as these tests read it. */
interface CacheStats {
  capacity: number;
  used: number;
  entries: number;
  adopted: number;
  adopting: number;
  housekeepingBytes: number;
  housekeeping: string;
}

/** `server.ts` in a child process, its stderr kept for the failure messages. */
interface Running {
  child: Deno.ChildProcess;
  port: number;
  /** What it wrote on stderr so far. */
  stderr(): string;
  /** Sends `signal` (unless it has exited) and resolves to its status. */
  stop(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/** A port that was free a moment ago (for a server whose port must be known before it says so). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/**
 * Starts `server.ts` with `args` (quiet, on `port`), and resolves once its
 * ready line is out, or at once with `ready: false` (the caller then probes
 * the port itself).
 */
async function launch(args: string[], port = 0, ready = true): Promise<Running> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--quiet", ...args, "--port", String(port)],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let stderr = "";
  const draining = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
  })().catch(() => {});
  const stop = async (signal: Deno.Signal = "SIGTERM") => {
    try {
      child.kill(signal);
    } catch {
      // exited already
    }
    const status = await child.status;
    await draining;
    return status;
  };
  const readyLine = waitForOutput(child, child.stdout, /listening on [^ ]+:([0-9]+)/);
  if (!ready) {
    readyLine.catch(() => {});
    return { child, port, stderr: () => stderr, stop };
  }
  try {
    const [, announced] = await readyLine;
    return { child, port: Number(announced), stderr: () => stderr, stop };
  } catch (error) {
    await stop("SIGKILL");
    throw new Error(`${(error as Error).message}\nstderr: ${stderr}`);
  }
}

/**
 * Connects to `port` as soon as it accepts and sends `PING` and `STATS` in
 * one write: resolves to the milliseconds from `since` to the `PING`
 * answer, and the first `STATS` answer's cache figures.
 */
async function probe(port: number, since: number): Promise<{ pingMs: number; cache: CacheStats }> {
  const deadline = since + 30_000;
  for (;;) {
    let conn: RawConnection;
    try {
      conn = await RawConnection.open(port);
    } catch {
      if (performance.now() > deadline) throw new Error(`port ${port} never accepted`);
      await sleep(2);
      continue;
    }
    try {
      await conn.send("PING\nSTATS\n");
      const ping = await conn.response();
      const pingMs = performance.now() - since;
      assert.equal(ping.line, "OK 0");
      const stats = json<{ cache: CacheStats }>(await conn.response());
      return { pingMs, cache: stats.cache };
    } finally {
      conn.close();
    }
  }
}

/** Polls `check` every 20 ms for at most `timeoutMs`. */
async function waitUntil(
  check: () => Promise<boolean>,
  timeoutMs: number,
  what: () => string,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what()}`);
    await sleep(20);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function cacheStats(client: TcpCacheClient): Promise<CacheStats> {
  return (await client.stats()).cache as unknown as CacheStats;
}

async function bytesFromOrigin(client: TcpCacheClient): Promise<number> {
  return (await client.stats()).bytesFromOrigin as number;
}

/**
 * Writes `count` seeded files below `dir`, from a few bytes to 3 MiB
 * (log-uniform, a few empty or tiny), in ten subdirectories.
 */
async function writeOrigin(dir: string, count: number, seed: number): Promise<OriginFile[]> {
  const random = seededRandom(seed);
  const files: OriginFile[] = [];
  for (let i = 0; i < count; i++) {
    const size = i % 25 === 0
      ? Math.floor(random() * 16)
      : Math.floor(Math.exp(random() * Math.log(3 * MiB)));
    const path = `d${i % 10}/f${i}.bin`;
    const bytes = seededBytes(size, i + 1);
    await Deno.mkdir(`${dir}/d${i % 10}`, { recursive: true });
    await Deno.writeFile(`${dir}/${path}`, bytes);
    files.push({ path, size, sha256: sha256(bytes) });
  }
  return files;
}

/**
 * The entries the journal of a killed run in `cacheDir` vouches for; the
 * journal must be whole (each record is one write, and a kill -9 loses no
 * write), and each entry's file there.
 */
async function vouchedFor(cacheDir: string, context: string): Promise<JournalEntry[]> {
  const journal = await readJournal(cacheDir);
  assert.equal(journal.untrusted, undefined, `${context}: the journal is trusted`);
  assert.equal(journal.damaged, 0, `${context}: a kill -9 leaves no damaged record`);
  const files = new Set(cacheFileNames(cacheDir));
  for (const entry of journal.entries) {
    assert.ok(files.has(entry.file), `${context}: ${entry.file} of ${entry.path} is there`);
  }
  return journal.entries;
}

/** What one kill-and-restart iteration saw. */
interface Iteration {
  seed: number;
  /** Entries the killed run's journal vouched for (all of them must be adopted). */
  vouched: number;
  adopted: number;
  /** `*.part` files the kill left (fills in flight). */
  partials: number;
  /** Files the killed run left without a record (renamed, or dropped, at the kill). */
  unrecorded: number;
  /** Whether the restarted server was killed too (and started a third time). */
  killedAgain: boolean;
}

const POLICY_NAMES = ["fifo", "lru", "clock", "sieve", "s3fifo"];
const CLIENTS = 6;

/**
 * One iteration: a server with `--keep-cache` and a small cache, clients
 * fetching seeded random files, SIGKILL at a seeded moment; then a restart
 * on the same directory, which must adopt exactly the journal's entries,
 * serve each as a hit without reading the origin, and leave no other file.
 */
async function killDuringFills(
  seed: number,
  origin: string,
  files: OriginFile[],
  root: string,
): Promise<Iteration> {
  const random = seededRandom(seed);
  const cacheDir = `${root}/cache-${seed}`;
  const capacity = (3 + Math.floor(random() * 6)) * MiB;
  const policy = POLICY_NAMES[Math.floor(random() * POLICY_NAMES.length)];
  const workers = random() < 0.5 ? 1 : 2;
  const killAfterMs = 100 + Math.floor(random() * 1400);
  const args = ["--dir", origin, "--cache-dir", cacheDir, "--keep-cache"]
    .concat(["--cache-size", String(capacity), "--policy", policy, "--workers", String(workers)]);
  const context = `seed ${seed} (capacity ${capacity}, ${policy}, ${workers} threads, ` +
    `kill after ${killAfterMs} ms)`;
  const byPath = new Map(files.map((file) => [file.path, file]));

  const first = await launch(args);
  let killed = false;
  const fetching = Array.from({ length: CLIENTS }, async (_, c) => {
    const pick = seededRandom(seed * 100 + c + 1);
    const client = await connect({ port: first.port });
    try {
      for (;;) {
        const file = files[Math.floor(pick() * files.length)];
        const result = await client.get(file.path);
        assert.equal(
          sha256(result.bytes!),
          file.sha256,
          `${context}: ${file.path} before the kill`,
        );
      }
    } catch (error) {
      if (!killed) throw error; // only the kill may end a client
    } finally {
      client.close();
    }
  });
  try {
    await Promise.race([sleep(killAfterMs), ...fetching]);
    killed = true;
    await first.stop("SIGKILL");
    await Promise.all(fetching);
  } finally {
    killed = true;
    await first.stop("SIGKILL");
  }

  // What the killed run left: its journal must be whole (every record one write).
  const left = cacheFileNames(cacheDir);
  let vouched = await vouchedFor(cacheDir, `${context}, killed while filling`);
  const recordedFiles = new Set(vouched.map((entry) => entry.file));

  let second = await launch(args);
  // Now and then the restarted server is killed too, during its adoption or soon after:
  // the next start must adopt what that run's journal vouches for, a subset of the first's.
  const killedAgain = random() < 0.3;
  if (killedAgain) {
    await sleep(Math.floor(random() * 200));
    await second.stop("SIGKILL");
    const before = new Set(vouched.map((entry) => entry.path));
    vouched = await vouchedFor(cacheDir, `${context}, killed while adopting`);
    for (const entry of vouched) {
      assert.ok(before.has(entry.path), `${context}: ${entry.path} vouched for anew`);
    }
    second = await launch(args);
  }
  const client = await connect({ port: second.port });
  try {
    await waitUntil(
      async () => {
        const cache = await cacheStats(client);
        return cache.housekeeping === "done" && cache.adopting === 0;
      },
      20_000,
      () => `${context}: the adoption to finish; stderr: ${second.stderr()}`,
    );
    const stats = await client.stats();
    const cache = stats.cache as unknown as CacheStats;
    const listing = await client.list();
    // Exactly what the journal vouched for is adopted, in its order under FIFO.
    assert.deepEqual(
      listing.entries.map((entry) => entry.path).sort(),
      vouched.map((entry) => entry.path).sort(),
      `${context}: the adopted entries are the journal's`,
    );
    if (policy === "fifo") {
      assert.deepEqual(
        listing.entries.map((entry) => entry.path),
        vouched.map((entry) => entry.path),
        `${context}: FIFO's eviction order carries over`,
      );
    }
    assert.equal(cache.adopted, listing.entries.length, `${context}: STATS.cache.adopted`);
    const used = listing.entries.reduce((sum, entry) => sum + entry.size, 0);
    assert.equal(listing.used, used, `${context}: LIST.used is the entries' bytes`);
    assert.ok(listing.used <= listing.capacity, `${context}: used ${used} > capacity`);
    for (const entry of listing.entries) {
      assert.equal(entry.size, byPath.get(entry.path)!.size, `${context}: ${entry.path}'s size`);
    }
    // The directory holds the entries' files and the server's own, nothing else.
    const names = cacheFileNames(cacheDir);
    assert.deepEqual(names.filter((name) => name.endsWith(".part")), [], `${context}: .part`);
    assert.equal(names.length, listing.entries.length, `${context}: files ${names.join(" ")}`);
    assert.deepEqual(
      names,
      (await readJournal(cacheDir)).entries.map((entry) => entry.file).sort(),
      `${context}: the directory's files are the journal's`,
    );
    // Every entry is a hit with the origin's bytes, and the origin is not read.
    const before = { origin: stats.bytesFromOrigin as number, misses: stats.misses };
    for (const entry of listing.entries) {
      const result = await client.get(entry.path);
      assert.equal(result.cache, "hit", `${context}: ${entry.path} is a hit`);
      assert.ok(result.verified, `${context}: ${entry.path} verified by the client`);
      assert.equal(sha256(result.bytes!), byPath.get(entry.path)!.sha256, entry.path);
    }
    const after = await client.stats();
    assert.equal(after.bytesFromOrigin, before.origin, `${context}: no origin bytes for hits`);
    assert.equal(after.misses, before.misses, `${context}: no misses`);
    return {
      seed,
      vouched: vouched.length,
      adopted: cache.adopted,
      partials: left.filter((name) => name.endsWith(".part")).length,
      unrecorded: left.filter((name) => !name.endsWith(".part") && !recordedFiles.has(name))
        .length,
      killedAgain,
    };
  } finally {
    client.close();
    const status = await second.stop("SIGTERM");
    assert.equal(status.code, 0, `${context}: the restarted server exits cleanly`);
    await Deno.remove(cacheDir, { recursive: true });
  }
}

Deno.test("kill -9 at random moments during fills, 20 seeded iterations: a --keep-cache restart adopts exactly the journal's entries, as hits without origin reads", async () => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-restart-" });
  try {
    const origin = `${root}/files`;
    const files = await writeOrigin(origin, 300, 7);
    // One seed (`1007`) or a range (`2000-2099`) instead of the usual twenty.
    const only = Deno.env.get("TCPCACHE_RESTART_SEED");
    const [from, to] = only ? only.split("-").map(Number) : [1000, 1019];
    const seeds = Array.from({ length: (to ?? from) - from + 1 }, (_, i) => from + i);
    const results: Iteration[] = [];
    for (const seed of seeds) results.push(await killDuringFills(seed, origin, files, root));
    console.log(
      "seed vouched adopted partials unrecorded killed-again\n" +
        results.map((r) =>
          `${r.seed} ${r.vouched} ${r.adopted} ${r.partials} ${r.unrecorded} ${r.killedAgain}`
        ).join("\n"),
    );
    if (only) return;
    // A test that adopts nothing could not fail: most iterations must adopt something.
    const adopting = results.filter((r) => r.adopted > 0).length;
    assert.ok(adopting >= 15, `only ${adopting} of ${results.length} iterations adopted entries`);
    // And the kills must land while fills are in flight, now and then.
    const cut = results.filter((r) => r.partials + r.unrecorded > 0).length;
    assert.ok(cut >= 3, `only ${cut} kills left a fill in flight`);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/**
 * A cache directory as a previous run leaves it: `count` small entries of
 * files in `origin` (written too, so that their validators are the origin's),
 * their files, the marker and a journal describing them.
 */
function fabricateCache(
  origin: string,
  cacheDir: string,
  count: number,
  capacity: number,
): { entries: JournalEntry[]; bytes: number } {
  Deno.mkdirSync(cacheDir, { recursive: true });
  const entries: JournalEntry[] = [];
  let bytes = 0;
  const now = Date.now();
  for (let i = 0; i < count; i++) {
    const dir = `p${Math.floor(i / 500)}`;
    if (i % 500 === 0) Deno.mkdirSync(`${origin}/${dir}`, { recursive: true });
    const path = `${dir}/e${i}.txt`;
    const content = seededBytes(32 + (i * 7919) % 200, i + 1);
    Deno.writeFileSync(`${origin}/${path}`, content);
    const { size, mtime, validator } = toOriginStat(Deno.statSync(`${origin}/${path}`));
    const file = `fab1.${i + 1}`;
    Deno.writeFileSync(`${cacheDir}/${file}`, content);
    entries.push({ path, size, mtime, validator, sha256: sha256(content), admitted: now, file });
    bytes += size;
  }
  Deno.writeTextFileSync(`${cacheDir}/${CACHE_MARKER}`, "a previous run's cache\n");
  Journal.create(cacheDir, { capacity, policy: "fifo" }, entries).close();
  return { entries, bytes };
}

Deno.test("50,000 entries: the port answers before their adoption finishes (--keep-cache), or their removal (default)", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-restart-50k-" });
  const origin = `${root}/files`;
  const cacheDir = `${root}/cache`;
  const capacity = 256 * MiB;
  const args = (
    dir: string,
  ) => ["--dir", origin, "--cache-dir", dir, "--cache-size", String(capacity), "--workers", "1"];
  try {
    const COUNT = 50_000;
    const { entries, bytes } = fabricateCache(origin, cacheDir, COUNT, capacity);

    // The same origin over an empty cache directory: what a start costs anyway.
    const baseline: number[] = [];
    for (let i = 0; i < 2; i++) {
      const port = freePort();
      const spawned = performance.now();
      const server = await launch(args(`${root}/empty-${i}`), port, false);
      try {
        baseline.push((await probe(port, spawned)).pingMs);
      } finally {
        await server.stop();
      }
    }
    const emptyMs = Math.min(...baseline);

    await t.step(
      "(b) --keep-cache: adopting > 0 at the first answer; then hits without origin reads",
      async () => {
        const port = freePort();
        const spawned = performance.now();
        const server = await launch([...args(cacheDir), "--keep-cache"], port, false);
        try {
          const first = await probe(port, spawned);
          console.log(
            `spawn to first PING: empty cache ${emptyMs.toFixed(0)} ms, ` +
              `${COUNT} entries kept ${first.pingMs.toFixed(0)} ms ` +
              `(${first.cache.housekeeping}, adopting ${first.cache.adopting} at the first STATS)`,
          );
          // The port answered before the adoption finished (the time is a report, not a bound:
          // the machines are shared and noisy): the journal still being read, or its entries
          // still being adopted.
          assert.ok(
            first.cache.housekeeping === "loading" || first.cache.adopting > 0,
            `adoption still running: ${JSON.stringify(first.cache)}`,
          );
          const client = await connect({ port });
          try {
            // The last entry in the journal's order is adopted on request, not read from the origin.
            const last = entries[entries.length - 1];
            const origin0 = await bytesFromOrigin(client);
            const early = await client.get(last.path);
            console.log(`a kept entry asked for before its adoption: cache=${early.cache}`);
            assert.equal(sha256(early.bytes!), last.sha256);
            assert.equal(await bytesFromOrigin(client), origin0, "adopted on request, not read");
            const start = performance.now();
            await waitUntil(
              async () => {
                const cache = await cacheStats(client);
                return cache.housekeeping === "done" && cache.adopting === 0;
              },
              90_000,
              () => `the adoption of ${COUNT} entries; stderr: ${server.stderr()}`,
            );
            const cache = await cacheStats(client);
            console.log(
              `adoption of ${COUNT} entries finished ${
                (performance.now() - start).toFixed(0)
              } ms ` +
                "after the first answer",
            );
            assert.equal(cache.adopted, COUNT);
            assert.equal(cache.entries, COUNT);
            assert.equal(cache.used, bytes);
            const pick = seededRandom(50);
            const origin1 = await bytesFromOrigin(client);
            for (let i = 0; i < 300; i++) {
              const entry = entries[Math.floor(pick() * COUNT)];
              const result = await client.get(entry.path);
              assert.equal(result.cache, "hit", entry.path);
              assert.equal(sha256(result.bytes!), entry.sha256, entry.path);
            }
            assert.equal(await bytesFromOrigin(client), origin1, "hits read no origin bytes");
            assert.equal(cacheFileNames(cacheDir).length, COUNT);
          } finally {
            client.close();
          }
        } finally {
          assert.equal((await server.stop()).code, 0, server.stderr());
        }
      },
    );

    await t.step(
      "(c) default mode: the port answers at once, the files go in the background",
      async () => {
        assert.equal(cacheFileNames(cacheDir).length, COUNT, "the kept run left its entries");
        const port = freePort();
        const spawned = performance.now();
        const server = await launch(args(cacheDir), port, false);
        try {
          const first = await probe(port, spawned);
          console.log(
            `spawn to first PING, ${COUNT} entries to remove: ${first.pingMs.toFixed(0)} ms ` +
              `(housekeepingBytes ${first.cache.housekeepingBytes} at the first STATS)`,
          );
          assert.equal(first.cache.adopting, 0);
          assert.equal(first.cache.entries, 0);
          const client = await connect({ port });
          try {
            // The port answered before the housekeeping was done.
            assert.notEqual(first.cache.housekeeping, "done", "housekeeping after the port");
            let counted = first.cache.housekeepingBytes;
            const start = performance.now();
            await waitUntil(
              async () => {
                const cache = await cacheStats(client);
                counted = Math.max(counted, cache.housekeepingBytes);
                // The directory is read once STATS says done (reading 50,000 names every
                // few ms would slow the removal it waits for).
                return cache.housekeeping === "done" && cacheFileNames(cacheDir).length === 0;
              },
              90_000,
              () => `the removal of ${COUNT} files; stderr: ${server.stderr()}`,
            );
            console.log(
              `removal of ${COUNT} files finished ${(performance.now() - start).toFixed(0)} ms ` +
                `after the first answer; housekeepingBytes peaked at ${counted}`,
            );
            assert.ok(counted <= bytes, `old bytes counted while they waited: ${counted}`);
            assert.deepEqual(
              [...Deno.readDirSync(cacheDir)].map((e) => e.name).sort(),
              [CACHE_MARKER, JOURNAL_FILE].sort(),
            );
            await waitUntil(
              async () => (await cacheStats(client)).housekeepingBytes === 0,
              5_000,
              () => "housekeepingBytes back to 0",
            );
            const entry = entries[123];
            const result = await client.get(entry.path);
            assert.equal(result.cache, "miss", "nothing was kept");
            assert.equal(sha256(result.bytes!), entry.sha256);
          } finally {
            client.close();
          }
        } finally {
          assert.equal((await server.stop()).code, 0, server.stderr());
        }
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// Until the background housekeeping has counted the previous run's files (a
// readDir and an lstat of each), every fill is refused: STATS must say so
// from the first answer on, not show the figures of a finished housekeeping.
Deno.test({
  name: "STATS shows the housekeeping of a previous run's files from the first answer on",
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "tcpcache-restart-count-" });
    try {
      const cacheDir = `${root}/cache`;
      Deno.mkdirSync(cacheDir);
      Deno.mkdirSync(`${root}/files`);
      const content = new Uint8Array(100);
      for (let i = 0; i < 30_000; i++) Deno.writeFileSync(`${cacheDir}/old.${i}`, content);
      Deno.writeTextFileSync(`${cacheDir}/${CACHE_MARKER}`, "a previous run's cache\n");
      const port = freePort();
      const spawned = performance.now();
      const server = await launch(["--dir", `${root}/files`, "--cache-dir", cacheDir], port, false);
      try {
        const first = await probe(port, spawned);
        const waiting = cacheFileNames(cacheDir).length;
        assert.ok(
          first.cache.housekeeping !== "done" || waiting === 0,
          `housekeeping ${first.cache.housekeeping} with ${waiting} old files waiting`,
        );
        assert.ok(
          first.cache.housekeepingBytes > 0 || first.cache.housekeeping === "counting" ||
            waiting === 0,
          `housekeepingBytes ${first.cache.housekeepingBytes} past the count, ${waiting} waiting`,
        );
      } finally {
        await server.stop();
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
