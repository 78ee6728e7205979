import assert from "node:assert/strict";
import { listingWindow, nextPageQuery } from "../../http/listing_query.ts";
import { RequestError } from "../../protocol.ts";

Deno.test("listingWindow: after and limit from the query, decoded; none is the whole first page", () => {
  assert.deepEqual(listingWindow("/docs/"), {});
  assert.deepEqual(listingWindow("/docs/?"), {});
  assert.deepEqual(listingWindow("/docs/?after=a%20b.txt&limit=50"), {
    after: "a b.txt",
    limit: 50,
  });
  assert.deepEqual(listingWindow("/?limit=7&after=x"), { after: "x", limit: 7 });
  assert.deepEqual(listingWindow("/?after=a+b"), { after: "a+b" }, "a plus sign is a plus sign");
  assert.deepEqual(listingWindow("/?after=."), {}, "`.` is the start, as in FILES");
  assert.deepEqual(listingWindow("/?sort=name&x&after=%C3%A9"), { after: "é" });
  assert.deepEqual(listingWindow("http://host/d/?limit=1"), { limit: 1 }, "absolute form");
});

Deno.test("listingWindow: a malformed, out of range or repeated bound is a 400", () => {
  for (
    const query of [
      "limit=0",
      "limit=10001",
      "limit=-1",
      "limit=1.5",
      "limit=",
      "limit",
      "after=",
      "after",
      "after=a/b",
      "after=..",
      "after=%00",
      "after=%E9",
      "after=%G1",
      "after=a&after=b",
      "limit=1&limit=1",
    ]
  ) {
    assert.throws(() => listingWindow(`/d/?${query}`), (error) => {
      assert.ok(error instanceof RequestError, query);
      assert.equal(error.code, 400, query);
      return true;
    });
  }
});

Deno.test("nextPageQuery: the name encoded for a URL, and the limit asked for kept", () => {
  assert.equal(nextPageQuery("a b&c.txt", {}), "?after=a%20b%26c.txt");
  assert.equal(nextPageQuery("é", { after: "x", limit: 20 }), "?after=%C3%A9&limit=20");
  const query = nextPageQuery("50% + #1", { limit: 3 });
  assert.deepEqual(listingWindow(`/d/${query}`), { after: "50% + #1", limit: 3 }, "it reads back");
});
