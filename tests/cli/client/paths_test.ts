/**
 * Unit tests of the client's path helpers (`cli/client/paths.ts`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { baseName, joinPath, normalizeDir } from "../../../cli/client/paths.ts";

const BASE_NAMES: [path: string, name: string][] = [
  ["docs/readme.txt", "readme.txt"],
  ["readme.txt", "readme.txt"],
  ["docs/sub/", "sub"],
  ["/a//b", "b"],
  ["my docs/ü file.txt", "ü file.txt"],
  ["/", "/"],
  ["", ""],
];

Deno.test("baseName: the last part of a path", async (t) => {
  for (const [path, name] of BASE_NAMES) {
    await t.step(JSON.stringify(path), () => assert.equal(baseName(path), name));
  }
});

const DIRS: [dir: string, normalized: string][] = [
  ["docs", "docs"],
  ["docs/", "docs"],
  ["/docs", "docs"],
  ["./docs/./sub//", "docs/sub"],
  ["/", ""],
  [".", ""],
  ["", ""],
];

Deno.test("normalizeDir: a directory on the command line, as the server names it", async (t) => {
  for (const [dir, normalized] of DIRS) {
    await t.step(JSON.stringify(dir), () => assert.equal(normalizeDir(dir), normalized));
  }
});

const JOINS: [parts: string[], joined: string][] = [
  [["out", "docs"], "out/docs"],
  [["out/", "docs"], "out/docs"],
  [["out//", "docs", "a.txt"], "out/docs/a.txt"],
  [["", "docs"], "docs"],
  [["out", ""], "out"],
  [["", ""], ""],
  [[], ""],
  [["/tmp/x/", "a.txt"], "/tmp/x/a.txt"],
];

Deno.test("joinPath: parts joined by /, empty ones left out", async (t) => {
  for (const [parts, joined] of JOINS) {
    await t.step(JSON.stringify(parts), () => assert.equal(joinPath(...parts), joined));
  }
});
