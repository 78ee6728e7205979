/**
 * TLS over real sockets and real tools: the client and the cluster client
 * verify the server (a private CA, an expired leaf, a wrong name, an
 * unknown CA: each a clear error), `openssl s_client` and `curl --cacert`
 * against both ports, TLS 1.2 and 1.3 only, the certificate replaced while
 * serving, a bad certificate at start, and failed handshakes counted.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { ClusterClient, connect, ConnectionError } from "../../client.ts";
import type { RequestRecord, TlsFiles } from "../../server.ts";
import {
  makeCertificates,
  opensslAvailable,
  presentedSerial,
  type TestCertificates,
} from "./certs.ts";
import { sha256, withServer } from "../helpers.ts";
import { cli, runCommand } from "../cli/cli_helpers.ts";

const tree = { "hello.txt": "hello over tls\n", "docs/a.txt": "alpha\n" };
const ADMIN = "admin-token-0123456789abcdef";
const SERVER = fileURLToPath(new URL("../../server.ts", import.meta.url));
const ignore = !opensslAvailable();

/** Runs `test` with certificates made for it (and the valid leaf as a server's `tls`), removed afterwards. */
async function withCertificates(
  test: (certs: TestCertificates, tls: TlsFiles) => Promise<void>,
): Promise<void> {
  const certs = await makeCertificates();
  try {
    await test(certs, { cert: certs.leaf.cert, key: certs.leaf.key });
  } finally {
    await certs.remove();
  }
}

/** `openssl s_client` against 127.0.0.1:`port` with `args`: its output, and whether it connected. */
async function sClient(port: number, args: string[], input = ""): Promise<string> {
  const child = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  // s_client quits at the end of its input; a moment first for the answer to come back.
  await new Promise((resolve) => setTimeout(resolve, 300));
  await writer.close();
  const out = await child.output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

Deno.test({
  name: "TLS: the client verifies the server with --ca; wrong CA, expired leaf, wrong name fail",
  ignore,
  fn: () =>
    withCertificates(async (certs) => {
      const serve = (leaf: typeof certs.leaf, test: (port: number) => Promise<void>) =>
        withServer(tree, { tls: { cert: leaf.cert, key: leaf.key } }, ({ port }) => test(port));
      await serve(certs.leaf, async (port) => {
        for (const host of ["localhost", "127.0.0.1"]) {
          const client = await connect({ host, port, caCerts: [certs.ca.cert] });
          const result = await client.get("hello.txt");
          assert.ok(result.verified);
          assert.equal(result.sha256, sha256(tree["hello.txt"]));
          client.close();
        }
        await assert.rejects(
          connect({ host: "localhost", port, caCerts: [certs.otherCa.cert] }),
          (error: Error) => error instanceof ConnectionError && /UnknownIssuer/.test(error.message),
        );
        await assert.rejects(
          connect({ host: "localhost", port, tls: true }),
          ConnectionError,
          "the system's roots do not know the private CA",
        );
        // A plain client gets no answer it could mistake for one.
        await assert.rejects(
          (async () => {
            const plain = await connect({ host: "localhost", port });
            try {
              await plain.ping();
            } finally {
              plain.close();
            }
          })(),
          ConnectionError,
        );
      });
      await withServer(tree, {}, async ({ port }) => {
        await assert.rejects(
          connect({ host: "localhost", port, caCerts: [certs.ca.cert] }),
          (error: Error) =>
            error instanceof ConnectionError && /does this port speak TLS\?/.test(error.message),
          "TLS against a plain port: a clear error, no fallback",
        );
      });
      await serve(certs.expired, async (port) => {
        await assert.rejects(
          connect({ host: "localhost", port, caCerts: [certs.ca.cert] }),
          (error: Error) => error instanceof ConnectionError && /expired/.test(error.message),
        );
      });
      await serve(certs.wrongHost, async (port) => {
        await assert.rejects(
          connect({ host: "localhost", port, caCerts: [certs.ca.cert] }),
          (error: Error) =>
            error instanceof ConnectionError &&
            /not valid for name "localhost"/.test(error.message),
        );
      });
    }),
});

Deno.test({
  name: "TLS: the command-line client exits 3 with the reason; --ca and TCPCACHE_CA verify",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      await withServer(tree, { tls }, async ({ port, dir }) => {
        const at = ["--host", "localhost", "--port", String(port)];
        const good = await cli(
          [...at, "--ca", certs.ca.certFile, "get", "hello.txt", "-o", "-"],
          dir,
        );
        assert.deepEqual([good.code, good.stdout], [0, tree["hello.txt"]]);
        const fromEnv = await cli([...at, "stat", "hello.txt"], dir, {
          TCPCACHE_CA: certs.ca.certFile,
        });
        assert.equal(fromEnv.code, 0, fromEnv.stderr);
        const wrong = await cli([...at, "--ca", certs.otherCa.certFile, "ping"], dir);
        assert.equal(wrong.code, 3);
        assert.match(wrong.stderr, /TLS handshake failed: invalid peer certificate: UnknownIssuer/);
        const missing = await cli([...at, "--ca", `${dir}/nope.pem`, "ping"], dir);
        assert.equal(missing.code, 3);
        assert.match(missing.stderr, /cannot read the CA file/);
      });
    }),
});

Deno.test({
  name: "TLS: openssl s_client and curl --cacert on both ports; TLS 1.2 and 1.3 only",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      const records: RequestRecord[] = [];
      const options = {
        tls,
        httpPort: 0,
        authTokens: `${ADMIN} ops admin\n`,
        onRequest: (r: RequestRecord) => records.push(r),
      };
      await withServer(tree, options, async ({ port, server }) => {
        const httpPort = server.httpAddr!.port;
        const ca = ["-CAfile", certs.ca.certFile];
        const tcp = await sClient(port, ca, `AUTH ${ADMIN}\nGET hello.txt\n`);
        assert.match(tcp, /Verify return code: 0 \(ok\)/);
        assert.match(tcp, /New, TLSv1.3/);
        assert.match(tcp, /OK 0\nOK 15 .*\nhello over tls/);
        for (const target of [port, httpPort]) {
          assert.match(await sClient(target, [...ca, "-tls1_2"]), /New, TLSv1.2, Cipher is ECDHE-/);
          for (const old of ["-tls1_1", "-tls1"]) {
            const refused = await sClient(target, [...ca, old]);
            assert.match(refused, /New, \(NONE\), Cipher is \(NONE\)/, `${old} must not connect`);
            assert.match(refused, /no peer certificate available/);
          }
        }
        const curl = (args: string[]) =>
          runCommand("curl", ["-sS", "--cacert", certs.ca.certFile, ...args], ".");
        const base = `https://localhost:${httpPort}`;
        const file = await curl(["-H", `Authorization: Bearer ${ADMIN}`, `${base}/hello.txt`]);
        assert.equal(file.stdout, tree["hello.txt"], file.stderr);
        const status = await curl(["-H", `Authorization: Bearer ${ADMIN}`, `${base}/-/`]);
        assert.match(status.stdout, /<html/i, "the status page over HTTPS");
        const stats = await curl(["-H", `Authorization: Bearer ${ADMIN}`, `${base}/-/stats`]);
        assert.equal(JSON.parse(stats.stdout).access.tls, true);
        const unverified = await runCommand("curl", ["-sS", `${base}/hello.txt`], ".");
        assert.notEqual(unverified.code, 0, "curl without the CA refuses the certificate");
      });
      const overTls = records.filter((r) => r.command === "GET");
      assert.ok(overTls.length >= 2);
      for (const record of overTls) assert.deepEqual([record.tls, record.user], [true, "ops"]);
    }),
});

Deno.test({
  name: "TLS: a reload replaces the certificate on every thread; open connections carry on",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      await withServer(tree, { tls, httpPort: 0, workers: 2 }, async ({ port, server }) => {
        const before = await presentedSerial(port, certs.ca.certFile);
        const open = await connect({ host: "localhost", port, caCerts: [certs.ca.cert] });
        const renewed = await certs.renew("renewed");
        assert.notEqual(renewed.serial, before);
        await server.reload({ tls: { cert: renewed.cert, key: renewed.key } });
        // Each thread has its own listener: enough connections reach both.
        for (const target of [port, server.httpAddr!.port]) {
          for (let i = 0; i < 6; i++) {
            assert.equal(await presentedSerial(target, certs.ca.certFile), renewed.serial);
          }
        }
        assert.equal((await open.stat("hello.txt")).size, tree["hello.txt"].length);
        await assert.rejects(
          server.reload({ tls: { cert: "not a certificate", key: renewed.key } }),
          /cannot be used/,
        );
        assert.equal(await presentedSerial(port, certs.ca.certFile), renewed.serial);
        const stats = await server.stats();
        assert.ok(stats.access.tlsHandshakes >= 14, JSON.stringify(stats.access));
        open.close();
      });
    }),
});

Deno.test({
  name:
    "TLS: a bad certificate at start is one line and exit 2; a plain client counts as a failed handshake",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      const base = ["run", "-A", SERVER, "--port", "0", "--cache-dir", `${certs.dir}/cache`];
      for (
        const [cert, key, message] of [
          [certs.leaf.certFile, certs.otherCa.keyFile, /KeyMismatch|keys may not be consistent/],
          [certs.dir + "/index.txt", certs.leaf.keyFile, /No certificates found/],
          [certs.leaf.certFile, `${certs.dir}/missing.key`, /--tls-key .*missing.key/],
        ]
      ) {
        const start = await runCommand(
          Deno.execPath(),
          [...base, "--tls-cert", cert as string, "--tls-key", key as string],
          ".",
        );
        assert.equal(start.code, 2, start.stderr);
        assert.match(start.stderr, message as RegExp);
        assert.equal(start.stderr.trim().split("\n").length, 1, start.stderr);
      }
      await withServer(tree, { tls, httpPort: 0 }, async ({ port, server }) => {
        const plain = await Deno.connect({ hostname: "127.0.0.1", port });
        await plain.write(new TextEncoder().encode("PING\n"));
        const reply = await plain.read(new Uint8Array(64)).catch(() => null);
        assert.ok(reply === null || reply < 64, "no protocol answer to a plain client");
        plain.close();
        let failures = 0;
        for (let i = 0; i < 50 && failures === 0; i++) {
          failures = (await server.stats()).access.tlsHandshakeFailures;
          if (failures === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        assert.equal(failures, 1);
        const metrics = await fetch(`https://localhost:${server.httpAddr!.port}/-/metrics`, {
          client: Deno.createHttpClient({ caCerts: [certs.ca.cert] }),
        });
        assert.match(await metrics.text(), /^tcpcache_tls_handshake_failures_total 1$/m);
      });
    }),
});

Deno.test({
  name: "TLS: the cluster client verifies every node and presents its token",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      const options = { tls, authTokens: `${ADMIN} ops admin\n` };
      await withServer(tree, options, async (one) => {
        await withServer(tree, options, async (two) => {
          const nodes = [one.port, two.port].map((port) => `localhost:${port}`);
          const cluster = new ClusterClient(nodes, {
            security: { caCerts: [certs.ca.cert], token: ADMIN },
          });
          for (const path of ["hello.txt", "docs/a.txt"]) {
            assert.ok((await cluster.get(path)).verified);
          }
          assert.equal((await cluster.list()).entries.length, 2);
          cluster.close();
          const untrusting = new ClusterClient(nodes, {
            security: { caCerts: [certs.otherCa.cert], token: ADMIN },
          });
          await assert.rejects(untrusting.get("hello.txt"), ConnectionError);
          untrusting.close();
        });
      });
    }),
});

/** Reads `conn` until the server closes it: true at EOF or reset, false after `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, ms);
  try {
    const buffer = new Uint8Array(4096);
    while ((await conn.read(buffer)) !== null) { /* the server's alert, if any */ }
  } catch {
    // reset by the server, or closed here by the timer
  } finally {
    clearTimeout(timer);
  }
  if (!timedOut) conn.close();
  return !timedOut;
}

Deno.test({
  name:
    "TLS: a client that never finishes its handshake is closed at the idle timeout; one the allow list refuses at once",
  ignore,
  fn: () =>
    withCertificates(async (_certs, tls) => {
      await withServer(tree, { tls, idleTimeoutMs: 300 }, async ({ port, server }) => {
        const silent = await Deno.connect({ hostname: "127.0.0.1", port });
        assert.ok(await closedWithin(silent, 5000), "closed after the idle timeout");
        assert.equal((await server.stats()).access.tlsHandshakeFailures, 1);
      });
      await withServer(tree, { tls, allow: "10.0.0.0/8" }, async ({ port, server }) => {
        const refused = await Deno.connect({ hostname: "127.0.0.1", port });
        assert.ok(await closedWithin(refused, 5000), "closed at accept");
        assert.equal((await server.stats()).access.denied, 1);
      });
    }),
});

Deno.test({
  name:
    "TLS: a silent client refused as busy is closed within a second, and does not hold up close()",
  ignore,
  fn: () =>
    withCertificates(async (certs, tls) => {
      await withServer(tree, { tls, maxConnections: 1 }, async ({ port, server }) => {
        const busy = await connect({ host: "localhost", port, caCerts: [certs.ca.cert] });
        await busy.ping();
        const silent = await Deno.connect({ hostname: "127.0.0.1", port });
        assert.ok(await closedWithin(silent, 5000), "refused: closed after its second");
        const lingering = await Deno.connect({ hostname: "127.0.0.1", port });
        const started = performance.now();
        busy.close();
        await server.close(); // withServer closes it again: a no-op
        assert.ok(performance.now() - started < 5000, "close() did not wait for the silent client");
        lingering.close();
        assert.equal((await server.stats()).connections.rejected, 2);
      });
    }),
});
