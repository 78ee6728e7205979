/**
 * An origin's health as a circuit breaker: after consecutive failures it
 * opens, and while it is open requests do not go to the origin at all: one
 * probe per interval does, and the first success closes it again. What
 * counts as a failure is the caller's call (the origin did not answer, or
 * answered 5xx or throttled); an answer such as 404 is a success, the origin
 * is there.
 *
 * The state is published in shared memory so that worker threads, which
 * make their own origin requests for streamed reads, fail as fast as the
 * thread that owns the breaker (see {@linkcode breakerOpen}).
 *
 * @module
 */

/** The breaker's states: requests pass, none pass (but a probe), or a probe is out. */
export type BreakerState = "closed" | "open" | "probing";

/** Options of {@linkcode Breaker}. */
export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  failures: number;
  /** While open, how long between probes. */
  probeIntervalMs: number;
  /** The clock, in milliseconds. */
  now?: () => number;
  /** Where the state is published for other threads (see {@linkcode breakerOpen}). */
  shared?: SharedArrayBuffer;
}

/** What the breaker has seen, as `STATS` and the metrics report it. */
export interface BreakerFigures {
  /** The state now. */
  state: BreakerState;
  /** Failures in a row now (0 after any success). */
  consecutiveFailures: number;
  /** Times it opened. */
  opened: number;
  /** Times it closed again after being open. */
  closed: number;
  /** Requests refused without asking the origin. */
  refused: number;
  /** Probes sent while open. */
  probes: number;
}

/** The shared word's values: 0 closed, 1 open or probing. */
const OPEN = 1;

/** The size of the shared memory a breaker publishes its state in. */
export const BREAKER_SHARED_BYTES = 4;

/** True when the breaker publishing in `shared` is open (or probing). */
export function breakerOpen(shared: SharedArrayBuffer): boolean {
  return Atomics.load(new Int32Array(shared), 0) === OPEN;
}

/** A circuit breaker for one origin. */
export class Breaker {
  #options: BreakerOptions;
  #now: () => number;
  #state: BreakerState = "closed";
  #failures = 0;
  #nextProbe = 0;
  #figures = { opened: 0, closed: 0, refused: 0, probes: 0 };
  #shared?: Int32Array;
  #openListeners = new Set<() => void>();

  /** A closed breaker. */
  constructor(options: BreakerOptions) {
    if (!(options.failures >= 1)) throw new RangeError("a breaker opens after 1 failure or more");
    this.#options = options;
    this.#now = options.now ?? Date.now;
    if (options.shared) this.#shared = new Int32Array(options.shared);
  }

  /** The state now. */
  get state(): BreakerState {
    return this.#state;
  }

  /** Milliseconds until the next probe may go (0 when closed or due). */
  get retryAfterMs(): number {
    return this.#state === "closed" ? 0 : Math.max(0, this.#nextProbe - this.#now());
  }

  /**
   * Whether a request may go to the origin now: always when closed; when
   * open, one (the probe) once the interval has passed. A request that may
   * go must report how it ended ({@linkcode success} or {@linkcode failure}).
   */
  allow(): boolean {
    if (this.#state === "closed") return true;
    if (this.#state === "open" && this.#now() >= this.#nextProbe) {
      this.#state = "probing";
      this.#figures.probes++;
      return true;
    }
    this.#figures.refused++;
    return false;
  }

  /** The origin answered. */
  success(): void {
    this.#failures = 0;
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#figures.closed++;
    this.#publish();
  }

  /**
   * A request that was allowed did not go after all: a probe's turn passes
   * to the next request.
   */
  abandon(): void {
    if (this.#state === "probing") {
      this.#state = "open";
      this.#nextProbe = this.#now();
    }
  }

  /** The origin did not answer, or answered that it cannot. */
  failure(): void {
    this.#failures++;
    if (this.#state === "closed" && this.#failures < this.#options.failures) return;
    if (this.#state === "closed") this.#figures.opened++;
    const reopened = this.#state !== "open";
    this.#state = "open";
    this.#nextProbe = this.#now() + this.#options.probeIntervalMs;
    this.#publish();
    // Opened, or a probe failed: whoever still waits on the origin stops.
    if (reopened) { for (const listener of [...this.#openListeners]) listener(); }
  }

  /**
   * Calls `listener` each time the breaker opens (or opens again after a
   * failed probe), until the returned function is called: requests waiting
   * on the origin stop waiting.
   */
  onOpen(listener: () => void): () => void {
    this.#openListeners.add(listener);
    return () => this.#openListeners.delete(listener);
  }

  /** What it has seen. */
  figures(): BreakerFigures {
    return { state: this.#state, consecutiveFailures: this.#failures, ...this.#figures };
  }

  #publish(): void {
    if (this.#shared) Atomics.store(this.#shared, 0, this.#state === "closed" ? 0 : OPEN);
  }
}
