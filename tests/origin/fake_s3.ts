/**
 * A stand-in S3 server in this process (HEAD, GET with Range and
 * If-None-Match, ListObjectsV2), whose failures are made to order, for the
 * S3 origin's tests and the origin shield's.
 *
 * @module
 */

import { sha256 } from "../helpers.ts";

/** What the stand-in does with the next request, before answering it properly. */
export type Fault =
  | { pass: true } // this request is answered as it should be
  | { status: number; code?: string }
  | { stallAfter: number }
  | { cutAfter: number }
  | { ignoreRange: true }; // answers a ranged GET with the whole object, 200

/** A bucket in memory behind a minimal S3 API (HEAD, GET with Range, ListObjectsV2). */
export class FakeS3 {
  objects = new Map<
    string,
    { bytes: Uint8Array; etag: string; modified: Date; headers: Record<string, string> }
  >();
  faults: Fault[] = [];
  /** GET bodies of a key held after some bytes (see {@linkcode FakeS3.holdGet}). */
  #holds = new Map<string, { after: number; until: Promise<boolean> }>();
  /** Entries per ListObjectsV2 page (S3's own is 1,000). */
  pageSize = 1000;
  requests: {
    method: string;
    key: string;
    range: string | null;
    ifNoneMatch: string | null;
    signed: boolean;
    /** The query's parameters (a listing's `max-keys`, say). */
    query: URLSearchParams;
  }[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request) => this.#handle(request),
    );
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** Stores an object; `headers` are sent with it (`cache-control`, say). */
  put(key: string, bytes: Uint8Array, headers: Record<string, string> = {}): void {
    const etag = `"${sha256(bytes).slice(0, 32)}"`;
    this.objects.set(key, { bytes, etag, modified: new Date(), headers });
  }

  /**
   * Holds the body of the next GET of `key` after `after` bytes, until
   * `release()` sends the rest or `cut()` breaks it off (a store failing
   * mid-object). HEADs and ranged GETs of the key pass.
   */
  holdGet(key: string, after: number): { release(): void; cut(): void } {
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#holds.set(key, { after, until: promise });
    stalls.add(() => resolve(true));
    return { release: () => resolve(true), cut: () => resolve(false) };
  }

  /** Ends the stalled bodies (or shutting down would wait for them forever), then stops. */
  close(): Promise<void> {
    for (const end of stalls) end();
    stalls.clear();
    return this.#server.shutdown();
  }

  #handle(request: Request): Response {
    const url = new URL(request.url);
    const [, bucket, ...rest] = url.pathname.split("/");
    const key = decodeURIComponent(rest.join("/"));
    this.requests.push({
      method: request.method,
      key,
      range: request.headers.get("range"),
      ifNoneMatch: request.headers.get("if-none-match"),
      signed: /^AWS4-HMAC-SHA256 Credential=KEY\//.test(request.headers.get("authorization") ?? ""),
      query: url.searchParams,
    });
    const next = this.faults.shift();
    const fault = next && "pass" in next ? undefined : next;
    if (fault && "status" in fault) {
      const body = `<Error><Code>${
        fault.code ?? "Fault"
      }</Code><Message>injected</Message></Error>`;
      return new Response(request.method === "HEAD" ? null : body, { status: fault.status });
    }
    if (bucket !== "bucket") return new Response(null, { status: 404 });
    if (key === "") {
      const xml = new TextEncoder().encode(this.#list(url.searchParams));
      return new Response(fault ? faultyBody(xml, fault) : xml, {
        headers: { "content-type": "application/xml" },
      });
    }
    const object = this.objects.get(key);
    if (!object) return new Response("<Error><Code>NoSuchKey</Code></Error>", { status: 404 });
    const headers = new Headers({
      ...object.headers,
      etag: object.etag,
      "last-modified": object.modified.toUTCString(),
    });
    if (request.headers.get("if-none-match") === object.etag) {
      return new Response(null, { status: 304, headers });
    }
    let bytes = object.bytes;
    let status = 200;
    const range = /^bytes=(\d+)-(\d+)$/.exec(request.headers.get("range") ?? "");
    if (range && !(fault && "ignoreRange" in fault)) {
      const [first, last] = [Number(range[1]), Math.min(Number(range[2]), bytes.length - 1)];
      if (first >= bytes.length) return new Response(null, { status: 416 });
      headers.set("content-range", `bytes ${first}-${last}/${bytes.length}`);
      bytes = bytes.subarray(first, last + 1);
      status = 206;
    }
    headers.set("content-length", String(bytes.length));
    if (request.method === "HEAD") return new Response(null, { status, headers });
    const hold = range ? undefined : this.#holds.get(key);
    if (hold) {
      this.#holds.delete(key);
      return new Response(heldBody(bytes, hold.after, hold.until), { status, headers });
    }
    if (fault && !("ignoreRange" in fault)) {
      return new Response(faultyBody(bytes, fault), { status, headers });
    }
    return new Response(bytes.slice(), { status, headers });
  }

  /**
   * ListObjectsV2 as S3 answers it: keys in the byte order of their UTF-8,
   * those after `start-after` only, rolled up into common prefixes with
   * `delimiter=/`; at most `max-keys` (and `pageSize`) items an answer, a
   * common prefix counting as one. The continuation token is the last key
   * or prefix sent.
   */
  #list(query: URLSearchParams): string {
    const prefix = query.get("prefix") ?? "";
    const startAfter = query.get("start-after") ?? "";
    const token = query.get("continuation-token");
    const maxKeys = Math.min(this.pageSize, Number(query.get("max-keys") ?? 1000));
    const keys = [...this.objects.keys()]
      .filter((key) => key.startsWith(prefix) && byteOrder(key, startAfter) > 0)
      .sort(byteOrder);
    const items: { key: string; xml: string }[] = [];
    for (const key of keys) {
      const rest = key.slice(prefix.length);
      const slash = query.get("delimiter") === "/" ? rest.indexOf("/") : -1;
      if (slash >= 0) {
        const dir = prefix + rest.slice(0, slash + 1);
        if (items.at(-1)?.key === dir) continue; // its keys are together: the order is by key
        items.push({
          key: dir,
          xml: `<CommonPrefixes><Prefix>${escapeXml(dir)}</Prefix></CommonPrefixes>`,
        });
      } else {
        const object = this.objects.get(key)!;
        items.push({
          key,
          xml: `<Contents><Key>${escapeXml(key)}</Key><Size>${object.bytes.length}</Size>` +
            `<LastModified>${object.modified.toISOString()}</LastModified></Contents>`,
        });
      }
    }
    const rest = token === null ? items : items.filter((item) => byteOrder(item.key, token) > 0);
    const page = rest.slice(0, maxKeys);
    const more = rest.length > page.length;
    const next = more
      ? `<NextContinuationToken>${escapeXml(page.at(-1)!.key)}</NextContinuationToken>`
      : "";
    return `<?xml version="1.0"?><ListBucketResult><IsTruncated>${more}</IsTruncated>${next}` +
      `<KeyCount>${page.length}</KeyCount>${page.map((item) => item.xml).join("")}` +
      `</ListBucketResult>`;
  }
}

const utf8 = new TextEncoder();

/** The order of S3's keys: their UTF-8 bytes, compared one by one. */
function byteOrder(a: string, b: string): number {
  const [x, y] = [utf8.encode(a), utf8.encode(b)];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Ways to end the bodies that stall, for FakeS3.close. */
const stalls = new Set<() => void>();

/** A body that sends `after` bytes, then the rest once `until` is true, or breaks off if false. */
function heldBody(
  bytes: Uint8Array,
  after: number,
  until: Promise<boolean>,
): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    async pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(bytes.slice(0, after));
        return;
      }
      if (await until) {
        controller.enqueue(bytes.slice(after));
        controller.close();
      } else {
        controller.error(new Error("connection cut"));
      }
    },
  });
}

/** A body that stalls (until the fake closes), or breaks off, after some bytes. */
function faultyBody(bytes: Uint8Array, fault: Fault): ReadableStream<Uint8Array> {
  const at = "stallAfter" in fault ? fault.stallAfter : "cutAfter" in fault ? fault.cutAfter : 0;
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(bytes.slice(0, at));
        return;
      }
      if ("cutAfter" in fault) {
        controller.error(new Error("connection cut"));
        return;
      }
      return new Promise<void>((resolve) => {
        stalls.add(() => {
          try {
            controller.close();
          } catch {
            // the client cancelled it already
          }
          resolve();
        });
      });
    },
  });
}
