/**
 * tcpcache: a caching file server over TCP, and its client.
 *
 * As a library:
 *
 * ```ts
 * import { connect, startServer } from "@tcpcache/tcpcache";
 * const server = await startServer({ dir: "files", port: 0 });
 * const client = await connect({ port: server.addr.port });
 * const { bytes, cache } = await client.get("hello.txt");
 * client.close();
 * await server.close();
 * ```
 *
 * As a program: `tcpcache serve --dir files`, `tcpcache get hello.txt`,
 * `tcpcache list` (see `tcpcache --help`).
 *
 * @module
 */

import { clientMain } from "./client.ts";
import { serverMain } from "./server.ts";
import { VERSION } from "./version.ts";

export * from "./server.ts";
export * from "./client.ts";
export {
  type CacheEntry,
  type EvictionPolicy,
  FileCache,
  type FileCacheOptions,
  POLICIES,
  type PolicyFactory,
  type PolicyName,
} from "./cache.ts";
export {
  type ByteRange,
  type ByteSource,
  type Origin,
  OriginChangedError,
  type OriginDirEntry,
  type OriginDirPage,
  type OriginFile,
  type OriginListWindow,
  type OriginStat,
  type ShieldedStat,
} from "./origin/origin.ts";
export {
  ShieldedOrigin,
  type ShieldFigures,
  type ShieldOptions,
  type StatAnswer,
} from "./origin/shield.ts";
export {
  Breaker,
  type BreakerFigures,
  type BreakerOptions,
  type BreakerState,
} from "./origin/breaker.ts";
export { DirectoryOrigin, type DirectoryOriginOptions } from "./origin/directory.ts";
export { parseS3Url, type S3Location, S3Origin, type S3OriginOptions } from "./origin/s3.ts";
export { DEFAULT_PORT, RequestError } from "./protocol.ts";
export { VERSION } from "./version.ts";
export { DEFAULTS } from "./defaults.ts";

const USAGE = `tcpcache ${VERSION}: a caching file server over TCP, and its client

Usage:
  tcpcache serve [options]          run a server (tcpcache serve --help)
  tcpcache COMMAND [ARGS] [options] talk to one: get, list, files, stat,
                                    stats, ping (tcpcache --help-client)
  tcpcache --version
`;

/**
 * The `tcpcache` command line: `serve` runs the server, every other command
 * goes to the client. Resolves to the exit status.
 */
export function main(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  if (first === "serve") return serverMain(rest);
  if (first === undefined || first === "-h" || first === "--help") {
    console.log(USAGE);
    return Promise.resolve(first === undefined ? 2 : 0);
  }
  if (first === "--help-client") return clientMain(["--help"]);
  return clientMain(args);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
