/**
 * The client a command talks to: one server's connection, or a cluster's
 * client with `--nodes`, over TLS and with a token when asked.
 *
 * @module
 */

import { ClusterClient } from "../../client/cluster.ts";
import { type CacheClient, connect, type ConnectionSecurity } from "../../client/connection.ts";
import { ConnectionError } from "../../client/errors.ts";
import type { Invocation, SecurityArgs } from "./args.ts";

/** One server's connection, or a cluster client with `--nodes`. */
export async function openClient(invocation: Invocation): Promise<CacheClient> {
  const security = await readSecurity(invocation.security);
  if (invocation.nodes) return new ClusterClient(invocation.nodes, { security });
  return await connect({ ...invocation, ...security });
}

/**
 * The CA certificates and the token the arguments name, read.
 *
 * @throws {ConnectionError} naming a file that cannot be read (the
 *   connection cannot be made as asked).
 */
async function readSecurity(args: SecurityArgs): Promise<ConnectionSecurity> {
  const security: ConnectionSecurity = { tls: args.tls, token: args.token };
  if (args.caFile !== undefined) security.caCerts = [await readFile(args.caFile, "CA file")];
  if (args.tokenFile !== undefined) {
    const token = (await readFile(args.tokenFile, "token file")).split("\n")[0].trim();
    if (token === "") throw new ConnectionError(`the token file ${args.tokenFile} is empty`);
    security.token = token;
  }
  return security;
}

async function readFile(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new ConnectionError(`cannot read the ${what} ${path}: ${(error as Error).message}`);
  }
}
