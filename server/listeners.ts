/**
 * One listener served with one protocol over the connection engine: the
 * wiring that the main thread and every worker thread do alike.
 *
 * @module
 */

import {
  type ConnectionCounts,
  ConnectionEngine,
  type EngineOptions,
} from "../engine/connection_engine.ts";
import type { ConnectionSlots } from "../engine/connection_slots.ts";
import { HttpProtocol } from "../http/http_protocol.ts";
import type { FileService, Limits } from "../service/file_service.ts";
import { TcpProtocol } from "../tcp/tcp_protocol.ts";

/**
 * How a listener takes its port: `alone` (one thread serves it), `first`
 * (the first of several threads: the port must be free, then the others
 * `join` it with `SO_REUSEPORT`, and the kernel spreads connections).
 */
export type PortSharing = "alone" | "first" | "join";

/**
 * Takes `hostname:port`. `first` makes sure first that no other process
 * holds the port: `SO_REUSEPORT` would let a second server (of the same
 * user) join a running one's port and take part of its clients.
 */
export function listen(hostname: string, port: number, sharing: PortSharing): Deno.TcpListener {
  if (sharing === "alone") return Deno.listen({ hostname, port });
  if (sharing === "first" && port !== 0) Deno.listen({ hostname, port }).close();
  return Deno.listen({ hostname, port, reusePort: true });
}

/** The TCP protocol on `listener`; its connections are the ones `STATS` counts. */
export function serveTcp(
  listener: Deno.TcpListener,
  files: FileService,
  limits: Limits,
  slots?: ConnectionSlots,
): ConnectionEngine {
  const protocol = new TcpProtocol(files, limits);
  protocol.engine = new ConnectionEngine(
    listener,
    protocol,
    engineOptions(files, limits, files.connections, slots),
  );
  return protocol.engine;
}

/** HTTP/1.1 on `listener`, with connection counts of its own. */
export function serveHttp(
  listener: Deno.TcpListener,
  files: FileService,
  limits: Limits,
  slots?: ConnectionSlots,
): ConnectionEngine {
  const protocol = new HttpProtocol(files, limits);
  const counts = { open: 0, total: 0, rejected: 0 };
  protocol.engine = new ConnectionEngine(
    listener,
    protocol,
    engineOptions(files, limits, counts, slots),
  );
  files.httpConnections = () => counts.open;
  return protocol.engine;
}

/** The engine's options: limits, counts, and the service's counters of refusals and drops. */
function engineOptions(
  files: FileService,
  limits: Limits,
  counts: ConnectionCounts,
  slots: ConnectionSlots | undefined,
): EngineOptions {
  return {
    limits,
    counts,
    slots,
    onRefused: () => files.countError(503),
    onSendTimeout: () => files.countSendTimeout(),
  };
}

/**
 * Whether several threads can listen on one port here: Deno 2.9 allows
 * `reusePort` only under `--unstable-net` (deno.json turns it on for the
 * project's tasks and `deno run` in its folder).
 */
export function sharedPortsAvailable(): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port: 0, reusePort: true }).close();
    return true;
  } catch {
    return false;
  }
}
