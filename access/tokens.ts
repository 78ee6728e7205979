/**
 * Who may read: the tokens of `--auth-tokens FILE`, each with a name (what
 * the access log shows, never the token) and a scope. A presented token is
 * compared with every stored one in time that depends on neither its
 * content nor its length (see {@linkcode TokenTable.check}).
 *
 * The file: one token per line, `TOKEN [NAME] [SCOPE]`; blank lines and
 * lines starting with `#` are skipped. SCOPE is `read` (files: GET, STAT,
 * FILES, PING; the default) or `admin` (also the cache's internals: STATS,
 * LIST, PURGE, HTTP `/-/*`).
 *
 * @module
 */

/** What a token grants: `admin` includes `read`. */
export type TokenScope = "read" | "admin";

/** The holder of a valid token, as the server knows it after `AUTH`. */
export interface TokenGrant {
  /** The token's name (the access log's user). */
  readonly name: string;
  /** What it may do. */
  readonly scope: TokenScope;
}

/** The shortest token accepted: 16 characters of the alphabet below (at least 96 bits). */
export const MIN_TOKEN_LENGTH = 16;
/** The longest token; every comparison runs over this many bytes. */
export const MAX_TOKEN_LENGTH = 256;
/** The characters of a token: those of base64, base64url and hex, so no encoding is ever needed. */
const TOKEN_CHARS = /^[A-Za-z0-9._~+/=-]+$/;
const NAME_CHARS = /^[A-Za-z0-9._@-]{1,64}$/;

interface StoredToken extends TokenGrant {
  /** The token's bytes, zero-padded to `MAX_TOKEN_LENGTH`. */
  padded: Uint8Array;
  length: number;
}

const encoder = new TextEncoder();

/** The tokens a server accepts. */
export class TokenTable {
  readonly #tokens: StoredToken[];
  readonly #scratch = new Uint8Array(MAX_TOKEN_LENGTH);

  private constructor(tokens: StoredToken[]) {
    this.#tokens = tokens;
  }

  /**
   * Parses a token file's text.
   *
   * @throws {SyntaxError} naming the line (never quoting the token) that is
   *   malformed, too short, or repeats a token or a name.
   * @example
   * ```ts
   * import { TokenTable } from "./tokens.ts";
   * const table = TokenTable.parse("s3cr3t-0123456789ab alice\nadmin-0123456789abcd ops admin\n");
   * console.log(table.check("s3cr3t-0123456789ab")); // { name: "alice", scope: "read" }
   * ```
   */
  static parse(text: string): TokenTable {
    const tokens: StoredToken[] = [];
    const seen = new Set<string>();
    const names = new Set<string>();
    text.split("\n").forEach((raw, index) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const where = `line ${index + 1}`;
      const [token, name = `token-${index + 1}`, scope = "read", ...extra] = line.split(/\s+/);
      if (extra.length > 0) throw new SyntaxError(`${where}: expected TOKEN [NAME] [SCOPE]`);
      if (!TOKEN_CHARS.test(token)) {
        throw new SyntaxError(`${where}: a token is letters, digits and . _ ~ + / = - only`);
      }
      if (token.length < MIN_TOKEN_LENGTH || token.length > MAX_TOKEN_LENGTH) {
        throw new SyntaxError(
          `${where}: a token has ${MIN_TOKEN_LENGTH} to ${MAX_TOKEN_LENGTH} characters`,
        );
      }
      if (!NAME_CHARS.test(name)) {
        throw new SyntaxError(`${where}: a name is 1-64 letters, digits and . _ @ -`);
      }
      if (scope !== "read" && scope !== "admin") {
        throw new SyntaxError(`${where}: the scope is read or admin, not "${scope}"`);
      }
      if (seen.has(token)) throw new SyntaxError(`${where}: this token is given twice`);
      if (names.has(name)) throw new SyntaxError(`${where}: the name ${name} is given twice`);
      seen.add(token);
      names.add(name);
      const padded = new Uint8Array(MAX_TOKEN_LENGTH);
      padded.set(encoder.encode(token));
      tokens.push({ name, scope, padded, length: token.length });
    });
    if (tokens.length === 0) throw new SyntaxError("no tokens in the file");
    return new TokenTable(tokens);
  }

  /** How many tokens there are. */
  get size(): number {
    return this.#tokens.length;
  }

  /** How many tokens have the admin scope. */
  get adminCount(): number {
    return this.#tokens.filter((token) => token.scope === "admin").length;
  }

  /**
   * The grant of `presented`, or undefined. Every stored token is compared
   * over all `MAX_TOKEN_LENGTH` bytes, without a branch that depends on a
   * byte or on which token matched, so that the time taken says nothing
   * about how close a guess came.
   */
  check(presented: string): TokenGrant | undefined {
    const scratch = this.#scratch;
    // encodeInto fills what fits; a longer guess matches nothing (its length differs).
    scratch.fill(0);
    const { written } = encoder.encodeInto(presented, scratch);
    const length = written < presented.length ? MAX_TOKEN_LENGTH + 1 : written;
    let found = -1;
    for (let t = 0; t < this.#tokens.length; t++) {
      const stored = this.#tokens[t];
      let diff = stored.length ^ length;
      const padded = stored.padded;
      for (let i = 0; i < MAX_TOKEN_LENGTH; i++) diff |= padded[i] ^ scratch[i];
      // 1 when diff is 0, else 0; then found becomes t or stays, arithmetically.
      const match = ((diff | -diff) >>> 31) ^ 1;
      found += (t - found) & -match;
    }
    if (found < 0) return undefined;
    const { name, scope } = this.#tokens[found];
    return { name, scope };
  }
}

/** Reads and parses a token file; errors name the file. */
export async function loadTokenFile(path: string): Promise<TokenTable> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`cannot read the token file ${path}: ${(error as Error).message}`);
  }
  try {
    return TokenTable.parse(text);
  } catch (error) {
    throw new Error(`token file ${path}: ${(error as Error).message}`);
  }
}
