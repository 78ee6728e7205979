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
  assertOutput,
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

/** Checks that `path` holds exactly `content`. */
async function assertContent(path: string, content: Uint8Array | string): Promise<void> {
  if (typeof content === "string") {
    assert.equal(await Deno.readTextFile(path), content, path);
  } else {
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, content.length, `${path}: size`);
    assert.equal(sha256(bytes), sha256(content), `${path}: content`);
  }
}

/** Checks that `path` holds exactly `BIG`. */
function assertBig(path: string): Promise<void> {
  return assertContent(path, BIG);
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
async function spawnServe(
  args: string[],
  cwd: string,
  permissions = PERMISSIONS,
): Promise<ServeProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, MOD, "serve", ...args],
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

/** `path` below the working directory `cwd` (`.` is `cwd` itself), unless it is absolute. */
function at(cwd: string, path: string): string {
  if (path === ".") return cwd;
  return path.startsWith("/") ? path : `${cwd}/${path}`;
}

/** A `get` of one file that succeeds: where the file must land, and what it must print. */
interface SaveCase {
  name: string;
  args: string[];
  /** Prepares the (empty) working directory. */
  before?: (cwd: string) => Promise<void>;
  /** The JSON document on stdout (one line), for --json; else stdout is empty. */
  json?: Record<string, unknown>;
  /** stderr: exactly this text, or matching this pattern. */
  stderr: string | RegExp;
  /** The names in each directory afterwards: relative to the working directory, or absolute. */
  names: Record<string, string[]>;
  /** The file saved, relative or absolute, and what it must hold. */
  saved: [path: string, content: Uint8Array | string];
}

Deno.test("get saves files where asked and reports the outcome", async (t) => {
  const tree = {
    "data/big.bin": BIG,
    "my docs/ü file.txt": "unicode and a space\n",
  };
  await withServer(tree, {}, async ({ port, dir }) => {
    const P = String(port);
    await withTempDir(async (elsewhere) => {
      const abs = `${elsewhere}/abs.bin`;
      // In order: the first get is a miss, the others hits.
      const cases: SaveCase[] = [
        {
          name: "get PATH saves the base name in the working directory (a miss)",
          args: ["--host", "127.0.0.1", "--port", P, "get", "data/big.bin"],
          stderr: summaryPattern("big.bin", "300 KiB", "miss"),
          names: { ".": ["big.bin"] },
          saved: ["big.bin", BIG],
        },
        {
          name: "--host and --port after the command; the second get is a hit",
          args: ["get", "data/big.bin", "--host", "127.0.0.1", "--port", P],
          stderr: summaryPattern("big.bin", "300 KiB", "hit"),
          names: { ".": ["big.bin"] },
          saved: ["big.bin", BIG],
        },
        {
          name: "-o PATH names the file",
          args: ["--port", P, "get", "data/big.bin", "-o", "copy.bin"],
          stderr: summaryPattern("copy.bin", "300 KiB", "hit"),
          names: { ".": ["copy.bin"] },
          saved: ["copy.bin", BIG],
        },
        {
          name: "--output=PATH (absolute) names the file; nothing lands in the working directory",
          args: ["--port", P, "get", "data/big.bin", `--output=${abs}`],
          stderr: summaryPattern(abs, "300 KiB", "hit"),
          names: { ".": [], [elsewhere]: ["abs.bin"] },
          saved: [abs, BIG],
        },
        {
          name: "-o DIR saves under the base name; a stale .part is replaced",
          args: ["--port", P, "get", "data/big.bin", "-o", "out"],
          before: async (cwd) => {
            await Deno.mkdir(`${cwd}/out`);
            await Deno.writeFile(`${cwd}/out/big.bin.part`, seededBytes(400 * 1024, 9));
          },
          stderr: summaryPattern("out/big.bin", "300 KiB", "hit"),
          names: { ".": ["out"], "out": ["big.bin"] },
          saved: ["out/big.bin", BIG],
        },
        {
          name: "a path with a space and non-ASCII characters",
          args: ["--port", P, "get", "my docs/ü file.txt"],
          stderr: summaryPattern("ü file.txt", "20 B", "miss"),
          names: { ".": ["ü file.txt"] },
          saved: ["ü file.txt", "unicode and a space\n"],
        },
        {
          name: "--quiet prints nothing and still saves",
          args: ["--port", P, "get", "data/big.bin", "--quiet"],
          stderr: "",
          names: { ".": ["big.bin"] },
          saved: ["big.bin", BIG],
        },
        {
          name: "--json prints the result with the cache outcome",
          args: ["--port", P, "get", "data/big.bin", "--json", "-o", "j.bin"],
          json: {
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
          },
          stderr: "",
          names: { ".": ["j.bin"] },
          saved: ["j.bin", BIG],
        },
      ];
      for (const { name, args, before, json, stderr, names, saved } of cases) {
        await t.step(name, async () => {
          await withTempDir(async (cwd) => {
            await before?.(cwd);
            const out = await cli(args, cwd);
            assert.equal(out.code, 0, out.stderr);
            if (json === undefined) {
              assert.equal(out.stdout, "");
            } else {
              assert.equal(out.stdout.split("\n").length, 2, "one line of JSON");
              assert.deepEqual(JSON.parse(out.stdout), json);
            }
            assertOutput(out.stderr, stderr);
            for (const [where, expected] of Object.entries(names)) {
              assert.deepEqual(await namesIn(at(cwd, where)), expected, where);
            }
            await assertContent(at(cwd, saved[0]), saved[1]);
          });
        });
      }
    });
  });
});

Deno.test("exit codes: 1 server error, 2 usage error, 3 cannot connect", async (t) => {
  await withServer({ "data/big.bin": BIG }, {}, async ({ port, server }) => {
    const P = String(port);

    await t.step("usage errors exit 2 without connecting", async (t) => {
      const cases: [args: string[], stderr: RegExp][] = [
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
      await withTempDir(async (cwd) => {
        // Started together: each is a process of its own.
        const outcomes = await Promise.all(cases.map(([args]) => cli(args, cwd)));
        for (const [i, [args, stderr]] of cases.entries()) {
          await t.step(args.join(" "), () => {
            const out = outcomes[i];
            assert.equal(out.code, 2, out.stderr);
            assert.equal(out.stdout, "");
            assert.match(out.stderr, stderr);
            assert.doesNotMatch(out.stderr, /^\s+at /m, "no stack trace");
          });
        }
        assert.equal((await server.stats()).connections.total, 0, "no usage error may connect");
        assert.deepEqual(await namesIn(cwd), []);
      });
    });

    const dead = deadPort();
    const failures: { name: string; args: string[]; code: number; stderr: string | RegExp }[] = [
      {
        name: "a missing file exits 1 with `not found` and leaves nothing",
        args: ["--port", P, "get", "x.txt"],
        code: 1,
        stderr: "tcpcache: not found: x.txt\n",
      },
      {
        name: "nothing listening exits 3 and leaves nothing",
        args: ["--port", String(dead), "get", "data/big.bin"],
        code: 3,
        stderr: new RegExp(`^tcpcache: cannot connect to 127\\.0\\.0\\.1:${dead}: `),
      },
    ];
    for (const { name, args, code, stderr } of failures) {
      await t.step(name, async () => {
        await withTempDir(async (cwd) => {
          const out = await cli(args, cwd);
          assert.equal(out.code, code, out.stderr);
          assert.equal(out.stdout, "");
          assertOutput(out.stderr, stderr);
          assert.equal(out.stderr.trimEnd().split("\n").length, 1, "one line");
          assert.deepEqual(await namesIn(cwd), []);
        });
      });
    }
  });
});

/** A download that a fake server makes fail, and what it must leave behind. */
interface FailedDownload {
  name: string;
  /** What the fake server answers (then it closes the connection). */
  response: Uint8Array;
  path: string;
  code: number;
  /** Patterns stderr must match, and texts it must contain. */
  stderr: RegExp[];
  mentions?: string[];
  /** The names left in the working directory, and why. */
  names: [names: string[], why: string];
  /** The `.part` kept, and what it must hold. */
  part?: [name: string, content: Uint8Array];
}

Deno.test("a failed download never leaves the file; NAME.part only when resumable", async (t) => {
  const body = "hello world\n";
  const cases: FailedDownload[] = [
    {
      name: "the connection closes in the middle of the body: exit 3, .part kept",
      response: new Uint8Array([
        ...new TextEncoder().encode("OK 1000 size=1000\n"),
        ...seededBytes(10, 3),
      ]),
      path: "data/cut.bin",
      code: 3,
      stderr: [
        /^tcpcache: .*connection/,
        /10 bytes kept in cut\.bin\.part \(get --continue finishes it\)\n$/,
      ],
      names: [["cut.bin.part"], "no cut.bin; the .part is kept"],
      part: ["cut.bin.part", seededBytes(10, 3)],
    },
    {
      name: "the bytes do not match the sha256 the server sent: exit 1",
      response: new TextEncoder().encode(
        `OK ${body.length} size=${body.length} offset=0 mtime=1700000000000 ` +
          `cache=miss sha256=${sha256("something else")}\n` + body,
      ),
      path: "docs/bad.txt",
      code: 1,
      stderr: [/^tcpcache: .*sha256/],
      mentions: [sha256(body)],
      names: [[], "no bad.txt, no bad.txt.part"],
    },
  ];
  for (const { name, response, path, code, stderr, mentions = [], names, part } of cases) {
    await t.step(name, async () => {
      await withTempDir(async (cwd) => {
        const requests = await withFakeServer(response, async (port) => {
          const out = await cli(["--port", String(port), "get", path], cwd);
          assert.equal(out.code, code, out.stderr);
          assert.equal(out.stdout, "");
          for (const pattern of stderr) assert.match(out.stderr, pattern);
          for (const text of mentions) {
            assert.ok(out.stderr.includes(text), `names ${text}: ${out.stderr}`);
          }
        });
        assert.deepEqual(requests, [`GET ${path}`]);
        assert.deepEqual(await namesIn(cwd), names[0], names[1]);
        if (part) assert.deepEqual(await Deno.readFile(`${cwd}/${part[0]}`), part[1]);
      });
    });
  }
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

        const guideMtime = await mtimeOf(`${dir}/docs/guide.md`);
        const printed: [name: string, args: string[], stdout: string[]][] = [
          ["list prints the entries in eviction order and the summary", ["list"], [
            "#     SIZE  ADMITTED (UTC)       PATH",
            `1  200 KiB  ${utc(zeta.admitted)}  zeta.bin`,
            `2      6 B  ${utc(alpha.admitted)}  docs/alpha.txt`,
            "2 entries, 200 KiB of 1.0 MiB used (19.5%), policy fifo; #1 is evicted next",
          ]],
          ["files lists the served directory", ["files"], [
            "/",
            "TYPE     SIZE  MODIFIED (UTC)       NAME",
            `dir         -  ${utc(await mtimeOf(`${dir}/docs`))}  docs/`,
            `file  200 KiB  ${utc(await mtimeOf(`${dir}/zeta.bin`))}  zeta.bin`,
          ]],
          ["files DIR lists a subdirectory", ["files", "docs"], [
            "/docs",
            "TYPE  SIZE  MODIFIED (UTC)       NAME",
            `file   6 B  ${utc(alphaMtime)}  alpha.txt`,
            `file   8 B  ${utc(guideMtime)}  guide.md`,
          ]],
        ];
        for (const [name, args, lines] of printed) {
          await t.step(name, async () => {
            const out = await cli(["--port", P, ...args], cwd);
            assert.equal(out.code, 0, out.stderr);
            assert.equal(out.stderr, "");
            assert.equal(out.stdout, lines.join("\n") + "\n");
          });
        }

        const documents: {
          name: string;
          args: string[];
          json: unknown;
          /** The same answer, asked for without the CLI. */
          direct: () => Promise<unknown>;
        }[] = [
          {
            name: "list --json prints exactly the server's listing",
            args: ["list", "--json"],
            json: {
              capacity: 1024 * 1024,
              used: 200 * 1024 + 6,
              policy: "fifo",
              entries: [
                { path: "zeta.bin", size: 200 * 1024, admitted: zeta.admitted },
                { path: "docs/alpha.txt", size: 6, admitted: alpha.admitted },
              ],
            },
            direct: () => client.list(),
          },
          {
            name: "files DIR --json",
            args: ["files", "docs", "--json"],
            json: {
              path: "docs",
              entries: [
                { name: "alpha.txt", type: "file", size: 6, mtime: alphaMtime },
                { name: "guide.md", type: "file", size: 8, mtime: guideMtime },
              ],
            },
            direct: () => client.files("docs"),
          },
        ];
        for (const { name, args, json, direct } of documents) {
          await t.step(name, async () => {
            const out = await cli(["--port", P, ...args], cwd);
            assert.equal(out.code, 0, out.stderr);
            assert.equal(out.stderr, "");
            assert.equal(out.stdout.split("\n").length, 2, "one line of JSON");
            const printed = JSON.parse(out.stdout);
            assert.deepEqual(printed, await direct());
            assert.deepEqual(printed, json);
          });
        }

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
          "cache.effectiveCapacity": "1000",
          "cache.writeFailures": "0",
          "cache.adopted": "0",
          "cache.adopting": "0",
          "cache.housekeepingBytes": "0",
          "cache.housekeeping": "done",
          // Plain TCP, no allow list, no tokens: nothing refused.
          "access.tls": "false",
          "access.allow": "null",
          "access.tokens": "0",
          "access.adminTokens": "0",
          "access.denied": "0",
          "access.tlsHandshakes": "0",
          "access.tlsHandshakeFailures": "0",
          "access.authFailures": "0",
          "access.authLimited": "0",
          freshness: "watch",
          // A watched directory needs no shield: nothing to count.
          "origin.fresh": "0",
          "origin.stale": "0",
          "origin.negative": "0",
          "origin.revalidations": "0",
          "origin.notModified": "0",
          "origin.staleWhileRevalidate": "0",
          "origin.staleIfError": "0",
          "origin.carried": "0",
          "origin.inFlight": "0",
          "origin.breaker.state": "closed",
          "origin.breaker.consecutiveFailures": "0",
          "origin.breaker.opened": "0",
          "origin.breaker.closed": "0",
          "origin.breaker.refused": "0",
          "origin.breaker.probes": "0",
          // One thread serves (the test's server), and it received them all.
          "threads.0": "8",
        });
      });
    });
  });
});

Deno.test("the positional command lines: HOST PORT list, HOST PORT FILE DIR", async (t) => {
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
    const pong = new RegExp(`^pong from 127\\.0\\.0\\.1:${port} in `);
    const cases: {
      name: string;
      env: Record<string, string>;
      args: string[];
      code: number;
      stdout?: RegExp;
      stderr?: RegExp;
      /** A file the command saved, and its text. */
      saved?: [name: string, text: string];
    }[] = [
      {
        name: "both variables",
        env: { TCPCACHE_HOST: "127.0.0.1", TCPCACHE_PORT: P },
        args: ["ping"],
        code: 0,
        stdout: pong,
      },
      {
        name: "TCPCACHE_PORT alone, with get",
        env: { TCPCACHE_PORT: P },
        args: ["get", "docs/readme.txt"],
        code: 0,
        saved: ["readme.txt", "read me\n"],
      },
      {
        name: "TCPCACHE_HOST is used: nothing listens on 127.0.0.2",
        env: { TCPCACHE_HOST: "127.0.0.2", TCPCACHE_PORT: P },
        args: ["ping"],
        code: 3,
        stderr: new RegExp(`^tcpcache: cannot connect to 127\\.0\\.0\\.2:${port}: `),
      },
      {
        name: "flags win over the variables",
        env: { TCPCACHE_HOST: "127.0.0.2", TCPCACHE_PORT: String(deadPort()) },
        args: ["--host", "127.0.0.1", "--port", P, "ping"],
        code: 0,
        stdout: pong,
      },
      {
        name: "a bad TCPCACHE_PORT is a usage error",
        env: { TCPCACHE_PORT: "port" },
        args: ["ping"],
        code: 2,
        stderr: /^tcpcache: invalid port: port\n/,
      },
    ];
    await withTempDir(async (cwd) => {
      for (const { name, env, args, code, stdout, stderr, saved } of cases) {
        await t.step(name, async () => {
          const out = await cli(args, cwd, env);
          assert.equal(out.code, code, out.stderr);
          if (stdout) assert.match(out.stdout, stdout);
          if (stderr) assert.match(out.stderr, stderr);
          if (saved) assert.equal(await Deno.readTextFile(`${cwd}/${saved[0]}`), saved[1]);
        });
      }
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
        /^\S+Z 127\.0\.0\.1:[0-9]+ GET data\/big\.bin OK [0-9]+ [0-9.]+ miss - -\n$/,
      );
      assert.equal(stderr, "");
    } finally {
      await serve.dispose();
    }
  });
});

Deno.test("mod.ts serve: the access log is batched, SIGHUP writes it and the server goes on, SIGTERM loses no line", async () => {
  await withTempDir(async (root) => {
    await writeTree(`${root}/files`, { "a.txt": "a" });
    const serve = await spawnServe(
      ["--port", "0", "--dir", `${root}/files`, "--cache-dir", `${root}/cache`],
      root,
    );
    try {
      assert.ok(serve.port !== undefined, `no listening line: ${serve.lines.join("\n")}`);
      const client = await connect({ port: serve.port });
      try {
        for (let i = 0; i < 150; i++) await client.get("a.txt");
        serve.child.kill("SIGHUP");
        await new Promise((resolve) => setTimeout(resolve, 200));
        for (let i = 0; i < 150; i++) await client.get("a.txt"); // still serving
      } finally {
        client.close();
      }
      serve.child.kill("SIGTERM");
      const { status, stdout } = await serve.finish();
      assert.equal(status.code, 0);
      const lines = stdout.trimEnd().split("\n");
      assert.equal(lines.length, 300);
      for (const line of lines) assert.match(line, / GET a\.txt OK [0-9]+ [0-9.]+ (miss|hit) - -$/);
    } finally {
      await serve.dispose();
    }
  });
});

Deno.test("mod.ts serve: the directory is watched for changes where FFI is allowed; otherwise, or with --no-change-watch, every request stats", async (t) => {
  const cases = [
    {
      name: "--allow-ffi",
      permissions: [...PERMISSIONS, "--allow-ffi"],
      flags: [],
      freshness: "watch",
    },
    { name: "no FFI permission", permissions: PERMISSIONS, flags: [], freshness: "stat" },
    {
      name: "--allow-ffi --no-change-watch",
      permissions: [...PERMISSIONS, "--allow-ffi"],
      flags: ["--no-change-watch"],
      freshness: "stat",
    },
  ];
  await withTempDir(async (root) => {
    await writeTree(`${root}/files`, { "a.txt": "a" });
    for (const { name, permissions, flags, freshness } of cases) {
      await t.step(name, async () => {
        const serve = await spawnServe(
          ["--port", "0", "--dir", `${root}/files`, "--cache-dir", `${root}/cache`, ...flags],
          root,
          permissions,
        );
        try {
          assert.ok(serve.port !== undefined, `no listening line: ${serve.lines.join("\n")}`);
          const client = await connect({ port: serve.port });
          try {
            assert.equal((await client.get("a.txt")).cache, "miss");
            assert.equal((await client.stats()).freshness, freshness);
          } finally {
            client.close();
          }
        } finally {
          await serve.dispose();
        }
      });
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
