/**
 * End-to-end tests of the client's download features, through the real
 * command line as a subprocess against a real server (or a fake one that
 * cuts a body short): batches over parallel connections, mirroring a tree,
 * resuming a `.part`, `-o -`, `--json` on every command, per-command
 * `--help`, and the progress line on a pseudo-terminal (`script`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../../client.ts";
import {
  assertOutput,
  cli,
  CLIENT,
  deadPort,
  MOD,
  mtimeOf,
  namesIn,
  type Outcome,
  PERMISSIONS,
  run,
  runCommand,
  summaryPattern,
  summarySource,
  withFakeServer,
  withTempDir,
} from "./cli_helpers.ts";
import { eventually, seededBytes, sha256, withServer } from "../helpers.ts";
import type { ServerHandle } from "../../server.ts";

/** A seeded binary file of 300 KiB. */
const BIG = seededBytes(300 * 1024, 42);
const BIG_SHA = sha256(BIG);
const HALF = 150 * 1024;

/** The escape character that starts terminal control sequences. */
const ESC = "\x1b";

/** A file's size, or -1 when there is none. */
async function sizeOf(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).size;
  } catch {
    return -1;
  }
}

/** How many GETs the server has answered (hits, misses and bypasses). */
async function gets(server: ServerHandle): Promise<number> {
  const stats = await server.stats();
  return stats.hits + stats.misses + stats.bypasses;
}

/** Every file and directory below `root`, relative, sorted; directories end in `/`. */
async function listTree(root: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(`${root}/${prefix}`)) {
    const path = prefix + entry.name;
    if (entry.isDirectory) found.push(`${path}/`, ...await listTree(root, `${path}/`));
    else found.push(path);
  }
  return found.sort();
}

/** stderr's lines, without the final newline. */
function linesOf(text: string): string[] {
  assert.ok(text.endsWith("\n"), `ends with a newline: ${JSON.stringify(text)}`);
  return text.slice(0, -1).split("\n");
}

/** The response a fake server sends for a download cut after `bytes`. */
function cutResponse(header: string, bytes: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(header + "\n");
  const response = new Uint8Array(head.length + bytes.length);
  response.set(head);
  response.set(bytes, head.length);
  return response;
}

Deno.test("get A B C: a batch, over --parallel connections, survives a failed file", async (t) => {
  const tree = { "data/big.bin": BIG, "docs/a.txt": "alpha\n", "docs/b.txt": "bravo\n" };
  await withServer(tree, {}, async ({ port, server }) => {
    const P = String(port);

    await t.step("--parallel 3 -o DIR: one missing file, the others saved, exit 1", async () => {
      await withTempDir(async (cwd) => {
        const before = (await server.stats()).connections.total;
        const out = await cli([
          "--port",
          P,
          "get",
          "docs/a.txt",
          "docs/missing.txt",
          "data/big.bin",
          "docs/b.txt",
          "--parallel",
          "3",
          "-o",
          "out",
        ], cwd);
        assert.equal(out.code, 1, out.stderr);
        assert.equal(out.stdout, "");
        assert.equal((await server.stats()).connections.total - before, 3, "three connections");
        assert.deepEqual(await listTree(cwd), ["out/", "out/a.txt", "out/b.txt", "out/big.bin"]);
        assert.equal(await Deno.readTextFile(`${cwd}/out/a.txt`), "alpha\n");
        assert.equal(await Deno.readTextFile(`${cwd}/out/b.txt`), "bravo\n");
        assert.equal(sha256(await Deno.readFile(`${cwd}/out/big.bin`)), BIG_SHA);
        const lines = linesOf(out.stderr);
        assert.equal(lines.length, 5, out.stderr);
        assert.ok(lines.includes("tcpcache: not found: docs/missing.txt"), out.stderr);
        for (const [dest, size] of [["out/a.txt", "6 B"], ["out/b.txt", "6 B"]]) {
          const pattern = new RegExp(`^${summarySource(dest, size, "miss")}$`);
          assert.equal(
            lines.filter((line) => pattern.test(line)).length,
            1,
            `${dest}: ${out.stderr}`,
          );
        }
        const big = new RegExp(`^${summarySource("out/big.bin", "300 KiB", "miss")}$`);
        assert.equal(lines.filter((line) => big.test(line)).length, 1, out.stderr);
        assert.match(lines[4], /^4 files: 3 saved, 1 failed \(300 KiB in [0-9.]+ s, .+\/s\)$/);
      });
    });

    await t.step("without --parallel: one connection, into the working directory", async () => {
      await withTempDir(async (cwd) => {
        const before = (await server.stats()).connections.total;
        const out = await cli(["--port", P, "get", "docs/a.txt", "docs/b.txt"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal((await server.stats()).connections.total - before, 1);
        assert.deepEqual(await listTree(cwd), ["a.txt", "b.txt"]);
        const lines = linesOf(out.stderr);
        assert.match(lines[0], new RegExp(`^${summarySource("a.txt", "6 B", "hit")}$`));
        assert.match(lines[1], new RegExp(`^${summarySource("b.txt", "6 B", "hit")}$`));
        assert.match(lines[2], /^2 files: 2 saved, 0 failed \(12 B in /);
        assert.equal(lines.length, 3);
      });
    });

    await t.step("--json: one document, every file with its status, in order", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(
          ["--port", P, "get", "docs/a.txt", "docs/missing.txt", "--json", "--parallel", "2"],
          cwd,
        );
        assert.equal(out.code, 1);
        assert.equal(out.stderr, "tcpcache: not found: docs/missing.txt\n", "errors only");
        assert.equal(linesOf(out.stdout).length, 1, "one line of JSON");
        const report = JSON.parse(out.stdout);
        assert.deepEqual(report, {
          files: [
            {
              path: "docs/a.txt",
              status: "saved",
              saved: "a.txt",
              size: 6,
              offset: 0,
              length: 6,
              mtime: report.files[0].mtime,
              cache: "hit",
              sha256: sha256("alpha\n"),
              verified: true,
            },
            {
              path: "docs/missing.txt",
              status: "failed",
              saved: "missing.txt",
              error: "not found: docs/missing.txt",
              code: 404,
            },
          ],
          saved: 1,
          skipped: 0,
          failed: 1,
        });
        assert.equal(typeof report.files[0].mtime, "number");
        assert.deepEqual(await listTree(cwd), ["a.txt"]);
      });
    });
  });

  await t.step("a broken connection fails its file; the next file gets a new one", async () => {
    const response = cutResponse("OK 1000 size=1000 offset=0 mtime=1700000000000", seededBytes(10));
    await withTempDir(async (cwd) => {
      const requests = await withFakeServer(response, async (port) => {
        const out = await cli(["--port", String(port), "get", "one.bin", "two.bin"], cwd);
        assert.equal(out.code, 3, out.stderr);
        const lines = linesOf(out.stderr);
        assert.match(lines[0], /^tcpcache: .*10 bytes kept in one\.bin\.part/);
        assert.match(lines[1], /^tcpcache: .*10 bytes kept in two\.bin\.part/);
        assert.match(lines[2], /^2 files: 0 saved, 2 failed/);
      });
      assert.deepEqual(requests, ["GET one.bin", "GET two.bin"], "one connection each");
      assert.deepEqual(await namesIn(cwd), ["one.bin.part", "two.bin.part"]);
    });
  });
});

Deno.test("get -r DIR mirrors a tree and skips what is already there", async (t) => {
  const tree = {
    "docs/a.txt": "alpha\n",
    "docs/sub/b.txt": "bravo\n",
    "docs/sub/deeper/big.bin": BIG,
    "other.txt": "not below docs\n",
  };
  const mirrored = [
    "out/",
    "out/docs/",
    "out/docs/a.txt",
    "out/docs/empty/",
    "out/docs/sub/",
    "out/docs/sub/b.txt",
    "out/docs/sub/deeper/",
    "out/docs/sub/deeper/big.bin",
  ];
  await withServer(tree, {}, async ({ port, server, dir }) => {
    const P = String(port);
    await Deno.mkdir(`${dir}/docs/empty`);
    await withTempDir(async (cwd) => {
      await t.step("the first run fetches every file into OUT/DIR/...", async () => {
        const out = await cli(["--port", P, "get", "-r", "docs", "-o", "out"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.deepEqual(await listTree(cwd), mirrored);
        assert.equal(await Deno.readTextFile(`${cwd}/out/docs/a.txt`), "alpha\n");
        assert.equal(await Deno.readTextFile(`${cwd}/out/docs/sub/b.txt`), "bravo\n");
        assert.equal(sha256(await Deno.readFile(`${cwd}/out/docs/sub/deeper/big.bin`)), BIG_SHA);
        const lines = linesOf(out.stderr);
        assert.match(lines[0], new RegExp(`^${summarySource("out/docs/a.txt", "6 B", "miss")}$`));
        assert.match(
          lines[1],
          new RegExp(`^${summarySource("out/docs/sub/b.txt", "6 B", "miss")}$`),
        );
        assert.match(
          lines[2],
          new RegExp(`^${summarySource("out/docs/sub/deeper/big.bin", "300 KiB", "miss")}$`),
        );
        assert.match(lines[3], /^mirrored docs into out\/docs: 3 saved, 0 failed \(300 KiB in /);
        assert.equal(lines.length, 4);
      });

      const mtimes = async () =>
        await Promise.all(
          ["a.txt", "sub/b.txt", "sub/deeper/big.bin"].map((f) => mtimeOf(`${cwd}/out/docs/${f}`)),
        );
      const before = await mtimes();

      await t.step("a second run fetches nothing: no GET, every file untouched", async () => {
        const getsBefore = await gets(server);
        const out = await cli(["--port", P, "get", "-r", "docs", "-o", "out"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(await gets(server), getsBefore, "the server answered no GET");
        assert.deepEqual(await mtimes(), before);
        assert.deepEqual(await listTree(cwd), mirrored);
        assert.match(
          out.stderr,
          /^mirrored docs into out\/docs: 0 saved, 3 up to date, 0 failed \(nothing transferred, [0-9.]+ s\)\n$/,
        );
      });

      await t.step("a changed file (same size) and a deleted one are fetched again", async () => {
        await Deno.writeTextFile(`${cwd}/out/docs/a.txt`, "ALPHA\n");
        await Deno.remove(`${cwd}/out/docs/sub/b.txt`);
        const getsBefore = await gets(server);
        const out = await cli(["--port", P, "get", "-r", "docs", "-o", "out", "--json"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stderr, "");
        assert.equal((await gets(server)) - getsBefore, 2, "two GETs");
        assert.equal(await Deno.readTextFile(`${cwd}/out/docs/a.txt`), "alpha\n");
        assert.equal(await Deno.readTextFile(`${cwd}/out/docs/sub/b.txt`), "bravo\n");
        assert.equal(await mtimeOf(`${cwd}/out/docs/sub/deeper/big.bin`), before[2]);
        const report = JSON.parse(out.stdout);
        assert.equal(report.dir, "docs");
        assert.equal(report.into, "out/docs");
        assert.deepEqual(
          report.files.map((f: Record<string, unknown>) => [f.path, f.status, f.saved, f.cache]),
          [
            ["docs/a.txt", "saved", "out/docs/a.txt", "hit"],
            ["docs/sub/b.txt", "saved", "out/docs/sub/b.txt", "hit"],
            ["docs/sub/deeper/big.bin", "skipped", "out/docs/sub/deeper/big.bin", undefined],
          ],
        );
        assert.deepEqual(report.files[2], {
          path: "docs/sub/deeper/big.bin",
          status: "skipped",
          saved: "out/docs/sub/deeper/big.bin",
          size: BIG.length,
          sha256: BIG_SHA,
        });
        assert.deepEqual([report.saved, report.skipped, report.failed], [2, 1, 0]);
      });

      await t.step("get -r / mirrors the whole served directory into the working one", async () => {
        await withTempDir(async (elsewhere) => {
          const out = await cli(["--port", P, "get", "-r", "/", "-q"], elsewhere);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stderr, "");
          assert.deepEqual(await listTree(elsewhere), [
            "docs/",
            "docs/a.txt",
            "docs/empty/",
            "docs/sub/",
            "docs/sub/b.txt",
            "docs/sub/deeper/",
            "docs/sub/deeper/big.bin",
            "other.txt",
          ]);
        });
      });

      await t.step("a directory the server does not have: exit 1, nothing made", async () => {
        await withTempDir(async (elsewhere) => {
          const out = await cli(["--port", P, "get", "-r", "nope"], elsewhere);
          assert.equal(out.code, 1);
          assert.match(out.stderr, /^tcpcache: .*nope/);
          assert.deepEqual(await namesIn(elsewhere), []);
        });
      });
    });
  });
});

Deno.test("get -r: a file the server has no sha256 for is fetched on every run", async () => {
  // 100 KiB of cache: big.bin (300 KiB) is never cached, so STAT has no sha256 for it.
  const tree = { "docs/a.txt": "alpha\n", "docs/big.bin": BIG };
  await withServer(tree, { cacheSize: 100 * 1024 }, async ({ port, server }) => {
    await withTempDir(async (cwd) => {
      const args = ["--port", String(port), "get", "-r", "docs"];
      const first = await cli(args, cwd);
      assert.equal(first.code, 0, first.stderr);
      assert.match(
        linesOf(first.stderr)[1],
        new RegExp(`^${summarySource("docs/big.bin", "300 KiB", "bypass", { verified: false })}$`),
      );
      const aMtime = await mtimeOf(`${cwd}/docs/a.txt`);
      const getsBefore = await gets(server);
      const second = await cli(args, cwd);
      assert.equal(second.code, 0, second.stderr);
      assert.equal((await gets(server)) - getsBefore, 1, "only big.bin");
      assert.equal(await mtimeOf(`${cwd}/docs/a.txt`), aMtime);
      assert.equal(sha256(await Deno.readFile(`${cwd}/docs/big.bin`)), BIG_SHA);
      assert.match(linesOf(second.stderr)[1], /^mirrored docs into docs: 1 saved, 1 up to date/);
    });
  });
});

Deno.test("get --continue finishes NAME.part with a range request", async (t) => {
  await withServer({ "data/big.bin": BIG }, {}, async ({ port, server, dir }) => {
    const P = String(port);
    const mtime = await mtimeOf(`${dir}/data/big.bin`);
    const header = `OK ${BIG.length} size=${BIG.length} offset=0 mtime=${mtime} cache=miss ` +
      `sha256=${BIG_SHA}`;

    await t.step("a download cut in the middle, then continued and verified", async () => {
      await withTempDir(async (cwd) => {
        await withFakeServer(cutResponse(header, BIG.subarray(0, HALF)), async (fake) => {
          const out = await cli(["--port", String(fake), "get", "data/big.bin"], cwd);
          assert.equal(out.code, 3, out.stderr);
          assert.match(
            out.stderr,
            /^tcpcache: .*153600 bytes kept in big\.bin\.part \(get --continue finishes it\)\n$/,
          );
        });
        assert.deepEqual(await namesIn(cwd), ["big.bin.part"]);
        assert.deepEqual(await Deno.readFile(`${cwd}/big.bin.part`), BIG.subarray(0, HALF));

        const client = await connect({ port });
        try {
          assert.equal((await client.get("data/big.bin")).cache, "miss", "now cached");
        } finally {
          client.close();
        }
        const sentBefore = (await server.stats()).bytesSent;
        const out = await cli(["--port", P, "get", "data/big.bin", "--continue"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(
          out.stderr,
          summaryPattern("big.bin", "300 KiB", "hit", { resumedAt: "150 KiB" }),
        );
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), BIG_SHA);
        const sent = (await server.stats()).bytesSent - sentBefore;
        assert.ok(sent > BIG.length - HALF && sent < BIG.length - HALF + 1000, `sent ${sent}`);
      });
    });

    const wrong = seededBytes(HALF, 99);
    const whole = new Uint8Array(BIG.length);
    whole.set(wrong);
    whole.set(BIG.subarray(HALF), HALF);
    const discarded: { name: string; part: Uint8Array; flag: string; stderr: string }[] = [
      {
        name: "a .part with wrong bytes: sha256 mismatch, discarded, exit 1",
        part: wrong,
        flag: "-c",
        stderr: `tcpcache: sha256 mismatch for data/big.bin: server said ${BIG_SHA}, ` +
          `received ${sha256(whole)}; big.bin.part discarded\n`,
      },
      {
        name: "a .part longer than the file is discarded, exit 1",
        part: seededBytes(BIG.length + 1, 5),
        flag: "--continue",
        stderr: `tcpcache: big.bin.part (${BIG.length + 1} bytes) is longer than data/big.bin ` +
          "on the server; discarded\n",
      },
    ];
    for (const { name, part, flag, stderr } of discarded) {
      await t.step(name, async () => {
        await withTempDir(async (cwd) => {
          await Deno.writeFile(`${cwd}/big.bin.part`, part);
          const out = await cli(["--port", P, "get", "data/big.bin", flag], cwd);
          assert.equal(out.code, 1);
          assert.equal(out.stderr, stderr);
          assert.deepEqual(await namesIn(cwd), []);
        });
      });
    }

    await t.step("a complete .part is verified and renamed; only a header is sent", async () => {
      await withTempDir(async (cwd) => {
        await Deno.writeFile(`${cwd}/big.bin.part`, BIG);
        const sentBefore = (await server.stats()).bytesSent;
        const out = await cli(["--port", P, "get", "data/big.bin", "--continue"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(
          out.stderr,
          summaryPattern("big.bin", "300 KiB", "hit", { resumedAt: "300 KiB" }),
        );
        assert.ok((await server.stats()).bytesSent - sentBefore < 1000);
        assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), BIG_SHA);
      });
    });

    await t.step("--continue without a .part is a whole download", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "data/big.bin", "--continue", "-o", "x"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(out.stderr, summaryPattern("x", "300 KiB", "hit"));
        assert.deepEqual(await namesIn(cwd), ["x"]);
      });
    });

    await t.step("a continued download cut again keeps the longer .part", async () => {
      await withTempDir(async (cwd) => {
        await Deno.writeFile(`${cwd}/big.bin.part`, BIG.subarray(0, HALF));
        const rangeHeader = `OK ${BIG.length - HALF} size=${BIG.length} offset=${HALF} ` +
          `mtime=${mtime} cache=hit sha256=${BIG_SHA}`;
        const more = BIG.subarray(HALF, HALF + 10 * 1024);
        const requests = await withFakeServer(cutResponse(rangeHeader, more), async (fake) => {
          const out = await cli(["--port", String(fake), "get", "data/big.bin", "-c"], cwd);
          assert.equal(out.code, 3, out.stderr);
          assert.match(out.stderr, /163840 bytes kept in big\.bin\.part/);
        });
        assert.deepEqual(requests, [`GET data/big.bin ${HALF}`]);
        assert.deepEqual(
          await Deno.readFile(`${cwd}/big.bin.part`),
          BIG.subarray(0, HALF + 10 * 1024),
        );
      });
    });
  });
});

Deno.test("get --continue when the server has no sha256 for the file", async (t) => {
  // 100 KiB of cache: big.bin is never cached, so neither the range nor STAT carries a sha256.
  await withServer({ "data/big.bin": BIG }, { cacheSize: 100 * 1024 }, async (context) => {
    const { port, server, dir } = context;
    const mtime = await mtimeOf(`${dir}/data/big.bin`);
    const header = `OK ${BIG.length} size=${BIG.length} offset=0 mtime=${mtime} cache=bypass`;

    await t.step("a .part left by an interrupted download is accepted, unverified", async () => {
      await withTempDir(async (cwd) => {
        await withFakeServer(cutResponse(header, BIG.subarray(0, HALF)), async (fake) => {
          const out = await cli(["--port", String(fake), "get", "data/big.bin"], cwd);
          assert.equal(out.code, 3, out.stderr);
        });
        assert.equal(await mtimeOf(`${cwd}/big.bin.part`), mtime, "stamped with the mtime");
        const requestsBefore = (await server.stats()).requests;
        const out = await cli(["--port", String(port), "get", "data/big.bin", "-c"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.equal((await server.stats()).requests - requestsBefore, 2, "GET and STAT");
        assert.match(
          out.stderr,
          summaryPattern("big.bin", "300 KiB", "bypass", { resumedAt: "150 KiB", verified: false }),
        );
        assert.deepEqual(await namesIn(cwd), ["big.bin"]);
        assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), BIG_SHA);
      });
    });

    await t.step("Ctrl-C keeps the .part, stamped, and --continue finishes it", async () => {
      await withTempDir(async (cwd) => {
        await withFakeServer(cutResponse(header, BIG.subarray(0, HALF)), async (fake) => {
          const child = new Deno.Command(Deno.execPath(), {
            args: ["run", ...PERMISSIONS, CLIENT, "--port", String(fake), "get", "data/big.bin"],
            cwd,
            env: { NO_COLOR: "1" },
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          const output = child.output();
          // Wait for the bytes to reach the disk; the server then sends nothing more.
          await eventually(async () => await sizeOf(`${cwd}/big.bin.part`) === HALF, "half");
          child.kill("SIGINT");
          const { code, stdout, stderr } = await output;
          const decoder = new TextDecoder();
          assert.equal(code, 130, decoder.decode(stderr));
          assert.equal(decoder.decode(stdout), "");
          assert.equal(
            decoder.decode(stderr),
            "tcpcache: interrupted; 153600 bytes kept in big.bin.part (get --continue finishes it)\n",
          );
        }, { hold: true });
        assert.deepEqual(await namesIn(cwd), ["big.bin.part"]);
        assert.equal(await mtimeOf(`${cwd}/big.bin.part`), mtime, "stamped with the mtime");
        const out = await cli(["--port", String(port), "get", "data/big.bin", "-c"], cwd);
        assert.equal(out.code, 0, out.stderr);
        assert.match(
          out.stderr,
          summaryPattern("big.bin", "300 KiB", "bypass", { resumedAt: "150 KiB", verified: false }),
        );
        assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), BIG_SHA);
      });
    });

    await t.step("a .part of unknown origin cannot be verified: discarded, exit 1", async () => {
      await withTempDir(async (cwd) => {
        await Deno.writeFile(`${cwd}/big.bin.part`, BIG.subarray(0, HALF));
        const out = await cli(["--port", String(port), "get", "data/big.bin", "-c"], cwd);
        assert.equal(out.code, 1);
        assert.equal(
          out.stderr,
          "tcpcache: cannot verify big.bin.part: the server has no sha256 for data/big.bin " +
            "(it is not cached) and the partial file is not from an interrupted download of " +
            "this version; discarded\n",
        );
        assert.deepEqual(await namesIn(cwd), []);
      });
    });
  });
});

Deno.test("get PATH -o - writes exactly the file's bytes to stdout", async (t) => {
  await withServer({ "data/big.bin": BIG }, {}, async ({ port }) => {
    const P = String(port);
    const cases: {
      name: string;
      args: string[];
      code: number;
      stdout: Uint8Array;
      stderr: string | RegExp;
    }[] = [
      {
        name: "the bytes on stdout, the summary on stderr",
        args: ["get", "data/big.bin", "-o", "-"],
        code: 0,
        stdout: BIG,
        stderr:
          /^wrote data\/big\.bin to stdout \(300 KiB in [0-9.]+ s, [0-9.]+ \w+\/s, miss, verified sha256\)\n$/,
      },
      {
        name: "--quiet: the bytes and nothing else",
        args: ["get", "data/big.bin", "--output=-", "-q"],
        code: 0,
        stdout: BIG,
        stderr: "",
      },
      {
        name: "a missing file: nothing on stdout, exit 1",
        args: ["get", "nope.bin", "-o", "-"],
        code: 1,
        stdout: new Uint8Array(),
        stderr: "tcpcache: not found: nope.bin\n",
      },
    ];
    await withTempDir(async (cwd) => {
      for (const { name, args, code, stdout, stderr } of cases) {
        await t.step(name, async () => {
          const out = await cli(["--port", P, ...args], cwd);
          assert.equal(out.code, code, out.stderr);
          assert.equal(out.stdoutBytes.length, stdout.length);
          assert.equal(sha256(out.stdoutBytes), sha256(stdout));
          assertOutput(out.stderr, stderr);
        });
      }
      assert.deepEqual(await namesIn(cwd), [], "no file written");
    });
  });
});

Deno.test("--json prints machine-readable output on every command", async (t) => {
  const tree = { "docs/a.txt": "alpha\n", "b.bin": seededBytes(2000, 3) };
  await withServer(tree, {}, async ({ port }) => {
    const P = String(port);
    const client = await connect({ port });
    try {
      await client.get("docs/a.txt");
      await withTempDir(async (cwd) => {
        const json = async (args: string[]) => {
          const out = await cli(["--port", P, ...args, "--json"], cwd);
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stderr, "");
          assert.equal(linesOf(out.stdout).length, 1, "one line");
          return JSON.parse(out.stdout);
        };
        // In order: stats counts the one GET made before, not get's.
        const cases: [args: string[], check: (printed: Record<string, unknown>) => unknown][] = [
          [["list"], async (printed) => assert.deepEqual(printed, await client.list())],
          [["files"], async (printed) => assert.deepEqual(printed, await client.files())],
          [["files", "docs"], async (printed) => {
            assert.deepEqual(printed, await client.files("docs"));
          }],
          [["stat", "docs/a.txt"], async (printed) => {
            assert.deepEqual(printed, await client.stat("docs/a.txt"));
            assert.equal(printed.sha256, sha256("alpha\n"));
          }],
          [["stat", "b.bin"], (printed) => assert.equal(printed.sha256, null)],
          [["stats"], async (printed) => {
            const direct = await client.stats();
            assert.deepEqual(Object.keys(printed).sort(), Object.keys(direct).sort());
            assert.equal(printed.version, direct.version);
            assert.equal((printed.hits as number) + (printed.misses as number), 1);
          }],
          [["ping"], (printed) => {
            assert.deepEqual(Object.keys(printed), ["host", "port", "ms"]);
            assert.equal(printed.host, "127.0.0.1");
            assert.equal(printed.port, port);
            assert.ok(typeof printed.ms === "number" && printed.ms >= 0);
          }],
          [["get", "docs/a.txt"], (printed) => {
            assert.equal(printed.status, "saved");
            assert.equal(printed.saved, "a.txt");
            assert.equal(printed.verified, true);
          }],
        ];
        for (const [args, check] of cases) {
          await t.step(args.join(" "), async () => {
            await check(await json(args));
          });
        }
      });
    } finally {
      client.close();
    }
  });
});

Deno.test("files of a directory longer than a page: every entry, the pages gathered", async () => {
  await withServer({}, {}, async ({ port, dir }) => {
    await Deno.mkdir(`${dir}/many`);
    const names = Array.from({ length: 10_005 }, (_, i) => `n${String(i).padStart(5, "0")}`);
    for (const name of names) Deno.writeFileSync(`${dir}/many/${name}`, new Uint8Array());
    await withTempDir(async (cwd) => {
      const json = await cli(["--port", String(port), "files", "many", "--json"], cwd);
      assert.equal(json.code, 0, json.stderr);
      const listing = JSON.parse(json.stdout);
      assert.deepEqual(Object.keys(listing), ["path", "entries"]);
      assert.deepEqual(listing.entries.map((entry: { name: string }) => entry.name), names);
      const table = await cli(["--port", String(port), "files", "many"], cwd);
      assert.equal(table.code, 0, table.stderr);
      assert.equal(
        linesOf(table.stdout).length,
        2 + names.length,
        "the title, the header, a row each",
      );
      assert.match(table.stdout, / n10004\n$/);
    });
  });
});

Deno.test("--help for every command, with an example, from client.ts and mod.ts", async (t) => {
  await withTempDir(async (cwd) => {
    // Nothing listens there: help must not connect.
    const env = { TCPCACHE_PORT: String(deadPort()) };
    for (const command of ["get", "list", "files", "stat", "stats", "ping"]) {
      await t.step(command, async () => {
        const outcomes: Outcome[] = await Promise.all([
          cli([command, "--help"], cwd, env),
          run(MOD, [command, "--help"], cwd, env),
          cli(["-h", command], cwd, env),
        ]);
        for (const out of outcomes) {
          assert.equal(out.code, 0, out.stderr);
          assert.equal(out.stderr, "");
          assert.equal(out.stdout, outcomes[0].stdout);
        }
        const help = outcomes[0].stdout;
        assert.ok(help.startsWith(`tcpcache ${command}: `), help);
        assert.match(help, new RegExp(`^Usage:(\\n)? +tcpcache ${command}\\b`, "m"));
        assert.match(help, new RegExp(`^Examples?:\\n(  .*\\n)*  .*tcpcache ${command}\\b`, "m"));
      });
    }
    await t.step("the general help names every command", async () => {
      const out = await cli(["--help"], cwd, env);
      assert.equal(out.code, 0);
      for (const command of ["get", "list", "files", "stat", "stats", "ping"]) {
        assert.match(out.stdout, new RegExp(`^  ${command}\\b`, "m"));
      }
      assert.match(out.stdout, /COMMAND --help/);
    });
    await t.step("get --help tells what happens without a sha256 from the server", async () => {
      const out = await cli(["get", "--help"], cwd, env);
      for (const topic of ["--continue", "--parallel", "-r", "-o -", "NAME.part", "sha256"]) {
        assert.ok(out.stdout.includes(topic), topic);
      }
      assert.match(out.stdout, /saved unverified/);
      assert.match(out.stdout, /accepted unverified only if NAME\.part still carries/);
    });
  });
});

Deno.test("the progress line: live on a terminal, absent otherwise", async (t) => {
  const SIZE = 2 * 1024 * 1024;
  const data = seededBytes(SIZE, 8);
  await withServer({ "data/big.bin": data }, {}, async ({ port }) => {
    const P = String(port);
    // Every chunk redraws, so that redraws happen however fast the transfer is.
    const env = { TCPCACHE_PROGRESS_INTERVAL_MS: "0" };

    /** Runs the client on a pseudo-terminal (util-linux `script`); resolves to what it showed. */
    function onTerminal(args: string[], cwd: string): Promise<Outcome> {
      const quote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;
      const command = [Deno.execPath(), "run", ...PERMISSIONS, CLIENT, ...args].map(quote);
      return runCommand("script", ["-q", "-e", "-c", command.join(" "), "/dev/null"], cwd, env);
    }

    await t.step(
      "on a terminal: redrawn in place with percent and rate, then cleared",
      async () => {
        await withTempDir(async (cwd) => {
          const out = await onTerminal(["--port", P, "get", "data/big.bin"], cwd);
          assert.equal(out.code, 0, out.stdout);
          assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), sha256(data));
          const shown = out.stdout;
          const draws = [
            ...shown.matchAll(
              new RegExp(
                "\\rbig\\.bin {2}[0-9.]+ (B|KiB|MiB) / 2\\.0 MiB +([0-9]+)% {2}" +
                  `[0-9.]+ (B|KiB|MiB)/s {2}ETA [0-9]+ s${ESC}\\[K`,
                "g",
              ),
            ),
          ];
          assert.ok(draws.length >= 2, `redrawn: ${JSON.stringify(shown.slice(0, 300))}`);
          assert.ok(draws.some((draw) => Number(draw[2]) < 100), "a line before the end");
          const cleared = shown.lastIndexOf("\r\x1b[K");
          assert.ok(cleared > draws.at(-1)!.index!, "cleared after the last redraw");
          const after = shown.slice(cleared + "\r\x1b[K".length);
          // The terminal turns each LF into CR LF.
          assert.match(
            after,
            new RegExp(`^${summarySource("big.bin", "2.0 MiB", "miss")}\\r\\n$`),
          );
        });
      },
    );

    await t.step("--quiet on a terminal: nothing at all", async () => {
      await withTempDir(async (cwd) => {
        const out = await onTerminal(["--port", P, "get", "data/big.bin", "-q"], cwd);
        assert.equal(out.code, 0, out.stdout);
        assert.equal(out.stdout, "");
        assert.equal(sha256(await Deno.readFile(`${cwd}/big.bin`)), sha256(data));
      });
    });

    await t.step("without a terminal: only the summary line on stderr", async () => {
      await withTempDir(async (cwd) => {
        const out = await cli(["--port", P, "get", "data/big.bin"], cwd, env);
        assert.equal(out.code, 0, out.stderr);
        assert.equal(out.stdout, "");
        assert.match(out.stderr, summaryPattern("big.bin", "2.0 MiB", "hit"));
      });
    });
  });
});
