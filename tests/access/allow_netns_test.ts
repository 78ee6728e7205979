/**
 * The allow list (`--allow`) against a peer on another host. The server runs
 * as a subprocess in a network namespace of its own, listening on 0.0.0.0;
 * a second namespace, joined to it by a veth pair, is a host whose address
 * is outside the list. That host's connections must be closed at accept,
 * before its first byte is read: it gets no byte back on either port, it is
 * counted as `access.denied` and nowhere else, and it leaves no access-log
 * line; 127.0.0.1 inside the server's namespace is served as usual. With
 * TLS, Deno's TLS layer makes the handshake itself as it accepts, before
 * the server's code sees the connection (docs/network.md): there the
 * refused host may get the handshake, but not one byte of an answer.
 *
 * Needs root and iproute2 (`ip netns`, veth): without them the tests are
 * reported as ignored.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { ServerStats } from "../../server.ts";
import { waitForOutput, writeTree } from "../helpers.ts";
import { makeCertificates, opensslAvailable } from "./certs.ts";

const SERVER = fileURLToPath(new URL("../../server.ts", import.meta.url));
/** The project's folder: the server runs there, under its deno.json. */
const PROJECT = fileURLToPath(new URL("../../", import.meta.url));
/** The ports inside the server's namespace, where nothing else listens. */
const TCP_PORT = 9089;
const HTTP_PORT = 8080;
const ALLOW = "127.0.0.0/8,::1";
const HELLO = "hello from the server's namespace\n";
/** The bound on any one command the tests run (a server start, a probe). */
const COMMAND_TIMEOUT_MS = 20_000;

/**
 * A Deno script run as a peer: it connects to `host port` (over TLS when a
 * CA file is given), sends the payload, shuts its write side, and reads
 * until the connection ends, for 5 s at most. It prints a
 * {@linkcode ProbeReport} as JSON.
 */
const PROBE_SCRIPT = `
const [hostname, port, payload, caFile] = Deno.args;
const address = { hostname, port: Number(port) };
const conn = caFile
  ? await Deno.connectTls({ ...address, caCerts: [await Deno.readTextFile(caFile)] })
  : await Deno.connect(address);
const report = { written: 0, bytes: 0, text: "", end: "eof" };
const chunks = [];
let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  conn.close();
}, 5000);
try {
  const bytes = new TextEncoder().encode(payload);
  while (report.written < bytes.length) {
    report.written += await conn.write(bytes.subarray(report.written));
  }
  await conn.closeWrite();
  const buffer = new Uint8Array(65536);
  while (report.bytes < 1048576) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
    report.bytes += n;
  }
} catch (error) {
  report.end = timedOut ? "timeout" : error.name;
} finally {
  clearTimeout(timer);
  try {
    conn.close();
  } catch {
    // closed by the timer
  }
}
report.text = await new Blob(chunks).text();
console.log(JSON.stringify(report));
`;

/** What the probe script saw. */
interface ProbeReport {
  /** Bytes of the payload the kernel took. */
  written: number;
  /** Bytes received back. */
  bytes: number;
  /** Them, as text. */
  text: string;
  /** `eof`, `timeout` (nothing ended it within 5 s), or the error's name (`ConnectionReset`). */
  end: string;
}

/** Runs `ip ...args` and says whether it succeeded: false when `ip` is not there. */
function ipSucceeds(...args: string[]): boolean {
  try {
    return new Deno.Command("ip", { args }).outputSync().success;
  } catch {
    return false;
  }
}

/** Whether namespaces joined by a veth pair can be made here: tried, with a probe namespace. */
function namespacesAvailable(): boolean {
  const probe = `tcpcache-probe-${Deno.pid}`;
  if (!ipSucceeds("netns", "add", probe)) return false;
  try {
    const veth = "link add name probe0 type veth peer name probe1".split(" ");
    return ipSucceeds("-n", probe, ...veth) && ipSucceeds("netns", "exec", probe, "true");
  } finally {
    ipSucceeds("netns", "del", probe);
  }
}

const namespaces = namespacesAvailable();

/** What a finished command left. */
interface Finished {
  success: boolean;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command (killed after {@linkcode COMMAND_TIMEOUT_MS}) and waits for
 * it. Its stdin is a pipe closed at once rather than /dev/null, which is not
 * always the empty device it should be (`openssl s_client` sends its stdin).
 */
async function run(
  command: string,
  args: string[],
  cwd?: string,
  input = "",
): Promise<Finished> {
  const child = new Deno.Command(command, {
    args,
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdin = child.stdin.getWriter();
  await stdin.write(new TextEncoder().encode(input));
  await stdin.close();
  const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
  try {
    const output = await child.output();
    const decoder = new TextDecoder();
    return {
      success: output.success,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `ip ...args`; throws with what it said when it fails. */
async function ip(...args: string[]): Promise<void> {
  const { success, stderr } = await run("ip", args);
  if (!success) throw new Error(`ip ${args.join(" ")}: ${stderr}`);
}

/** The two hosts: network namespaces joined by a veth pair in 10.213.x.0/24. */
interface Hosts {
  /** The server's namespace. */
  server: string;
  /** The client's namespace, outside the allow list. */
  client: string;
  /** The server's address on the veth pair. */
  serverAddress: string;
  /** The client's. */
  clientAddress: string;
}

/**
 * Makes the two namespaces, their link and their addresses, and puts their
 * removal on `cleanup` (deleting a namespace removes its end of the veth).
 */
async function makeHosts(cleanup: AsyncDisposableStack): Promise<Hosts> {
  const subnet = `10.213.${Deno.pid % 254 + 1}`;
  const hosts = {
    server: `tcpcache-server-${Deno.pid}`,
    client: `tcpcache-client-${Deno.pid}`,
    serverAddress: `${subnet}.1`,
    clientAddress: `${subnet}.2`,
  };
  for (const namespace of [hosts.server, hosts.client]) {
    await ip("netns", "add", namespace);
    cleanup.defer(() => ip("netns", "del", namespace));
  }
  await ip(
    ...["-n", hosts.server, "link", "add", "name", "veth-server", "type", "veth"],
    ...["peer", "name", "veth-client", "netns", hosts.client],
  );
  for (
    const [namespace, device, address] of [
      [hosts.server, "veth-server", hosts.serverAddress],
      [hosts.client, "veth-client", hosts.clientAddress],
    ]
  ) {
    await ip("-n", namespace, "addr", "add", `${address}/24`, "dev", device);
    await ip("-n", namespace, "link", "set", "lo", "up");
    await ip("-n", namespace, "link", "set", device, "up");
  }
  return hosts;
}

/** A server running in a namespace. */
interface NamespacedServer {
  /** Stops it (SIGTERM, then SIGKILL after 5 s) and resolves to all it printed on stdout. */
  stop(): Promise<string>;
}

/**
 * Starts server.ts in `namespace` on 0.0.0.0 (its TCP and HTTP ports), with
 * the allow list, one thread, and `extra` options, over a fresh directory
 * below `root` holding hello.txt; resolves once it is ready. Its stop is on
 * `cleanup`.
 */
async function startServer(
  cleanup: AsyncDisposableStack,
  namespace: string,
  root: string,
  extra: string[] = [],
): Promise<NamespacedServer> {
  await writeTree(`${root}/files`, { "hello.txt": HELLO });
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", namespace, Deno.execPath(), "run", "-A", SERVER]
      .concat(["--dir", `${root}/files`, "--cache-dir", `${root}/cache`, "--host", "0.0.0.0"])
      .concat(["--port", String(TCP_PORT), "--http-port", String(HTTP_PORT)])
      .concat(["--allow", ALLOW, "--workers", "1", ...extra]),
    cwd: PROJECT,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const [watched, kept] = child.stdout.tee();
  const stdout = new Response(kept).text();
  let stopped: Promise<string> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // it has ended already
      }
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      try {
        await child.status;
      } finally {
        clearTimeout(timer);
      }
      return await stdout;
    })();
  cleanup.defer(async () => void await stop());
  await waitForOutput(child, watched, /listening on 0\.0\.0\.0:\d+.*HTTPS? on/, COMMAND_TIMEOUT_MS);
  return { stop };
}

/** Runs the probe script (saved at `script`) in `namespace` against `host:port`. */
async function probe(
  namespace: string,
  script: string,
  host: string,
  port: number,
  payload: string,
  caFile?: string,
): Promise<ProbeReport> {
  const args = ["netns", "exec", namespace, Deno.execPath(), "run", "-A", script]
    .concat([host, String(port), payload, ...(caFile ? [caFile] : [])]);
  const { success, stdout, stderr } = await run(
    "ip",
    args,
    script.slice(0, script.lastIndexOf("/")),
  );
  assert.ok(success, `the probe of ${host}:${port} from ${namespace} failed: ${stderr}`);
  return JSON.parse(stdout);
}

/** The JSON body of a `STATS` answer the probe received. */
function statsOf(report: ProbeReport): ServerStats {
  const header = /^OK (\d+) type=json\n/.exec(report.text);
  assert.ok(header, `not a STATS answer: ${JSON.stringify(report.text)}`);
  const body = report.text.slice(header[0].length);
  assert.equal(new TextEncoder().encode(body).length, Number(header[1]));
  return JSON.parse(body);
}

/** The CLIENT field (`ip:port`) of every access-log line in the server's stdout. */
function loggedClients(stdout: string): string[] {
  return [...stdout.matchAll(/^\d{4}-\d\d-\d\dT\S+ (\S+) /gm)].map((match) => match[1]);
}

/** Makes a temporary directory, removed by `cleanup`, with the probe script in it. */
async function workspace(cleanup: AsyncDisposableStack): Promise<{ root: string; script: string }> {
  const root = await Deno.makeTempDir({ prefix: "tcpcache-netns-" });
  cleanup.defer(() => Deno.remove(root, { recursive: true }));
  const script = `${root}/probe.ts`;
  await Deno.writeTextFile(script, PROBE_SCRIPT);
  return { root, script };
}

Deno.test({
  name: "--allow: a host outside the list (another network namespace) is closed at accept, " +
    "nothing read or answered; 127.0.0.1 is served",
  ignore: !namespaces,
  fn: async () => {
    await using cleanup = new AsyncDisposableStack();
    const { root, script } = await workspace(cleanup);
    const hosts = await makeHosts(cleanup);
    const server = await startServer(cleanup, hosts.server, root);

    // The refused host: its connection is accepted by the kernel, then
    // closed by the server with nothing sent back, on both ports.
    const refused = [
      await probe(hosts.client, script, hosts.serverAddress, TCP_PORT, "PING\n"),
      await probe(
        hosts.client,
        script,
        hosts.serverAddress,
        HTTP_PORT,
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      ),
    ];
    for (const report of refused) {
      assert.equal(report.bytes, 0, `nothing comes back: ${JSON.stringify(report)}`);
      assert.notEqual(report.end, "timeout", "the server closed the connection at once");
    }

    // 127.0.0.1, in the server's own namespace: served on both ports.
    const ping = await probe(hosts.server, script, "127.0.0.1", TCP_PORT, "PING\n");
    assert.equal(ping.text, "OK 0\n");
    assert.equal(ping.end, "eof");
    const get = await probe(
      hosts.server,
      script,
      "127.0.0.1",
      HTTP_PORT,
      "GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(get.text, /^HTTP\/1\.1 200 /);
    assert.ok(get.text.endsWith(`\r\n\r\n${HELLO}`), get.text);

    // Counted as denied, and nowhere else.
    const stats = statsOf(await probe(hosts.server, script, "127.0.0.1", TCP_PORT, "STATS\n"));
    assert.equal(stats.access.denied, refused.length);
    assert.deepEqual(stats.access.allow, ["127.0.0.0/8", "::1/128"]);
    assert.equal(stats.requests, 3, "PING, the GET and this STATS (counted as it arrives)");
    assert.equal(stats.protocols.tcp.requests, 1, "the PING (this STATS is not answered yet)");
    assert.equal(stats.protocols.http.requests, 1, "the GET");
    assert.equal(stats.connections.total, 2, "TCP: the PING's and this one");
    const metrics = await probe(
      hosts.server,
      script,
      "127.0.0.1",
      HTTP_PORT,
      "GET /-/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(metrics.text, /^tcpcache_denied_connections_total 2$/m);

    const clients = loggedClients(await server.stop());
    assert.equal(clients.length, 4, "PING, GET, STATS and GET /-/metrics");
    for (const client of clients) {
      assert.ok(
        !client.startsWith(`${hosts.clientAddress}:`),
        `logged the refused host: ${client}`,
      );
      assert.match(client, /^127\.0\.0\.1:\d+$/);
    }
  },
});

/**
 * `openssl s_client` from `namespace` to `host`'s TCP port, sending
 * `PING` and `QUIT` once the handshake is done and reading until the server
 * closes: the bytes of the handshake it read and wrote, as it counts them,
 * whether an answer came (`OK 0`), and the lines of its output that sum the
 * handshake up.
 */
async function clientHello(
  namespace: string,
  host: string,
  caFile: string,
): Promise<{ read: number; written: number; answered: boolean; summary: string }> {
  const { stdout, stderr } = await run(
    "ip",
    ["netns", "exec", namespace, "openssl", "s_client", "-connect", `${host}:${TCP_PORT}`]
      .concat(["-servername", "localhost", "-CAfile", caFile, "-ign_eof"]),
    undefined,
    "PING\nQUIT\n",
  );
  const output = stdout + stderr;
  const counts = /SSL handshake has read (\d+) bytes and written (\d+) bytes/.exec(output);
  assert.ok(counts, `s_client said nothing of the handshake:\n${output}`);
  const lines = output.split("\n").filter((line) =>
    /^(CONNECTED|SSL handshake|New, |Verification|Verify return code|.*errno=)/.test(line)
  );
  return {
    read: Number(counts[1]),
    written: Number(counts[2]),
    answered: /^OK 0\r?$/m.test(stdout),
    summary: [...new Set(lines)].join("\n"),
  };
}

Deno.test({
  name: "--allow with TLS: a host outside the list is closed unanswered; 127.0.0.1 is served",
  ignore: !namespaces || !opensslAvailable(),
  fn: async () => {
    await using cleanup = new AsyncDisposableStack();
    const { root, script } = await workspace(cleanup);
    const certificates = await makeCertificates();
    cleanup.defer(() => certificates.remove());
    const hosts = await makeHosts(cleanup);
    const { leaf, ca } = certificates;
    const server = await startServer(
      cleanup,
      hosts.server,
      root,
      ["--tls-cert", leaf.certFile, "--tls-key", leaf.keyFile],
    );

    // The refused host, then the same client at 127.0.0.1, then what the
    // server counted: all gathered first, so a failure shows the whole story.
    const refused = await clientHello(hosts.client, hosts.serverAddress, ca.certFile);
    const allowed = await clientHello(hosts.server, "127.0.0.1", ca.certFile);
    const { access } = statsOf(
      await probe(hosts.server, script, "127.0.0.1", TCP_PORT, "STATS\n", ca.certFile),
    );

    assert.ok(refused.written > 0, "a ClientHello was sent");
    // Deno's TLS layer may have answered the ClientHello before the gate
    // closed the connection; no request of the refused host is answered.
    assert.equal(refused.answered, false, `the refused host got an answer:\n${refused.summary}`);
    assert.ok(allowed.answered, `127.0.0.1 gets its OK 0:\n${allowed.summary}`);
    assert.match(allowed.summary, /Verify return code: 0 \(ok\)/);
    assert.equal(access.tls, true);
    assert.equal(access.denied, 1);
    assert.equal(access.tlsHandshakeFailures, 0, "the refused peer is counted once, as denied");
    assert.equal(access.tlsHandshakes, 2, "s_client's from 127.0.0.1 and the STATS connection's");

    const clients = loggedClients(await server.stop());
    assert.deepEqual(
      clients.map((client) => client.split(":")[0]),
      ["127.0.0.1", "127.0.0.1", "127.0.0.1"],
      "PING and QUIT of s_client at 127.0.0.1, and the STATS",
    );
  },
});
