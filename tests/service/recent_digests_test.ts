/** The digests of recent streamed misses: by path and version, the oldest forgotten first. */

import assert from "node:assert/strict";
import { RecentDigests } from "../../service/recent_digests.ts";

Deno.test("RecentDigests: keyed by path and validator, bounded, the oldest forgotten first", () => {
  const digests = new RecentDigests(2);
  digests.remember("a", "v1", "aa");
  assert.equal(digests.get("a", "v1"), "aa");
  assert.equal(digests.get("a", "v2"), undefined, "another version has none");
  assert.equal(digests.get("b", "v1"), undefined);
  digests.remember("b", "v1", "bb");
  digests.remember("a", "v1", "aa"); // remembered again: the newest
  digests.remember("c", "v1", "cc");
  assert.equal(digests.get("b", "v1"), undefined, "the oldest went");
  assert.equal(digests.get("a", "v1"), "aa");
  assert.equal(digests.get("c", "v1"), "cc");
});
