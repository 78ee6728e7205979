/**
 * What the cache's disk can hold, when that is less than the cache's
 * capacity: a disk shared with other files, or smaller than `--cache-size`,
 * fills before the cache does. Without this the cache would keep its
 * entries, refuse every new fill with a full disk, and never evict again;
 * with it, a full disk shrinks the capacity in force to what the disk holds
 * (the cache then evicts to make room, as at its real capacity), and the
 * capacity grows back as space returns, checked every few seconds.
 *
 * @module
 */

import { statfs } from "node:fs/promises";

/** How often a degraded cache looks at its disk again. */
const RECHECK_MS = 5000;
/** The least time between two log lines about failed writes. */
const LOG_INTERVAL_MS = 60_000;
/**
 * The share of what the disk holds that the cache takes: some slack, so that
 * other writers on the disk (and the cache's own journal) are not the next
 * to find it full.
 */
const SHARE_OF_DISK = 0.95;

/** True for the errors of a full disk or an exhausted quota. */
export function isDiskFull(error: unknown): boolean {
  const code = (error as { code?: string })?.code;
  if (code === "ENOSPC" || code === "EDQUOT") return true;
  // Deno names these errors by their message only.
  return error instanceof Error && /\(os error (28|122)\)/.test(error.message);
}

/** Failed writes and the capacity the disk allows, for one cache directory. */
export class DiskRoom {
  /** Writes to the cache directory that failed. */
  writeFailures = 0;
  #dir: string;
  #capacity: number;
  #onWarning: (message: string) => void;
  #limit = Infinity;
  #held: (() => number) | undefined;
  #onLimit: ((limit: number) => void) | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastLog = -Infinity;
  #unlogged = 0;

  /** The room of the cache in `dir`, whose capacity is `capacity`. */
  constructor(dir: string, capacity: number, onWarning: (message: string) => void) {
    this.#dir = dir;
    this.#capacity = capacity;
    this.#onWarning = onWarning;
  }

  /** The most bytes the disk lets the cache hold now (Infinity while it has room). */
  get limit(): number {
    return this.#limit;
  }

  /** Why the cache runs below its capacity, while it does. */
  get degraded(): string | undefined {
    return this.#limit === Infinity ? undefined : "disk full";
  }

  /** Counts a failed write and says so, at most once a minute (with the count since). */
  failed(error: unknown): void {
    this.writeFailures++;
    this.#unlogged++;
    const now = Date.now();
    if (now - this.#lastLog < LOG_INTERVAL_MS) return;
    const message = error instanceof Error ? error.message : String(error);
    const more = this.#unlogged > 1
      ? ` (${this.#unlogged} failed writes since the last report)`
      : "";
    this.#onWarning(`cache directory ${this.#dir}: a write failed: ${message}${more}`);
    this.#lastLog = now;
    this.#unlogged = 0;
  }

  /**
   * The disk is full: sets the limit to what it holds beside the cache's
   * `held()` bytes (its entries' and old files', on disk now), and keeps checking until it has room for the whole
   * capacity again, calling `onLimit` whenever the limit changes. Resolves
   * to the new limit.
   */
  async shrink(held: () => number, onLimit: (limit: number) => void): Promise<number> {
    this.#held = held;
    this.#onLimit = onLimit;
    await this.#check();
    if (this.#limit !== Infinity && this.#timer === undefined) {
      const timer = setInterval(() => this.#check().catch(() => {}), RECHECK_MS);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
    return this.#limit;
  }

  /** Stops checking the disk. */
  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #check(): Promise<void> {
    const { bavail, bsize } = await statfs(this.#dir);
    const holds = Math.floor((this.#held!() + bavail * bsize) * SHARE_OF_DISK);
    const before = this.#limit;
    if (holds >= this.#capacity) {
      this.#limit = Infinity;
      this.close();
      if (before !== Infinity) {
        this.#onWarning(
          `cache directory ${this.#dir} has room again: capacity back to ${this.#capacity} bytes`,
        );
      }
    } else {
      this.#limit = holds;
      if (before === Infinity) {
        this.#onWarning(
          `cache directory ${this.#dir}: disk full; the cache holds at most ${holds} of its ` +
            `${this.#capacity} bytes until space returns`,
        );
      }
    }
    if (this.#limit !== before) this.#onLimit!(this.#limit);
  }
}
