/**
 * What the benchmarks' reports have in common: how figures read, Markdown
 * tables (they read as well in a terminal as in the README), lists of
 * problems, and which code was measured.
 *
 * @module
 */

import { run } from "./processes.ts";

/** A figure with as many digits as it needs: 1,234 / 56.7 / 8.90; `-` when there is none. */
export function formatFigure(value: number): string {
  if (!Number.isFinite(value)) return "-";
  if (value >= 100) return Math.round(value).toLocaleString("en-US");
  return value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** A fraction as a whole percentage (`n/a` when there is none). */
export function percent(fraction: number): string {
  return Number.isFinite(fraction) ? `${(fraction * 100).toFixed(0)}%` : "n/a";
}

/** A Markdown table with padded columns; `|` in a cell is escaped. */
export function markdownTable(header: string[], rows: string[][]): string {
  const escaped = [header, ...rows].map((cells) => cells.map((c) => c.replaceAll("|", "\\|")));
  const widths = header.map((_, i) => Math.max(...escaped.map((cells) => cells[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  const rule = `| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`;
  return [line(escaped[0]), rule, ...escaped.slice(1).map(line)].join("\n");
}

/** A titled bullet list, after a blank line. */
export function bulletList(title: string, items: string[]): string {
  return `\n${title}:\n${items.map((s) => `- ${s}`).join("\n")}`;
}

/** The commit measured, and whether tracked files differed from it. */
export interface CodeVersion {
  /** The short commit hash, or `unknown` outside a git checkout. */
  commit: string;
  /** Tracked files had uncommitted changes. */
  dirty: boolean;
}

/**
 * The code's version now. Others may be editing the server while a
 * benchmark runs, so a report says whether the tree was clean.
 */
export async function codeVersion(): Promise<CodeVersion> {
  const commit = (await run("git", ["rev-parse", "--short", "HEAD"])).out.trim();
  const status = await run("git", ["status", "--porcelain", "--untracked-files=no"]);
  return {
    commit: /^[0-9a-f]+$/.test(commit) ? commit : "unknown",
    dirty: status.ok && status.out.trim() !== "",
  };
}

/** `tcpcache <commit>`, marked when the tree had uncommitted changes. */
export function versionLabel(version: CodeVersion): string {
  return `tcpcache ${version.commit}${version.dirty ? " (with uncommitted changes)" : ""}`;
}
