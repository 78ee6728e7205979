import assert from "node:assert/strict";
import { COALESCE_LIMIT, Outbox } from "../../engine/outbox.ts";

/** A connection that records each write and can hold writes back. */
class FakeConn {
  writes: Uint8Array[] = [];
  gate: Promise<void> | undefined;
  maxPerWrite = Infinity;

  async write(bytes: Uint8Array): Promise<number> {
    await this.gate;
    const n = Math.min(bytes.length, this.maxPerWrite);
    this.writes.push(bytes.slice(0, n));
    return n;
  }

  get received(): Uint8Array {
    const out = new Uint8Array(this.writes.reduce((sum, w) => sum + w.length, 0));
    let offset = 0;
    for (const w of this.writes) {
      out.set(w, offset);
      offset += w.length;
    }
    return out;
  }
}

function bytes(length: number, fill: number): Uint8Array {
  return new Uint8Array(length).fill(fill);
}

Deno.test("small writes are held back and leave in one write on flush", async () => {
  const conn = new FakeConn();
  let sent = 0;
  const outbox = new Outbox(conn as unknown as Deno.Conn, (n) => sent += n);
  for (let i = 0; i < 100; i++) await outbox.write(bytes(5, i));
  assert.equal(conn.writes.length, 0);
  await outbox.flush();
  assert.equal(conn.writes.length, 1);
  assert.equal(sent, 500);
  assert.deepEqual([...conn.received].filter((_, i) => i % 5 === 0), [...Array(100).keys()]);
  await outbox.flush();
  assert.equal(conn.writes.length, 1, "an empty flush writes nothing");
});

Deno.test("order is kept across held-back, overflowing and large writes", async () => {
  const conn = new FakeConn();
  conn.maxPerWrite = 1000; // partial writes too
  const outbox = new Outbox(conn as unknown as Deno.Conn);
  const pieces = [
    bytes(10, 1),
    bytes(COALESCE_LIMIT - 5, 2),
    bytes(3 * COALESCE_LIMIT, 3),
    bytes(7, 4),
  ];
  for (const piece of pieces) await outbox.write(piece);
  await outbox.flush();
  const expected = new Uint8Array(pieces.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const piece of pieces) {
    expected.set(piece, offset);
    offset += piece.length;
  }
  assert.deepEqual(conn.received, expected);
});

Deno.test("writingSince marks a write waiting on the client, and clears after it", async () => {
  const conn = new FakeConn();
  const gate = Promise.withResolvers<void>();
  conn.gate = gate.promise;
  const outbox = new Outbox(conn as unknown as Deno.Conn);
  assert.equal(outbox.writingSince, 0);
  const before = performance.now();
  const writing = outbox.write(bytes(2 * COALESCE_LIMIT, 9));
  await Promise.resolve();
  assert.ok(outbox.writingSince >= before);
  gate.resolve();
  await writing;
  assert.equal(outbox.writingSince, 0);
});
