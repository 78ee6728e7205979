import assert from "node:assert/strict";
import { DEFAULTS } from "../../defaults.ts";
import type { RequestRecord } from "../../server.ts";
import type { OriginListWindow } from "../../origin/origin.ts";
import { RawConnection, withServer } from "../helpers.ts";

Deno.test("the access log: one record per request, with status, bytes and cache outcome", async () => {
  const records: RequestRecord[] = [];
  await withServer(
    { "a.txt": "alpha" },
    { onRequest: (record) => records.push(record) },
    async ({ port }) => {
      const conn = await RawConnection.open(port);
      try {
        for (const line of ["GET a.txt", "GET a.txt", "GET nope", "FROB", "PING"]) {
          await conn.request(line);
        }
      } finally {
        conn.close();
      }
    },
  );
  const fields = records.map((r) => [r.command, r.path, r.status, r.cache]);
  assert.deepEqual(fields, [
    ["GET", "a.txt", "OK", "miss"],
    ["GET", "a.txt", "OK", "hit"],
    ["GET", "nope", 404, undefined],
    ["-", undefined, 400, undefined],
    ["PING", undefined, "OK", undefined],
  ]);
  // Header and body: "OK 5 size=5 ..." then the five bytes.
  assert.ok(
    records[0].bytes > 5 && records[0].bytes === records[1].bytes - "hit".length + "miss".length,
  );
  assert.equal(records[4].bytes, "OK 0\n".length);
  for (const record of records) {
    assert.match(record.client, /^127\.0\.0\.1:[0-9]+$/);
    assert.ok(record.ms >= 0 && record.ms < 5000);
    assert.ok(Math.abs(record.time - Date.now()) < 60_000);
  }
});

Deno.test("--debug reports a failure with its stack; without it, one line", async () => {
  for (const debug of [false, true]) {
    const root = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${root}/a.txt`, "a");
      const { DirectoryOrigin } = await import("../../origin/directory.ts");
      const real = await DirectoryOrigin.open(root);
      const origin = {
        ...real,
        stat: (p: string) => real.stat(p),
        list: (p: string, window: OriginListWindow) => real.list(p, window),
        open: () => Promise.reject(new Error("EIO: injected")),
      };
      const errors: string[] = [];
      await withServer(
        {},
        { origin, debug, onError: (line) => errors.push(line) },
        async ({ port }) => {
          const conn = await RawConnection.open(port);
          try {
            assert.equal((await conn.request("GET a.txt")).code, 500);
          } finally {
            conn.close();
          }
        },
      );
      assert.equal(errors.length, 1);
      assert.equal(errors[0].includes("\n    at "), debug, errors[0]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  }
});

/** Runs `serverMain` in this process; resolves to its exit code and what it printed to stderr. */
async function serverMainCapturing(args: string[]): Promise<{ code: number; stderr: string }> {
  const { serverMain } = await import("../../cli/server_cli.ts");
  const error = console.error;
  let stderr = "";
  console.error = (...parts: unknown[]) => stderr += parts.join(" ") + "\n";
  try {
    return { code: await serverMain(args), stderr };
  } finally {
    console.error = error;
  }
}

const USAGE_ERRORS: { args: string[]; message: RegExp }[] = [
  { args: ["--idle-timeout", "2500000"], message: /--idle-timeout must be a number of seconds/ },
  { args: ["--idle-timeout", "0"], message: /--idle-timeout must be a number of seconds/ },
  { args: ["--send-timeout", "2500000"], message: /--send-timeout must be a number of seconds/ },
  { args: ["--send-timeout", "0"], message: /--send-timeout must be a number of seconds/ },
  {
    args: ["--shutdown-timeout", "2500000"],
    message: /--shutdown-timeout must be a number of seconds/,
  },
  { args: ["--shutdown-timeout", "0"], message: /--shutdown-timeout must be a number of seconds/ },
  { args: ["--port", "65536"], message: /--port must be a whole number from 0 to 65535/ },
  { args: ["--port", "http"], message: /--port must be a whole number/ },
  { args: ["--max-connections", "0"], message: /--max-connections must be a whole number from 1/ },
  { args: ["--policy", "mru"], message: /unknown policy "mru" \(known: fifo, lru, clock/ },
  { args: ["--log-format", "xml"], message: /--log-format must be text or json, not "xml"/ },
  { args: ["--cache-size", "lots"], message: /size/ },
  { args: ["files"], message: /unexpected argument: files/ },
  { args: ["--dir", ".", "--origin", "s3://bucket"], message: /give --dir or --origin, not both/ },
  { args: ["--frobnicate"], message: /frobnicate/ },
  { args: ["--max-age", "soon"], message: /--max-age must be a number of seconds from 0 / },
  { args: ["--stale-if-error", "2500000"], message: /--stale-if-error must be a number/ },
  { args: ["--stale-while-revalidate", "x"], message: /--stale-while-revalidate must be/ },
  { args: ["--negative-max-age", "1e3"], message: /--negative-max-age must be a number/ },
  { args: ["--origin-connections", "0"], message: /--origin-connections must be a whole number/ },
];

Deno.test("--max-age and --negative-max-age reach the shield: a directory stat'ed per request (no watch) is stat'ed once per lifetime", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/a.txt`, "alpha");
  const server = new URL("../../server.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      server,
      "--dir",
      dir,
      "--cache-dir",
      `${dir}/../${dir.split("/").pop()}-cache`,
      "--port",
      "0",
      "--workers",
      "1",
      "--no-change-watch",
      "--max-age",
      "60",
      "--negative-max-age",
      "60",
      "--quiet",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    let banner = "";
    while (!/listening on [^ ]+:(\d+)/.test(banner)) banner += (await reader.read()).value ?? "";
    const port = Number(/listening on [^ ]+:(\d+)/.exec(banner)![1]);
    const conn = await RawConnection.open(port);
    try {
      for (let i = 0; i < 5; i++) await conn.request("GET a.txt");
      for (let i = 0; i < 5; i++) assert.equal((await conn.request("GET nope.txt")).code, 404);
      const stats = JSON.parse(new TextDecoder().decode((await conn.request("STATS")).body));
      assert.equal(stats.freshness, "stat");
      assert.equal(stats.origin.fresh, 4, "the first GET asked; four were answered from memory");
      assert.equal(stats.origin.negative, 4);
      assert.equal(stats.origin.revalidations, 2, "one stat of each path");
    } finally {
      conn.close();
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reader.cancel();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(`${dir}-cache`, { recursive: true }).catch(() => {});
  }
});

Deno.test("usage errors exit 2 with one line that names the flag, and start nothing", async (t) => {
  for (const { args, message } of USAGE_ERRORS) {
    await t.step(args.join(" "), async () => {
      const { code, stderr } = await serverMainCapturing(args);
      assert.equal(code, 2);
      assert.match(stderr, message);
      assert.match(stderr, /^tcpcache: .*\n\(see --help\)\n$/);
    });
  }
});

Deno.test("server.ts --help prints the usage with the defaults and exits 0", async () => {
  const server = new URL("../../server.ts", import.meta.url).pathname;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", server, "--help"],
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0);
  assert.match(text, /^tcpcache server /);
  assert.match(text, new RegExp(`--port PORT .*\\(default: ${DEFAULTS.port}\\)`));
  assert.match(
    text,
    /--policy NAME +eviction policy: fifo, lru, clock, sieve, s3fifo \(default: fifo\)/,
  );
});
