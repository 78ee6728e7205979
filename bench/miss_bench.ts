/**
 * A miss of a large file, measured (docs/performance.md, "A miss of a large
 * file"): how soon its first byte reaches the client and how long the whole
 * takes, against the same file streamed uncached, in one run.
 *
 *     deno task bench:miss [--size 5GiB] [--rounds 3]
 *
 * The origin holds one sparse file (made with `truncate`: it costs no disk,
 * and reading it costs no disk either, so what is measured is the server).
 * Two servers serve it: one whose cache takes it (`--cache-size` 1 GiB more
 * than the file), where a GET is a miss that is copied into the cache
 * directory as it is sent (streamed), and one whose cache is too small
 * (64 MiB), where the same GET streams it uncached (a bypass): the
 * reference. After a warm-up of one transfer of each (not counted), each
 * round asks each server once, on a fresh connection, in
 * turns (the miss after a `PURGE`, so that it is a miss again and no
 * eviction of the last copy is timed); a round's ratios compare its two
 * transfers, seconds apart, and the report gives the median round. Then a
 * second client asks for the file while a miss of it is halfway copied in:
 * the time to its first byte. The client is a plain socket that counts the
 * bytes (no hashing: the server is what is measured); the server's CPU is
 * its process's user and system time over each transfer.
 *
 * Targets (the issue): first byte of a miss within 2x of the uncached
 * stream's, total time within 1.3x. Prints Markdown tables and writes
 * bench/results/miss.json; every file it made is removed at the end. The
 * exit status is 0 whatever the figures say (it is a report).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { processSeconds } from "./cpu.ts";
import { MiB } from "./files.ts";
import { HOST, log, REPO, type Server, startTcpcache, stopServer } from "./processes.ts";
import { codeVersion, formatFigure, markdownTable, versionLabel } from "./report.ts";
import { readCommandLine, runSession } from "./session.ts";
import { parseSize } from "../util/units.ts";

const USAGE = `deno task bench:miss [--size 5GiB] [--rounds 3]

  --size SIZE    the file's size (default 5GiB)
  --rounds N     transfers of each kind (default 3; the report gives the median)`;

interface Options {
  size: number;
  rounds: number;
}

function parse(args: string[]): Options | "help" {
  const { values } = parseArgs({
    args,
    options: {
      size: { type: "string", default: "5GiB" },
      rounds: { type: "string", default: "3" },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) return "help";
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`bad --rounds: ${values.rounds}`);
  return { size: parseSize(values.size), rounds };
}

/** One GET, timed from the moment the request was sent. */
interface Transfer {
  /** The header's `cache=` (and `streamed=1`). */
  answer: string;
  /** Milliseconds to the header, and to the first body byte. */
  headerMs: number;
  firstByteMs: number;
  /** Seconds to the last byte. */
  totalS: number;
  /** The server's CPU seconds over the transfer. */
  cpuS: number;
}

/** Sends one request line on a fresh connection and reads the answer's header line. */
async function request(
  port: number,
  line: string,
): Promise<{ conn: Deno.Conn; header: string; rest: Uint8Array }> {
  const conn = await Deno.connect({ hostname: HOST, port });
  await conn.write(new TextEncoder().encode(line + "\n"));
  const buffer = new Uint8Array(MiB);
  let seen = new Uint8Array(0);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error(`closed before the header of ${line}`);
    const joined = new Uint8Array(seen.length + n);
    joined.set(seen);
    joined.set(buffer.subarray(0, n), seen.length);
    seen = joined;
    const end = seen.indexOf(0x0a);
    if (end >= 0) {
      return {
        conn,
        header: new TextDecoder().decode(seen.subarray(0, end)),
        rest: seen.subarray(end + 1),
      };
    }
  }
}

/**
 * GETs `big.bin` and reads its body to the end; `onProgress` hears the byte
 * count after each read (the joiner starts from it).
 */
async function transfer(
  server: Server,
  onProgress?: (received: number, size: number) => void,
): Promise<Transfer> {
  const cpuBefore = processSeconds([server.pid]);
  const started = performance.now();
  const { conn, header, rest } = await request(server.port, "GET big.bin");
  const headerMs = performance.now() - started;
  try {
    const match = /^OK ([0-9]+)/.exec(header);
    if (!match) throw new Error(`GET big.bin answered: ${header}`);
    const size = Number(match[1]);
    let received = rest.length;
    let firstByteMs = received > 0 ? headerMs : NaN;
    const buffer = new Uint8Array(4 * MiB);
    while (received < size) {
      const n = await conn.read(buffer);
      if (n === null) throw new Error(`the body ended at ${received} of ${size} bytes`);
      if (received === 0) firstByteMs = performance.now() - started;
      received += n;
      onProgress?.(received, size);
    }
    const totalS = (performance.now() - started) / 1000;
    const answer = [/cache=(\w+)/.exec(header)?.[1], /streamed=1/.test(header) ? "streamed" : ""]
      .filter(Boolean).join(", ");
    return {
      answer,
      headerMs,
      firstByteMs,
      totalS,
      cpuS: processSeconds([server.pid]) - cpuBefore,
    };
  } finally {
    conn.close();
  }
}

/** Drops `big.bin` from a server's cache, so that the next GET is a miss. */
async function purge(server: Server): Promise<void> {
  const { conn, header } = await request(server.port, "PURGE big.bin");
  conn.close();
  if (!header.startsWith("OK")) throw new Error(`PURGE answered: ${header}`);
}

/**
 * A miss with a second client that asks once the first has received half:
 * the second's transfer (its times counted from its own request).
 */
async function joinedMidway(server: Server): Promise<{ first: Transfer; second: Transfer }> {
  await purge(server);
  let second: Promise<Transfer> | undefined;
  const first = await transfer(server, (received, size) => {
    if (!second && received >= size / 2) second = transfer(server);
  });
  return { first, second: await second! };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const ms = (value: number) => `${formatFigure(value)} ms`;
const seconds = (value: number) => `${value.toFixed(2)} s`;
const ratio = (value: number) => `${value.toFixed(2)}x`;

async function main(options: Options): Promise<number> {
  const version = await codeVersion();
  return await runSession({
    program: "bench:miss",
    tempPrefix: "tcpcache-miss-bench-",
    driverWorkers: 0,
    hardCapMs: 60 * 60 * 1000,
  }, async ({ root }) => {
    const origin = `${root}/origin`;
    await Deno.mkdir(origin);
    // Sparse: no disk used, and reads of it cost no disk.
    await Deno.writeFile(`${origin}/big.bin`, new Uint8Array());
    await Deno.truncate(`${origin}/big.bin`, options.size);
    const cacheSize = `${options.size + 1024 * MiB}`;
    const cached = await startTcpcache(origin, `${root}/cache-miss`, cacheSize);
    const uncached = await startTcpcache(origin, `${root}/cache-small`, "64MiB");
    const rounds: { miss: Transfer; bypass: Transfer }[] = [];
    try {
      // Not counted: the first transfers of a run take fresh memory for the
      // page cache, which costs this VM far more than memory used before.
      log("warming up (one transfer of each kind, not counted)");
      await purge(cached);
      await transfer(cached);
      await transfer(uncached);
      for (let round = 1; round <= options.rounds; round++) {
        // Turns alternate, so that a drift of the machine's speed weighs on both.
        await purge(cached);
        let miss: Transfer;
        let bypass: Transfer;
        if (round % 2 === 1) {
          miss = await transfer(cached);
          bypass = await transfer(uncached);
        } else {
          bypass = await transfer(uncached);
          miss = await transfer(cached);
        }
        log(
          `round ${round}: miss (${miss.answer}) first byte ${ms(miss.firstByteMs)}, ` +
            `total ${seconds(miss.totalS)}; uncached (${bypass.answer}) first byte ` +
            `${ms(bypass.firstByteMs)}, total ${seconds(bypass.totalS)}`,
        );
        rounds.push({ miss, bypass });
      }
      const joined = await joinedMidway(cached);
      log(`a second client halfway through a miss: first byte ${ms(joined.second.firstByteMs)}`);
      report(options, version, rounds, joined);
    } finally {
      await stopServer(cached);
      await stopServer(uncached);
    }
  });
}

function report(
  options: Options,
  version: Awaited<ReturnType<typeof codeVersion>>,
  rounds: { miss: Transfer; bypass: Transfer }[],
  joined: { first: Transfer; second: Transfer },
): void {
  const of = (kind: "miss" | "bypass", field: keyof Omit<Transfer, "answer">) =>
    median(rounds.map((round) => round[kind][field]));
  const firstByteRatio = median(rounds.map((r) => r.miss.firstByteMs / r.bypass.firstByteMs));
  const totalRatio = median(rounds.map((r) => r.miss.totalS / r.bypass.totalS));
  const gib = options.size / (1024 * MiB);
  console.log(
    `## A miss of a ${formatFigure(gib)} GiB file (${versionLabel(version)}, ` +
      `${options.rounds} rounds, medians)\n`,
  );
  console.log(markdownTable(
    ["", "target", "measured", "met"],
    [
      [
        "first byte, miss / uncached",
        "≤ 2x",
        ratio(firstByteRatio),
        firstByteRatio <= 2 ? "yes" : "no",
      ],
      [
        "total time, miss / uncached",
        "≤ 1.3x",
        ratio(totalRatio),
        totalRatio <= 1.3 ? "yes" : "no",
      ],
    ],
  ));
  console.log();
  const row = (name: string, kind: "miss" | "bypass") => [
    name,
    rounds[0][kind].answer,
    ms(of(kind, "headerMs")),
    ms(of(kind, "firstByteMs")),
    seconds(of(kind, "totalS")),
    `${formatFigure(options.size / of(kind, "totalS") / 1e6)} MB/s`,
    seconds(of(kind, "cpuS")),
  ];
  console.log(markdownTable(
    ["GET big.bin", "answer", "header", "first byte", "total", "rate", "server CPU"],
    [
      row("a miss (cache takes it)", "miss"),
      row("uncached (cache too small)", "bypass"),
      [
        "a second client, halfway through a miss",
        joined.second.answer,
        ms(joined.second.headerMs),
        ms(joined.second.firstByteMs),
        seconds(joined.second.totalS),
        `${formatFigure(options.size / joined.second.totalS / 1e6)} MB/s`,
        "-",
      ],
    ],
  ));
  const results = { version, options, rounds, joined, firstByteRatio, totalRatio };
  Deno.writeTextFileSync(
    `${REPO}/bench/results/miss.json`,
    JSON.stringify(results, null, 2) + "\n",
  );
}

if (import.meta.main) {
  const options = readCommandLine("bench:miss", USAGE, Deno.args, parse);
  Deno.exit(typeof options === "number" ? options : await main(options));
}
