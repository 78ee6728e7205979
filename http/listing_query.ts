/**
 * The page of an HTTP directory listing a request asks for
 * (`/DIR/?after=NAME&limit=N`, the bounds of the TCP protocol's `FILES`),
 * and the query that asks for the page after it.
 *
 * @module
 */

import {
  checkListingWindow,
  type ListingWindow,
  percentDecode,
  RequestError,
} from "../protocol.ts";

/**
 * The listing window of a request target's query: `after` (a name,
 * percent-encoded) and `limit` (1 to the page limit); other parameters are
 * ignored, as a query always was. A `+` is a plus sign, not a space.
 *
 * @throws {RequestError} 400 when either is malformed, out of bounds or
 *   given twice.
 * @example
 * ```ts
 * import { listingWindow } from "./listing_query.ts";
 * listingWindow("/docs/?after=a%20b.txt&limit=50"); // { after: "a b.txt", limit: 50 }
 * ```
 */
export function listingWindow(target: string): ListingWindow {
  const start = target.indexOf("?");
  if (start === -1) return {};
  const values: { after?: string; limit?: string } = {};
  for (const parameter of target.slice(start + 1).split("&")) {
    const equals = parameter.indexOf("=");
    const name = equals === -1 ? parameter : parameter.slice(0, equals);
    if (name !== "after" && name !== "limit") continue;
    if (values[name] !== undefined) throw new RequestError(400, `${name} given twice`);
    values[name] = percentDecode(equals === -1 ? "" : parameter.slice(equals + 1));
  }
  if (values.limit !== undefined && !/^[0-9]{1,15}$/.test(values.limit)) {
    throw new RequestError(400, `FILES limit must be a number, not ${values.limit}`);
  }
  const limit = values.limit === undefined ? undefined : Number(values.limit);
  return checkListingWindow(values.after, limit);
}

/**
 * The query (with its `?`) of the page after the one `window` asked for,
 * which ended at `next`: the same limit, if one was asked for.
 */
export function nextPageQuery(next: string, window: ListingWindow): string {
  const limit = window.limit === undefined ? "" : `&limit=${window.limit}`;
  return `?after=${encodeURIComponent(next)}${limit}`;
}
