import assert from "node:assert/strict";
import { FifoPolicy } from "../../policies/fifo.ts";
import { POLICIES } from "../../policies/registry.ts";
import { type Admission, defaultSizes, type ReplayedPolicy, simulate } from "../../sim/sim.ts";
import { readTxt, zipfTrace } from "../../sim/trace.ts";

Deno.test("simulate: FIFO on a hand-made trace, counting every request", () => {
  // Capacity 3 objects of size 1: a b c a d a b -> misses a b c (hit a) d evicts a, a misses
  // (evicts b), b misses (evicts c).
  const trace = readTxt("a\nb\nc\na\nd\na\nb\n");
  const result = simulate(trace, "fifo", 3);
  assert.deepEqual(result, {
    policy: "fifo",
    capacity: 3,
    requests: 7,
    requestedBytes: 7,
    misses: 6,
    missedBytes: 6,
  });
});

Deno.test("simulate: an object larger than the cache is a miss and is never admitted", () => {
  const trace = readTxt("a 5\nbig 11\na 5\nbig 11\n");
  const result = simulate(trace, "fifo", 10);
  assert.equal(result.misses, 3, "a, big, big: the second a is a hit");
  assert.equal(result.missedBytes, 5 + 11 + 11);
});

Deno.test("simulate: Belady's optimum never misses more than any policy", () => {
  for (const seed of [1, 2, 3]) {
    const trace = zipfTrace({
      alpha: 0.8,
      objects: 500,
      requests: 20_000,
      seed,
      sizes: { kind: "uniform", min: 1, max: 100 },
    });
    for (const capacity of [500, 2_000, 8_000]) {
      const optimum = simulate(trace, "belady", capacity).misses;
      for (const policy of Object.keys(POLICIES)) {
        const misses = simulate(trace, policy, capacity).misses;
        assert.ok(optimum <= misses, `belady ${optimum} > ${policy} ${misses} (seed ${seed})`);
      }
    }
  }
});

Deno.test("simulate: a policy's own admission decides every miss, evictOnly leaving the room empty", () => {
  const asked: string[] = [];
  class Chooser extends FifoPolicy implements ReplayedPolicy {
    admission(key: string, size: number): Admission {
      asked.push(`${key} ${size}`);
      if (size > 10) return "reject";
      return key === "x" ? "evictOnly" : key === "y" ? "reject" : "insert";
    }
  }
  // a and b fill the cache; x evicts a and is not kept; y changes nothing.
  const trace = readTxt("a 5\nb 5\nx 5\ny 5\nb 5\nhuge 11\na 5\nb 5\nx 5\n");
  const result = simulate(trace, () => new Chooser(), 10);
  assert.deepEqual(asked, ["a 5", "b 5", "x 5", "y 5", "huge 11", "a 5", "x 5"]);
  assert.equal(result.misses, 7, "b hits twice: x made room by evicting a, y made none");
});

Deno.test("defaultSizes: six sizes, doubling up to half the distinct bytes", () => {
  const trace = readTxt("a 1000\nb 2000\na 1000\nc 3400\n");
  assert.deepEqual(defaultSizes(trace), [100, 200, 400, 800, 1600, 3200]);
  assert.deepEqual(defaultSizes(readTxt("a 1\n")), [1, 1, 1, 1, 1, 1]);
});
