/**
 * The server's command line: flags, the ready line, the access log, and
 * signals. `server.ts` runs it when started directly; `mod.ts` runs it for
 * `tcpcache serve`.
 *
 * @module
 */

import { AccessLog } from "./access_log.ts";
import { LogFile } from "./log_file.ts";
import { parseArgs } from "node:util";
import { guardDebugSignal } from "./debug_signal.ts";
import { DEFAULTS } from "../defaults.ts";
import type { PolicyName } from "../policies/policy.ts";
import { isPolicyName, POLICIES } from "../policies/registry.ts";
import { optional, parseInteger, parseSeconds, seconds, UsageError } from "./flags.ts";
import { S3Origin } from "../origin/s3.ts";
import {
  SAMPLE_DIR,
  type ServerHandle,
  type ServerOptions,
  type ServerStats,
  startServer,
} from "../server/start_server.ts";
import { sharedPortsAvailable, TlsConfigError } from "../server/listeners.ts";
import { checkAccessConfig } from "../server/access_setup.ts";
import { type AccessPaths, readAccessFiles } from "./access_files.ts";
import { formatBytes, parseSize } from "../util/units.ts";
import { VERSION } from "../version.ts";

const USAGE = `tcpcache server ${VERSION}: serves a directory over TCP through a byte-bounded cache

Usage: deno run -A server.ts [options]
       tcpcache serve [options]

Options:
  --dir DIR             directory to serve (default: the bundled sample files)
  --origin s3://BUCKET/PREFIX
                        serve an S3-compatible bucket instead of a directory;
                        credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
                        AWS_REGION
  --s3-endpoint URL     the bucket's store (default: $S3_ENDPOINT), e.g.
                        http://127.0.0.1:7480
  --origin-timeout SECS time for the origin to answer, and for each read of a
                        body to progress (default: ${seconds(DEFAULTS.originTimeoutMs)})
  --origin-retries N    retries of a failed origin request, with backoff (default: ${DEFAULTS.originRetries})
  --max-age SECS        a file's freshness lifetime: within it a hit asks the origin
                        nothing (default: 0, every request asks; see docs/origin.md)
  --origin-max-age      use the lifetime an S3 object states (Cache-Control, Expires)
                        where it states one, --max-age otherwise
  --stale-while-revalidate SECS
                        after the lifetime, answer the stored copy at once (marked
                        stale) while one revalidation runs (default: 0)
  --stale-if-error SECS after the lifetime, answer the stored copy (marked stale)
                        when the origin fails or is down (default: 0)
  --negative-max-age SECS
                        remember that a file is not there (default: 0)
  --origin-connections N
                        S3 requests at once, bodies included (default: ${DEFAULTS.originConnections})
  --host HOST           address to listen on (default: ${DEFAULTS.host})
  --port PORT           port to listen on, 0 for any free one (default: ${DEFAULTS.port})
  --http-port PORT      also serve HTTP/1.1 on this port (curl, browsers, Prometheus;
                        status page at /-/); off by default
  --cache-dir DIR       cache directory, emptied at start in the background (default: ${DEFAULTS.cacheDir})
  --keep-cache          keep the entries the previous run left (each checked against its
                        journal record before it is served) instead of emptying the cache
  --require-cache       refuse to start when the cache directory cannot be created or
                        written (default: start without a cache, and say so loudly)
  --cache-size SIZE     cache capacity: bytes or K, KiB, M, MiB, G, GiB, KB, MB, GB
                        (default: ${formatBytes(DEFAULTS.cacheSize)})
  --policy NAME         eviction policy: ${
  Object.keys(POLICIES).join(", ")
} (default: ${DEFAULTS.policy})
  --max-connections N   connections served at once; more get ERR 503 (default: ${DEFAULTS.maxConnections})
  --max-connections-per-address N
                        connections at once from one address; more get ERR 503 (default:
                        half of --max-connections, at least ${DEFAULTS.minConnectionsPerAddress})
  --idle-timeout SECS   time to send a request line before ERR 408 (default: ${
  seconds(DEFAULTS.idleTimeoutMs)
})
  --send-timeout SECS   time a client may take no bytes before it is dropped (default: ${
  seconds(DEFAULTS.sendTimeoutMs)
})
  --shutdown-timeout SECS
                        on SIGTERM/SIGINT, time for responses in progress (default: ${
  seconds(DEFAULTS.shutdownTimeoutMs)
})
  --max-open-files N    files open at once, per thread; more requests wait (default: ${DEFAULTS.maxOpenFiles})
  --max-listings N      directory listings (FILES, HTTP directory pages) read at once, per
                        thread; more wait their turn (default: ${DEFAULTS.maxListings})
  --workers N           threads that serve, all sharing one cache (default: the number of
                        cores, ${navigator.hardwareConcurrency} here; 1 when Deno runs without --unstable-net)
  --no-change-watch     stat a --dir file on every request instead of watching the
                        directory for changes (inotify; either way never stale)
  --memory-cache SIZE   small entries (<= ${
  formatBytes(DEFAULTS.memoryEntryLimit)
}) also kept in memory, up to SIZE
                        in all (default: ${formatBytes(DEFAULTS.memoryCache)}; 0 turns it off)
  --tls-cert FILE       serve both protocols over TLS (1.2, 1.3) with this certificate
  --tls-key FILE        (PEM; the cert file may hold the chain) and key; both re-read
                        on SIGHUP, new connections get the new certificate
  --allow CIDR,...      only clients in these networks may connect (IPv4, IPv6; e.g.
                        10.0.0.0/8,::1); others are closed before a byte is read
  --auth-tokens FILE    every request needs a token: TCP "AUTH TOKEN", HTTP
                        "Authorization: Bearer TOKEN"; one "TOKEN [NAME] [read|admin]"
                        per line, re-read on SIGHUP; STATS, LIST, PURGE and /-/* need
                        an admin token (docs/network.md)
  --log-format F        text or json: one line per request on stdout (default: text)
  --access-log FILE     the access log to FILE instead of stdout, appended to, reopened
                        on SIGHUP (rename it, then SIGHUP: the logrotate convention)
  --pid-file FILE       write the process id to FILE once listening; removed at exit
                        (SIGHUP reloads, SIGUSR2 prints a one-line state summary on stderr)
  -q, --quiet           no per-request lines (the ready lines and errors stay)
  --debug               report failures with their stack traces
  -h, --help            show this help

Example:
  deno run -A server.ts --dir files --port ${DEFAULTS.port} --cache-size 128MiB --http-port 8080
`;

/**
 * The server's command line: parses `args`, starts the server, prints the
 * `listening on HOST:PORT` line and serves until SIGINT or SIGTERM.
 * Resolves to the process exit code.
 */
export async function serverMain(args: string[]): Promise<number> {
  let invocation: ServerInvocation;
  try {
    const parsed = parseServerArgs(args);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    invocation = parsed;
  } catch (error) {
    console.error(`tcpcache: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
  const { options, logFormat, quiet, accessPaths } = invocation;
  let logFile: LogFile | undefined;
  try {
    if (invocation.accessLogPath !== undefined && !quiet) {
      logFile = LogFile.open(invocation.accessLogPath);
    }
    // Unreadable or unusable files are a wrong invocation: one line, exit 2.
    const files = await readAccessFiles(accessPaths);
    options.tls = files.tls;
    options.authTokens = files.tokens;
    checkAccessConfig({ tokens: options.authTokens, allow: options.allow });
  } catch (error) {
    logFile?.close();
    console.error(`tcpcache: ${(error as Error).message}`);
    return 2;
  }
  const accessLog = quiet
    ? undefined
    : new AccessLog({ write: logFile && ((text) => logFile.write(text)) });
  let server: ServerHandle;
  try {
    server = await startServer({
      ...options,
      accessLog: accessLog && { format: logFormat, add: (lines) => accessLog.add(lines) },
    });
  } catch (error) {
    const message = options.debug ? (error as Error).stack : (error as Error).message;
    console.error(`tcpcache: ${message}`);
    logFile?.close();
    // A certificate that cannot be used is a wrong invocation, like an unreadable one.
    return error instanceof TlsConfigError ? 2 : 1;
  }
  const pidFile = invocation.pidFile;
  if (pidFile !== undefined) {
    try {
      Deno.writeTextFileSync(pidFile, `${Deno.pid}\n`);
    } catch (error) {
      console.error(`tcpcache: cannot write the pid file ${pidFile}: ${(error as Error).message}`);
      await server.close();
      logFile?.close();
      return 1;
    }
  }
  // Handlers first: a supervisor may signal as soon as it reads the line.
  const stopped = Promise.withResolvers<void>();
  const stop = () => stopped.resolve();
  // SIGHUP writes what the access log holds, reopens its file, re-reads the
  // tokens and the certificate, and the server goes on.
  const reload = async () => {
    await server.flushLogs(); // the workers' lines first
    accessLog?.flush(); // into the file as it was named until now
    if (logFile) {
      try {
        logFile.reopen();
        console.error(`tcpcache: SIGHUP: reopened the access log ${invocation.accessLogPath}`);
      } catch (error) {
        console.error(`tcpcache: SIGHUP: kept the access log open: ${(error as Error).message}`);
      }
    }
    await reloadAccess(server, accessPaths);
  };
  const summarize = async () => console.error(`tcpcache: ${stateSummary(await server.stats())}`);
  const stopGuard = guardDebugSignal((line) => console.error(line));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", reload);
  Deno.addSignalListener("SIGUSR2", summarize);
  console.log(banner(server, options, logFormat));
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  await server.close();
  Deno.removeSignalListener("SIGHUP", reload);
  Deno.removeSignalListener("SIGUSR2", summarize);
  stopGuard();
  accessLog?.flush(); // the answers in progress at the stop are logged too
  logFile?.close();
  if (pidFile !== undefined) Deno.removeSync(pidFile);
  return 0;
}

/** SIGUSR2's line: what an operator checks first, from `STATS`. */
export function stateSummary(stats: ServerStats): string {
  const { cache, connections, access, origin } = stats;
  const errors = Object.values(stats.errors).reduce((sum, n) => sum + n, 0);
  return `state: uptime ${Math.round(stats.uptimeMs / 1000)} s, requests ${stats.requests} ` +
    `(hits ${stats.hits}, misses ${stats.misses}, bypasses ${stats.bypasses}, errors ${errors}), ` +
    `connections ${connections.open} open (tcp) + ${stats.protocols.http.connections} (http), ` +
    `cache ${formatBytes(cache.used)} of ${formatBytes(cache.capacity)} in ${cache.entries} ` +
    `entries (${cache.policy}, ${stats.evictions} evicted${cacheTrouble(cache)}), ` +
    `origin breaker ${origin.breaker.state}, ` +
    `threads ${stats.threads.length}, tls ${access.tls ? "on" : "off"}, denied ${access.denied}, ` +
    `auth failures ${access.authFailures}`;
}

/** What is wrong with the cache, for the state line: nothing, most of the time. */
function cacheTrouble(cache: ServerStats["cache"]): string {
  const parts: string[] = [];
  if (cache.unavailable) parts.push("UNAVAILABLE");
  if (cache.degraded) {
    parts.push(`${cache.degraded.toUpperCase()}: ${formatBytes(cache.effectiveCapacity)} in force`);
  }
  if (cache.writeFailures > 0) parts.push(`${cache.writeFailures} failed writes`);
  if (cache.adopting > 0) parts.push(`${cache.adopting} kept entries still being checked`);
  return parts.map((part) => `, ${part}`).join("");
}

/**
 * Re-reads the tokens and the certificate (SIGHUP) and puts them in force,
 * each on its own: a half-renewed certificate must not keep a revoked token
 * working, nor a bad token file a renewed certificate out. What cannot be
 * read or used changes nothing, and the log says why.
 */
async function reloadAccess(server: ServerHandle, paths: AccessPaths): Promise<void> {
  const parts = [
    { what: "tokens", paths: { authTokens: paths.authTokens }, given: paths.authTokens },
    {
      what: "certificate",
      paths: { tlsCert: paths.tlsCert, tlsKey: paths.tlsKey },
      given: paths.tlsCert,
    },
  ];
  for (const part of parts) {
    if (part.given === undefined) continue;
    try {
      await server.reload(await readAccessFiles(part.paths));
      console.error(`tcpcache: SIGHUP: reloaded the ${part.what}`);
    } catch (error) {
      console.error(
        `tcpcache: SIGHUP: kept the ${part.what} in force: ${(error as Error).message}`,
      );
    }
  }
}

/** The ready line: it always holds `listening on HOST:PORT`. */
function banner(server: ServerHandle, options: ServerOptions, format: "text" | "json"): string {
  const { hostname, port } = server.addr;
  const bucket = options.origin instanceof S3Origin ? options.origin.location : undefined;
  const source = bucket
    ? { origin: `s3://${bucket.bucket}/${bucket.prefix}` }
    : { dir: options.dir ?? SAMPLE_DIR };
  const facts = {
    ...source,
    cacheDir: options.cacheDir ?? DEFAULTS.cacheDir,
    capacity: server.cache.capacity,
    policy: server.cache.policy,
    threads: server.workers,
  };
  const http = server.httpAddr;
  const scheme = options.tls ? "https" : "http";
  const httpUrl = http ? `${scheme}://${http.hostname}:${http.port}/` : undefined;
  const message = `tcpcache ${VERSION} listening on ${hostname}:${port}` +
    (options.tls ? " (TLS)" : "") +
    (httpUrl ? `, HTTP on ${httpUrl} (status page ${httpUrl}-/)` : "") +
    (options.authTokens ? ", tokens required" : "") +
    (options.allow ? `, allowed ${options.allow}` : "");
  if (format === "json") {
    return JSON.stringify({ time: new Date().toISOString(), message, ...facts, http: httpUrl });
  }
  const from = "origin" in source ? `origin ${source.origin}` : `dir ${source.dir}`;
  return `${message} (${from}, cache ${facts.cacheDir}, ` +
    `capacity ${formatBytes(facts.capacity)}, policy ${facts.policy}, ` +
    `${facts.threads} thread${facts.threads === 1 ? "" : "s"})`;
}

/** What the command line asks for: the server's options and how to log. */
interface ServerInvocation {
  options: ServerOptions;
  logFormat: "text" | "json";
  quiet: boolean;
  /** The files of the certificate, its key and the tokens (read once parsed). */
  accessPaths: AccessPaths;
  /** `--access-log`: the access log's file, instead of stdout. */
  accessLogPath?: string;
  /** `--pid-file`: where the process id goes once the server listens. */
  pidFile?: string;
}

function parseServerArgs(args: string[]): ServerInvocation | "help" {
  const { values, positionals } = parseArgs({
    args,
    options: {
      dir: { type: "string" },
      origin: { type: "string" },
      "s3-endpoint": { type: "string" },
      "origin-timeout": { type: "string" },
      "origin-retries": { type: "string" },
      "max-age": { type: "string" },
      "origin-max-age": { type: "boolean", default: false },
      "stale-while-revalidate": { type: "string" },
      "stale-if-error": { type: "string" },
      "negative-max-age": { type: "string" },
      "origin-connections": { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "http-port": { type: "string" },
      "cache-dir": { type: "string" },
      "cache-size": { type: "string" },
      policy: { type: "string" },
      "max-connections": { type: "string" },
      "max-connections-per-address": { type: "string" },
      "require-cache": { type: "boolean", default: false },
      "keep-cache": { type: "boolean", default: false },
      "idle-timeout": { type: "string" },
      "send-timeout": { type: "string" },
      "shutdown-timeout": { type: "string" },
      "max-open-files": { type: "string" },
      "max-listings": { type: "string" },
      workers: { type: "string" },
      "memory-cache": { type: "string" },
      "no-change-watch": { type: "boolean", default: false },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      allow: { type: "string" },
      "auth-tokens": { type: "string" },
      "log-format": { type: "string", default: "text" },
      "access-log": { type: "string" },
      "pid-file": { type: "string" },
      quiet: { type: "boolean", short: "q", default: false },
      debug: { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
  });
  if (values.help) return "help";
  if (positionals.length > 0) throw new UsageError(`unexpected argument: ${positionals[0]}`);
  const logFormat = values["log-format"];
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`--log-format must be text or json, not "${logFormat}"`);
  }
  const options = serverOptions(values);
  if (values.origin !== undefined) {
    if (values.dir !== undefined) throw new UsageError("give --dir or --origin, not both");
    options.origin = s3Origin(values);
  }
  const accessPaths = {
    tlsCert: values["tls-cert"],
    tlsKey: values["tls-key"],
    authTokens: values["auth-tokens"],
  };
  if ((accessPaths.tlsCert === undefined) !== (accessPaths.tlsKey === undefined)) {
    throw new UsageError("give --tls-cert and --tls-key together");
  }
  options.allow = values.allow;
  return {
    options,
    logFormat,
    quiet: values.quiet,
    accessPaths,
    accessLogPath: values["access-log"],
    pidFile: values["pid-file"],
  };
}

function serverOptions(values: Record<string, string | boolean | undefined>): ServerOptions {
  const text = (name: string) => values[name] as string | undefined;
  return {
    debug: values.debug === true,
    dir: text("dir"),
    host: text("host"),
    port: optional(text("port"), (v) => parseInteger("--port", v, 65535)),
    httpPort: optional(text("http-port"), (v) => parseInteger("--http-port", v, 65535)),
    cacheDir: text("cache-dir"),
    requireCache: values["require-cache"] === true,
    keepCache: values["keep-cache"] === true,
    cacheSize: optional(text("cache-size"), parseSize),
    memoryBudget: optional(text("memory-cache"), parseSize),
    changeWatch: !values["no-change-watch"],
    policy: optional(text("policy"), parsePolicy),
    maxConnections: optional(
      text("max-connections"),
      (v) => parseInteger("--max-connections", v, 1e9, 1),
    ),
    maxConnectionsPerAddress: optional(
      text("max-connections-per-address"),
      (v) => parseInteger("--max-connections-per-address", v, 1e9, 1),
    ),
    idleTimeoutMs: optional(text("idle-timeout"), (v) => parseSeconds("--idle-timeout", v)),
    sendTimeoutMs: optional(text("send-timeout"), (v) => parseSeconds("--send-timeout", v)),
    shutdownTimeoutMs: optional(
      text("shutdown-timeout"),
      (v) => parseSeconds("--shutdown-timeout", v),
    ),
    maxListings: optional(text("max-listings"), (v) => parseInteger("--max-listings", v, 1e6, 1)),
    maxOpenFiles: optional(
      text("max-open-files"),
      (v) => parseInteger("--max-open-files", v, 1e6, 1),
    ),
    workers: optional(text("workers"), (v) => parseInteger("--workers", v, 1024, 1)) ??
      (sharedPortsAvailable() ? navigator.hardwareConcurrency : 1),
    originShield: {
      maxAgeMs: optional(text("max-age"), (v) => parseSeconds("--max-age", v, { zero: true })),
      honourOriginLifetime: values["origin-max-age"] === true,
      staleWhileRevalidateMs: optional(
        text("stale-while-revalidate"),
        (v) => parseSeconds("--stale-while-revalidate", v, { zero: true }),
      ),
      staleIfErrorMs: optional(
        text("stale-if-error"),
        (v) => parseSeconds("--stale-if-error", v, { zero: true }),
      ),
      negativeMaxAgeMs: optional(
        text("negative-max-age"),
        (v) => parseSeconds("--negative-max-age", v, { zero: true }),
      ),
      connections: optional(
        text("origin-connections"),
        (v) => parseInteger("--origin-connections", v, 1e6, 1),
      ),
    },
  };
}

function s3Origin(values: Record<string, string | boolean | undefined>): S3Origin {
  const endpoint = (values["s3-endpoint"] as string | undefined) ?? Deno.env.get("S3_ENDPOINT");
  if (!endpoint) {
    throw new UsageError("--origin s3://... needs --s3-endpoint URL (or $S3_ENDPOINT)");
  }
  const timeout = values["origin-timeout"] as string | undefined;
  const retries = values["origin-retries"] as string | undefined;
  return S3Origin.fromEnv(values.origin as string, endpoint, {
    timeoutMs: optional(timeout, (v) => parseSeconds("--origin-timeout", v)),
    retries: optional(retries, (v) => parseInteger("--origin-retries", v, 20)),
  });
}

function parsePolicy(name: string): PolicyName {
  if (isPolicyName(name)) return name;
  throw new UsageError(`unknown policy "${name}" (known: ${Object.keys(POLICIES).join(", ")})`);
}
