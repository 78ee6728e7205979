/**
 * `get -r DIR`: mirrors a directory tree of the server into `OUT/DIR/...`,
 * skipping the files already here with the server's size and sha256.
 *
 * @module
 */

import type { CacheClient } from "../../client/connection.ts";
import { leavesConnectionUsable } from "../../client/errors.ts";
import { checkPath, escapeControls } from "../../protocol.ts";
import type { Invocation } from "./args.ts";
import { createDisplay, reportError } from "./display.ts";
import { exitStatus } from "./exit_status.ts";
import { fetchAll } from "./fetch.ts";
import { hashFile, localFileSize } from "./local_files.ts";
import { joinPath, normalizeDir } from "./paths.ts";
import { batchJson, type Job, type Outcome, tally } from "./report.ts";

/**
 * `get -r DIR`: lists the tree (`FILES`, one pipelined round per level),
 * skips files already present with the server's size and sha256 (`STAT`,
 * pipelined), and downloads the rest as a batch into `OUT/DIR/...`.
 */
export async function runMirror(client: CacheClient, invocation: Invocation): Promise<number> {
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
