/**
 * A fill's progress in shared memory: what the writer stores the readers
 * see, a wait resolves on the next change (on this thread and from
 * another), and a final state stays final.
 */

import assert from "node:assert/strict";
import { FILL_DONE, FILL_FAILED, FILL_RUNNING, FillProgress } from "../../util/fill_progress.ts";
import { sha256 } from "../helpers.ts";

Deno.test("FillProgress: bytes written, spill and the digest, as another view of the same memory sees them", async () => {
  const writer = new FillProgress();
  const reader = new FillProgress(writer.buffer);
  assert.equal(reader.state, FILL_RUNNING);
  assert.equal(reader.written, 0);
  assert.equal(reader.sha256, undefined);
  const sequence = reader.sequence;
  const changed = reader.changed(sequence);
  writer.advance(256 * 1024);
  await changed;
  assert.equal(reader.written, 256 * 1024);
  writer.advance(6 * 1024 * 1024 * 1024); // past 2^32: a 5 GiB file counts right
  assert.equal(reader.written, 256 * 1024 + 6 * 1024 * 1024 * 1024);
  assert.ok(!reader.spilled);
  writer.spill();
  assert.ok(reader.spilled);
  const digest = sha256("the file");
  writer.finish(digest);
  assert.equal(reader.state, FILL_DONE);
  assert.equal(reader.sha256, digest);
  writer.fail();
  assert.equal(reader.state, FILL_DONE, "a fill done stays done");
  assert.notEqual(reader.sequence, sequence);
  await reader.changed(sequence); // already moved: resolves at once
});

Deno.test("FillProgress: a failed fill stays failed and has no digest", () => {
  const progress = new FillProgress();
  progress.fail();
  progress.finish(sha256("late"));
  assert.equal(progress.state, FILL_FAILED);
  assert.equal(progress.sha256, undefined);
});

Deno.test("FillProgress: a wait on this thread resolves when a worker thread moves it", async () => {
  // The worker moves the progress through the module, as the owner of a fill does.
  const module = new URL("../../util/fill_progress.ts", import.meta.url).href;
  const source = `
    import { FillProgress } from "${module}";
    self.onmessage = (event) => new FillProgress(event.data).advance(42);`;
  const url = `data:application/javascript,${encodeURIComponent(source)}`;
  const worker = new Worker(url, { type: "module" });
  try {
    const progress = new FillProgress();
    const changed = progress.changed(progress.sequence);
    worker.postMessage(progress.buffer);
    await changed;
    assert.equal(progress.written, 42);
  } finally {
    worker.terminate();
  }
});
