/**
 * Whole-file hits from memory, the answers given without waiting (see
 * `TcpProtocol`'s `#answerHit`): what they send, log and count is what the
 * general path does, and they are never stale.
 */

import assert from "node:assert/strict";
import type { RequestRecord } from "../../server.ts";
import { RawConnection, seededBytes, sha256, withServer } from "../helpers.ts";

Deno.test("TCP hits from memory, small and larger than the coalescing room, pipelined: whole bodies, logged bytes, fresh after a change", async () => {
  const files = {
    "s.bin": seededBytes(4096, 1),
    "m.bin": seededBytes(16 * 1024, 2), // with its header, past the 16 KiB outbox room
    "l.bin": seededBytes(40 * 1024, 3),
  };
  const names = Object.keys(files) as (keyof typeof files)[];
  const records: RequestRecord[] = [];
  await withServer(files, { onRequest: (r) => records.push(r) }, async ({ port, dir, server }) => {
    const conn = await RawConnection.open(port);
    try {
      for (const name of names) {
        assert.equal((await conn.request(`GET ${name}`)).fields.cache, "miss");
      }
      assert.equal(server.cache.count, 3);
      records.length = 0;
      // Every file twice, pipelined in one write: all hits, in order.
      const order = [...names, ...names];
      await conn.send(order.map((name) => `GET ${name}\n`).join(""));
      for (const name of order) {
        const answer = await conn.response();
        assert.equal(answer.fields.cache, "hit");
        assert.equal(answer.fields.size, String(files[name].length));
        assert.equal(answer.fields.sha256, sha256(files[name]));
        assert.deepEqual(answer.body, files[name]);
      }
      assert.deepEqual(
        records.map((r) => [r.path, r.cache, r.status, r.bytes > files[r.path as "s.bin"].length]),
        order.map((name) => [name, "hit", "OK", true]),
      );
      // Changed on disk (same size, other bytes, new mtime): never the old copy.
      const changed = seededBytes(4096, 7);
      await Deno.writeFile(`${dir}/s.bin`, changed);
      await Deno.utime(`${dir}/s.bin`, new Date(), new Date(Date.now() + 5000));
      const fresh = await conn.request("GET s.bin");
      assert.equal(fresh.fields.cache, "miss");
      assert.deepEqual(fresh.body, changed);
      // A range of a cached file is not a whole-file hit: its own header.
      const range = await conn.request("GET l.bin 10 5");
      assert.equal(range.fields.offset, "10");
      assert.deepEqual(range.body, files["l.bin"].subarray(10, 15));
    } finally {
      conn.close();
    }
  });
});
