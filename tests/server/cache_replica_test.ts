import * as assert from "node:assert/strict";
import { CacheReplica } from "../../server/cache_replica.ts";
import { errorData, errorFromData, type FromWorker } from "../../server/worker_messages.ts";
import { OriginChangedError } from "../../origin/origin.ts";
import { RequestError } from "../../protocol.ts";
import type { CacheEntry } from "../../cache.ts";

function entry(path: string, file: string): CacheEntry {
  return { path, size: 1, mtime: 0, validator: "v", sha256: "", admitted: 0, file };
}

function replica(reportHits: boolean, posted: FromWorker[]) {
  return new CacheReplica(
    { cacheDir: "/nonexistent", capacity: 10, entries: [entry("a", "1")], reportHits },
    (message) => posted.push(message),
  );
}

Deno.test("replica: hits are reported in one batch, or not at all where the policy ignores them", () => {
  const posted: FromWorker[] = [];
  const reporting = replica(true, posted);
  reporting.touch("a");
  reporting.touch("a");
  assert.equal(posted.length, 0, "batched, not one message per hit");
  reporting.flushTouches();
  assert.deepEqual(posted, [{ type: "touch", paths: ["a", "a"] }]);
  const silent = replica(false, posted);
  silent.touch("a");
  silent.flushTouches();
  assert.equal(posted.length, 1, "FIFO: nothing reported");
});

Deno.test("replica: a drop of an entry replaced since keeps the new one", () => {
  const posted: FromWorker[] = [];
  const r = replica(false, posted);
  r.admitted(entry("a", "2"));
  r.dropped("a", "1"); // the owner's removal of the old file arrives late
  assert.equal(r.lookup("a")?.file, "2");
  r.dropped("a", "2");
  assert.equal(r.lookup("a"), undefined);
});

Deno.test("replica: a stale entry is forgotten at once and the owner asked to remove that one", async () => {
  const posted: FromWorker[] = [];
  const r = replica(false, posted);
  const stale = r.lookup("a")!;
  await r.remove("a", stale);
  assert.equal(r.lookup("a"), undefined);
  assert.deepEqual(posted, [{ type: "remove", path: "a", file: "1" }]);
});

Deno.test("errors cross threads with their class and message (the client's answer stays the same)", () => {
  const changed = errorFromData(errorData(new OriginChangedError("a/b.txt")));
  assert.ok(changed instanceof OriginChangedError);
  assert.equal(changed.message, "changed while it was read: a/b.txt");
  const missing = errorFromData(errorData(new RequestError(404, "not found: x")));
  assert.ok(missing instanceof RequestError);
  assert.equal((missing as RequestError).code, 404);
  assert.equal(missing.message, "not found: x");
  const other = errorFromData(errorData(new TypeError("boom")));
  assert.equal(other.message, "boom");
});
