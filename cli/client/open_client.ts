/**
 * The client a command talks to: one server's connection, or a cluster's
 * client with `--nodes`.
 *
 * @module
 */

import { ClusterClient } from "../../client/cluster.ts";
import { type CacheClient, connect } from "../../client/connection.ts";
import type { Invocation } from "./args.ts";

/** One server's connection, or a cluster client with `--nodes`. */
export function openClient(invocation: Invocation): Promise<CacheClient> {
  if (invocation.nodes) return Promise.resolve(new ClusterClient(invocation.nodes));
  return connect(invocation);
}
