/**
 * What the command-line test suites share: running `client.ts` and `mod.ts`
 * as subprocesses, temporary directories, a fake server, and parsers of the
 * client's output.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { writeAll } from "../../util/byte_reader.ts";

/** The client's entry point, as a path for `deno run`. */
export const CLIENT = fileURLToPath(new URL("../../client.ts", import.meta.url));
/** The `tcpcache` entry point. */
export const MOD = fileURLToPath(new URL("../../mod.ts", import.meta.url));
/** The permissions the client's deno task grants. */
export const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

/** What a finished subprocess left: its exit code and its output. */
export interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as bytes, exactly. */
  stdoutBytes: Uint8Array;
}

/** Runs `deno run PERMISSIONS script ...args` in `cwd` and waits for it to exit. */
export function run(
  script: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<Outcome> {
  return runCommand(Deno.execPath(), ["run", ...PERMISSIONS, script, ...args], cwd, env);
}

/** Runs any command in `cwd`, without stdin and with NO_COLOR, and waits for it to exit. */
export async function runCommand(
  command: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<Outcome> {
  const output = await new Deno.Command(command, {
    args,
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
    stdoutBytes: output.stdout,
  };
}

/** Runs the client's command line (`client.ts ...args`) in `cwd`. */
export function cli(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<Outcome> {
  return run(CLIENT, args, cwd, env);
}

/** Runs `test` with a fresh temporary directory, removed afterwards. */
export async function withTempDir(test: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-cli-" });
  try {
    await test(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The names in a directory, sorted. */
export async function namesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

/** Milliseconds since the epoch as the CLI prints them: `YYYY-MM-DD HH:MM:SS` UTC. */
export function utc(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace("T", " ");
}

/** A file's modification time, in ms since the epoch. */
export async function mtimeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mtime!.getTime();
}

/**
 * Parses the `key: value` lines of `stat` and `stats` (values aligned in one
 * column) into dotted keys (`connections.open`). A readable annotation after a value, such as
 * `1048576 (1.0 MiB)`, is dropped: the tests check the values themselves.
 */
export function parseRecord(text: string): Record<string, string> {
  assert.ok(text.endsWith("\n"), "ends with a newline");
  const record: Record<string, string> = {};
  const sections: string[] = [];
  for (const line of text.slice(0, -1).split("\n")) {
    const match = /^( *)([^ :]+):(?: +(.*))?$/.exec(line);
    assert.ok(match, `not a key: value line: ${JSON.stringify(line)}`);
    const [, indent, key, value] = match;
    sections.length = indent.length / 2;
    if (value === undefined) {
      sections.push(key);
    } else {
      record[[...sections, key].join(".")] = value.replace(/ \(.*\)$/, "");
    }
  }
  return record;
}

/** Checks a process's output: exactly `expected` when it is a string, else matching it. */
export function assertOutput(actual: string, expected: string | RegExp, message?: string): void {
  if (typeof expected === "string") assert.equal(actual, expected, message);
  else assert.match(actual, expected, message);
}

/** Escapes `text` for use inside a regular expression. */
export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** What a summary line says beyond size, time, rate and cache outcome. */
export interface SummaryOptions {
  /** The size a resumed download started at, as printed (`150 KiB`). */
  resumedAt?: string;
  /** Whether the sha256 was verified; true unless said otherwise. */
  verified?: boolean;
}

/**
 * The regular expression source of the "saved DEST (...)" line `get` prints
 * for one file, without anchors or newline.
 */
export function summarySource(
  dest: string,
  size: string,
  cache: "hit" | "miss" | "bypass",
  options: SummaryOptions = {},
): string {
  const resumed = options.resumedAt ? `, resumed at ${escapeRegExp(options.resumedAt)}` : "";
  const check = options.verified === false
    ? "not verified: no sha256 from the server"
    : "verified sha256";
  return `saved ${escapeRegExp(dest)} \\(${escapeRegExp(size)} in [0-9]+\\.[0-9]{3} s, ` +
    `[0-9.]+ (B|KiB|MiB|GiB|TiB)/s, ${cache}${resumed}, ${check}\\)`;
}

/** The "saved ..." summary line `get` prints on stderr, as the whole of stderr. */
export function summaryPattern(
  dest: string,
  size: string,
  cache: "hit" | "miss" | "bypass",
  options: SummaryOptions = {},
): RegExp {
  return new RegExp(`^${summarySource(dest, size, cache, options)}\\n$`);
}

/** A port on 127.0.0.1 that nothing listens on (it was free a moment ago). */
export function deadPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/**
 * Runs `test` against a fake server on 127.0.0.1 that reads one request
 * line per connection, answers `response` verbatim and closes; with `hold`,
 * it keeps the connection open, silent, until the test ends (a server that
 * stalls mid-answer). Resolves to the request lines it received.
 */
export async function withFakeServer(
  response: Uint8Array,
  test: (port: number) => Promise<void>,
  options: { hold?: boolean } = {},
): Promise<string[]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const requests: string[] = [];
  const testDone = Promise.withResolvers<void>();
  const serving = (async () => {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return; // the listener was closed
      }
      try {
        requests.push(await readRequestLine(conn));
        await writeAll(conn, response);
        if (options.hold) await testDone.promise;
      } catch {
        // the client went away: the test checks what it saw
      } finally {
        conn.close();
      }
    }
  })();
  try {
    await test(listener.addr.port);
  } finally {
    testDone.resolve();
    listener.close();
    await serving;
  }
  return requests;
}

/** Reads up to and excluding the first LF (the whole request, for our client). */
async function readRequestLine(conn: Deno.Conn): Promise<string> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(1024);
  while (!chunks.includes(0x0a)) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(...buffer.subarray(0, n));
  }
  const end = chunks.indexOf(0x0a);
  return new TextDecoder().decode(new Uint8Array(chunks.slice(0, end < 0 ? undefined : end)));
}
