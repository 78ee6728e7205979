/**
 * The tcpcache client's command line: `get` (one file, a batch, a mirror of
 * a directory, a resume, or stdout), `list`, `files`, `stat`, `stats` and
 * `ping`, each with `--help` and `--json`. `client.ts` and `mod.ts` run it
 * through {@linkcode clientMain}.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { writeAll } from "../util/byte_reader.ts";
import {
  type CacheClient,
  type CacheListing,
  connect,
  type FileListing,
} from "../client/connection.ts";
import { download, type DownloadResult } from "../client/download.ts";
import {
  ConnectionError,
  IntegrityError,
  InterruptedDownloadError,
  leavesConnectionUsable,
  ResumeError,
  ServerError,
} from "../client/errors.ts";
import {
  ClusterClient,
  type ClusterListing,
  type NodeAddress,
  parseNodes,
} from "../client/cluster.ts";
import { checkPath, DEFAULT_PORT, escapeControls } from "../protocol.ts";
import { formatElapsed, formatRate, ProgressLine } from "./progress.ts";
import { formatBytes } from "../util/units.ts";
import { VERSION } from "../version.ts";

const COMMANDS = ["get", "list", "files", "stat", "stats", "ping"] as const;

/** A command of the client's command line. */
type CommandName = typeof COMMANDS[number];

/** The most connections `--parallel` may open. */
const MAX_PARALLEL = 64;

/**
 * The least time between two redraws of the progress line, in ms. The
 * environment variable `TCPCACHE_PROGRESS_INTERVAL_MS` overrides it; the
 * tests set it to 0 so that every chunk redraws (it is not a documented
 * option for people).
 */
const PROGRESS_INTERVAL_MS = 100;

const USAGE = `tcpcache client ${VERSION}: fetch files from a tcpcache server

Usage: tcpcache COMMAND [ARGS] [options]
       deno task client COMMAND [ARGS] [options]

Commands:
  get PATH...      download files: one, several, or a directory tree (-r)
  list             the cache's entries, in eviction order
  files [DIR]      browse the served directory
  stat PATH        a file's size, mtime and cache state
  stats            the server's counters
  ping             check that the server answers

Options of every command:
  --host HOST      server address (default: $TCPCACHE_HOST or 127.0.0.1)
  --port PORT      server port (default: $TCPCACHE_PORT or ${DEFAULT_PORT})
  --nodes LIST     a cluster instead: HOST:PORT,HOST:PORT,... (default:
                   $TCPCACHE_NODES); each path goes to its node by rendezvous
                   hashing, the next one when it is down; list and stats
                   ask every node and add up
  --json           print the outcome as JSON on stdout
  -q, --quiet      print nothing but errors
  -h, --help       show this help; COMMAND --help shows a command's
  --version        print the version

The original assignment's command lines work too:
  client.ts HOST PORT list          list the cache
  client.ts HOST PORT FILE DIR      fetch FILE into DIR

Exit status: 0 success; 1 the server answered an error, or the bytes failed
verification; 2 usage error; 3 cannot connect, or the connection broke; 130
interrupted by Ctrl-C during a get (downloads in flight keep NAME.part for
get --continue). A get of several files exits with the highest status among
its files.

Examples:
  tcpcache get docs/readme.txt
  tcpcache --port 9090 list --json
  tcpcache get --help`;

const COMMON = `  --host HOST, --port PORT   the server (default: $TCPCACHE_HOST, $TCPCACHE_PORT,
                             else 127.0.0.1:${DEFAULT_PORT})
  --nodes HOST:PORT,...      a cluster instead (default: $TCPCACHE_NODES)`;

/** The `--help` of each command. */
const HELP: Record<CommandName, string> = {
  get: `tcpcache get: download files from a tcpcache server

Usage:
  tcpcache get PATH [-o DEST]       one file, to DEST or to its base name here
  tcpcache get PATH... [-o DIR]     several files, each under its base name in
                                    DIR (created if needed) or here
  tcpcache get -r DIR [-o OUT]      a directory tree, mirrored as OUT/DIR/...
                                    (OUT defaults to here)
  tcpcache get PATH -o -            one file's bytes to stdout, for pipes

Options:
  -o, --output DEST   where to save (see above); - is stdout
  -r, --recursive     mirror the directory DIR and everything below it
  --parallel N        download over N connections at once (default 1, at
                      most ${MAX_PARALLEL}); one file failing does not stop the others
  -c, --continue      finish NAME.part left by an interrupted download
  --json              print the outcome as JSON on stdout
  -q, --quiet         no progress line, no summary; errors only
${COMMON}

Every download goes to NAME.part and is renamed to NAME only once complete and
verified against the server's sha256. When the connection breaks in the middle
of a file, NAME.part is kept: get --continue asks only for the rest (a range
request) and then verifies the whole file; a mismatch discards NAME.part
(exit 1). Ctrl-C keeps NAME.part the same way (exit 130). A server error or a
failed verification removes NAME.part, and a get without --continue always
starts afresh.

The server knows a file's sha256 only while the file is in its cache, so a
file too large for the cache is saved unverified ("not verified" in the
summary). A continued download that gets no sha256 (neither with the range
nor from STAT) is accepted unverified only if NAME.part still carries the
file's modification time, as the interrupted download left it; otherwise
NAME.part is discarded with an error (exit 1), and a plain get starts afresh.

With -r, a file already present with the same size and the server's sha256
is skipped. A file the server has no sha256 for (not in its cache) is fetched
again, which caches it on the server, so the next mirror can skip it. Local
files the server does not have are left alone.

On a terminal a progress line shows bytes, percent, rate and time left, and is
cleared when done; then a summary line per file (size, time, rate, hit, miss
or bypass, and "verified sha256" when it was) goes to stderr.

Examples:
  tcpcache get docs/readme.txt
  tcpcache get docs/a.txt docs/b.txt big.iso --parallel 3 -o downloads
  tcpcache get -r docs -o mirror          # saves mirror/docs/...
  tcpcache get big.iso --continue
  tcpcache get hello.txt -o - | wc -c`,
  list: `tcpcache list: the cache's entries, in eviction order (#1 is evicted next)

Usage: tcpcache list [--json]

Options:
  --json     the server's listing as it is: capacity, used, policy, entries
${COMMON}

Example:
  tcpcache list --port 9090`,
  files: `tcpcache files: browse the served directory

Usage: tcpcache files [DIR] [--json]

Options:
  --json     the server's listing as it is: path, entries (name, type, size, mtime)
${COMMON}

Example:
  tcpcache files docs`,
  stat: `tcpcache stat: a file's size, mtime, and whether it is cached (with its sha256)

Usage: tcpcache stat PATH [--json]

Options:
  --json     the server's answer as it is (sha256 is null when not cached)
${COMMON}

Example:
  tcpcache stat docs/readme.txt`,
  stats: `tcpcache stats: the server's counters since it started

Usage: tcpcache stats [--json]

Options:
  --json     the server's counters as they are
${COMMON}

Example:
  tcpcache stats --json`,
  ping: `tcpcache ping: check that the server answers, and how fast

Usage: tcpcache ping [--json]

Options:
  --json     {"host", "port", "ms"}
${COMMON}

Example:
  TCPCACHE_PORT=9090 tcpcache ping`,
};

/** What the command line asked for. */
interface Invocation {
  command: CommandName;
  args: string[];
  host: string;
  port: number;
  /** A cluster's nodes (`--nodes`), instead of one server. */
  nodes?: NodeAddress[];
  output?: string;
  recursive: boolean;
  parallel: number;
  resume: boolean;
  json: boolean;
  quiet: boolean;
}

/** The command line was wrong: exit 2. */
class UsageError extends Error {}

/**
 * The client's command line. Resolves to the exit status: 0 success, 1 the
 * server answered an error or the bytes failed verification, 2 usage error,
 * 3 connection failure, 130 interrupted (Ctrl-C; a resumable `.part` stays).
 *
 * @example
 * ```ts
 * import { clientMain } from "./client_cli.ts";
 * Deno.exit(await clientMain(["get", "docs/readme.txt", "--port", "9089"]));
 * ```
 */
export async function clientMain(args: string[]): Promise<number> {
  let invocation: Invocation | { help: CommandName | undefined } | "version";
  try {
    invocation = parseClientArgs(args);
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  if (invocation === "version") {
    console.log(`tcpcache ${VERSION}`);
    return 0;
  }
  if ("help" in invocation) {
    console.log(invocation.help ? HELP[invocation.help] : USAGE);
    return 0;
  }
  try {
    return await run(invocation);
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`tcpcache: ${error.message}\n(see --help)`);
      return 2;
    }
    console.error(`tcpcache: ${describeError(error)}`);
    return exitStatus(error);
  }
}

function parseClientArgs(
  args: string[],
): Invocation | { help: CommandName | undefined } | "version" {
  const { values, positionals } = parseArgs({
    args,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      nodes: { type: "string" },
      output: { type: "string", short: "o" },
      recursive: { type: "boolean", short: "r", default: false },
      parallel: { type: "string" },
      continue: { type: "boolean", short: "c", default: false },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", short: "q", default: false },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (values.help) return { help: isCommand(positionals[0]) ? positionals[0] : undefined };
  if (values.version) return "version";
  let host = values.host ?? envOr("TCPCACHE_HOST", "127.0.0.1");
  let port = values.port ?? envOr("TCPCACHE_PORT", String(DEFAULT_PORT));
  let [command, ...rest] = positionals;
  let output = values.output;
  if (!isCommand(command) && positionals.length >= 3 && /^[0-9]+$/.test(positionals[1])) {
    // The original assignment's forms: HOST PORT list | HOST PORT FILE [DIR]
    [host, port] = positionals;
    const [what, dir] = positionals.slice(2);
    if (what === "list" && dir === undefined) {
      command = "list";
      rest = [];
    } else {
      command = "get";
      rest = [what];
      if (dir !== undefined) output = `${dir}/${baseName(what)}`;
      if (positionals.length > 4) throw new UsageError("usage: client.ts HOST PORT FILE DIR");
    }
  }
  if (command === undefined) throw new UsageError("no command given");
  if (!isCommand(command)) throw new UsageError(`unknown command: ${command}`);
  const arity: Record<CommandName, [number, number]> = {
    get: [1, Infinity],
    list: [0, 0],
    files: [0, 1],
    stat: [1, 1],
    stats: [0, 0],
    ping: [0, 0],
  };
  const [min, max] = arity[command];
  if (rest.length < min || rest.length > max) {
    const count = max === Infinity ? `at least ${min}` : min === max ? min : `${min} or ${max}`;
    throw new UsageError(`${command} takes ${count} argument(s)`);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) {
    throw new UsageError(`invalid port: ${port}`);
  }
  const nodes = values.nodes ?? Deno.env.get("TCPCACHE_NODES");
  const invocation: Invocation = {
    command,
    args: rest,
    host,
    port: Number(port),
    nodes: nodes === undefined ? undefined : parseNodeList(nodes),
    output,
    recursive: values.recursive,
    parallel: parseParallel(values.parallel),
    resume: values.continue,
    json: values.json,
    quiet: values.quiet,
  };
  checkGetOptions(invocation, values.parallel !== undefined);
  return invocation;
}

function parseNodeList(text: string): NodeAddress[] {
  try {
    return parseNodes(text);
  } catch (error) {
    throw new UsageError(`invalid --nodes: ${(error as Error).message}`);
  }
}

/** One server's connection, or a cluster client with `--nodes`. */
function openClient(invocation: Invocation): Promise<CacheClient> {
  if (invocation.nodes) return Promise.resolve(new ClusterClient(invocation.nodes));
  return connect(invocation);
}

function parseParallel(text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || n < 1 || n > MAX_PARALLEL) {
    throw new UsageError(`invalid --parallel: ${text} (a number from 1 to ${MAX_PARALLEL})`);
  }
  return n;
}

/** Rejects the options of `get` elsewhere, and combinations that make no sense. */
function checkGetOptions(invocation: Invocation, parallelGiven: boolean): void {
  const { command, args, output, recursive, resume, json } = invocation;
  if (command !== "get") {
    const given = [
      output !== undefined && "-o",
      recursive && "-r",
      parallelGiven && "--parallel",
      resume && "--continue",
    ].filter((flag) => flag);
    if (given.length > 0) throw new UsageError(`${given[0]} is an option of get`);
    return;
  }
  if (recursive && args.length !== 1) throw new UsageError("get -r takes one directory");
  if (output === "-") {
    if (recursive || args.length > 1) throw new UsageError("-o - takes one file");
    if (resume) throw new UsageError("--continue needs a file to continue, not -o -");
    if (json) throw new UsageError("--json and -o - would both use stdout");
  }
  if (!recursive && args.length > 1) {
    const seen = new Map<string, string>();
    for (const path of args) {
      const name = baseName(path);
      const other = seen.get(name);
      if (other !== undefined) {
        throw new UsageError(`${other} and ${path} would both be saved as ${name}`);
      }
      seen.set(name, path);
    }
  }
}

function isCommand(word: string | undefined): word is CommandName {
  return (COMMANDS as readonly string[]).includes(word ?? "");
}

/** Runs a command; resolves to the exit status (or throws what ends it). */
async function run(invocation: Invocation): Promise<number> {
  const jobs = invocation.command === "get" && !invocation.recursive && invocation.output !== "-"
    ? await destinations(invocation)
    : [];
  const client = await openClient(invocation);
  try {
    const print = (text: string) => {
      if (!invocation.quiet) console.log(text);
    };
    switch (invocation.command) {
      case "get":
        if (invocation.recursive) return await runMirror(client, invocation);
        if (invocation.output === "-") return await runToStdout(client, invocation);
        return await runBatch(client, jobs, invocation);
      case "list": {
        const listing = await client.list();
        print(invocation.json ? JSON.stringify(listing) : formatListing(listing));
        return 0;
      }
      case "files": {
        const listing = await client.files(invocation.args[0] ?? "");
        print(invocation.json ? JSON.stringify(listing) : formatFiles(listing));
        return 0;
      }
      case "stat": {
        const stat = await client.stat(invocation.args[0]);
        print(invocation.json ? JSON.stringify(stat) : formatRecord({ ...stat }));
        return 0;
      }
      case "stats": {
        const stats = await client.stats();
        print(invocation.json ? JSON.stringify(stats) : formatRecord(stats));
        return 0;
      }
      case "ping": {
        const started = performance.now();
        await client.ping();
        const ms = performance.now() - started;
        const { host, port, nodes } = invocation;
        const from = nodes ? `the cluster (${nodes.length} nodes)` : `${host}:${port}`;
        print(
          invocation.json
            ? JSON.stringify({ ...(nodes ? { nodes } : { host, port }), ms: Number(ms.toFixed(3)) })
            : `pong from ${from} in ${ms.toFixed(2)} ms`,
        );
        return 0;
      }
    }
  } finally {
    client.close();
  }
}

// ---------------------------------------------------------------------------
// get

/** A file to download, and where to. */
interface Job {
  path: string;
  dest: string;
}

/** What became of a file of a `get`. */
interface Outcome {
  job: Job;
  result?: DownloadResult;
  /** Already present with the server's size and sha256 (a mirror). */
  skipped?: { size: number; sha256: string };
  error?: unknown;
}

/** What `get` shows while it works: the progress line and the lines above it. */
interface Display {
  progress: ProgressLine;
  invocation: Invocation;
}

/**
 * Where each file of a plain `get` goes: one file to `-o PATH` (or into it
 * when it is a directory) or its base name here; several into `-o DIR`
 * (created) or here, each under its base name.
 */
async function destinations(invocation: Invocation): Promise<Job[]> {
  const { args, output } = invocation;
  if (args.length === 1) {
    const [path] = args;
    let dest = output ?? baseName(path);
    if (await isDirectory(dest)) dest = `${dest}/${baseName(path)}`;
    return [{ path, dest }];
  }
  if (output !== undefined) {
    try {
      await Deno.mkdir(output, { recursive: true });
    } catch (error) {
      throw new UsageError(`-o ${output} must be a directory: ${(error as Error).message}`);
    }
  }
  return args.map((path) => ({ path, dest: joinPath(output ?? "", baseName(path)) }));
}

function createDisplay(invocation: Invocation): Display {
  const intervalMs = Number(envOr("TCPCACHE_PROGRESS_INTERVAL_MS", String(PROGRESS_INTERVAL_MS)));
  const progress = new ProgressLine(writeStderr, {
    live: !invocation.quiet && Deno.stderr.isTerminal(),
    intervalMs: Number.isFinite(intervalMs) ? intervalMs : PROGRESS_INTERVAL_MS,
    columns: terminalColumns,
  });
  return { progress, invocation };
}

/** Downloads one file or several; resolves to the exit status. */
async function runBatch(client: CacheClient, jobs: Job[], invocation: Invocation) {
  const display = createDisplay(invocation);
  const started = performance.now();
  const outcomes = await fetchAll(client, jobs, display);
  const seconds = (performance.now() - started) / 1000;
  if (jobs.length === 1) {
    const [{ job, result }] = outcomes;
    if (result && invocation.json && !invocation.quiet) {
      console.log(JSON.stringify(outcomeJson({ job, result })));
    }
  } else if (!invocation.quiet) {
    if (invocation.json) console.log(JSON.stringify(batchJson(outcomes)));
    else display.progress.print(`${jobs.length} files: ${tally(outcomes, seconds)}`);
  }
  return Math.max(0, ...outcomes.map((outcome) => exitStatus(outcome.error)));
}

/**
 * Downloads `jobs` over `invocation.parallel` connections (the first is
 * `first`; the others open as they are needed). A failed file does not stop
 * the others; a connection that broke is replaced for the next file.
 *
 * Ctrl-C (SIGINT) closes the connections: each download in flight keeps the
 * bytes it has in its `.part`, stamped for `get --continue` (see
 * {@linkcode download}), and the files not started are reported interrupted.
 */
async function fetchAll(first: CacheClient, jobs: Job[], display: Display): Promise<Outcome[]> {
  const outcomes: Outcome[] = new Array(jobs.length);
  const open = new Set<CacheClient>();
  let next = 0;
  let interrupted = false;
  const interrupt = () => {
    interrupted = true;
    for (const client of open) client.close();
  };
  const worker = async (client: CacheClient | undefined) => {
    try {
      while (next < jobs.length && !interrupted) {
        const index = next++;
        const job = jobs[index];
        try {
          client ??= await openClient(display.invocation);
          open.add(client);
          if (interrupted) throw new Interrupted();
          outcomes[index] = { job, result: await fetchOne(client, job, display) };
        } catch (failure) {
          const error = interrupted ? new Interrupted(failure) : failure;
          outcomes[index] = { job, error };
          reportError(display, error);
          if (!leavesConnectionUsable(error)) {
            client?.close();
            if (client) open.delete(client);
            client = undefined;
          }
        }
      }
    } finally {
      client?.close();
    }
  };
  const workers = Math.min(display.invocation.parallel, jobs.length);
  Deno.addSignalListener("SIGINT", interrupt);
  try {
    await Promise.all(
      Array.from({ length: workers }, (_, i) => worker(i === 0 ? first : undefined)),
    );
  } finally {
    Deno.removeSignalListener("SIGINT", interrupt);
  }
  jobs.forEach((job, index) => outcomes[index] ??= { job, error: new Interrupted() });
  return outcomes;
}

/** Ctrl-C stopped a download (or kept it from starting): exit 130. */
class Interrupted extends Error {
  /** How many bytes the download kept in its `.part`, and where. */
  readonly kept?: InterruptedDownloadError;

  constructor(cause?: unknown) {
    const kept = cause instanceof InterruptedDownloadError ? cause : undefined;
    super(kept ? `interrupted; ${kept.received} bytes kept in ${kept.partial}` : "interrupted");
    this.kept = kept;
  }
}

/** Downloads one file with a progress line and prints its summary. */
async function fetchOne(client: CacheClient, job: Job, display: Display) {
  const { progress, invocation } = display;
  const id = progress.start(job.dest);
  const started = performance.now();
  let result: DownloadResult;
  try {
    result = await download(client, job.path, job.dest, {
      resume: invocation.resume,
      onHeader: (header) => progress.expect(id, header.size, header.offset),
      onProgress: (bytes) => progress.advance(id, bytes),
    });
  } finally {
    progress.finish(id);
  }
  const seconds = (performance.now() - started) / 1000;
  if (!invocation.quiet && !invocation.json) {
    progress.print(`saved ${escapeControls(job.dest)} (${describeTransfer(result, seconds)})`);
  }
  return result;
}

/** The summary's figures: `300 KiB in 0.012 s, 24 MiB/s, hit, verified sha256`. */
function describeTransfer(result: Omit<DownloadResult, "dest">, seconds: number): string {
  const parts = [
    `${formatBytes(result.size)} in ${formatElapsed(seconds)}`,
    formatRate(result.length, seconds),
    result.cache ?? "cache unknown",
  ];
  if (result.offset > 0) parts.push(`resumed at ${formatBytes(result.offset)}`);
  parts.push(result.verified ? "verified sha256" : "not verified: no sha256 from the server");
  return parts.join(", ");
}

/** `get PATH -o -`: the body to stdout as it arrives, the summary to stderr. */
async function runToStdout(client: CacheClient, invocation: Invocation): Promise<number> {
  const { progress } = createDisplay(invocation);
  const [path] = invocation.args;
  const id = progress.start(baseName(path));
  const started = performance.now();
  let result;
  try {
    result = await client.get(path, {
      onHeader: (header) => progress.expect(id, header.size, header.offset),
      sink: async (chunk) => {
        await writeAll(Deno.stdout, chunk);
        progress.advance(id, chunk.length);
      },
    });
  } finally {
    progress.finish(id);
  }
  const seconds = (performance.now() - started) / 1000;
  if (!invocation.quiet) {
    progress.print(
      `wrote ${escapeControls(path)} to stdout (${describeTransfer(result, seconds)})`,
    );
  }
  return 0;
}

/**
 * `get -r DIR`: lists the tree (`FILES`, one pipelined round per level),
 * skips files already present with the server's size and sha256 (`STAT`,
 * pipelined), and downloads the rest as a batch into `OUT/DIR/...`.
 */
async function runMirror(client: CacheClient, invocation: Invocation): Promise<number> {
  const display = createDisplay(invocation);
  const started = performance.now();
  const root = normalizeDir(invocation.args[0]);
  const into = joinPath(invocation.output ?? "", root) || ".";
  const tree = await walk(client, root);
  for (const dir of tree.dirs) await Deno.mkdir(joinPath(into, dir) || ".", { recursive: true });
  const outcomes: Outcome[] = [];
  const jobs: Job[] = [];
  for (const { job, skipped, error } of await compareLocal(client, tree.files, into)) {
    if (error !== undefined) {
      outcomes.push({ job, error });
      reportError(display, error);
    } else if (skipped) {
      outcomes.push({ job, skipped });
    } else {
      jobs.push(job);
    }
  }
  outcomes.push(...await fetchAll(client, jobs, display));
  outcomes.sort((a, b) => a.job.path < b.job.path ? -1 : a.job.path > b.job.path ? 1 : 0);
  const seconds = (performance.now() - started) / 1000;
  if (!invocation.quiet) {
    if (invocation.json) {
      console.log(JSON.stringify({ dir: root, into, ...batchJson(outcomes) }));
    } else {
      const what = root === "" ? "/" : escapeControls(root);
      display.progress.print(
        `mirrored ${what} into ${escapeControls(into)}: ${tally(outcomes, seconds)}`,
      );
    }
  }
  return Math.max(0, ...outcomes.map((outcome) => exitStatus(outcome.error)));
}

/** A file of the served tree: its path on the server and below the mirrored directory. */
interface TreeFile {
  path: string;
  relative: string;
  size: number;
}

/** Lists the tree below `root` ("" for the served directory), one `FILES` round per level. */
async function walk(
  client: CacheClient,
  root: string,
): Promise<{ files: TreeFile[]; dirs: string[] }> {
  const files: TreeFile[] = [];
  const dirs: string[] = [""];
  let level = [""];
  while (level.length > 0) {
    const listings = await Promise.all(level.map((dir) => client.files(joinPath(root, dir))));
    const deeper: string[] = [];
    listings.forEach((listing, i) => {
      for (const entry of listing.entries) {
        const relative = joinPath(level[i], entry.name);
        // A name from the server must not lead outside the mirror.
        checkPath(joinPath(root, relative));
        if (entry.type === "dir") deeper.push(relative);
        else files.push({ path: joinPath(root, relative), relative, size: entry.size });
      }
    });
    dirs.push(...deeper);
    level = deeper;
  }
  files.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  return { files, dirs };
}

/**
 * Decides which files a mirror fetches: those missing here, of another
 * size, without a sha256 on the server (not cached), or whose sha256 differs.
 */
async function compareLocal(
  client: CacheClient,
  files: TreeFile[],
  into: string,
): Promise<{ job: Job; skipped?: Outcome["skipped"]; error?: unknown }[]> {
  const jobs = files.map((file) => ({ path: file.path, dest: joinPath(into, file.relative) }));
  const sizes = await Promise.all(jobs.map((job) => localFileSize(job.dest)));
  // Pipelined: one round trip for all the STATs.
  const stats = await Promise.allSettled(
    files.map((file, i) => sizes[i] === file.size ? client.stat(file.path) : undefined),
  );
  const decisions = [];
  for (const [i, job] of jobs.entries()) {
    const stat = stats[i];
    if (stat.status === "rejected") {
      // Let the download report it (the file may have gone: a 404).
      if (!leavesConnectionUsable(stat.reason)) throw stat.reason;
      decisions.push({ job });
      continue;
    }
    const remote = stat.value;
    if (remote?.sha256 && remote.size === sizes[i] && await hashFile(job.dest) === remote.sha256) {
      decisions.push({ job, skipped: { size: remote.size, sha256: remote.sha256 } });
    } else {
      decisions.push({ job });
    }
  }
  return decisions;
}

/** `2 saved, 1 skipped, 1 failed (600 KiB in 0.050 s, 12 MiB/s)` */
function tally(outcomes: Outcome[], seconds: number): string {
  const count = (which: (outcome: Outcome) => unknown) => outcomes.filter(which).length;
  const bytes = outcomes.reduce((sum, outcome) => sum + (outcome.result?.length ?? 0), 0);
  const counts = [`${count((o) => o.result)} saved`];
  const skipped = count((o) => o.skipped);
  if (skipped > 0) counts.push(`${skipped} up to date`);
  counts.push(`${count((o) => o.error !== undefined)} failed`);
  const figures = bytes === 0
    ? `nothing transferred, ${formatElapsed(seconds)}`
    : `${formatBytes(bytes)} in ${formatElapsed(seconds)}, ${formatRate(bytes, seconds)}`;
  return `${counts.join(", ")} (${figures})`;
}

function batchJson(outcomes: Outcome[]): Record<string, unknown> {
  return {
    files: outcomes.map(outcomeJson),
    saved: outcomes.filter((outcome) => outcome.result).length,
    skipped: outcomes.filter((outcome) => outcome.skipped).length,
    failed: outcomes.filter((outcome) => outcome.error !== undefined).length,
  };
}

/** One file's outcome as JSON: `saved` is where it went (or would have gone). */
function outcomeJson(outcome: Outcome): Record<string, unknown> {
  const { job, result, skipped, error } = outcome;
  if (result) {
    const { dest: _, ...fields } = result;
    return { path: job.path, status: "saved", saved: job.dest, ...fields };
  }
  if (skipped) return { path: job.path, status: "skipped", saved: job.dest, ...skipped };
  const code = error instanceof ServerError ? { code: error.code } : {};
  return {
    path: job.path,
    status: "failed",
    saved: job.dest,
    error: describeError(error),
    ...code,
  };
}

function reportError(display: Display, error: unknown): void {
  display.progress.print(`tcpcache: ${describeError(error)}`);
}

// ---------------------------------------------------------------------------
// Errors and exit statuses

/** The message for an error, with what to do next where there is something to do. */
function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof InterruptedDownloadError || (error instanceof Interrupted && error.kept)) {
    return `${message} (get --continue finishes it)`;
  }
  return message;
}

/**
 * 0 no error; 1 a server error, failed verification or local failure; 3 a
 * connection failure; 130 interrupted by Ctrl-C (128 + SIGINT, as shells do).
 */
function exitStatus(error: unknown): number {
  if (error === undefined) return 0;
  if (error instanceof Interrupted) return 130;
  if (error instanceof ServerError || error instanceof IntegrityError) return 1;
  if (error instanceof ResumeError) return 1;
  if (error instanceof ConnectionError) return 3;
  return 1;
}

// ---------------------------------------------------------------------------
// Files and paths

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** The size of a regular file here, or undefined when there is none. */
async function localFileSize(path: string): Promise<number | undefined> {
  try {
    const info = await Deno.stat(path);
    return info.isFile ? info.size : undefined;
  } catch {
    return undefined;
  }
}

/** Hex sha256 of a file, read in chunks. */
async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

function baseName(path: string): string {
  return path.split("/").filter((part) => part !== "").pop() ?? path;
}

/** `docs/`, `/docs` → `docs`; `/`, `.` and `` → `` (the served directory). */
function normalizeDir(dir: string): string {
  return dir.split("/").filter((part) => part !== "" && part !== ".").join("/");
}

/** Joins path parts with `/`, leaving out empty ones (an absolute first part stays so). */
function joinPath(...parts: string[]): string {
  const kept = parts.filter((part) => part !== "");
  return kept.map((part, i) => i === 0 ? part.replace(/(.)\/+$/, "$1") : part).join("/");
}

// ---------------------------------------------------------------------------
// The terminal

const encoder = new TextEncoder();

function writeStderr(text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

function terminalColumns(): number {
  try {
    return Deno.consoleSize().columns || 80;
  } catch {
    return 80;
  }
}

function envOr(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch {
    return fallback; // no --allow-env
  }
}

// ---------------------------------------------------------------------------
// Human output of list, files, stat and stats

/** Formats milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC). */
function formatTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}

/** Lays rows out in columns padded to their widest cell. */
function formatTable(rows: string[][], rightAligned: number[] = []): string {
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  return rows.map((row) =>
    row.map((cell, column) => {
      const last = column === row.length - 1;
      if (rightAligned.includes(column)) return cell.padStart(widths[column]);
      return last ? cell : cell.padEnd(widths[column]);
    }).join("  ")
  ).join("\n");
}

function formatListing(listing: CacheListing | ClusterListing): string {
  const cluster = "nodes" in listing;
  const rows = [["#", "SIZE", "ADMITTED (UTC)", ...(cluster ? ["NODE"] : []), "PATH"]];
  listing.entries.forEach((entry, i) => {
    rows.push([
      String(i + 1),
      formatBytes(entry.size),
      formatTime(entry.admitted),
      ...("node" in entry ? [entry.node as string] : []),
      escapeControls(entry.path),
    ]);
  });
  const percent = listing.capacity > 0 ? (100 * listing.used / listing.capacity).toFixed(1) : "0";
  const count = listing.entries.length;
  const order = cluster ? "each node's entries in its eviction order" : "#1 is evicted next";
  let summary = `${count} ${count === 1 ? "entry" : "entries"}, ` +
    `${formatBytes(listing.used)} of ${formatBytes(listing.capacity)} used (${percent}%), ` +
    `policy ${listing.policy}; ${order}`;
  if (cluster) {
    const down = listing.nodes.filter((node) => !node.up).map((node) => node.node);
    summary += `; ${listing.nodes.length - down.length} of ${listing.nodes.length} nodes up` +
      (down.length > 0 ? ` (down: ${down.join(", ")})` : "");
  }
  return count === 0 ? summary : `${formatTable(rows, [0, 1])}\n${summary}`;
}

function formatFiles(listing: FileListing): string {
  const title = `/${escapeControls(listing.path)}`;
  if (listing.entries.length === 0) return `${title}: empty`;
  const rows = [["TYPE", "SIZE", "MODIFIED (UTC)", "NAME"]];
  for (const entry of listing.entries) {
    const dir = entry.type === "dir";
    rows.push([
      entry.type,
      dir ? "-" : formatBytes(entry.size),
      formatTime(entry.mtime),
      escapeControls(entry.name) + (dir ? "/" : ""),
    ]);
  }
  return `${title}\n${formatTable(rows, [1])}`;
}

/**
 * Formats a (nested) record as `key: value` lines, nested keys indented and
 * every value starting in one column.
 */
function formatRecord(record: Record<string, unknown>): string {
  const lines: [label: string, value: string | undefined][] = [];
  const collect = (object: Record<string, unknown>, indent: string) => {
    for (const [key, value] of Object.entries(object)) {
      const label = `${indent}${key}:`;
      if (value !== null && typeof value === "object") {
        const inner = value as Record<string, unknown>;
        lines.push([label, Object.keys(inner).length === 0 ? "{}" : undefined]);
        collect(inner, indent + "  ");
      } else {
        lines.push([label, describeValue(key, value)]);
      }
    }
  };
  collect(record, "");
  const width = Math.max(...lines.map(([label, value]) => value === undefined ? 0 : label.length));
  return lines.map(([label, value]) =>
    value === undefined ? label : `${label.padEnd(width)} ${value}`
  ).join("\n");
}

/** A value with a readable form beside it: times as dates, byte counts in units. */
function describeValue(key: string, value: unknown): string {
  if (typeof value === "string") return escapeControls(value);
  if (typeof value !== "number") return String(value);
  if (key === "mtime" || key === "admitted") return `${value} (${formatTime(value)} UTC)`;
  if (key === "uptimeMs") return `${value} (${formatElapsed(value / 1000)})`;
  if (/^(size|used|capacity|bytes|memory)/.test(key) && value >= 1024) {
    return `${value} (${formatBytes(value)})`;
  }
  return String(value);
}
