/**
 * The compiled `tcpcache` executable, end to end: built with `deno task
 * compile` (which honours DENORT_BIN), then serve, get, list and the
 * embedded sample files. `deno compile` needs Deno's `denort` runtime; where
 * none can be had, the test is reported as ignored, with the reason in its
 * name and on stdout, never as passed.
 */

import assert from "node:assert/strict";
import { seededBytes, sha256 } from "./helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BINARY = `${ROOT}dist/tcpcache`;

/** Builds the executable; resolves to why it could not, or undefined. */
async function build(): Promise<string | undefined> {
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["task", "compile"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (result.success) return undefined;
  const lines = new TextDecoder().decode(result.stderr).split("\n").map((line) => line.trim());
  const cause = lines.filter((line) => /error|failed|lookup/i.test(line)).slice(0, 3).join("; ");
  const runtime = Deno.env.get("DENORT_BIN")
    ? `DENORT_BIN=${Deno.env.get("DENORT_BIN")} did not work`
    : "DENORT_BIN is not set and the denort runtime could not be downloaded";
  return `deno compile failed: ${runtime} (${cause || "no error text"})`;
}

const whyNot = await build();
if (whyNot) console.log(`compiled executable not tested: ${whyNot}`);

async function run(args: string[], cwd: string): Promise<{ code: number; stdout: string }> {
  const output = await new Deno.Command(BINARY, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  return { code: output.code, stdout: new TextDecoder().decode(output.stdout) };
}

/** Starts `tcpcache serve` and resolves once its ready line names the port. */
async function serve(args: string[], cwd: string) {
  const child = new Deno.Command(BINARY, {
    args: ["serve", "--port", "0", "--quiet", ...args],
    cwd,
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (true) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`the server exited before it was ready: ${text}`);
    text += value;
    const ready = /listening on 127\.0\.0\.1:([0-9]+)/.exec(text);
    if (ready) return { child, lines, port: ready[1] };
  }
}

Deno.test({
  name: whyNot
    ? `compiled tcpcache: serve, get, list (not run: ${whyNot})`
    : "compiled tcpcache: serve, get, list, and the embedded sample files",
  ignore: whyNot !== undefined,
  fn: async () => {
    const work = await Deno.makeTempDir();
    const bytes = seededBytes(200_000, 5);
    await Deno.mkdir(`${work}/files`);
    await Deno.writeFile(`${work}/files/data.bin`, bytes);
    const version = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`)).version;
    assert.equal((await run(["--version"], work)).stdout, `tcpcache ${version}\n`);
    const server = await serve(["--dir", `${work}/files`, "--cache-dir", `${work}/cache`], work);
    const sample = await serve(["--cache-dir", `${work}/cache2`], work);
    try {
      assert.equal((await run(["--port", server.port, "get", "data.bin", "-q"], work)).code, 0);
      assert.equal(sha256(await Deno.readFile(`${work}/data.bin`)), sha256(bytes));
      const listing = JSON.parse(
        (await run(["--port", server.port, "list", "--json"], work)).stdout,
      );
      assert.deepEqual(listing.entries.map((e: { path: string }) => e.path), ["data.bin"]);
      // Without --dir, the files embedded in the executable are served.
      assert.equal((await run(["--port", sample.port, "get", "hello.txt", "-q"], work)).code, 0);
      assert.match(await Deno.readTextFile(`${work}/hello.txt`), /Hello from tcpcache/);
    } finally {
      for (const { child, lines } of [server, sample]) {
        child.kill("SIGTERM");
        assert.equal((await child.status).code, 0);
        await lines.cancel();
      }
      await Deno.remove(work, { recursive: true });
    }
  },
});
