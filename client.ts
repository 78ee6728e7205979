/**
 * The tcpcache client: a connection object for programs, and the command
 * line for people (`deno task client get docs/readme.txt`, see `--help`).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { ByteReader, writeAll } from "./byte_reader.ts";
import {
  type Command,
  DEFAULT_PORT,
  escapeControls,
  formatRequest,
  parseResponseHeader,
} from "./protocol.ts";
import { formatBytes } from "./units.ts";
import { VERSION } from "./version.ts";

/** The server answered `ERR <code> <message>`. */
export class ServerError extends Error {
  /** The three-digit code the server sent. */
  readonly code: number;

  /** Creates the error for a server's `ERR` answer. */
  constructor(code: number, message: string) {
    super(message);
    this.name = "ServerError";
    this.code = code;
  }
}

/** The connection broke, or the server's answer was not the protocol. */
export class ConnectionError extends Error {
  /** Creates the error, keeping what caused it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectionError";
  }
}

/** A whole download's bytes did not match the sha256 the server sent. */
export class IntegrityError extends Error {
  /** Creates the error for `path`. */
  constructor(path: string, expected: string, actual: string) {
    super(`sha256 mismatch for ${path}: server said ${expected}, received ${actual}`);
    this.name = "IntegrityError";
  }
}

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /**
   * The server's host name or address.
   * @default {"127.0.0.1"}
   */
  host?: string;
  /**
   * The server's port.
   * @default {9089}
   */
  port?: number;
}

/** Options of {@linkcode TcpCacheClient.get}. */
export interface GetOptions {
  /**
   * The first byte wanted.
   * @default {0}
   */
  offset?: number;
  /**
   * How many bytes are wanted; the rest of the file when omitted.
   * @default {undefined}
   */
  length?: number;
  /**
   * Receives the body chunk by chunk instead of collecting it in memory. A
   * chunk is only valid until the returned promise settles.
   * @default {undefined}
   */
  sink?: (chunk: Uint8Array) => Promise<void> | void;
}

/** What {@linkcode TcpCacheClient.get} resolves to. */
export interface GetResult {
  /** The whole file's size. */
  size: number;
  /** The first byte sent. */
  offset: number;
  /** The number of bytes sent. */
  length: number;
  /** The file's modification time, ms since the epoch. */
  mtime: number;
  /** Where the server took the bytes from. */
  cache: "hit" | "miss" | "bypass";
  /** The whole file's sha256, when the server knows it. */
  sha256?: string;
  /** True when the whole file was received and matched `sha256`. */
  verified: boolean;
  /** The body, unless a `sink` took it. */
  bytes?: Uint8Array;
}

/** An entry of `LIST`. */
export interface CacheListing {
  capacity: number;
  used: number;
  policy: string;
  entries: { path: string; size: number; admitted: number }[];
}

/** An answer to `FILES`. */
export interface FileListing {
  path: string;
  entries: { name: string; type: "file" | "dir"; size: number; mtime: number }[];
}

/** An answer to `STAT`. */
export interface FileStat {
  path: string;
  size: number;
  mtime: number;
  cached: boolean;
  sha256: string | null;
}

/** An answer to `STATS` (see `ServerStats` in server.ts). */
export type Stats = Record<string, unknown> & {
  version: string;
  requests: number;
  hits: number;
  misses: number;
  bypasses: number;
};

type Header = { length: number; fields: Record<string, string> };

/**
 * Connects to a tcpcache server.
 *
 * @example
 * ```ts
 * import { connect } from "./client.ts";
 * const client = await connect({ host: "127.0.0.1", port: 9089 });
 * const { bytes, cache } = await client.get("hello.txt");
 * console.log(cache, new TextDecoder().decode(bytes));
 * client.close();
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<TcpCacheClient> {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? DEFAULT_PORT;
  try {
    const conn = await Deno.connect({ hostname: host, port });
    conn.setNoDelay(true);
    return new TcpCacheClient(conn);
  } catch (error) {
    throw new ConnectionError(`cannot connect to ${host}:${port}: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * One connection to a server. Requests may be issued without waiting for
 * earlier ones: they are pipelined, and answered in order.
 */
export class TcpCacheClient {
  #conn: Deno.Conn;
  #reader: ByteReader;
  #writes: Promise<unknown> = Promise.resolve();
  #reads: Promise<unknown> = Promise.resolve();

  /** Wraps an open connection (see {@linkcode connect}). */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#reader = new ByteReader(conn);
  }

  /**
   * Fetches a file or a byte range of it. A whole file is verified against
   * the server's sha256 when it sends one.
   *
   * @throws {ServerError} when the server answers an error (e.g. 404).
   * @throws {IntegrityError} when the bytes do not match the sha256.
   */
  get(path: string, options: GetOptions = {}): Promise<GetResult> {
    const args: (string | number)[] = [path];
    if (options.offset !== undefined || options.length !== undefined) {
      args.push(options.offset ?? 0);
      if (options.length !== undefined) args.push(options.length);
    }
    return this.#exchange("GET", args, async ({ length, fields }) => {
      const size = Number(fields.size ?? length);
      const offset = Number(fields.offset ?? 0);
      const whole = offset === 0 && length === size;
      const hash = whole && fields.sha256 ? createHash("sha256") : undefined;
      let bytes: Uint8Array | undefined;
      let filled = 0;
      if (!options.sink) bytes = new Uint8Array(length);
      await this.#reader.readBody(length, async (chunk) => {
        hash?.update(chunk);
        if (bytes) {
          bytes.set(chunk, filled);
          filled += chunk.length;
        } else {
          await options.sink!(chunk);
        }
      });
      if (hash) {
        const actual = hash.digest("hex");
        if (actual !== fields.sha256) throw new IntegrityError(path, fields.sha256, actual);
      }
      return {
        size,
        offset,
        length,
        mtime: Number(fields.mtime ?? 0),
        cache: fields.cache as GetResult["cache"],
        sha256: fields.sha256,
        verified: hash !== undefined,
        bytes,
      };
    });
  }

  /** The cache's contents, in eviction order. */
  list(): Promise<CacheListing> {
    return this.#json("LIST");
  }

  /** The entries of a directory on the server ("" for the served directory). */
  files(dir = ""): Promise<FileListing> {
    return this.#json("FILES", dir === "" ? [] : [dir]);
  }

  /** A file's size, mtime, and whether (and with which sha256) it is cached. */
  stat(path: string): Promise<FileStat> {
    return this.#json("STAT", [path]);
  }

  /** The server's counters. */
  stats(): Promise<Stats> {
    return this.#json("STATS");
  }

  /** Checks that the server answers. */
  async ping(): Promise<void> {
    await this.#exchange("PING", [], () => {});
  }

  /** Says goodbye (`QUIT`) and closes the connection. */
  async quit(): Promise<void> {
    await this.#exchange("QUIT", [], () => {});
    this.close();
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }

  #json<T>(command: Command, args: string[] = []): Promise<T> {
    return this.#exchange(command, args, async ({ length }) => {
      const body = new Uint8Array(length);
      let filled = 0;
      await this.#reader.readBody(length, (chunk) => {
        body.set(chunk, filled);
        filled += chunk.length;
      });
      return JSON.parse(new TextDecoder().decode(body)) as T;
    });
  }

  /**
   * Sends a request at once and reads its answer after every earlier
   * answer: writes and reads are two queues, so requests pipeline.
   */
  #exchange<T>(
    command: Command,
    args: (string | number)[],
    readBody: (header: Header) => Promise<T> | T,
  ): Promise<T> {
    const line = new TextEncoder().encode(formatRequest(command, args));
    const written = this.#writes.then(() => writeAll(this.#conn, line));
    this.#writes = written.catch(() => {});
    const answered = this.#reads.then(async () => {
      await written.catch((error) => {
        throw new ConnectionError(`connection broken: ${error.message}`, { cause: error });
      });
      return readBody(await this.#readHeader());
    });
    this.#reads = answered.catch(() => {});
    return answered.catch((error) => {
      if (error instanceof ServerError || error instanceof IntegrityError) throw error;
      if (error instanceof ConnectionError) throw error;
      throw new ConnectionError(`connection broken: ${error.message}`, { cause: error });
    });
  }

  async #readHeader(): Promise<Header> {
    const line = await this.#reader.readLine(64 * 1024);
    if (line === null) throw new ConnectionError("the server closed the connection");
    const header = parseResponseHeader(new TextDecoder().decode(line));
    if (!header.ok) throw new ServerError(header.code, header.message);
    return header;
  }
}

/** Options of {@linkcode download}. */
export interface DownloadOptions {
  /** Called with each chunk's size as it arrives (for progress). */
  onProgress?: (bytes: number) => void;
}

/**
 * Downloads a whole file to `dest`. The bytes go to `dest.part`, which is
 * renamed to `dest` only once complete and verified; on failure it is
 * removed, so `dest` never holds partial content.
 */
export async function download(
  client: TcpCacheClient,
  path: string,
  dest: string,
  options: DownloadOptions = {},
): Promise<GetResult> {
  const partial = `${dest}.part`;
  const file = await Deno.open(partial, { write: true, create: true, truncate: true });
  let result: GetResult;
  try {
    result = await client.get(path, {
      sink: async (chunk) => {
        await writeAll(file, chunk);
        options.onProgress?.(chunk.length);
      },
    });
    file.close();
  } catch (error) {
    file.close();
    await Deno.remove(partial).catch(() => {});
    throw error;
  }
  await Deno.rename(partial, dest);
  return result;
}

// ---------------------------------------------------------------------------
// The command line

const USAGE = `tcpcache client ${VERSION}: fetch files from a tcpcache server

Usage: deno task client [--host HOST] [--port PORT] COMMAND [ARGS] [options]
       tcpcache COMMAND [ARGS] [options]

Commands:
  get PATH [-o DEST]   download a file (to its base name here, or to DEST;
                       DEST may be a directory)
  list                 the cache's entries, in eviction order
  files [DIR]          browse the served directory
  stat PATH            a file's size, mtime and cache state
  stats                the server's counters
  ping                 check that the server answers

Options:
  --host HOST      server address (default: $TCPCACHE_HOST or 127.0.0.1)
  --port PORT      server port (default: $TCPCACHE_PORT or ${DEFAULT_PORT})
  -o, --output P   where get saves the file
  --json           print the server's JSON as it is
  -q, --quiet      print nothing but errors
  -h, --help       show this help
  --version        print the version

The original assignment's command lines work too:
  client.ts HOST PORT list          list the cache
  client.ts HOST PORT FILE DIR      fetch FILE into DIR

Exit status: 0 success, 1 the server answered an error (or the bytes failed
verification), 2 usage error, 3 cannot connect or the connection broke.

Examples:
  deno task client get docs/readme.txt
  deno task client --port 9090 list --json
`;

/** A command the client's command line runs. */
interface Invocation {
  command: "get" | "list" | "files" | "stat" | "stats" | "ping";
  args: string[];
  host: string;
  port: number;
  output?: string;
  json: boolean;
  quiet: boolean;
}

class UsageError extends Error {}

const COMMANDS = ["get", "list", "files", "stat", "stats", "ping"] as const;

/**
 * The client's command line. Resolves to the exit status: 0 success, 1 the
 * server answered an error, 2 usage error, 3 connection failure.
 */
export async function clientMain(args: string[]): Promise<number> {
  let invocation: Invocation | "help" | "version";
  try {
    invocation = parseClientArgs(args);
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  if (invocation === "help") {
    console.log(USAGE);
    return 0;
  }
  if (invocation === "version") {
    console.log(`tcpcache ${VERSION}`);
    return 0;
  }
  try {
    await run(invocation);
    return 0;
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}`);
    if (error instanceof ServerError || error instanceof IntegrityError) return 1;
    if (error instanceof ConnectionError) return 3;
    return 1;
  }
}

function parseClientArgs(args: string[]): Invocation | "help" | "version" {
  const { values, positionals } = parseArgs({
    args,
    options: {
      host: { type: "string" },
      port: { type: "string" },
      output: { type: "string", short: "o" },
      json: { type: "boolean", default: false },
      quiet: { type: "boolean", short: "q", default: false },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (values.help) return "help";
  if (values.version) return "version";
  let host = values.host ?? Deno.env.get("TCPCACHE_HOST") ?? "127.0.0.1";
  let port = values.port ?? Deno.env.get("TCPCACHE_PORT") ?? String(DEFAULT_PORT);
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
  const arity: Record<Invocation["command"], [number, number]> = {
    get: [1, 1],
    list: [0, 0],
    files: [0, 1],
    stat: [1, 1],
    stats: [0, 0],
    ping: [0, 0],
  };
  const [min, max] = arity[command];
  if (rest.length < min || rest.length > max) {
    throw new UsageError(`${command} takes ${min === max ? min : `${min} or ${max}`} argument(s)`);
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) {
    throw new UsageError(`invalid port: ${port}`);
  }
  return {
    command,
    args: rest,
    host,
    port: Number(port),
    output,
    json: values.json,
    quiet: values.quiet,
  };
}

function isCommand(word: string | undefined): word is Invocation["command"] {
  return (COMMANDS as readonly string[]).includes(word ?? "");
}

async function run(invocation: Invocation): Promise<void> {
  const client = await connect(invocation);
  try {
    const print = (text: string) => {
      if (!invocation.quiet) console.log(text);
    };
    switch (invocation.command) {
      case "get":
        return await runGet(client, invocation);
      case "list": {
        const listing = await client.list();
        return print(invocation.json ? JSON.stringify(listing) : formatListing(listing));
      }
      case "files": {
        const listing = await client.files(invocation.args[0] ?? "");
        return print(invocation.json ? JSON.stringify(listing) : formatFiles(listing));
      }
      case "stat": {
        const stat = await client.stat(invocation.args[0]);
        return print(invocation.json ? JSON.stringify(stat) : formatRecord({ ...stat }));
      }
      case "stats": {
        const stats = await client.stats();
        return print(invocation.json ? JSON.stringify(stats) : formatRecord(stats));
      }
      case "ping": {
        const started = performance.now();
        await client.ping();
        const ms = (performance.now() - started).toFixed(2);
        return print(`pong from ${invocation.host}:${invocation.port} in ${ms} ms`);
      }
    }
  } finally {
    client.close();
  }
}

async function runGet(client: TcpCacheClient, invocation: Invocation): Promise<void> {
  const path = invocation.args[0];
  let dest = invocation.output ?? baseName(path);
  if (await isDirectory(dest)) dest = `${dest}/${baseName(path)}`;
  const started = performance.now();
  const result = await download(client, path, dest);
  const seconds = Math.max((performance.now() - started) / 1000, 1e-6);
  if (invocation.quiet) return;
  if (invocation.json) {
    const { bytes: _, ...fields } = result;
    console.log(JSON.stringify({ path, saved: dest, ...fields }));
    return;
  }
  const rate = formatBytes(Math.round(result.length / seconds));
  const check = result.verified ? ", verified sha256" : "";
  console.error(
    `saved ${dest} (${formatBytes(result.length)} in ${seconds.toFixed(3)} s, ${rate}/s, ` +
      `${result.cache}${check})`,
  );
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

function baseName(path: string): string {
  return path.split("/").filter((part) => part !== "").pop() ?? path;
}

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

function formatListing(listing: CacheListing): string {
  const rows = [["#", "SIZE", "ADMITTED (UTC)", "PATH"]];
  listing.entries.forEach((entry, i) => {
    rows.push([
      String(i + 1),
      formatBytes(entry.size),
      formatTime(entry.admitted),
      escapeControls(entry.path),
    ]);
  });
  const percent = listing.capacity > 0 ? (100 * listing.used / listing.capacity).toFixed(1) : "0";
  const count = listing.entries.length;
  const summary = `${count} ${count === 1 ? "entry" : "entries"}, ` +
    `${formatBytes(listing.used)} of ${formatBytes(listing.capacity)} used (${percent}%), ` +
    `policy ${listing.policy}; #1 is evicted next`;
  return count === 0 ? summary : `${formatTable(rows, [0, 1])}\n${summary}`;
}

function formatFiles(listing: FileListing): string {
  const title = `/${listing.path}`;
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

/** Formats a (nested) record as `key: value` lines. */
function formatRecord(record: Record<string, unknown>, indent = ""): string {
  return Object.entries(record).map(([key, value]) => {
    if (value !== null && typeof value === "object") {
      const inner = formatRecord(value as Record<string, unknown>, indent + "  ");
      return `${indent}${key}:` + (inner === "" ? " {}" : `\n${inner}`);
    }
    return `${indent}${key}: ${describeValue(key, value)}`;
  }).join("\n");
}

/** A value with a readable form beside it: times as dates, byte counts in units. */
function describeValue(key: string, value: unknown): string {
  if (typeof value !== "number") return String(value);
  if (key === "mtime" || key === "admitted") return `${value} (${formatTime(value)} UTC)`;
  if (/^(size|used|capacity|bytes)/.test(key) && value >= 1024) {
    return `${value} (${formatBytes(value)})`;
  }
  return String(value);
}

if (import.meta.main) {
  Deno.exit(await clientMain(Deno.args));
}
