/**
 * The messages between the main thread, which owns the cache, and the
 * worker threads that serve beside it (`--workers N`). Plain data only:
 * every message is copied between threads (errors too: `errorData`).
 *
 * @module
 */

import type { CacheEntry, CacheFigures, CacheListing, GrowingFill } from "../cache.ts";
import {
  OriginChangedError,
  type OriginDirPage,
  type OriginListWindow,
  type OriginStat,
} from "../origin/origin.ts";
import type { ShieldFigures, ShieldOptions, StatAnswer } from "../origin/shield.ts";
import { type ErrorCode, RequestError } from "../protocol.ts";
import type { S3OriginOptions } from "../origin/s3.ts";
import type { RequestRecord, ThreadCounters } from "../service/counters.ts";
import type { LogFormat } from "../service/access_line.ts";
import type { Limits } from "../service/file_service.ts";
import type { AccessConfig, AccessReload } from "./access_setup.ts";

/** The listeners whose connection limits are shared: TCP first, then HTTP. */
export const SLOT_LISTENERS = 2;

/** What a worker needs to serve: everything but the cache's bookkeeping. */
export interface WorkerConfig {
  /** The directory served, when the origin is one. */
  dir?: string;
  /** The bucket served, when the origin is S3. */
  s3?: S3OriginOptions;
  /** Watch the directory for changes (see `ServerOptions.changeWatch`). */
  changeWatch?: boolean;
  /** The address both protocols listen on. */
  hostname: string;
  /** The TCP protocol's port (the real one, taken by the main thread first). */
  port: number;
  /** The HTTP port, when HTTP is served. */
  httpPort?: number;
  /** The cache directory. */
  cacheDir: string;
  /** The cache's capacity. */
  capacity: number;
  /** Whether hits are reported to the main thread (false where the policy ignores them: FIFO). */
  reportHits: boolean;
  /** The connection limit (shared through `slots`) and the timeouts. */
  limits: Omit<Limits, "onError" | "onRequest">;
  /** Open files at once, per thread. */
  maxOpenFiles: number;
  /** Directory listings at once, per thread. */
  maxListings: number;
  /** This thread's share of the large buffers' budget. */
  largeChunkBudget: number;
  /** Whether answered requests are sent to the main thread (its `onRequest`). */
  logRequests: boolean;
  /** The access log's format, when there is one: lines are sent formatted. */
  logFormat?: LogFormat;
  /** Report failures with stack traces. */
  debug: boolean;
  /** The connection limits of TCP and HTTP, shared by every thread (`slotMemory`). */
  slots: SharedArrayBuffer;
  /** This worker's number among the threads (the main thread is 0). */
  thread: number;
  /** How many threads serve, the main thread included. */
  threads: number;
  /** The cache's entries when the worker starts; changes follow as messages. */
  entries: CacheEntry[];
  /** Where the main thread's origin breaker publishes its state (origin/breaker.ts). */
  breaker: SharedArrayBuffer;
  /** The shield's lifetimes, for a directory's stats taken on this thread. */
  shield: ShieldOptions;
  /** TLS, the allow list and the tokens, as the main thread has them. */
  access: AccessConfig;
}

/** An error that crossed threads: enough to give the client the same answer. */
export interface ErrorData {
  /** `RequestError`, `OriginChangedError`, or another. */
  kind: "request" | "origin-changed" | "other";
  /** The error code, for a `RequestError`. */
  code?: number;
  /** The message. */
  message: string;
}

/** From the main thread to a worker. */
export type ToWorker =
  | { type: "start"; config: WorkerConfig }
  | { type: "admit"; entry: CacheEntry }
  | { type: "drop"; path: string; file: string }
  | { type: "forget"; path: string; prefix: boolean }
  | { type: "reply"; id: number; value?: unknown; error?: ErrorData }
  /** The fill asked for as question `id` has a growing file (its progress is shared memory). */
  | { type: "growing"; id: number; growing: GrowingFill }
  | { type: "counters"; id: number }
  | { type: "flush"; id: number }
  | { type: "reload"; id: number; changes: AccessReload }
  | { type: "stop"; timeoutMs: number };

/** What a worker may ask the main thread, with what it gets back. */
export type Question =
  | { ask: "fill"; path: string; stat: OriginStat }
  | { ask: "figures" }
  | { ask: "listing" }
  | { ask: "threads" }
  | { ask: "stat"; path: string }
  | { ask: "list"; path: string; window: OriginListWindow }
  | { ask: "purge"; path: string; prefix: boolean }
  | { ask: "origin" };

/** The answers to {@linkcode Question}s, by kind. */
export interface Answers {
  fill: CacheEntry | undefined;
  figures: CacheFigures;
  listing: CacheListing;
  threads: ThreadCounters[];
  stat: StatAnswer;
  list: OriginDirPage;
  purge: number;
  origin: ShieldFigures | undefined;
}

/** From a worker to the main thread. */
export type FromWorker =
  | { type: "ready" }
  | { type: "failed"; message: string }
  | { type: "question"; id: number; question: Question }
  | { type: "remove"; path: string; file?: string }
  | { type: "touch"; paths: string[] }
  | { type: "counters"; id: number; counters: ThreadCounters }
  | { type: "done"; id: number; error?: string }
  | { type: "log"; records: RequestRecord[]; lines: string }
  | { type: "error"; message: string }
  | { type: "stopped" };

/**
 * An error that crossed threads (see {@linkcode errorData}), as this
 * thread's class: the client gets the same answer as from the owner.
 */
export function errorFromData(error: ErrorData): Error {
  switch (error.kind) {
    case "request":
      return new RequestError(error.code as ErrorCode, error.message);
    case "origin-changed":
      return Object.assign(new OriginChangedError(""), { message: error.message });
    default:
      return new Error(error.message);
  }
}

/** An error as data, to cross to another thread (see {@linkcode errorFromData}). */
export function errorData(error: unknown): ErrorData {
  if (error instanceof RequestError) {
    return { kind: "request", code: error.code, message: error.message };
  }
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof OriginChangedError) return { kind: "origin-changed", message };
  return { kind: "other", message };
}
