import assert from "node:assert/strict";
import { Semaphore } from "../../util/semaphore.ts";

Deno.test("a semaphore never lets more than its permits run, and serves waiters in order", async () => {
  const semaphore = new Semaphore(3);
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  await Promise.all(Array.from({ length: 20 }, (_, i) =>
    semaphore.with(1, async () => {
      order.push(i);
      peak = Math.max(peak, ++running);
      await new Promise((resolve) => setTimeout(resolve, 1));
      running--;
    })));
  assert.equal(peak, 3);
  assert.deepEqual(order, Array.from({ length: 20 }, (_, i) => i));
  assert.equal(semaphore.available, 3);
  assert.equal(semaphore.waiting, 0);
});

Deno.test("a semaphore takes several permits at once, so two-permit tasks cannot deadlock", async () => {
  const semaphore = new Semaphore(2);
  const gate = Promise.withResolvers<void>();
  const first = semaphore.with(1, () => gate.promise);
  let pairRan = false;
  const pair = semaphore.with(2, () => {
    pairRan = true;
    assert.equal(semaphore.available, 0);
    return Promise.resolve();
  });
  // A later one-permit task does not overtake the waiting pair.
  let singleRan = false;
  const single = semaphore.with(1, () => {
    singleRan = true;
    assert.ok(pairRan, "FIFO: the pair was waiting first");
    return Promise.resolve();
  });
  await Promise.resolve();
  assert.equal(semaphore.waiting, 2);
  assert.ok(!pairRan && !singleRan);
  gate.resolve();
  await Promise.all([first, pair, single]);
  assert.equal(semaphore.available, 2);
});

Deno.test("a semaphore gives permits back when the task throws, and clamps big asks", async () => {
  const semaphore = new Semaphore(1);
  await assert.rejects(semaphore.with(1, () => Promise.reject(new Error("boom"))), /boom/);
  assert.equal(semaphore.available, 1);
  assert.equal(await semaphore.with(5, () => Promise.resolve("ran")), "ran");
  assert.throws(() => new Semaphore(0), RangeError);
});
