/**
 * The files behind `--tls-cert`, `--tls-key` and `--auth-tokens`: read at
 * start, and again on SIGHUP, into the server's access configuration.
 *
 * @module
 */

import type { AccessReload } from "../server/access_setup.ts";

/** Where the certificate, its key and the tokens are read from. */
export interface AccessPaths {
  /** The certificate chain, PEM. */
  tlsCert?: string;
  /** Its private key, PEM. */
  tlsKey?: string;
  /** The token file. */
  authTokens?: string;
}

/**
 * Reads the files `paths` names.
 *
 * @throws {Error} naming the file that cannot be read.
 */
export async function readAccessFiles(paths: AccessPaths): Promise<AccessReload> {
  const config: AccessReload = {};
  if (paths.tlsCert !== undefined && paths.tlsKey !== undefined) {
    config.tls = {
      cert: await readFile(paths.tlsCert, "--tls-cert"),
      key: await readFile(paths.tlsKey, "--tls-key"),
    };
  }
  if (paths.authTokens !== undefined) {
    config.tokens = await readFile(paths.authTokens, "--auth-tokens");
  }
  return config;
}

async function readFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new Error(`${flag} ${path}: ${(error as Error).message}`);
  }
}
