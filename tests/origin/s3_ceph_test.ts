/**
 * The S3 origin against a real object store: a single-node Ceph cluster
 * with its RADOS Gateway, started on 127.0.0.1 by tests/origin/s3/ceph_rgw.sh and
 * stopped at the end. The core end-to-end behaviour (misses, hits, ranges,
 * bypass, listings, errors, single flight, freshness, HTTP, the command
 * line) runs against `--origin s3://...`. Where Ceph is missing or the
 * gateway does not start, the test is reported ignored, with the reason.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { AwsClient } from "aws4fetch";
import { S3Origin } from "../../origin/s3.ts";
import { startServer } from "../../server.ts";
import { RawConnection, seededBytes, sha256, waitForOutput } from "../helpers.ts";

const SCRIPT = fileURLToPath(new URL("./s3/ceph_rgw.sh", import.meta.url));
const SERVER = fileURLToPath(new URL("../../server.ts", import.meta.url));
const CLIENT = fileURLToPath(new URL("../../client.ts", import.meta.url));
const MiB = 1024 * 1024;

/** A running gateway: its directory, endpoint and credentials. */
interface Gateway {
  dir: string;
  env: Record<string, string>;
}

/** Starts the gateway, or says why it cannot be. */
async function startGateway(): Promise<Gateway | string> {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-ceph-" });
  const { code, stderr } = await new Deno.Command("bash", {
    args: [SCRIPT, "start", dir],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) {
    await stopGateway(dir);
    const why = new TextDecoder().decode(stderr).trim().split("\n")[0];
    return `the Ceph object gateway did not start: ${why}`;
  }
  const env: Record<string, string> = {};
  for (const line of (await Deno.readTextFile(`${dir}/env`)).split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return { dir, env };
}

async function stopGateway(dir: string): Promise<void> {
  await new Deno.Command("bash", { args: [SCRIPT, "stop", dir], stdout: "null", stderr: "null" })
    .output();
}

const installed = ["ceph-mon", "ceph-osd", "radosgw"].every((name) =>
  ["/usr/bin", "/usr/sbin", "/bin"].some((dir) => {
    try {
      return Deno.statSync(`${dir}/${name}`).isFile;
    } catch {
      return false;
    }
  })
);
const gateway = installed
  ? await startGateway()
  : "Ceph is not installed (bash tests/origin/s3/ceph_rgw.sh install)";
if (typeof gateway !== "string") {
  // However this file ends, the daemons go with it.
  globalThis.addEventListener("unload", () => {
    new Deno.Command("bash", { args: [SCRIPT, "stop", gateway.dir] }).outputSync();
  });
}

/** The objects of the test, under the prefix `site/` of the bucket. */
const TREE: Record<string, Uint8Array> = {
  "hello.txt": new TextEncoder().encode("hello from the object store\n"),
  "docs/a b.md": new TextEncoder().encode("# a name with a space\n"),
  "docs/ünïcode.txt": new TextEncoder().encode("utf-8 key\n"),
  "data/mid.bin": seededBytes(MiB, 11),
  "data/big.bin": seededBytes(6 * MiB, 12), // larger than the 4 MiB cache
  "data/shared.bin": seededBytes(MiB + 7, 13),
};

Deno.test({
  name: typeof gateway === "string"
    ? `S3 origin against Ceph's RADOS Gateway (skipped: ${gateway})`
    : "S3 origin against Ceph's RADOS Gateway: the core behaviour over --origin s3://",
  ignore: typeof gateway === "string",
  fn: async (t) => {
    const { dir, env } = gateway as Gateway;
    const aws = new AwsClient({
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      region: env.AWS_REGION,
      service: "s3",
    });
    const endpoint = env.S3_ENDPOINT;
    const bucket = `tcpcache-${Deno.pid}`;
    const object = (key: string) =>
      `${endpoint}/${bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
    const put = async (key: string, bytes: Uint8Array) => {
      const response = await aws.fetch(object(key), { method: "PUT", body: bytes.slice() });
      const answer = await response.text();
      assert.ok(response.ok, `PUT ${key}: ${response.status} ${answer}`);
    };
    const remove = async (key: string) => {
      const response = await aws.fetch(object(key), { method: "DELETE" });
      await response.body?.cancel();
      assert.ok(response.ok, `DELETE ${key}: ${response.status}`);
    };
    const root = await Deno.makeTempDir({ prefix: "tcpcache-s3-" });
    try {
      const created = await aws.fetch(`${endpoint}/${bucket}`, { method: "PUT" });
      const answer = await created.text();
      assert.ok(created.ok, `create bucket: ${created.status} ${answer}`);
      for (const [path, bytes] of Object.entries(TREE)) await put(`site/${path}`, bytes);
      await put("elsewhere/outside.txt", new TextEncoder().encode("not under the prefix"));

      const origin = new S3Origin({
        url: `s3://${bucket}/site`,
        endpoint,
        accessKeyId: env.AWS_ACCESS_KEY_ID,
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
        region: env.AWS_REGION,
      });
      const server = await startServer({
        origin,
        port: 0,
        httpPort: 0,
        cacheDir: `${root}/cache`,
        cacheSize: 4 * MiB,
      });
      const conn = await RawConnection.open(server.addr.port);
      try {
        await t.step("whole files: a miss, then a hit, verified by sha256", async () => {
          for (const path of ["hello.txt", "docs/a b.md", "docs/ünïcode.txt", "data/mid.bin"]) {
            const encoded = path.split("/").map(encodeURIComponent).join("/");
            const first = await conn.request(`GET ${encoded}`);
            assert.equal(first.fields.cache, "miss", `${path}: ${first.line}`);
            assert.equal(first.fields.sha256, sha256(TREE[path]));
            assert.deepEqual(first.body, TREE[path]);
            const second = await conn.request(`GET ${encoded}`);
            assert.equal(second.fields.cache, "hit");
            assert.deepEqual(second.body, TREE[path]);
          }
        });

        await t.step("ranges: a ranged GET when uncached, the cache when cached", async () => {
          const shared = TREE["data/shared.bin"];
          const uncached = await conn.request("GET data/shared.bin 1000 5000");
          assert.equal(uncached.fields.cache, "bypass");
          assert.deepEqual(uncached.body, shared.subarray(1000, 6000));
          const cached = await conn.request("GET data/mid.bin 12345 100");
          assert.equal(cached.fields.cache, "hit");
          assert.deepEqual(cached.body, TREE["data/mid.bin"].subarray(12345, 12445));
          assert.equal((await conn.request("GET data/mid.bin 2000000 1")).code, 416);
        });

        await t.step("a file larger than the cache is streamed, never cached", async () => {
          const big = await conn.request("GET data/big.bin");
          assert.equal(big.fields.cache, "bypass");
          assert.equal(sha256(big.body), sha256(TREE["data/big.bin"]));
          assert.ok(!server.cache.entries().some((entry) => entry.path === "data/big.bin"));
          assert.ok(server.cache.used <= 4 * MiB);
        });

        await t.step("FILES lists the prefix as directories; STAT, LIST; errors", async () => {
          const top = JSON.parse(new TextDecoder().decode((await conn.request("FILES")).body));
          assert.deepEqual(
            top.entries.map((e: { name: string; type: string }) => `${e.type}:${e.name}`),
            ["dir:data", "dir:docs", "file:hello.txt"],
          );
          const docs = JSON.parse(
            new TextDecoder().decode((await conn.request("FILES docs")).body),
          );
          assert.deepEqual(docs.entries.map((e: { name: string }) => e.name), [
            "a b.md",
            "ünïcode.txt",
          ]);
          const stat = JSON.parse(
            new TextDecoder().decode((await conn.request("STAT hello.txt")).body),
          );
          assert.equal(stat.size, TREE["hello.txt"].length);
          assert.equal(stat.cached, true);
          assert.equal(stat.sha256, sha256(TREE["hello.txt"]));
          assert.equal((await conn.request("GET nope.txt")).code, 404);
          assert.equal((await conn.request("GET ../elsewhere/outside.txt")).code, 400);
          assert.equal((await conn.request("FILES nothing/here")).code, 404);
        });

        await t.step("twenty concurrent misses of one object: one origin read", async () => {
          const bytes = seededBytes(MiB, 21);
          await put("site/data/hot.bin", bytes);
          const before = (await server.stats()).bytesFromOrigin;
          const clients = await Promise.all(
            Array.from({ length: 20 }, () => RawConnection.open(server.addr.port)),
          );
          try {
            const answers = await Promise.all(clients.map((c) => c.request("GET data/hot.bin")));
            for (const answer of answers) assert.equal(sha256(answer.body), sha256(bytes));
          } finally {
            for (const client of clients) client.close();
          }
          assert.equal((await server.stats()).bytesFromOrigin - before, MiB);
        });

        await t.step(
          "a changed object is fetched again; a deleted one is 404 and leaves",
          async () => {
            const changed = new TextEncoder().encode("a new version\n");
            await put("site/hello.txt", changed);
            const fresh = await conn.request("GET hello.txt");
            assert.equal(fresh.fields.cache, "miss");
            assert.deepEqual(fresh.body, changed);
            await remove("site/hello.txt");
            assert.equal((await conn.request("GET hello.txt")).code, 404);
            assert.ok(!server.cache.entries().some((entry) => entry.path === "hello.txt"));
          },
        );

        await t.step("the HTTP front end over the same S3 origin", async () => {
          const url = `http://127.0.0.1:${server.httpAddr!.port}/docs/a%20b.md`;
          const response = await fetch(url);
          assert.equal(response.status, 200);
          assert.equal(response.headers.get("x-cache"), "HIT");
          assert.deepEqual(new Uint8Array(await response.arrayBuffer()), TREE["docs/a b.md"]);
          const ranged = await fetch(url.replace("a%20b.md", "../data/big.bin"), {
            headers: { range: "bytes=100-199" },
          });
          assert.equal(ranged.status, 206);
          assert.deepEqual(
            new Uint8Array(await ranged.arrayBuffer()),
            TREE["data/big.bin"].subarray(100, 200),
          );
        });

        await t.step("a gateway that is not there: 503 after the retries", async () => {
          const dead = new S3Origin({
            url: `s3://${bucket}/site`,
            endpoint: "http://127.0.0.1:9", // the discard port: nothing listens
            accessKeyId: env.AWS_ACCESS_KEY_ID,
            secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
            retries: 1,
            backoffMs: 5,
          });
          await assert.rejects(dead.stat("data/mid.bin"), /origin unavailable/);
        });
      } finally {
        conn.close();
        await server.close();
      }

      await t.step("the command line: tcpcache serve --origin s3://... and a get", async () => {
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "-A",
            SERVER,
            "--origin",
            `s3://${bucket}/site`,
            "--s3-endpoint",
            endpoint,
            "--port",
            "0",
            "--cache-dir",
            `${root}/cli-cache`,
            "--quiet",
          ],
          env,
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        try {
          const [ready] = await waitForOutput(child, child.stdout, /^.*listening on.*\n/);
          assert.match(ready, new RegExp(`origin s3://${bucket}/site/`));
          const port = /listening on 127\.0\.0\.1:(\d+)/.exec(ready)![1];
          const { code, stderr } = await new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", CLIENT, "--port", port, "get", "data/mid.bin", "-o", `${root}/mid`],
          }).output();
          assert.equal(code, 0, new TextDecoder().decode(stderr));
          assert.deepEqual(await Deno.readFile(`${root}/mid`), TREE["data/mid.bin"]);
        } finally {
          child.kill("SIGTERM");
          await child.status;
          await child.stderr.cancel().catch(() => {});
        }
      });
    } finally {
      await Deno.remove(root, { recursive: true });
      await stopGateway(dir);
    }
  },
});
