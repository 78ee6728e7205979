/**
 * A server whose live heap is watched, for the listing tests: run it with
 * `deno run -A --v8-flags=--expose-gc tests/tcp/live_heap_server.ts DIR
 * CACHE_DIR`. Between `start` and `peak` (lines on stdin) it collects
 * garbage every 20 ms and notes the heap that survives (and the buffers
 * outside it), so the peak it reports is what requests held, not what they
 * threw away (the process's resident size is mostly the latter: V8 grows
 * its heap before it collects). It prints `listening on 127.0.0.1:PORT`;
 * `start` takes the live heap then as the base and answers `started`;
 * `peak` answers `peak BYTES`, the greatest live heap since, less the base.
 *
 * @module
 */

import { startServer } from "../../server.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
const [dir, cacheDir] = Deno.args;
const server = await startServer({ dir, cacheDir, port: 0, onError: console.error });
console.log(`listening on 127.0.0.1:${server.addr.port}`);

/** The heap that survives a collection, and the buffers outside it (an answer's bytes). */
const live = () => {
  gc();
  const { heapUsed, external } = Deno.memoryUsage();
  return heapUsed + external;
};
let base = 0;
let peak = 0;
let sampler: ReturnType<typeof setInterval> | undefined;

let pending = "";
for await (const text of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  pending += text;
  for (let end = pending.indexOf("\n"); end >= 0; end = pending.indexOf("\n")) {
    const line = pending.slice(0, end);
    pending = pending.slice(end + 1);
    if (line === "start") {
      base = peak = live();
      sampler ??= setInterval(() => peak = Math.max(peak, live()), 20);
      console.log("started");
    } else if (line === "peak") {
      clearInterval(sampler);
      sampler = undefined;
      console.log(`peak ${Math.max(peak, live()) - base}`);
    }
  }
}
clearInterval(sampler);
await server.close();
