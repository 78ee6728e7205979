import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { simMain } from "../../cli/sim_cli.ts";
import { simulate, simulatorPolicies } from "../../sim/sim.ts";
import { zipfTrace } from "../../sim/trace.ts";
import { type Outcome, runCommand } from "../cli/cli_helpers.ts";
import { LIBCACHESIM, LIBCACHESIM_CAPACITIES } from "./libcachesim_cloudphysics.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));

/**
 * Runs `deno task sim ARGS` as the task does (`deno run`, the task's
 * permissions, its script), read from deno.json, in the repository.
 */
async function runSimTask(args: string[]): Promise<Outcome> {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const [deno, ...task] = (config.tasks.sim as string).split(" ");
  assert.equal(deno, "deno");
  assert.equal(task[0], "run");
  assert.equal(task.at(-1), "cli/sim_cli.ts");
  return await runCommand(Deno.execPath(), [...task, ...args], REPO);
}

Deno.test("deno task sim --reference libcachesim prints libCacheSim's numbers on cloudPhysicsIO", async () => {
  const { code, stdout, stderr } = await runSimTask([
    "--trace",
    "../shared/data/traces/cloudPhysicsIO.oracleGeneral.bin",
    "--policy",
    "all",
    "--sizes",
    "128MiB,256MiB,384MiB,512MiB,640MiB,768MiB,896MiB,1024MiB",
    "--reference",
    "libcachesim",
    "--json",
  ]);
  assert.equal(code, 0, stderr);
  const output = JSON.parse(stdout);
  assert.equal(output.workload, "cloudPhysicsIO.oracleGeneral.bin");
  assert.equal(output.reference, "libcachesim");
  assert.equal(output.requests, 113872);
  const results: { policy: string; capacity: number; misses: number; missedBytes: number }[] =
    output.results;
  // all: the five shipped policies and Belady's optimum, each at each size.
  assert.deepEqual([...new Set(results.map((r) => r.policy))], simulatorPolicies());
  const table: Record<string, { misses: number[]; bytes: number[] }> = {};
  for (const policy of simulatorPolicies()) {
    const rows = results.filter((r) => r.policy === policy);
    assert.deepEqual(rows.map((r) => r.capacity), LIBCACHESIM_CAPACITIES);
    table[policy] = { misses: rows.map((r) => r.misses), bytes: rows.map((r) => r.missedBytes) };
  }
  assert.deepEqual(table, LIBCACHESIM);
});

Deno.test("deno task sim: --help, and an unknown --reference is a usage error", async () => {
  const help = await runSimTask(["--help"]);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^tcpcache simulator: /);
  assert.match(help.stdout, /--reference SIM/);

  const wrong = await runSimTask(["--zipf", "1", "--reference", "cachesim"]);
  assert.equal(wrong.code, 2);
  assert.equal(wrong.stdout, "");
  assert.match(wrong.stderr, /unknown reference "cachesim" \(known: libcachesim\)/);
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

Deno.test("the sim command line: usage errors name the flag, an unreadable trace is status 1", async () => {
  const errors: string[] = [];
  const error = console.error;
  console.error = (line: string) => errors.push(line);
  try {
    assert.equal(await simMain(["--zipf", "1", "--reference", "x"]), 2);
    assert.equal(await simMain(["--zipf", "1", "--objects", "0"]), 2);
    assert.equal(await simMain(["--zipf=-1"]), 2);
    assert.equal(await simMain(["--zipf", "1", "--sizes", "10XB"]), 2);
    assert.equal(await simMain(["--zipf", "1", "--bogus"]), 2);
    assert.equal(await simMain(["--trace", "t.bin", "--format", "parquet"]), 2);
    assert.equal(errors.length, 6);
    for (const line of errors) assert.match(line, /^tcpcache sim: [^]+\n\(see --help\)$/);
    assert.match(errors[1], /--objects must be a whole number from 1 to/);
    assert.match(errors[2], /--zipf must be a number >= 0, not "-1"/);
    errors.length = 0;
    const missing = await Deno.makeTempDir();
    try {
      assert.equal(await simMain(["--trace", `${missing}/none.bin`]), 1);
    } finally {
      await Deno.remove(missing, { recursive: true });
    }
    assert.equal(errors.length, 1);
    assert.match(errors[0], /^tcpcache sim: .*none\.bin/);
  } finally {
    console.error = error;
  }
});
