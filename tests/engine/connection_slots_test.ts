import * as assert from "node:assert/strict";
import { ConnectionSlots, releaseThread, slotMemory } from "../../engine/connection_slots.ts";

Deno.test("connection slots: one limit for every thread, per listener", () => {
  const memory = slotMemory(2, 3);
  const threads = [0, 1, 2].map((thread) => new ConnectionSlots(memory, 2, 0, 4, thread));
  const http = new ConnectionSlots(memory, 2, 1, 1, 0);
  const taken = [0, 1, 2, 0, 1, 2].map((thread) => threads[thread].take());
  assert.deepEqual(taken, [true, true, true, true, false, false]);
  assert.ok(http.take(), "the other listener counts apart");
  assert.ok(!http.take());
  threads[1].release();
  assert.ok(threads[2].take(), "a slot given back by one thread is taken by another");
});

Deno.test("connection slots: a thread that ended gives back what it held", () => {
  const memory = slotMemory(2, 2);
  const main = new ConnectionSlots(memory, 2, 0, 3, 0);
  const worker = new ConnectionSlots(memory, 2, 0, 3, 1);
  assert.ok(main.take());
  assert.ok(worker.take());
  assert.ok(worker.take());
  assert.ok(!main.take());
  releaseThread(memory, 2, 1); // the worker died with its two connections
  assert.ok(main.take());
  assert.ok(main.take());
  assert.ok(!main.take(), "the main thread's own slot is still held");
});

Deno.test("connection slots: after running out of descriptors, every thread sees a shortage", () => {
  const memory = slotMemory(1, 2);
  const a = new ConnectionSlots(memory, 1, 0, 10, 0);
  const b = new ConnectionSlots(memory, 1, 0, 10, 1);
  assert.ok(!b.short());
  a.outOfDescriptors();
  assert.ok(b.short());
});
