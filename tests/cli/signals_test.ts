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

Deno.test("SIGUSR1: the debugger Deno opens on it is closed at once, and the server says so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-signals-" });
  const server = await spawnServer(["--dir", dir, "--cache-dir", `${dir}/cache`]);
  try {
    // Deno installs its SIGUSR1 handler half a second after start.
    await new Promise((resolve) => setTimeout(resolve, 800));
    server.child.kill("SIGUSR1");
    // Deno's banner and the server's line come from two threads: in either order.
    let opened: string | undefined;
    let closed = false;
    for (let i = 0; i < 4 && !(opened && closed); i++) {
      const line = await server.nextErrorLine();
      opened ??= line.match(/^Debugger listening on ws:\/\/([0-9.]+):([0-9]+)\//)?.[2];
      if (/Failed to start inspector|address already in use/i.test(line)) {
        console.log(`skipped: Deno could not open its inspector here (${line})`);
        return;
      }
      closed ||= /SIGUSR1: closed the debugger Deno opened on it/.test(line);
    }
    if (opened && closed) {
      await assert.rejects(
        Deno.connect({ hostname: "127.0.0.1", port: Number(opened) }),
        Deno.errors.ConnectionRefused,
        "the inspector's port is closed",
      );
      // The server goes on serving.
      const client = await connect({ port: server.port });
      await client.ping();
      client.close();
      return;
    }
    assert.fail("the server never closed the inspector");
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
