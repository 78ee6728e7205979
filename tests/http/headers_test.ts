import assert from "node:assert/strict";
import {
  entityTag,
  mediaType,
  notModified,
  parseRange,
  rangeStillValid,
} from "../../http/headers.ts";

Deno.test("parseRange: single ranges, suffixes, open ends, and what is ignored", () => {
  const cases: [string | null, number, ReturnType<typeof parseRange>][] = [
    [null, 100, undefined],
    ["bytes=0-0", 100, { offset: 0, length: 1 }],
    ["bytes=10-19", 100, { offset: 10, length: 10 }],
    ["bytes=90-", 100, { offset: 90, length: 10 }],
    ["bytes=90-500", 100, { offset: 90, length: 10 }], // the end is clipped
    ["bytes=-10", 100, { offset: 90, length: 10 }],
    ["bytes=-500", 100, { offset: 0, length: 100 }],
    ["BYTES = 5 - 6", 100, { offset: 5, length: 2 }],
    ["bytes=100-", 100, "unsatisfiable"],
    ["bytes=100-200", 100, "unsatisfiable"],
    ["bytes=-0", 100, "unsatisfiable"],
    ["bytes=0-", 0, "unsatisfiable"],
    ["bytes=-5", 0, "unsatisfiable"],
    ["bytes=99999999999999999999-", 100, "unsatisfiable"],
    ["bytes=20-10", 100, undefined], // invalid: ignored, the whole file is sent
    ["bytes=0-1,5-6", 100, undefined], // several ranges: the whole file
    ["items=0-1", 100, undefined],
    ["bytes=", 100, undefined],
    ["bytes=-", 100, undefined],
    ["bytes=a-b", 100, undefined],
  ];
  for (const [header, size, expected] of cases) {
    assert.deepEqual(parseRange(header, size), expected, `${header} of ${size}`);
  }
});

Deno.test("entityTag: a tag of the origin's validator, whether or not the sha256 is known", () => {
  const tag = entityTag({ validator: "3:5:7:9" });
  assert.match(tag, /^"v-[0-9a-f]{32}"$/);
  assert.equal(entityTag({ validator: "3:5:7:9" }), tag, "the same version, the same tag");
  assert.notEqual(entityTag({ validator: "3:6:7:9" }), tag, "another version, another tag");
});

Deno.test("notModified: If-None-Match (weak comparison, lists, *) wins over If-Modified-Since", () => {
  const validators = { etag: '"abc"', mtime: Date.UTC(2026, 0, 2, 3, 4, 5, 678) };
  const check = (headers: Record<string, string>) => notModified(new Headers(headers), validators);
  assert.equal(check({}), false);
  assert.equal(check({ "if-none-match": '"abc"' }), true);
  assert.equal(check({ "if-none-match": 'W/"abc"' }), true);
  assert.equal(check({ "if-none-match": '"x", "abc"' }), true);
  assert.equal(check({ "if-none-match": "*" }), true);
  assert.equal(check({ "if-none-match": '"x"' }), false);
  const date = new Date(validators.mtime).toUTCString(); // second resolution
  assert.equal(check({ "if-modified-since": date }), true);
  assert.equal(
    check({ "if-modified-since": new Date(validators.mtime - 2000).toUTCString() }),
    false,
  );
  assert.equal(check({ "if-modified-since": "not a date" }), false);
  assert.equal(check({ "if-none-match": '"x"', "if-modified-since": date }), false);
});

Deno.test("rangeStillValid: If-Range with a strong tag or the exact date; weak tags never", () => {
  const strong = { etag: '"abc"', mtime: Date.UTC(2026, 0, 2, 3, 4, 5) };
  const weak = { etag: 'W/"1-2"', mtime: strong.mtime };
  const valid = (header: string | undefined, validators = strong) =>
    rangeStillValid(new Headers(header === undefined ? {} : { "if-range": header }), validators);
  assert.equal(valid(undefined), true);
  assert.equal(valid('"abc"'), true);
  assert.equal(valid('"old"'), false);
  assert.equal(valid('W/"abc"'), false);
  assert.equal(valid('W/"1-2"', weak), false);
  assert.equal(valid('"1-2"', weak), false);
  assert.equal(valid(new Date(strong.mtime).toUTCString()), true);
  assert.equal(valid(new Date(strong.mtime + 1000).toUTCString()), false);
});

Deno.test("mediaType: by extension, case-insensitive, octet-stream otherwise", () => {
  assert.equal(mediaType("docs/a.TXT"), "text/plain; charset=utf-8");
  assert.equal(mediaType("x/y.json"), "application/json");
  assert.equal(mediaType("img.png"), "image/png");
  assert.equal(mediaType("dir.d/noext"), "application/octet-stream");
  assert.equal(mediaType(".hidden"), "application/octet-stream");
  assert.equal(mediaType("a.unknown"), "application/octet-stream");
});
