/**
 * One listener served with one protocol over the connection engine: the
 * wiring that the main thread and every worker thread do alike.
 *
 * @module
 */

import {
  type ConnectionCounts,
  ConnectionEngine,
  type EngineListener,
  type EngineOptions,
} from "../engine/connection_engine.ts";
import type { AccessGate } from "../access/gate.ts";
import { noDelayForAccepted } from "../engine/socket_control.ts";
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

/** A certificate chain and its private key, PEM (`--tls-cert`, `--tls-key`). */
export interface TlsFiles {
  /** The certificate, followed by the intermediates of its chain. */
  cert: string;
  /** The private key (PKCS#8, RSA or EC). */
  key: string;
}

/**
 * Takes `hostname:port`, over TLS when `tls` is given. `first` makes sure
 * first that no other process holds the port: `SO_REUSEPORT` would let a
 * second server (of the same user) join a running one's port and take part
 * of its clients.
 *
 * @throws when the port cannot be taken, or the certificate or key is bad
 *   (not PEM, no certificate, a key that does not match it).
 */
export function listen(
  hostname: string,
  port: number,
  sharing: PortSharing,
  tls?: TlsFiles,
): EngineListener {
  // (throws TlsConfigError: see listenTls)
  const open = (options: Deno.TcpListenOptions) => {
    if (!tls) return Deno.listen(options);
    const listener = listenTls(options, tls);
    // Its connections cannot turn Nagle's algorithm off themselves.
    noDelayForAccepted(listener.addr.port);
    return listener;
  };
  if (sharing === "alone") return open({ hostname, port });
  if (sharing === "first" && port !== 0) Deno.listen({ hostname, port }).close();
  return open({ hostname, port, reusePort: true });
}

/** A certificate or key that Deno cannot use (not PEM, no certificate, a key that does not match). */
export class TlsConfigError extends Error {
  /** `cause` is Deno's error, whose message says what is wrong. */
  constructor(cause: unknown) {
    super(`the TLS certificate or key cannot be used: ${(cause as Error).message}`, { cause });
    this.name = "TlsConfigError";
  }
}

/**
 * A TLS listener; Deno parses the certificate and key only here, so an
 * error that is not about the port is about them.
 *
 * @throws {TlsConfigError} for a certificate or key that cannot be used.
 */
function listenTls(options: Deno.TcpListenOptions, tls: TlsFiles): Deno.TlsListener {
  try {
    return Deno.listenTls({ ...options, cert: tls.cert, key: tls.key });
  } catch (error) {
    const aboutThePort = error instanceof Deno.errors.AddrInUse ||
      error instanceof Deno.errors.AddrNotAvailable ||
      error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable;
    throw aboutThePort ? error : new TlsConfigError(error);
  }
}

/** The TCP protocol on `listener`; its connections are the ones `STATS` counts. */
export function serveTcp(
  listener: EngineListener,
  files: FileService,
  limits: Limits,
  access: ListenerAccess,
): ConnectionEngine {
  const protocol = new TcpProtocol(files, limits);
  protocol.engine = new ConnectionEngine(
    listener,
    protocol,
    engineOptions(files, limits, files.connections, access),
  );
  return protocol.engine;
}

/** HTTP/1.1 on `listener`, with connection counts of its own. */
export function serveHttp(
  listener: EngineListener,
  files: FileService,
  limits: Limits,
  access: ListenerAccess,
): ConnectionEngine {
  const protocol = new HttpProtocol(files, limits);
  const counts = { open: 0, total: 0, rejected: 0 };
  protocol.engine = new ConnectionEngine(
    listener,
    protocol,
    engineOptions(files, limits, counts, access),
  );
  files.httpConnections = () => counts.open;
  return protocol.engine;
}

/** What a listener's engine is given beside the service: its gate, TLS, and shared slots. */
export interface ListenerAccess {
  /** The access gate of this thread. */
  gate: AccessGate;
  /** Whether the listener is a TLS one. */
  tls: boolean;
  /** The connection limit shared with other threads, if any. */
  slots?: ConnectionSlots;
}

/** The engine's options: limits, counts, and the service's counters of refusals and drops. */
function engineOptions(
  files: FileService,
  limits: Limits,
  counts: ConnectionCounts,
  access: ListenerAccess,
): EngineOptions {
  return {
    limits,
    counts,
    ...access,
    onRefused: () => files.countError(503),
    onSendTimeout: () => files.countSendTimeout(),
    onDenied: () => files.countAccess("deniedConnections"),
    onHandshake: (succeeded) =>
      files.countAccess(succeeded ? "tlsHandshakes" : "tlsHandshakeFailures"),
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
