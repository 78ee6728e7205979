import assert from "node:assert/strict";
import { POLICIES } from "../../policies/registry.ts";
import { simMain, simulate, simulatorPolicies } from "../../sim/sim.ts";
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

Deno.test("the sim command line: JSON results and an SVG plot for every policy", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const svg = `${dir}/plot.svg`;
    const lines: string[] = [];
    const log = console.log;
    console.log = (line: string) => lines.push(line);
    let status: number;
    try {
      status = await simMain([
        "--zipf",
        "0.9",
        "--objects",
        "300",
        "--requests",
        "5000",
        "--sizes",
        "10KiB,40KiB",
        "--size-dist",
        "fixed:1KiB",
        "--json",
        "--svg",
        svg,
      ]);
    } finally {
      console.log = log;
    }
    assert.equal(status, 0);
    const output = JSON.parse(lines.join("\n"));
    const policies = simulatorPolicies();
    assert.equal(output.results.length, policies.length * 2);
    for (const result of output.results) {
      assert.equal(result.requests, 5000);
      assert.ok(result.misses > 0 && result.misses < 5000);
      assert.deepEqual(
        result,
        simulate(
          zipfTrace({
            alpha: 0.9,
            objects: 300,
            requests: 5000,
            seed: 1,
            sizes: { kind: "fixed", size: 1024 },
          }),
          result.policy,
          result.capacity,
        ),
      );
    }
    const drawn = await Deno.readTextFile(svg);
    assert.match(drawn, /^<svg /);
    // Two panels, one line per policy in each.
    assert.equal(drawn.match(/<polyline /g)?.length, policies.length * 2);
    for (const policy of policies) assert.match(drawn, new RegExp(`>${policy}</text>`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the sim command line refuses bad arguments with status 2", async () => {
  const error = console.error;
  console.error = () => {};
  try {
    assert.equal(await simMain([]), 2);
    assert.equal(await simMain(["--zipf", "1", "--policy", "nope"]), 2);
    assert.equal(await simMain(["--zipf", "1", "--size-dist", "weird:1"]), 2);
  } finally {
    console.error = error;
  }
});
