/**
 * A cluster of tcpcache nodes without a coordinator: each path belongs to
 * the node that rendezvous (highest-random-weight) hashing ranks first, so
 * every client sends a path to the same node, adding or removing a node
 * moves only that node's share of paths, and when a node is down its paths
 * go to the next node in their ranking. The nodes are plain servers that
 * never talk to each other.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  type CacheClient,
  type CacheListing,
  connect,
  type ConnectionSecurity,
  type FileListing,
  type FileStat,
  type GetOptions,
  type GetResult,
  type Stats,
  type TcpCacheClient,
} from "./connection.ts";
import { ConnectionError, leavesConnectionUsable, ServerError } from "./errors.ts";

/** A node's address, `HOST:PORT`. */
export type NodeAddress = string;

/**
 * Reads a node list, `HOST:PORT,HOST:PORT,...` (IPv6 hosts in brackets).
 *
 * @throws {RangeError} on an empty list, a malformed or repeated node.
 */
export function parseNodes(text: string): NodeAddress[] {
  const nodes = text.split(",").map((node) => node.trim()).filter((node) => node !== "");
  if (nodes.length === 0) throw new RangeError("the node list is empty");
  for (const node of nodes) splitNode(node);
  if (new Set(nodes).size !== nodes.length) throw new RangeError(`a node is listed twice: ${text}`);
  return nodes;
}

/** A node address's host and port. */
export function splitNode(node: NodeAddress): { host: string; port: number } {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):([0-9]{1,5})$/.exec(node);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) {
    throw new RangeError(`a node must be HOST:PORT, not "${node}"`);
  }
  return { host: match[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * The weight of `path` on `node`: 48 bits of sha256(node, NUL, path).
 * Rendezvous hashing needs a hash whose outputs for different nodes are
 * independent; a cryptographic one makes that true by construction.
 */
export function rendezvousWeight(node: NodeAddress, path: string): number {
  const digest = createHash("sha256").update(node).update("\0").update(path).digest();
  return digest.readUIntBE(0, 6);
}

/**
 * The nodes in the order a path tries them: highest weight first (ties,
 * which need equal 48-bit hashes, go by name).
 *
 * @example
 * ```ts
 * import { rankNodes } from "@tcpcache/tcpcache/client";
 * const nodes = ["10.0.0.1:9089", "10.0.0.2:9089", "10.0.0.3:9089"];
 * rankNodes("docs/readme.txt", nodes)[0]; // the path's node, the same for every client
 * ```
 */
export function rankNodes(path: string, nodes: readonly NodeAddress[]): NodeAddress[] {
  return nodes
    .map((node) => ({ node, weight: rendezvousWeight(node, path) }))
    .sort((a, b) => b.weight - a.weight || (a.node < b.node ? -1 : 1))
    .map(({ node }) => node);
}

/** Options of {@linkcode ClusterClient}. */
export interface ClusterOptions {
  /**
   * How long a node that failed is passed over before it is tried again
   * (a node that comes back is used again after this).
   * @default {2000}
   */
  retryAfterMs?: number;
  /**
   * Opens a connection to a node (tests wrap it).
   * @default {connect}
   */
  connect?: (host: string, port: number) => Promise<TcpCacheClient>;
  /**
   * TLS, its CAs and the token, for every node (see `ConnectOptions`).
   * @default {{}}
   */
  security?: ConnectionSecurity;
}

/** What `LIST` gives across a cluster: the sum, and each node's entries. */
export interface ClusterListing extends CacheListing {
  /** Every node's entries, each with the node that holds it. */
  entries: (CacheListing["entries"][number] & { node: NodeAddress })[];
  /** Each node's totals, or why it did not answer. */
  nodes: ({ node: NodeAddress; up: true; capacity: number; used: number; entries: number } | {
    node: NodeAddress;
    up: false;
    error: string;
  })[];
}

/** The counters summed over the nodes that answered. */
const SUMMED = [
  "requests",
  "hits",
  "misses",
  "bypasses",
  "evictions",
  "bytesSent",
  "bytesFromOrigin",
  "sendTimeouts",
] as const;

/**
 * A client of a whole cluster, with the same methods as one connection
 * ({@linkcode CacheClient}): requests for a path go to its node, over one
 * pipelined connection per node, opened when first needed.
 *
 * @example
 * ```ts
 * import { ClusterClient } from "@tcpcache/tcpcache/client";
 * const cluster = new ClusterClient(["127.0.0.1:9089", "127.0.0.1:9090"]);
 * const { bytes } = await cluster.get("hello.txt");
 * cluster.close();
 * ```
 */
export class ClusterClient implements CacheClient {
  /** The nodes, as given. */
  readonly nodes: readonly NodeAddress[];
  #clients = new Map<NodeAddress, Promise<TcpCacheClient>>();
  #downUntil = new Map<NodeAddress, number>();
  #retryAfterMs: number;
  #closed = false;
  #connect: (host: string, port: number) => Promise<TcpCacheClient>;

  /** A client of `nodes`; it connects to each on first use. */
  constructor(nodes: readonly NodeAddress[], options: ClusterOptions = {}) {
    if (nodes.length === 0) throw new RangeError("a cluster needs at least one node");
    for (const node of nodes) splitNode(node);
    this.nodes = [...nodes];
    this.#retryAfterMs = options.retryAfterMs ?? 2000;
    const security = options.security ?? {};
    this.#connect = options.connect ?? ((host, port) => connect({ host, port, ...security }));
  }

  /** The node a request for `path` goes to now (its first node that is not down). */
  nodeFor(path: string): NodeAddress {
    return this.#order(path)[0];
  }

  /**
   * Fetches a file from its node. When the node cannot be reached, or its
   * connection breaks before the answer starts, the next node in the
   * path's ranking is asked; a break after the body started is not retried
   * (the caller's sink already has part of it).
   */
  get(path: string, options: GetOptions = {}): Promise<GetResult> {
    let started = false;
    const tracked: GetOptions = {
      ...options,
      onHeader: (header) => {
        started = true;
        options.onHeader?.(header);
      },
    };
    return this.#onNodeOf(path, (client) => client.get(path, tracked), () => !started);
  }

  /** A file's stat, from its node. */
  stat(path: string): Promise<FileStat> {
    return this.#onNodeOf(path, (client) => client.stat(path));
  }

  /** A directory of the origin (every node serves the same one). */
  files(dir = ""): Promise<FileListing> {
    return this.#onNodeOf(dir, (client) => client.files(dir));
  }

  /** Checks that at least one node answers. */
  async ping(): Promise<void> {
    await this.#onNodeOf("", (client) => client.ping());
  }

  /** Every node's cache: the sums, each entry with its node, and each node's state. */
  async list(): Promise<ClusterListing> {
    const answers = await this.#askAll((client) => client.list());
    const listing: ClusterListing = { capacity: 0, used: 0, policy: "", entries: [], nodes: [] };
    for (const [node, answer] of answers) {
      if (answer instanceof Error) {
        listing.nodes.push({ node, up: false, error: answer.message });
        continue;
      }
      listing.capacity += answer.capacity;
      listing.used += answer.used;
      listing.policy ||= answer.policy;
      listing.entries.push(...answer.entries.map((entry) => ({ ...entry, node })));
      listing.nodes.push({
        node,
        up: true,
        capacity: answer.capacity,
        used: answer.used,
        entries: answer.entries.length,
      });
    }
    if (listing.nodes.every((node) => !node.up)) throw this.#allDown(answers);
    return listing;
  }

  /** Every node's counters, summed, with each node's own under `nodes[NODE]`. */
  async stats(): Promise<Stats> {
    const answers = await this.#askAll((client) => client.stats());
    const up = [...answers].filter((entry): entry is [string, Stats] =>
      !(entry[1] instanceof Error)
    );
    if (up.length === 0) throw this.#allDown(answers);
    const total: Stats = {
      version: up[0][1].version,
      requests: 0,
      hits: 0,
      misses: 0,
      bypasses: 0,
    };
    for (const key of SUMMED) {
      total[key] = up.reduce((sum, [, stats]) => sum + (Number(stats[key]) || 0), 0);
    }
    const cache = { capacity: 0, used: 0, entries: 0 };
    const errors: Record<string, number> = {};
    for (const [, stats] of up) {
      const own = stats.cache as typeof cache;
      cache.capacity += own.capacity;
      cache.used += own.used;
      cache.entries += own.entries;
      for (const [code, count] of Object.entries(stats.errors as Record<string, number>)) {
        errors[code] = (errors[code] ?? 0) + count;
      }
    }
    total.errors = errors;
    total.cache = cache;
    total.nodes = Object.fromEntries(
      [...answers].map(([node, answer]) => [
        node,
        answer instanceof Error ? { up: false, error: answer.message } : { up: true, ...answer },
      ]),
    );
    return total;
  }

  /** Closes every connection. */
  close(): void {
    this.#closed = true;
    for (const node of [...this.#clients.keys()]) this.#dropClient(node);
  }

  /** The nodes in `path`'s ranking, those marked down moved to the end. */
  #order(path: string): NodeAddress[] {
    const now = Date.now();
    const ranked = rankNodes(path, this.nodes);
    const isDown = (node: NodeAddress) => (this.#downUntil.get(node) ?? 0) > now;
    return [...ranked.filter((node) => !isDown(node)), ...ranked.filter(isDown)];
  }

  /**
   * Runs `action` on the path's node; when the node cannot be reached (and
   * `mayRetry` says so), on the next node of the path's ranking.
   */
  async #onNodeOf<T>(
    path: string,
    action: (client: TcpCacheClient) => Promise<T>,
    mayRetry: () => boolean = () => true,
  ): Promise<T> {
    const failures: string[] = [];
    for (const node of this.#order(path)) {
      try {
        return await this.#onNode(node, action, mayRetry);
      } catch (error) {
        if (!(error instanceof ConnectionError) || !mayRetry() || this.#closed) throw error;
        failures.push(`${node}: ${error.message}`);
      }
    }
    throw new ConnectionError(`no node of the cluster answered (${failures.join("; ")})`);
  }

  /**
   * Runs `action` on one node. A connection the server may have closed
   * meanwhile (idle past its timeout, say) gets one more try on a fresh
   * connection; a node that still cannot be reached is marked down. An
   * answer of the node (404, 503, ...) is passed on: the node is up.
   */
  async #onNode<T>(
    node: NodeAddress,
    action: (client: TcpCacheClient) => Promise<T>,
    mayRetry: () => boolean,
  ): Promise<T> {
    for (let fresh = false;; fresh = true) {
      if (this.#closed) throw new ConnectionError("the cluster client is closed");
      const reused = this.#clients.has(node);
      try {
        const result = await action(await this.#client(node));
        this.#downUntil.delete(node);
        return result;
      } catch (error) {
        if (!leavesConnectionUsable(error)) this.#dropClient(node);
        const stale = reused && !fresh && mayRetry() &&
          (error instanceof ConnectionError ||
            (error instanceof ServerError && error.code === 408));
        if (stale) continue;
        if (error instanceof ConnectionError) this.#markDown(node);
        throw error;
      }
    }
  }

  /** Asks every node at once; a node that cannot be reached has its failure as answer. */
  async #askAll<T>(
    action: (client: TcpCacheClient) => Promise<T>,
  ): Promise<Map<string, T | Error>> {
    const answers = await Promise.all(this.nodes.map(async (node) => {
      try {
        return [node, await this.#onNode(node, action, () => true)] as const;
      } catch (error) {
        if (!(error instanceof ConnectionError)) throw error;
        return [node, error] as const;
      }
    }));
    return new Map<string, T | Error>(answers);
  }

  #allDown(answers: Map<string, unknown>): ConnectionError {
    const reasons = [...answers].map(([node, error]) => `${node}: ${(error as Error).message}`);
    return new ConnectionError(`no node of the cluster answered (${reasons.join("; ")})`);
  }

  #client(node: NodeAddress): Promise<TcpCacheClient> {
    let client = this.#clients.get(node);
    if (!client) {
      const { host, port } = splitNode(node);
      client = this.#connect(host, port);
      this.#clients.set(node, client);
      client.catch(() => this.#clients.delete(node));
    }
    return client;
  }

  /** Passes a node over for a while, and drops its connection. */
  #markDown(node: NodeAddress): void {
    this.#downUntil.set(node, Date.now() + this.#retryAfterMs);
    this.#dropClient(node);
  }

  /** Closes a node's connection; the next request opens a new one. */
  #dropClient(node: NodeAddress): void {
    const client = this.#clients.get(node);
    this.#clients.delete(node);
    client?.then((c) => c.close(), () => {});
  }
}
