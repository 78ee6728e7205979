import assert from "node:assert/strict";
import { PageSelection } from "../../origin/listing_page.ts";
import { compareNames } from "../../protocol.ts";
import { seededRandom } from "../helpers.ts";

Deno.test("PageSelection: the first `limit` names after `after`, in order, from names in any order", () => {
  const random = seededRandom(5);
  const pool = ["a", "b", "-", ".", "é", "\uFF01", "\u{1F600}", "0"];
  const names = new Set<string>();
  while (names.size < 500) {
    let name = "";
    for (let i = 0, length = 1 + Math.floor(random() * 5); i < length; i++) {
      name += pool[Math.floor(random() * pool.length)];
    }
    names.add(name);
  }
  const sorted = [...names].sort(compareNames);
  const shuffled = [...names].sort(() => random() - 0.5);
  for (let round = 0; round < 200; round++) {
    const after = random() < 0.2 ? undefined : sorted[Math.floor(random() * sorted.length)];
    const limit = 1 + Math.floor(random() * (random() < 0.5 ? 5 : 600));
    const selection = new PageSelection<{ name: string }>(after, limit);
    for (const name of shuffled) selection.offer({ name });
    const { items, more } = selection.take();
    const following = after === undefined ? sorted : sorted.slice(sorted.indexOf(after) + 1);
    const where = `after ${after}, limit ${limit}`;
    assert.deepEqual(items.map((item) => item.name), following.slice(0, limit), where);
    assert.equal(more, following.length > limit, where);
  }
});

Deno.test("PageSelection: an `after` that is no name offered; nothing after it; nothing at all", () => {
  const offer = (after: string | undefined, limit: number, names: string[]) => {
    const selection = new PageSelection<{ name: string }>(after, limit);
    for (const name of names) selection.offer({ name });
    const { items, more } = selection.take();
    return { names: items.map((item) => item.name), more };
  };
  assert.deepEqual(offer("b", 2, ["d", "a", "c", "bb"]), { names: ["bb", "c"], more: true });
  assert.deepEqual(offer("z", 2, ["d", "a"]), { names: [], more: false });
  assert.deepEqual(offer(undefined, 3, []), { names: [], more: false });
  assert.deepEqual(offer(undefined, 2, ["b", "a"]), { names: ["a", "b"], more: false });
});
