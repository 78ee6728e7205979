/**
 * util/bytes_memo.ts: a value is computed once per distinct byte string,
 * shared afterwards; errors are never kept; long strings are not kept; the
 * memo is bounded; and two strings of one hash are told apart.
 */

import assert from "node:assert/strict";
import { BytesMemo } from "../../util/bytes_memo.ts";
import { collidingPair } from "../helpers.ts";

const encoder = new TextEncoder();

Deno.test("BytesMemo: one computation per distinct bytes, the same value after; errors never kept", () => {
  const memo = new BytesMemo<{ text: string }>(4, 64);
  let computed = 0;
  const compute = (bytes: Uint8Array) => (computed++, { text: new TextDecoder().decode(bytes) });
  const first = memo.get(encoder.encode("GET a"), compute);
  assert.equal(memo.get(encoder.encode("GET a"), compute), first);
  assert.equal(computed, 1);
  assert.equal(memo.get(encoder.encode("GET b"), compute).text, "GET b");
  assert.equal(computed, 2);
  // The key is a copy: the caller's buffer may be reused.
  const buffer = encoder.encode("GET c");
  memo.get(buffer, compute);
  buffer[4] = 0x64; // now "GET d"
  assert.equal(memo.get(buffer, compute).text, "GET d");
  let failures = 0;
  const failing = () => {
    failures++;
    throw new Error("malformed");
  };
  for (let i = 0; i < 2; i++) assert.throws(() => memo.get(encoder.encode("BAD"), failing));
  assert.equal(failures, 2);
});

Deno.test("BytesMemo: bounded in entries (emptied when full) and in length", () => {
  const memo = new BytesMemo<number>(3, 8);
  let computed = 0;
  const compute = () => ++computed;
  for (const text of ["a", "b", "c"]) memo.get(encoder.encode(text), compute);
  assert.equal(memo.get(encoder.encode("a"), compute), 1, "kept while there is room");
  memo.get(encoder.encode("d"), compute); // full: emptied, then d kept
  assert.equal(memo.get(encoder.encode("a"), compute), 5, "computed again after the memo emptied");
  const long = encoder.encode("123456789");
  assert.equal(memo.get(long, compute), 6);
  assert.equal(memo.get(long, compute), 7, "longer than the bound: computed every time");
});

Deno.test("BytesMemo: two byte strings of one hash each get their own value", () => {
  const line = (i: number) => encoder.encode(`GET /c${i} HTTP/1.1\r\nHost: h\r\n\r\n`);
  const pair = collidingPair(line);
  const memo = new BytesMemo<string>(16, 1024);
  const compute = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  for (let round = 0; round < 2; round++) {
    for (const i of pair) {
      assert.equal(memo.get(line(i), compute), new TextDecoder().decode(line(i)));
    }
  }
});
