import assert from "node:assert/strict";
import { findCycles, type ImportGraph } from "../../tools/check_cycles.ts";

function graphOf(edges: Record<string, string[]>): ImportGraph {
  return new Map(Object.entries(edges).map(([from, to]) => [from, new Set(to)]));
}

Deno.test("findCycles: a graph whose imports point one way has none", () => {
  const graph = graphOf({
    "mod.ts": ["server.ts", "cache.ts"],
    "server.ts": ["cache.ts"],
    "cache.ts": [],
  });
  assert.deepEqual(findCycles(graph), []);
});

Deno.test("findCycles: two modules importing each other, and a longer loop", () => {
  const graph = graphOf({
    "cache.ts": ["fifo.ts"],
    "fifo.ts": ["cache.ts"],
    "client.ts": ["cli.ts"],
    "cli.ts": ["cluster.ts"],
    "cluster.ts": ["client.ts"],
    "mod.ts": ["client.ts", "cache.ts"],
  });
  assert.deepEqual(findCycles(graph).sort(), [
    ["cache.ts", "fifo.ts"],
    ["cli.ts", "client.ts", "cluster.ts"],
  ]);
});

Deno.test("findCycles: a module that imports itself", () => {
  assert.deepEqual(findCycles(graphOf({ "a.ts": ["a.ts"], "b.ts": ["a.ts"] })), [["a.ts"]]);
});

Deno.test("the project's modules import each other in no cycle", async () => {
  const script = new URL("../../tools/check_cycles.ts", import.meta.url);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-run", script.pathname],
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.match(text, / 0 import cycle\(s\)/);
  assert.equal(output.code, 0, text);
});
