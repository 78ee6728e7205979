/**
 * The client's live progress line: what a download (or several at once) has
 * received, drawn on a terminal in place and cleared when it is done.
 *
 * The formatting is pure ({@linkcode formatProgress}, {@linkcode formatElapsed},
 * {@linkcode formatEta}); {@linkcode ProgressLine} only decides when to draw.
 *
 * @module
 */

import { formatBytes } from "../util/units.ts";

/** What one progress line shows. */
export interface ProgressSnapshot {
  /** What is being downloaded: a name, or `3 files`. */
  label: string;
  /** Bytes received so far. */
  done: number;
  /** Bytes expected in all; unknown until the server's header arrives. */
  total?: number;
  /** Bytes per second; undefined before the first byte arrives. */
  rate?: number;
}

/**
 * Formats a progress line that fits in `columns - 1` characters (the last
 * column is left alone, since writing there wraps on some terminals). The
 * label is shortened from the left when space runs out, then dropped.
 *
 * @example
 * ```ts
 * import { formatProgress } from "./progress.ts";
 * formatProgress({ label: "big.bin", done: 1536 * 1024, total: 3 * 1024 * 1024, rate: 2 * 1024 * 1024 });
 * // "big.bin  1.5 MiB / 3.0 MiB   50%  2.0 MiB/s  ETA 1 s"
 * ```
 */
export function formatProgress(snapshot: ProgressSnapshot, columns = 80): string {
  const { done, total, rate } = snapshot;
  const parts: string[] = [];
  if (total !== undefined) {
    const percent = total > 0 ? Math.floor(100 * Math.min(done, total) / total) : 100;
    parts.push(`${formatBytes(done)} / ${formatBytes(total)}`, `${String(percent).padStart(3)}%`);
  } else {
    parts.push(formatBytes(done));
  }
  parts.push(rate === undefined ? "-- B/s" : `${formatBytes(Math.round(rate))}/s`);
  if (total !== undefined && rate !== undefined && rate > 0) {
    parts.push(`ETA ${formatEta(Math.max(0, total - done) / rate)}`);
  }
  const figures = parts.join("  ");
  const room = columns - 1 - figures.length - 2;
  if (room < 8) return figures.slice(0, Math.max(0, columns - 1));
  const label = snapshot.label.length <= room
    ? snapshot.label
    : "…" + snapshot.label.slice(snapshot.label.length - room + 1);
  return `${label}  ${figures}`;
}

/**
 * Formats a time taken: milliseconds shown below a minute, then minutes and
 * seconds, then hours and minutes.
 *
 * @example
 * ```ts
 * import { formatElapsed } from "./progress.ts";
 * formatElapsed(0.0123); // "0.012 s"
 * formatElapsed(125); // "2 min 05 s"
 * ```
 */
export function formatElapsed(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(3)} s`;
  return formatLong(Math.round(seconds));
}

/**
 * Formats a time left, rounded up to the second.
 *
 * @example
 * ```ts
 * import { formatEta } from "./progress.ts";
 * formatEta(0.2); // "1 s"
 * formatEta(3725); // "1 h 02 min"
 * ```
 */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const whole = Math.ceil(seconds);
  return whole < 60 ? `${whole} s` : formatLong(whole);
}

function formatLong(seconds: number): string {
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, "0")} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/**
 * Formats a transfer rate, e.g. `12 MiB/s`.
 *
 * @example
 * ```ts
 * import { formatRate } from "./progress.ts";
 * formatRate(3 * 1024 * 1024, 2); // "1.5 MiB/s"
 * ```
 */
export function formatRate(bytes: number, seconds: number): string {
  return `${formatBytes(Math.round(bytes / Math.max(seconds, 1e-6)))}/s`;
}

/** Options of {@linkcode ProgressLine}. */
export interface ProgressLineOptions {
  /**
   * Whether to draw at all (a terminal, and not `--quiet`). When false only
   * {@linkcode ProgressLine.print} writes anything.
   * @default {true}
   */
  live?: boolean;
  /**
   * The least time between two redraws, in ms.
   * @default {100}
   */
  intervalMs?: number;
  /**
   * The terminal's width.
   * @default {() => 80}
   */
  columns?: () => number;
  /**
   * The clock, in ms.
   * @default {() => performance.now()}
   */
  now?: () => number;
}

interface Transfer {
  label: string;
  done: number;
  /** Bytes that were there before this transfer (a resumed download). */
  already: number;
  total?: number;
  started: number;
}

/**
 * One line at the bottom of a terminal showing the downloads in progress:
 * redrawn in place (`\r`) at most every `intervalMs`, cleared (`\r\x1b[K`)
 * when the last download ends. Lines printed meanwhile (summaries) go above
 * it. With several downloads at once the line shows their sum.
 */
export class ProgressLine {
  #write: (text: string) => void;
  #live: boolean;
  #intervalMs: number;
  #columns: () => number;
  #now: () => number;
  #transfers = new Map<number, Transfer>();
  #nextId = 0;
  #lastDraw = -Infinity;
  #drawn = false;

  /** Creates a progress line that writes through `write` (to stderr). */
  constructor(write: (text: string) => void, options: ProgressLineOptions = {}) {
    this.#write = write;
    this.#live = options.live ?? true;
    this.#intervalMs = options.intervalMs ?? 100;
    this.#columns = options.columns ?? (() => 80);
    this.#now = options.now ?? (() => performance.now());
  }

  /** Starts showing a download; resolves to its handle for the other calls. */
  start(label: string): number {
    const id = this.#nextId++;
    this.#transfers.set(id, { label, done: 0, already: 0, started: this.#now() });
    this.#draw(false);
    return id;
  }

  /**
   * Sets the file's size, and how much of it was already there (a resumed
   * download): those bytes count toward the percentage, not the rate.
   */
  expect(id: number, total: number, already = 0): void {
    const transfer = this.#transfers.get(id);
    if (transfer) {
      transfer.total = total;
      transfer.done += already - transfer.already;
      transfer.already = already;
    }
    this.#draw(false);
  }

  /** Counts bytes received. */
  advance(id: number, bytes: number): void {
    const transfer = this.#transfers.get(id);
    if (transfer) transfer.done += bytes;
    this.#draw(false);
  }

  /** Stops showing a download; the line is cleared when none is left. */
  finish(id: number): void {
    this.#transfers.delete(id);
    if (this.#transfers.size === 0) this.#clear();
    else this.#draw(true);
  }

  /** Prints a line of text above the progress line. */
  print(text: string): void {
    this.#clear();
    this.#write(text + "\n");
    if (this.#transfers.size > 0) this.#draw(true);
  }

  /** What the line shows now. */
  snapshot(): ProgressSnapshot {
    const now = this.#now();
    const transfers = [...this.#transfers.values()];
    let done = 0;
    let total: number | undefined = 0;
    let rate: number | undefined;
    for (const transfer of transfers) {
      done += transfer.done;
      total = total === undefined || transfer.total === undefined
        ? undefined
        : total + transfer.total;
      const seconds = (now - transfer.started) / 1000;
      const received = transfer.done - transfer.already;
      if (seconds > 0 && received > 0) rate = (rate ?? 0) + received / seconds;
    }
    const label = transfers.length === 1 ? transfers[0].label : `${transfers.length} files`;
    return { label, done, total, rate };
  }

  #draw(force: boolean): void {
    if (!this.#live || this.#transfers.size === 0) return;
    const now = this.#now();
    if (!force && now - this.#lastDraw < this.#intervalMs) return;
    this.#lastDraw = now;
    this.#write(`\r${formatProgress(this.snapshot(), this.#columns())}\x1b[K`);
    this.#drawn = true;
  }

  #clear(): void {
    if (!this.#drawn) return;
    this.#write("\r\x1b[K");
    this.#drawn = false;
  }
}
