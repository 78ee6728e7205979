/**
 * An S3-compatible bucket as the origin (AWS S3, Ceph's RADOS Gateway,
 * MinIO, ...): `--origin s3://BUCKET/PREFIX --s3-endpoint URL`, credentials
 * from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION`.
 *
 * - Freshness through the store's validators: the ETag, Last-Modified and
 *   size of a `HEAD` make the validator, so a changed object is fetched
 *   again and a deleted one is a 404 that leaves the cache.
 * - Ranged reads are ranged `GET`s.
 * - Failures (a broken connection, 500/502/504) are retried with bounded
 *   exponential backoff, then answered `503 origin unavailable`. A refused
 *   connection (nothing listens) and a timeout (it already waited the whole
 *   `timeoutMs`) are not retried.
 *   Throttling (429, 503 `SlowDown`) is not retried: the store asked for
 *   fewer requests, so it is answered `503 origin throttled` at once (the
 *   breaker in origin/shield.ts then backs off). An unexpected answer (403,
 *   say) is a `500` naming it. A read that breaks off is never admitted:
 *   the cache checks every byte count.
 * - Conditional reads (`If-None-Match`) for revalidation: a `304` moves no
 *   bytes.
 *
 * Requests are signed with AWS Signature V4 by `aws4fetch` and sent with
 * Deno's `fetch`, path-style (`ENDPOINT/BUCKET/KEY`), which every
 * S3-compatible store accepts.
 *
 * @module
 */

import { DEFAULTS } from "../defaults.ts";
import { AwsClient } from "aws4fetch";
import type {
  ByteRange,
  Origin,
  OriginDirPage,
  OriginFile,
  OriginListWindow,
  OriginStat,
} from "./origin.ts";
import { RequestError } from "../protocol.ts";
import { listS3Page } from "./s3_listing.ts";
import { text } from "./s3_xml.ts";

/** Options of {@linkcode S3Origin}. */
export interface S3OriginOptions {
  /** The bucket and key prefix, `s3://BUCKET` or `s3://BUCKET/PREFIX`. */
  url: string;
  /** The store's address, e.g. `http://127.0.0.1:7480`. */
  endpoint: string;
  /** The access key. */
  accessKeyId: string;
  /** The secret key. */
  secretAccessKey: string;
  /**
   * The region the requests are signed for.
   * @default {DEFAULTS.s3Region}
   */
  region?: string;
  /**
   * Attempts after the first for a request that failed in a way worth
   * retrying (no answer, timeout, 5xx, 429).
   * @default {DEFAULTS.originRetries}
   */
  retries?: number;
  /**
   * The first backoff; it doubles at each retry (with jitter), up to 2 s.
   * @default {DEFAULTS.originBackoffMs}
   */
  backoffMs?: number;
  /**
   * Milliseconds for an answer to start, and for each read of a body to
   * make progress.
   * @default {DEFAULTS.originTimeoutMs}
   */
  timeoutMs?: number;
}

/** The parts of an `s3://` URL. */
export interface S3Location {
  /** The bucket's name. */
  bucket: string;
  /** The key prefix, empty or ending with `/`. */
  prefix: string;
}

/**
 * Reads `s3://BUCKET[/PREFIX]`.
 *
 * @throws {RangeError} when it is not such a URL.
 */
export function parseS3Url(url: string): S3Location {
  const match = /^s3:\/\/([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!match) throw new RangeError(`an S3 origin must be s3://BUCKET/PREFIX, not "${url}"`);
  const prefix = (match[2] ?? "").replace(/^\/+|\/+$/g, "");
  return { bucket: match[1], prefix: prefix === "" ? "" : `${prefix}/` };
}

/** Statuses worth another attempt: the store is failing (a 503 not throttling: see `throttled`). */
const RETRYABLE = new Set([500, 502, 503, 504]);
/**
 * The store asks for fewer requests: a 429, or S3's `503 SlowDown` (a `HEAD`
 * answers it without a body, so a bare 503 counts too); another attempt now
 * would add to the load. A 503 with another code is retried.
 */
function throttled(status: number, detail: string): boolean {
  return status === 429 || (status === 503 && (detail === "" || detail.startsWith("SlowDown")));
}
const MAX_BACKOFF_MS = 2000;

/** An S3-compatible bucket as an {@linkcode Origin}. */
export class S3Origin implements Origin {
  /** Every request asks the store (a `HEAD`). */
  readonly freshness = "stat";
  /** Where the objects are. */
  readonly location: S3Location;
  readonly #endpoint: string;
  readonly #aws: AwsClient;
  readonly #retries: number;
  readonly #backoffMs: number;
  readonly #timeoutMs: number;
  readonly #options: S3OriginOptions;

  /** An origin for the bucket and prefix of `options.url` at `options.endpoint`. */
  constructor(options: S3OriginOptions) {
    this.#options = { ...options };
    this.location = parseS3Url(options.url);
    let endpoint: URL;
    try {
      endpoint = new URL(options.endpoint);
    } catch {
      throw new RangeError(`invalid S3 endpoint: "${options.endpoint}"`);
    }
    if (endpoint.protocol !== "http:" && endpoint.protocol !== "https:") {
      throw new RangeError(`an S3 endpoint must be http:// or https://, not "${options.endpoint}"`);
    }
    this.#endpoint = endpoint.origin;
    this.#aws = new AwsClient({
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      region: options.region ?? DEFAULTS.s3Region,
      service: "s3",
      retries: 0, // ours, below: bounded, and mapped to clear answers
    });
    this.#retries = options.retries ?? DEFAULTS.originRetries;
    this.#backoffMs = options.backoffMs ?? DEFAULTS.originBackoffMs;
    this.#timeoutMs = options.timeoutMs ?? DEFAULTS.originTimeoutMs;
  }

  /** The options it was made with: a worker thread makes its own origin from them. */
  get options(): S3OriginOptions {
    return { ...this.#options };
  }

  /**
   * An S3 origin with credentials from the environment (`AWS_ACCESS_KEY_ID`,
   * `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`).
   *
   * @throws {Error} naming the variable that is missing.
   */
  static fromEnv(
    url: string,
    endpoint: string,
    options: Partial<S3OriginOptions> = {},
  ): S3Origin {
    const need = (name: string) => {
      const value = Deno.env.get(name);
      if (!value) throw new Error(`the S3 origin needs ${name} in the environment`);
      return value;
    };
    return new S3Origin({
      ...options,
      url,
      endpoint,
      accessKeyId: need("AWS_ACCESS_KEY_ID"),
      secretAccessKey: need("AWS_SECRET_ACCESS_KEY"),
      region: Deno.env.get("AWS_REGION") || Deno.env.get("AWS_DEFAULT_REGION") || DEFAULTS.s3Region,
    });
  }

  async stat(path: string): Promise<OriginStat> {
    const { response } = await this.#send("HEAD", path);
    await response.body?.cancel();
    return statOf(response, Number(response.headers.get("content-length")));
  }

  async open(path: string, range?: ByteRange): Promise<OriginFile> {
    if (range && range.length === 0) {
      // S3 ranges cannot be empty: the stat alone, and no bytes.
      const stat = await this.stat(path);
      if (range.offset > stat.size) throw rangeError(path, stat.size);
      return emptyFile(stat);
    }
    const headers: Record<string, string> = {};
    if (range && (range.offset > 0 || Number.isFinite(range.length))) {
      headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    }
    const { response, controller } = await this.#send("GET", path, { headers });
    const size = headers.range === undefined
      ? Number(response.headers.get("content-length"))
      : rangedTotal(response);
    if (!Number.isSafeInteger(size)) {
      controller.abort();
      throw new RequestError(
        500,
        `origin answered ${response.status} to a ranged GET of ${path} without a usable ` +
          `Content-Range (${response.headers.get("content-range") ?? "none"})`,
      );
    }
    const stat = statOf(response, size);
    return new S3Body(response.body!, controller, stat, this.#timeoutMs, path);
  }

  async openIfChanged(path: string, etag: string): Promise<OriginFile | undefined> {
    const { response, controller } = await this.#send("GET", path, {
      headers: { "if-none-match": etag },
      notModified: true,
    });
    if (response.status === 304) {
      controller.abort();
      return undefined;
    }
    const stat = statOf(response, Number(response.headers.get("content-length")));
    return new S3Body(response.body!, controller, stat, this.#timeoutMs, path);
  }

  async list(path: string, window: OriginListWindow): Promise<OriginDirPage> {
    const prefix = this.location.prefix + (path === "" ? "" : `${path}/`);
    const ask = async (query: URLSearchParams) =>
      (await this.#send("GET", undefined, { query, text: true })).text;
    const page = await listS3Page(ask, prefix, window);
    // S3 has no directories: a prefix with nothing under it is not one.
    if (page.entries.length === 0 && window.after === undefined && path !== "") {
      throw new RequestError(404, `not found: ${path}`);
    }
    return page;
  }

  /**
   * Sends a signed request for `path`'s object (or the bucket itself),
   * retrying what is worth retrying; resolves to a successful answer.
   *
   * @throws {RequestError} 404 when the object is not there, 416 for a
   *   range past its end, 503 when the store cannot be reached or keeps
   *   failing, 500 for another answer.
   */
  async #send(
    method: "GET" | "HEAD",
    path: string | undefined,
    options: {
      headers?: Record<string, string>;
      query?: URLSearchParams;
      text?: boolean;
      /** A `304 Not Modified` is an answer (a conditional request). */
      notModified?: boolean;
    } = {},
  ): Promise<{ response: Response; controller: AbortController; text: string }> {
    const url = this.#url(path, options.query);
    let problem = "";
    for (let attempt = 0; attempt <= this.#retries; attempt++) {
      if (attempt > 0) await sleep(backoff(this.#backoffMs, attempt));
      const controller = new AbortController();
      // Armed until the answer has started (and, for a listing or an error,
      // until its whole text is read); an object's body has its own timer
      // per read (S3Body), so a long download is never cut by this one.
      const timer = setTimeout(() => controller.abort(), this.#timeoutMs);
      let response: Response;
      let text = "";
      try {
        response = await this.#aws.fetch(url, {
          method,
          headers: options.headers,
          signal: controller.signal,
        });
        const notModified = response.status === 304 && options.notModified;
        if (options.text || (!response.ok && !notModified)) text = await response.text();
        if (notModified) return { response, controller, text };
      } catch (error) {
        if (controller.signal.aborted) {
          // A store that held a request for the whole timeout is hung, not
          // flaky: another attempt would only wait as long again.
          throw new RequestError(
            503,
            `origin unavailable: ${this.#endpoint} (no answer within ${this.#timeoutMs} ms)`,
          );
        }
        problem = describeFetchError(error);
        // Nothing listens there: the store is down, and a retry in 100 ms
        // would find it as down. Other breaks (a reset) are retried.
        if (/Connection refused|ECONNREFUSED/i.test(problem)) break;
        continue;
      } finally {
        clearTimeout(timer);
      }
      if (response.ok) return { response, controller, text };
      const detail = errorDetail(text);
      const status = detail ? `${response.status} ${detail}` : `${response.status}`;
      if (throttled(response.status, detail)) {
        throw new RequestError(503, `origin throttled: ${this.#endpoint} (${status})`);
      }
      if (RETRYABLE.has(response.status)) {
        problem = status;
        continue;
      }
      const where = path ?? this.location.prefix;
      if (response.status === 404) throw new RequestError(404, `not found: ${where}`);
      if (response.status === 416) throw rangeError(where, undefined);
      throw new RequestError(500, `origin answered ${status} for ${where}`);
    }
    const attempts = /Connection refused|ECONNREFUSED/i.test(problem)
      ? "refused"
      : `${this.#retries + 1} attempts`;
    throw new RequestError(503, `origin unavailable: ${this.#endpoint} (${problem}; ${attempts})`);
  }

  #url(path: string | undefined, query?: URLSearchParams): string {
    const { bucket, prefix } = this.location;
    const key = path === undefined ? "" : `/${encodeKey(prefix + path)}`;
    return `${this.#endpoint}/${bucket}${key}${query ? `?${query}` : ""}`;
  }
}

/**
 * An object's body as a {@linkcode OriginFile}: reads copy from the
 * response stream; each read must make progress within the timeout.
 */
class S3Body implements OriginFile {
  readonly stat: OriginStat;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #controller: AbortController;
  #timeoutMs: number;
  #path: string;
  #left: Uint8Array | undefined;

  constructor(
    body: ReadableStream<Uint8Array>,
    controller: AbortController,
    stat: OriginStat,
    timeoutMs: number,
    path: string,
  ) {
    this.#reader = body.getReader();
    this.#controller = controller;
    this.stat = stat;
    this.#timeoutMs = timeoutMs;
    this.#path = path;
  }

  async read(into: Uint8Array): Promise<number | null> {
    if (!this.#left || this.#left.length === 0) {
      const timer = setTimeout(() => this.#controller.abort(), this.#timeoutMs);
      try {
        const { value, done } = await this.#reader.read();
        if (done) return null;
        this.#left = value;
      } catch (error) {
        const stalled = this.#controller.signal.aborted;
        throw new Error(
          stalled
            ? `origin stalled reading ${this.#path} (no byte within ${this.#timeoutMs} ms)`
            : `origin read of ${this.#path} failed: ${(error as Error).message}`,
        );
      } finally {
        clearTimeout(timer);
      }
    }
    const n = Math.min(into.length, this.#left.length);
    into.set(this.#left.subarray(0, n));
    this.#left = this.#left.subarray(n);
    return n;
  }

  close(): void {
    this.#reader.cancel().catch(() => {});
    this.#controller.abort();
  }

  restat(): Promise<OriginStat> {
    // One GET reads one version of an object, whatever happens to the key
    // meanwhile; a short or long body is caught by the byte count.
    return Promise.resolve(this.stat);
  }
}

/**
 * The validator, mtime, entity tag and stated lifetime of an object, from
 * its answer's headers.
 */
function statOf(response: Response, size: number): OriginStat {
  const etag = response.headers.get("etag") ?? "";
  const lastModified = response.headers.get("last-modified") ?? "";
  const stat: OriginStat = {
    size,
    mtime: Date.parse(lastModified) || 0,
    validator: `${size}:${etag}:${lastModified}`,
  };
  if (etag) stat.etag = etag;
  const lifetimeMs = statedLifetime(response.headers);
  if (lifetimeMs !== undefined) stat.lifetimeMs = lifetimeMs;
  if (forbidsStale(response.headers)) stat.noStale = true;
  return stat;
}

/**
 * The freshness lifetime an answer states (RFC 9111 section 4.2.1):
 * `Cache-Control: s-maxage` (a shared cache's), else `max-age`, else
 * `Expires` minus `Date`; `no-cache`, `no-store` or an unreadable `Expires`
 * state 0. Undefined when it states none.
 */
export function statedLifetime(headers: Headers): number | undefined {
  const control = (headers.get("cache-control") ?? "").toLowerCase();
  if (/(^|[,\s])(no-cache|no-store)(?![-\w])/.test(control)) return 0;
  for (const directive of ["s-maxage", "max-age"]) {
    const match = new RegExp(`(?:^|[,\\s])${directive}\\s*=\\s*"?(\\d+)`).exec(control);
    if (match) return Math.min(Number(match[1]), MAX_LIFETIME_S) * 1000;
  }
  const expires = headers.get("expires");
  if (expires === null) return undefined;
  const at = Date.parse(expires);
  const date = Date.parse(headers.get("date") ?? "") || Date.now();
  return Number.isNaN(at) ? 0 : Math.max(0, Math.min(at - date, MAX_LIFETIME_S * 1000));
}

/**
 * True when an answer's `Cache-Control` forbids serving it past its
 * lifetime (RFC 9111 section 5.2.2: `no-cache`, `no-store`,
 * `must-revalidate`, `proxy-revalidate`).
 */
export function forbidsStale(headers: Headers): boolean {
  const control = (headers.get("cache-control") ?? "").toLowerCase();
  return /(^|[,\s])(no-cache|no-store|must-revalidate|proxy-revalidate)(?![-\w])/.test(control);
}

/** The longest lifetime taken from an answer: a year, as HTTP caches cap it. */
const MAX_LIFETIME_S = 365 * 24 * 3600;

/**
 * The whole object's size from the answer to a ranged GET: a 206 with
 * `Content-Range: bytes FIRST-LAST/TOTAL`. Anything else (a store that
 * ignored the range and sent the object from its start, or an unknown
 * total) is NaN: those bytes are not the range asked for.
 */
function rangedTotal(response: Response): number {
  if (response.status !== 206) return NaN;
  const total = /^bytes \d+-\d+\/(\d+)$/.exec(response.headers.get("content-range") ?? "");
  return total ? Number(total[1]) : NaN;
}

function emptyFile(stat: OriginStat): OriginFile {
  return {
    stat,
    read: () => Promise.resolve(null),
    close: () => {},
    restat: () => Promise.resolve(stat),
  };
}

function rangeError(path: string, size: number | undefined): RequestError {
  const of = size === undefined ? "" : ` (size ${size})`;
  return new RequestError(416, `range past the end of ${path}${of}`);
}

/**
 * What went wrong with a request that got no answer: Deno's `fetch` says
 * "fetch failed" and puts the reason (refused, reset, DNS) in its cause.
 */
function describeFetchError(error: unknown): string {
  const cause = (error as Error).cause;
  const reason = cause instanceof Error ? cause.message : "";
  const detail = /: ([^:]*\(os error \d+\))$/.exec(reason)?.[1] ?? reason;
  return detail || (error as Error).message;
}

/** An S3 error's code and message, from its XML body (HEAD answers have none). */
function errorDetail(body: string): string {
  const code = text(body, "Code");
  return code ? `${code}${text(body, "Message") ? `: ${text(body, "Message")}` : ""}` : "";
}

/** Percent-encodes a key for a URL path, keeping its slashes. */
function encodeKey(key: string): string {
  return key.split("/").map(encodeURIComponent).join("/");
}

/** The wait before attempt `attempt` (1-based): doubling, with full jitter. */
function backoff(firstMs: number, attempt: number): number {
  const ceiling = Math.min(MAX_BACKOFF_MS, firstMs * 2 ** (attempt - 1));
  return ceiling / 2 + Math.random() * ceiling / 2;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
