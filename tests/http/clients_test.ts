/**
 * Real HTTP clients against the HTTP front end: curl, wget, aria2c, Python's
 * `http.client` and promtool, each run as the real binary on 127.0.0.1 and
 * judged by what it leaves behind (bytes by sha256, statuses, files on disk)
 * and by what the server saw (its `onRequest` records).
 *
 * A client that is not installed fails its test where `CI` is set (`.ci/run`
 * installs them all) and is skipped elsewhere, with the reason in the test's
 * name. Every client runs with a 30 s limit, without proxies and without its
 * user configuration files.
 */

import assert from "node:assert/strict";
import type { RequestRecord, ServerStats } from "../../server.ts";
import { eventually, seededBytes, sha256, type Tree, which, withServer } from "../helpers.ts";

const MiB = 1024 * 1024;
const IN_CI = Deno.env.get("CI") !== undefined;
const CLIENT_TIMEOUT_MS = 30_000;

const hello = "hello from tcpcache over HTTP\n";
const big = seededBytes(3 * MiB, 21);
/** The tree wget mirrors: below `/site/`, nothing else. */
const site: Record<string, Uint8Array> = {
  "site/a.txt": new TextEncoder().encode("first file of the mirror\n"),
  "site/b b.txt": new TextEncoder().encode("a name with a space\n"),
  "site/sub/c.json": new TextEncoder().encode('{"c":3}\n'),
  "site/sub/deep/d.bin": seededBytes(200 * 1024, 22),
  "site/sub/deep/e.bin": seededBytes(1, 23),
};
const tree: Tree = { "hello.txt": hello, "big.bin": big, ...site };

// ---------------------------------------------------------------- the clients

const CURL = which("curl");
const WGET = which("wget");
const ARIA2C = which("aria2c");
const PYTHON = which("python3");
const PROMTOOL = which("promtool");

/** Debian's package for each binary, for the messages. */
const PACKAGES: Record<string, string> = {
  curl: "curl",
  wget: "wget",
  aria2c: "aria2",
  python3: "python3",
  promtool: "prometheus",
};

/**
 * Registers a test that needs `binaries`: skipped (with the reason in its
 * name) where one is missing, or failed where `CI` is set, since CI installs
 * them.
 */
function clientTest(
  name: string,
  binaries: Record<string, string | undefined>,
  fn: () => Promise<void>,
): void {
  const missing = Object.entries(binaries).filter(([, path]) => path === undefined)
    .map(([binary]) => `${binary} (Debian package ${PACKAGES[binary]})`);
  if (missing.length === 0) {
    Deno.test(name, fn);
  } else if (IN_CI) {
    Deno.test(name, () => {
      assert.fail(`not installed: ${missing.join(", ")}; .ci/run installs it`);
    });
  } else {
    Deno.test({ name: `${name} (skipped: ${missing.join(", ")} not found)`, ignore: true, fn });
  }
}

/** The environment for clients: ours without proxies (every request goes to 127.0.0.1). */
function clientEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const key of Object.keys(env)) {
    if (/_proxy$/i.test(key) || /^(CURL_HOME|WGETRC|SYSTEM_WGETRC)$/.test(key)) delete env[key];
  }
  return env;
}

/** What a client process did. */
interface Run {
  code: number;
  stdout: Uint8Array;
  stderr: string;
  /** `stdout` as text. */
  text: string;
}

/**
 * Runs `binary` with `args` (in `cwd`, with `stdin` when given), killed
 * after {@linkcode CLIENT_TIMEOUT_MS}; a killed client fails the test with
 * what it said.
 */
async function run(
  binary: string,
  args: string[],
  options: { cwd?: string; stdin?: Uint8Array } = {},
): Promise<Run> {
  const child = new Deno.Command(binary, {
    args,
    cwd: options.cwd,
    env: clientEnv(),
    clearEnv: true,
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // it ended meanwhile
    }
  }, CLIENT_TIMEOUT_MS);
  try {
    if (options.stdin) {
      const writer = child.stdin.getWriter();
      await writer.write(options.stdin).catch(() => {}); // a client that exits early
      await writer.close().catch(() => {});
    }
    const output = await child.output();
    const stderr = new TextDecoder().decode(output.stderr);
    const result = {
      code: output.code,
      stdout: output.stdout,
      stderr,
      text: new TextDecoder().decode(output.stdout),
    };
    assert.ok(
      !timedOut,
      `${binary} ${args.join(" ")} was killed after ${CLIENT_TIMEOUT_MS} ms:\n${stderr}`,
    );
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts a client exited 0, showing what it said otherwise. */
function assertSuccess(run: Run, what: string): void {
  assert.equal(run.code, 0, `${what} exited ${run.code}:\n${run.stderr}\n${run.text}`);
}

// ---------------------------------------------------------------- the server

/** A running server over {@linkcode tree}, with what it logged. */
interface Fixture {
  /** `http://127.0.0.1:PORT` */
  base: string;
  /** The HTTP port. */
  port: number;
  /** Every request's record, in the order they completed. */
  records: RequestRecord[];
  /** The HTTP requests' records. */
  http(): RequestRecord[];
  stats(): Promise<ServerStats>;
  /** A fresh temporary directory for a client's output, removed afterwards. */
  workDir: string;
}

async function withFixture(test: (fixture: Fixture) => Promise<void>): Promise<void> {
  const records: RequestRecord[] = [];
  await withServer(tree, {
    httpPort: 0,
    cacheSize: 16 * MiB,
    onRequest: (record) => records.push(record),
  }, async (server) => {
    const port = server.server.httpAddr!.port;
    const workDir = await Deno.makeTempDir({ prefix: "tcpcache-clients-" });
    try {
      await test({
        base: `http://127.0.0.1:${port}`,
        port,
        records,
        http: () => records.filter((record) => record.protocol === "http"),
        stats: () => server.server.stats(),
        workDir,
      });
      assert.deepEqual(server.errors, [], "the server reported no problem");
    } finally {
      await Deno.remove(workDir, { recursive: true });
    }
  });
}

/** The request path of a record, as the client sent it, with a leading slash. */
function pathOf(record: RequestRecord): string {
  const path = record.path ?? "";
  return path.startsWith("/") ? path : `/${path}`;
}

/** The client port of a record (`host:port`). */
function clientPort(record: RequestRecord): string {
  return record.client.slice(record.client.lastIndexOf(":") + 1);
}

/** The status code and headers of each response in an HTTP header dump, in order. */
function responses(dump: string): { statusLine: string; status: number; headers: Headers }[] {
  return dump.split(/\r?\n\r?\n/).filter((block) => block.trim() !== "").map((block) => {
    const [statusLine, ...lines] = block.trim().split(/\r?\n/);
    const headers = new Headers();
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    return { statusLine, status: Number(statusLine.split(" ")[1]), headers };
  });
}

/**
 * Sends `request` on a fresh socket and reads until the server closes it,
 * for at most 10 s; `closed` says whether it did.
 */
async function readUntilClosed(
  port: string,
  request: string,
): Promise<{ closed: boolean; text: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
  let closed = false;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, 10_000);
  const chunks: Uint8Array[] = [];
  try {
    await conn.write(new TextEncoder().encode(request));
    const buffer = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) {
        closed = true;
        break;
      }
      chunks.push(buffer.slice(0, n));
    }
  } catch {
    // closed by our timer (not by the server), or reset
  } finally {
    clearTimeout(timer);
    if (!timedOut) conn.close();
  }
  return { closed, text: new TextDecoder().decode(concat(chunks)) };
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

// ---------------------------------------------------------------- curl

/** curl without `~/.curlrc` (`-q` must come first), silent but for errors. */
function curl(args: string[], cwd?: string): Promise<Run> {
  return run(CURL!, ["-q", "-sS", "--noproxy", "*", "--max-time", "25", ...args], { cwd });
}

clientTest(
  "curl: whole files, a 3 MiB one and a text one, byte for byte",
  { curl: CURL },
  async () => {
    await withFixture(async ({ base, workDir }) => {
      for (const [path, bytes] of [["/big.bin", big], ["/hello.txt", hello]] as const) {
        const out = `${workDir}/out`;
        const got = await curl(["--fail", "-D", `${workDir}/headers`, "-o", out, base + path]);
        assertSuccess(got, `curl ${path}`);
        const [response] = responses(await Deno.readTextFile(`${workDir}/headers`));
        assert.equal(response.status, 200);
        assert.equal(
          response.headers.get("content-length"),
          String(typeof bytes === "string" ? new TextEncoder().encode(bytes).length : bytes.length),
        );
        assert.equal(sha256(await Deno.readFile(out)), sha256(bytes), path);
      }
    });
  },
);

clientTest(
  "curl -C -: resumes a partial file with a range request (206)",
  { curl: CURL },
  async () => {
    await withFixture(async ({ base, workDir, http }) => {
      const have = MiB + 12_345;
      const out = `${workDir}/big.bin`;
      await Deno.writeFile(out, big.subarray(0, have));
      const got = await curl([
        "--fail",
        "-C",
        "-",
        "-D",
        `${workDir}/headers`,
        "-o",
        out,
        `${base}/big.bin`,
      ]);
      assertSuccess(got, "curl -C -");
      assert.equal(sha256(await Deno.readFile(out)), sha256(big), "the resumed file is whole");
      const [response] = responses(await Deno.readTextFile(`${workDir}/headers`));
      assert.equal(response.status, 206, response.statusLine);
      assert.equal(
        response.headers.get("content-range"),
        `bytes ${have}-${big.length - 1}/${big.length}`,
      );
      assert.equal(response.headers.get("content-length"), String(big.length - have));
      const requests = http().filter((record) => pathOf(record) === "/big.bin");
      assert.deepEqual(requests.map((record) => [record.command, record.status]), [["GET", 206]]);

      // Again, with the file whole: 416 with the size, which curl takes as "nothing to do".
      const again = await curl([
        "-C",
        "-",
        "-D",
        `${workDir}/headers`,
        "-o",
        out,
        `${base}/big.bin`,
      ]);
      assertSuccess(again, "curl -C - of a whole file");
      const [complete] = responses(await Deno.readTextFile(`${workDir}/headers`));
      assert.equal(complete.status, 416, complete.statusLine);
      assert.equal(complete.headers.get("content-range"), `bytes */${big.length}`);
      assert.equal(
        sha256(await Deno.readFile(out)),
        sha256(big),
        "the whole file is left as it was",
      );
    });
  },
);

clientTest(
  "curl --http1.0: a whole file and generated pages, no chunked coding, the connection closes",
  { curl: CURL },
  async () => {
    await withFixture(async ({ base, workDir, http, stats }) => {
      // A file, a directory listing and the metrics: the last two are generated, so their
      // length is not the file's. An HTTP/1.0 client cannot take chunked coding.
      for (const path of ["/hello.txt", "/site/", "/-/metrics"]) {
        const out = `${workDir}/out`;
        const got = await curl([
          "--http1.0",
          "-v",
          "--fail",
          "-D",
          `${workDir}/headers`,
          "-o",
          out,
          base + path,
        ]);
        assertSuccess(got, `curl --http1.0 ${path}`);
        const [response] = responses(await Deno.readTextFile(`${workDir}/headers`));
        assert.match(response.statusLine, /^HTTP\/1\.[01] 200 /, path);
        assert.equal(response.headers.get("transfer-encoding"), null, `${path}: no chunked coding`);
        const body = await Deno.readFile(out);
        const length = response.headers.get("content-length");
        if (length !== null) assert.equal(Number(length), body.length, path);
        if (path === "/hello.txt") assert.equal(new TextDecoder().decode(body), hello);
        else assert.ok(body.length > 0, `${path} has a body`);
        // curl keeps no connection that the server did not offer to keep.
        assert.match(got.stderr, /Closing connection/, `${path}: ${got.stderr}`);
      }
      assert.deepEqual(http().map((record) => record.status), [200, 200, 200]);
      await eventually(
        async () => (await stats()).protocols.http.connections === 0,
        "no HTTP connection open",
      );

      // curl closes an HTTP/1.0 connection itself, so it cannot show that the server does
      // (RFC 9112 §9.3: without keep-alive, an HTTP/1.0 connection closes after the response).
      // The same request on a socket that stays open on our side: the server must end it.
      const answer = await readUntilClosed(
        new URL(base).port,
        "GET /hello.txt HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
      );
      assert.ok(answer.closed, `the server closed the HTTP/1.0 connection:\n${answer.text}`);
      assert.match(answer.text, /^HTTP\/1\.[01] 200 /);
      assert.ok(answer.text.endsWith(`\r\n\r\n${hello}`), answer.text);
    });
  },
);

clientTest("curl -I: HEAD gives the file's headers and no body", { curl: CURL }, async () => {
  await withFixture(async ({ base, http }) => {
    for (const [path, size] of [["/big.bin", big.length], ["/hello.txt", hello.length]] as const) {
      const got = await curl(["--fail", "-I", base + path]);
      assertSuccess(got, `curl -I ${path}`);
      const [response] = responses(got.text);
      assert.equal(response.status, 200, got.text);
      assert.equal(response.headers.get("content-length"), String(size));
      assert.equal(response.headers.get("accept-ranges"), "bytes");
      assert.ok(response.headers.get("etag"), "an ETag");
      assert.ok(response.headers.get("last-modified"), "a Last-Modified");
    }
    // Two HEADs of the same file on one connection: a HEAD that sent a body would
    // leave the body in front of the second response.
    const twice = await curl(["--fail", "-I", `${base}/hello.txt`, `${base}/hello.txt`]);
    assertSuccess(twice, "curl -I twice");
    assert.deepEqual(responses(twice.text).map((response) => response.status), [200, 200]);
    assert.deepEqual(http().map((record) => record.command), ["HEAD", "HEAD", "HEAD", "HEAD"]);
  });
});

// ---------------------------------------------------------------- wget

/** wget without `.wgetrc`, quiet but for the server's responses (`-S`). */
function wget(args: string[], cwd: string): Promise<Run> {
  return run(WGET!, [
    "--no-config",
    "--no-proxy",
    "-nv",
    "-S",
    "--tries=1",
    "--timeout=25",
    ...args,
  ], {
    cwd,
  });
}

clientTest(
  "wget -c: continues a partial file with a range request (206)",
  { wget: WGET },
  async () => {
    await withFixture(async ({ base, workDir, http }) => {
      const have = 2 * MiB + 7;
      await Deno.writeFile(`${workDir}/big.bin`, big.subarray(0, have));
      const got = await wget(["-c", `${base}/big.bin`], workDir);
      assertSuccess(got, "wget -c");
      assert.equal(sha256(await Deno.readFile(`${workDir}/big.bin`)), sha256(big));
      assert.match(got.stderr, /HTTP\/1\.1 206 /, "wget was answered 206");
      assert.match(
        got.stderr,
        new RegExp(`Content-Range: bytes ${have}-${big.length - 1}/${big.length}`, "i"),
      );
      const requests = http().filter((record) => pathOf(record) === "/big.bin");
      assert.deepEqual(requests.map((record) => [record.command, record.status]), [["GET", 206]]);

      // Again, with the file whole: the server says 416 with the size; wget has nothing to do.
      const again = await wget(["-c", `${base}/big.bin`], workDir);
      assertSuccess(again, "wget -c of a whole file");
      assert.match(again.stderr, /HTTP\/1\.1 416 /);
      assert.equal(sha256(await Deno.readFile(`${workDir}/big.bin`)), sha256(big));
      assert.deepEqual((await Array.fromAsync(Deno.readDir(workDir))).map((e) => e.name), [
        "big.bin",
      ], "no big.bin.1 beside it");
    });
  },
);

clientTest(
  "wget -r -np -nH: mirrors a directory listing, every file byte for byte, nothing under /-/",
  { wget: WGET },
  async () => {
    await withFixture(async ({ base, workDir, http }) => {
      const got = await wget(["-r", "-np", "-nH", `${base}/site/`], workDir);
      assertSuccess(got, "wget -r");
      for (const [path, bytes] of Object.entries(site)) {
        const file = await Deno.readFile(`${workDir}/${path}`).catch(() => undefined);
        assert.ok(file, `wget saved ${path}:\n${got.stderr}`);
        assert.equal(sha256(file), sha256(bytes), path);
      }
      const paths = http().map(pathOf);
      const own = paths.filter((path) => path.startsWith("/-/") || path === "/-");
      assert.deepEqual(own, [], "wget fetched none of the server's own pages");
      const outside = paths.filter((path) => !path.startsWith("/site/") && path !== "/robots.txt");
      assert.deepEqual(outside, [], "wget stayed below /site/ (-np)");
      // Every file once, every listing once (wget follows each link once).
      for (const path of Object.keys(site)) {
        const wanted = `/${path}`;
        const count = paths.filter((p) => p === wanted || decodeURIComponent(p) === wanted).length;
        assert.equal(count, 1, `${wanted} fetched once: ${paths.join(" ")}`);
      }
      const failed = http().filter((record) =>
        record.status !== 200 && pathOf(record) !== "/robots.txt"
      );
      assert.deepEqual(failed, [], "every request of the mirror succeeded");
    });
  },
);

// ---------------------------------------------------------------- aria2c

clientTest(
  "wget -r -nH of the root: the whole tree, and not one of the server's own pages",
  { wget: WGET },
  async () => {
    await withFixture(async ({ base, workDir, http }) => {
      const got = await wget(["-r", "-nH", `${base}/`], workDir);
      assertSuccess(got, "wget -r of the root");
      for (const [path, bytes] of Object.entries(tree)) {
        const file = await Deno.readFile(`${workDir}/${path}`).catch(() => undefined);
        assert.ok(file, `wget saved ${path}:\n${got.stderr}`);
        assert.equal(sha256(file), sha256(bytes), path);
      }
      const own = http().map(pathOf).filter((path) => path.startsWith("/-/") || path === "/-");
      assert.deepEqual(own, [], "the listing's link to the status page is not followed");
    });
  },
);

clientTest(
  "aria2c -x 4 -s 4: the 3 MiB file over several connections with ranges, byte for byte",
  { aria2c: ARIA2C },
  async () => {
    await withFixture(async ({ base, workDir, http }) => {
      const got = await run(ARIA2C!, [
        "--no-conf",
        "--all-proxy=",
        "-x",
        "4",
        "-s",
        "4",
        "-k",
        "1M", // the smallest piece aria2 allows: 3 MiB splits in three
        "--max-tries=1",
        "--timeout=25",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--summary-interval=0",
        "--console-log-level=warn",
        "-d",
        workDir,
        "-o",
        "big.bin",
        `${base}/big.bin`,
      ]);
      assertSuccess(got, "aria2c");
      assert.equal(sha256(await Deno.readFile(`${workDir}/big.bin`)), sha256(big));
      const requests = http().filter((record) => pathOf(record) === "/big.bin");
      const ranged = requests.filter((record) => record.status === 206);
      assert.ok(ranged.length >= 2, `ranges asked: ${JSON.stringify(requests)}`);
      const connections = new Set(requests.map(clientPort));
      assert.ok(connections.size >= 2, `several connections: ${JSON.stringify(requests)}`);
    });
  },
);

// ---------------------------------------------------------------- Python

/** One `http.client.HTTPConnection` for all its requests; prints what each got as JSON. */
const PYTHON_SCRIPT = `
import hashlib, http.client, json, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
out = []
for method, path in [("GET", "/hello.txt"), ("GET", "/big.bin"), ("HEAD", "/big.bin"),
                     ("GET", "/nope.txt"), ("GET", "/big.bin"), ("GET", "/hello.txt")]:
    conn.request(method, path)
    local = conn.sock.getsockname()[1]
    response = conn.getresponse()
    body = response.read()
    out.append({"method": method, "path": path, "status": response.status,
                "length": response.getheader("Content-Length"), "bodyLength": len(body),
                "sha256": hashlib.sha256(body).hexdigest(), "localPort": local,
                "willClose": response.will_close})
conn.close()
print(json.dumps(out))
`;

clientTest(
  "Python http.client keep-alive: GETs, a HEAD and a 404 on one connection",
  { python3: PYTHON },
  async () => {
    await withFixture(async ({ port, http }) => {
      const got = await run(PYTHON!, ["-I", "-c", PYTHON_SCRIPT, String(port)]);
      assertSuccess(got, "python3");
      const results = JSON.parse(got.text) as {
        method: string;
        path: string;
        status: number;
        length: string | null;
        bodyLength: number;
        sha256: string;
        localPort: number;
        willClose: boolean;
      }[];
      const expected = [
        ["GET", "/hello.txt", 200, sha256(hello)],
        ["GET", "/big.bin", 200, sha256(big)],
        ["HEAD", "/big.bin", 200, sha256("")],
        ["GET", "/nope.txt", 404, undefined],
        ["GET", "/big.bin", 200, sha256(big)],
        ["GET", "/hello.txt", 200, sha256(hello)],
      ] as const;
      assert.equal(results.length, expected.length);
      expected.forEach(([method, path, status, digest], i) => {
        const result = results[i];
        assert.deepEqual([result.method, result.path, result.status], [method, path, status]);
        if (digest !== undefined) assert.equal(result.sha256, digest, `${method} ${path}`);
        assert.equal(result.willClose, false, `${method} ${path}: the server keeps the connection`);
      });
      assert.equal(results[2].length, String(big.length), "HEAD: the GET's Content-Length");
      assert.equal(results[2].bodyLength, 0);
      // One connection: Python saw one local port, and the server saw it for every request.
      const localPorts = new Set(results.map((result) => String(result.localPort)));
      assert.equal(localPorts.size, 1, `one connection: ${got.text}`);
      const records = http();
      assert.deepEqual(
        records.map((record) => [record.command, pathOf(record), record.status]),
        expected.map(([method, path, status]) => [method, path, status]),
      );
      assert.deepEqual(new Set(records.map(clientPort)), localPorts, "the server saw one client");
    });
  },
);

// ---------------------------------------------------------------- promtool

clientTest(
  "promtool check metrics accepts /-/metrics after some traffic",
  { promtool: PROMTOOL },
  async () => {
    await withFixture(async ({ base }) => {
      const client = Deno.createHttpClient({});
      try {
        // Some of each outcome first, so that the counters and the histogram have samples.
        for (
          const [path, init] of [
            ["/hello.txt", {}],
            ["/hello.txt", {}],
            ["/big.bin", { headers: { range: "bytes=0-99" } }],
            ["/nope.txt", {}],
            ["/site/", {}],
          ] as const
        ) {
          await (await fetch(base + path, { ...init, client })).arrayBuffer();
        }
        const response = await fetch(`${base}/-/metrics`, { client });
        const metrics = new Uint8Array(await response.arrayBuffer());
        assert.equal(response.status, 200);
        assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
        const checked = await run(PROMTOOL!, ["check", "metrics"], { stdin: metrics });
        assertSuccess(checked, `promtool check metrics of:\n${new TextDecoder().decode(metrics)}`);
      } finally {
        client.close();
      }
    });
  },
);
