/**
 * download(): to temporary directories, against a real server on 127.0.0.1
 * (and, for answers no real server gives, a fake one). A destination only
 * ever holds a complete, verified file; a `.part` survives only a broken
 * connection, and `resume` continues it.
 */

import assert from "node:assert/strict";
import {
  connect,
  ConnectionError,
  download,
  type GetHeader,
  IntegrityError,
  InterruptedDownloadError,
  ResumeError,
  ServerError,
  type TcpCacheClient,
} from "../../client.ts";
import { withFakeServer } from "../cli/cli_helpers.ts";
import { seededBytes, sha256, type TestServer, type Tree, withServer } from "../helpers.ts";
import type { ServerOptions } from "../../server.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

const big = seededBytes(2 * MiB, 21);
const tree: Tree = {
  "hello.txt": "hello, download\n",
  "docs/big.bin": big,
};

interface Context extends TestServer {
  /** An empty temporary directory for the downloads. */
  out: string;
  client: TcpCacheClient;
}

/** Runs `test` with a server over `files`, a client, and an output directory. */
async function withDownloads(
  files: Tree,
  options: Omit<ServerOptions, "dir" | "cacheDir" | "port">,
  test: (context: Context) => Promise<void>,
): Promise<void> {
  await withServer(files, options, async (server) => {
    const out = await Deno.makeTempDir({ prefix: "tcpcache-download-" });
    const client = await connect({ host: "127.0.0.1", port: server.port });
    try {
      await test({ ...server, out, client });
    } finally {
      client.close();
      await Deno.remove(out, { recursive: true });
    }
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function mtimeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mtime!.getTime();
}

/** The error `promise` rejects with (failing when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail("expected a rejection");
}

/**
 * Downloads `path` over a connection of its own that this side cuts once
 * `cutAfter` body bytes have arrived; resolves to the error it ended with.
 */
async function interruptedDownload(
  port: number,
  path: string,
  dest: string,
  cutAfter: number,
  resume = false,
): Promise<unknown> {
  const client = await connect({ host: "127.0.0.1", port });
  let received = 0;
  try {
    return await rejection(download(client, path, dest, {
      resume,
      onProgress: (bytes) => {
        received += bytes;
        if (received >= cutAfter) client.close();
      },
    }));
  } finally {
    client.close();
  }
}

Deno.test("download: writes DEST whole and verified, reports header and progress, leaves no .part", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/big.bin`;
    const headers: GetHeader[] = [];
    let progress = 0;
    let sawPartOnly = false;
    const result = await download(t.client, "docs/big.bin", dest, {
      onHeader: (header) => headers.push(header),
      onProgress: (bytes) => {
        if (progress === 0) {
          // Mid-download, the bytes are in DEST.part and DEST does not exist.
          sawPartOnly = Deno.statSync(`${dest}.part`).isFile && !existsSync(dest);
        }
        progress += bytes;
      },
    });
    assert.ok(sawPartOnly, "during the download only DEST.part exists");
    assert.equal(progress, big.length);
    assert.equal(headers.length, 1);
    assert.equal(headers[0].size, big.length);
    assert.equal(headers[0].offset, 0);
    assert.equal(result.dest, dest);
    assert.equal(result.verified, true);
    assert.equal(result.cache, "miss");
    assert.equal(result.sha256, sha256(big));
    assert.equal(result.size, big.length);
    assert.equal(result.length, big.length);
    assert.equal(result.mtime, await mtimeOf(`${t.dir}/docs/big.bin`));
    assert.equal("bytes" in result, false, "the body is in the file, not the result");
    assert.equal(sha256(await Deno.readFile(dest)), sha256(big));
    assert.equal(await exists(`${dest}.part`), false);

    // Again: a hit, still verified; the same connection serves both.
    const again = await download(t.client, "docs/big.bin", dest);
    assert.equal(again.cache, "hit");
    assert.equal(again.verified, true);
    assert.deepEqual(await Deno.readFile(dest), big);
  });
});

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("download: an existing DEST is replaced only once the new file is complete", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/big.bin`;
    await Deno.writeTextFile(dest, "the previous version\n");
    let during = "";
    await download(t.client, "docs/big.bin", dest, {
      onProgress: () => {
        during ||= Deno.readTextFileSync(dest);
      },
    });
    assert.equal(during, "the previous version\n", "DEST untouched while the bytes arrive");
    assert.deepEqual(await Deno.readFile(dest), big);
  });
});

Deno.test("download: a server error throws ServerError and leaves neither DEST nor .part", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/missing.txt`;
    const error = await rejection(download(t.client, "no/such.txt", dest));
    assert.ok(error instanceof ServerError, String(error));
    assert.equal(error.code, 404);
    assert.equal(await exists(dest), false);
    assert.equal(await exists(`${dest}.part`), false);

    // An existing DEST survives a failed download untouched.
    await Deno.writeTextFile(dest, "keep me\n");
    await assert.rejects(download(t.client, "no/such.txt", dest), ServerError);
    assert.equal(await Deno.readTextFile(dest), "keep me\n");

    // And the connection is still usable.
    const result = await download(t.client, "hello.txt", `${t.out}/hello.txt`);
    assert.equal(result.verified, true);
    assert.equal(await Deno.readTextFile(`${t.out}/hello.txt`), "hello, download\n");
  });
});

Deno.test("download: without resume, a stale .part is started afresh, not appended to", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/hello.txt`;
    await Deno.writeTextFile(
      `${dest}.part`,
      "stale bytes from some earlier attempt, longer than the file",
    );
    const headers: GetHeader[] = [];
    const result = await download(t.client, "hello.txt", dest, {
      onHeader: (header) => headers.push(header),
    });
    assert.equal(headers[0].offset, 0, "the whole file was asked for");
    assert.equal(result.verified, true);
    assert.equal(await Deno.readTextFile(dest), "hello, download\n");
    assert.equal(await exists(`${dest}.part`), false);
  });
});

Deno.test("download: a connection broken mid-body keeps the .part, stamped with the file's mtime; resume finishes it", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/big.bin`;
    const error = await interruptedDownload(t.port, "docs/big.bin", dest, 256 * KiB);
    assert.ok(error instanceof InterruptedDownloadError, String(error));
    assert.ok(error instanceof ConnectionError, "an interruption is a connection error");
    assert.equal(error.partial, `${dest}.part`);
    assert.ok(error.received >= 256 * KiB && error.received < big.length, `${error.received}`);
    assert.equal(await exists(dest), false, "no DEST for a partial file");
    const part = await Deno.readFile(`${dest}.part`);
    assert.equal(part.length, error.received, "the .part holds what was received");
    assert.deepEqual(part, big.subarray(0, part.length), "and it is the file's beginning");
    const originMtime = await mtimeOf(`${t.dir}/docs/big.bin`);
    assert.equal(await mtimeOf(`${dest}.part`), originMtime, "stamped with the server's mtime");

    // Resume asks only for the rest and verifies the whole file.
    const headers: GetHeader[] = [];
    let progress = 0;
    const result = await download(t.client, "docs/big.bin", dest, {
      resume: true,
      onHeader: (header) => headers.push(header),
      onProgress: (bytes) => progress += bytes,
    });
    assert.equal(headers[0].offset, part.length, "a range request from the .part's end");
    assert.equal(result.offset, part.length);
    assert.equal(result.length, big.length - part.length);
    assert.equal(progress, big.length - part.length, "only the rest travelled");
    assert.equal(result.verified, true, "the whole file matched the server's sha256");
    assert.deepEqual(await Deno.readFile(dest), big);
    assert.equal(await exists(`${dest}.part`), false);
  });
});

Deno.test("download: a resumed download broken again keeps the grown .part, and a third attempt completes", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/big.bin`;
    const first = await interruptedDownload(t.port, "docs/big.bin", dest, 200 * KiB);
    assert.ok(first instanceof InterruptedDownloadError);
    const second = await interruptedDownload(t.port, "docs/big.bin", dest, 300 * KiB, true);
    assert.ok(second instanceof InterruptedDownloadError, String(second));
    assert.ok(second.received > first.received, "counted from the start of the file");
    const part = await Deno.readFile(`${dest}.part`);
    assert.equal(part.length, second.received);
    assert.deepEqual(part, big.subarray(0, part.length));
    const result = await download(t.client, "docs/big.bin", dest, { resume: true });
    assert.equal(result.offset, part.length);
    assert.equal(result.verified, true);
    assert.deepEqual(await Deno.readFile(dest), big);
  });
});

Deno.test("download: a connection broken before any body byte leaves no .part", async () => {
  const header = `OK 5000 size=5000 offset=0 mtime=1700000000000 cache=miss sha256=${
    "0".repeat(64)
  }\n`;
  const out = await Deno.makeTempDir({ prefix: "tcpcache-download-" });
  try {
    await withFakeServer(new TextEncoder().encode(header), async (port) => {
      const client = await connect({ host: "127.0.0.1", port });
      try {
        const error = await rejection(download(client, "f.bin", `${out}/f.bin`));
        assert.ok(error instanceof ConnectionError, String(error));
        assert.ok(!(error instanceof InterruptedDownloadError), "nothing to resume");
      } finally {
        client.close();
      }
    });
    assert.deepEqual([...Deno.readDirSync(out)], [], "neither DEST nor an empty .part");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("download: resume without a .part, or with an empty one, is an ordinary download", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/hello.txt`;
    for (
      const setup of [
        () => Promise.resolve(),
        () => Deno.writeFile(`${dest}.part`, new Uint8Array()),
      ]
    ) {
      await Deno.remove(dest).catch(() => {});
      await setup();
      const result = await download(t.client, "hello.txt", dest, { resume: true });
      assert.equal(result.offset, 0);
      assert.equal(result.verified, true);
      assert.equal(await Deno.readTextFile(dest), "hello, download\n");
      assert.equal(await exists(`${dest}.part`), false);
    }
  });
});

Deno.test("download: resume with a .part that already holds the whole file verifies and renames it", async () => {
  await withDownloads(tree, {}, async (t) => {
    await t.client.get("hello.txt"); // cached: the server knows its sha256
    const dest = `${t.out}/hello.txt`;
    await Deno.writeTextFile(`${dest}.part`, "hello, download\n");
    let progress = 0;
    const result = await download(t.client, "hello.txt", dest, {
      resume: true,
      onProgress: (bytes) => progress += bytes,
    });
    assert.equal(result.length, 0, "an empty range: nothing left to send");
    assert.equal(progress, 0);
    assert.equal(result.verified, true);
    assert.equal(await Deno.readTextFile(dest), "hello, download\n");
    assert.equal(await exists(`${dest}.part`), false);
  });
});

Deno.test("download: resume with a corrupt .part throws IntegrityError and removes it", async () => {
  await withDownloads(tree, {}, async (t) => {
    await t.client.get("docs/big.bin"); // cached, so the range answer carries the sha256
    const dest = `${t.out}/big.bin`;
    const part = big.slice(0, 100 * KiB);
    part[1234] ^= 0xff;
    await Deno.writeFile(`${dest}.part`, part);
    const error = await rejection(download(t.client, "docs/big.bin", dest, { resume: true }));
    assert.ok(error instanceof IntegrityError, String(error));
    assert.match(error.message, /sha256 mismatch for docs\/big\.bin/);
    assert.match(error.message, /discarded/);
    assert.equal(await exists(`${dest}.part`), false, "a corrupt .part is not kept");
    assert.equal(await exists(dest), false);
    // Verification failed after the whole answer was read: the connection is fine.
    const result = await download(t.client, "docs/big.bin", dest, { resume: true });
    assert.equal(result.verified, true);
    assert.deepEqual(await Deno.readFile(dest), big);
  });
});

Deno.test("download: resume with a .part longer than the file throws ResumeError and removes it", async () => {
  await withDownloads(tree, {}, async (t) => {
    const dest = `${t.out}/hello.txt`;
    await Deno.writeTextFile(`${dest}.part`, "hello, download\nand then some more bytes\n");
    const error = await rejection(download(t.client, "hello.txt", dest, { resume: true }));
    assert.ok(error instanceof ResumeError, String(error));
    assert.match(error.message, /longer than hello\.txt on the server; discarded/);
    assert.equal(await exists(`${dest}.part`), false);
    assert.equal(await exists(dest), false);
  });
});

Deno.test("download: a file too large for the cache: unverified, and resumed only from an interrupted .part", async () => {
  // The cache holds 64 KiB: the server never knows big.bin's sha256.
  await withDownloads(tree, { cacheSize: 64 * KiB }, async (t) => {
    const plain = await download(t.client, "docs/big.bin", `${t.out}/plain.bin`);
    assert.equal(plain.cache, "bypass");
    assert.equal(plain.sha256, undefined);
    assert.equal(plain.verified, false, "nothing to verify against, and it says so");
    assert.deepEqual(await Deno.readFile(`${t.out}/plain.bin`), big);

    // Interrupted: the .part carries the mtime, so resuming it is accepted.
    const dest = `${t.out}/big.bin`;
    const error = await interruptedDownload(t.port, "docs/big.bin", dest, 300 * KiB);
    assert.ok(error instanceof InterruptedDownloadError);
    const resumed = await download(t.client, "docs/big.bin", dest, { resume: true });
    assert.equal(resumed.offset, error.received);
    assert.equal(resumed.verified, false);
    assert.deepEqual(await Deno.readFile(dest), big);

    // A .part from anywhere else (its mtime is not the file's): refused, removed.
    const stray = `${t.out}/stray.bin`;
    await Deno.writeFile(`${stray}.part`, big.subarray(0, 100 * KiB));
    const refused = await rejection(download(t.client, "docs/big.bin", stray, { resume: true }));
    assert.ok(refused instanceof ResumeError, String(refused));
    assert.match(refused.message, /cannot verify .*stray\.bin\.part/);
    assert.equal(await exists(`${stray}.part`), false);
    assert.equal(await exists(stray), false);
  });
});

Deno.test("download: bytes that do not match the announced sha256 throw IntegrityError; nothing is kept", async () => {
  const body = "tampered\n";
  const header = `OK ${body.length} size=${body.length} offset=0 mtime=1700000000000 ` +
    `cache=hit sha256=${sha256("original\n")}\n`;
  const out = await Deno.makeTempDir({ prefix: "tcpcache-download-" });
  try {
    await withFakeServer(new TextEncoder().encode(header + body), async (port) => {
      const client = await connect({ host: "127.0.0.1", port });
      try {
        const error = await rejection(download(client, "x.txt", `${out}/x.txt`));
        assert.ok(error instanceof IntegrityError, String(error));
      } finally {
        client.close();
      }
    });
    assert.deepEqual([...Deno.readDirSync(out)], [], "neither DEST nor .part");
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("download: a server that closes mid-body leaves exactly the bytes that arrived in .part", async () => {
  const content = seededBytes(5000, 22);
  const mtime = Date.UTC(2024, 0, 2, 3, 4, 5);
  const header = `OK ${content.length} size=${content.length} offset=0 mtime=${mtime} ` +
    `cache=miss sha256=${sha256(content)}\n`;
  const response = new Uint8Array([
    ...new TextEncoder().encode(header),
    ...content.subarray(0, 1234),
  ]);
  const out = await Deno.makeTempDir({ prefix: "tcpcache-download-" });
  try {
    await withFakeServer(response, async (port) => {
      const client = await connect({ host: "127.0.0.1", port });
      try {
        const error = await rejection(download(client, "f.bin", `${out}/f.bin`));
        assert.ok(error instanceof InterruptedDownloadError, String(error));
        assert.equal(error.received, 1234);
        assert.match(error.message, /1234 bytes kept in .*f\.bin\.part/);
      } finally {
        client.close();
      }
    });
    assert.deepEqual(await Deno.readFile(`${out}/f.bin.part`), content.subarray(0, 1234));
    assert.equal(await mtimeOf(`${out}/f.bin.part`), mtime);
    assert.equal(await exists(`${out}/f.bin`), false);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("download: a destination whose directory is missing fails at once and creates nothing", async () => {
  await withDownloads(tree, {}, async (t) => {
    await assert.rejects(
      download(t.client, "hello.txt", `${t.out}/no/such/dir/hello.txt`),
      Deno.errors.NotFound,
    );
    assert.deepEqual([...Deno.readDirSync(t.out)], []);
    // Nothing was sent: the connection answers the next request in order.
    const result = await download(t.client, "hello.txt", `${t.out}/hello.txt`);
    assert.equal(result.verified, true);
  });
});
