/**
 * `get` of one file or a batch (`get PATH... [-o DEST]`), and of one file to
 * stdout (`get PATH -o -`): where each file goes, the downloads, and the
 * summary or JSON at the end.
 *
 * @module
 */

import type { CacheClient } from "../../client/connection.ts";
import { escapeControls } from "../../protocol.ts";
import { writeAll } from "../../util/byte_reader.ts";
import { UsageError } from "../flags.ts";
import type { Invocation } from "./args.ts";
import { createDisplay } from "./display.ts";
import { exitStatus } from "./exit_status.ts";
import { fetchAll } from "./fetch.ts";
import { isDirectory } from "./local_files.ts";
import { baseName, joinPath } from "./paths.ts";
import { batchJson, describeTransfer, type Job, outcomeJson, tally } from "./report.ts";

/**
 * Where each file of a plain `get` goes: one file to `-o PATH` (or into it
 * when it is a directory) or its base name here; several into `-o DIR`
 * (created) or here, each under its base name.
 */
export async function destinations(invocation: Invocation): Promise<Job[]> {
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

/** Downloads one file or several; resolves to the exit status. */
export async function runBatch(
  client: CacheClient,
  jobs: Job[],
  invocation: Invocation,
): Promise<number> {
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

/** `get PATH -o -`: the body to stdout as it arrives, the summary to stderr. */
export async function runToStdout(client: CacheClient, invocation: Invocation): Promise<number> {
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
