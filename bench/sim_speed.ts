/**
 * How fast the simulator replays a trace under each policy, as requests per
 * second and as a ratio to FIFO measured in the same run (these machines are
 * shared, so only ratios within one run compare).
 *
 * Run: deno task bench:sim [--trace FILE] [--size 256MiB] [--rounds 5]
 *      [--reference libcachesim]
 */

import { parseArgs } from "node:util";
import { isReference, referencePolicy, REFERENCES } from "../sim/reference.ts";
import { type PolicyChoice, simulate, simulatorPolicies } from "../sim/sim.ts";
import { readTrace } from "../sim/trace.ts";
import { parseSize } from "../util/units.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    trace: {
      type: "string",
      default: new URL("../../shared/data/traces/cloudPhysicsIO.oracleGeneral.bin", import.meta.url)
        .pathname,
    },
    size: { type: "string", default: "256MiB" },
    rounds: { type: "string", default: "5" },
    reference: { type: "string" },
  },
});
const reference = values.reference;
if (reference !== undefined && !isReference(reference)) {
  console.error(`unknown --reference "${reference}" (known: ${REFERENCES.join(", ")})`);
  Deno.exit(2);
}

const trace = await readTrace(values.trace, "oracleGeneral");
const capacity = parseSize(values.size);
const rounds = Number(values.rounds);
const policies = simulatorPolicies();
const replayed = new Map<string, PolicyChoice>(
  policies.map((name) => [name, reference ? referencePolicy(name, reference) : name]),
);

// Rounds interleave the policies, so a burst of load elsewhere hits them alike;
// each policy keeps its best round.
const best = new Map<string, number>();
simulate(trace, "fifo", capacity); // warm-up
for (let round = 0; round < rounds; round++) {
  for (const policy of policies) {
    const started = performance.now();
    simulate(trace, replayed.get(policy)!, capacity);
    const seconds = (performance.now() - started) / 1000;
    best.set(policy, Math.min(best.get(policy) ?? Infinity, seconds));
  }
}

const fifo = trace.keys.length / best.get("fifo")!;
console.log(
  `${trace.keys.length} requests at ${values.size}, best of ${rounds} rounds, ` +
    `${reference ? `policies as ${reference} runs them, ` : ""}Deno ${Deno.version.deno}\n`,
);
console.log("| policy | requests/s | vs FIFO |");
console.log("| --- | ---: | ---: |");
for (const policy of policies) {
  const rate = trace.keys.length / best.get(policy)!;
  console.log(
    `| ${policy} | ${Math.round(rate).toLocaleString("en-US")} | ${(rate / fifo).toFixed(2)}x |`,
  );
}
