/**
 * The trace simulator: replays a request trace through the same eviction
 * policies the server uses (through the same `PolicyIndex`), and reports
 * object and byte miss ratios per policy and cache size.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { EvictionPolicy, PolicyFactory } from "../policies/policy.ts";
import { PolicyIndex } from "../policies/policy_index.ts";
import { isPolicyName, POLICIES } from "../policies/registry.ts";
import { lineChartSvg } from "./plot.ts";
import {
  readTrace,
  type SizeDistribution,
  type Trace,
  type TraceFormat,
  zipfTrace,
} from "./trace.ts";
import { formatBytes, parseSize } from "../util/units.ts";

/** What one replay counts. */
export interface SimResult {
  /** The policy's name. */
  policy: string;
  /** The cache capacity in bytes. */
  capacity: number;
  /** Requests replayed. */
  requests: number;
  /** Bytes requested. */
  requestedBytes: number;
  /** Requests that were not hits. */
  misses: number;
  /** Bytes of the requests that were not hits. */
  missedBytes: number;
}

/**
 * Replays `trace` through a fresh cache of `capacity` bytes under a policy.
 * Every request counts (no warm-up). A miss admits the object, evicting as
 * the policy says until it fits, unless it is larger than the whole cache or
 * the policy refuses it (`EvictionPolicy.admit`, asked before any eviction),
 * exactly as the server's cache does.
 *
 * @param policy a name from `POLICIES`, or `"belady"` (the offline optimum)
 * @example
 * ```ts
 * import { simulate } from "./sim.ts";
 * import { zipfTrace } from "./trace.ts";
 * const trace = zipfTrace({ alpha: 1, objects: 100, requests: 1000 });
 * simulate(trace, "fifo", 10 * 4096).misses;
 * ```
 */
export function simulate(
  trace: Trace,
  policy: string | PolicyFactory,
  capacity: number,
): SimResult {
  const clock = { now: 0 };
  const index = new PolicyIndex<{ size: number }>(makePolicy(policy, trace, clock, capacity));
  const { keys, sizes } = trace;
  let misses = 0;
  let missedBytes = 0;
  let requestedBytes = 0;
  for (let i = 0; i < keys.length; i++) {
    clock.now = i;
    const key = keys[i];
    const size = sizes[i];
    requestedBytes += size;
    if (index.hit(key)) continue;
    misses++;
    missedBytes += size;
    if (size > capacity || !index.admits(key, size)) continue;
    while (index.used + size > capacity) index.evict();
    index.insert(key, { size });
  }
  return {
    policy: index.policy.name,
    capacity,
    requests: keys.length,
    requestedBytes,
    misses,
    missedBytes,
  };
}

/** The policy names the simulator knows: the server's, and Belady's optimum. */
export function simulatorPolicies(): string[] {
  return [...Object.keys(POLICIES), "belady"];
}

function makePolicy(
  name: string | PolicyFactory,
  trace: Trace,
  clock: { now: number },
  capacity: number,
): EvictionPolicy {
  if (typeof name === "function") return name(capacity);
  if (name === "belady") return new BeladyPolicy(trace.nextAccess, clock);
  if (!isPolicyName(name)) {
    throw new RangeError(`unknown policy "${name}" (known: ${simulatorPolicies().join(", ")})`);
  }
  return POLICIES[name](capacity);
}

/**
 * Belady's MIN: evicts the object whose next request is farthest in the
 * future. It needs the future, so it exists only in the simulator, as the
 * lower bound every policy is plotted against. A max-heap with lazy
 * deletion keeps each operation O(log n).
 */
export class BeladyPolicy implements EvictionPolicy {
  readonly name = "belady";
  #nextAccess: Float64Array;
  #clock: { now: number };
  #next = new Map<string, number>();
  #heap: { key: string; next: number }[] = [];

  /** `clock.now` is the index of the request being replayed. */
  constructor(nextAccess: Float64Array, clock: { now: number }) {
    this.#nextAccess = nextAccess;
    this.#clock = clock;
  }

  insert(key: string): void {
    this.touch(key);
  }

  touch(key: string): void {
    const next = this.#nextAccess[this.#clock.now];
    this.#next.set(key, next);
    this.#push({ key, next });
  }

  chooseVictim(): string | undefined {
    while (this.#heap.length > 0) {
      const top = this.#heap[0];
      if (this.#next.get(top.key) === top.next) return top.key;
      this.#pop(); // stale: the key was touched again or removed
    }
    return undefined;
  }

  remove(key: string): void {
    this.#next.delete(key);
  }

  evictionOrder(): string[] {
    return [...this.#next].sort((a, b) => b[1] - a[1]).map(([key]) => key);
  }

  #push(item: { key: string; next: number }): void {
    const heap = this.#heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent].next >= item.next) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = item;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    while (true) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const larger = right < heap.length && heap[right].next > heap[left].next ? right : left;
      if (heap[larger].next <= last.next) break;
      heap[i] = heap[larger];
      i = larger;
    }
    heap[i] = last;
  }
}

// ---------------------------------------------------------------------------
// The command line

const USAGE = `tcpcache simulator: replays a trace through the eviction policies

Usage: deno task sim (--trace FILE [--format F] | --zipf ALPHA [options]) [options]

Workload (one of):
  --trace FILE          a trace file
  --format F            oracleGeneral | csv | txt (default: oracleGeneral for .bin,
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
  --json                print the results as JSON
  --svg FILE            write a miss-ratio-versus-cache-size plot
  -h, --help            show this help

Example:
  deno task sim --trace ../shared/data/traces/cloudPhysicsIO.oracleGeneral.bin \\
    --sizes 128MiB,256MiB,384MiB,512MiB,640MiB,768MiB,896MiB,1024MiB --svg sim.svg
`;

/** Replays `trace` under each policy at each size. */
export function simulateAll(trace: Trace, policies: string[], sizes: number[]): SimResult[] {
  return policies.flatMap((policy) => sizes.map((size) => simulate(trace, policy, size)));
}

/**
 * The simulator's command line. Resolves to the exit status: 0 success,
 * 2 usage error.
 */
export async function simMain(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseSimArgs>;
  try {
    parsed = parseSimArgs(args);
  } catch (error) {
    console.error(`tcpcache sim: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  if (parsed === "help") {
    console.log(USAGE);
    return 0;
  }
  const { workload, describe, policies, json, svg } = parsed;
  const trace = await workload();
  const sizes = parsed.sizes ?? defaultSizes(trace);
  const started = performance.now();
  const results = simulateAll(trace, policies, sizes);
  const seconds = (performance.now() - started) / 1000;
  if (json) {
    console.log(JSON.stringify({ workload: describe, requests: trace.keys.length, results }));
  } else {
    console.log(formatResults(results, policies, sizes, describe));
    const replayed = trace.keys.length * results.length;
    console.log(
      `\n${results.length} replays of ${trace.keys.length} requests in ${seconds.toFixed(2)} s ` +
        `(${Math.round(replayed / seconds).toLocaleString("en-US")} requests/s)`,
    );
  }
  if (svg) {
    await Deno.writeTextFile(svg, missRatioSvg(results, policies, sizes, describe));
    if (!json) console.log(`plot written to ${svg}`);
  }
  return 0;
}

function parseSimArgs(args: string[]) {
  const { values } = parseArgs({
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
      json: { type: "boolean", default: false },
      svg: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help" as const;
  if ((values.trace === undefined) === (values.zipf === undefined)) {
    throw new Error("give exactly one of --trace FILE and --zipf ALPHA");
  }
  const known = simulatorPolicies();
  const policies = values.policy === "all" ? known : values.policy.split(",");
  for (const policy of policies) {
    if (!known.includes(policy)) throw new Error(`unknown policy: ${policy}`);
  }
  const sizes = values.sizes?.split(",").map((size) => parseSize(size));
  let workload: () => Promise<Trace>;
  let describe: string;
  if (values.trace !== undefined) {
    const path = values.trace;
    const format = (values.format ?? guessFormat(path)) as TraceFormat;
    if (!["oracleGeneral", "csv", "txt"].includes(format)) {
      throw new Error(`unknown format: ${format}`);
    }
    workload = () => readTrace(path, format);
    describe = path.split("/").pop()!;
  } else {
    const alpha = Number(values.zipf);
    const objects = positiveInteger("--objects", values.objects);
    const requests = positiveInteger("--requests", values.requests);
    const seed = positiveInteger("--seed", values.seed);
    const distribution = parseSizeDistribution(values["size-dist"]);
    if (!(alpha >= 0)) throw new Error(`--zipf must be a number >= 0, not ${values.zipf}`);
    workload = () =>
      Promise.resolve(zipfTrace({ alpha, objects, requests, seed, sizes: distribution }));
    describe = `Zipf alpha=${alpha}, ${objects} objects, ${requests} requests, ` +
      `sizes ${values["size-dist"]}, seed ${seed}`;
  }
  return { workload, describe, policies, sizes, json: values.json, svg: values.svg };
}

function guessFormat(path: string): TraceFormat {
  if (path.endsWith(".bin")) return "oracleGeneral";
  if (path.endsWith(".csv")) return "csv";
  return "txt";
}

function positiveInteger(flag: string, text: string): number {
  if (!/^[0-9]+$/.test(text) || Number(text) < 1) {
    throw new Error(`${flag} must be a whole number >= 1, not ${text}`);
  }
  return Number(text);
}

/** Parses `fixed:SIZE`, `uniform:MIN-MAX` or `lognormal:MEDIAN,SIGMA`. */
export function parseSizeDistribution(text: string): SizeDistribution {
  const [kind, spec = ""] = text.split(":");
  if (kind === "fixed") return { kind, size: parseSize(spec) };
  if (kind === "uniform") {
    const [min, max] = spec.split("-").map((size) => parseSize(size));
    if (!(min <= max)) throw new Error(`uniform sizes need MIN-MAX with MIN <= MAX: ${text}`);
    return { kind, min, max };
  }
  if (kind === "lognormal") {
    const [median, sigma] = spec.split(",");
    if (!(Number(sigma) > 0)) throw new Error(`lognormal needs MEDIAN,SIGMA: ${text}`);
    return { kind, median: parseSize(median), sigma: Number(sigma) };
  }
  throw new Error(`unknown size distribution: ${text}`);
}

/** Six sizes from 1/64 to 1/2 of the trace's distinct bytes, doubling. */
function defaultSizes(trace: Trace): number[] {
  const distinct = new Map<string, number>();
  trace.keys.forEach((key, i) => distinct.set(key, trace.sizes[i]));
  const total = [...distinct.values()].reduce((sum, size) => sum + size, 0);
  return Array.from({ length: 6 }, (_, k) => Math.max(1, Math.round(total / 2 ** (6 - k))));
}

function formatResults(
  results: SimResult[],
  policies: string[],
  sizes: number[],
  describe: string,
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
