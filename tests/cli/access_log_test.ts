import assert from "node:assert/strict";
import { AccessLog } from "../../cli/access_log.ts";

Deno.test("AccessLog: lines wait for their batch, which goes out in one write when full", () => {
  const writes: string[] = [];
  const log = new AccessLog({
    write: (text) => writes.push(text),
    maxBytes: 20,
    maxDelayMs: 60_000,
  });
  log.add("one");
  log.add("two");
  assert.deepEqual(writes, []);
  log.add("a line long enough");
  assert.deepEqual(writes, ["one\ntwo\na line long enough\n"]);
  log.add("three");
  log.flush();
  log.flush(); // nothing more to write
  assert.deepEqual(writes, ["one\ntwo\na line long enough\n", "three\n"]);
});

Deno.test("AccessLog: a line waits at most the delay", async () => {
  const writes: string[] = [];
  const log = new AccessLog({ write: (text) => writes.push(text), maxDelayMs: 30 });
  log.add("soon");
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(writes, ["soon\n"]);
});

Deno.test("AccessLog: a failed write drops its lines, says so once per streak, and never throws", () => {
  const errors: string[] = [];
  let fail = true;
  const writes: string[] = [];
  const log = new AccessLog({
    write: (text) => {
      if (fail) throw new Error("Broken pipe");
      writes.push(text);
    },
    onError: (message) => errors.push(message),
  });
  for (const line of ["a", "b"]) {
    log.add(line);
    log.flush();
  }
  assert.deepEqual(errors, ["access log: lines dropped: Broken pipe"]);
  fail = false;
  log.add("c");
  log.flush();
  assert.deepEqual(writes, ["c\n"]);
});
