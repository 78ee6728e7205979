/**
 * What the client's command line asks of the local file system before a
 * download: whether a destination is a directory, and the size and sha256
 * of a file already there (a mirror skips files that match the server's).
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Whether `path` is a directory; false when nothing is there. */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** The size of a regular file here, or undefined when there is none. */
export async function localFileSize(path: string): Promise<number | undefined> {
  try {
    const info = await Deno.stat(path);
    return info.isFile ? info.size : undefined;
  } catch {
    return undefined;
  }
}

/** Hex sha256 of a file, read in chunks. */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}
