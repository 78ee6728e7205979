import assert from "node:assert/strict";
import { S3FifoPolicy } from "../../policies/s3fifo.ts";
import {
  isReference,
  LibCacheSimS3FifoPolicy,
  referencePolicy,
  REFERENCES,
} from "../../sim/reference.ts";
import { simulate, simulatorPolicies } from "../../sim/sim.ts";
import { readTxt } from "../../sim/trace.ts";

Deno.test("referencePolicy: libCacheSim differs from the defaults in S3-FIFO only", () => {
  assert.deepEqual(REFERENCES, ["libcachesim"]);
  assert.ok(isReference("libcachesim"));
  assert.ok(!isReference("LibCacheSim"));
  for (const name of simulatorPolicies()) {
    const policy = referencePolicy(name, "libcachesim");
    if (name === "s3fifo") {
      assert.equal(typeof policy, "function");
      const made = (policy as (capacity: number) => unknown)(100);
      assert.ok(made instanceof LibCacheSimS3FifoPolicy);
      assert.equal((made as S3FifoPolicy).name, "s3fifo");
    } else {
      assert.equal(policy, name, `${name} is libCacheSim's as it is`);
    }
  }
  assert.throws(() => referencePolicy("arc", "libcachesim"), RangeError);
});

/** A text trace: `count` objects k1, k2, ... of `size` bytes, then `more` lines. */
function trace(count: number, size: number, ...more: string[]) {
  const keys = Array.from({ length: count }, (_, i) => `k${i + 1} ${size}`);
  return readTxt([...keys, ...more].join("\n"));
}

Deno.test("libCacheSim's S3-FIFO evicts for an object of exactly its small queue's size, then drops it", () => {
  // 100 bytes, a small queue of 10: k1 and k2 go to small, k3..k11 to main.
  const exact = trace(11, 9, "big 10", "big 10", "k1 9", "big 10", "k2 9", "k3 9");
  let policy!: LibCacheSimS3FifoPolicy;
  const result = simulate(
    exact,
    (capacity) => policy = new LibCacheSimS3FifoPolicy({ capacity }),
    100,
  );
  // The first big evicts k1 (into the ghost); the second finds room and
  // evicts nothing; k1, a ghost hit, goes to main; the third big evicts k2
  // (into the ghost), which misses; k3 hits.
  assert.equal(result.misses, 16);
  assert.deepEqual(["big", "k1", "k2"].map((key) => policy.locate(key)), [
    undefined,
    "main",
    "main",
  ]);

  // The server's policies: "reject" refuses big without evicting (k1, k2
  // and k3 hit); the default keeps big, which pushes k3 out.
  const reject = (capacity: number) => new S3FifoPolicy({ capacity, largeObjects: "reject" });
  assert.equal(simulate(exact, reject, 100).misses, 14);
  assert.equal(simulate(exact, "s3fifo", 100).misses, 15);
});

Deno.test("libCacheSim's S3-FIFO: larger than small is refused even on a ghost hit, and any miss clears the ghost", () => {
  const policy = new LibCacheSimS3FifoPolicy({ capacity: 100 });
  assert.equal(policy.admission("a", 11), "reject");
  assert.equal(policy.admission("a", 10), "evictOnly");
  assert.equal(policy.admission("a", 9), "insert");
  assert.equal(policy.admission("a", 101), "reject");
  assert.equal(policy.admit("a", 10), true, "admit is libCacheSim's can_insert");
  assert.equal(policy.admit("a", 11), false);

  // k1 enters the ghost; its misses then leave the ghost whatever their size.
  // 100 bytes: k1 and k2 fill small, k3..k11 main; k12 evicts k1 into the ghost.
  let replayed!: LibCacheSimS3FifoPolicy;
  simulate(
    trace(12, 9, "k1 12", "k1 9"),
    (capacity) => replayed = new LibCacheSimS3FifoPolicy({ capacity }),
    100,
  );
  assert.equal(replayed.locate("k1"), "small", "not a ghost hit: the 12-byte miss cleared it");

  simulate(
    trace(12, 9, "k1 200", "k1 9"),
    (capacity) => replayed = new LibCacheSimS3FifoPolicy({ capacity }),
    100,
  );
  assert.equal(replayed.locate("k1"), "small", "a miss larger than the whole cache clears it too");

  simulate(
    trace(12, 9, "k1 10"),
    (capacity) => replayed = new LibCacheSimS3FifoPolicy({ capacity }),
    100,
  );
  assert.equal(replayed.locate("k1"), "main", "a ghost hit of exactly small's size is inserted");
});
