import assert from "node:assert/strict";
import { formatBytes, parseSize } from "../../util/units.ts";

const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

function assertSizes(cases: Array<[string, number]>): void {
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, JSON.stringify(text));
}

Deno.test("parseSize: plain bytes, with or without B", () => {
  assertSizes([["0", 0], ["1", 1], ["1234", 1234], ["10B", 10], ["67108864", 67108864]]);
});

Deno.test("parseSize: K/KiB, M/MiB, G/GiB are powers of 1024", () => {
  assertSizes([
    ["1K", KiB],
    ["1KiB", KiB],
    ["3K", 3 * KiB],
    ["2M", 2 * MiB],
    ["64MiB", 64 * MiB],
    ["1G", GiB],
    ["5GiB", 5 * GiB],
  ]);
});

Deno.test("parseSize: KB, MB, GB are powers of 1000", () => {
  assertSizes([["1KB", 1000], ["64MB", 64_000_000], ["2GB", 2_000_000_000]]);
});

Deno.test("parseSize: units are case-insensitive", () => {
  assertSizes([
    ["1k", KiB],
    ["1kib", KiB],
    ["1KIB", KiB],
    ["64mib", 64 * MiB],
    ["1m", MiB],
    ["1g", GiB],
    ["1gIb", GiB],
    ["1kb", 1000],
    ["1Mb", 1_000_000],
    ["1gb", 1_000_000_000],
    ["7b", 7],
  ]);
});

Deno.test("parseSize: decimals, with fractions of a byte dropped", () => {
  assertSizes([
    ["1.5K", 1536],
    ["0.5MiB", MiB / 2],
    ["1.5KB", 1500],
    ["1.1K", 1126], // 1126.4
    ["2.9", 2],
    ["0.25G", GiB / 4],
  ]);
});

Deno.test("parseSize: decimal sizes in decimal units are exact", () => {
  // In floating point 4.1 * 1e9 is 4099999999.9999995 and 1.005 * 1000 is 1004.9999999999999.
  assertSizes([["1.1MB", 1_100_000], ["4.1GB", 4_100_000_000], ["1.005KB", 1005]]);
});

Deno.test("parseSize: surrounding and inner whitespace is allowed", () => {
  assertSizes([[" 64MiB ", 64 * MiB], ["64 MiB", 64 * MiB], ["\t10 K\n", 10 * KiB]]);
});

Deno.test("parseSize: anything else throws RangeError", () => {
  const invalid = [
    "",
    " ",
    "abc",
    "K",
    "-1",
    "+1",
    "-1K",
    "1.5.5",
    ".5K",
    "1.",
    "1X",
    "1KiBB",
    "1iB",
    "1TB",
    "1TiB",
    "1 K B",
    "1 024",
    "1e3",
    "Infinity",
    "NaN",
    "0x10",
    "1,5K",
  ];
  for (const text of invalid) {
    assert.throws(() => parseSize(text), RangeError, JSON.stringify(text));
  }
  assert.throws(() => parseSize("12 parsecs"), {
    name: "RangeError",
    message:
      'invalid size "12 parsecs": use bytes or a number with K, KiB, M, MiB, G, GiB, KB, MB or GB',
  });
});

Deno.test("parseSize: a size past the safe integers throws RangeError", () => {
  assert.equal(parseSize("8388607G"), 2 ** 53 - 2 ** 30);
  assert.throws(() => parseSize("8388608G"), {
    name: "RangeError",
    message: "size too large: 8388608G",
  });
  assert.throws(() => parseSize("99999999999999999999"), RangeError);
});

Deno.test("formatBytes: below 1 KiB in bytes", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1), "1 B");
  assert.equal(formatBytes(1023), "1023 B");
});

Deno.test("formatBytes: one decimal below 10 of a unit, whole numbers above", () => {
  assert.equal(formatBytes(KiB), "1.0 KiB");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(10 * KiB), "10 KiB");
  assert.equal(formatBytes(1000 * KiB), "1000 KiB");
  assert.equal(formatBytes(MiB), "1.0 MiB");
  assert.equal(formatBytes(64 * MiB), "64 MiB");
  assert.equal(formatBytes(5.5 * GiB), "5.5 GiB");
  assert.equal(formatBytes(1024 * GiB), "1.0 TiB");
  assert.equal(formatBytes(2048 * GiB), "2.0 TiB");
});

Deno.test("formatBytes: a value that rounds up to 1024 of a unit moves to the next unit", () => {
  assert.equal(formatBytes(MiB - 1), "1.0 MiB"); // not "1024 KiB"
  assert.equal(formatBytes(GiB - 1), "1.0 GiB"); // not "1024 MiB"
});
