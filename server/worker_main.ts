/**
 * A worker thread's entry point (`--workers N`): it opens its own origin,
 * takes the ports beside the main thread (`SO_REUSEPORT`), and serves both
 * protocols with the same engine and service as the main thread, over a
 * replica of the one cache (`server/cache_replica.ts`). Started by
 * `server/worker_pool.ts`, which it talks to through messages only.
 *
 * @module
 */

/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />

import { ConnectionSlots } from "../engine/connection_slots.ts";
import type { ConnectionEngine } from "../engine/connection_engine.ts";
import { DirectoryOrigin } from "../origin/directory.ts";
import { S3Origin } from "../origin/s3.ts";
import { FileService, type Limits, type RequestRecord } from "../service/file_service.ts";
import { CacheReplica } from "./cache_replica.ts";
import { ShieldClient } from "./shield_client.ts";
import { ShieldedOrigin } from "../origin/shield.ts";
import { formatAccessLog } from "../service/access_line.ts";
import { sumCounters } from "../service/counters.ts";
import { listen, serveHttp, serveTcp } from "./listeners.ts";
import { applyReload, openGate } from "./access_setup.ts";
import type { AccessGate } from "../access/gate.ts";
import type { EngineListener } from "../engine/connection_engine.ts";
import {
  type FromWorker,
  SLOT_LISTENERS,
  type ToWorker,
  type WorkerConfig,
} from "./worker_messages.ts";

/** Answered requests are sent to the main thread at least this often... */
const LOG_INTERVAL_MS = 100;
/** ...or once this many are waiting. */
const LOG_BATCH = 256;

/** A running worker: what the main thread's messages act on. */
interface Running {
  replica: CacheReplica;
  origin: ShieldClient;
  service: FileService;
  engines: ConnectionEngine[];
  accepting: Promise<void>[];
  gate: AccessGate;
  /** Each engine with its port, for a certificate's reload. */
  listeners: { engine: ConnectionEngine; hostname: string; port: number }[];
  directory?: DirectoryOrigin;
  flushLog(): void;
}

let running: Running | undefined;
/**
 * The replica, made as soon as the start message arrives: the changes that
 * follow it must reach the replica even while the worker is still opening
 * its origin and its ports.
 */
let replica: CacheReplica | undefined;

function post(message: FromWorker): void {
  self.postMessage(message);
}

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      try {
        const { config } = message;
        replica = new CacheReplica(config, post);
        running = await start(config, replica);
        post({ type: "ready" });
      } catch (error) {
        post({ type: "failed", message: (error as Error).message });
      }
      break;
    case "admit":
      replica?.admitted(message.entry);
      break;
    case "drop":
      replica?.dropped(message.path, message.file);
      break;
    case "forget":
      running?.origin.forget(message.path, message.prefix);
      break;
    case "growing":
      replica?.growingFill(message.id, message.growing);
      break;
    case "reply":
      replica?.replied(message.id, message.value, message.error);
      break;
    case "counters":
      // Asked while still starting: nothing counted yet, but an answer all
      // the same (the asker waits for every thread).
      post({
        type: "counters",
        id: message.id,
        counters: running?.service.counters() ?? sumCounters([], 0),
      });
      break;
    case "flush":
      running?.flushLog();
      post({ type: "done", id: message.id });
      break;
    case "reload":
      try {
        if (running) applyReload(message.changes, running.gate, running.listeners);
        post({ type: "done", id: message.id });
      } catch (error) {
        post({ type: "done", id: message.id, error: (error as Error).message });
      }
      break;
    case "stop":
      await stop(message.timeoutMs);
      post({ type: "stopped" });
      self.close();
      break;
  }
};

async function start(config: WorkerConfig, replica: CacheReplica): Promise<Running> {
  const directory = config.s3 ? undefined : await DirectoryOrigin.open(
    config.dir!,
    { hide: config.cacheDir, watchChanges: config.changeWatch },
  );
  // A directory's stats are local: taken here, within the same lifetimes
  // (a stat per lifetime per thread); everything else asks the owner.
  const own = directory ? new ShieldedOrigin(directory, config.shield) : new S3Origin(config.s3!);
  const origin = new ShieldClient(own, {
    lookup: (path) => replica.ask({ ask: "stat", path }),
    list: (path, window) => replica.ask({ ask: "list", path, window }),
  }, config.breaker);
  const listeners: EngineListener[] = [];
  const { tls } = config.access;
  try {
    listeners.push(listen(config.hostname, config.port, "join", tls));
    if (config.httpPort !== undefined) {
      listeners.push(listen(config.hostname, config.httpPort, "join", tls));
    }
  } catch (error) {
    for (const listener of listeners) listener.close();
    directory?.close();
    throw error;
  }
  const onError = (message: string) => post({ type: "error", message });
  const service = new FileService(replica, origin, {
    maxOpenFiles: config.maxOpenFiles,
    maxListings: config.maxListings,
    largeChunkBudget: config.largeChunkBudget,
    onError,
    debug: config.debug,
  });
  service.threads = () => replica.ask({ ask: "threads" });
  service.purge = (path, prefix) => replica.ask({ ask: "purge", path, prefix });
  service.originFigures = () => replica.ask({ ask: "origin" });
  // Answered requests go to the main thread in batches: as records for its
  // onRequest, as formatted lines for its access log.
  let records: RequestRecord[] = [];
  let lines: string[] = [];
  let logTimer: ReturnType<typeof setTimeout> | undefined;
  const flushLog = () => {
    clearTimeout(logTimer);
    logTimer = undefined;
    if (records.length === 0 && lines.length === 0) return;
    post({ type: "log", records, lines: lines.join("\n") });
    records = [];
    lines = [];
  };
  const { logFormat, logRequests } = config;
  const limits: Limits = {
    ...config.limits,
    onError,
    onRequest: logFormat || logRequests
      ? (record) => {
        if (logRequests) records.push(record);
        if (logFormat) lines.push(formatAccessLog(record, logFormat));
        if (Math.max(records.length, lines.length) >= LOG_BATCH) flushLog();
        else logTimer ??= setTimeout(flushLog, LOG_INTERVAL_MS);
      }
      : undefined,
  };
  const { maxConnections } = config.limits;
  const slots = (index: number) =>
    new ConnectionSlots(config.slots, SLOT_LISTENERS, index, maxConnections, config.thread);
  const gate = openGate(config.access, service, config.threads);
  const access = (index: number) => ({ gate, tls: tls !== undefined, slots: slots(index) });
  const engines = [serveTcp(listeners[0], service, limits, access(0))];
  if (listeners[1]) engines.push(serveHttp(listeners[1], service, limits, access(1)));
  const ports = [config.port, config.httpPort!];
  const byPort = engines.map((engine, i) => ({
    engine,
    hostname: config.hostname,
    port: ports[i],
  }));
  const accepting = engines.map((engine) => engine.acceptLoop());
  return {
    replica,
    origin,
    service,
    engines,
    accepting,
    gate,
    listeners: byPort,
    directory,
    flushLog,
  };
}

async function stop(timeoutMs: number): Promise<void> {
  if (!running) return;
  for (const engine of running.engines) engine.shutdown(timeoutMs);
  await Promise.all(running.accepting);
  running.replica.flushTouches();
  running.flushLog();
  running.directory?.close();
}
