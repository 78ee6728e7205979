/**
 * The HTTP/1.1 front end: the same service (one cache, one set of counters)
 * for curl, browsers, download managers and Prometheus. `GET`/`HEAD` of a
 * path serve the file (ranges, conditional requests, `X-Cache`) or list a
 * directory; `/-/` is the status page, and `/-/metrics`, `/-/stats`,
 * `/-/cache` and `/-/recent` are its data. Paths below `/-/` are the
 * server's own: a served directory named `-` is reachable over TCP only.
 *
 * Clients reach `Deno.serve` through a {@linkcode ConnectionGuard}, which
 * keeps the TCP side's connection limit and timeouts.
 *
 * @module
 */

import { ConnectionGuard, type GuardedConnection } from "./guard.ts";
import { entityTag, mediaType, notModified, parseRange, rangeStillValid } from "./headers.ts";
import { listingPage } from "./pages.ts";
import { formatMetrics } from "../service/metrics.ts";
import { checkPath, percentDecode, RequestError } from "../protocol.ts";
import {
  CHUNK_SIZES,
  type FileService,
  LARGE_BODY,
  type Limits,
  type RequestRecord,
  type Served,
} from "../service/file_service.ts";

/** Options of {@linkcode startHttp}. */
export interface HttpOptions extends Limits {
  /** The address to listen on. */
  hostname: string;
  /** The port to listen on; 0 picks a free one. */
  port: number;
}

/** A running HTTP front end. */
export interface HttpFrontEnd {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /**
   * Stops accepting, lets responses in progress finish for at most
   * `timeoutMs`, then closes every connection.
   */
  close(timeoutMs: number): Promise<void>;
}

/** What the handler fills in about a request, for the log and the counters. */
interface Exchange {
  record: RequestRecord;
  /** When the request arrived (`performance.now()`). */
  started: number;
  connection?: GuardedConnection;
  /** Gives back what the response's body holds (its file, a permit). */
  release?: () => void;
  /** Body bytes handed over so far, where a stream of ours counts them. */
  streamed: number;
}

/** The status page and its assets, served from `status/`. */
const STATUS_ASSETS: Record<string, { file: string; type: string }> = {
  "/-/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/-/status.js": { file: "status.js", type: "text/javascript; charset=utf-8" },
  "/-/status.css": { file: "status.css", type: "text/css; charset=utf-8" },
};

const encoder = new TextEncoder();

/**
 * Starts the front end on `options.port`. The port is taken at once (so a
 * server that cannot take it fails before touching its cache); requests are
 * answered once `service` resolves.
 *
 * @example
 * ```ts
 * import { startServer } from "@tcpcache/tcpcache/server";
 * const server = await startServer({ port: 0, httpPort: 0, cacheDir: await Deno.makeTempDir() + "/c" });
 * const response = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/hello.txt`);
 * console.log(response.headers.get("x-cache"), await response.text());
 * await server.close();
 * ```
 */
export function startHttp(service: Promise<FileService>, options: HttpOptions): HttpFrontEnd {
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const front = new HttpHandler(service, options);
  const upstream = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
    onError: (error) => {
      options.onError(`http: ${error instanceof Error ? error.message : String(error)}`);
      return new Response("server error\n", { status: 500 });
    },
  }, (request, info) => front.handle(request, info));
  const guard = new ConnectionGuard(listener, upstream.addr.port, {
    ...options,
    onSendTimeout: () => service.then((ready) => ready.countSendTimeout()),
  });
  service.then((ready) => ready.httpConnections = () => guard.open);
  front.guard = guard;
  const accepting = guard.acceptLoop();
  return {
    addr: listener.addr as Deno.NetAddr,
    close: async (timeoutMs) => {
      await guard.close(timeoutMs);
      await accepting;
      await upstream.shutdown();
    },
  };
}

/** Answers the requests that reach `Deno.serve`. */
class HttpHandler {
  guard?: ConnectionGuard;
  #service: Promise<FileService>;
  #options: HttpOptions;
  #assets = new Map<string, Uint8Array<ArrayBuffer>>();

  constructor(service: Promise<FileService>, options: HttpOptions) {
    this.#service = service;
    this.#options = options;
  }

  async handle(request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> {
    const service = await this.#service;
    const connection = this.guard?.connectionOf(info.remoteAddr.port);
    const exchange: Exchange = {
      connection,
      streamed: 0,
      started: performance.now(),
      record: {
        time: Date.now(),
        protocol: "http",
        client: connection?.client ?? "-",
        command: request.method,
        status: 200,
        bytes: 0,
        ms: 0,
      },
    };
    service.countRequest();
    service.httpActive++;
    connection?.requestStarted();
    let response: Response;
    try {
      response = await this.#route(service, request, exchange);
    } catch (error) {
      response = errorResponse(...service.describeError(error));
    }
    exchange.record.status = response.status;
    const length = request.method === "HEAD"
      ? 0
      : Number(response.headers.get("content-length") ?? 0);
    // The bookkeeping ends when the response is delivered, or fails to be.
    info.completed.then(
      () => this.#finish(service, exchange, length),
      () => this.#finish(service, exchange, exchange.streamed),
    );
    return response;
  }

  /** Ends a request's bookkeeping, with the body bytes that were delivered. */
  #finish(service: FileService, exchange: Exchange, delivered: number): void {
    const { record, connection } = exchange;
    exchange.release?.();
    record.ms = performance.now() - exchange.started;
    record.bytes = delivered;
    service.countSent(delivered);
    service.httpActive--;
    connection?.requestEnded();
    service.record(record, { recent: !record.path?.startsWith("/-/") });
    this.#options.onRequest?.(record);
  }

  async #route(service: FileService, request: Request, exchange: Exchange): Promise<Response> {
    if (request.method !== "GET" && request.method !== "HEAD") {
      // Closing after the answer: the request's body, if any, is not read.
      return errorResponse(405, `method ${request.method} not allowed`, {
        allow: "GET, HEAD",
        connection: "close",
      });
    }
    const url = new URL(request.url);
    const pathname = url.pathname;
    if (pathname.startsWith("/-/")) {
      exchange.record.path = pathname; // the server's own pages: absolute, unlike file paths
      return await this.#serverPage(service, pathname, request);
    }
    const path = pathname === "/" ? "" : percentDecode(pathname.slice(1));
    exchange.record.path = path;
    if (path === "" || path.endsWith("/")) {
      const dir = path.replace(/\/$/, "");
      if (dir !== "") checkPath(dir);
      return await this.#listing(service, dir, request);
    }
    checkPath(path);
    try {
      return await this.#serveFile(service, path, request, exchange);
    } catch (error) {
      // A directory asked for without its slash: send the browser to it, so
      // that the relative links of its listing resolve.
      if (error instanceof RequestError && error.code === 404) {
        const isDirectory = await service.files(path).then(() => true, () => false);
        if (isDirectory) {
          return new Response(null, { status: 301, headers: { location: `${pathname}/` } });
        }
      }
      throw error;
    }
  }

  /**
   * Serves a file. The preconditions are evaluated first, against the
   * version a `GET` would serve now (RFC 9110 §13.2.2): a 304 opens
   * nothing, and a failed `If-Range` drops the range before it is checked.
   */
  async #serveFile(
    service: FileService,
    path: string,
    request: Request,
    exchange: Exchange,
  ): Promise<Response> {
    const current = await service.current(path);
    const validators = { etag: entityTag(current), mtime: current.mtime };
    if (notModified(request.headers, validators)) {
      return new Response(null, { status: 304, headers: fileHeaders(path, current) });
    }
    const rangeHeader = rangeStillValid(request.headers, validators)
      ? request.headers.get("range")
      : null;
    const range = parseRange(rangeHeader, current.size);
    if (range === "unsatisfiable") {
      return errorResponse(416, `range ${rangeHeader} is past the end (size ${current.size})`, {
        "content-range": `bytes */${current.size}`,
      });
    }
    const served = await service.open(path, range ?? {}, current);
    exchange.record.cache = served.outcome;
    const headers = fileHeaders(path, served);
    headers.set("x-cache", served.outcome.toUpperCase());
    headers.set("content-length", String(served.length));
    if (range) {
      const last = served.offset + served.length - 1;
      headers.set("content-range", `bytes ${served.offset}-${last}/${served.size}`);
    }
    const status = range ? 206 : 200;
    if (request.method === "HEAD") {
      served.release();
      return new Response(null, { status, headers });
    }
    exchange.release = served.release;
    return new Response(this.#body(served, exchange), { status, headers });
  }

  /**
   * The body: bytes in memory as they are; a cache file read to its end as
   * the file's own stream, which `Deno.serve` sends without passing the
   * bytes through JavaScript; anything else (a range that stops short of
   * the end, the origin) through a stream of ours.
   */
  #body(served: Served, exchange: Exchange): BodyInit {
    if (served.bytes) return served.bytes as Uint8Array<ArrayBuffer>;
    if (served.file && served.offset + served.length === served.size) return served.file.readable;
    return this.#bodyStream(served, exchange);
  }

  /**
   * The body as a stream that reads a chunk each time the connection wants
   * one: a slow client slows the reads, and nothing is buffered ahead.
   */
  #bodyStream(served: Served, exchange: Exchange): ReadableStream<Uint8Array> {
    let remaining = served.length;
    let cancelled = false; // the client left: the source is closed under a pending read
    const chunkSize = served.length >= LARGE_BODY ? CHUNK_SIZES.large : CHUNK_SIZES.small;
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          // A fresh buffer each time: the connection owns a chunk once enqueued.
          const buffer = new Uint8Array(Math.min(chunkSize, remaining));
          const n = await served.source!.read(buffer);
          if (n === null) throw new Error(`${served.path} ended early`);
          remaining -= n;
          exchange.streamed += n;
          controller.enqueue(buffer.subarray(0, n));
          if (remaining === 0) controller.close();
        } catch (error) {
          if (cancelled) return;
          this.#options.onError(`response cut short: ${(error as Error).message}`);
          controller.error(error);
        }
      },
      cancel: () => {
        cancelled = true;
      },
    }, { highWaterMark: 0 });
  }

  async #listing(service: FileService, dir: string, request: Request): Promise<Response> {
    const { entries } = await service.files(dir);
    const accept = request.headers.get("accept") ?? "";
    if (accept.includes("application/json") && !accept.includes("text/html")) {
      return jsonResponse({ path: dir, entries });
    }
    return textResponse(200, listingPage(dir, entries), {
      "content-type": "text/html; charset=utf-8",
    });
  }

  async #serverPage(service: FileService, pathname: string, request: Request): Promise<Response> {
    switch (pathname) {
      case "/-/metrics":
        return textResponse(200, formatMetrics(service.metrics()), {
          "content-type": "text/plain; version=0.0.4; charset=utf-8",
        });
      case "/-/stats":
        return jsonResponse(service.stats());
      case "/-/cache":
        return jsonResponse(service.listing());
      case "/-/recent":
        return jsonResponse(service.recent());
    }
    const asset = STATUS_ASSETS[pathname];
    if (!asset) return errorResponse(404, `not found: ${pathname}`);
    const body = await this.#asset(asset.file);
    return new Response(request.method === "HEAD" ? null : body, {
      headers: {
        "content-type": asset.type,
        "content-length": String(body.length),
        "cache-control": "no-cache",
      },
    });
  }

  /** A file of the status page, read once. */
  async #asset(name: string): Promise<Uint8Array<ArrayBuffer>> {
    let bytes = this.#assets.get(name);
    if (!bytes) {
      bytes = await Deno.readFile(new URL(`./status/${name}`, import.meta.url));
      this.#assets.set(name, bytes);
    }
    return bytes;
  }
}

/** The headers every answer about a file carries: its type and validators. */
function fileHeaders(
  path: string,
  version: { mtime: number; validator: string; sha256?: string },
): Headers {
  return new Headers({
    "accept-ranges": "bytes",
    "content-type": mediaType(path),
    "etag": entityTag(version),
    "last-modified": new Date(version.mtime).toUTCString(),
  });
}

function jsonResponse(value: unknown): Response {
  return textResponse(200, JSON.stringify(value), {
    "content-type": "application/json",
    "cache-control": "no-store",
  });
}

function errorResponse(
  status: number,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return textResponse(status, `${message}\n`, {
    "content-type": "text/plain; charset=utf-8",
    ...headers,
  });
}

/** A response with a text body and its length (for the access log). */
function textResponse(status: number, text: string, headers: Record<string, string>): Response {
  const body = encoder.encode(text);
  return new Response(body, {
    status,
    headers: { ...headers, "content-length": String(body.length) },
  });
}
