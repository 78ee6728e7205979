/**
 * The client's check of a streamed miss (`streamed=1`, no sha256 in the
 * header), against a scripted server on a real socket: the digest `STAT`
 * answers after the body is the one checked against, a wrong one is an
 * IntegrityError, and no digest of that version is an UnverifiedError,
 * never a download accepted unchecked. Pipelined requests keep their order.
 */

import assert from "node:assert/strict";
import {
  connect,
  IntegrityError,
  leavesConnectionUsable,
  type TcpCacheClient,
  UnverifiedError,
} from "../../client.ts";
import { ByteReader, writeAll } from "../../util/byte_reader.ts";
import { formatError, formatOk } from "../../protocol.ts";
import { seededBytes, sha256 } from "../helpers.ts";

const BODY = seededBytes(300_000, 41);
const MTIME = 1_700_000_000_000;
const encoder = new TextEncoder();

/** What the scripted server answers to `STAT big.bin`: a JSON body, or an error line. */
type StatAnswer = Record<string, unknown> | string;

/**
 * A server that answers `GET big.bin` as a streamed miss of BODY, `GET
 * small.txt` as a plain hit, and `STAT big.bin` as `stat` says; it records
 * the request lines in the order they came.
 */
async function withScriptedServer(
  stat: StatAnswer,
  test: (client: TcpCacheClient, lines: string[]) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lines: string[] = [];
  const serving = (async () => {
    const conn = await listener.accept();
    const reader = new ByteReader(conn);
    try {
      while (true) {
        const raw = await reader.readLine(8192);
        if (raw === null) return;
        const line = new TextDecoder().decode(raw);
        lines.push(line);
        await writeAll(conn, answer(line, stat));
      }
    } catch {
      // the client went away
    } finally {
      conn.close();
    }
  })();
  const client = await connect({ host: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
  try {
    await test(client, lines);
  } finally {
    client.close();
    await serving;
    listener.close();
  }
}

function answer(line: string, stat: StatAnswer): Uint8Array {
  if (line === "GET big.bin") {
    const fields = { size: BODY.length, offset: 0, mtime: MTIME, cache: "miss", streamed: 1 };
    const head = encoder.encode(formatOk(BODY.length, fields));
    const out = new Uint8Array(head.length + BODY.length);
    out.set(head);
    out.set(BODY, head.length);
    return out;
  }
  if (line === "GET small.txt") {
    const body = encoder.encode("hello");
    return encoder.encode(
      formatOk(5, { size: 5, offset: 0, mtime: MTIME, cache: "hit", sha256: sha256(body) }) +
        "hello",
    );
  }
  if (line === "STAT big.bin") {
    if (typeof stat === "string") return encoder.encode(stat);
    const body = encoder.encode(JSON.stringify(stat));
    const out = new Uint8Array([
      ...encoder.encode(formatOk(body.length, { type: "json" })),
      ...body,
    ]);
    return out;
  }
  return encoder.encode(formatError(400, "unexpected"));
}

const goodStat = {
  path: "big.bin",
  size: BODY.length,
  mtime: MTIME,
  cached: true,
  sha256: sha256(BODY),
};

Deno.test("a streamed miss is checked against the digest STAT answers after it, pipelined requests in order", async () => {
  await withScriptedServer(goodStat, async (client, lines) => {
    // Issued at once: the STAT goes out once the big header is read, after GET small.txt.
    const [big, small] = await Promise.all([client.get("big.bin"), client.get("small.txt")]);
    assert.deepEqual(lines, ["GET big.bin", "GET small.txt", "STAT big.bin"]);
    assert.ok(big.streamed && big.verified);
    assert.equal(big.sha256, sha256(BODY));
    assert.equal(sha256(big.bytes!), sha256(BODY));
    assert.ok(small.verified && !small.streamed);
    assert.equal(new TextDecoder().decode(small.bytes), "hello");
  });
});

Deno.test("a streamed miss whose STAT digest differs: IntegrityError, and the connection stays usable", async () => {
  await withScriptedServer({ ...goodStat, sha256: "0".repeat(64) }, async (client) => {
    const error = await client.get("big.bin").catch((error) => error);
    assert.ok(error instanceof IntegrityError && !(error instanceof UnverifiedError), error);
    assert.match(error.message, /sha256 mismatch for big\.bin/);
    assert.ok(leavesConnectionUsable(error));
    assert.equal((await client.get("small.txt")).cache, "hit");
  });
});

const unverifiable: [string, StatAnswer, RegExp][] = [
  ["no digest", { ...goodStat, cached: false, sha256: null }, /has no sha256/],
  ["another version (mtime)", { ...goodStat, mtime: MTIME + 1 }, /changed on the server/],
  ["another version (size)", { ...goodStat, size: BODY.length + 1 }, /changed on the server/],
  ["a 404", formatError(404, "not found: big.bin"), /STAT answered 404/],
];

for (const [name, stat, message] of unverifiable) {
  Deno.test(`a streamed miss whose STAT gives ${name}: UnverifiedError, never accepted unchecked`, async () => {
    await withScriptedServer(stat, async (client) => {
      const error = await client.get("big.bin").catch((error) => error);
      assert.ok(error instanceof UnverifiedError, String(error));
      assert.match(error.message, message);
      assert.ok(leavesConnectionUsable(error));
      assert.equal((await client.get("small.txt")).cache, "hit", "the connection goes on");
    });
  });
}
