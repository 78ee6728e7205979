/**
 * The version of tcpcache, read from `deno.json` so it is stated once.
 *
 * @module
 */

import config from "./deno.json" with { type: "json" };

/** The tcpcache version, as `STATS` and `--version` report it. */
export const VERSION: string = config.version;
