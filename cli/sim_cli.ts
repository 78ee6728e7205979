/**
 * The simulator's command line (`deno task sim`): reads a trace or makes a
 * synthetic one, replays it under each policy at each cache size, and
 * prints miss ratios as a table or JSON, with an optional SVG plot.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { optional, parseInteger, UsageError } from "./flags.ts";
import { lineChartSvg } from "../sim/plot.ts";
import { isReference, type Reference, referencePolicy, REFERENCES } from "../sim/reference.ts";
import { defaultSizes, type SimResult, simulateAll, simulatorPolicies } from "../sim/sim.ts";
import {
  readTrace,
  type SizeDistribution,
  type Trace,
  type TraceFormat,
  zipfTrace,
} from "../sim/trace.ts";
import { formatBytes, parseSize } from "../util/units.ts";

const FORMATS: readonly TraceFormat[] = ["oracleGeneral", "csv", "txt"];

/** Larger counts would not fit the trace's arrays. */
const MAX_COUNT = 2 ** 31 - 1;

const USAGE = `tcpcache simulator: replays a trace through the eviction policies

Usage: deno task sim (--trace FILE [--format F] | --zipf ALPHA [options]) [options]

Workload (one of):
  --trace FILE          a trace file
  --format F            ${FORMATS.join(" | ")} (default: oracleGeneral for .bin,
                        csv for .csv, else txt)
  --zipf ALPHA          a synthetic Zipf workload with this exponent
  --objects N           distinct objects (default: 10000)
  --requests M          requests (default: 100000)
  --size-dist D         fixed:SIZE | uniform:MIN-MAX | lognormal:MEDIAN,SIGMA
                        (default: fixed:4KiB)
  --seed S              the generator's seed (default: 1)

Options:
  --policy LIST         all, or a comma-separated list of ${simulatorPolicies().join(", ")}
                        (default: all; belady is the offline optimum)
  --sizes LIST          cache sizes, e.g. 64MiB,128MiB (default: 6 sizes from 1/64
                        to 1/2 of the trace's distinct bytes)
  --reference SIM       run each policy exactly as this simulator does where
                        tcpcache's defaults differ: ${REFERENCES.join(", ")}
                        (libcachesim: S3-FIFO refuses objects as large as its
                        small queue)
  --json                print the results as JSON
  --svg FILE            write a miss-ratio-versus-cache-size plot
  -h, --help            show this help

Examples:
  deno task sim --trace ../shared/data/traces/cloudPhysicsIO.oracleGeneral.bin \\
    --sizes 128MiB,256MiB,384MiB,512MiB,640MiB,768MiB,896MiB,1024MiB --svg sim.svg
  deno task sim --zipf 0.9 --size-dist lognormal:64KiB,1.5 --reference libcachesim
`;

/** A parsed command line. */
interface SimInvocation {
  /** Reads or makes the trace. */
  workload: () => Promise<Trace>;
  /** The workload, for people. */
  describe: string;
  policies: string[];
  /** Undefined: {@linkcode defaultSizes} of the trace. */
  sizes?: number[];
  reference?: Reference;
  json: boolean;
  svg?: string;
}

/**
 * The simulator's command line. Resolves to the exit status: 0 success,
 * 1 the trace could not be read, 2 usage error.
 *
 * @example
 * ```ts
 * import { simMain } from "./sim_cli.ts";
 * await simMain(["--zipf", "0.9", "--requests", "10000", "--reference", "libcachesim"]);
 * ```
 */
export async function simMain(args: string[]): Promise<number> {
  let invocation: SimInvocation;
  try {
    const parsed = parseSimArgs(args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    invocation = parsed;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`tcpcache sim: ${error.message}\n(see --help)`);
    return 2;
  }
  const { workload, describe, policies, reference, json, svg } = invocation;
  let trace: Trace;
  try {
    trace = await workload();
  } catch (error) {
    console.error(`tcpcache sim: ${(error as Error).message}`);
    return 1;
  }
  const sizes = invocation.sizes ?? defaultSizes(trace);
  const replayed = reference ? policies.map((name) => referencePolicy(name, reference)) : policies;
  const started = performance.now();
  const results = simulateAll(trace, replayed, sizes);
  const seconds = (performance.now() - started) / 1000;
  if (json) {
    console.log(
      JSON.stringify({ workload: describe, reference, requests: trace.keys.length, results }),
    );
  } else {
    console.log(formatResults(results, policies, sizes, describe, reference));
    const requests = trace.keys.length * results.length;
    console.log(
      `\n${results.length} replays of ${trace.keys.length} requests in ${seconds.toFixed(2)} s ` +
        `(${Math.round(requests / seconds).toLocaleString("en-US")} requests/s)`,
    );
  }
  if (svg) {
    await Deno.writeTextFile(svg, missRatioSvg(results, policies, sizes, describe));
    if (!json) console.log(`plot written to ${svg}`);
  }
  return 0;
}

function parseSimArgs(args: string[]): SimInvocation | "help" {
  const values = parseFlags(args);
  if (values.help) return "help";
  if ((values.trace === undefined) === (values.zipf === undefined)) {
    throw new UsageError("give exactly one of --trace FILE and --zipf ALPHA");
  }
  const known = simulatorPolicies();
  const policies = values.policy === "all" ? known : values.policy.split(",");
  for (const policy of policies) {
    if (!known.includes(policy)) {
      throw new UsageError(`unknown policy "${policy}" (known: all, ${known.join(", ")})`);
    }
  }
  const reference = optional(values.reference, parseReference);
  const sizes = optional(values.sizes, (list) => list.split(",").map((size) => cacheSize(size)));
  const common = { policies, sizes, reference, json: values.json, svg: values.svg };
  if (values.trace !== undefined) {
    const path = values.trace;
    const format = values.format ?? guessFormat(path);
    if (!(FORMATS as readonly string[]).includes(format)) {
      throw new UsageError(`unknown format "${format}" (known: ${FORMATS.join(", ")})`);
    }
    const workload = () => readTrace(path, format as TraceFormat);
    return { ...common, workload, describe: path.split("/").pop()! };
  }
  if (!/^[0-9]+(\.[0-9]+)?$/.test(values.zipf!)) {
    throw new UsageError(`--zipf must be a number >= 0, not "${values.zipf}"`);
  }
  const alpha = Number(values.zipf);
  const objects = parseInteger("--objects", values.objects, MAX_COUNT, 1);
  const requests = parseInteger("--requests", values.requests, MAX_COUNT, 1);
  const seed = parseInteger("--seed", values.seed, 2 ** 32 - 1, 1);
  const distribution = parseSizeDistribution(values["size-dist"]);
  const workload = () =>
    Promise.resolve(zipfTrace({ alpha, objects, requests, seed, sizes: distribution }));
  const describe = `Zipf alpha=${alpha}, ${objects} objects, ${requests} requests, ` +
    `sizes ${values["size-dist"]}, seed ${seed}`;
  return { ...common, workload, describe };
}

/** `parseArgs` with the simulator's flags; its errors become usage errors. */
function parseFlags(args: string[]) {
  try {
    return parseArgs({
      args,
      options: {
        trace: { type: "string" },
        format: { type: "string" },
        zipf: { type: "string" },
        objects: { type: "string", default: "10000" },
        requests: { type: "string", default: "100000" },
        "size-dist": { type: "string", default: "fixed:4KiB" },
        seed: { type: "string", default: "1" },
        policy: { type: "string", default: "all" },
        sizes: { type: "string" },
        reference: { type: "string" },
        json: { type: "boolean", default: false },
        svg: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function parseReference(name: string): Reference {
  if (isReference(name)) return name;
  throw new UsageError(`unknown reference "${name}" (known: ${REFERENCES.join(", ")})`);
}

function guessFormat(path: string): TraceFormat {
  if (path.endsWith(".bin")) return "oracleGeneral";
  if (path.endsWith(".csv")) return "csv";
  return "txt";
}

/** A size from the command line, or a {@linkcode UsageError}. */
function size(text: string): number {
  try {
    return parseSize(text);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

function cacheSize(text: string): number {
  const bytes = size(text);
  if (bytes < 1) throw new UsageError(`a cache size must be at least 1 byte, not "${text}"`);
  return bytes;
}

/** Parses `fixed:SIZE`, `uniform:MIN-MAX` or `lognormal:MEDIAN,SIGMA`. */
function parseSizeDistribution(text: string): SizeDistribution {
  const [kind, spec = ""] = text.split(":");
  if (kind === "fixed") return { kind, size: size(spec) };
  if (kind === "uniform") {
    const [min, max] = spec.split("-").map((bound) => size(bound));
    if (!(min <= max)) throw new UsageError(`uniform sizes need MIN-MAX with MIN <= MAX: ${text}`);
    return { kind, min, max };
  }
  if (kind === "lognormal") {
    const [median, sigma] = spec.split(",");
    if (!(Number(sigma) > 0)) throw new UsageError(`lognormal needs MEDIAN,SIGMA: ${text}`);
    return { kind, median: size(median), sigma: Number(sigma) };
  }
  throw new UsageError(`unknown size distribution: ${text}`);
}

function formatResults(
  results: SimResult[],
  policies: string[],
  sizes: number[],
  describe: string,
  reference: Reference | undefined,
): string {
  const lookup = (policy: string, size: number) =>
    results.find((r) => r.policy === policy && r.capacity === size)!;
  const block = (title: string, ratio: (r: SimResult) => number) => {
    const header = ["policy", ...sizes.map((size) => formatBytes(size))];
    const rows = policies.map((policy) => [
      policy,
      ...sizes.map((size) => ratio(lookup(policy, size)).toFixed(4)),
    ]);
    const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => row[c].length)));
    const line = (row: string[]) =>
      row.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join("  ");
    return [title, line(header), ...rows.map(line)].join("\n");
  };
  return [
    `workload: ${describe}`,
    ...(reference ? [`policies as ${reference} runs them (--reference ${reference})`] : []),
    "",
    block("object miss ratio", (r) => r.misses / r.requests),
    "",
    block("byte miss ratio", (r) => r.missedBytes / r.requestedBytes),
  ].join("\n");
}

function missRatioSvg(
  results: SimResult[],
  policies: string[],
  sizes: number[],
  describe: string,
): string {
  const series = (ratio: (r: SimResult) => number) =>
    policies.map((policy) => ({
      name: policy,
      dashed: policy === "belady",
      points: sizes.map((size) => {
        const result = results.find((r) => r.policy === policy && r.capacity === size)!;
        return { x: size, y: ratio(result) };
      }),
    }));
  return lineChartSvg([
    {
      title: "object miss ratio",
      yLabel: "miss ratio",
      series: series((r) => r.misses / r.requests),
    },
    {
      title: "byte miss ratio",
      yLabel: "byte miss ratio",
      series: series((r) => r.missedBytes / r.requestedBytes),
    },
  ], {
    title: `Miss ratio by cache size: ${describe}`,
    xLabel: "cache size",
    formatX: formatBytes,
    formatY: (y) => y.toFixed(2),
  });
}

if (import.meta.main) {
  Deno.exit(await simMain(Deno.args));
}
