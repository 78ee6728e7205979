/**
 * The origin shield (origin/shield.ts) against a scripted origin and a
 * clock of the test's own: lifetimes, collapsed and background
 * revalidation, stale-if-error, the breaker, negative caching, conditional
 * revalidation with the changed body carried to the fill, the cap on
 * origin requests, and purges. (Over real sockets, with a stand-in S3
 * server: tests/server/origin_shield_test.ts.)
 */

import assert from "node:assert/strict";
import type { Origin, OriginDirPage, OriginFile, OriginStat } from "../../origin/origin.ts";
import { ShieldedOrigin, type ShieldOptions } from "../../origin/shield.ts";
import { RequestError } from "../../protocol.ts";

/** The page the tests ask a listing for. */
const PAGE = { limit: 100 };

/** An origin whose answers the test scripts, counting what it is asked. */
class ScriptedOrigin implements Origin {
  version = 1;
  size = 10;
  /** What the next requests do: fail with 503, hang until released, or answer. */
  mode: "up" | "down" | "missing" | "hang" = "up";
  calls = { stat: 0, open: 0, openIfChanged: 0, list: 0 };
  #hung: (() => void)[] = [];

  stat(_path: string): Promise<OriginStat> {
    this.calls.stat++;
    return this.#answer(() => this.#stat());
  }

  open(_path: string): Promise<OriginFile> {
    this.calls.open++;
    return this.#answer(() => this.#file());
  }

  openIfChanged(_path: string, etag: string): Promise<OriginFile | undefined> {
    this.calls.openIfChanged++;
    return this.#answer(() => etag === this.#stat().etag ? undefined : this.#file());
  }

  list(_path: string): Promise<OriginDirPage> {
    this.calls.list++;
    return this.#answer(() => ({ entries: [] }));
  }

  /** Lets the hung requests answer (as the mode is then). */
  release(): void {
    for (const go of this.#hung.splice(0)) go();
  }

  #stat(): OriginStat {
    return { size: this.size, mtime: 0, validator: `v${this.version}`, etag: `"e${this.version}"` };
  }

  #file(): OriginFile {
    const stat = this.#stat();
    return {
      stat,
      read: () => Promise.resolve(null),
      restat: () => Promise.resolve(stat),
      close: () => {},
    };
  }

  async #answer<T>(value: () => T): Promise<T> {
    if (this.mode === "hang") await new Promise<void>((go) => this.#hung.push(go));
    if (this.mode === "down") throw new RequestError(503, "origin unavailable: scripted");
    if (this.mode === "missing") throw new RequestError(404, "not found: scripted");
    return value();
  }
}

function shielded(options: ShieldOptions = {}) {
  const origin = new ScriptedOrigin();
  const clock = { now: 1_000_000 };
  const shield = new ShieldedOrigin(origin, {
    carryLimit: 1000,
    stalePatienceMs: 50,
    ...options,
    now: () => clock.now,
  });
  return { origin, clock, shield };
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 5));
}

async function code(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof RequestError) return error.code;
    throw error;
  }
  return 0;
}

Deno.test("shield: with the defaults every stat asks the origin, and nothing is stale", async () => {
  const { origin, shield } = shielded();
  for (let i = 0; i < 3; i++) assert.equal((await shield.stat("a")).stale, undefined);
  assert.equal(origin.calls.stat + origin.calls.openIfChanged, 3);
});

Deno.test("shield: within the lifetime the origin hears nothing; after it, one conditional request", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 10_000 });
  const first = await shield.stat("a");
  assert.equal(first.fromMemory, undefined);
  assert.equal(origin.calls.stat, 1, "the first stat asks (no entity tag is known yet)");
  clock.now += 9_999;
  const fresh = await shield.stat("a");
  assert.equal(fresh.fromMemory, true);
  assert.equal(fresh.ageMs, 9_999);
  assert.equal(origin.calls.stat + origin.calls.openIfChanged, 1);
  clock.now += 1;
  assert.equal((await shield.stat("a")).validator, "v1");
  assert.equal(origin.calls.openIfChanged, 1, "revalidated with If-None-Match");
  assert.equal(shield.figures().notModified, 1, "a 304: the lifetime starts again");
  clock.now += 5_000;
  await shield.stat("a");
  assert.equal(origin.calls.openIfChanged + origin.calls.stat, 2);
});

Deno.test("shield: a changed file's body comes with the revalidation, and the fill takes it", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 1_000 });
  await shield.stat("a");
  origin.version = 2;
  clock.now += 1_000;
  assert.equal((await shield.stat("a")).validator, "v2");
  const file = await shield.open("a");
  assert.equal(file.stat.validator, "v2");
  assert.equal(origin.calls.open, 0, "no second GET");
  assert.equal(shield.figures().carried, 1);
  await shield.open("a");
  assert.equal(origin.calls.open, 1, "carried once only");
  // A file larger than the cache is revalidated by a stat: its body would not be kept.
  origin.version = 3;
  origin.size = 5_000;
  clock.now += 1_000;
  assert.equal((await shield.stat("a")).size, 5_000, "(known as 10 bytes: conditional)");
  clock.now += 1_000;
  await shield.stat("a");
  assert.equal(origin.calls.stat, 2, "known as 5,000 bytes: a stat");
});

Deno.test("shield: concurrent requests after the lifetime share one revalidation", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 1_000 });
  await shield.stat("a");
  clock.now += 2_000;
  origin.mode = "hang";
  const waiting = Array.from({ length: 32 }, () => shield.stat("a"));
  await new Promise((resolve) => setTimeout(resolve, 10));
  origin.mode = "up";
  origin.release();
  const stats = await Promise.all(waiting);
  assert.ok(stats.every((stat) => stat.validator === "v1" && !stat.stale));
  assert.equal(origin.calls.openIfChanged, 1, "one origin request for 32 waiting");
});

Deno.test("shield: stale-while-revalidate answers the stored stat at once while one revalidation runs", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 1_000, staleWhileRevalidateMs: 5_000 });
  await shield.stat("a");
  clock.now += 1_500;
  origin.mode = "hang";
  const answers = await Promise.all(Array.from({ length: 8 }, () => shield.stat("a")));
  assert.ok(answers.every((stat) => stat.stale === true && stat.ageMs === 1_500));
  assert.equal(origin.calls.openIfChanged, 1, "one revalidation in the background");
  origin.mode = "up";
  origin.release();
  await new Promise((resolve) => setTimeout(resolve, 10));
  const after = await shield.stat("a");
  assert.equal(after.stale, undefined, "fresh again once it answered");
  assert.equal(shield.figures().staleWhileRevalidate, 8);
  // Past the window: the request waits for the origin.
  clock.now += 7_000;
  assert.equal((await shield.stat("a")).stale, undefined);
  assert.equal(origin.calls.openIfChanged, 2);
});

Deno.test("shield: stale-if-error answers the stored stat while the origin fails, within its window", async () => {
  const { origin, clock, shield } = shielded({
    maxAgeMs: 1_000,
    staleIfErrorMs: 10_000,
    breakerFailures: 100,
  });
  await shield.stat("a");
  clock.now += 2_000;
  origin.mode = "down";
  const stale = await shield.stat("a");
  assert.equal(stale.stale, true);
  assert.equal(shield.figures().staleIfError, 1);
  // A hung origin: answered stale after the patience, the revalidation goes on.
  origin.mode = "hang";
  const started = performance.now();
  assert.equal((await shield.stat("a")).stale, true);
  assert.ok(performance.now() - started < 1_000);
  origin.mode = "down";
  origin.release();
  // Past the window: the error.
  clock.now += 10_000;
  assert.equal(await code(shield.stat("a")), 503);
  // An uncached path has nothing to fall back on.
  assert.equal(await code(shield.stat("b")), 503);
  // A 404 is an answer, not a failure: never hidden by a stale copy.
  origin.mode = "up";
  await shield.stat("c");
  clock.now += 2_000; // past the lifetime, well within the stale-if-error window
  origin.mode = "missing";
  assert.equal(await code(shield.stat("c")), 404);
  assert.equal(await code(shield.stat("c")), 404, "and forgotten: not served stale after");
});

Deno.test("shield: the breaker opens after consecutive failures, sends one probe per interval, closes on success", async () => {
  const { origin, clock, shield } = shielded({ breakerFailures: 3, probeIntervalMs: 1_000 });
  origin.mode = "down";
  for (let i = 0; i < 3; i++) assert.equal(await code(shield.stat(`p${i}`)), 503);
  assert.equal(shield.breaker.state, "open");
  const asked = origin.calls.stat;
  for (let i = 0; i < 20; i++) assert.equal(await code(shield.stat("x")), 503);
  assert.equal(origin.calls.stat, asked, "refused without asking the origin");
  assert.equal(shield.figures().breaker.refused, 20);
  // The probe's own request does not wait for it: answered at once, the
  // probe answers the next requests.
  clock.now += 1_000;
  assert.equal(await code(shield.stat("x")), 503);
  await tick();
  assert.equal(origin.calls.stat, asked + 1, "one probe");
  assert.equal(shield.breaker.state, "open", "it failed");
  assert.equal(await code(shield.stat("x")), 503);
  assert.equal(origin.calls.stat, asked + 1, "the next probe waits another interval");
  origin.mode = "up";
  clock.now += 1_000;
  assert.equal(await code(shield.stat("x")), 503, "this request carries the probe");
  await tick();
  assert.equal(shield.breaker.state, "closed");
  assert.equal((await shield.stat("x")).validator, "v1");
  assert.deepEqual(
    [
      shield.figures().breaker.opened,
      shield.figures().breaker.closed,
      shield.figures().breaker.probes,
    ],
    [1, 1, 2],
  );
});

Deno.test("shield: a 404 is remembered for the negative lifetime, a missing listing too", async () => {
  const { origin, clock, shield } = shielded({ negativeMaxAgeMs: 5_000 });
  origin.mode = "missing";
  for (let i = 0; i < 5; i++) assert.equal(await code(shield.stat("gone")), 404);
  assert.equal(origin.calls.stat, 1);
  for (let i = 0; i < 5; i++) assert.equal(await code(shield.list("gone", PAGE)), 404);
  assert.equal(origin.calls.list, 1);
  assert.equal(shield.figures().negative, 8);
  clock.now += 5_000;
  origin.mode = "up";
  assert.equal((await shield.stat("gone")).validator, "v1", "asked again after it");
  // Without a negative lifetime nothing is remembered.
  const plain = shielded();
  plain.origin.mode = "missing";
  await code(plain.shield.stat("gone"));
  await code(plain.shield.stat("gone"));
  assert.equal(plain.origin.calls.stat, 2);
});

Deno.test("shield: forget (a purge) makes the next request ask, for a path or a prefix", async () => {
  const { origin, shield } = shielded({ maxAgeMs: 60_000 });
  for (const path of ["d/a", "d/b", "e/c"]) await shield.stat(path);
  assert.equal(origin.calls.stat, 3);
  shield.forget("d/a");
  await shield.stat("d/a");
  await shield.stat("d/b");
  assert.equal(origin.calls.stat, 4);
  shield.forget("d/", true);
  await shield.stat("d/a");
  await shield.stat("d/b");
  await shield.stat("e/c");
  assert.equal(origin.calls.stat, 6);
});

Deno.test("shield: at most N origin requests at once; a request that waits too long is a 503", async () => {
  const { origin, shield } = shielded({ connections: 2, connectionWaitMs: 50 });
  origin.mode = "hang";
  const first = [shield.stat("a"), shield.stat("b")];
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(shield.figures().inFlight, 2);
  const third = shield.stat("c");
  assert.equal(await code(third), 503);
  assert.equal(origin.calls.stat, 2, "the third never reached the origin");
  origin.mode = "up";
  origin.release();
  await Promise.all(first);
  assert.equal(shield.figures().inFlight, 0);
  // A body holds its connection until it is closed.
  const file = await shield.open("a");
  assert.equal(shield.figures().inFlight, 1);
  file.close();
  assert.equal(shield.figures().inFlight, 0);
});

Deno.test("shield: a watched directory's stat passes straight through", async () => {
  const origin = new ScriptedOrigin();
  Object.defineProperty(origin, "freshness", { value: "watch" });
  const shield = new ShieldedOrigin(origin, { maxAgeMs: 60_000 });
  await shield.stat("a");
  await shield.stat("a");
  assert.equal(origin.calls.stat, 2);
  assert.equal(shield.figures().revalidations, 0);
});

Deno.test("shield: a hung origin opens the breaker within the patience, and every waiting request stops waiting", async () => {
  const { origin, shield } = shielded({ breakerFailures: 3, stalePatienceMs: 50 });
  origin.mode = "hang";
  const started = performance.now();
  const waiting = ["a", "b", "c", "d"].map((path) => code(shield.stat(path)));
  assert.deepEqual(await Promise.all(waiting), [503, 503, 503, 503]);
  const took = performance.now() - started;
  assert.ok(took < 500, `gave up after ${took} ms, not after the origin's own timeout`);
  assert.equal(shield.breaker.state, "open");
  assert.equal(await code(shield.stat("e")), 503, "refused at once while open");
  assert.equal(origin.calls.stat, 4);
  // The calls given up on still end, and give their connections back.
  origin.mode = "down";
  origin.release();
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(shield.figures().inFlight, 0);
});

Deno.test("shield: with honourOriginLifetime an object's stated lifetime wins over maxAgeMs", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 1_000, honourOriginLifetime: true });
  origin.stat = () => Promise.resolve({ size: 10, mtime: 0, validator: "v1", lifetimeMs: 60_000 });
  await shield.stat("a");
  clock.now += 30_000;
  assert.equal((await shield.stat("a")).fromMemory, true, "the object said 60 s");
  const plain = shielded({ maxAgeMs: 1_000 });
  plain.origin.stat = () =>
    Promise.resolve({ size: 10, mtime: 0, validator: "v1", lifetimeMs: 60_000 });
  await plain.shield.stat("a");
  plain.clock.now += 30_000;
  assert.equal((await plain.shield.stat("a")).fromMemory, undefined, "not honoured: 1 s");
});

Deno.test("shield: a purge while a revalidation is in flight: its answer reaches its waiters but is not remembered", async () => {
  const { origin, clock, shield } = shielded({ maxAgeMs: 60_000 });
  await shield.stat("a");
  clock.now += 60_000;
  origin.mode = "hang";
  const inFlight = shield.stat("a");
  await tick();
  shield.forget("a"); // the writer put v2 and purged; the revalidation answers v1
  origin.mode = "up";
  origin.release();
  assert.equal((await inFlight).validator, "v1");
  origin.version = 2;
  const after = await shield.stat("a");
  assert.equal(after.validator, "v2", "asked again, not the pre-purge answer");
  assert.equal(after.fromMemory, undefined);
});

Deno.test("shield: a prefix purge forgets a remembered missing listing of the directory itself", async () => {
  const { origin, shield } = shielded({ negativeMaxAgeMs: 60_000 });
  origin.mode = "missing";
  assert.equal(await code(shield.list("d", PAGE)), 404);
  origin.mode = "up";
  assert.equal(await code(shield.list("d", PAGE)), 404, "remembered");
  shield.forget("d/", true);
  assert.deepEqual(await shield.list("d", PAGE), { entries: [] });
});

Deno.test("shield: listings are not timed: slow ones do not open the breaker", async () => {
  const { origin, shield } = shielded({ breakerFailures: 3, stalePatienceMs: 20 });
  origin.mode = "hang";
  const listings = Array.from({ length: 4 }, () => shield.list("big", PAGE));
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(shield.breaker.state, "closed");
  origin.mode = "up";
  origin.release();
  assert.equal((await Promise.all(listings)).length, 4);
});

Deno.test("shield: while the breaker is open a probe goes every interval even with no request to carry it", async () => {
  const origin = new ScriptedOrigin();
  const shield = new ShieldedOrigin(origin, { breakerFailures: 1, probeIntervalMs: 40 });
  try {
    origin.mode = "down";
    assert.equal(await code(shield.stat("a")), 503);
    assert.equal(shield.breaker.state, "open");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.ok(origin.calls.stat >= 2, `probed without traffic: ${origin.calls.stat} calls`);
    origin.mode = "up";
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(shield.breaker.state, "closed", "a probe succeeded");
  } finally {
    shield.close();
  }
});

Deno.test("shield: a directory without change watching is stat'ed once per lifetime, and a 404 is not kept without a negative lifetime", () => {
  const origin = new ScriptedOrigin();
  let stats = 0;
  let missing = false;
  const local = Object.assign(origin, {
    statNow: (_path: string): OriginStat => {
      stats++;
      if (missing) throw new RequestError(404, "not found: a");
      return { size: 1, mtime: 0, validator: "v1" };
    },
  });
  const clock = { now: 0 };
  const shield = new ShieldedOrigin(local, { maxAgeMs: 1_000, now: () => clock.now });
  shield.statNow!("a");
  assert.equal(shield.statNow!("a").fromMemory, true);
  assert.equal(stats, 1);
  clock.now += 1_000;
  missing = true;
  assert.throws(() => shield.statNow!("a"), RequestError);
  missing = false;
  assert.equal(shield.statNow!("a").fromMemory, undefined, "the 404 dropped what was known");
  assert.equal(stats, 3);
});

Deno.test("shield: with honourOriginLifetime an object that forbids stale answers is never served stale", async () => {
  const { origin, clock, shield } = shielded({
    maxAgeMs: 1_000,
    honourOriginLifetime: true,
    staleIfErrorMs: 60_000,
    staleWhileRevalidateMs: 60_000,
    breakerFailures: 100,
  });
  origin.stat = () =>
    Promise.resolve({ size: 10, mtime: 0, validator: "v1", lifetimeMs: 1_000, noStale: true });
  await shield.stat("a");
  clock.now += 2_000;
  origin.stat = () => Promise.reject(new RequestError(503, "origin unavailable: scripted"));
  assert.equal(await code(shield.stat("a")), 503, "no stale copy, whatever the windows");
  // Without the flag the same object is served stale.
  const plain = shielded({ maxAgeMs: 1_000, staleIfErrorMs: 60_000, breakerFailures: 100 });
  plain.origin.stat = () =>
    Promise.resolve({ size: 10, mtime: 0, validator: "v1", lifetimeMs: 1_000, noStale: true });
  await plain.shield.stat("a");
  plain.clock.now += 2_000;
  plain.origin.stat = () => Promise.reject(new RequestError(503, "origin unavailable: scripted"));
  assert.equal((await plain.shield.stat("a")).stale, true);
});
