/**
 * The token comparison takes the same time whatever is presented: the
 * right token, a guess that differs in its last byte or its first, one of
 * another length. Compared as distributions of many interleaved samples
 * (medians), beside a control: the same measurement of an early-exit
 * comparison must tell its guesses apart, or the measurement could not
 * see a leak at all.
 *
 * @module
 */

import assert from "node:assert/strict";
import { MAX_TOKEN_LENGTH, TokenTable } from "../../access/tokens.ts";

const TOKEN = "k".repeat(200) + "-the-right-token-0123456789";
const OTHERS = Array.from({ length: 7 }, (_, i) => `other-token-${i}-${"z".repeat(100)}`);
const table = TokenTable.parse([`${TOKEN} alice`, ...OTHERS].join("\n"));

const PRESENTED: Record<string, string> = {
  right: TOKEN,
  lastByteWrong: `${TOKEN.slice(0, -1)}x`,
  firstByteWrong: `x${TOKEN.slice(1)}`,
  short: "short-guess",
  tooLong: "y".repeat(MAX_TOKEN_LENGTH + 40),
};

/** Milliseconds per batch of `check(token)` calls: `rounds` samples per token, interleaved. */
function measure(check: (token: string) => unknown, rounds: number): Record<string, number> {
  const names = Object.keys(PRESENTED);
  const samples: Record<string, number[]> = Object.fromEntries(names.map((name) => [name, []]));
  let sink = 0;
  for (let round = 0; round < rounds; round++) {
    // A different order each round: drift and warm-up fall on every token alike.
    const order = names.map((_, i) => names[(i + round) % names.length]);
    for (const name of order) {
      const token = PRESENTED[name];
      const start = performance.now();
      for (let i = 0; i < 100; i++) if (check(token)) sink++;
      samples[name].push(performance.now() - start);
    }
  }
  assert.ok(sink >= 0);
  return Object.fromEntries(names.map((name) => [name, median(samples[name])]));
}

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** The comparison a careless server would make: it stops at the first difference. */
function earlyExit(token: string): boolean {
  for (const stored of [TOKEN, ...OTHERS]) {
    if (stored.length !== token.length) continue;
    let i = 0;
    while (i < token.length && stored.charCodeAt(i) === token.charCodeAt(i)) i++;
    if (i === token.length) return true;
  }
  return false;
}

Deno.test("TokenTable.check: the right token and every kind of wrong one take the same time", () => {
  measure((token) => table.check(token), 50); // warm-up: the JIT settles first
  const medians = measure((token) => table.check(token), 400);
  const values = Object.values(medians);
  const spread = Math.max(...values) / Math.min(...values);
  assert.ok(spread < 1.15, `medians differ by ${spread.toFixed(3)}x: ${JSON.stringify(medians)}`);
});

Deno.test("the measurement sees the leak of an early-exit comparison (the control)", () => {
  measure(earlyExit, 50);
  const medians = measure(earlyExit, 400);
  const leak = medians.lastByteWrong / medians.firstByteWrong;
  assert.ok(leak > 3, `an early exit should show: ${JSON.stringify(medians)}`);
});
