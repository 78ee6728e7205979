/**
 * The HTTP front end, end to end: curl (a client no one on this team wrote)
 * for files, ranges, conditional requests and headers; raw sockets for the
 * limits and the hostile paths; the metrics checked against TCP `STATS`.
 */

import assert from "node:assert/strict";
import type { RequestRecord, ServerStats } from "../../server.ts";
import {
  eventually,
  json,
  openDescriptors,
  RawConnection,
  seededBytes,
  sha256,
  type TestServer,
  withServer,
} from "../helpers.ts";

const MiB = 1024 * 1024;

/** What curl got: the status, the final response's headers and the body. */
interface CurlResult {
  status: number;
  headers: Headers;
  body: Uint8Array;
  exitCode: number;
  stderr: string;
}

/** Runs curl against the server's HTTP port; `path` is sent as it is. */
async function curl(server: TestServer, path: string, args: string[] = []): Promise<CurlResult> {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-curl-" });
  try {
    const url = `http://127.0.0.1:${server.server.httpAddr!.port}${path}`;
    const output = await new Deno.Command("curl", {
      args: [
        "-sS",
        "--path-as-is",
        "-D",
        `${dir}/headers`,
        "-o",
        `${dir}/body`,
        "-w",
        "%{http_code}",
        ...args,
        url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const headerText = await Deno.readTextFile(`${dir}/headers`).catch(() => "");
    const body = await Deno.readFile(`${dir}/body`).catch(() => new Uint8Array());
    return {
      status: Number(new TextDecoder().decode(output.stdout)),
      headers: parseHeaders(headerText),
      body,
      exitCode: output.code,
      stderr: new TextDecoder().decode(output.stderr),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The last response's headers in a curl header dump. */
function parseHeaders(text: string): Headers {
  const blocks = text.trim().split(/\r\n\r\n/);
  const headers = new Headers();
  for (const line of blocks[blocks.length - 1].split("\r\n").slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  return headers;
}

/** An HTTP request and response over a raw socket, for what curl would tidy up. */
async function rawHttp(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    return await new Response(conn.readable).text();
  } catch (error) {
    conn.close();
    throw error;
  }
}

function httpPort(server: TestServer): number {
  return server.server.httpAddr!.port;
}

const big = seededBytes(3 * MiB, 9);
const tree = {
  "hello.txt": "hello over http\n",
  "docs/a b.md": "# spaced name\n",
  "docs/sub/c.json": '{"c":1}',
  "big.bin": big,
};

Deno.test("curl fetches whole files: bytes, length, type, a stable ETag, Repr-Digest, X-Cache MISS then HIT", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const first = await curl(server, "/big.bin", ["--fail"]);
    assert.equal(first.exitCode, 0, first.stderr);
    assert.equal(first.status, 200);
    assert.equal(sha256(first.body), sha256(big));
    assert.equal(first.headers.get("content-length"), String(big.length));
    assert.equal(first.headers.get("content-type"), "application/octet-stream");
    assert.equal(first.headers.get("x-cache"), "MISS");
    const etag = first.headers.get("etag")!;
    assert.match(etag, /^"v-[0-9a-f]{32}"$/, "a tag of the origin's version");
    const digest = Uint8Array.from(sha256(big).match(/../g)!, (hex) => parseInt(hex, 16));
    const reprDigest = `sha-256=:${btoa(String.fromCharCode(...digest))}:`;
    assert.equal(first.headers.get("repr-digest"), reprDigest);
    assert.equal(first.headers.get("accept-ranges"), "bytes");
    const mtime = (await Deno.stat(`${server.dir}/big.bin`)).mtime!;
    assert.equal(first.headers.get("last-modified"), mtime.toUTCString());

    const second = await curl(server, "/big.bin", ["--fail"]);
    assert.equal(second.headers.get("x-cache"), "HIT");
    assert.deepEqual(second.body, big);
    assert.equal(second.headers.get("etag"), etag, "the same tag once cached");
    assert.equal(second.headers.get("repr-digest"), reprDigest);

    const text = await curl(server, "/docs/a%20b.md", ["--fail"]);
    assert.equal(new TextDecoder().decode(text.body), "# spaced name\n");
    assert.equal(text.headers.get("content-type"), "text/markdown; charset=utf-8");

    const head = await rawHttp(
      httpPort(server),
      "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert.match(head, /^HTTP\/1\.1 200 [^]*content-length: 16\r\n/i);
    assert.ok(head.endsWith("\r\n\r\n"), `HEAD has no body: ${head}`);
  });
});

Deno.test("curl ranges: 206 with Content-Range (from cache or origin), suffixes, 416", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const uncached = await curl(server, "/big.bin", ["--fail", "-r", "1000-1999"]);
    assert.equal(uncached.status, 206);
    assert.deepEqual(uncached.body, big.subarray(1000, 2000));
    assert.equal(uncached.headers.get("content-range"), `bytes 1000-1999/${big.length}`);
    assert.equal(uncached.headers.get("content-length"), "1000");
    assert.equal(uncached.headers.get("x-cache"), "BYPASS", "a range of an uncached file");

    await curl(server, "/big.bin", ["--fail"]); // now cached
    const cached = await curl(server, "/big.bin", ["--fail", "-r", `${2 * MiB}-`]);
    assert.equal(cached.status, 206);
    assert.equal(cached.headers.get("x-cache"), "HIT");
    assert.deepEqual(cached.body, big.subarray(2 * MiB));

    const suffix = await curl(server, "/hello.txt", ["--fail", "-r", "-5"]);
    assert.equal(new TextDecoder().decode(suffix.body), "http\n");
    assert.equal(suffix.headers.get("content-range"), "bytes 11-15/16");

    const past = await curl(server, "/hello.txt", ["-r", "16-20"]);
    assert.equal(past.status, 416);
    assert.equal(past.headers.get("content-range"), "bytes */16");

    const several = await curl(server, "/hello.txt", ["--fail", "-r", "0-1,3-4"]);
    assert.equal(several.status, 200, "several ranges: the whole file");
    assert.equal(several.body.length, 16);

    // If-Range with another version's tag: the whole file, not the range.
    const stale = await curl(server, "/hello.txt", ["-r", "0-1", "-H", 'If-Range: "old"']);
    assert.equal(stale.status, 200);
    const fresh = await curl(server, "/hello.txt", [
      "-r",
      "0-1",
      "-H",
      `If-Range: ${(await curl(server, "/hello.txt")).headers.get("etag")}`,
    ]);
    assert.equal(fresh.status, 206);
    assert.equal(new TextDecoder().decode(fresh.body), "he");
  });
});

Deno.test("conditional requests: If-None-Match and If-Modified-Since give 304 without a body", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const first = await curl(server, "/hello.txt", ["--fail"]);
    const etag = first.headers.get("etag")!;
    const lastModified = first.headers.get("last-modified")!;

    const byTag = await curl(server, "/hello.txt", ["-H", `If-None-Match: ${etag}`]);
    assert.equal(byTag.status, 304);
    assert.equal(byTag.body.length, 0);
    assert.equal(byTag.headers.get("etag"), etag);

    const byDate = await curl(server, "/hello.txt", ["-H", `If-Modified-Since: ${lastModified}`]);
    assert.equal(byDate.status, 304);

    const otherTag = await curl(server, "/hello.txt", ["-H", 'If-None-Match: "other"']);
    assert.equal(otherTag.status, 200);
    assert.equal(otherTag.body.length, 16);

    // The file changes: the old tag no longer matches, and the new bytes come.
    await Deno.writeTextFile(`${server.dir}/hello.txt`, "changed\n");
    const changed = await curl(server, "/hello.txt", ["-H", `If-None-Match: ${etag}`]);
    assert.equal(changed.status, 200);
    assert.equal(new TextDecoder().decode(changed.body), "changed\n");
    assert.notEqual(changed.headers.get("etag"), etag);
  });
});

Deno.test("preconditions come before the range: If-Range drops it, a 304 wins over a 416", async () => {
  await withServer(tree, { httpPort: 0, cacheSize: MiB }, async (server) => {
    // big.bin is larger than the cache: always streamed from the directory,
    // and still strongly tagged, so a download manager can resume it.
    const first = await curl(server, "/big.bin", ["--fail", "-r", "0-9"]);
    const etag = first.headers.get("etag")!;
    assert.match(etag, /^"v-[0-9a-f]{32}"$/);
    assert.equal(first.headers.get("x-cache"), "BYPASS");
    const resumed = await curl(server, "/big.bin", ["-r", "1000-1009", "-H", `If-Range: ${etag}`]);
    assert.equal(resumed.status, 206);
    assert.deepEqual(resumed.body, big.subarray(1000, 1010));

    const pastEnd = `${big.length + 10}-`;
    const otherVersion = await curl(server, "/big.bin", ["-r", pastEnd, "-H", 'If-Range: "old"']);
    assert.equal(otherVersion.status, 200, "a failed If-Range: the whole file, range unchecked");
    assert.equal(otherVersion.body.length, big.length);
    const unchanged = await curl(server, "/big.bin", [
      "-r",
      pastEnd,
      "-H",
      `If-None-Match: ${etag}`,
    ]);
    assert.equal(unchanged.status, 304, "If-None-Match is evaluated before the range");
    const stats = await server.server.stats();
    assert.equal(stats.bypasses, 3, "one origin read per answered body; none for the 304");
  });
});

Deno.test("HTTP under concurrency: 60 downloads of 12 files, ten at a time, through a cache that keeps evicting", async () => {
  const files: Record<string, Uint8Array> = {};
  for (let i = 0; i < 12; i++) files[`f${i}.bin`] = seededBytes(300_000 + i * 7_001, 100 + i);
  await withServer(files, { httpPort: 0, cacheSize: MiB }, async (server) => {
    const base = `http://127.0.0.1:${httpPort(server)}`;
    const download = async (i: number) => {
      const name = `f${(i * 5) % 12}.bin`;
      const response = await fetch(`${base}/${name}`);
      const body = new Uint8Array(await response.arrayBuffer());
      assert.equal(response.status, 200, name);
      assert.equal(sha256(body), sha256(files[name]), `${name}: every byte`);
      assert.ok(server.server.cache.used <= MiB, "the cache bound holds");
      return response.headers.get("x-cache");
    };
    // Six waves of ten at once: each wave's misses evict the last wave's files.
    const outcomes: (string | null)[] = [];
    for (let wave = 0; wave < 6; wave++) {
      const ids = Array.from({ length: 10 }, (_, i) => wave * 10 + i);
      outcomes.push(...await Promise.all(ids.map(download)));
    }
    const stats = await server.server.stats();
    assert.ok(stats.evictions > 0, "files were evicted meanwhile");
    assert.equal(stats.hits + stats.misses + stats.bypasses, 60);
    assert.deepEqual(
      new Set(outcomes),
      new Set(outcomes.filter((o) => o === "HIT" || o === "MISS" || o === "BYPASS")),
    );
  });
});

Deno.test("one cache for both protocols: a TCP miss is an HTTP hit, and the counters are shared", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const conn = await RawConnection.open(server.port);
    try {
      assert.equal((await conn.request("GET hello.txt")).fields.cache, "miss");
      const overHttp = await curl(server, "/hello.txt", ["--fail"]);
      assert.equal(overHttp.headers.get("x-cache"), "HIT");
      const stats = json<ServerStats>(await conn.request("STATS"));
      assert.equal(stats.hits, 1);
      assert.equal(stats.misses, 1);
      assert.equal(stats.protocols.http.requests, 1);
      assert.equal(stats.protocols.tcp.requests, 1);
    } finally {
      conn.close();
    }
  });
});

Deno.test("/-/metrics agrees with TCP STATS; /-/stats and /-/cache are STATS and LIST", async () => {
  await withServer(tree, { httpPort: 0, cacheSize: 4 * MiB }, async (server) => {
    // Traffic over both protocols: misses, hits, a bypass, a 404, an eviction.
    await curl(server, "/big.bin");
    await curl(server, "/big.bin");
    await curl(server, "/hello.txt", ["-r", "0-3"]);
    await curl(server, "/missing");
    const conn = await RawConnection.open(server.port);
    try {
      await conn.request("GET hello.txt");
      await conn.request("GET docs/sub/c.json");
      await conn.request("GET nope");
      const metricsText = new TextDecoder().decode((await curl(server, "/-/metrics")).body);
      const stats = json<ServerStats>(await conn.request("STATS"));
      const metrics = parseMetrics(metricsText);
      assert.equal(metrics.get("tcpcache_hits_total"), stats.hits);
      assert.equal(metrics.get("tcpcache_misses_total"), stats.misses);
      assert.equal(metrics.get("tcpcache_bypasses_total"), stats.bypasses);
      assert.equal(metrics.get("tcpcache_evictions_total"), stats.evictions);
      assert.equal(metrics.get("tcpcache_origin_bytes_total"), stats.bytesFromOrigin);
      assert.equal(metrics.get("tcpcache_cache_used_bytes"), stats.cache.used);
      assert.equal(metrics.get("tcpcache_cache_capacity_bytes"), 4 * MiB);
      assert.equal(metrics.get("tcpcache_cache_entries"), stats.cache.entries);
      assert.equal(metrics.get('tcpcache_open_connections{protocol="tcp"}'), 1);
      const requestsOf = (protocol: string) =>
        [...metrics].filter(([name]) =>
          name.startsWith(`tcpcache_requests_total{protocol="${protocol}"`)
        ).reduce((sum, [, value]) => sum + value, 0);
      // The metrics were taken during their own request; STATS counts it.
      assert.equal(requestsOf("http") + 1, stats.protocols.http.requests);
      assert.equal(requestsOf("tcp"), stats.protocols.tcp.requests);
      assert.equal(metrics.get('tcpcache_requests_total{protocol="http",outcome="404"}'), 1);
      assert.equal(metrics.get('tcpcache_requests_total{protocol="tcp",outcome="404"}'), 1);
      assert.equal(metrics.get('tcpcache_requests_total{protocol="http",outcome="bypass"}'), 1);
      assert.equal(
        metrics.get('tcpcache_request_duration_seconds_count{protocol="tcp"}'),
        requestsOf("tcp"),
      );

      const overHttp = JSON.parse(new TextDecoder().decode((await curl(server, "/-/stats")).body));
      const again = json<ServerStats>(await conn.request("STATS"));
      for (const key of ["hits", "misses", "bypasses", "evictions", "bytesFromOrigin", "errors"]) {
        assert.deepEqual(overHttp[key], again[key as keyof ServerStats], key);
      }
      const listing = JSON.parse(new TextDecoder().decode((await curl(server, "/-/cache")).body));
      assert.deepEqual(listing, json(await conn.request("LIST")));
    } finally {
      conn.close();
    }
  });
});

/** Prometheus text to a map of `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

Deno.test("directories: an HTML listing for browsers, JSON on request, a redirect to the slash", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const html = await curl(server, "/docs/", ["--fail"]);
    const page = new TextDecoder().decode(html.body);
    assert.equal(html.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(page, /<a href="sub\/">sub\/<\/a>/);
    assert.match(page, /<a href="a%20b\.md">a b\.md<\/a>/);
    assert.match(page, /<a href="\.\.\/">/);

    const listing = await curl(server, "/docs/", ["-H", "Accept: application/json"]);
    assert.deepEqual(
      JSON.parse(new TextDecoder().decode(listing.body)).entries.map((e: { name: string }) =>
        e.name
      ),
      ["a b.md", "sub"],
    );
    const root = await curl(server, "/", ["-H", "Accept: application/json"]);
    assert.equal(JSON.parse(new TextDecoder().decode(root.body)).path, "");

    const redirect = await curl(server, "/docs/sub");
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get("location"), "/docs/sub/");
    const followed = await curl(server, "/docs/sub", ["-L", "-H", "Accept: application/json"]);
    assert.equal(followed.status, 200);
    assert.equal(JSON.parse(new TextDecoder().decode(followed.body)).path, "docs/sub");
  });
});

Deno.test("directories: a listing is a page (?after=, ?limit=), at most 10,000 entries, linking to the next", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const names = Array.from({ length: 10_001 }, (_, i) => `n${String(i).padStart(5, "0")}`);
    await Deno.mkdir(`${server.dir}/many`);
    for (const name of names) Deno.writeFileSync(`${server.dir}/many/${name}`, new Uint8Array());
    const asJson = ["-H", "Accept: application/json"];
    const entriesOf = (result: CurlResult) => {
      const page = JSON.parse(new TextDecoder().decode(result.body));
      return { names: page.entries.map((e: { name: string }) => e.name), next: page.next };
    };

    // No client makes the server build a longer page than FILES does.
    const whole = await curl(server, "/many/", asJson);
    assert.equal(whole.status, 200);
    const first = entriesOf(whole);
    assert.deepEqual(first.names, names.slice(0, 10_000));
    assert.equal(first.next, "n09999");
    assert.equal(whole.headers.get("link"), '<?after=n09999>; rel="next"');
    const html = new TextDecoder().decode((await curl(server, "/many/", ["--fail"])).body);
    assert.equal(html.split("<tr><td>").length - 1, 10_001, "10,000 rows and the parent's");
    assert.match(html, /<a rel="next" href="\?after=n09999">next page<\/a>/);
    const last = await curl(server, "/many/?after=n09999", asJson);
    assert.deepEqual(entriesOf(last), { names: ["n10000"], next: undefined });
    assert.equal(last.headers.get("link"), null, "the last page links to no next one");

    // Following the links of small pages, as a browser or wget does, gives every name once.
    const seen: string[] = [];
    for (let target: string | undefined = "/docs/?limit=1"; target !== undefined;) {
      const page = await curl(server, target, ["--fail"]);
      const text = new TextDecoder().decode(page.body);
      seen.push(
        ...[...text.matchAll(/<a href="([^"]+)">/g)].map((m) => m[1]).filter((h) => h !== "../"),
      );
      const link = /<a rel="next" href="([^"]+)">/.exec(text)?.[1];
      assert.equal(link === undefined, page.headers.get("link") === null);
      target = link === undefined ? undefined : `/docs/${link.replaceAll("&#38;", "&")}`;
    }
    assert.deepEqual(seen, ["a%20b.md", "sub/"]);
    assert.deepEqual(entriesOf(await curl(server, "/docs/?after=a%20b.md&limit=5", asJson)), {
      names: ["sub"],
      next: undefined,
    });
    assert.deepEqual(
      entriesOf(await curl(server, "/?limit=1&other=x", asJson)),
      { names: ["big.bin"], next: "big.bin" },
      "other parameters are ignored",
    );

    for (
      const [query, message] of [
        ["limit=0", "FILES limit must be 1 to 10000, not 0"],
        ["limit=10001", "FILES limit must be 1 to 10000, not 10001"],
        ["limit=x", "FILES limit must be a number, not x"],
        ["after=a%2Fb", "FILES after must be a name (no '/'), or '.' for the start"],
        ["after=", "FILES after must be a name (no '/'), or '.' for the start"],
        ["after=%ZZ", "invalid percent escape"],
        ["limit=1&limit=2", "limit given twice"],
      ]
    ) {
      const refused = await curl(server, `/many/?${query}`);
      assert.equal(refused.status, 400, query);
      assert.equal(new TextDecoder().decode(refused.body), `${message}\n`, query);
    }
  });
});

Deno.test("the same path rules as TCP: traversal, encoded dots, symlinks out, methods", async () => {
  const outside = await Deno.makeTempDir();
  await Deno.writeTextFile(`${outside}/secret.txt`, "SECRET");
  try {
    await withServer(tree, { httpPort: 0 }, async (server) => {
      await Deno.symlink(`${outside}/secret.txt`, `${server.dir}/link.txt`);
      const port = httpPort(server);
      const ask = (target: string, method = "GET") =>
        rawHttp(port, `${method} ${target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`);
      const cases: [string, number][] = [
        ["/link.txt", 403], // a symlink that leaves the served directory
        ["/docs/%2e%2e/%2e%2e/secret.txt", 404], // dot segments are resolved inside the root
        ["/../../../etc/passwd", 404],
        ["/docs%2F..%2F..%2Fsecret.txt", 400], // encoded slashes: a '..' segment after decoding
        ["/a%00b", 400],
        ["/bad%zzescape", 400],
        ["/-/nothing-here", 404],
      ];
      // Twice: the second time each head is one the parser has seen (and memoised).
      for (let round = 0; round < 2; round++) {
        for (const [target, status] of cases) {
          const answer = await ask(target);
          assert.match(answer, new RegExp(`^HTTP/1\\.1 ${status} `), `${target}: ${answer}`);
          assert.ok(!answer.includes("SECRET"), target);
          assert.ok(!answer.includes("root:"), target);
        }
      }
      // An encoded name, asked again and again: a miss, then hits of the same file.
      for (const cache of ["MISS", "HIT", "HIT"]) {
        const answer = await ask("/docs/a%20b.md");
        assert.match(answer, /^HTTP\/1\.1 200 [^]*# spaced name\n$/);
        assert.match(answer, new RegExp(`x-cache: ${cache}`, "i"));
      }
      const post = await ask("/hello.txt", "POST");
      assert.match(post, /^HTTP\/1\.1 405 /);
      assert.match(post, /allow: GET, HEAD/i);
      // And the server still serves.
      assert.match(await ask("/hello.txt"), /^HTTP\/1\.1 200 [^]*hello over http\n$/);
    });
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("HTTP limits: 503 past max connections, 408 for a slow head, idle keep-alive closed", async () => {
  // 1 s: long enough that the first two connections are surely still open
  // when the third arrives, even on a loaded machine.
  await withServer(
    tree,
    { httpPort: 0, maxConnections: 2, idleTimeoutMs: 1000 },
    async (server) => {
      const port = httpPort(server);
      const first = await RawConnection.open(port);
      const second = await RawConnection.open(port);
      try {
        // Both held open; a third connection is refused.
        await second.send("GET /hello.txt HTTP/1.1\r\nHo");
        await eventually(
          async () => (await server.server.stats()).protocols.http.connections === 2,
          "2 open",
        );
        const refused = await rawHttp(port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert.match(refused, /^HTTP\/1\.1 503 [^]*too many connections/);

        // The half-sent head times out with 408; the silent one just closes.
        const timedOut = new TextDecoder().decode(await readToEnd(second.conn));
        assert.match(timedOut, /^HTTP\/1\.1 408 [^]*request head/);
        assert.equal((await readToEnd(first.conn)).length, 0);
      } finally {
        first.close();
        second.close();
      }

      // Keep-alive: a full exchange, then silence, then the server closes.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        await conn.write(new TextEncoder().encode("GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"));
        const answer = new TextDecoder().decode(await readToEnd(conn));
        assert.match(answer, /^HTTP\/1\.1 200 [^]*hello over http\n$/);
      } finally {
        conn.close();
      }
      await eventually(
        async () => (await server.server.stats()).protocols.http.connections === 0,
        "all closed",
      );

      // A request with a body is answered (405) and its connection closed:
      // the body is never mistaken for a request in progress.
      const post = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        const request = "POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\na\r\n\r\n";
        await post.write(new TextEncoder().encode(request));
        assert.match(new TextDecoder().decode(await readToEnd(post)), /^HTTP\/1\.1 405 /);
      } finally {
        post.close();
      }
      await eventually(
        async () => (await server.server.stats()).protocols.http.connections === 0,
        "closed",
      );
    },
  );
});

Deno.test("HTTP: a client that half-closes after its requests still gets every answer", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: httpPort(server) });
    try {
      // Two pipelined requests (one with bare LF line ends), then the
      // client's half of the connection closes, as `nc -N` does.
      const requests = "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n" +
        "GET /hello.txt HTTP/1.1\nHost: t\n\n";
      await conn.write(new TextEncoder().encode(requests));
      await conn.closeWrite();
      const answer = await readToEnd(conn);
      const text = new TextDecoder().decode(answer.subarray(0, 200));
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.equal(answer.length > big.length, true, `got ${answer.length} bytes`);
      assert.ok(new TextDecoder().decode(answer.subarray(-16)) === "hello over http\n");
    } finally {
      conn.close();
    }
  });
});

async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: number[] = [];
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      chunks.push(...buffer.subarray(0, n));
    }
  } catch {
    // reset: what arrived is the answer
  }
  return new Uint8Array(chunks);
}

Deno.test("HTTP: a client that stops reading is dropped after the send timeout; others are not held up", async () => {
  const huge = seededBytes(32 * MiB, 3);
  // 1 s: the stalled client is dropped, and curl, reading at full speed,
  // is not, even on a loaded machine.
  await withServer({ "huge.bin": huge, "small.txt": "small" }, {
    httpPort: 0,
    sendTimeoutMs: 1000,
  }, async (server) => {
    const port = httpPort(server);
    await curl(server, "/small.txt"); // the server's descriptors in their steady state
    const before = openDescriptors();
    const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await stalled.write(new TextEncoder().encode("GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
      await eventually(
        async () => (await server.server.stats()).protocols.http.active === 1,
        "stalled response",
      );
      // While it stalls, another client gets its file at once.
      const other = await curl(server, "/huge.bin", ["--fail"]);
      assert.equal(sha256(other.body), sha256(huge));
      await eventually(
        async () => (await server.server.stats()).sendTimeouts === 1,
        "the send timeout",
      );
      await eventually(
        async () => (await server.server.stats()).protocols.http.active === 0,
        "response freed",
      );
    } finally {
      stalled.close();
    }
    await eventually(() => openDescriptors() <= before, "descriptors back to their count");
  });
});

/** Inodes of the sockets this process listens on (from /proc/net/tcp and tcp6). */
async function listeningSockets(): Promise<Set<string>> {
  const ours = new Set<string>();
  for await (const entry of Deno.readDir("/proc/self/fd")) {
    const target = await Deno.readLink(`/proc/self/fd/${entry.name}`).catch(() => "");
    const inode = /^socket:\[([0-9]+)\]$/.exec(target)?.[1];
    if (inode) ours.add(inode);
  }
  const listening = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await Deno.readTextFile(table).catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === "0A" && ours.has(fields[9])) listening.add(fields[9]);
    }
  }
  return listening;
}

Deno.test("HTTP listens on its own port only: no private port behind it", async () => {
  const before = await listeningSockets();
  await withServer(tree, { httpPort: 0 }, async () => {
    const during = await listeningSockets();
    const added = [...during].filter((inode) => !before.has(inode));
    assert.equal(added.length, 2, "the TCP protocol's port and the HTTP port, nothing else");
  });
});

Deno.test("a served folder named '-' is reachable as /%2D/, and listings link to it so", async () => {
  await withServer({ ...tree, "-/inner.txt": "dash\n" }, { httpPort: 0 }, async (server) => {
    const port = httpPort(server);
    const ask = (target: string) =>
      rawHttp(port, `GET ${target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n`);
    assert.match(await ask("/%2D/inner.txt"), /^HTTP\/1\.1 200 [^]*\r\n\r\ndash\n$/);
    assert.match(await ask("/%2d/"), /^HTTP\/1\.1 200 [^]*inner\.txt/);
    const root = await ask("/");
    assert.match(root, /<a href="%2D\/">-\/<\/a>/);
    assert.ok(!root.includes('"/-/'), "no link into the server's pages, for mirroring tools");
    // The literal prefix stays the server's own.
    assert.match(await ask("/-/stats"), /^HTTP\/1\.1 200 [^]*"requests"/);
  });
});

Deno.test("/-/recent names no client addresses; the access log keeps them", async () => {
  const records: { client: string }[] = [];
  await withServer(
    tree,
    { httpPort: 0, onRequest: (record) => records.push(record) },
    async (server) => {
      const port = httpPort(server);
      await rawHttp(port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
      const answer = await rawHttp(
        port,
        "GET /-/recent HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
      );
      const recent = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
      assert.ok(recent.length >= 1);
      for (const record of recent) assert.equal(record.client, "-");
      assert.ok(answer.indexOf("127.0.0.1") === -1, "no address anywhere in the answer");
      assert.match(records[0].client, /^127\.0\.0\.1:[0-9]+$/);
    },
  );
});

Deno.test("HEAD ignores Range: 200 with the whole length, never 206 or 416", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const port = httpPort(server);
    for (const range of ["bytes=0-3", "bytes=99999999-"]) {
      const answer = await rawHttp(
        port,
        `HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nRange: ${range}\r\nConnection: close\r\n\r\n`,
      );
      assert.match(answer, /^HTTP\/1\.1 200 [^]*Content-Length: 16\r\n/, range);
      assert.ok(!/Content-Range/i.test(answer), range);
    }
  });
});

Deno.test("a folder named '-' asked for without its slash redirects to /%2D/, not to the status page", async () => {
  await withServer({ ...tree, "-/inner.txt": "dash\n" }, { httpPort: 0 }, async (server) => {
    const answer = await rawHttp(
      httpPort(server),
      "GET /%2D HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert.match(answer, /^HTTP\/1\.1 301 [^]*Location: \/%2D\/\r\n/);
  });
});

Deno.test("a small body shorter than its stat is a 500, and earlier pipelined answers still arrive", async () => {
  await withServer(tree, { httpPort: 0, memoryBudget: 0 }, async (server) => {
    const port = httpPort(server);
    // Cached first; then the cache file is cut short behind the cache's back.
    await rawHttp(port, "GET /docs/sub/c.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    const entry = server.server.cache.entries().find((e) => e.path === "docs/sub/c.json")!;
    await Deno.truncate(`${server.cacheDir}/${entry.file}`, 2);
    const answer = await rawHttp(
      port,
      "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n" +
        "GET /docs/sub/c.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert.match(answer, /^HTTP\/1\.1 200 [^]*hello over http\nHTTP\/1\.1 500 /);
  });
});

Deno.test("hits from memory, small and larger than the coalescing room, pipelined: whole bodies, logged bytes, fresh after a change", async () => {
  const files = {
    "s.bin": seededBytes(4096, 1),
    "m.bin": seededBytes(16 * 1024, 2), // with its head, past the 16 KiB outbox room
    "l.bin": seededBytes(40 * 1024, 3),
  };
  const records: RequestRecord[] = [];
  await withServer(files, { httpPort: 0, onRequest: (r) => records.push(r) }, async (server) => {
    const port = httpPort(server);
    const names = Object.keys(files) as (keyof typeof files)[];
    const get = (name: string, last = false) =>
      `GET /${name} HTTP/1.1\r\nHost: t\r\n${last ? "Connection: close\r\n" : ""}\r\n`;
    await rawHttp(port, names.map((name, i) => get(name, i === names.length - 1)).join(""));
    assert.equal(server.server.cache.count, 3);
    records.length = 0;
    // Every file twice, pipelined in one write: all hits.
    const order = [...names, ...names];
    const answer = await rawBytes(
      port,
      order.map((n, i) => get(n, i === order.length - 1)).join(""),
    );
    let at = 0;
    for (const name of order) {
      const headEnd = indexOfBytes(answer, "\r\n\r\n", at) + 4;
      const head = new TextDecoder().decode(answer.subarray(at, headEnd));
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /\r\nX-Cache: HIT\r\n/);
      assert.match(head, new RegExp(`\\r\\nContent-Length: ${files[name].length}\\r\\n`));
      assert.deepEqual(answer.subarray(headEnd, headEnd + files[name].length), files[name]);
      at = headEnd + files[name].length;
    }
    assert.equal(at, answer.length);
    assert.deepEqual(
      records.map((r) => [r.path, r.cache, r.bytes]),
      order.map((n) => [n, "hit", files[n].length]),
    );
    // Changed on disk (same size, other bytes, new mtime): never the old copy.
    const changed = seededBytes(4096, 7);
    await Deno.writeFile(`${server.dir}/s.bin`, changed);
    await Deno.utime(`${server.dir}/s.bin`, new Date(), new Date(Date.now() + 5000));
    const fresh = await rawBytes(port, get("s.bin", true));
    const bodyStart = indexOfBytes(fresh, "\r\n\r\n", 0) + 4;
    assert.match(new TextDecoder().decode(fresh.subarray(0, bodyStart)), /X-Cache: MISS/);
    assert.deepEqual(fresh.subarray(bodyStart), changed);
  });
});

/** Like {@linkcode rawHttp}, as bytes. */
async function rawBytes(port: number, request: string): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  return new Uint8Array(await new Response(conn.readable).arrayBuffer());
}

function indexOfBytes(bytes: Uint8Array, text: string, from: number): number {
  const needle = new TextEncoder().encode(text);
  outer: for (let i = from; i + needle.length <= bytes.length; i++) {
    for (let j = 0; j < needle.length; j++) if (bytes[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

Deno.test("a client still sending past its closing request gets the whole answer: the server lingers instead of resetting", async () => {
  await withServer(tree, { httpPort: 0 }, async (server) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: httpPort(server) });
    // The closing request and, in the same write, bytes the server never
    // reads as a request: a client pipelining past the close.
    const request = "GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    const sent = new Uint8Array(256 * 1024).fill(0x41);
    sent.set(new TextEncoder().encode(request));
    const writing = conn.write(sent).catch(() => 0);
    // Read only once the server has sent what it could and closed: an answer
    // still in its send buffer is what a reset would destroy.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const answer = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    await writing;
    const bodyStart = indexOfBytes(answer, "\r\n\r\n", 0) + 4;
    assert.equal(answer.length - bodyStart, big.length);
    assert.equal(await sha256(answer.subarray(bodyStart)), await sha256(big));
  });
});
