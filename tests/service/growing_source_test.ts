/**
 * Reading a fill while it is copied in, driven by hand: a real file as the
 * growing cache file, a progress record moved by the test, and an origin
 * in memory for the part past a cache file that stopped growing.
 */

import assert from "node:assert/strict";
import type { GrowingFill } from "../../cache.ts";
import { OriginChangedError, type OriginFile } from "../../origin/origin.ts";
import { GrowingSource } from "../../service/growing_source.ts";
import { FillProgress } from "../../util/fill_progress.ts";
import { seededBytes, sha256 } from "../helpers.ts";

const BYTES = seededBytes(100_000, 51);
const DIGEST = sha256(BYTES);

/** A growing fill of BYTES in a temporary file, and what the test drives it with. */
async function growing() {
  const dir = await Deno.makeTempDir();
  const progress = new FillProgress();
  const fill: GrowingFill = {
    path: "f.bin",
    size: BYTES.length,
    mtime: 5,
    validator: "v1",
    file: "1",
    progress: progress.buffer,
  };
  const writer = await Deno.open(`${dir}/1.part`, { write: true, createNew: true });
  const reader = await Deno.open(`${dir}/1.part`, { read: true });
  let written = 0;
  return {
    fill,
    progress,
    reader,
    /** Writes the next `n` bytes and announces them. */
    async write(n: number) {
      await writer.write(BYTES.subarray(written, written + n));
      written += n;
      progress.advance(n);
    },
    async cleanup() {
      writer.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** An origin file of BYTES from `offset`, under `validator`. */
function originFrom(offset: number, validator = "v1"): OriginFile {
  let position = offset;
  return {
    stat: { size: BYTES.length, mtime: 5, validator },
    read: (into) => {
      if (position >= BYTES.length) return Promise.resolve(null);
      const n = Math.min(into.length, BYTES.length - position);
      into.set(BYTES.subarray(position, position + n));
      position += n;
      return Promise.resolve(n);
    },
    close: () => {},
    restat: () => Promise.resolve({ size: BYTES.length, mtime: 5, validator }),
  };
}

/** Reads `source` to its end in chunks of `chunk`. */
async function readAll(source: GrowingSource, chunk = 30_000): Promise<Uint8Array> {
  const out = new Uint8Array(BYTES.length);
  let filled = 0;
  while (true) {
    const n = await source.read(out.subarray(filled, Math.min(out.length, filled + chunk)));
    if (n === null || filled === out.length) return out.subarray(0, filled);
    filled += n;
  }
}

Deno.test("GrowingSource: reads what is written, waits for more, and hands on the last bytes only once the fill is done", async () => {
  const g = await growing();
  const digests: string[] = [];
  const source = new GrowingSource(g.fill, g.reader, {
    openOrigin: () => Promise.reject(new Error("not spilled")),
    countOrigin: () => {},
    onDigest: (digest) => digests.push(digest),
  });
  try {
    await g.write(40_000);
    const first = new Uint8Array(64 * 1024);
    assert.equal(await source.read(first), 40_000, "no further than the bytes written");
    const next = source.read(new Uint8Array(64 * 1024));
    await g.write(60_000); // every byte written, the fill not yet done
    let settled = false;
    const last = next.then((n) => (settled = true, n));
    await new Promise((resolve) => setTimeout(resolve, 0));
    await Promise.resolve();
    assert.ok(!settled, "the read that reaches the end waits for the fill to be done");
    g.progress.finish(DIGEST);
    assert.equal(await last, 60_000);
    assert.deepEqual(digests, [DIGEST]);
    assert.equal(await source.read(new Uint8Array(10)), null);
  } finally {
    source.close();
    await g.cleanup();
  }
});

Deno.test("GrowingSource: past a cache file that stopped growing, the rest comes from the origin, checked", async () => {
  const g = await growing();
  const opened: number[] = [];
  let fromOrigin = 0;
  const digests: string[] = [];
  const source = new GrowingSource(g.fill, g.reader, {
    openOrigin: (offset) => (opened.push(offset), Promise.resolve(originFrom(offset))),
    countOrigin: (n) => fromOrigin += n,
    onDigest: (digest) => digests.push(digest),
  });
  try {
    await g.write(25_000);
    g.progress.spill();
    const reading = readAll(source);
    g.progress.finish(DIGEST); // the fill read on to the end for the digest
    assert.equal(sha256(await reading), DIGEST);
    assert.deepEqual(opened, [25_000], "the origin opened where the file stopped");
    assert.equal(fromOrigin, BYTES.length - 25_000);
    assert.deepEqual(digests, [DIGEST]);
  } finally {
    source.close();
    await g.cleanup();
  }
});

Deno.test("GrowingSource: an origin of another version past the spill, or a failed fill, fails the read", async () => {
  const g = await growing();
  const changed = new GrowingSource(g.fill, g.reader, {
    openOrigin: (offset) => Promise.resolve(originFrom(offset, "v2")),
    countOrigin: () => {},
    onDigest: () => assert.fail("no digest for a failed read"),
  });
  try {
    await g.write(10_000);
    g.progress.spill();
    await assert.rejects(readAll(changed), OriginChangedError);
  } finally {
    changed.close();
    await g.cleanup();
  }
  const h = await growing();
  const failing = new GrowingSource(h.fill, h.reader, {
    openOrigin: () => Promise.reject(new Error("not spilled")),
    countOrigin: () => {},
    onDigest: () => assert.fail("no digest for a failed fill"),
  });
  try {
    await h.write(10_000);
    const reading = readAll(failing);
    h.progress.fail();
    await assert.rejects(reading, /the origin failed while f\.bin was copied in/);
  } finally {
    failing.close();
    await h.cleanup();
  }
});
