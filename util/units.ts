/**
 * Sizes as people write them on a command line, and as they read them.
 *
 * @module
 */

const UNITS: Record<string, number> = {
  "": 1,
  B: 1,
  K: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GIB: 1024 ** 3,
  KB: 1000,
  MB: 1000 ** 2,
  GB: 1000 ** 3,
};

/**
 * Parses a size: plain bytes, or a number with `K`/`KiB`, `M`/`MiB`,
 * `G`/`GiB` (powers of 1024) or `KB`/`MB`/`GB` (powers of 1000).
 *
 * @throws {RangeError} when the text is not a size.
 * @example
 * ```ts
 * import { parseSize } from "./units.ts";
 * parseSize("64MiB"); // 67108864
 * parseSize("1.5K"); // 1536
 * ```
 */
export function parseSize(text: string): number {
  const match = /^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = match ? UNITS[match[2].toUpperCase()] : undefined;
  if (!match || unit === undefined) {
    throw new RangeError(
      `invalid size "${text}": use bytes or a number with K, KiB, M, MiB, G, GiB, KB, MB or GB`,
    );
  }
  // Exact decimal arithmetic: 4.1GB is 4100000000 bytes, not one less.
  const [whole, fraction = ""] = match[1].split(".");
  const scaled = BigInt(whole + fraction) * BigInt(unit) / 10n ** BigInt(fraction.length);
  const bytes = Number(scaled);
  if (!Number.isSafeInteger(bytes)) throw new RangeError(`size too large: ${text}`);
  return bytes;
}

/**
 * Formats a byte count for people, in powers of 1024.
 *
 * @example
 * ```ts
 * import { formatBytes } from "./units.ts";
 * formatBytes(1536); // "1.5 KiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  // Move up while the rounded figure would read 1024 or more.
  while (value >= 1023.5 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 9.95 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}
