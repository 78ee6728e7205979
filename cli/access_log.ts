/**
 * The access log, written in batches: lines gather in memory and go out in
 * one write once 64 KiB have gathered or 100 ms after the first of them, at
 * shutdown and on SIGHUP, so a clean stop loses no line. One write per
 * request (what `console.log` does) cost about a third of small-file
 * throughput; nginx's `access_log ... buffer=64k flush=100ms` is the anchor.
 *
 * @module
 */

/** Options of an {@linkcode AccessLog}; the defaults suit a server. */
export interface AccessLogOptions {
  /**
   * Where batches go.
   * @default {a synchronous write to stdout}
   */
  write?: (text: string) => void;
  /**
   * Bytes (UTF-16 units) gathered before a batch is written at once.
   * @default {65536}
   */
  maxBytes?: number;
  /**
   * Milliseconds a line may wait for its batch.
   * @default {100}
   */
  maxDelayMs?: number;
  /**
   * Hears of a failed write (its lines are dropped); once per failure
   * streak, so a closed stdout does not flood stderr.
   * @default {console.error}
   */
  onError?: (message: string) => void;
}

const encoder = new TextEncoder();

/** Lines gathered and written in batches. */
export class AccessLog {
  #lines: string[] = [];
  #size = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #write: (text: string) => void;
  #maxBytes: number;
  #maxDelayMs: number;
  #onError: (message: string) => void;
  #failing = false;

  /** A log writing to `options.write` (stdout by default). */
  constructor(options: AccessLogOptions = {}) {
    this.#write = options.write ?? writeStdout;
    this.#maxBytes = options.maxBytes ?? 64 * 1024;
    this.#maxDelayMs = options.maxDelayMs ?? 100;
    this.#onError = options.onError ?? console.error;
  }

  /** Adds one line (without its line end). */
  add(line: string): void {
    this.#lines.push(line);
    this.#size += line.length + 1;
    if (this.#size >= this.#maxBytes) {
      this.flush();
    } else if (this.#timer === undefined) {
      const timer = setTimeout(() => this.flush(), this.#maxDelayMs);
      Deno.unrefTimer(timer); // a pending batch must not keep the process alive
      this.#timer = timer;
    }
  }

  /** Writes every gathered line now. */
  flush(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#lines.length === 0) return;
    const text = this.#lines.join("\n") + "\n";
    this.#lines = [];
    this.#size = 0;
    try {
      this.#write(text);
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#onError(`access log: lines dropped: ${(error as Error).message}`);
      this.#failing = true;
    }
  }
}

function writeStdout(text: string): void {
  const bytes = encoder.encode(text);
  for (let written = 0; written < bytes.length;) {
    written += Deno.stdout.writeSync(bytes.subarray(written));
  }
}
