/**
 * The downloads of a `get`: each file to its destination through
 * {@linkcode download} (a `.part`, renamed once verified), with a progress
 * line and a summary, over as many connections as `--parallel` allows.
 *
 * @module
 */

import type { CacheClient } from "../../client/connection.ts";
import { download, type DownloadResult } from "../../client/download.ts";
import { leavesConnectionUsable } from "../../client/errors.ts";
import { escapeControls } from "../../protocol.ts";
import { type Display, reportError } from "./display.ts";
import { Interrupted } from "./exit_status.ts";
import { openClient } from "./open_client.ts";
import { describeTransfer, type Job, type Outcome } from "./report.ts";

/**
 * Downloads `jobs` over `invocation.parallel` connections (the first is
 * `first`; the others open as they are needed). A failed file does not stop
 * the others; a connection that broke is replaced for the next file.
 *
 * Ctrl-C (SIGINT) closes the connections: each download in flight keeps the
 * bytes it has in its `.part`, stamped for `get --continue` (see
 * {@linkcode download}), and the files not started are reported interrupted.
 */
export async function fetchAll(
  first: CacheClient,
  jobs: Job[],
  display: Display,
): Promise<Outcome[]> {
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

/** Downloads one file with a progress line and prints its summary. */
async function fetchOne(
  client: CacheClient,
  job: Job,
  display: Display,
): Promise<DownloadResult> {
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
