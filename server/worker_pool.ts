/**
 * The worker threads that serve beside the main thread (`--workers N`), as
 * the main thread sees them. The main thread owns the one cache: it keeps
 * the index, the eviction order and the single flight of every path, and
 * it alone admits and evicts (under the cache's lock, as with one thread).
 * Each worker accepts on the same ports (`SO_REUSEPORT`) and answers hits
 * from a replica of the index (`server/cache_replica.ts`); this pool sends
 * every cache change to every worker in order, fills the cache when a
 * worker asks, applies the hits they report, and gathers their counters
 * for `STATS`, `LIST` and `/-/metrics`. docs/architecture.md has the
 * invariants.
 *
 * @module
 */

import type { CacheEntry, FileCache, GrowingFill } from "../cache.ts";
import type { FileService, RequestRecord } from "../service/file_service.ts";
import type { ThreadCounters } from "../service/counters.ts";
import type { ShieldedOrigin } from "../origin/shield.ts";
import { releaseThread } from "../engine/connection_slots.ts";
import { withTimeout } from "../util/timeout.ts";
import type { AccessReload } from "./access_setup.ts";
import {
  errorData,
  type FromWorker,
  type Question,
  SLOT_LISTENERS,
  type ToWorker,
  type WorkerConfig,
} from "./worker_messages.ts";

/** What the pool reports to the main thread. */
export interface PoolHooks {
  /** Where problems are reported, one line each. */
  onError: (message: string) => void;
  /** Hears of every request a worker answered. */
  onRequest?: (record: RequestRecord) => void;
  /** Takes the access log's lines of a worker's requests, several at a time. */
  onLogLines?: (lines: string) => void;
}

/** How long a worker may take to start or to stop beyond its shutdown timeout. */
const WORKER_GRACE_MS = 10_000;
/** What a wait on a worker that did not answer in time fails with. */
const WORKER_SILENT = `worker thread did not answer within ${WORKER_GRACE_MS / 1000} s`;

/** One worker thread and what waits on it. */
interface Member {
  worker: Worker;
  config: WorkerConfig;
  alive: boolean;
  counters: Map<number, (counters: ThreadCounters | undefined) => void>;
  /** Who waits for the answer to each `flush` and `reload`, by id (an error, or undefined). */
  acks: Map<number, (error?: string) => void>;
  stopped?: () => void;
}

/** The worker threads of a server, and the main thread's side of their messages. */
export class WorkerPool {
  #members: Member[] = [];
  #cache: FileCache;
  #service: FileService;
  #shield: ShieldedOrigin;
  #hooks: PoolHooks;
  #nextId = 0;

  private constructor(
    cache: FileCache,
    service: FileService,
    shield: ShieldedOrigin,
    hooks: PoolHooks,
  ) {
    this.#cache = cache;
    this.#service = service;
    this.#shield = shield;
    this.#hooks = hooks;
  }

  /**
   * Starts `count` workers with `config` and resolves once every one listens;
   * rejects (with every worker stopped) when one cannot start.
   */
  static async start(
    count: number,
    config: Omit<WorkerConfig, "entries" | "thread">,
    cache: FileCache,
    service: FileService,
    shield: ShieldedOrigin,
    hooks: PoolHooks,
  ): Promise<WorkerPool> {
    const pool = new WorkerPool(cache, service, shield, hooks);
    // From here on every change reaches every worker, after the entries
    // each one starts with: both go through the worker's ordered queue.
    cache.observe((change) => {
      const message: ToWorker = change.kind === "admit"
        ? { type: "admit", entry: change.entry }
        : { type: "drop", path: change.path, file: change.file };
      pool.#broadcast(message);
    });
    const starts: Promise<void>[] = [];
    for (let thread = 1; thread <= count; thread++) {
      starts.push(pool.#spawn({ ...config, thread, entries: cache.entries() }));
    }
    const results = await Promise.allSettled(starts);
    const failed = results.find((result) => result.status === "rejected");
    if (failed) {
      for (const member of pool.#members) member.worker.terminate();
      throw (failed as PromiseRejectedResult).reason;
    }
    service.threads = () => pool.#threads();
    // A purge also reaches what each worker remembers of the origin.
    service.purge = async (path, prefix) => {
      const dropped = await service.purgeHere(path, prefix);
      pool.#broadcast({ type: "forget", path, prefix });
      return dropped;
    };
    return pool;
  }

  /**
   * Stops every worker: each stops accepting and lets its answers in
   * progress finish within `timeoutMs`, as the main thread does.
   */
  async stop(timeoutMs: number): Promise<void> {
    await Promise.all(this.#members.map((member) => {
      if (!member.alive) return;
      const stopped = new Promise<void>((resolve) => member.stopped = resolve);
      member.worker.postMessage({ type: "stop", timeoutMs } satisfies ToWorker);
      // One that does not answer is terminated below all the same.
      return withTimeout(stopped, timeoutMs + WORKER_GRACE_MS, WORKER_SILENT).catch(() => {});
    }));
    for (const member of this.#members) this.#ended(member);
  }

  #spawn(config: WorkerConfig): Promise<void> {
    const worker = new Worker(new URL("./worker_main.ts", import.meta.url), { type: "module" });
    const member: Member = {
      worker,
      config,
      alive: true,
      counters: new Map(),
      acks: new Map(),
    };
    this.#members.push(member);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      if (message.type === "ready") resolve();
      else if (message.type === "failed") reject(new Error(message.message));
      else this.#receive(member, message);
    };
    worker.onerror = (event: ErrorEvent) => {
      // A worker that fails is gone; the main thread serves on.
      event.preventDefault();
      this.#hooks.onError(`worker thread failed: ${event.message}`);
      reject(new Error(event.message));
      this.#ended(member);
    };
    worker.postMessage({ type: "start", config } satisfies ToWorker);
    return withTimeout(promise, WORKER_GRACE_MS, WORKER_SILENT);
  }

  #receive(member: Member, message: FromWorker): void {
    switch (message.type) {
      case "question":
        this.#answer(member, message.id, message.question);
        break;
      case "remove": {
        const current = this.#cache.lookup(message.path);
        if (current && (message.file === undefined || current.file === message.file)) {
          this.#cache.remove(message.path, current);
        }
        break;
      }
      case "touch":
        for (const path of message.paths) this.#cache.touch(path);
        break;
      case "counters":
        member.counters.get(message.id)?.(message.counters);
        member.counters.delete(message.id);
        break;
      case "done":
        member.acks.get(message.id)?.(message.error);
        member.acks.delete(message.id);
        break;
      case "log":
        for (const record of message.records) this.#hooks.onRequest?.(record);
        if (message.lines) this.#hooks.onLogLines?.(message.lines);
        break;
      case "error":
        this.#hooks.onError(message.message);
        break;
      case "stopped":
        // Gone from here on: what waits on it (a STATS on another thread
        // that is finishing too) stops waiting.
        this.#ended(member);
        break;
    }
  }

  async #answer(member: Member, id: number, question: Question): Promise<void> {
    let reply: ToWorker;
    // A fill's growing file goes to the worker as soon as it exists, so that
    // the worker streams the miss while it is copied in (before the reply).
    const onGrowing = (growing: GrowingFill) => {
      if (member.alive) {
        member.worker.postMessage({ type: "growing", id, growing } satisfies ToWorker);
      }
    };
    try {
      reply = { type: "reply", id, value: await this.#value(question, onGrowing) };
    } catch (error) {
      reply = { type: "reply", id, error: errorData(error) };
    }
    if (member.alive) member.worker.postMessage(reply);
  }

  #value(question: Question, onGrowing: (growing: GrowingFill) => void): Promise<unknown> {
    switch (question.ask) {
      case "fill":
        return this.#service.admit(
          question.path,
          question.stat,
          (growing) => growing?.then((found) => found && onGrowing(found)),
        ).then((entry) => entry && withoutBytes(entry));
      case "figures":
        return this.#cache.figures();
      case "listing":
        return this.#cache.listing().then(({ figures, entries }) => ({
          figures,
          entries: entries.map(withoutBytes),
        }));
      case "threads":
        return this.#threads();
      case "stat":
        return this.#shield.lookup(question.path);
      case "list":
        return this.#shield.list(question.path, question.window);
      case "purge":
        return this.#service.purge(question.path, question.prefix);
      case "origin":
        return this.#service.originFigures();
    }
  }

  /**
   * Has every worker send the access-log lines it holds (SIGHUP), and
   * resolves once they have reached this thread.
   */
  async flushLogs(): Promise<void> {
    // A worker that does not answer in time is not waited for.
    await this.#everyWorker((id) => ({ type: "flush", id }));
  }

  /**
   * Has every worker put a new certificate or new tokens in force (checked
   * by the main thread first).
   *
   * @throws {Error} with the first worker's failure.
   */
  async reload(changes: AccessReload): Promise<void> {
    const errors = await this.#everyWorker((id) => ({ type: "reload", id, changes }));
    if (errors.length > 0) {
      throw new Error(
        `a worker thread could not reload (the main thread and other workers have): ${errors[0]}`,
      );
    }
  }

  /**
   * Sends each live worker the message `make` gives for an id, and resolves
   * once each has answered it (or the grace time passed), to the errors
   * they answered, a worker silent past the grace time counting as one.
   */
  async #everyWorker(make: (id: number) => ToWorker): Promise<string[]> {
    const answers = await Promise.all(
      this.#members.filter((member) => member.alive).map((member) => {
        const id = ++this.#nextId;
        const done = new Promise<string | undefined>((resolve) => member.acks.set(id, resolve));
        member.worker.postMessage(make(id));
        return withTimeout(done, WORKER_GRACE_MS, WORKER_SILENT).catch((error: Error) =>
          error.message
        );
      }),
    );
    return answers.filter((error) => error !== undefined);
  }

  /**
   * Every thread's counters: the main thread's and each live worker's (one
   * that does not answer within the grace time is left out, not waited for).
   */
  async #threads(): Promise<ThreadCounters[]> {
    const asked = this.#members.filter((member) => member.alive).map((member) => {
      const id = ++this.#nextId;
      const answer = new Promise<ThreadCounters | undefined>((resolve) => {
        member.counters.set(id, resolve);
      });
      member.worker.postMessage({ type: "counters", id } satisfies ToWorker);
      return withTimeout(answer, WORKER_GRACE_MS, WORKER_SILENT).catch(() => {
        member.counters.delete(id);
        return undefined;
      });
    });
    const workers = await Promise.all(asked);
    return [this.#service.counters(), ...workers.filter((counters) => counters !== undefined)];
  }

  #broadcast(message: ToWorker): void {
    for (const member of this.#members) if (member.alive) member.worker.postMessage(message);
  }

  /**
   * Forgets a worker: what waits on it stops waiting, and the connection
   * slots it held come back (its connections ended with it).
   */
  #ended(member: Member): void {
    if (!member.alive) return;
    member.alive = false;
    // Terminated first: it cannot take or give back a slot after the count.
    member.worker.terminate();
    releaseThread(member.config.slots, SLOT_LISTENERS, member.config.thread);
    for (const resolve of member.counters.values()) resolve(undefined);
    member.counters.clear();
    for (const resolve of member.acks.values()) resolve();
    member.acks.clear();
    member.stopped?.();
  }
}

/** An entry without its bytes: what a listing or a fill's answer needs. */
function withoutBytes(entry: CacheEntry): CacheEntry {
  return entry.bytes ? { ...entry, bytes: undefined } : entry;
}
