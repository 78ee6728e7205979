/**
 * TLS, the allow list and the tokens as a server thread sets them up: the
 * same on the main thread and on every worker, from plain data that can be
 * sent between threads, and again on a reload (SIGHUP).
 *
 * @module
 */

import { AccessGate } from "../access/gate.ts";
import { AllowList } from "../access/allow_list.ts";
import { TokenTable } from "../access/tokens.ts";
import type { FileService } from "../service/file_service.ts";
import type { ConnectionEngine, EngineListener } from "../engine/connection_engine.ts";
import { listen, type TlsFiles } from "./listeners.ts";

/** Who may connect and read, and over what: plain data, as threads share it. */
export interface AccessConfig {
  /** The certificate and key both protocols serve TLS with; plain TCP without. */
  tls?: TlsFiles;
  /** The networks that may connect (`CIDR,CIDR,...`); everyone without. */
  allow?: string;
  /** The token file's text; no token needed without. */
  tokens?: string;
}

/** What a reload may change: the certificate, and the tokens. */
export interface AccessReload {
  /** The new certificate and key (TLS must have been on at start). */
  tls?: TlsFiles;
  /** The token file's new text (tokens must have been on at start). */
  tokens?: string;
}

/**
 * Checks the allow list and the tokens before anything starts (the
 * certificate is checked by the listener that uses it: `listen`).
 *
 * @throws {SyntaxError} for an allow list or a token file that does not parse.
 */
export function checkAccessConfig(config: Omit<AccessConfig, "tls">): void {
  if (config.allow !== undefined) AllowList.parse(config.allow);
  if (config.tokens !== undefined) TokenTable.parse(config.tokens);
}

/**
 * This thread's gate for `config`, counting into `files`, whose STATS then
 * show what is on. `threads` split the per-address failure budget.
 */
export function openGate(config: AccessConfig, files: FileService, threads: number): AccessGate {
  const gate = new AccessGate({
    allow: config.allow === undefined ? undefined : AllowList.parse(config.allow),
    tokens: config.tokens === undefined ? undefined : TokenTable.parse(config.tokens),
    threads,
    onFailure: (kind) => files.countAccess(kind === "invalid" ? "authFailures" : "authLimited"),
  });
  const tls = config.tls !== undefined;
  files.accessSettings = () => ({
    tls,
    allow: gate.allow?.networks ?? null,
    tokens: gate.tokens?.size ?? 0,
    adminTokens: gate.tokens?.adminCount ?? 0,
  });
  return gate;
}

/**
 * Applies a reload to this thread, all or nothing: the new tokens are
 * parsed and a TLS listener with the new certificate is opened on each
 * engine's port (beside the old one, with `SO_REUSEPORT`, so the port is
 * never closed) before anything changes; then the gate takes the tokens and
 * each engine its new listener, closing the old. Connections already open
 * keep their certificate.
 *
 * @throws {SyntaxError} for tokens that do not parse, `TlsConfigError` for
 *   a certificate that cannot be used: nothing changed then.
 */
export function applyReload(
  reload: AccessReload,
  gate: AccessGate,
  engines: { engine: ConnectionEngine; hostname: string; port: number }[],
): void {
  const tokens = reload.tokens === undefined ? undefined : TokenTable.parse(reload.tokens);
  const listeners: EngineListener[] = [];
  try {
    if (reload.tls) {
      for (const { hostname, port } of engines) {
        listeners.push(listen(hostname, port, "join", reload.tls));
      }
    }
  } catch (error) {
    for (const listener of listeners) listener.close();
    throw error;
  }
  if (tokens) gate.replaceTokens(tokens);
  listeners.forEach((listener, i) => engines[i].engine.replaceListener(listener));
}
