import assert from "node:assert/strict";
import {
  formatElapsed,
  formatEta,
  formatProgress,
  formatRate,
  ProgressLine,
  type ProgressLineOptions,
} from "../../cli/progress.ts";

const KiB = 1024;
const MiB = 1024 * 1024;

Deno.test("formatProgress: bytes, percent, rate and time left after the label", () => {
  assert.equal(
    formatProgress({ label: "big.bin", done: 1.5 * MiB, total: 3 * MiB, rate: 2 * MiB }),
    "big.bin  1.5 MiB / 3.0 MiB   50%  2.0 MiB/s  ETA 1 s",
  );
  assert.equal(
    formatProgress({ label: "a.txt", done: 0, total: 10 * MiB, rate: 100 * KiB }),
    "a.txt  0 B / 10 MiB    0%  100 KiB/s  ETA 1 min 43 s",
  );
  assert.equal(
    formatProgress({ label: "a.txt", done: 10 * MiB, total: 10 * MiB, rate: 5 * MiB }),
    "a.txt  10 MiB / 10 MiB  100%  5.0 MiB/s  ETA 0 s",
  );
});

Deno.test("formatProgress: percent rounds down, so 100% means every byte", () => {
  const line = formatProgress({ label: "f", done: 999, total: 1000, rate: 1000 });
  assert.equal(line, "f  999 B / 1000 B   99%  1000 B/s  ETA 1 s");
});

Deno.test("formatProgress: an empty file is 100%", () => {
  assert.equal(formatProgress({ label: "e", done: 0, total: 0 }), "e  0 B / 0 B  100%  -- B/s");
});

Deno.test("formatProgress: before the header, no total, percent or time left", () => {
  assert.equal(formatProgress({ label: "x", done: 0 }), "x  0 B  -- B/s");
  assert.equal(formatProgress({ label: "x", done: 2 * KiB, rate: KiB }), "x  2.0 KiB  1.0 KiB/s");
});

Deno.test("formatProgress: fits the terminal, shortening the label from the left", () => {
  const snapshot = {
    label: "a/very/long/path/to/big.bin",
    done: 1.5 * MiB,
    total: 3 * MiB,
    rate: 2 * MiB,
  };
  const figures = "1.5 MiB / 3.0 MiB   50%  2.0 MiB/s  ETA 1 s";
  assert.equal(formatProgress(snapshot, 100), `${snapshot.label}  ${figures}`);
  const sixty = formatProgress(snapshot, 60);
  assert.equal(sixty, `…th/to/big.bin  ${figures}`);
  assert.equal(sixty.length, 59, "the last column stays empty");
  assert.equal(formatProgress(snapshot, 50), figures, "no room for a useful label");
  assert.equal(formatProgress(snapshot, 30), figures.slice(0, 29));
});

Deno.test("formatElapsed: milliseconds below a minute, then minutes, then hours", () => {
  assert.equal(formatElapsed(0), "0.000 s");
  assert.equal(formatElapsed(0.0123), "0.012 s");
  assert.equal(formatElapsed(59.9994), "59.999 s");
  assert.equal(formatElapsed(60), "1 min 00 s");
  assert.equal(formatElapsed(125.4), "2 min 05 s");
  assert.equal(formatElapsed(3725), "1 h 02 min");
});

Deno.test("formatEta: whole seconds, rounded up", () => {
  assert.equal(formatEta(0), "0 s");
  assert.equal(formatEta(0.2), "1 s");
  assert.equal(formatEta(59.5), "1 min 00 s");
  assert.equal(formatEta(3725), "1 h 02 min");
  assert.equal(formatEta(Infinity), "?");
});

Deno.test("formatRate: bytes per second in readable units", () => {
  assert.equal(formatRate(3 * MiB, 2), "1.5 MiB/s");
  assert.equal(formatRate(500, 1), "500 B/s");
  assert.equal(formatRate(1, 0), "977 KiB/s", "no division by zero");
});

/** A progress line on a fake clock, recording what it writes. */
function fakeLine(options: ProgressLineOptions = {}) {
  const clock = { now: 0 };
  const writes: string[] = [];
  const line = new ProgressLine((text) => writes.push(text), {
    columns: () => 80,
    now: () => clock.now,
    ...options,
  });
  return { clock, writes, line };
}

Deno.test("ProgressLine: redraws in place at most every intervalMs, then clears", () => {
  const { clock, writes, line } = fakeLine({ intervalMs: 100 });
  const id = line.start("f.bin");
  assert.deepEqual(writes, ["\rf.bin  0 B  -- B/s\x1b[K"]);
  clock.now = 50;
  line.expect(id, 4000);
  line.advance(id, 1000);
  assert.equal(writes.length, 1, "throttled");
  clock.now = 100;
  line.advance(id, 1000);
  assert.deepEqual(writes.slice(1), ["\rf.bin  2.0 KiB / 3.9 KiB   50%  20 KiB/s  ETA 1 s\x1b[K"]);
  clock.now = 150;
  line.advance(id, 2000);
  assert.equal(writes.length, 2, "throttled");
  line.finish(id);
  assert.deepEqual(writes.slice(2), ["\r\x1b[K"], "cleared when the last download ends");
});

Deno.test("ProgressLine: intervalMs 0 redraws on every chunk", () => {
  const { clock, writes, line } = fakeLine({ intervalMs: 0 });
  const id = line.start("f");
  line.expect(id, 300);
  for (let i = 0; i < 3; i++) {
    clock.now += 1000;
    line.advance(id, 100);
  }
  assert.equal(writes.length, 5);
  assert.equal(writes[4], "\rf  300 B / 300 B  100%  100 B/s  ETA 0 s\x1b[K");
});

Deno.test("ProgressLine: lines printed meanwhile go above the progress line", () => {
  const { clock, writes, line } = fakeLine({ intervalMs: 1000 });
  const a = line.start("a");
  line.expect(a, 100);
  clock.now = 10;
  line.print("saved b");
  assert.deepEqual(writes, [
    "\ra  0 B  -- B/s\x1b[K",
    "\r\x1b[K",
    "saved b\n",
    "\ra  0 B / 100 B    0%  -- B/s\x1b[K",
  ]);
  line.finish(a);
  line.print("saved a");
  assert.deepEqual(writes.slice(4), ["\r\x1b[K", "saved a\n"], "nothing to redraw after");
});

Deno.test("ProgressLine: several downloads show as one line with their sums", () => {
  const { clock, writes, line } = fakeLine({ intervalMs: 0 });
  const a = line.start("a");
  const b = line.start("b");
  line.expect(a, 1000);
  line.expect(b, 3000);
  clock.now = 1000;
  line.advance(a, 500);
  line.advance(b, 500);
  assert.equal(writes.at(-1), "\r2 files  1000 B / 3.9 KiB   25%  1000 B/s  ETA 3 s\x1b[K");
  line.finish(a);
  assert.equal(writes.at(-1), "\rb  500 B / 2.9 KiB   16%  500 B/s  ETA 5 s\x1b[K");
});

Deno.test("ProgressLine: a resumed download's first bytes count in the percent, not the rate", () => {
  const { clock, writes, line } = fakeLine({ intervalMs: 0 });
  const id = line.start("r");
  line.expect(id, 1000, 600);
  assert.equal(writes.at(-1), "\rr  600 B / 1000 B   60%  -- B/s\x1b[K");
  clock.now = 2000;
  line.advance(id, 200);
  assert.equal(writes.at(-1), "\rr  800 B / 1000 B   80%  100 B/s  ETA 2 s\x1b[K");
});

Deno.test("ProgressLine: not live (no terminal, or --quiet), only printed lines appear", () => {
  const { clock, writes, line } = fakeLine({ live: false, intervalMs: 0 });
  const id = line.start("f");
  line.expect(id, 10);
  clock.now = 5;
  line.advance(id, 10);
  line.finish(id);
  line.print("saved f");
  assert.deepEqual(writes, ["saved f\n"]);
});
