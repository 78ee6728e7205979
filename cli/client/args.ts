/**
 * The client's command line, parsed: which command, its arguments, the
 * server (flags, else `TCPCACHE_HOST`, `TCPCACHE_PORT`, `TCPCACHE_NODES`,
 * else {@linkcode DEFAULTS}) and the options of `get`. Every wrong
 * invocation is a {@linkcode UsageError}, found before anything connects.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type NodeAddress, parseNodes } from "../../client/cluster.ts";
import { DEFAULTS } from "../../defaults.ts";
import { UsageError } from "../flags.ts";
import { baseName } from "./paths.ts";

/** The commands of the client's command line. */
export const COMMANDS = ["get", "list", "files", "stat", "stats", "ping"] as const;

/** A command of the client's command line. */
export type CommandName = typeof COMMANDS[number];

/** The most connections `--parallel` may open. */
export const MAX_PARALLEL = 64;

/** The connections a `get` opens without `--parallel`. */
export const DEFAULT_PARALLEL: number = DEFAULTS.parallel;

/** What the command line asked for. */
export interface Invocation {
  /** The command to run. */
  command: CommandName;
  /** The command's arguments (paths, a directory). */
  args: string[];
  /** The server's address. */
  host: string;
  /** The server's port. */
  port: number;
  /** A cluster's nodes (`--nodes`), instead of one server. */
  nodes?: NodeAddress[];
  /** `-o`: where `get` saves; `-` is stdout. */
  output?: string;
  /** `-r`: `get` mirrors a directory tree. */
  recursive: boolean;
  /** `--parallel`: the connections a `get` may open at once. */
  parallel: number;
  /** `--continue`: `get` finishes a `NAME.part`. */
  resume: boolean;
  /** `--json`: the outcome as JSON on stdout. */
  json: boolean;
  /** `--quiet`: nothing but errors. */
  quiet: boolean;
  /** TLS and the token: `--tls`, `--ca`/`TCPCACHE_CA`, `--token-file`/`TCPCACHE_TOKEN`. */
  security: SecurityArgs;
}

/** How the command line asks to reach the server: files are read when it connects. */
export interface SecurityArgs {
  /** Speak TLS (also implied by a CA file). */
  tls: boolean;
  /** A file of CA certificates (PEM) to trust instead of the system's roots. */
  caFile?: string;
  /** A file whose first line is the token to present. */
  tokenFile?: string;
  /** The token itself, from `TCPCACHE_TOKEN` (never a flag: it would show in `ps`). */
  token?: string;
}

/** What the command line asks: a command to run, a help text to show, or the version. */
export type ParsedArgs = Invocation | { help: CommandName | undefined } | "version";

/** Where the command line reads its environment variables: `Deno.env`, or a stand-in. */
export interface EnvSource {
  /** The variable's value, or undefined when it is not set. */
  get(name: string): string | undefined;
}

/**
 * An environment variable, or undefined when it is not set or may not be
 * read (no `--allow-env`).
 */
export function readEnv(name: string, env: EnvSource = Deno.env): string | undefined {
  try {
    return env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

/**
 * Parses the client's command line: flags anywhere, then the command and its
 * arguments, or the positional forms (`HOST PORT list`,
 * `HOST PORT FILE [DIR]`). Throws a {@linkcode UsageError} (or the
 * `TypeError` of `node:util`'s `parseArgs` for an unknown flag) when the
 * command line is wrong.
 *
 * @example
 * ```ts
 * import { parseClientArgs } from "./args.ts";
 * const parsed = parseClientArgs(["get", "docs/a.txt", "-o", "out"], new Map());
 * if (typeof parsed === "object" && "command" in parsed) console.log(parsed.output); // out
 * ```
 */
export function parseClientArgs(args: string[], env: EnvSource = Deno.env): ParsedArgs {
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
      tls: { type: "boolean", default: false },
      ca: { type: "string" },
      "token-file": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean" },
    },
    allowPositionals: true,
  });
  if (values.help) return { help: isCommand(positionals[0]) ? positionals[0] : undefined };
  if (values.version) return "version";
  let host = values.host ?? readEnv("TCPCACHE_HOST", env) ?? DEFAULTS.host;
  let port = values.port ?? readEnv("TCPCACHE_PORT", env) ?? String(DEFAULTS.port);
  let [command, ...rest] = positionals;
  let output = values.output;
  if (!isCommand(command) && positionals.length >= 3 && /^[0-9]+$/.test(positionals[1])) {
    // The positional forms: HOST PORT list | HOST PORT FILE [DIR]
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
  const nodes = values.nodes ?? env.get("TCPCACHE_NODES");
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
    security: securityArgs(values, env),
  };
  checkGetOptions(invocation, values.parallel !== undefined);
  return invocation;
}

function securityArgs(
  values: { tls: boolean; ca?: string; "token-file"?: string },
  env: EnvSource,
): SecurityArgs {
  const caFile = values.ca ?? readEnv("TCPCACHE_CA", env);
  const tokenFile = values["token-file"];
  const token = tokenFile === undefined ? readEnv("TCPCACHE_TOKEN", env) : undefined;
  return { tls: values.tls || caFile !== undefined, caFile, tokenFile, token };
}

function parseNodeList(text: string): NodeAddress[] {
  try {
    return parseNodes(text);
  } catch (error) {
    throw new UsageError(`invalid --nodes: ${(error as Error).message}`);
  }
}

function parseParallel(text: string | undefined): number {
  if (text === undefined) return DEFAULT_PARALLEL;
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

/** Whether `word` names a command. */
function isCommand(word: string | undefined): word is CommandName {
  return (COMMANDS as readonly string[]).includes(word ?? "");
}
