/**
 * The access gate both protocols ask: whether a client may connect (the
 * allow list), and what a request may do given the token its connection
 * presented (`AUTH TOKEN` over TCP, `Authorization: Bearer` over HTTP),
 * with failed attempts limited per address. Tokens can be replaced while
 * serving (SIGHUP): a connection's grant is checked again against the new
 * tokens on its next request, so a removed token stops working at once.
 *
 * @module
 */

import type { AllowList } from "./allow_list.ts";
import { GUESS_LIMIT, GuessLimiter } from "./guess_limit.ts";
import type { TokenGrant, TokenTable } from "./tokens.ts";

export type { TokenGrant } from "./tokens.ts";

/** What a connection proved, kept on it between requests. */
export interface Credential {
  /** The token it presented (in memory only: never logged or sent). */
  token: string;
  /** The table it was checked against. */
  table: TokenTable;
  /** What it grants; undefined when it matched no token. */
  grant: TokenGrant | undefined;
  /** The verdict that allows its requests, made once (asked on every request). */
  allowed?: Verdict;
}

/** What a request needs: any valid token (`read`) or an admin one. */
export type Need = "read" | "admin";

/**
 * The verdict on a request: allowed (with who, when tokens are on), or the
 * refusal: 401 (no token, or a wrong one: `invalid_token`), 403 (a token
 * without the scope: `insufficient_scope`), 429 (too many failures from
 * this address: `retryMs`). `error` is the RFC 6750 error code.
 */
export type Verdict =
  | { allowed: true; grant?: TokenGrant }
  | Refusal;

/** A request refused by the gate (see {@linkcode Verdict}). */
export interface Refusal {
  /** Never allowed. */
  allowed: false;
  /** The status both protocols answer. */
  status: 401 | 403 | 429;
  /** Why, for the client. */
  message: string;
  /** RFC 6750's error code, when there is one. */
  error?: "invalid_token" | "insufficient_scope";
  /** For a 429: milliseconds until the address may try again. */
  retryMs?: number;
  /** For a 403: the name of the token that lacked the scope (the access log's user). */
  user?: string;
}

/** Options of an {@linkcode AccessGate}. */
export interface GateOptions {
  /** Who may connect; everyone when undefined. */
  allow?: AllowList;
  /** The tokens; no token needed when undefined. */
  tokens?: TokenTable;
  /**
   * Threads that check tokens, each with its own gate: the per-address
   * failure budget is split between them, so the whole server's holds.
   */
  threads?: number;
  /** Hears of each wrong token presented, and of each attempt refused unchecked (429). */
  onFailure?: (kind: "invalid" | "limited") => void;
}

/** One thread's gate: the allow list, the tokens, and the failure budget. */
export class AccessGate {
  /** Who may connect; everyone when undefined. */
  readonly allow: AllowList | undefined;
  #tokens: TokenTable | undefined;
  #limiter: GuessLimiter;
  #onFailure: (kind: "invalid" | "limited") => void;

  /** A gate with `options`. */
  constructor(options: GateOptions = {}) {
    this.allow = options.allow;
    this.#tokens = options.tokens;
    this.#onFailure = options.onFailure ?? (() => {});
    const threads = options.threads ?? 1;
    this.#limiter = new GuessLimiter({
      ...GUESS_LIMIT,
      burst: Math.max(1, Math.floor(GUESS_LIMIT.burst / threads)),
      refillMs: GUESS_LIMIT.refillMs * threads,
    });
  }

  /** The tokens in force; undefined when none are needed. */
  get tokens(): TokenTable | undefined {
    return this.#tokens;
  }

  /**
   * Puts new tokens in force (SIGHUP). Turning tokens on or off needs a
   * restart: `undefined` is refused, so a reload cannot open the server.
   */
  replaceTokens(tokens: TokenTable): void {
    if (!this.#tokens) throw new Error("tokens were off at start: turning them on needs a restart");
    this.#tokens = tokens;
  }

  /** Whether a client at `address` may connect. */
  admits(address: string): boolean {
    return this.allow === undefined || this.allow.admits(address);
  }

  /**
   * Checks a token presented by `address` (a wrong one is counted against
   * it): the credential to keep on the connection (its `grant` undefined
   * when the token is wrong), a 429 when the address has no failures left
   * (the token is not even compared), or undefined when tokens are off.
   */
  present(
    address: string,
    token: string,
  ): Credential | { status: 429; retryMs: number } | undefined {
    const table = this.#tokens;
    if (!table) return undefined;
    const retryMs = this.#limiter.waitMs(address);
    if (retryMs > 0) {
      this.#onFailure("limited");
      return { status: 429, retryMs };
    }
    const grant = table.check(token);
    if (!grant) {
      this.#limiter.failed(address);
      this.#onFailure("invalid");
    }
    return { token, table, grant };
  }

  /**
   * The verdict on a request that needs `need`, made by a connection holding
   * `credential` (undefined: none presented).
   */
  judge(credential: Credential | undefined, need: Need): Verdict {
    const table = this.#tokens;
    if (!table) return ALLOWED;
    if (!credential) return { allowed: false, status: 401, message: "authentication required" };
    if (credential.table !== table) {
      // The tokens were replaced: the one held is checked again (not counted as a guess).
      credential.table = table;
      credential.grant = table.check(credential.token);
      credential.allowed = undefined;
    }
    const grant = credential.grant;
    if (!grant) {
      return { allowed: false, status: 401, message: "invalid token", error: "invalid_token" };
    }
    if (need === "admin" && grant.scope !== "admin") {
      const message = "this needs an admin token";
      return {
        allowed: false,
        status: 403,
        message,
        error: "insufficient_scope",
        user: grant.name,
      };
    }
    return credential.allowed ??= { allowed: true, grant };
  }
}

const ALLOWED: Verdict = { allowed: true };

/** The refusal of an address that has no failures left. */
export function tooManyFailures(retryMs: number): Refusal {
  const message = `too many failed authentication attempts; retry in ${
    Math.ceil(retryMs / 1000)
  } s`;
  return { allowed: false, status: 429, message, retryMs };
}
