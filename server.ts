/**
 * The tcpcache server: serves a directory (or an S3-compatible bucket)
 * through a byte-bounded cache, over the TCP protocol and, optionally,
 * HTTP/1.1.
 *
 * Run it: `deno run -A server.ts --dir files` (see `--help`). As a library:
 *
 * ```ts
 * import { startServer } from "@tcpcache/tcpcache/server";
 * const server = await startServer({ port: 0, cacheDir: await Deno.makeTempDir() + "/c" });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.close();
 * ```
 *
 * @module
 */

import { serverMain } from "./cli/server_cli.ts";

export {
  type OriginShieldOptions,
  SAMPLE_DIR,
  type ServerHandle,
  type ServerOptions,
  startServer,
} from "./server/start_server.ts";
export type { TlsFiles } from "./server/listeners.ts";
export type { AccessReload } from "./server/access_setup.ts";
export type {
  AccessFigures,
  AccessSettings,
  CacheOutcome,
  OriginFigures,
  ProtocolName,
  RequestRecord,
  ServerStats,
} from "./service/file_service.ts";
export { serverMain } from "./cli/server_cli.ts";
export { type AccessLogSink, formatAccessLog, type LogFormat } from "./service/access_line.ts";
export type { ShieldFigures, ShieldOptions } from "./origin/shield.ts";
export type { BreakerFigures, BreakerState } from "./origin/breaker.ts";

if (import.meta.main) {
  Deno.exit(await serverMain(Deno.args));
}
