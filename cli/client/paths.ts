/**
 * Paths as the client's command line handles them: a file's base name, a
 * directory named on the command line, and paths joined with `/`. Pure: no
 * file is touched.
 *
 * @module
 */

/**
 * The last part of a path: where a plain `get` saves a file.
 *
 * @example
 * ```ts
 * import { baseName } from "./paths.ts";
 * console.log(baseName("docs/readme.txt")); // readme.txt
 * ```
 */
export function baseName(path: string): string {
  return path.split("/").filter((part) => part !== "").pop() ?? path;
}

/**
 * `docs/`, `/docs` → `docs`; `/`, `.` and `` → `` (the served directory).
 *
 * @example
 * ```ts
 * import { normalizeDir } from "./paths.ts";
 * console.log(normalizeDir("/docs/")); // docs
 * ```
 */
export function normalizeDir(dir: string): string {
  return dir.split("/").filter((part) => part !== "" && part !== ".").join("/");
}

/**
 * Joins path parts with `/`, leaving out empty ones (an absolute first part stays so).
 *
 * @example
 * ```ts
 * import { joinPath } from "./paths.ts";
 * console.log(joinPath("out/", "", "docs")); // out/docs
 * ```
 */
export function joinPath(...parts: string[]): string {
  const kept = parts.filter((part) => part !== "");
  return kept.map((part, i) => i === 0 ? part.replace(/(.)\/+$/, "$1") : part).join("/");
}
