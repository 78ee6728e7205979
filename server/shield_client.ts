/**
 * A worker thread's view of the shielded origin (`--workers N`): the main
 * thread owns the one shield (origin/shield.ts), so there is one lifetime,
 * one revalidation in flight and one breaker per path for the whole server,
 * and the origin sees no more requests with threads than without. A worker
 * asks the owner for a stat and keeps the answer until its lifetime ends,
 * so that a hit within it asks nobody; it reads bodies (streamed answers)
 * from its own origin, refusing at once while the owner's breaker is open.
 *
 * @module
 */

import { breakerOpen } from "../origin/breaker.ts";
import type {
  ByteRange,
  Origin,
  OriginDirPage,
  OriginFile,
  OriginListWindow,
  OriginStat,
  ShieldedStat,
} from "../origin/origin.ts";
import type { StatAnswer } from "../origin/shield.ts";
import { type ErrorCode, purgeCovers, RequestError } from "../protocol.ts";

/** Answers remembered at most; the oldest is forgotten first. */
const MAX_ANSWERS = 100_000;

/** What a worker asks the owner of the shield. */
export interface ShieldOwner {
  /** The shield's answer for a stat of `path`. */
  lookup(path: string): Promise<StatAnswer>;
  /** A page of the listing of `path`, through the shield. */
  list(path: string, window: OriginListWindow): Promise<OriginDirPage>;
}

/** The shielded origin as a worker thread uses it. */
export class ShieldClient implements Origin {
  #inner: Origin;
  #owner: ShieldOwner;
  #breaker: SharedArrayBuffer;
  #answers = new Map<string, { answer: StatAnswer; received: number }>();

  /**
   * `inner` is this thread's own origin (for bodies); `owner` asks the main
   * thread; `breaker` is where the owner's breaker publishes its state.
   */
  constructor(inner: Origin, owner: ShieldOwner, breaker: SharedArrayBuffer) {
    this.#inner = inner;
    this.#owner = owner;
    this.#breaker = breaker;
    if (inner.statNow) this.statNow = (path) => inner.statNow!(path);
  }

  /** As the origin: a watched directory needs no lifetime. */
  get freshness(): "watch" | "stat" | undefined {
    return this.#inner.freshness;
  }

  /** Where the origin can answer at once (a watched directory), it does. */
  statNow?: (path: string) => OriginStat;

  async stat(path: string): Promise<ShieldedStat> {
    // A watched directory's stat is exact and free here as on the owner.
    if (this.#inner.freshness === "watch") return await this.#inner.stat(path);
    const now = Date.now();
    const kept = this.#answers.get(path);
    let answer: StatAnswer;
    let stat: ShieldedStat | undefined;
    if (kept && now < kept.answer.freshUntil && kept.answer.stat) {
      answer = kept.answer;
      const ageMs = (answer.stat!.ageMs ?? 0) + (now - kept.received);
      stat = { ...answer.stat!, ageMs, fromMemory: true };
    } else {
      answer = await this.#owner.lookup(path);
      stat = answer.stat;
      this.#answers.delete(path);
      // Only answers that are good for a while are kept: a 404 or a stale
      // stat is asked again (the owner remembers those itself).
      if (stat && !stat.stale && answer.freshUntil > Date.now()) {
        this.#answers.set(path, { answer, received: Date.now() });
        if (this.#answers.size > MAX_ANSWERS) {
          this.#answers.delete(this.#answers.keys().next().value!);
        }
      }
    }
    if (answer.error) throw new RequestError(answer.error.code as ErrorCode, answer.error.message);
    return stat!;
  }

  open(path: string, range?: ByteRange): Promise<OriginFile> {
    if (breakerOpen(this.#breaker)) {
      return Promise.reject(
        new RequestError(503, "origin unavailable: not asked while it is failing"),
      );
    }
    return this.#inner.open(path, range);
  }

  list(path: string, window: OriginListWindow): Promise<OriginDirPage> {
    return this.#owner.list(path, window);
  }

  forget(path: string, prefix: boolean): void {
    for (const key of this.#answers.keys()) {
      if (purgeCovers(key, path, prefix)) this.#answers.delete(key);
    }
  }
}
