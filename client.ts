/**
 * The tcpcache client: one connection for programs ({@linkcode connect}),
 * downloads to files that survive interruptions ({@linkcode download}), a
 * cluster of servers by rendezvous hashing ({@linkcode ClusterClient}), and
 * the command line for people (`deno run -A client.ts get hello.txt`, see
 * `--help`).
 *
 * @module
 */

import { clientMain } from "./cli/client_cli.ts";

export {
  type CacheClient,
  type CacheListing,
  connect,
  type ConnectionSecurity,
  type ConnectOptions,
  type FileListing,
  type FilesPage,
  type FileStat,
  type GetHeader,
  type GetOptions,
  type GetResult,
  type Stats,
  TcpCacheClient,
} from "./client/connection.ts";
export {
  ConnectionError,
  IntegrityError,
  InterruptedDownloadError,
  leavesConnectionUsable,
  ResumeError,
  ServerError,
  UnverifiedError,
} from "./client/errors.ts";
export { download, type DownloadOptions, type DownloadResult } from "./client/download.ts";
export {
  ClusterClient,
  type ClusterListing,
  type ClusterOptions,
  type NodeAddress,
  parseNodes,
  rankNodes,
} from "./client/cluster.ts";
export { clientMain } from "./cli/client_cli.ts";

if (import.meta.main) {
  Deno.exit(await clientMain(Deno.args));
}
