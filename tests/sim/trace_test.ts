import assert from "node:assert/strict";
import { readCsv, readOracleGeneral, readTxt, zipfTrace } from "../../sim/trace.ts";

function oracleRecords(records: [number, bigint, number][]): Uint8Array {
  const bytes = new Uint8Array(records.length * 24);
  const view = new DataView(bytes.buffer);
  records.forEach(([time, id, size], i) => {
    view.setUint32(i * 24, time, true);
    view.setBigUint64(i * 24 + 4, id, true);
    view.setUint32(i * 24 + 12, size, true);
    view.setBigInt64(i * 24 + 16, -1n, true);
  });
  return bytes;
}

Deno.test("oracleGeneral: ids (64-bit included), sizes, and next-access indices", () => {
  const big = (1n << 40n) + 5n;
  const trace = readOracleGeneral(
    oracleRecords([[1, 7n, 100], [2, big, 200], [3, 7n, 100], [4, 5n, 50]]),
  );
  assert.deepEqual(trace.keys, ["7", "256:5", "7", "5"]);
  assert.deepEqual([...trace.sizes], [100, 200, 100, 50]);
  assert.deepEqual([...trace.nextAccess], [2, Infinity, Infinity, Infinity]);
  assert.throws(() => readOracleGeneral(new Uint8Array(25)), RangeError);
});

Deno.test("csv and txt traces", () => {
  const csv = readCsv("key,size\na,10\nb,20\na,10\n");
  assert.deepEqual(csv.keys, ["a", "b", "a"]);
  assert.deepEqual([...csv.sizes], [10, 20, 10]);
  assert.deepEqual([...csv.nextAccess], [2, Infinity, Infinity]);
  assert.throws(() => readCsv("a,1\nb,x\n"), /line 2/);
  const txt = readTxt("x\ny 30\n\nx\n");
  assert.deepEqual(txt.keys, ["x", "y", "x"]);
  assert.deepEqual([...txt.sizes], [1, 30, 1]);
});

Deno.test("zipf: seeded, skewed toward the first objects, sizes as asked", () => {
  const options = { alpha: 1, objects: 100, requests: 20_000, seed: 3 };
  const a = zipfTrace(options);
  const b = zipfTrace(options);
  assert.deepEqual(a.keys, b.keys, "the same seed gives the same trace");
  assert.notDeepEqual(zipfTrace({ ...options, seed: 4 }).keys, a.keys);
  const counts = new Map<string, number>();
  for (const key of a.keys) counts.set(key, (counts.get(key) ?? 0) + 1);
  // With alpha 1 over 100 objects, object 0 has weight 1/H(100) ~ 19%.
  const share = counts.get("0")! / a.keys.length;
  assert.ok(share > 0.17 && share < 0.22, `share of the first object: ${share}`);
  assert.ok(counts.get("0")! > counts.get("9")! && counts.get("9")! > (counts.get("99") ?? 0));
  assert.ok([...a.sizes].every((size) => size === 4096));
  const uniform = zipfTrace({ ...options, sizes: { kind: "uniform", min: 10, max: 20 } });
  assert.ok([...uniform.sizes].every((size) => size >= 10 && size <= 20));
  const perObject = new Map<string, number>();
  uniform.keys.forEach((key, i) => {
    assert.equal(perObject.get(key) ?? uniform.sizes[i], uniform.sizes[i], "one size per object");
    perObject.set(key, uniform.sizes[i]);
  });
});
