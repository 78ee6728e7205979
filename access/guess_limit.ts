/**
 * The per-address limit on failed token attempts: each address has a budget
 * of failures that refills slowly; once it is spent, its attempts are
 * refused unchecked until it refills. At the defaults an address gets 10
 * guesses, then one every 6 s: against a 96-bit token, guessing is
 * impractical from any number of addresses one can hold.
 *
 * IPv6 clients are limited by /64 (one host often holds a whole /64).
 *
 * @module
 */

import { parseAddress } from "./allow_list.ts";

/** Options of a {@linkcode GuessLimiter}. */
export interface GuessLimitOptions {
  /** Failures an address may make at once. */
  burst: number;
  /** Milliseconds for one failure to be forgiven. */
  refillMs: number;
  /** Addresses remembered at most (the oldest is forgotten past it). */
  maxAddresses: number;
  /** The clock (tests inject one). */
  now?: () => number;
}

/** The defaults: 10 failures, then one per 6 s, for up to 100,000 addresses. */
export const GUESS_LIMIT: GuessLimitOptions = { burst: 10, refillMs: 6000, maxAddresses: 100_000 };

/** Failures remembered per address, as a budget that refills. */
export class GuessLimiter {
  readonly #options: GuessLimitOptions;
  readonly #now: () => number;
  /** Per address: failures still allowed, as of `at`. */
  readonly #budgets = new Map<string, { left: number; at: number }>();

  /** A limiter with `options`. */
  constructor(options: GuessLimitOptions = GUESS_LIMIT) {
    this.#options = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /**
   * Milliseconds until `address` may try again: 0 when it may now.
   */
  waitMs(address: string): number {
    const budget = this.#refilled(limitKey(address));
    if (!budget || budget.left >= 1) return 0;
    return Math.ceil((1 - budget.left) * this.#options.refillMs);
  }

  /** Counts a failed attempt from `address`. */
  failed(address: string): void {
    const key = limitKey(address);
    const budget = this.#refilled(key) ?? { left: this.#options.burst, at: this.#now() };
    budget.left = Math.max(0, budget.left - 1);
    this.#budgets.delete(key); // re-inserted: the map's order is last failure first-out
    this.#budgets.set(key, budget);
    if (this.#budgets.size > this.#options.maxAddresses) {
      this.#budgets.delete(this.#budgets.keys().next().value!);
    }
  }

  /** The budget of `key` refilled up to now; a full one is forgotten. */
  #refilled(key: string): { left: number; at: number } | undefined {
    const budget = this.#budgets.get(key);
    if (!budget) return undefined;
    const now = this.#now();
    budget.left = Math.min(
      this.#options.burst,
      budget.left + (now - budget.at) / this.#options.refillMs,
    );
    budget.at = now;
    if (budget.left >= this.#options.burst) {
      this.#budgets.delete(key);
      return undefined;
    }
    return budget;
  }
}

/** The key an address is limited by: itself (IPv4), or its /64 (IPv6). */
function limitKey(address: string): string {
  const bytes = parseAddress(address);
  if (!bytes || bytes.length === 4) return address;
  if (bytes.subarray(0, 12).every((byte, i) => i < 10 ? byte === 0 : byte === 0xff)) {
    return bytes.subarray(12).join("."); // IPv4-mapped: the IPv4 address
  }
  return Array.from(bytes.subarray(0, 8), (byte) => byte.toString(16).padStart(2, "0")).join("");
}
