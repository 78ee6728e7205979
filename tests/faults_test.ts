/**
 * Faults that must lose nothing, over real sockets: origin files that change
 * while they are read, a full or vanished cache directory, clients that
 * disconnect at every stage, special files in the served directory.
 */

import assert from "node:assert/strict";
import type { FileCache } from "../cache.ts";
import { connect, ConnectionError } from "../client.ts";
import { DirectoryOrigin } from "../origin/directory.ts";
import type { Origin } from "../origin/origin.ts";
import { STREAMED_MISS_FROM } from "../service/file_service.ts";
import {
  cacheFileNames,
  eventually,
  getOnce,
  json,
  openDescriptors,
  RawConnection,
  seededBytes,
  sha256,
  type TestServer,
  withServer,
} from "./helpers.ts";

const MiB = 1024 * 1024;

/** The cache's bookkeeping agrees with its directory, byte for byte. */
async function assertCacheConsistent(cache: FileCache, dir: string): Promise<void> {
  assert.equal(cache.reserved, 0, "no reservation left behind");
  const entries = cache.entries();
  assert.equal(cache.used, entries.reduce((sum, e) => sum + e.size, 0));
  assert.ok(cache.used <= cache.capacity);
  assert.deepEqual(
    cacheFileNames(dir),
    entries.map((e) => e.file).sort(),
    "no stray or missing files",
  );
  for (const entry of entries) {
    assert.equal(sha256(await Deno.readFile(`${dir}/${entry.file}`)), entry.sha256);
  }
}

/**
 * The served directory, except that the first read of the first opened file
 * runs `mutate` on the real file: a file changing under the server's feet.
 */
function mutatingOrigin(real: DirectoryOrigin, mutate: (file: string) => Promise<void>): Origin {
  let mutated = false;
  return {
    stat: (path) => real.stat(path),
    list: (path, window) => real.list(path, window),
    open: async (path, range) => {
      const opened = await real.open(path, range);
      return {
        ...opened,
        stat: opened.stat,
        read: async (buffer: Uint8Array) => {
          const n = await opened.read(buffer);
          if (!mutated) {
            mutated = true;
            await mutate(`${real.root}/${path}`);
          }
          return n;
        },
      };
    },
  };
}

const original = seededBytes(2 * MiB, 77);

const mutations: Record<string, (file: string) => Promise<void>> = {
  "truncated": (file) => Deno.truncate(file, MiB),
  "grown": async (file) => {
    await Deno.writeFile(file, seededBytes(1000, 5), { append: true });
  },
  "rewritten in place, same size": async (file) => {
    const handle = await Deno.open(file, { write: true });
    await handle.seek(MiB, Deno.SeekMode.Start);
    await handle.write(seededBytes(4096, 6));
    handle.close();
    await Deno.utime(file, 5, 5);
  },
  "deleted": (file) => Deno.remove(file),
};

for (const [name, mutate] of Object.entries(mutations)) {
  Deno.test(`an origin file ${name} during a miss: an error or consistent bytes, no corrupt entry`, async () => {
    const root = await Deno.makeTempDir();
    try {
      await Deno.writeFile(`${root}/f.bin`, original);
      const origin = mutatingOrigin(await DirectoryOrigin.open(root), mutate);
      await withServer({}, { origin }, async ({ port, server, cacheDir }) => {
        const conn = await RawConnection.open(port);
        try {
          const response = await conn.request("GET f.bin");
          if (response.ok) {
            // Only a whole, single version is acceptable.
            assert.equal(sha256(response.body), sha256(original));
          } else {
            assert.equal(response.code, 500);
            assert.match(response.message, /changed while it was read: f\.bin; try again/);
          }
          assert.ok((await conn.request("PING")).ok, "the connection stays usable");
          // An entry may only hold the one version that was served whole.
          for (const entry of server.cache.entries()) {
            assert.ok(response.ok, "nothing is admitted when the read failed");
            assert.equal(entry.sha256, sha256(original));
          }
          await assertCacheConsistent(server.cache, cacheDir);
          // Asked again, the server answers for the file as it is now.
          const now = await Deno.readFile(`${root}/f.bin`).catch(() => undefined);
          const again = await conn.request("GET f.bin");
          if (now === undefined) {
            assert.ok(!again.ok && again.code === 404, again.line);
            assert.deepEqual(server.cache.entries(), [], "a deleted file leaves the cache");
          } else {
            assert.equal(sha256(again.body), sha256(now));
          }
        } finally {
          conn.close();
        }
      });
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
}

/**
 * Runs `test` against a server whose origin holds `original` as `big.bin`,
 * twice the cache's size, so that a GET streams it uncached (a bypass), and
 * `mutate`s that file right after the stream's first read.
 */
async function withMutatedBypass(
  mutate: (file: string) => Promise<void>,
  test: (t: TestServer) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${root}/big.bin`, original);
    await Deno.writeTextFile(`${root}/ok.txt`, "ok");
    const origin = mutatingOrigin(await DirectoryOrigin.open(root), async (file) => {
      if (file.endsWith("big.bin")) await mutate(file);
    });
    await withServer({}, { origin, cacheSize: MiB }, test);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

Deno.test("an origin file truncated during a bypass: the client sees a broken transfer, never short data as whole", async () => {
  await withMutatedBypass((file) => Deno.truncate(file, 100), async ({ port, errors }) => {
    await assert.rejects(getOnce(port, "big.bin"), ConnectionError);
    assert.ok(errors.some((line) => /response cut short/.test(line)), errors.join("\n"));
    assert.equal(new TextDecoder().decode((await getOnce(port, "ok.txt")).bytes), "ok");
  });
});

Deno.test("an origin file rewritten in place during a bypass: a broken transfer, never a whole mix of versions", async () => {
  // Same size, other bytes, written over the file while it is streamed:
  // only the change time and mtime tell.
  const rewritten = seededBytes(original.length, 79);
  const rewrite = async (file: string) => {
    using handle = await Deno.open(file, { write: true });
    await handle.write(rewritten);
  };
  await withMutatedBypass(rewrite, async ({ port, errors }) => {
    await assert.rejects(getOnce(port, "big.bin"), ConnectionError);
    assert.ok(errors.some((line) => /changed while it was read/.test(line)), errors.join("\n"));
  });
});

Deno.test("an origin file replaced by a rename during a bypass: the old version, whole", async () => {
  // The open file keeps its bytes; only its change time moves (a link goes).
  const replace = async (file: string) => {
    await Deno.writeFile(`${file}.new`, seededBytes(original.length, 80));
    await Deno.rename(`${file}.new`, file);
  };
  await withMutatedBypass(replace, async ({ port }) => {
    const result = await getOnce(port, "big.bin");
    assert.equal(result.cache, "bypass");
    assert.equal(sha256(result.bytes!), sha256(original));
  });
});

Deno.test("an origin file that changes between its stat and its open: 500, never a mismatched header", async () => {
  const root = await Deno.makeTempDir();
  try {
    const grown = seededBytes(3 * MiB, 78);
    await Deno.writeFile(`${root}/big.bin`, original);
    const real = await DirectoryOrigin.open(root);
    // The stat sees the 2 MiB version; the open finds it rewritten at 3 MiB.
    const origin: Origin = {
      stat: (path) => real.stat(path),
      list: (path, window) => real.list(path, window),
      open: async (path, range) => {
        await Deno.writeFile(`${root}/${path}`, grown);
        return await real.open(path, range);
      },
    };
    await withServer({}, { origin, cacheSize: MiB, httpPort: 0 }, async ({ server, port }) => {
      const conn = await RawConnection.open(port);
      try {
        for (const line of ["GET big.bin", "GET big.bin 10 100"]) {
          await Deno.writeFile(`${root}/big.bin`, original);
          const answer = await conn.request(line);
          assert.equal(answer.code, 500, `${line}: ${answer.line}`);
          assert.match(answer.message, /changed while it was read: big\.bin; try again/);
        }
      } finally {
        conn.close();
      }
      await Deno.writeFile(`${root}/big.bin`, original);
      const response = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/big.bin`);
      assert.equal(response.status, 500);
      assert.match(await response.text(), /changed while it was read/);
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Mounts a tmpfs of `size`, or says why it cannot (not root, no mount). */
function tryMountTmpfs(dir: string, size: string): string | undefined {
  try {
    const result = new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir],
      stderr: "piped",
    }).outputSync();
    if (result.success) return undefined;
    return new TextDecoder().decode(result.stderr).trim() || "mount failed";
  } catch (error) {
    return (error as Error).message;
  }
}

Deno.test("a disk that fills before the cache: the cache shrinks to it, keeps evicting and admitting, says so, and grows back", async () => {
  const mountPoint = await Deno.makeTempDir();
  const whyNot = tryMountTmpfs(mountPoint, "4m");
  if (whyNot) {
    console.log(`skipped: cannot mount a small tmpfs to fill (${whyNot})`);
    await Deno.remove(mountPoint);
    return;
  }
  const cacheDir = `${mountPoint}/cache`;
  const files = Array.from({ length: 24 }, (_, i) => seededBytes(512 * 1024, 100 + i));
  try {
    const root = await Deno.makeTempDir();
    for (const [i, bytes] of files.entries()) await Deno.writeFile(`${root}/f${i}.bin`, bytes);
    const { startServer } = await import("../server/start_server.ts");
    const errors: string[] = [];
    const server = await startServer({
      dir: root,
      cacheDir,
      port: 0,
      httpPort: 0,
      cacheSize: 64 * MiB, // sixteen times what the 4 MiB disk holds
      memoryBudget: 0,
      onError: (line) => errors.push(line),
    });
    try {
      const client = await connect({ port: server.addr.port });
      const outcomes: string[] = [];
      try {
        // Twice over 12 MiB of files: the disk fills on the first pass.
        for (let pass = 0; pass < 2; pass++) {
          for (const [i, bytes] of files.entries()) {
            const result = await client.get(`f${i}.bin`);
            assert.equal(sha256(result.bytes!), sha256(bytes));
            outcomes.push(result.cache!);
          }
        }
      } finally {
        client.close();
      }
      const stats = await server.stats();
      assert.ok(stats.cache.writeFailures >= 1, "the failed write is counted");
      assert.equal(stats.cache.degraded, "disk full");
      assert.ok(stats.cache.effectiveCapacity < 4 * MiB, `${stats.cache.effectiveCapacity}`);
      assert.ok(stats.evictions > 0, "the cache evicts to make room instead of freezing");
      const lastPass = outcomes.slice(files.length);
      assert.ok(
        lastPass.filter((outcome) => outcome === "miss").length >= files.length / 2,
        `the cache keeps admitting after the disk filled: ${lastPass.join(" ")}`,
      );
      assert.ok(server.cache.used <= stats.cache.effectiveCapacity);
      const metrics = await (await fetch(`http://127.0.0.1:${server.httpAddr!.port}/-/metrics`))
        .text();
      assert.match(metrics, /^tcpcache_cache_write_failures_total [1-9]/m);
      assert.match(metrics, /^tcpcache_cache_effective_capacity_bytes [0-9]+$/m);
      assert.ok(
        errors.some((line) => /disk full; the cache holds at most/.test(line)),
        errors.join("\n"),
      );
      assert.ok(errors.length <= 3, `a bounded number of lines: ${errors.join("\n")}`);
      await assertCacheConsistent(server.cache, cacheDir);
      // Space returns: within one recheck the whole capacity is back.
      new Deno.Command("mount", { args: ["-o", "remount,size=128m", mountPoint] }).outputSync();
      const deadline = Date.now() + 15_000;
      while ((await server.stats()).cache.degraded !== undefined && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const after = await server.stats();
      assert.equal(after.cache.degraded, undefined);
      assert.equal(after.cache.effectiveCapacity, 64 * MiB);
      assert.ok(errors.some((line) => /has room again/.test(line)));
    } finally {
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  } finally {
    new Deno.Command("umount", { args: [mountPoint] }).outputSync();
    await Deno.remove(mountPoint, { recursive: true });
  }
});

Deno.test("a full cache disk during a streamed miss: the rest comes from the origin, verified; nothing admitted, nothing partial stays", async () => {
  const mountPoint = await Deno.makeTempDir();
  const whyNot = tryMountTmpfs(mountPoint, "1m");
  if (whyNot) {
    console.log(`skipped: cannot mount a small tmpfs to fill (${whyNot})`);
    await Deno.remove(mountPoint);
    return;
  }
  const cacheDir = `${mountPoint}/cache`;
  // Streamed (past STREAMED_MISS_FROM), and far more than the 1 MiB disk holds.
  const big = seededBytes(STREAMED_MISS_FROM + MiB, 12);
  try {
    const root = await Deno.makeTempDir();
    await Deno.writeFile(`${root}/big.bin`, big);
    const { startServer } = await import("../server/start_server.ts");
    const errors: string[] = [];
    const server = await startServer({
      dir: root,
      cacheDir,
      port: 0,
      cacheSize: 2 * big.length,
      onError: (line) => errors.push(line),
    });
    try {
      const client = await connect({ port: server.addr.port });
      try {
        const result = await client.get("big.bin");
        // The header went out before the disk filled: a miss, streamed, whole and checked.
        assert.equal(result.cache, "miss");
        assert.ok(result.streamed && result.verified);
        assert.equal(sha256(result.bytes!), sha256(big));
        // Then the cache knows the disk holds less than the file: streamed uncached.
        const again = await client.get("big.bin");
        assert.equal(again.cache, "bypass");
        assert.equal(sha256(again.bytes!), sha256(big));
      } finally {
        client.close();
      }
      assert.equal(errors.length, 2, errors.join("\n"));
      assert.match(errors[0], /a write failed: No space left on device/);
      assert.match(errors[1], /disk full; the cache holds at most [0-9]+ of its/);
      await assertCacheConsistent(server.cache, cacheDir);
      assert.equal(server.cache.count, 0);
      // The rest of each came from the origin a second time.
      assert.ok((await server.stats()).bytesFromOrigin > 2 * big.length);
    } finally {
      await server.close();
      await Deno.remove(root, { recursive: true });
    }
  } finally {
    new Deno.Command("umount", { args: [mountPoint] }).outputSync();
    await Deno.remove(mountPoint, { recursive: true });
  }
});

Deno.test("a cache directory removed while serving: files are served uncached, logged once", async () => {
  const file = seededBytes(200_000, 10);
  await withServer({ "f.bin": file, "g.bin": file }, {}, async ({ port, cacheDir, errors }) => {
    await Deno.remove(cacheDir, { recursive: true });
    const client = await connect({ port });
    try {
      for (const name of ["f.bin", "g.bin", "f.bin"]) {
        const result = await client.get(name);
        assert.equal(result.cache, "bypass");
        assert.equal(sha256(result.bytes!), sha256(file));
      }
    } finally {
      client.close();
    }
    assert.equal(errors.length, 1, errors.join("\n"));
    await Deno.mkdir(cacheDir); // for the cleanup's sake
  });
});

/** Where a client hangs up. */
type HangUp = "mid-line" | "after-request" | "after-header" | "mid-body";

/**
 * `clients` clients that each hang up at a stage of `stages` in turn (after
 * `bodyBytes` of a body, mid-body), on the server `withServer` made of
 * `files`; then every connection ends, no reservation or descriptor stays,
 * the cache directory matches the index, and each file comes back whole
 * (and verified, with `verified`). `before(i)` runs before client `i`.
 */
async function hangUpsLeakNothing(
  files: Record<string, Uint8Array>,
  options: {
    cacheSize: number;
    clients: number;
    stages: readonly HangUp[];
    bodyBytes: number;
    verified: boolean;
    before?: (i: number, server: TestServer["server"]) => Promise<void>;
  },
): Promise<void> {
  const names = Object.keys(files);
  await withServer(files, { cacheSize: options.cacheSize }, async ({ port, server, cacheDir }) => {
    const baseline = openDescriptors();
    for (let i = 0; i < options.clients; i++) {
      const stage = options.stages[i % options.stages.length];
      const name = names[i % names.length];
      await options.before?.(i, server);
      const conn = await RawConnection.open(port);
      try {
        if (stage === "mid-line") {
          await conn.send(`GET ${name.slice(0, 3)}`);
          continue;
        }
        await conn.send(`GET ${name}\n`);
        if (stage === "after-request") continue;
        await conn.reader.readLine(1024);
        if (stage === "mid-body") await conn.reader.readBody(options.bodyBytes, () => {});
      } finally {
        conn.close();
      }
    }
    await eventually(
      async () => (await server.stats()).connections.open === 0,
      "every connection to end",
    );
    await eventually(() => server.cache.reserved === 0, "fills in flight to finish");
    await eventually(() => openDescriptors() <= baseline, `descriptors back to ${baseline}`);
    await assertCacheConsistent(server.cache, cacheDir);
    const client = await connect({ port });
    try {
      for (const [name, bytes] of Object.entries(files)) {
        const result = await client.get(name);
        if (options.verified) assert.ok(result.verified, name);
        assert.equal(sha256(result.bytes!), sha256(bytes), name);
      }
    } finally {
      client.close();
    }
  });
}

Deno.test("300 clients disconnecting at every stage leak no descriptor, task or byte of accounting", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 6; i++) files[`f${i}.bin`] = seededBytes(400_000 + i * 100_000, 20 + i);
  await hangUpsLeakNothing(files, {
    cacheSize: 2 * MiB,
    clients: 300,
    stages: ["mid-line", "after-request", "after-header", "mid-body"],
    bodyBytes: 50_000,
    verified: false,
  });
});

Deno.test("clients disconnecting from streamed misses at every stage leak no descriptor, wait or byte of accounting", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 2; i++) {
    files[`s${i}.bin`] = seededBytes(STREAMED_MISS_FROM + i * MiB, 30 + i);
  }
  await hangUpsLeakNothing(files, {
    // Room for one of them: each miss evicts the other.
    cacheSize: STREAMED_MISS_FROM + 2 * MiB,
    clients: 24,
    stages: ["after-request", "after-header", "mid-body"],
    bodyBytes: 300_000,
    verified: true,
    // A new version now and then: every stage meets fills too, not only hits.
    before: async (i, server) => {
      if (i % 4 === 0) await server.cache.remove(`s${i % 2}.bin`);
    },
  });
});

Deno.test("FIFOs and device files are never opened: 404 at once, and the server goes on", async () => {
  await withServer({ "a.txt": "alpha" }, {}, async ({ port, dir }) => {
    new Deno.Command("mkfifo", { args: [`${dir}/pipe`] }).outputSync();
    const device = new Deno.Command("mknod", { args: [`${dir}/zero`, "c", "1", "5"] }).outputSync();
    const conn = await RawConnection.open(port);
    try {
      const special = device.success ? ["pipe", "zero"] : ["pipe"];
      for (const name of special) {
        for (const command of [`GET ${name}`, `STAT ${name}`, `GET ${name} 0 10`]) {
          const response = await conn.request(command);
          assert.ok(!response.ok && response.code === 404, `${command}: ${response.line}`);
        }
      }
      assert.equal(new TextDecoder().decode((await conn.request("GET a.txt")).body), "alpha");
      const listing = json<{ entries: { name: string }[] }>(await conn.request("FILES"));
      assert.deepEqual(listing.entries.map((e) => e.name), ["a.txt"]);
    } finally {
      conn.close();
    }
  });
});
