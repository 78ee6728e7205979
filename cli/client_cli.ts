/**
 * The tcpcache client's command line: `get` (one file, a batch, a mirror of
 * a directory, a resume, or stdout), `list`, `files`, `stat`, `stats` and
 * `ping`, each with `--help` and `--json`. `client.ts` and `mod.ts` run it
 * through {@linkcode clientMain}; the parts live in `cli/client/`.
 *
 * @module
 */

import { VERSION } from "../version.ts";
import { UsageError } from "./flags.ts";
import { type Invocation, parseClientArgs, type ParsedArgs } from "./client/args.ts";
import { describeError, exitStatus } from "./client/exit_status.ts";
import { formatFields, formatFiles, formatListing } from "./client/format.ts";
import { destinations, runBatch, runToStdout } from "./client/get.ts";
import { HELP, USAGE } from "./client/help.ts";
import { runMirror } from "./client/mirror.ts";
import { openClient } from "./client/open_client.ts";

/**
 * The client's command line. Resolves to the exit status: 0 success, 1 the
 * server answered an error or the bytes failed verification, 2 usage error,
 * 3 connection failure, 130 interrupted (Ctrl-C; a resumable `.part` stays).
 *
 * @example
 * ```ts
 * import { clientMain } from "@tcpcache/tcpcache/client";
 * Deno.exit(await clientMain(["get", "docs/readme.txt", "--port", "9089"]));
 * ```
 */
export async function clientMain(args: string[]): Promise<number> {
  let invocation: ParsedArgs;
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
        print(invocation.json ? JSON.stringify(stat) : formatFields({ ...stat }));
        return 0;
      }
      case "stats": {
        const stats = await client.stats();
        print(invocation.json ? JSON.stringify(stats) : formatFields(stats));
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
