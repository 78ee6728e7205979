/**
 * Certificates made for a test with `openssl`: a private CA and leaves it
 * signs (valid for localhost and 127.0.0.1, expired, for another name),
 * and a second CA that signed none of them.
 *
 * @module
 */

/** A certificate's files and their PEM text. */
export interface Issued {
  /** The certificate's file. */
  certFile: string;
  /** The private key's file. */
  keyFile: string;
  /** The certificate, PEM. */
  cert: string;
  /** The key, PEM. */
  key: string;
}

/** What {@linkcode makeCertificates} makes. */
export interface TestCertificates {
  /** The directory that holds them (removed by `remove`). */
  dir: string;
  /** The CA that signed the leaves. */
  ca: Issued;
  /** A CA that signed nothing here. */
  otherCa: Issued;
  /** localhost and 127.0.0.1, valid for a day. */
  leaf: Issued;
  /** The same names, expired a year ago. */
  expired: Issued;
  /** Valid, for the name `elsewhere.test` only. */
  wrongHost: Issued;
  /** Issues another valid leaf for localhost (a renewal), with a new serial number. */
  renew(name: string): Promise<Issued & { serial: string }>;
  /** Removes the files. */
  remove(): Promise<void>;
}

/** Whether `openssl` is there to make certificates with. */
export function opensslAvailable(): boolean {
  try {
    return new Deno.Command("openssl", { args: ["version"], stdout: "null" }).outputSync().success;
  } catch {
    return false;
  }
}

async function openssl(args: string[], cwd: string): Promise<string> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

async function issued(dir: string, name: string): Promise<Issued> {
  const certFile = `${dir}/${name}.pem`;
  const keyFile = `${dir}/${name}.key`;
  return {
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    key: await Deno.readTextFile(keyFile),
  };
}

/** Makes a CA and the leaves of {@linkcode TestCertificates} in a temporary directory. */
export async function makeCertificates(): Promise<TestCertificates> {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-certs-" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  const makeCa = (name: string) =>
    openssl(
      ["req", "-x509", ...ec, "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2"]
        .concat(["-subj", `/CN=tcpcache test ${name}`]),
      dir,
    );
  await makeCa("ca");
  await makeCa("other-ca");
  // `openssl ca` sets the validity dates exactly (an expired leaf needs them).
  await Deno.writeTextFile(`${dir}/index.txt`, "");
  await Deno.writeTextFile(`${dir}/serial`, "1000\n");
  await Deno.writeTextFile(
    `${dir}/ca.cnf`,
    `[ca]
default_ca = test
[test]
dir = ${dir}
database = ${dir}/index.txt
serial = ${dir}/serial
new_certs_dir = ${dir}
certificate = ${dir}/ca.pem
private_key = ${dir}/ca.key
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[leaf]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $ENV::SAN
`,
  );
  const makeLeaf = async (name: string, san: string, dates: string[]) => {
    await openssl(
      ["req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", "/CN=localhost"],
      dir,
    );
    const command = new Deno.Command("openssl", {
      args: ["ca", "-batch", "-config", "ca.cnf", "-extensions", "leaf", "-notext"]
        .concat(["-in", `${name}.csr`, "-out", `${name}.pem`, ...dates]),
      cwd: dir,
      env: { SAN: san },
      stdout: "piped",
      stderr: "piped",
    });
    const out = await command.output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
    return await issued(dir, name);
  };
  const day = ["-days", "1"];
  const localhost = "DNS:localhost,IP:127.0.0.1";
  const ca = await issued(dir, "ca");
  const otherCa = await issued(dir, "other-ca");
  const leaf = await makeLeaf("leaf", localhost, day);
  const expired = await makeLeaf(
    "expired",
    localhost,
    ["-startdate", "20240101000000Z", "-enddate", "20250101000000Z"],
  );
  const wrongHost = await makeLeaf("wrong-host", "DNS:elsewhere.test", day);
  return {
    dir,
    ca,
    otherCa,
    leaf,
    expired,
    wrongHost,
    async renew(name: string) {
      const renewed = await makeLeaf(name, localhost, day);
      const serial = (await openssl(["x509", "-in", `${name}.pem`, "-noout", "-serial"], dir))
        .trim().replace(/^serial=/, "");
      return { ...renewed, serial };
    },
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}

/** The serial number of the certificate a TLS server at 127.0.0.1:`port` presents. */
export async function presentedSerial(port: number, caFile: string): Promise<string> {
  const client = new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-CAfile", caFile, "-showcerts"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  await client.stdin.close();
  const { stdout } = await client.output();
  const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(
    new TextDecoder().decode(stdout),
  )?.[0];
  if (!pem) throw new Error("s_client showed no certificate");
  const x509 = new Deno.Command("openssl", {
    args: ["x509", "-noout", "-serial"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = x509.stdin.getWriter();
  await writer.write(new TextEncoder().encode(pem));
  await writer.close();
  const out = await x509.output();
  return new TextDecoder().decode(out.stdout).trim().replace(/^serial=/, "");
}
