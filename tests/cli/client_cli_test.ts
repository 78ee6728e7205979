/**
 * End-to-end tests of the command line: `client.ts` and `mod.ts` run as real
 * subprocesses against a server started in this process (or a fake one),
 * checking stdout, stderr, the exit status and the files left behind.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../../client.ts";
import {
  cli,
  deadPort,
  MOD,
  mtimeOf,
  namesIn,
  parseRecord,
  PERMISSIONS,
  run,
  summaryPattern,
  utc,
  withFakeServer,
  withTempDir,
} from "./cli_helpers.ts";
import { seededBytes, sha256, withServer, writeTree } from "../helpers.ts";

const DENO_JSON = new URL("../../deno.json", import.meta.url);

/** A seeded binary file of a few hundred KiB (300 KiB, shown as "300 KiB"). */
const BIG = seededBytes(300 * 1024, 42);
const BIG_SHA = sha256(BIG);

/** Checks that `path` holds exactly `BIG`. */
async function assertBig(path: string): Promise<void> {
  const bytes = await Deno.readFile(path);
  assert.equal(bytes.length, BIG.length, `${path}: size`);
  assert.equal(sha256(bytes), BIG_SHA, `${path}: content`);
}

/** A `mod.ts serve` subprocess. */
interface ServeProcess {
  /** The port from its `listening on` line; undefined when stdout ended without one. */
  port: number | undefined;
  /** The stdout lines up to and including the `listening on` line. */
  lines: string[];
  child: Deno.ChildProcess;
  /** Waits for the exit; resolves to the status and the rest of the output. */
  finish(): Promise<{ status: Deno.CommandStatus; stdout: string; stderr: string }>;
  /** Kills it if it still runs (for finally blocks) and waits for it. */
  dispose(): Promise<void>;
}

/**
 * Starts `mod.ts serve ...args` and reads its stdout until the `listening on
 * 127.0.0.1:PORT` line appears or stdout ends (the process gave up).
 */
async function spawnServe(args: string[], cwd: string): Promise<ServeProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, MOD, "serve", ...args],
    cwd,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const status = child.status.then((status) => {
    exited = true;
    return status;
  });
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const lines: string[] = [];
  let buffered = "";
  let port: number | undefined;
  while (port === undefined) {
    const newline = buffered.indexOf("\n");
    if (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      lines.push(line);
      const match = /listening on 127\.0\.0\.1:([0-9]+)/.exec(line);
      if (match) port = Number(match[1]);
      continue;
    }
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
  }
  const rest = (async () => {
    let text = buffered;
    while (true) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += value;
    }
  })();
  const finish = async () => ({ status: await status, stdout: await rest, stderr: await stderr });
  return {
    port,
    lines,
    child,
    finish,
    dispose: async () => {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch {
          // it exited meanwhile
        }
      }
      await finish();
    },
  };
}

Deno.test("get saves files where asked and reports the outcome", async (t) => {
  const tree = {
    "data/big.bin": BIG,
    "my docs/ü file.txt": "unicode and a space\n",
  };
  await withServer(tree, {}, async ({ port, dir }) => {
    const P = String(port);

    await t.step("get PATH saves the base name in the working directory (a miss)", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--host", "127.0.0.1", "--port", P, "get", "data/big.bin"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, summaryPattern("big.bin", "300 KiB", "miss"));
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        await assertBig(`${cwd}/big.bin`);
      });
    });

    await t.step("--host and --port after the command; the second get is a hit", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["get", "data/big.bin", "--host", "127.0.0.1", "--port", P], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, summaryPattern("big.bin", "300 KiB", "hit"));
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        await assertBig(`${cwd}/big.bin`);
      });
    });

    await t.step("-o PATH and --output=PATH (absolute) name the file", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "data/big.bin", "-o", "copy.bin"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stderr, summaryPattern("copy.bin", "300 KiB", "hit"));
        assert.deepEqual(await namesIn(cwd), ["copy.bin"]);
        await assertBig(`${cwd}/copy.bin`);

        await withTempDir(async (elsewhere) => {
          const dest = `${elsewhere}/abs.bin`;
          const out = await cli(["--port", P, "get", "data/big.bin", `--output=${dest}`], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.match(out.stderr, summaryPattern(dest, "300 KiB", "hit"));
          assert.deepEqual(await namesIn(elsewhere), ["abs.bin"]);
          await assertBig(dest);
          assert.deepEqual(await namesIn(cwd), ["copy.bin"]);
        });
      });
    });

    await t.step("-o DIR saves under the base name; a stale .part is replaced", async () => {
      await withTempDir(async (cwd) => {
        await Deno.mkdir(`${cwd}/out`);
        await Deno.writeFile(`${cwd}/out/big.bin.part`, seededBytes(400 * 1024, 9));
        const out = await cli(["--port", P, "get", "data/big.bin", "-o", "out"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stderr, summaryPattern("out/big.bin", "300 KiB", "hit"));
        assert.deepEqual(await namesIn(cwd), ["out"]);
        assert.deepEqual(await namesIn(`${cwd}/out`), ["big.bin"]);
        await assertBig(`${cwd}/out/big.bin`);
      });
    });

    await t.step("a path with a space and non-ASCII characters", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "my docs/ü file.txt"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stderr, summaryPattern("ü file.txt", "20 B", "miss"));
        assert.deepEqual(await namesIn(cwd), ["ü file.txt"]);
        assert.equal(await Deno.readTextFile(`${cwd}/ü file.txt`), "unicode and a space\n");
      });
    });

    await t.step("--quiet prints nothing and still saves", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "data/big.bin", "--quiet"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.equal(out.stderr, "");
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        await assertBig(`${cwd}/big.bin`);
      });
    });

    await t.step("--json prints the result with the cache outcome", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "data/big.bin", "--json", "-o", "j.bin"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stderr, "");
        assert.equal(out.stdout.split("\n").length, 2, "one line of JSON");
        assert.deepEqual(JSON.parse(out.stdout), {
          path: "data/big.bin",
          status: "saved",
          saved: "j.bin",
          size: BIG.length,
          offset: 0,
          length: BIG.length,
          mtime: await mtimeOf(`${dir}/data/big.bin`),
          cache: "hit",
          sha256: BIG_SHA,
          verified: true,
        });
        await assertBig(`${cwd}/j.bin`);
      });
    });
  });
});

Deno.test("exit codes: 1 server error, 2 usage error, 3 cannot connect", async (t) => {
  await withServer({ "data/big.bin": BIG }, {}, async ({ port, server }) => {
    const P = String(port);

    await t.step("usage errors exit 2 without connecting", async () => {
      await withTempDir(async (cwd) => {
        const cases: [string[], RegExp][] = [
          [["--port", P, "frobnicate"], /^tcpcache: unknown command: frobnicate\n/],
          [["--port", P, "get"], /^tcpcache: get takes at least 1 argument\(s\)\n/],
          [
            ["--port", P, "get", "a/x.txt", "b/x.txt"],
            /^tcpcache: a\/x\.txt and b\/x\.txt would both be saved as x\.txt\n/,
          ],
          [["--port", P, "get", "-r", "a", "b"], /^tcpcache: get -r takes one directory\n/],
          [["--port", P, "get", "a", "b", "-o", "-"], /^tcpcache: -o - takes one file\n/],
          [["--port", P, "get", "a", "-o", "-", "--json"], /^tcpcache: --json and -o - /],
          [["--port", P, "get", "a", "-o", "-", "--continue"], /^tcpcache: --continue needs /],
          [["--port", P, "get", "a", "--parallel", "0"], /^tcpcache: invalid --parallel: 0 /],
          [["--port", P, "get", "a", "--parallel", "65"], /^tcpcache: invalid --parallel: 65 /],
          [["--port", P, "list", "-o", "x"], /^tcpcache: -o is an option of get\n/],
          [["--port", P, "stat", "a", "-r"], /^tcpcache: -r is an option of get\n/],
          [["--port", P, "ping", "--continue"], /^tcpcache: --continue is an option of get\n/],
          [["--port", P, "stat"], /^tcpcache: stat takes 1 argument\(s\)\n/],
          [["--port", P, "list", "extra"], /^tcpcache: list takes 0 argument\(s\)\n/],
          [["--port", P], /^tcpcache: no command given\n/],
          [["--port", "70000", "ping"], /^tcpcache: invalid port: 70000\n/],
          [["--port", `${P}x`, "ping"], new RegExp(`^tcpcache: invalid port: ${P}x\\n`)],
          [["--port", P, "--bogus", "ping"], /^tcpcache: .*bogus.*\n/],
        ];
        const outcomes = await Promise.all(cases.map(([args]) => cli(args, cwd)));
        outcomes.forEach((out, i) => {
          const [args, pattern] = cases[i];
          assert.equal(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
          assert.equal(out.stdout, "", args.join(" "));
          assert.match(out.stderr, pattern, args.join(" "));
          assert.doesNotMatch(out.stderr, /^\s+at /m, `${args.join(" ")}: no stack trace`);
        });
        assert.equal(server.stats().connections.total, 0, "no usage error may connect");
        assert.deepEqual(await namesIn(cwd), []);
      });
    });

    await t.step("a missing file exits 1 with `not found` and leaves nothing", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "x.txt"], cwd);
        assert.equal(out.code, 1);
        assert.equal(out.stdout, "");
        assert.equal(out.stderr, "tcpcache: not found: x.txt\n");
        assert.deepEqual(await namesIn(cwd), []);
      });
    });

    await t.step("nothing listening exits 3 and leaves nothing", async () => {
      await withTempDir(async (cwd) => {
        const dead = deadPort();
        const out = await cli(["--port", String(dead), "get", "data/big.bin"], cwd);
        assert.equal(out.code, 3, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(
          out.stderr,
          new RegExp(`^tcpcache: cannot connect to 127\\.0\\.0\\.1:${dead}: `),
        );
        assert.equal(out.stderr.trimEnd().split("\n").length, 1, "one line");
        assert.deepEqual(await namesIn(cwd), []);
      });
    });
  });
});

Deno.test("a failed download never leaves the file; NAME.part only when resumable", async (t) => {
  await t.step("the connection closes in the middle of the body: exit 3, .part kept", async () => {
    const response = new Uint8Array([
      ...new TextEncoder().encode("OK 1000 size=1000\n"),
      ...seededBytes(10, 3),
    ]);
    await withTempDir(async (cwd) => {
      const requests = await withFakeServer(response, async (port) => {
        const out = await cli(["--port", String(port), "get", "data/cut.bin"], cwd);
        assert.equal(out.code, 3, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, /^tcpcache: .*connection/);
        assert.match(
          out.stderr,
          /10 bytes kept in cut\.bin\.part \(get --continue finishes it\)\n$/,
        );
      });
      assert.deepEqual(requests, ["GET data/cut.bin"]);
      assert.deepEqual(await namesIn(cwd), ["cut.bin.part"], "no cut.bin; the .part is kept");
      assert.deepEqual(await Deno.readFile(`${cwd}/cut.bin.part`), seededBytes(10, 3));
    });
  });

  await t.step("the bytes do not match the sha256 the server sent: exit 1", async () => {
    const body = "hello world\n";
    const header = `OK ${body.length} size=${body.length} offset=0 mtime=1700000000000 ` +
      `cache=miss sha256=${sha256("something else")}\n`;
    const response = new TextEncoder().encode(header + body);
    await withTempDir(async (cwd) => {
      const requests = await withFakeServer(response, async (port) => {
        const out = await cli(["--port", String(port), "get", "docs/bad.txt"], cwd);
        assert.equal(out.code, 1, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, /^tcpcache: .*sha256/);
        assert.ok(out.stderr.includes(sha256(body)), `names the received digest: ${out.stderr}`);
      });
      assert.deepEqual(requests, ["GET docs/bad.txt"]);
      assert.deepEqual(await namesIn(cwd), [], "no bad.txt, no bad.txt.part");
    });
  });
});

Deno.test("list, list --json, files and stat print the server's state", async (t) => {
  const tree = {
    "zeta.bin": seededBytes(200 * 1024, 7),
    "docs/alpha.txt": "alpha\n",
    "docs/guide.md": "# guide\n",
  };
  await withServer(tree, { cacheSize: 1024 * 1024, policy: "fifo" }, async ({ port, dir }) => {
    const P = String(port);
    const client = await connect({ port });
    try {
      await withTempDir(async (cwd) => {
        const alphaMtime = await mtimeOf(`${dir}/docs/alpha.txt`);

        await t.step("list of an empty cache", async () => {
          const out = await cli(["--port", P, "list"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stderr, "");
          assert.equal(
            out.stdout,
            "0 entries, 0 B of 1.0 MiB used (0.0%), policy fifo; #1 is evicted next\n",
          );
        });

        await t.step("stat of a file not yet cached", async () => {
          const out = await cli(["--port", P, "stat", "docs/alpha.txt"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.deepEqual(parseRecord(out.stdout), {
            path: "docs/alpha.txt",
            size: "6",
            mtime: String(alphaMtime),
            cached: "false",
            sha256: "null",
          });
        });

        // zeta.bin is admitted first, alpha.txt second; the hit on zeta.bin
        // must not move it under FIFO.
        assert.equal((await client.get("zeta.bin")).cache, "miss");
        assert.equal((await client.get("docs/alpha.txt")).cache, "miss");
        assert.equal((await client.get("zeta.bin")).cache, "hit");
        const listing = await client.list();
        assert.deepEqual(listing.entries.map((entry) => entry.path), [
          "zeta.bin",
          "docs/alpha.txt",
        ]);
        const [zeta, alpha] = listing.entries;

        await t.step("list prints the entries in eviction order and the summary", async () => {
          const out = await cli(["--port", P, "list"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stderr, "");
          assert.equal(
            out.stdout,
            [
              "#     SIZE  ADMITTED (UTC)       PATH",
              `1  200 KiB  ${utc(zeta.admitted)}  zeta.bin`,
              `2      6 B  ${utc(alpha.admitted)}  docs/alpha.txt`,
              "2 entries, 200 KiB of 1.0 MiB used (19.5%), policy fifo; #1 is evicted next",
            ].join("\n") + "\n",
          );
        });

        await t.step("list --json prints exactly the server's listing", async () => {
          const out = await cli(["--port", P, "list", "--json"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stdout.split("\n").length, 2, "one line of JSON");
          const printed = JSON.parse(out.stdout);
          assert.deepEqual(printed, await client.list());
          assert.deepEqual(printed, {
            capacity: 1024 * 1024,
            used: 200 * 1024 + 6,
            policy: "fifo",
            entries: [
              { path: "zeta.bin", size: 200 * 1024, admitted: zeta.admitted },
              { path: "docs/alpha.txt", size: 6, admitted: alpha.admitted },
            ],
          });
        });

        await t.step("files lists the served directory", async () => {
          const out = await cli(["--port", P, "files"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(
            out.stdout,
            [
              "/",
              "TYPE     SIZE  MODIFIED (UTC)       NAME",
              `dir         -  ${utc(await mtimeOf(`${dir}/docs`))}  docs/`,
              `file  200 KiB  ${utc(await mtimeOf(`${dir}/zeta.bin`))}  zeta.bin`,
            ].join("\n") + "\n",
          );
        });

        await t.step("files DIR lists a subdirectory", async () => {
          const out = await cli(["--port", P, "files", "docs"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(
            out.stdout,
            [
              "/docs",
              "TYPE  SIZE  MODIFIED (UTC)       NAME",
              `file   6 B  ${utc(alphaMtime)}  alpha.txt`,
              `file   8 B  ${utc(await mtimeOf(`${dir}/docs/guide.md`))}  guide.md`,
            ].join("\n") + "\n",
          );
        });

        await t.step("files DIR --json", async () => {
          const out = await cli(["--port", P, "files", "docs", "--json"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.deepEqual(JSON.parse(out.stdout), {
            path: "docs",
            entries: [
              { name: "alpha.txt", type: "file", size: 6, mtime: alphaMtime },
              {
                name: "guide.md",
                type: "file",
                size: 8,
                mtime: await mtimeOf(`${dir}/docs/guide.md`),
              },
            ],
          });
        });

        await t.step("stat of a cached file shows its sha256", async () => {
          const out = await cli(["--port", P, "stat", "docs/alpha.txt"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.deepEqual(parseRecord(out.stdout), {
            path: "docs/alpha.txt",
            size: "6",
            mtime: String(alphaMtime),
            cached: "true",
            sha256: sha256("alpha\n"),
          });
        });

        await t.step("stat of a missing file exits 1", async () => {
          const out = await cli(["--port", P, "stat", "docs/nope.txt"], cwd);
          assert.equal(out.code, 1);
          assert.equal(out.stdout, "");
          assert.equal(out.stderr, "tcpcache: not found: docs/nope.txt\n");
        });

        assert.deepEqual(await namesIn(cwd), [], "read-only commands write nothing");
      });
    } finally {
      client.close();
    }
  });
});

Deno.test("stats and ping print the server's counters", async (t) => {
  const tree = {
    "hello.txt": "hello\n",
    "one.txt": "1".repeat(600),
    "two.txt": "2".repeat(600),
    "big.bin": seededBytes(2000, 5),
  };
  await withServer(tree, { cacheSize: 1000 }, async ({ port }) => {
    const P = String(port);
    // One connection, six requests: hit 1, miss 3, bypass 1, 404 once, and
    // two evictions (two.txt needs hello.txt and one.txt out, FIFO).
    const client = await connect({ port });
    try {
      assert.equal((await client.get("hello.txt")).cache, "miss");
      assert.equal((await client.get("hello.txt")).cache, "hit");
      await assert.rejects(client.get("missing.txt"), { code: 404 });
      assert.equal((await client.get("big.bin", { offset: 0, length: 10 })).cache, "bypass");
      assert.equal((await client.get("one.txt")).cache, "miss");
      assert.equal((await client.get("two.txt")).cache, "miss");
    } finally {
      client.close();
    }
    await withTempDir(async (cwd) => {
      await t.step("ping", async () => {
        const out = await cli(["--port", P, "ping"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stderr, "");
        assert.match(
          out.stdout,
          new RegExp(`^pong from 127\\.0\\.0\\.1:${port} in [0-9]+\\.[0-9]{2} ms\\n$`),
        );
      });

      await t.step("stats", async () => {
        const version = JSON.parse(await Deno.readTextFile(DENO_JSON)).version;
        const out = await cli(["--port", P, "stats"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stderr, "");
        const record = parseRecord(out.stdout);
        assert.match(record.uptimeMs, /^[0-9]+$/);
        assert.match(record.bytesSent, /^[0-9]+$/);
        assert.ok(Number(record.bytesSent) >= 6 + 6 + 10 + 600 + 600, record.bytesSent);
        assert.deepEqual(record, {
          version,
          uptimeMs: record.uptimeMs,
          "connections.open": "1",
          "connections.total": "3",
          "connections.rejected": "0",
          requests: "8",
          hits: "1",
          misses: "3",
          bypasses: "1",
          evictions: "2",
          bytesSent: record.bytesSent,
          bytesFromOrigin: String(6 + 10 + 600 + 600),
          sendTimeouts: "0",
          "errors.404": "1",
          // Recorded once answered: STATS itself is not in yet.
          "protocols.tcp.requests": "7",
          "protocols.http.requests": "0",
          "protocols.http.connections": "0",
          "protocols.http.active": "0",
          "cache.capacity": "1000",
          "cache.used": "600",
          "cache.entries": "1",
          "cache.policy": "fifo",
          "cache.memory": "600",
        });
      });
    });
  });
});

Deno.test("the original assignment's command lines", async (t) => {
  const tree = { "data/big.bin": BIG, "docs/readme.txt": "read me\n" };
  await withServer(tree, {}, async ({ port }) => {
    const P = String(port);
    await withTempDir(async (cwd) => {
      await t.step("client.ts HOST PORT FILE DIR fetches FILE into DIR", async () => {
        await Deno.mkdir(`${cwd}/into`);
        const out = await cli(["127.0.0.1", P, "data/big.bin", "into"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, summaryPattern("into/big.bin", "300 KiB", "miss"));
        assert.deepEqual(await namesIn(cwd), ["into"]);
        assert.deepEqual(await namesIn(`${cwd}/into`), ["big.bin"]);
        await assertBig(`${cwd}/into/big.bin`);
      });

      await t.step("client.ts HOST PORT list lists the cache", async () => {
        const client = await connect({ port });
        let admitted: number;
        try {
          [{ admitted }] = (await client.list()).entries;
        } finally {
          client.close();
        }
        const out = await cli(["127.0.0.1", P, "list"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stderr, "");
        assert.equal(
          out.stdout,
          [
            "#     SIZE  ADMITTED (UTC)       PATH",
            `1  300 KiB  ${utc(admitted)}  data/big.bin`,
            "1 entry, 300 KiB of 64 MiB used (0.5%), policy fifo; #1 is evicted next",
          ].join("\n") + "\n",
        );
      });
    });
  });
});

Deno.test("TCPCACHE_HOST and TCPCACHE_PORT choose the server when no flag does", async (t) => {
  await withServer({ "docs/readme.txt": "read me\n" }, {}, async ({ port }) => {
    const P = String(port);
    await withTempDir(async (cwd) => {
      await t.step("both variables", async () => {
        const env = { TCPCACHE_HOST: "127.0.0.1", TCPCACHE_PORT: P };
        const out = await cli(["ping"], cwd, env);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stdout, new RegExp(`^pong from 127\\.0\\.0\\.1:${port} in `));
      });

      await t.step("TCPCACHE_PORT alone, with get", async () => {
        const out = await cli(["get", "docs/readme.txt"], cwd, { TCPCACHE_PORT: P });
        assert.equal(out.code, 0, out.stderr);
        assert.equal(await Deno.readTextFile(`${cwd}/readme.txt`), "read me\n");
      });

      await t.step("TCPCACHE_HOST is used: nothing listens on 127.0.0.2", async () => {
        const env = { TCPCACHE_HOST: "127.0.0.2", TCPCACHE_PORT: P };
        const out = await cli(["ping"], cwd, env);
        assert.equal(out.code, 3, out.stderr);
        assert.match(
          out.stderr,
          new RegExp(`^tcpcache: cannot connect to 127\\.0\\.0\\.2:${port}: `),
        );
      });

      await t.step("flags win over the variables", async () => {
        const env = { TCPCACHE_HOST: "127.0.0.2", TCPCACHE_PORT: String(deadPort()) };
        const out = await cli(["--host", "127.0.0.1", "--port", P, "ping"], cwd, env);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stdout, new RegExp(`^pong from 127\\.0\\.0\\.1:${port} in `));
      });

      await t.step("a bad TCPCACHE_PORT is a usage error", async () => {
        const out = await cli(["ping"], cwd, { TCPCACHE_PORT: "port" });
        assert.equal(out.code, 2);
        assert.match(out.stderr, /^tcpcache: invalid port: port\n/);
      });
    });
  });
});

Deno.test("mod.ts passes client commands through and prints its version", async (t) => {
  await withServer({ "data/big.bin": BIG }, {}, async ({ port }) => {
    const P = String(port);
    await withTempDir(async (cwd) => {
      await t.step("mod.ts get", async () => {
        const out = await run(MOD, ["get", "data/big.bin", "--port", P], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, summaryPattern("big.bin", "300 KiB", "miss"));
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        await assertBig(`${cwd}/big.bin`);
      });

      await t.step("mod.ts list", async () => {
        const client = await connect({ port });
        let admitted: number;
        try {
          [{ admitted }] = (await client.list()).entries;
        } finally {
          client.close();
        }
        const out = await run(MOD, ["list", "--port", P], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(
          out.stdout,
          [
            "#     SIZE  ADMITTED (UTC)       PATH",
            `1  300 KiB  ${utc(admitted)}  data/big.bin`,
            "1 entry, 300 KiB of 64 MiB used (0.5%), policy fifo; #1 is evicted next",
          ].join("\n") + "\n",
        );
      });

      await t.step("mod.ts --version", async () => {
        const version = JSON.parse(await Deno.readTextFile(DENO_JSON)).version;
        assert.match(version, /^[0-9]+\.[0-9]+\.[0-9]+/);
        const out = await run(MOD, ["--version"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, `tcpcache ${version}\n`);
      });
    });
  });
});

Deno.test("mod.ts serve: listens, serves, and exits 0 on SIGTERM", async () => {
  await withTempDir(async (root) => {
    await writeTree(`${root}/files`, { "data/big.bin": BIG });
    await Deno.mkdir(`${root}/work`);
    const serve = await spawnServe(
      ["--port", "0", "--dir", `${root}/files`, "--cache-dir", `${root}/cache`],
      root,
    );
    try {
      assert.ok(serve.port !== undefined, `no listening line: ${serve.lines.join("\n")}`);
      assert.equal(serve.lines.length, 1, "the listening line comes first");

      const out = await cli(["--port", String(serve.port), "get", "data/big.bin"], `${root}/work`);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, summaryPattern("big.bin", "300 KiB", "miss"));
      await assertBig(`${root}/work/big.bin`);
      assert.ok(
        (await namesIn(`${root}/cache`)).includes(".tcpcache"),
        "the cache directory carries the marker",
      );

      serve.child.kill("SIGTERM");
      const { status, stdout, stderr } = await serve.finish();
      assert.equal(status.code, 0, stderr);
      assert.equal(status.signal, null);
      // After the ready line: one access-log line, for the get.
      assert.match(
        stdout,
        /^\S+Z 127\.0\.0\.1:[0-9]+ GET data\/big\.bin OK [0-9]+ [0-9.]+ miss\n$/,
      );
      assert.equal(stderr, "");
    } finally {
      await serve.dispose();
    }
  });
});

Deno.test("mod.ts serve: bad directories stop it with one line", async (t) => {
  await withTempDir(async (root) => {
    await t.step("a --dir that does not exist", async () => {
      const serve = await spawnServe(
        ["--port", "0", "--dir", `${root}/nope`, "--cache-dir", `${root}/cache`],
        root,
      );
      try {
        assert.equal(serve.port, undefined, "it must not listen");
        const { status, stdout, stderr } = await serve.finish();
        assert.notEqual(status.code, 0);
        assert.equal(stdout, "");
        assert.match(stderr, new RegExp(`^tcpcache: cannot serve ${root}/nope: .+\\n$`));
        assert.equal(stderr.split("\n").length, 2, `one line: ${stderr}`);
        assert.doesNotMatch(stderr, /^\s+at /m);
        await assert.rejects(Deno.stat(`${root}/cache`), Deno.errors.NotFound, "no cache dir made");
      } finally {
        await serve.dispose();
      }
    });

    await t.step("--dir without its value", async () => {
      const serve = await spawnServe(["--port", "0", "--dir"], root);
      try {
        assert.equal(serve.port, undefined, "it must not listen");
        const { status, stderr } = await serve.finish();
        assert.equal(status.code, 2);
        assert.match(stderr, /^tcpcache: .*--dir/);
        assert.doesNotMatch(stderr, /^\s+at /m);
      } finally {
        await serve.dispose();
      }
    });

    await t.step("a non-empty --cache-dir without the marker is left untouched", async () => {
      await writeTree(`${root}/files`, { "hello.txt": "hello\n" });
      const foreign = `${root}/precious`;
      const content = seededBytes(5000, 11);
      await writeTree(foreign, { "keep.txt": "do not delete\n", "sub/inner.bin": content });
      const before = await mtimeOf(`${foreign}/keep.txt`);
      const serve = await spawnServe(
        ["--port", "0", "--dir", `${root}/files`, "--cache-dir", foreign],
        root,
      );
      try {
        assert.equal(serve.port, undefined, "it must not listen");
        const { status, stdout, stderr } = await serve.finish();
        assert.notEqual(status.code, 0);
        assert.equal(stdout, "");
        assert.match(stderr, /^tcpcache: refusing to use cache directory .*\.tcpcache.*\n$/);
        assert.equal(stderr.split("\n").length, 2, `one line: ${stderr}`);
      } finally {
        await serve.dispose();
      }
      assert.deepEqual(await namesIn(foreign), ["keep.txt", "sub"]);
      assert.deepEqual(await namesIn(`${foreign}/sub`), ["inner.bin"]);
      assert.equal(await Deno.readTextFile(`${foreign}/keep.txt`), "do not delete\n");
      assert.equal(await mtimeOf(`${foreign}/keep.txt`), before);
      assert.equal(sha256(await Deno.readFile(`${foreign}/sub/inner.bin`)), sha256(content));
    });
  });
});
