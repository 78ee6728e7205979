import assert from "node:assert/strict";
import { escapeHtml, listingPage } from "../../http/pages.ts";
import type { OriginDirEntry } from "../../origin/origin.ts";

/** One row of a listing, as the page shows it. */
interface Row {
  href: string;
  text: string;
  size: string;
  mtime: string;
}

/**
 * The entries' rows of a listing page (not the parent link's). The pattern
 * allows no `<`, `>` or `"` inside a link's text or its href, so a name that
 * escaped its escaping breaks the match and the count check below.
 */
function rowsOf(page: string): Row[] {
  const rows = [
    ...page.matchAll(
      /<tr><td><a href="([^"<>]*)">([^<>]*)<\/a><\/td><td(?: class="n")?>([^<>]*)<\/td><td>([^<>]*)<\/td><\/tr>/g,
    ),
  ];
  assert.equal(rows.length, page.split("<tr><td>").length - 1, "every row has the expected shape");
  return rows.map(([, href, text, size, mtime]) => ({ href, text, size, mtime }))
    .filter((row) => row.href !== "../");
}

/** Undoes escapeHtml's numeric character references (and only those). */
function unescapeHtml(text: string): string {
  return text.replace(/&#(\d+);/g, (_, code) => String.fromCharCode(Number(code)));
}

function file(name: string, size = 1, mtime = 0): OriginDirEntry {
  return { name, type: "file", size, mtime };
}

function dir(name: string, mtime = 0): OriginDirEntry {
  return { name, type: "dir", size: 0, mtime };
}

Deno.test("escapeHtml: replaces & < > \" ' with character references and leaves the rest", () => {
  assert.equal(
    escapeHtml(`<a href="x" title='y'>&</a>`),
    "&#60;a href=&#34;x&#34; title=&#39;y&#39;&#62;&#38;&#60;/a&#62;",
  );
  assert.equal(escapeHtml("plain name.txt"), "plain name.txt");
  assert.equal(escapeHtml("é 日本 \u{1F600} \t\n"), "é 日本 \u{1F600} \t\n");
  assert.equal(escapeHtml(""), "");
  // An existing reference is text like any other: escaped again, not trusted.
  assert.equal(escapeHtml("&#60;"), "&#38;#60;");
  assert.equal(escapeHtml("&amp;"), "&#38;amp;");
});

Deno.test("escapeHtml: the output has no markup characters and decodes back to the input", () => {
  const hostile = [
    `<script>alert("x")</script>`,
    `"><img src=x onerror=alert(1)>`,
    `' onmouseover='alert(1)`,
    "&&&<<<>>>\"\"\"'''",
    "a&#60;b",
  ];
  for (const text of hostile) {
    const escaped = escapeHtml(text);
    assert.doesNotMatch(escaped, /[<>"']/, `escaped: ${escaped}`);
    assert.equal(unescapeHtml(escaped), text);
  }
});

Deno.test("listingPage: hostile names are escaped in the text and percent-encoded in the link", () => {
  const names = [
    `<script>alert("x")</script>.txt`,
    `"><img src=x onerror=alert(1)>`,
    `it's & that's.txt`,
    "javascript:alert(1)",
  ];
  const page = listingPage("", names.map((name) => file(name)));
  assert.doesNotMatch(page, /<script>|<img/, "no markup from a name reaches the page");
  const rows = rowsOf(page);
  assert.equal(rows.length, names.length);
  for (const name of names) {
    const row = rows.find((row) => unescapeHtml(row.text) === name);
    assert.ok(row, `a row for ${name}`);
    assert.equal(row.text, escapeHtml(name));
    assert.equal(row.href, encodeURIComponent(name));
    assert.equal(decodeURIComponent(row.href), name);
    // No quote, bracket, space or colon in a link: it can neither leave its
    // attribute nor name a scheme (`javascript:`), so it stays relative.
    assert.doesNotMatch(row.href, /["<> :]/, `href: ${row.href}`);
  }
});

Deno.test("listingPage: links percent-encode spaces, %, #, ?, backslashes and non-ASCII names", () => {
  const cases: [string, string][] = [
    ["a b.txt", "a%20b.txt"],
    ["100%.txt", "100%25.txt"],
    ["c#.md", "c%23.md"],
    ["q?.txt", "q%3F.txt"],
    ["café.txt", "caf%C3%A9.txt"],
    ["a%2Fb", "a%252Fb"],
    ["back\\slash", "back%5Cslash"],
  ];
  const rows = rowsOf(listingPage("docs", cases.map(([name]) => file(name))));
  for (const [name, href] of cases) {
    const row = rows.find((row) => row.text === escapeHtml(name));
    assert.ok(row, `a row for ${name}`);
    assert.equal(row.href, href);
  }
});

Deno.test("listingPage: directories first with a trailing slash, then files, each group by name", () => {
  const entries = [
    file("zeta.txt", 5),
    dir("beta"),
    file("alpha.txt", 2048),
    dir("a dir"),
    file("Zed.txt", 3),
  ];
  const before = JSON.stringify(entries);
  const rows = rowsOf(listingPage("", entries));
  assert.deepEqual(rows.map((row) => row.text), [
    "a dir/",
    "beta/",
    "Zed.txt",
    "alpha.txt",
    "zeta.txt",
  ]);
  assert.deepEqual(rows.map((row) => row.href), [
    "a%20dir/",
    "beta/",
    "Zed.txt",
    "alpha.txt",
    "zeta.txt",
  ]);
  assert.deepEqual(rows.map((row) => row.size), ["-", "-", "3 B", "2.0 KiB", "5 B"]);
  assert.equal(JSON.stringify(entries), before, "the caller's array is not reordered");
});

Deno.test("listingPage: a hostile directory name is escaped in the slash-ended name and its link", () => {
  const rows = rowsOf(listingPage("", [dir(`<b>"x"</b>`)]));
  assert.equal(rows.length, 1);
  assert.equal(rows[0].text, `${escapeHtml(`<b>"x"</b>`)}/`);
  assert.equal(rows[0].href, `${encodeURIComponent(`<b>"x"</b>`)}/`);
});

Deno.test("listingPage: modification times in UTC to the second", () => {
  const rows = rowsOf(listingPage("", [
    file("epoch", 1, 0),
    file("later", 1, Date.UTC(2024, 1, 29, 23, 59, 58, 999)),
  ]));
  assert.deepEqual(rows.map((row) => row.mtime), ["1970-01-01 00:00:00", "2024-02-29 23:59:58"]);
});

Deno.test("listingPage: the title names the directory, escaped; below the root a parent link", () => {
  const root = listingPage("", [file("a")]);
  assert.match(root, /<title>Index of \/<\/title>/);
  assert.match(root, /<h1>Index of \/<\/h1>/);
  assert.doesNotMatch(root, /href="\.\.\/"/, "no parent above the root");

  const sub = listingPage(`docs/<i>&"q"`, [file("a")]);
  const title = `Index of /docs/&#60;i&#62;&#38;&#34;q&#34;/`;
  assert.ok(sub.includes(`<title>${title}</title>`), "escaped title");
  assert.ok(sub.includes(`<h1>${title}</h1>`), "escaped heading");
  assert.doesNotMatch(sub, /<i>/);
  assert.equal(sub.match(/<a href="\.\.\/">\.\.\/<\/a>/g)?.length, 1, "one parent link");
  assert.equal(rowsOf(sub).length, 1, "the parent row aside, one row per entry");
});

Deno.test("listingPage: an empty directory is a page with no rows", () => {
  const page = listingPage("empty", []);
  assert.match(page, /^<!doctype html>/);
  assert.match(
    page,
    /<tbody><tr><td><a href="\.\.\/">\.\.\/<\/a><\/td><td><\/td><td><\/td><\/tr><\/tbody>/,
  );
  assert.match(page, /<\/html>\n$/);
});

Deno.test("listingPage: a page of a longer listing ends with its link to the next, escaped", () => {
  const page = listingPage("d", [file("a.txt")], "?after=a.txt&limit=1");
  assert.match(
    page,
    /<\/table>\n<p><a rel="next" href="\?after=a\.txt&#38;limit=1">next page<\/a><\/p>/,
  );
  assert.doesNotMatch(listingPage("d", [file("a.txt")]), /next page/, "the last page has none");
});
