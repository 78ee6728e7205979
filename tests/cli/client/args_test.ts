/**
 * Unit tests of the client's argument parsing (`cli/client/args.ts`): usage
 * errors, the defaults, the environment variables, the positional forms,
 * `--help` and `--version`. No process, no socket: the environment is a
 * stand-in.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  DEFAULT_PARALLEL,
  type EnvSource,
  type Invocation,
  MAX_PARALLEL,
  parseClientArgs,
  readEnv,
} from "../../../cli/client/args.ts";
import { UsageError } from "../../../cli/flags.ts";
import { DEFAULTS } from "../../../defaults.ts";

/** An environment holding only `vars`. */
function envOf(vars: Record<string, string> = {}): EnvSource {
  return { get: (name) => vars[name] };
}

/** Parses `args` with `vars` as the environment, expecting a command to run. */
function invocationOf(args: string[], vars: Record<string, string> = {}): Invocation {
  const parsed = parseClientArgs(args, envOf(vars));
  assert.ok(typeof parsed === "object" && "command" in parsed, JSON.stringify(parsed));
  return parsed;
}

/** What `ping` parses to with nothing given: every default. */
const PING: Invocation = {
  command: "ping",
  args: [],
  host: DEFAULTS.host,
  port: DEFAULTS.port,
  nodes: undefined,
  output: undefined,
  recursive: false,
  parallel: DEFAULT_PARALLEL,
  resume: false,
  json: false,
  quiet: false,
  security: { tls: false, caFile: undefined, tokenFile: undefined, token: undefined },
};

Deno.test("without flags or variables, every option has its default", () => {
  assert.deepEqual(invocationOf(["ping"]), PING);
});

const PARSED: { args: string[]; vars?: Record<string, string>; expected: Invocation }[] = [
  {
    args: ["list", "--json", "-q"],
    expected: { ...PING, command: "list", json: true, quiet: true },
  },
  { args: ["files", "docs"], expected: { ...PING, command: "files", args: ["docs"] } },
  { args: ["stat", "a.txt"], expected: { ...PING, command: "stat", args: ["a.txt"] } },
  { args: ["stats", "--host", "::1"], expected: { ...PING, command: "stats", host: "::1" } },
  {
    args: ["get", "a/x.txt", "b/y.txt", "--parallel", String(MAX_PARALLEL), "-o", "out"],
    expected: {
      ...PING,
      command: "get",
      args: ["a/x.txt", "b/y.txt"],
      output: "out",
      parallel: MAX_PARALLEL,
    },
  },
  {
    args: ["get", "-r", "docs", "-c", "--output=mirror"],
    expected: {
      ...PING,
      command: "get",
      args: ["docs"],
      output: "mirror",
      recursive: true,
      resume: true,
    },
  },
  {
    args: ["get", "a.bin", "-o", "-", "--quiet"],
    expected: { ...PING, command: "get", args: ["a.bin"], output: "-", quiet: true },
  },
  {
    args: ["--port", "9000", "get", "a.bin", "--host", "10.0.0.1"],
    expected: { ...PING, command: "get", args: ["a.bin"], host: "10.0.0.1", port: 9000 },
  },
  {
    args: ["ping", "--nodes", "127.0.0.1:9001,127.0.0.1:9002"],
    expected: { ...PING, nodes: ["127.0.0.1:9001", "127.0.0.1:9002"] },
  },
  // The positional forms.
  {
    args: ["10.0.0.1", "9000", "list"],
    expected: { ...PING, command: "list", host: "10.0.0.1", port: 9000 },
  },
  {
    args: ["10.0.0.1", "9000", "data/big.bin", "into"],
    expected: {
      ...PING,
      command: "get",
      args: ["data/big.bin"],
      host: "10.0.0.1",
      port: 9000,
      output: "into/big.bin",
    },
  },
  {
    args: ["10.0.0.1", "9000", "data/big.bin"],
    expected: { ...PING, command: "get", args: ["data/big.bin"], host: "10.0.0.1", port: 9000 },
  },
  // The environment, and flags over it.
  {
    args: ["ping"],
    vars: { TCPCACHE_HOST: "10.0.0.2", TCPCACHE_PORT: "9001" },
    expected: { ...PING, host: "10.0.0.2", port: 9001 },
  },
  { args: ["ping"], vars: { TCPCACHE_PORT: "9001" }, expected: { ...PING, port: 9001 } },
  { args: ["ping"], vars: { TCPCACHE_HOST: "10.0.0.2" }, expected: { ...PING, host: "10.0.0.2" } },
  {
    args: ["ping", "--host", "10.0.0.3", "--port", "9003"],
    vars: { TCPCACHE_HOST: "10.0.0.2", TCPCACHE_PORT: "9001" },
    expected: { ...PING, host: "10.0.0.3", port: 9003 },
  },
  {
    args: ["ping"],
    vars: { TCPCACHE_NODES: "127.0.0.1:9001" },
    expected: { ...PING, nodes: ["127.0.0.1:9001"] },
  },
  {
    args: ["ping", "--nodes", "127.0.0.1:9002"],
    vars: { TCPCACHE_NODES: "127.0.0.1:9001" },
    expected: { ...PING, nodes: ["127.0.0.1:9002"] },
  },
];

Deno.test("flags, variables and the original forms parse to the invocation", async (t) => {
  for (const { args, vars, expected } of PARSED) {
    const name = [...Object.entries(vars ?? {}).map(([k, v]) => `${k}=${v}`), ...args].join(" ");
    await t.step(name, () => {
      assert.deepEqual(invocationOf(args, vars), expected);
    });
  }
});

const USAGE_ERRORS: { args: string[]; vars?: Record<string, string>; message: string }[] = [
  { args: ["frobnicate"], message: "unknown command: frobnicate" },
  { args: [], message: "no command given" },
  { args: ["--json"], message: "no command given" },
  { args: ["get"], message: "get takes at least 1 argument(s)" },
  { args: ["stat"], message: "stat takes 1 argument(s)" },
  { args: ["stat", "a", "b"], message: "stat takes 1 argument(s)" },
  { args: ["list", "extra"], message: "list takes 0 argument(s)" },
  { args: ["files", "a", "b"], message: "files takes 0 or 1 argument(s)" },
  { args: ["ping", "x"], message: "ping takes 0 argument(s)" },
  {
    args: ["get", "a/x.txt", "b/x.txt"],
    message: "a/x.txt and b/x.txt would both be saved as x.txt",
  },
  { args: ["get", "-r", "a", "b"], message: "get -r takes one directory" },
  { args: ["get", "a", "b", "-o", "-"], message: "-o - takes one file" },
  { args: ["get", "-r", "a", "-o", "-"], message: "-o - takes one file" },
  { args: ["get", "a", "-o", "-", "--json"], message: "--json and -o - would both use stdout" },
  {
    args: ["get", "a", "-o", "-", "--continue"],
    message: "--continue needs a file to continue, not -o -",
  },
  {
    args: ["get", "a", "--parallel", "0"],
    message: `invalid --parallel: 0 (a number from 1 to ${MAX_PARALLEL})`,
  },
  {
    args: ["get", "a", "--parallel", String(MAX_PARALLEL + 1)],
    message: `invalid --parallel: ${MAX_PARALLEL + 1} (a number from 1 to ${MAX_PARALLEL})`,
  },
  {
    args: ["get", "a", "--parallel", "x"],
    message: `invalid --parallel: x (a number from 1 to ${MAX_PARALLEL})`,
  },
  { args: ["list", "-o", "x"], message: "-o is an option of get" },
  { args: ["stat", "a", "-r"], message: "-r is an option of get" },
  { args: ["stats", "--parallel", "2"], message: "--parallel is an option of get" },
  { args: ["ping", "--continue"], message: "--continue is an option of get" },
  { args: ["--port", "70000", "ping"], message: "invalid port: 70000" },
  { args: ["--port", "123456", "ping"], message: "invalid port: 123456" },
  { args: ["--port", "80x", "ping"], message: "invalid port: 80x" },
  { args: ["ping"], vars: { TCPCACHE_PORT: "port" }, message: "invalid port: port" },
  {
    args: ["--nodes", "bad", "ping"],
    message: 'invalid --nodes: a node must be HOST:PORT, not "bad"',
  },
  {
    args: ["ping"],
    vars: { TCPCACHE_NODES: "a:b" },
    message: 'invalid --nodes: a node must be HOST:PORT, not "a:b"',
  },
  { args: ["10.0.0.1", "9000", "a", "b", "c"], message: "usage: client.ts HOST PORT FILE DIR" },
];

Deno.test("usage errors are UsageErrors that say what was wrong", async (t) => {
  for (const { args, vars, message } of USAGE_ERRORS) {
    await t.step(args.join(" ") || "(nothing)", () => {
      assert.throws(() => parseClientArgs(args, envOf(vars)), (error) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.equal(error.message, message);
        return true;
      });
    });
  }
});

Deno.test("an unknown flag is refused by parseArgs, naming the flag", () => {
  assert.throws(() => parseClientArgs(["--bogus", "ping"], envOf()), /bogus/);
});

const HELP_AND_VERSION: { args: string[]; expected: ReturnType<typeof parseClientArgs> }[] = [
  { args: ["--help"], expected: { help: undefined } },
  { args: ["-h"], expected: { help: undefined } },
  { args: ["get", "--help"], expected: { help: "get" } },
  { args: ["-h", "stat"], expected: { help: "stat" } },
  { args: ["list", "-h", "--json"], expected: { help: "list" } },
  { args: ["frobnicate", "--help"], expected: { help: undefined } },
  { args: ["--help", "--version"], expected: { help: undefined } },
  { args: ["--version"], expected: "version" },
  { args: ["get", "--version"], expected: "version" },
];

Deno.test("--help and --version win over everything else on the line", async (t) => {
  for (const { args, expected } of HELP_AND_VERSION) {
    await t.step(args.join(" "), () => {
      assert.deepEqual(parseClientArgs(args, envOf({ TCPCACHE_PORT: "port" })), expected);
    });
  }
});

Deno.test("readEnv: a variable that may not be read counts as unset", () => {
  const denied: EnvSource = {
    get: () => {
      throw new Deno.errors.NotCapable("no --allow-env");
    },
  };
  assert.equal(readEnv("TCPCACHE_HOST", denied), undefined);
  assert.equal(readEnv("TCPCACHE_HOST", envOf({ TCPCACHE_HOST: "h" })), "h");
  assert.equal(readEnv("TCPCACHE_HOST", envOf()), undefined);
  // Host and port fall back to the defaults when the environment is denied.
  const parsed = parseClientArgs(["--nodes", "127.0.0.1:9001", "ping"], denied);
  assert.deepEqual(parsed, { ...PING, nodes: ["127.0.0.1:9001"] });
});
