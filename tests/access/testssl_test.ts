/**
 * The server's TLS as an outside scanner rates it: `testssl.sh` (Debian's
 * package installs it as `testssl`) is run once against the HTTPS port of a
 * server with a certificate from a private CA. Only TLS 1.2 and 1.3 may be
 * offered, and no weak cipher category (NULL, anonymous, export, LOW with
 * RC4 and DES, 3DES/IDEA, obsolete CBC). The certificate itself is not
 * judged: the CA is private, so testssl cannot trust it.
 *
 * The scan takes about 20 s; it is killed after 180 s. The test prints one
 * line per protocol and per cipher category, for the docs. Skipped, with
 * the reason in its name, when `testssl` or `openssl` is not installed.
 *
 * @module
 */

import assert from "node:assert/strict";
import { which, withServer } from "../helpers.ts";
import { makeCertificates, opensslAvailable } from "./certs.ts";

const TESTSSL_TIMEOUT_MS = 180_000;

const TESTSSL = which("testssl") ?? which("testssl.sh");
const missing = [TESTSSL ? undefined : "testssl", opensslAvailable() ? undefined : "openssl"]
  .filter((name) => name !== undefined);

/** One finding of testssl's JSON output. */
interface Finding {
  id: string;
  /** DEBUG, INFO, OK, LOW, MEDIUM, HIGH, CRITICAL, WARN or FATAL. */
  severity: string;
  finding: string;
}

/** What the test reads of testssl's `--jsonfile-pretty` output. */
interface ScanResult {
  protocols: Finding[];
  ciphers: Finding[];
}

/** The protocols that must not be offered, and those that must. */
const REFUSED_PROTOCOLS = ["SSLv2", "SSLv3", "TLS1", "TLS1_1"];
const OFFERED_PROTOCOLS = ["TLS1_2", "TLS1_3"];
/**
 * The weak cipher categories, by testssl 3.0's ids: NULL, anonymous, export,
 * LOW (64-bit, DES, RC2, RC4), 3DES/IDEA, and obsolete CBC, which 3.0 calls
 * AVERAGE and 3.2 OBSOLETED. Any other category but the strong ones must not
 * be offered either.
 */
const WEAK_CIPHERS = [
  "cipherlist_NULL",
  "cipherlist_aNULL",
  "cipherlist_EXPORT",
  "cipherlist_LOW",
  "cipherlist_3DES_IDEA",
];
const OBSOLETE_CBC = ["cipherlist_AVERAGE", "cipherlist_OBSOLETED"];
/** The severities of a finding that is no problem. */
const HARMLESS = ["OK", "INFO"];

/**
 * Runs testssl (protocols and cipher categories only) against `url` with
 * its JSON written to `jsonFile`, killing it after
 * {@linkcode TESTSSL_TIMEOUT_MS}; resolves to the scan's result and how
 * long it took.
 */
async function scan(
  testssl: string,
  url: string,
  jsonFile: string,
): Promise<{ result: ScanResult; seconds: number }> {
  const started = performance.now();
  const child = new Deno.Command(testssl, {
    args: ["--quiet", "--color", "0", "--warnings", "off", "--nodns", "none"]
      .concat(["--connect-timeout", "5", "--openssl-timeout", "5"])
      .concat(["--protocols", "--std", "--jsonfile-pretty", jsonFile, url]),
    // Its stdin is a pipe closed at once: /dev/null is not always the empty device here.
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await child.stdin.close();
  const timer = setTimeout(() => child.kill("SIGKILL"), TESTSSL_TIMEOUT_MS);
  try {
    const output = await child.output();
    const seconds = (performance.now() - started) / 1000;
    const said = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    assert.ok(
      output.success,
      `testssl failed (${output.code}) after ${seconds.toFixed(0)} s:\n${said}`,
    );
    const json = JSON.parse(await Deno.readTextFile(jsonFile));
    return { result: json.scanResult[0], seconds };
  } finally {
    clearTimeout(timer);
  }
}

/** The finding `id` of `findings`; fails when testssl did not report it. */
function findingOf(findings: Finding[], id: string): Finding {
  const found = findings.find((finding) => finding.id === id);
  assert.ok(found, `testssl reported no ${id} (it reported ${findings.map((f) => f.id)})`);
  return found;
}

Deno.test({
  name: "testssl rates the HTTPS port: TLS 1.2 and 1.3 only, no weak cipher category" +
    (missing.length > 0 ? ` (skipped: ${missing.join(", ")} not found)` : ""),
  ignore: missing.length > 0,
  fn: async () => {
    const certificates = await makeCertificates();
    const out = await Deno.makeTempDir({ prefix: "tcpcache-testssl-" });
    try {
      const { leaf } = certificates;
      const options = { tls: { cert: leaf.cert, key: leaf.key }, httpPort: 0 };
      let scanned: Awaited<ReturnType<typeof scan>> | undefined;
      await withServer({ "hello.txt": "hello\n" }, options, async ({ server }) => {
        const url = `https://127.0.0.1:${server.httpAddr!.port}`;
        scanned = await scan(TESTSSL!, url, `${out}/testssl.json`);
      });
      const { result, seconds } = scanned!;

      console.log(`testssl ${TESTSSL}: ${seconds.toFixed(0)} s`);
      for (const { id, finding, severity } of [...result.protocols, ...result.ciphers]) {
        console.log(`${id.padEnd(22)} ${finding} (${severity})`);
      }

      for (const id of REFUSED_PROTOCOLS) {
        assert.equal(findingOf(result.protocols, id).finding, "not offered", id);
      }
      for (const id of OFFERED_PROTOCOLS) {
        assert.match(findingOf(result.protocols, id).finding, /^offered/, id);
      }
      // Every weak category was rated (none left out by a failed check),
      // and every category but the strong ones is not offered.
      for (const id of WEAK_CIPHERS) findingOf(result.ciphers, id);
      assert.ok(
        result.ciphers.some(({ id }) => OBSOLETE_CBC.includes(id)),
        "testssl rated the obsolete CBC ciphers",
      );
      for (const { id, finding } of result.ciphers) {
        if (id.startsWith("cipherlist_STRONG")) continue;
        assert.equal(finding, "not offered", id);
      }
      assert.ok(
        result.ciphers.some(({ id, finding }) =>
          id.startsWith("cipherlist_STRONG") && finding.startsWith("offered")
        ),
        "a strong (AEAD) category is offered",
      );
      for (const { id, severity } of [...result.protocols, ...result.ciphers]) {
        assert.ok(HARMLESS.includes(severity), `${id} is rated ${severity}`);
      }
    } finally {
      await Deno.remove(out, { recursive: true });
      await certificates.remove();
    }
  },
});
