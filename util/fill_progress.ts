/**
 * The progress of one cache fill, in shared memory: how many bytes are in
 * its cache file, whether the copy is running, done (with the file's sha256)
 * or failed, and whether the cache file stopped growing because the cache
 * directory failed. The fill writes it; the requests that stream the miss
 * while it is copied in read it, on any thread (a `SharedArrayBuffer` posted
 * to a worker is the same memory), and wait for it to move with
 * `Atomics.waitAsync`.
 *
 * Every change is stored first and then announced by bumping a sequence
 * word, which is what readers wait on: a reader that takes the sequence
 * before it looks at the fields can never miss the change that follows.
 *
 * @module
 */

/** The copy is under way. */
export const FILL_RUNNING = 0;
/** Every byte was read from the origin and checked; the digest is set. */
export const FILL_DONE = 1;
/** The origin failed or changed: no more bytes come, and readers must stop short. */
export const FILL_FAILED = 2;

/** The state of a fill: {@linkcode FILL_RUNNING}, {@linkcode FILL_DONE} or {@linkcode FILL_FAILED}. */
export type FillState = typeof FILL_RUNNING | typeof FILL_DONE | typeof FILL_FAILED;

/** Int32 words: the state, the sequence readers wait on, the "stopped writing" flag. */
const STATE = 0;
const SEQUENCE = 1;
const SPILLED = 2;
/** Byte offsets of the bytes-written counter (BigInt64) and the sha256 (32 bytes). */
const WRITTEN_AT = 16;
const DIGEST_AT = 24;
/** The shared memory one fill's progress takes. */
export const FILL_PROGRESS_BYTES = DIGEST_AT + 32;

/** One fill's progress, over shared memory of {@linkcode FILL_PROGRESS_BYTES}. */
export class FillProgress {
  /** The shared memory: post it to another thread and wrap it there. */
  readonly buffer: SharedArrayBuffer;
  #words: Int32Array;
  #written: BigInt64Array;
  #digest: Uint8Array;

  /** Wraps `buffer` (another thread's fill), or new memory for a new fill. */
  constructor(buffer = new SharedArrayBuffer(FILL_PROGRESS_BYTES)) {
    this.buffer = buffer;
    this.#words = new Int32Array(buffer, 0, 3);
    this.#written = new BigInt64Array(buffer, WRITTEN_AT, 1);
    this.#digest = new Uint8Array(buffer, DIGEST_AT, 32);
  }

  /** Bytes in the cache file so far: each of them has been written. */
  get written(): number {
    return Number(Atomics.load(this.#written, 0));
  }

  /** Running, done or failed. */
  get state(): FillState {
    return Atomics.load(this.#words, STATE) as FillState;
  }

  /**
   * True once the cache file stopped growing (the cache directory failed):
   * the bytes past {@linkcode written} are read from the origin, not the file.
   */
  get spilled(): boolean {
    return Atomics.load(this.#words, SPILLED) === 1;
  }

  /** The sequence number of the latest change: pass it to {@linkcode changed}. */
  get sequence(): number {
    return Atomics.load(this.#words, SEQUENCE);
  }

  /** The whole file's hex sha256, once the state is {@linkcode FILL_DONE}. */
  get sha256(): string | undefined {
    if (this.state !== FILL_DONE) return undefined;
    return Array.from(this.#digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  /** Resolves once anything changed after `sequence` (at once if it already has). */
  changed(sequence: number): Promise<void> {
    const waiting = Atomics.waitAsync(this.#words, SEQUENCE, sequence);
    if (!waiting.async) return Promise.resolve();
    holdEventLoop(+1);
    return waiting.value.then(() => holdEventLoop(-1));
  }

  /** The writer: `bytes` more are in the cache file. */
  advance(bytes: number): void {
    Atomics.add(this.#written, 0, BigInt(bytes));
    this.#announce();
  }

  /** The writer: the cache file grows no more; readers take the rest from the origin. */
  spill(): void {
    Atomics.store(this.#words, SPILLED, 1);
    this.#announce();
  }

  /** The writer: every byte is read and checked, and this is the file's hex sha256. */
  finish(sha256: string): void {
    if (this.state !== FILL_RUNNING) return;
    for (let i = 0; i < 32; i++) this.#digest[i] = parseInt(sha256.slice(2 * i, 2 * i + 2), 16);
    // The digest is stored before the state that says it is there.
    Atomics.store(this.#words, STATE, FILL_DONE);
    this.#announce();
  }

  /** The writer: the copy failed; a fill already done stays done. */
  fail(): void {
    if (this.state !== FILL_RUNNING) return;
    Atomics.store(this.#words, STATE, FILL_FAILED);
    this.#announce();
  }

  #announce(): void {
    Atomics.add(this.#words, SEQUENCE, 1);
    Atomics.notify(this.#words, SEQUENCE);
  }
}

/** Waits in progress on this thread, and the timer that keeps the event loop alive for them. */
let waits = 0;
let keepAlive: ReturnType<typeof setInterval> | undefined;

/**
 * Counts a wait in or out. A pending `Atomics.waitAsync` does not keep
 * Deno's event loop alive: with nothing else pending (the fill between its
 * last write and its commit, say), the runtime would end with the wait
 * unresolved. One idle timer per thread keeps it alive while any wait is.
 */
function holdEventLoop(change: 1 | -1): void {
  waits += change;
  if (waits > 0) keepAlive ??= setInterval(() => {}, 2 ** 30);
  else {
    clearInterval(keepAlive);
    keepAlive = undefined;
  }
}
