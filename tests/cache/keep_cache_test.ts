/**
 * The cache's journal and `keep`: what a restart adopts, what it removes,
 * and how it treats a damaged journal. In-process, on the cache alone; the
 * kill -9 runs against a real server are in tests/server/restart_test.ts.
 */
import assert from "node:assert/strict";
import { type CacheEntry, FileCache, JOURNAL_FILE } from "../../cache.ts";
import { cacheFileNames, memorySource, seededBytes, sha256 } from "../helpers.ts";

const KiB = 1024;

/** Opens a cache in a new directory, fills it with `count` files of 1 KiB, and leaves it without closing (as a kill -9 would). */
async function filledCache(
  count: number,
  options: { capacity?: number; policy?: "fifo" | "lru" } = {},
): Promise<{ dir: string; entries: CacheEntry[]; bytes: Map<string, Uint8Array> }> {
  const dir = `${await Deno.makeTempDir({ prefix: "tcpcache-keep-test-" })}/cache`;
  const cache = await FileCache.open({
    dir,
    capacity: options.capacity ?? 64 * KiB,
    policy: options.policy,
  });
  const bytes = new Map<string, Uint8Array>();
  for (let i = 0; i < count; i++) {
    const content = seededBytes(KiB, i + 1);
    bytes.set(`f${i}`, content);
    await cache.fill(`f${i}`, memorySource(content, { version: `v${i}` }));
  }
  return { dir, entries: cache.entries(), bytes };
}

/** Reopens `dir` with keep, waits for the housekeeping, and returns the cache and what it said. */
async function reopen(
  dir: string,
  options: { capacity?: number; policy?: "fifo" | "lru"; keep?: boolean } = {},
): Promise<{ cache: FileCache; warnings: string[] }> {
  const warnings: string[] = [];
  const cache = await FileCache.open({
    dir,
    capacity: options.capacity ?? 64 * KiB,
    policy: options.policy,
    keep: options.keep ?? true,
    onWarning: (line) => warnings.push(line),
  });
  await cache.housekept;
  return { cache, warnings };
}

async function cleanUp(dir: string): Promise<void> {
  await Deno.remove(`${dir}/..`, { recursive: true });
}

Deno.test("keep: a cache left without closing (kill -9) is adopted whole, in its order, bytes checked", async () => {
  const { dir, entries, bytes } = await filledCache(20);
  try {
    // Leftovers of a fill in flight at the kill, and a file nobody recorded.
    Deno.writeFileSync(`${dir}/zz.99.part`, seededBytes(100));
    Deno.writeFileSync(`${dir}/zz.98`, seededBytes(100));
    const { cache, warnings } = await reopen(dir);
    assert.deepEqual(warnings, []);
    assert.deepEqual(cache.entries().map((e) => e.path), entries.map((e) => e.path));
    assert.deepEqual(
      cacheFileNames(dir),
      entries.map((e) => e.file).sort(),
      "unrecorded files removed",
    );
    const figures = await cache.figures();
    assert.equal(figures.adopted, 20);
    assert.equal(figures.adopting, 0);
    assert.equal(figures.housekeepingBytes, 0);
    assert.equal(cache.used, 20 * KiB);
    for (const entry of cache.entries()) {
      assert.equal(entry.sha256, sha256(bytes.get(entry.path)!));
      assert.equal(sha256(Deno.readFileSync(`${dir}/${entry.file}`)), entry.sha256);
    }
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a request for a kept entry not yet adopted adopts it without reading the origin; another version replaces it", async () => {
  const { dir, bytes } = await filledCache(3);
  try {
    const cache = await FileCache.open({ dir, capacity: 64 * KiB, keep: true });
    const same = memorySource(bytes.get("f1")!, { version: "v1" });
    const adopted = await cache.fill("f1", same);
    assert.equal(same.reads, 0, "adopted, not read again");
    assert.equal(adopted?.sha256, sha256(bytes.get("f1")!));
    // Once the old files are counted (until then no room is promised, and a fill is a bypass).
    await cache.housekept;
    const changed = memorySource(seededBytes(KiB, 77), { version: "v2-new" });
    const refilled = await cache.fill("f2", changed);
    assert.equal(changed.reads, 1, "another version at the origin: filled anew");
    assert.equal(refilled?.sha256, sha256(seededBytes(KiB, 77)));
    assert.equal(cache.lookup("f2")?.validator, "v2-new");
    assert.equal(cache.count, 3);
    assert.equal(cacheFileNames(dir).length, 3, "the old version's file is gone");
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a file whose bytes changed behind the journal's back is removed, never served", async () => {
  const { dir, entries } = await filledCache(4);
  try {
    const victim = entries[2];
    const tampered = Deno.readFileSync(`${dir}/${victim.file}`);
    tampered[10] ^= 0xff; // same size, other bytes: only the sha256 can tell
    Deno.writeFileSync(`${dir}/${victim.file}`, tampered);
    const { cache } = await reopen(dir);
    assert.equal(cache.lookup(victim.path), undefined);
    assert.equal(cache.count, 3);
    assert.ok(!cacheFileNames(dir).includes(victim.file));
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a torn last record is skipped and said; the records before it are adopted", async () => {
  const { dir, entries } = await filledCache(5);
  try {
    const journal = Deno.readFileSync(`${dir}/${JOURNAL_FILE}`);
    Deno.writeFileSync(`${dir}/${JOURNAL_FILE}`, journal.subarray(0, journal.length - 20));
    const { cache, warnings } = await reopen(dir);
    assert.equal(cache.count, 4);
    assert.equal(cache.lookup(entries[4].path), undefined, "its record was torn: its file goes");
    assert.deepEqual(cacheFileNames(dir), entries.slice(0, 4).map((e) => e.file).sort());
    assert.match(warnings.join("\n"), /1 damaged records skipped/);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a corrupted record in the middle fails its checksum; only its entry is lost", async () => {
  const { dir, entries } = await filledCache(5);
  try {
    const text = Deno.readTextFileSync(`${dir}/${JOURNAL_FILE}`);
    // Change one character of the third entry's path: still JSON, wrong checksum.
    const corrupted = text.replace(`"path":"${entries[2].path}"`, `"path":"${entries[2].path}x"`);
    assert.notEqual(corrupted, text);
    Deno.writeTextFileSync(`${dir}/${JOURNAL_FILE}`, corrupted);
    const { cache, warnings } = await reopen(dir);
    assert.equal(cache.count, 4);
    assert.equal(cache.lookup(entries[2].path), undefined);
    assert.equal(
      cache.lookup(`${entries[2].path}x`),
      undefined,
      "a corrupted record is never trusted",
    );
    assert.match(warnings.join("\n"), /1 damaged records skipped/);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a journal without a valid header (or another version) is not trusted: nothing kept, everything removed", async () => {
  const { dir } = await filledCache(5);
  try {
    const lines = Deno.readTextFileSync(`${dir}/${JOURNAL_FILE}`).split("\n");
    Deno.writeTextFileSync(`${dir}/${JOURNAL_FILE}`, lines.slice(1).join("\n"));
    const { cache, warnings } = await reopen(dir);
    assert.equal(cache.count, 0);
    assert.deepEqual(cacheFileNames(dir), []);
    assert.match(warnings.join("\n"), /journal has no header: nothing kept/);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a journal from a larger capacity keeps what fits, dropping its next victims first; another policy keeps the order", async () => {
  const { dir, entries } = await filledCache(20, { capacity: 64 * KiB });
  try {
    const { cache, warnings } = await reopen(dir, { capacity: 8 * KiB, policy: "lru" });
    assert.match(
      warnings.join("\n"),
      /written for capacity 65536 with fifo, kept under 8192 with lru/,
    );
    assert.deepEqual(cache.entries().map((e) => e.path), entries.slice(12).map((e) => e.path));
    assert.equal(cache.used, 8 * KiB);
    assert.equal(cacheFileNames(dir).length, 8);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: close() rewrites the journal in eviction order, so LRU's order survives a clean restart", async () => {
  const dir = `${await Deno.makeTempDir({ prefix: "tcpcache-keep-test-" })}/cache`;
  try {
    const cache = await FileCache.open({ dir, capacity: 64 * KiB, policy: "lru" });
    for (const name of ["a", "b", "c"]) {
      await cache.fill(name, memorySource(seededBytes(KiB), { version: name }));
    }
    cache.touch("a"); // now b, c, a
    await cache.close();
    const { cache: again } = await reopen(dir, { policy: "lru" });
    assert.deepEqual(again.entries().map((e) => e.path), ["b", "c", "a"]);
    await again.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("without keep: the old files are removed in the background, counted against the capacity until then", async () => {
  const { dir } = await filledCache(30);
  try {
    const cache = await FileCache.open({ dir, capacity: 64 * KiB });
    const early = await cache.fill("new", memorySource(seededBytes(KiB)));
    assert.equal(early, undefined, "no room is promised before the old files are counted");
    await cache.housekept;
    assert.deepEqual(cacheFileNames(dir), []);
    assert.equal((await cache.figures()).housekeepingBytes, 0);
    assert.ok(await cache.fill("new", memorySource(seededBytes(KiB))));
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("the journal is compacted once it describes less than half of what it holds", async () => {
  const dir = `${await Deno.makeTempDir({ prefix: "tcpcache-keep-test-" })}/cache`;
  try {
    const cache = await FileCache.open({ dir, capacity: 4 * KiB });
    for (let i = 0; i < 3000; i++) {
      await cache.fill(`p${i}`, memorySource(seededBytes(KiB, i), { version: `v${i}` }));
    }
    const lines = Deno.readTextFileSync(`${dir}/${JOURNAL_FILE}`).split("\n").length;
    assert.ok(lines < 2100, `3000 admissions and 2996 evictions, compacted: ${lines} lines`);
    const { cache: again } = await reopen(dir, { capacity: 4 * KiB });
    assert.deepEqual(again.entries().map((e) => e.path), ["p2996", "p2997", "p2998", "p2999"]);
    await again.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("purging a kept entry before it is adopted forgets it", async () => {
  const { dir } = await filledCache(3);
  try {
    const cache = await FileCache.open({ dir, capacity: 64 * KiB, keep: true });
    assert.equal(await cache.forgetKept((path) => path === "f0"), 1);
    await cache.housekept;
    assert.equal(cache.lookup("f0"), undefined);
    assert.equal(cache.count, 2);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a journal that is a FIFO or a symbolic link is not read (nothing hangs, nothing outside is written)", async () => {
  const { dir } = await filledCache(3);
  const outside = `${dir}/../outside.txt`;
  try {
    Deno.writeTextFileSync(outside, "not a journal\n");
    for (const make of ["fifo", "symlink"] as const) {
      Deno.removeSync(`${dir}/${JOURNAL_FILE}`);
      if (make === "fifo") {
        new Deno.Command("mkfifo", { args: [`${dir}/${JOURNAL_FILE}`] }).outputSync();
      } else {
        Deno.symlinkSync(outside, `${dir}/${JOURNAL_FILE}`);
      }
      const { cache, warnings } = await reopen(dir);
      assert.equal(cache.count, 0, make);
      assert.match(warnings.join("\n"), /the journal is not a regular file\): nothing kept/, make);
      assert.equal(
        Deno.lstatSync(`${dir}/${JOURNAL_FILE}`).isFile,
        true,
        "a new journal in its place",
      );
      await cache.close();
    }
    assert.equal(Deno.readTextFileSync(outside), "not a journal\n", "the link's target untouched");
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: a kept file replaced by a FIFO is removed, never opened (a request does not hang)", async () => {
  const { dir, entries, bytes } = await filledCache(3);
  try {
    Deno.removeSync(`${dir}/${entries[1].file}`);
    new Deno.Command("mkfifo", { args: [`${dir}/${entries[1].file}`] }).outputSync();
    const cache = await FileCache.open({ dir, capacity: 64 * KiB, keep: true });
    const path = entries[1].path;
    // Answered (a bypass while the old files are counted, or a fill): not stuck on the FIFO.
    const refilled = await cache.fill(path, memorySource(bytes.get(path)!, { version: "v1" }));
    if (refilled) assert.equal(refilled.sha256, sha256(bytes.get(path)!));
    await cache.housekept;
    assert.ok(!cacheFileNames(dir).includes(entries[1].file), "the FIFO is removed");
    assert.equal(cache.count, refilled ? 3 : 2);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});

Deno.test("keep: kept entries beyond a smaller capacity go before any is adopted, even at a request", async () => {
  const { dir, entries, bytes } = await filledCache(20, { capacity: 64 * KiB });
  try {
    const cache = await FileCache.open({ dir, capacity: 8 * KiB, keep: true });
    // Requests for every kept path at once, before the background gets to them.
    const filled = await Promise.all(
      entries.map((entry, i) =>
        cache.fill(entry.path, memorySource(bytes.get(entry.path)!, { version: `v${i}` }))
      ),
    );
    await cache.housekept;
    assert.ok(cache.used <= 8 * KiB, `used ${cache.used} within the capacity`);
    assert.ok(filled.filter((entry) => entry !== undefined).length >= 8);
    await cache.close();
  } finally {
    await cleanUp(dir);
  }
});
