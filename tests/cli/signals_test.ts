/**
 * The server's signals and files for service managers, over a real
 * subprocess: `--access-log FILE` reopened on SIGHUP (the logrotate
 * convention), `--pid-file`, and SIGUSR1's state summary.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { connect } from "../../client.ts";
import { eventually, spawnServer } from "../helpers.ts";

const SERVER = fileURLToPath(new URL("../../server.ts", import.meta.url));

Deno.test("--access-log is reopened on SIGHUP; --pid-file lives while the server does; SIGUSR2 sums up", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-signals-" });
  await Deno.mkdir(`${dir}/files`);
  await Deno.writeTextFile(`${dir}/files/a.txt`, "alpha\n");
  const log = `${dir}/access.log`;
  const pidFile = `${dir}/tcpcache.pid`;
  const server = await spawnServer(
    ["--workers", "2", "--dir", `${dir}/files`, "--cache-dir", `${dir}/cache`]
      .concat(["--access-log", log, "--pid-file", pidFile]),
  );
  try {
    assert.equal((await Deno.readTextFile(pidFile)).trim(), String(server.child.pid));
    const get = async (times: number) => {
      const client = await connect({ port: server.port });
      for (let i = 0; i < times; i++) await client.get("a.txt");
      client.close();
    };
    await get(3);
    await Deno.rename(log, `${log}.1`);
    server.child.kill("SIGHUP");
    assert.match(await server.nextErrorLine(), /SIGHUP: reopened the access log .*access\.log/);
    await get(2);
    server.child.kill("SIGUSR2");
    assert.match(
      await server.nextErrorLine(),
      /^tcpcache: state: uptime [0-9]+ s, requests 5 \(hits 4, misses 1, bypasses 0, errors 0\), .*threads 2, tls off/,
    );
    const lines = async (path: string) =>
      (await Deno.readTextFile(path)).split("\n").filter((line) => line !== "");
    // The batch written before the reopen went to the renamed file; the later ones to the new.
    assert.equal((await lines(`${log}.1`)).length, 3);
    assert.equal((await server.stop()).code, 0);
    const after = await lines(log);
    assert.equal(after.length, 2, after.join("\n"));
    for (const line of after) assert.match(line, / GET a\.txt OK [0-9]+ [0-9.]+ hit - -$/);
    await eventually(
      async () => !(await Deno.stat(pidFile).then(() => true, () => false)),
      "the pid file removed",
    );
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an access log that cannot be opened is one line and exit 2", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--port", "0", "--access-log", "/nonexistent-dir/access.log"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 2);
  assert.match(stderr, /cannot open the access log \/nonexistent-dir\/access\.log/);
  assert.equal(stderr.trim().split("\n").length, 1);
});

Deno.test("SIGUSR1 is ignored: Deno's debugger never opens, and the server goes on", async () => {
  const inspectorPort = 9229;
  const listening = async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: inspectorPort })).close();
      return true;
    } catch {
      return false;
    }
  };
  if (await listening()) {
    console.log(`skipped: something else listens on ${inspectorPort}`);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-signals-" });
  const server = await spawnServer(["--dir", dir, "--cache-dir", `${dir}/cache`]);
  try {
    // Deno installs its SIGUSR1 handler half a second after start: signal past that, often.
    await new Promise((resolve) => setTimeout(resolve, 800));
    for (let i = 0; i < 5; i++) {
      server.child.kill("SIGUSR1");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(await listening(), false, "no debugger on 127.0.0.1:9229");
    }
    // The server goes on serving, and says nothing of a debugger.
    const client = await connect({ port: server.port });
    await client.ping();
    client.close();
    server.child.kill("SIGUSR2");
    assert.match(await server.nextErrorLine(), /^tcpcache: state: /);
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
