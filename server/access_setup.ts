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
import type { ConnectionEngine } from "../engine/connection_engine.ts";
import { checkTlsFiles, listen, type TlsFiles } from "./listeners.ts";

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
 * Checks what the configuration holds before anything starts.
 *
 * @throws {SyntaxError} for an allow list or a token file that does not
 *   parse; an Error for a certificate or key Deno cannot use.
 */
export function checkAccessConfig(config: AccessConfig): void {
  if (config.allow !== undefined) AllowList.parse(config.allow);
  if (config.tokens !== undefined) TokenTable.parse(config.tokens);
  if (config.tls) checkTls(config.tls);
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
 * Applies a reload to this thread: new tokens for the gate, and for each
 * engine a TLS listener with the new certificate on its port (taken beside
 * the old one with `SO_REUSEPORT`, so the port is never closed), which then
 * replaces the old one. Connections already open keep what they had.
 */
export function applyReload(
  reload: AccessReload,
  gate: AccessGate,
  engines: { engine: ConnectionEngine; hostname: string; port: number }[],
): void {
  if (reload.tokens !== undefined) gate.replaceTokens(TokenTable.parse(reload.tokens));
  if (!reload.tls) return;
  for (const { engine, hostname, port } of engines) {
    engine.replaceListener(listen(hostname, port, "join", reload.tls));
  }
}

/** Checks a certificate and key, with the file names in the message. */
function checkTls(tls: TlsFiles): void {
  try {
    checkTlsFiles(tls);
  } catch (error) {
    throw new Error(`the TLS certificate or key cannot be used: ${(error as Error).message}`);
  }
}
