/**
 * Unit tests of how a `get` reports its files (`cli/client/report.ts`): the
 * summary's figures, the tally of a batch, and the JSON of each outcome.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Interrupted } from "../../../cli/client/exit_status.ts";
import {
  batchJson,
  describeTransfer,
  type Outcome,
  outcomeJson,
  tally,
} from "../../../cli/client/report.ts";
import type { DownloadResult } from "../../../client/download.ts";
import { ConnectionError, InterruptedDownloadError, ServerError } from "../../../client/errors.ts";

const KiB = 1024;

/** A whole download of `size` bytes into `dest`, verified, a miss. */
function result(dest: string, size: number, fields: Partial<DownloadResult> = {}): DownloadResult {
  return {
    dest,
    size,
    offset: 0,
    length: size,
    mtime: 1_700_000_000_000,
    cache: "miss",
    sha256: "ab".repeat(32),
    verified: true,
    ...fields,
  };
}

const TRANSFERS: { name: string; result: DownloadResult; seconds: number; text: string }[] = [
  {
    name: "a whole file, verified",
    result: result("a", 300 * KiB),
    seconds: 0.5,
    text: "300 KiB in 0.500 s, 600 KiB/s, miss, verified sha256",
  },
  {
    name: "resumed half way, a hit",
    result: result("a", 300 * KiB, { offset: 150 * KiB, length: 150 * KiB, cache: "hit" }),
    seconds: 1,
    text: "300 KiB in 1.000 s, 150 KiB/s, hit, resumed at 150 KiB, verified sha256",
  },
  {
    name: "no sha256 from the server",
    result: result("a", 6, { cache: "bypass", sha256: undefined, verified: false }),
    seconds: 2,
    text: "6 B in 2.000 s, 3 B/s, bypass, not verified: no sha256 from the server",
  },
  {
    name: "no cache outcome",
    result: result("a", 6, { cache: undefined as unknown as DownloadResult["cache"] }),
    seconds: 2,
    text: "6 B in 2.000 s, 3 B/s, cache unknown, verified sha256",
  },
];

Deno.test("describeTransfer: the figures of a file's summary line", async (t) => {
  for (const { name, result, seconds, text } of TRANSFERS) {
    await t.step(name, () => assert.equal(describeTransfer(result, seconds), text));
  }
});

const SAVED: Outcome = {
  job: { path: "docs/a.txt", dest: "out/a.txt" },
  result: result("out/a.txt", 6),
};
const BIG: Outcome = {
  job: { path: "big.bin", dest: "out/big.bin" },
  result: result("out/big.bin", 300 * KiB - 6),
};
const SKIPPED: Outcome = {
  job: { path: "docs/b.txt", dest: "out/b.txt" },
  skipped: { size: 6, sha256: "cd".repeat(32) },
};
const MISSING: Outcome = {
  job: { path: "docs/missing.txt", dest: "out/missing.txt" },
  error: new ServerError(404, "not found: docs/missing.txt"),
};
const BROKEN: Outcome = {
  job: { path: "c.bin", dest: "c.bin" },
  error: new InterruptedDownloadError(
    "connection closed; 10 bytes kept in c.bin.part",
    "c.bin.part",
    10,
  ),
};

const TALLIES: { name: string; outcomes: Outcome[]; seconds: number; text: string }[] = [
  {
    name: "saved, up to date and failed",
    outcomes: [SAVED, BIG, SKIPPED, MISSING],
    seconds: 0.5,
    text: "2 saved, 1 up to date, 1 failed (300 KiB in 0.500 s, 600 KiB/s)",
  },
  {
    name: "nothing skipped: no up to date",
    outcomes: [SAVED, MISSING, BROKEN],
    seconds: 0.5,
    text: "1 saved, 2 failed (6 B in 0.500 s, 12 B/s)",
  },
  {
    name: "nothing transferred",
    outcomes: [SKIPPED],
    seconds: 0.25,
    text: "0 saved, 1 up to date, 0 failed (nothing transferred, 0.250 s)",
  },
];

Deno.test("tally: a batch's or a mirror's counts and figures", async (t) => {
  for (const { name, outcomes, seconds, text } of TALLIES) {
    await t.step(name, () => assert.equal(tally(outcomes, seconds), text));
  }
});

const JSONS: { name: string; outcome: Outcome; json: Record<string, unknown> }[] = [
  {
    name: "saved: the download's fields, dest as saved",
    outcome: SAVED,
    json: {
      path: "docs/a.txt",
      status: "saved",
      saved: "out/a.txt",
      size: 6,
      offset: 0,
      length: 6,
      mtime: 1_700_000_000_000,
      cache: "miss",
      sha256: "ab".repeat(32),
      verified: true,
    },
  },
  {
    name: "skipped: size and sha256",
    outcome: SKIPPED,
    json: {
      path: "docs/b.txt",
      status: "skipped",
      saved: "out/b.txt",
      size: 6,
      sha256: "cd".repeat(32),
    },
  },
  {
    name: "a server error: its message and code",
    outcome: MISSING,
    json: {
      path: "docs/missing.txt",
      status: "failed",
      saved: "out/missing.txt",
      error: "not found: docs/missing.txt",
      code: 404,
    },
  },
  {
    name: "a broken download: what to do next, no code",
    outcome: BROKEN,
    json: {
      path: "c.bin",
      status: "failed",
      saved: "c.bin",
      error: "connection closed; 10 bytes kept in c.bin.part (get --continue finishes it)",
    },
  },
  {
    name: "a connection error: no code",
    outcome: { job: { path: "d", dest: "d" }, error: new ConnectionError("cannot connect") },
    json: { path: "d", status: "failed", saved: "d", error: "cannot connect" },
  },
  {
    name: "interrupted before it started",
    outcome: { job: { path: "e", dest: "e" }, error: new Interrupted() },
    json: { path: "e", status: "failed", saved: "e", error: "interrupted" },
  },
];

Deno.test("outcomeJson: one file's outcome as JSON", async (t) => {
  for (const { name, outcome, json } of JSONS) {
    await t.step(name, () => assert.deepEqual(outcomeJson(outcome), json));
  }
});

Deno.test("batchJson: every file in order, and the counts", () => {
  const outcomes = [SAVED, SKIPPED, MISSING, BROKEN];
  assert.deepEqual(batchJson(outcomes), {
    files: outcomes.map(outcomeJson),
    saved: 1,
    skipped: 1,
    failed: 2,
  });
});
