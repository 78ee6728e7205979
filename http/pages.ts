/**
 * The HTML the HTTP front end generates: a directory listing. (The status
 * page is a static file in `status/`.)
 *
 * @module
 */

import type { OriginDirEntry } from "../origin/origin.ts";
import { formatBytes } from "../util/units.ts";
import { compareNames } from "../protocol.ts";

/**
 * The listing's own style, inline: a link to the status page's stylesheet
 * would lead mirroring tools (`wget -r`) into the server's pages.
 */
const LISTING_STYLE = "body{font:14px system-ui,sans-serif;margin:2em}" +
  "table{border-collapse:collapse}td,th{padding:2px 12px;text-align:left}" +
  ".n{text-align:right}";

/**
 * A directory listing as a small HTML page: a link per entry (directories
 * first, each with a trailing slash; each kind in byte order of the names),
 * its size and modification time. A page of a longer listing ends with a
 * link to the next, `next` (a query).
 *
 * @example
 * ```ts
 * import { listingPage } from "./pages.ts";
 * listingPage("docs", [{ name: "a b.txt", type: "file", size: 3, mtime: 0 }])
 *   .includes('href="a%20b.txt"'); // true
 * ```
 */
export function listingPage(dir: string, entries: OriginDirEntry[], next?: string): string {
  const sorted = [...entries].sort((a, b) =>
    a.type === b.type ? compareNames(a.name, b.name) : a.type === "dir" ? -1 : 1
  );
  const rows = sorted.map((entry) => {
    const name = entry.type === "dir" ? `${entry.name}/` : entry.name;
    const href = linkTo(dir, entry.name) + (entry.type === "dir" ? "/" : "");
    const size = entry.type === "dir" ? "-" : formatBytes(entry.size);
    const mtime = new Date(entry.mtime).toISOString().replace("T", " ").slice(0, 19);
    return `<tr><td><a href="${href}">${escapeHtml(name)}</a></td>` +
      `<td class="n">${size}</td><td>${mtime}</td></tr>`;
  });
  const title = `/${dir}${dir === "" ? "" : "/"}`;
  // Only a page's own entries are here: a listing of more links to the rest.
  const nextLink = next === undefined
    ? ""
    : `\n<p><a rel="next" href="${escapeHtml(next)}">next page</a></p>`;
  const parent = dir === "" ? "" : `<tr><td><a href="../">../</a></td><td></td><td></td></tr>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Index of ${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${LISTING_STYLE}</style></head>
<body><h1>Index of ${escapeHtml(title)}</h1>
<table class="listing"><thead><tr><th>Name</th><th class="n">Size</th><th>Modified (UTC)</th></tr></thead>
<tbody>${parent}${rows.join("")}</tbody></table>${nextLink}</body></html>
`;
}

/** Escapes text for HTML element content and quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * A relative link to `name` in the listing of `dir`. At the root, a name
 * `-` is the server's own prefix (`/-/`), so its `-` is percent-encoded:
 * `/%2D/` reaches the served folder.
 */
function linkTo(dir: string, name: string): string {
  return dir === "" && name === "-" ? "%2D" : encodeURIComponent(name);
}
