import assert from "node:assert/strict";
import { Mutex } from "../../util/mutex.ts";

Deno.test("Mutex: tasks run one at a time, in call order, however long each takes", async () => {
  const mutex = new Mutex();
  const events: string[] = [];
  let running = 0;
  // Each task waits on its own gate: run at once, all five would start
  // before any ended.
  const gates = Array.from({ length: 5 }, () => Promise.withResolvers<void>());
  const results = gates.map((gate, i) =>
    mutex.run(async () => {
      running++;
      assert.equal(running, 1, `task ${i} overlapped another`);
      events.push(`start ${i}`);
      await gate.promise;
      events.push(`end ${i}`);
      running--;
      return i * 10;
    })
  );
  for (const gate of [...gates].reverse()) gate.resolve();
  assert.deepEqual(await Promise.all(results), [0, 10, 20, 30, 40]);
  assert.deepEqual(
    events,
    [0, 1, 2, 3, 4].flatMap((i) => [`start ${i}`, `end ${i}`]),
  );
});

Deno.test("Mutex: a task does not start before the one queued ahead of it settles", async () => {
  const mutex = new Mutex();
  const gate = Promise.withResolvers<void>();
  let secondStarted = false;
  const first = mutex.run(() => gate.promise);
  const second = mutex.run(() => {
    secondStarted = true;
  });
  // Let every queued microtask and one macrotask run: the second task must
  // still be waiting for the first.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(secondStarted, false);
  gate.resolve();
  await first;
  await second;
  assert.equal(secondStarted, true);
});

Deno.test("Mutex: a failing task rejects its own call and does not block the next", async () => {
  const mutex = new Mutex();
  const order: string[] = [];
  const failing = mutex.run(async () => {
    order.push("async failure");
    await Promise.resolve();
    throw new Error("async boom");
  });
  const throwing = mutex.run((): number => {
    order.push("sync throw");
    throw new TypeError("sync boom");
  });
  const after = mutex.run(() => {
    order.push("after");
    return "still runs";
  });
  await assert.rejects(failing, { message: "async boom" });
  await assert.rejects(throwing, { name: "TypeError", message: "sync boom" });
  assert.equal(await after, "still runs");
  assert.deepEqual(order, ["async failure", "sync throw", "after"]);
});

Deno.test("Mutex: returns each task's own result, sync or async, and rejects with its own error", async () => {
  const mutex = new Mutex();
  const object = { id: 1 };
  const [sync, async, same, nothing] = await Promise.all([
    mutex.run(() => 42),
    mutex.run(() => Promise.resolve("text")),
    mutex.run(() => object),
    mutex.run(() => {}),
  ]);
  assert.equal(sync, 42);
  assert.equal(async, "text");
  assert.equal(same, object, "the very object, not a copy");
  assert.equal(nothing, undefined);
  const error = new RangeError("mine");
  await assert.rejects(mutex.run(() => Promise.reject(error)), (thrown) => thrown === error);
});

Deno.test("Mutex: a task queued from inside a running task runs after it, not inside it", async () => {
  const mutex = new Mutex();
  const order: string[] = [];
  let inner: Promise<string> | undefined;
  await mutex.run(() => {
    order.push("outer start");
    inner = mutex.run(() => {
      order.push("inner");
      return "inner done";
    });
    order.push("outer end");
  });
  assert.equal(await inner, "inner done");
  assert.deepEqual(order, ["outer start", "outer end", "inner"]);
});
