import assert from "node:assert/strict";
import {
  checkListingWindow,
  checkPath,
  compareNames,
  FILES_PAGE_LIMIT,
  formatError,
  formatFilesRequest,
  formatOk,
  formatRequest,
  parseRequest,
  parseResponseHeader,
  percentDecode,
  percentEncode,
  RequestError,
} from "../protocol.ts";
import { seededRandom } from "./helpers.ts";

const EMPTY_LINE = "empty request line";
const CONTROL = "control bytes must be percent-encoded";
const SPACING = "tokens must be separated by exactly one space";
const ESCAPE = "invalid percent escape";
const UTF8 = "invalid UTF-8";
const NUL = "path contains NUL";
const RELATIVE = "path must be relative";
const SEGMENT = "path has an empty, '.' or '..' segment";

/** A request line as bytes: text is UTF-8 encoded, bytes are taken as they are. */
function line(text: string | Uint8Array): Uint8Array {
  return typeof text === "string" ? new TextEncoder().encode(text) : text;
}

/** Bytes from a mix of text and raw byte values. */
function raw(...parts: Array<string | number[]>): Uint8Array {
  const bytes: number[] = [];
  for (const part of parts) {
    bytes.push(...(typeof part === "string" ? new TextEncoder().encode(part) : part));
  }
  return new Uint8Array(bytes);
}

function assertProtocolError(fn: () => unknown, code: number, message: string): void {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof RequestError, `not a RequestError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.message, message);
    return true;
  });
}

function assertBadRequest(text: string | Uint8Array, message: string): void {
  assertProtocolError(() => parseRequest(line(text)), 400, message);
}

/** Every spelling of a path that must be rejected: raw, and with `/` or `.` escaped. */
function encodings(path: string): string[] {
  return [
    path,
    path.replaceAll("/", "%2F"),
    path.replaceAll(".", "%2e"),
    path.replaceAll("/", "%2f").replaceAll(".", "%2E"),
  ];
}

// --- parseRequest: valid requests ---

Deno.test("parseRequest: GET with a path, an offset and a length", () => {
  assert.deepEqual(parseRequest(line("GET a.txt")), {
    command: "GET",
    path: "a.txt",
    offset: undefined,
    length: undefined,
  });
  assert.deepEqual(parseRequest(line("GET a.txt 5")), {
    command: "GET",
    path: "a.txt",
    offset: 5,
    length: undefined,
  });
  assert.deepEqual(parseRequest(line("GET docs/a%20b.txt 0 10")), {
    command: "GET",
    path: "docs/a b.txt",
    offset: 0,
    length: 10,
  });
});

Deno.test("parseRequest: the commands without a path", () => {
  assert.deepEqual(parseRequest(line("LIST")), { command: "LIST" });
  assert.deepEqual(parseRequest(line("STATS")), { command: "STATS" });
  assert.deepEqual(parseRequest(line("PING")), { command: "PING" });
  assert.deepEqual(parseRequest(line("QUIT")), { command: "QUIT" });
});

Deno.test("parseRequest: FILES with and without a directory, STAT with a path", () => {
  assert.deepEqual(parseRequest(line("FILES")), { command: "FILES", path: "" });
  assert.deepEqual(parseRequest(line("FILES docs/sub")), { command: "FILES", path: "docs/sub" });
  assert.deepEqual(parseRequest(line("STAT docs/a.txt")), { command: "STAT", path: "docs/a.txt" });
});

Deno.test("parseRequest: FILES pages: a directory or `.`, a name to list after or `.`, a limit", () => {
  const files = (text: string) => parseRequest(line(text));
  assert.deepEqual(files("FILES ."), { command: "FILES", path: "" });
  assert.deepEqual(files("FILES %2E"), { command: "FILES", path: "" }, "decoded first");
  assert.deepEqual(files("FILES docs ."), { command: "FILES", path: "docs" });
  assert.deepEqual(files("FILES . a%20b.txt"), { command: "FILES", path: "", after: "a b.txt" });
  assert.deepEqual(files("FILES docs - 1"), {
    command: "FILES",
    path: "docs",
    after: "-",
    limit: 1,
  });
  assert.deepEqual(files("FILES . . 10000"), { command: "FILES", path: "", limit: 10000 });
  assert.deepEqual(files("FILES . . %31"), { command: "FILES", path: "", limit: 1 }, "decoded");
  assert.deepEqual(files("FILES d %2E%2E%2E 007"), {
    command: "FILES",
    path: "d",
    after: "...",
    limit: 7,
  });
});

Deno.test("parseRequest: a FILES limit outside 1-10000 or an after that is no name is a 400", () => {
  const LIMIT = /^FILES limit must be 1 to 10000, not \d+$/;
  for (const limit of ["0", "00", "10001", "999999999999999"]) {
    assert.throws(() => parseRequest(line(`FILES . . ${limit}`)), (error) => {
      assert.ok(error instanceof RequestError && error.code === 400);
      assert.match(error.message, LIMIT);
      return true;
    });
  }
  assertBadRequest("FILES . . -1", "not a number: -1");
  assertBadRequest("FILES . . 1e3", "not a number: 1e3");
  const NAME = "FILES after must be a name (no '/'), or '.' for the start";
  for (const after of ["a/b", "a%2Fb", "%2F", "..", "%2E%2E", "%00", "a%00"]) {
    assertBadRequest(`FILES . ${after}`, NAME);
  }
});

Deno.test("parseRequest: commands are matched case-insensitively", () => {
  assert.equal(parseRequest(line("get a")).command, "GET");
  assert.equal(parseRequest(line("Get a")).command, "GET");
  assert.equal(parseRequest(line("list")).command, "LIST");
  assert.equal(parseRequest(line("fIlEs")).command, "FILES");
  assert.equal(parseRequest(line("stat a")).command, "STAT");
  assert.equal(parseRequest(line("Stats")).command, "STATS");
  assert.equal(parseRequest(line("ping")).command, "PING");
  assert.equal(parseRequest(line("qUIT")).command, "QUIT");
});

Deno.test("parseRequest: one trailing CR is ignored", () => {
  assert.deepEqual(parseRequest(line("PING\r")), { command: "PING" });
  assert.deepEqual(parseRequest(line("GET a.txt 1 2\r")), {
    command: "GET",
    path: "a.txt",
    offset: 1,
    length: 2,
  });
  assert.deepEqual(parseRequest(line("FILES\r")), { command: "FILES", path: "" });
});

Deno.test("parseRequest: numbers with leading zeros and up to 15 digits", () => {
  assert.deepEqual(parseRequest(line("GET a 007 0")), {
    command: "GET",
    path: "a",
    offset: 7,
    length: 0,
  });
  assert.deepEqual(parseRequest(line("GET a 999999999999999 123456789012345")), {
    command: "GET",
    path: "a",
    offset: 999999999999999,
    length: 123456789012345,
  });
});

Deno.test("parseRequest: percent escapes decode, in either case, and %2F separates", () => {
  assert.equal((parseRequest(line("STAT %c3%BC.txt")) as { path: string }).path, "ü.txt");
  assert.equal((parseRequest(line("STAT a%2Fb")) as { path: string }).path, "a/b");
  assert.equal((parseRequest(line("STAT 100%25")) as { path: string }).path, "100%");
  assert.equal((parseRequest(line("STAT a%09b%0A")) as { path: string }).path, "a\tb\n");
});

Deno.test("parseRequest: raw UTF-8 in a path is accepted", () => {
  assert.deepEqual(parseRequest(line("GET ü/日本/😀.txt")), {
    command: "GET",
    path: "ü/日本/😀.txt",
    offset: undefined,
    length: undefined,
  });
});

Deno.test("parseRequest: a byte-order mark starting a path is kept as a character", () => {
  assert.equal((parseRequest(line("STAT %EF%BB%BFa.txt")) as { path: string }).path, "\uFEFFa.txt");
  const rawBom = raw("STAT ", [0xef, 0xbb, 0xbf], "a.txt");
  assert.equal((parseRequest(rawBom) as { path: string }).path, "\uFEFFa.txt");
  assert.equal((parseRequest(line("FILES %EF%BB%BF")) as { path: string }).path, "\uFEFF");
});

Deno.test("parseRequest: dot names that are not . or .. are ordinary segments", () => {
  for (const path of [".hidden", "a/.b", "...", "a/.../b", "a..b", "..a/b."]) {
    assert.equal((parseRequest(line(`STAT ${path}`)) as { path: string }).path, path);
  }
});

// --- parseRequest: 400s ---

Deno.test("parseRequest: an empty line is a 400", () => {
  assertBadRequest("", EMPTY_LINE);
  assertBadRequest("\r", EMPTY_LINE);
});

Deno.test("parseRequest: an unknown command is a 400 naming it, encoded", () => {
  assertBadRequest("HELLO", "unknown command: HELLO");
  assertBadRequest("GETS a", "unknown command: GETS");
  assertBadRequest("constructor", "unknown command: constructor");
  // Commands are not percent-decoded: the % itself is escaped in the message.
  assertBadRequest("P%49NG", "unknown command: P%2549NG");
});

Deno.test("parseRequest: a non-ASCII command is a 400", () => {
  assertBadRequest("GÉT a", "the command must be ASCII");
});

Deno.test("parseRequest: a wrong argument count is a 400 stating the arity", () => {
  assertBadRequest("GET", "GET takes 1 to 3 arguments");
  assertBadRequest("GET a 1 2 3", "GET takes 1 to 3 arguments");
  assertBadRequest("LIST x", "LIST takes no arguments");
  assertBadRequest("FILES a b c d", "FILES takes 0 to 3 arguments");
  assertBadRequest("STAT", "STAT takes 1 argument");
  assertBadRequest("STAT a b", "STAT takes 1 argument");
  assertBadRequest("STATS x", "STATS takes no arguments");
  assertBadRequest("ping x", "PING takes no arguments");
  assertBadRequest("QUIT now", "QUIT takes no arguments");
});

Deno.test("parseRequest: anything but exactly one space between tokens is a 400", () => {
  for (const text of ["GET  a", " PING", "PING ", "GET a  1", "GET a 1 ", " ", "  "]) {
    assertBadRequest(text, SPACING);
  }
});

Deno.test("parseRequest: every raw control byte, TAB and DEL included, is a 400", () => {
  const controls = [...Array(0x20).keys(), 0x7f];
  for (const byte of controls) {
    assertBadRequest(raw("GET a", [byte], "b"), CONTROL);
    assertBadRequest(raw("PI", [byte], "NG"), CONTROL);
  }
  assertBadRequest("GET\ta", CONTROL);
  assertBadRequest("GET a\r\r", CONTROL); // only one trailing CR is ignored
  assertBadRequest("\r\r", CONTROL);
});

Deno.test("parseRequest: an invalid percent escape is a 400", () => {
  for (const arg of ["%zz", "a%", "a%2", "%%41", "%g0", "a%2x", "%-1"]) {
    assertBadRequest(`GET ${arg}`, ESCAPE);
    assertBadRequest(`STAT ${arg}`, ESCAPE);
    assertBadRequest(`FILES ${arg}`, ESCAPE);
  }
  assertBadRequest("GET a 1%", ESCAPE);
});

Deno.test("parseRequest: invalid UTF-8, escaped or raw, is a 400", () => {
  const invalid = [
    "%C3%28", // a lead byte followed by ASCII
    "%C0%AF", // overlong '/'
    "%E0%80%AF", // overlong '/', three bytes
    "%ED%A0%80", // a UTF-16 surrogate
    "%F4%90%80%80", // beyond U+10FFFF
    "%E2%82", // truncated
    "%FF",
    "%80",
  ];
  for (const arg of invalid) assertBadRequest(`GET a${arg}b`, UTF8);
  assertBadRequest(raw("GET a", [0xc3, 0x28]), UTF8);
  assertBadRequest(raw("STAT ", [0xff]), UTF8);
  assertBadRequest(raw("FILES ", [0xc0, 0xaf]), UTF8);
});

Deno.test("parseRequest: NUL through %00 is a 400", () => {
  assertBadRequest("GET a%00b", NUL);
  assertBadRequest("GET %00", NUL);
  assertBadRequest("STAT a/%00", NUL);
  assertBadRequest("FILES %00", NUL);
});

Deno.test("parseRequest: an absolute path, raw or through %2F, is a 400", () => {
  for (const command of ["GET", "STAT", "FILES"]) {
    for (const path of ["/a", "/", "%2Fa", "%2f", "/a/b", "%2Fetc%2Fpasswd"]) {
      assertBadRequest(`${command} ${path}`, RELATIVE);
    }
  }
});

Deno.test("parseRequest: empty, . and .. segments in every position are a 400", () => {
  const paths = [
    ".",
    "..",
    "./a",
    "../a",
    "a/./b",
    "a/../b",
    "a//b",
    "a/.",
    "a/..",
    "a/",
    "a/b/",
    "../../etc/passwd",
  ];
  for (const command of ["GET", "STAT", "FILES"]) {
    for (const path of paths) {
      // `FILES .` is the served directory (docs/PROTOCOL.md): no path, no 400.
      if (command === "FILES" && path === ".") continue;
      for (const encoded of encodings(path)) assertBadRequest(`${command} ${encoded}`, SEGMENT);
    }
  }
  assertBadRequest("GET %2e%2e%2Fsecret 0 1", SEGMENT);
  assertBadRequest("GET . 0 1", SEGMENT);
  assertBadRequest("STAT %2E", SEGMENT);
});

Deno.test("parseRequest: an offset or length that is not plain digits is a 400", () => {
  const cases: Array<[string, string]> = [
    ["-1", "-1"],
    ["+1", "+1"],
    ["1234567890123456", "1234567890123456"],
    ["1.5", "1.5"],
    ["1e3", "1e3"],
    ["0x10", "0x10"],
    ["abc", "abc"],
    ["12a", "12a"],
    ["１", "%EF%BC%91"], // a full-width digit
    ["1%202", "1%202"], // "1 2" after decoding
  ];
  for (const [arg, shown] of cases) {
    assertBadRequest(`GET a ${arg}`, `not a number: ${shown}`);
    assertBadRequest(`GET a 0 ${arg}`, `not a number: ${shown}`);
  }
});

// --- percent-coding ---

Deno.test("percentEncode: escapes controls, space, %, DEL and non-ASCII; keeps /", () => {
  assert.equal(percentEncode("my docs/ü.txt"), "my%20docs/%C3%BC.txt");
  assert.equal(percentEncode("100%"), "100%25");
  assert.equal(percentEncode("\x00\t\n\r\x1f\x7f"), "%00%09%0A%0D%1F%7F");
  assert.equal(percentEncode("😀"), "%F0%9F%98%80");
  assert.equal(percentEncode("\uFEFF"), "%EF%BB%BF");
  assert.equal(percentEncode("a-Z_0.~!*'()=&+,;:@[]"), "a-Z_0.~!*'()=&+,;:@[]");
  assert.equal(percentEncode(""), "");
});

Deno.test("percentDecode: decodes escapes in strings and bytes", () => {
  assert.equal(percentDecode("a%20b%2F%c3%bc"), "a b/ü");
  assert.equal(percentDecode(line("%F0%9F%98%80")), "😀");
  assert.equal(percentDecode("%EF%BB%BFx"), "\uFEFFx");
  assert.equal(percentDecode("plain"), "plain");
  assertProtocolError(() => percentDecode("%zz"), 400, ESCAPE);
  assertProtocolError(() => percentDecode("%"), 400, ESCAPE);
  assertProtocolError(() => percentDecode("%C3%28"), 400, UTF8);
});

/** Characters that stress the encoding: controls, %, space, separators, multi-byte. */
const POOL = [
  ..."\x00\x01\t\n\r\x1b\x1f\x7f",
  ..."% /.+=&?#",
  ..."abcXYZ019",
  "é",
  "ü",
  "\u0085",
  "€",
  "日",
  "\u2028",
  "\uFEFF",
  "\uFFFD",
  "😀",
  "🇩🇪",
  "𝄞",
];

function randomString(random: () => number, maxLength: number, pool = POOL): string {
  const length = Math.floor(random() * (maxLength + 1));
  let text = "";
  for (let i = 0; i < length; i++) text += pool[Math.floor(random() * pool.length)];
  return text;
}

Deno.test("percentEncode then percentDecode gives back seeded random strings", () => {
  const random = seededRandom(42);
  for (let i = 0; i < 1000; i++) {
    const text = randomString(random, 24);
    const encoded = percentEncode(text);
    assert.match(encoded, /^(?:[\x21-\x24\x26-\x7e]|%[0-9A-F]{2})*$/, JSON.stringify(text));
    assert.equal(percentDecode(encoded), text, JSON.stringify(text));
  }
});

// --- formatting ---

Deno.test("formatRequest: percent-encodes each argument and ends with LF", () => {
  assert.equal(formatRequest("GET", ["a b.txt", 0, 10]), "GET a%20b.txt 0 10\n");
  assert.equal(formatRequest("PING"), "PING\n");
  assert.equal(formatRequest("FILES", ["d/ü"]), "FILES d/%C3%BC\n");
  assert.equal(formatRequest("STAT", ["50%\n"]), "STAT 50%25%0A\n");
});

Deno.test("formatRequest output parses back to the same request for random paths", () => {
  const random = seededRandom(7);
  const segmentPool = POOL.filter((c) => c !== "/" && c !== "\0");
  for (let i = 0; i < 300; i++) {
    // The "s" prefix keeps a segment from being empty, "." or "..".
    const segments = Array.from(
      { length: 1 + Math.floor(random() * 4) },
      () => "s" + randomString(random, 8, segmentPool),
    );
    const path = segments.join("/");
    const offset = Math.floor(random() * 1e6);
    const length = Math.floor(random() * 1e6);
    const text = formatRequest("GET", [path, offset, length]);
    assert.ok(text.endsWith("\n") && text.indexOf("\n") === text.length - 1);
    assert.deepEqual(parseRequest(line(text.slice(0, -1))), {
      command: "GET",
      path,
      offset,
      length,
    });
  }
});

Deno.test("formatFilesRequest: the bare forms for a whole first page, `.` for what is left out", () => {
  assert.equal(formatFilesRequest(""), "FILES\n");
  assert.equal(formatFilesRequest("docs"), "FILES docs\n");
  assert.equal(formatFilesRequest("", { after: "a b" }), "FILES . a%20b\n");
  assert.equal(formatFilesRequest("", { limit: 5 }), "FILES . . 5\n");
  assert.equal(formatFilesRequest("d/ü", { after: "-", limit: 2 }), "FILES d/%C3%BC - 2\n");
  // Every form reads back as what it was made from.
  for (
    const [dir, window] of [["", {}], ["x", { after: "50%" }], ["", {
      after: ".x",
      limit: 1,
    }]] as const
  ) {
    const parsed = parseRequest(line(formatFilesRequest(dir, window).slice(0, -1)));
    assert.deepEqual(parsed, { command: "FILES", path: dir, ...window });
  }
});

Deno.test("checkListingWindow: `.` and absent mean the start, limits 1 to FILES_PAGE_LIMIT", () => {
  assert.deepEqual(checkListingWindow(undefined, undefined), {});
  assert.deepEqual(checkListingWindow(".", 1), { limit: 1 });
  assert.deepEqual(checkListingWindow("a", FILES_PAGE_LIMIT), { after: "a", limit: 10_000 });
  assert.throws(() => checkListingWindow("", undefined), RequestError);
  assert.throws(() => checkListingWindow(undefined, 1.5), RequestError);
  assert.throws(() => checkListingWindow(undefined, FILES_PAGE_LIMIT + 1), RequestError);
});

Deno.test("compareNames: the byte order of UTF-8, where UTF-16's differs too", () => {
  const utf8 = new TextEncoder();
  const byBytes = (a: string, b: string) => {
    const [x, y] = [utf8.encode(a), utf8.encode(b)];
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  };
  // U+FF01 (3 bytes, EF BC 81) sorts before U+1F600 (4 bytes, F0 ...), though its
  // UTF-16 unit is above the surrogate D83D: the case a string's own `<` gets wrong.
  const names = ["\u{1F600}", "\uFF01", "b", "a", "ab", "", "\uFF01a", "\u{1F600}\uFF01", "é", "z"];
  assert.deepEqual([...names].sort(compareNames), [...names].sort(byBytes));
  assert.ok("\u{1F600}" < "\uFF01", "UTF-16 order says otherwise");
  assert.ok(compareNames("\u{1F600}", "\uFF01") > 0);
  const random = seededRandom(11);
  const pool = [
    "a",
    "z",
    "é",
    "\uFF01",
    "\uD7FF",
    "\uE000",
    "\u{10000}",
    "\u{1F600}",
    "\u{10FFFF}",
  ];
  for (let i = 0; i < 2000; i++) {
    const [a, b] = [randomString(random, 4, pool), randomString(random, 4, pool)];
    assert.equal(Math.sign(compareNames(a, b)), Math.sign(byBytes(a, b)), `${a} vs ${b}`);
  }
});

Deno.test("formatOk: the body length, then key=value pairs with encoded values", () => {
  assert.equal(formatOk(0), "OK 0\n");
  assert.equal(formatOk(5, { size: 5, cache: "hit" }), "OK 5 size=5 cache=hit\n");
  assert.equal(formatOk(3, { name: "a b%\n" }), "OK 3 name=a%20b%25%0A\n");
});

Deno.test("formatError: the code and message on one line, controls escaped", () => {
  assert.equal(formatError(404, "not found: a.txt"), "ERR 404 not found: a.txt\n");
  const text = formatError(500, "disk\nfailed\r\tbadly 100%\u2028");
  assert.equal(text, "ERR 500 disk%0Afailed%0D%09badly 100%%E2%80%A8\n");
  assert.equal(text.indexOf("\n"), text.length - 1);
  assert.equal(formatError(400, "über"), "ERR 400 über\n");
});

// --- parseResponseHeader ---

Deno.test("parseResponseHeader: OK with fields", () => {
  assert.deepEqual(parseResponseHeader("OK 0"), { ok: true, length: 0, fields: {} });
  assert.deepEqual(parseResponseHeader("OK 12 size=40 offset=28 cache=hit sha256=ab01"), {
    ok: true,
    length: 12,
    fields: { size: "40", offset: "28", cache: "hit", sha256: "ab01" },
  });
  assert.deepEqual(parseResponseHeader("OK 5\r"), { ok: true, length: 5, fields: {} });
});

Deno.test("parseResponseHeader: values are percent-decoded", () => {
  assert.deepEqual(parseResponseHeader("OK 0 name=a%20b%C3%BC%25 type=json"), {
    ok: true,
    length: 0,
    fields: { name: "a bü%", type: "json" },
  });
});

Deno.test("parseResponseHeader: unknown keys are kept, pairs without a key are ignored", () => {
  assert.deepEqual(parseResponseHeader("OK 1 future=x novalue =nokey empty= a=b=c size=1 "), {
    ok: true,
    length: 1,
    fields: { future: "x", empty: "", a: "b=c", size: "1" },
  });
});

Deno.test("parseResponseHeader: a pair with an invalid escape is ignored like a garbled pair", () => {
  // A garbled pair must not fail the response, least of all as a 400 RequestError
  // that a client would report as the server rejecting its request.
  assert.deepEqual(parseResponseHeader("OK 3 x=%zz size=3"), {
    ok: true,
    length: 3,
    fields: { size: "3" },
  });
});

Deno.test("parseResponseHeader: ERR lines", () => {
  assert.deepEqual(parseResponseHeader("ERR 404 not found: a.txt"), {
    ok: false,
    code: 404,
    message: "not found: a.txt",
  });
  assert.deepEqual(parseResponseHeader("ERR 503"), { ok: false, code: 503, message: "" });
  assert.deepEqual(parseResponseHeader("ERR 400 a  b\r"), {
    ok: false,
    code: 400,
    message: "a  b",
  });
});

Deno.test("parseResponseHeader: an ERR message may hold any character but LF", () => {
  // Another server may send U+2028 raw; ours escapes it like a control character.
  assert.deepEqual(parseResponseHeader("ERR 404 not found: a\u2028b\u2029c"), {
    ok: false,
    code: 404,
    message: "not found: a\u2028b\u2029c",
  });
  const sent = formatError(404, "not found: a\u2028b");
  assert.deepEqual(parseResponseHeader(sent.slice(0, -1)), {
    ok: false,
    code: 404,
    message: "not found: a%E2%80%A8b",
  });
});

Deno.test("parseResponseHeader: an ERR code that is not exactly three digits is invalid", () => {
  for (const text of ["ERR 4040 boom", "ERR 404x", "ERR 40", "ERR abc", "ERR"]) {
    assert.throws(() => parseResponseHeader(text), SyntaxError, JSON.stringify(text));
  }
});

Deno.test("parseResponseHeader: invalid lines throw SyntaxError", () => {
  const invalid = [
    "",
    "OK",
    "OK -1",
    "OK abc",
    "OK 5x",
    "OK 1234567890123456",
    "ok 5",
    " OK 5",
    "OK  5",
    "HELLO 5",
  ];
  for (const text of invalid) {
    assert.throws(() => parseResponseHeader(text), SyntaxError, JSON.stringify(text));
  }
  assert.throws(() => parseResponseHeader("OK abc"), {
    name: "SyntaxError",
    message: "invalid response header: OK%20abc",
  });
});

Deno.test("parseResponseHeader reads what formatOk and formatError write", () => {
  const ok = formatOk(7, { size: 7, path: "a b/ü", cache: "miss" });
  assert.deepEqual(parseResponseHeader(ok.slice(0, -1)), {
    ok: true,
    length: 7,
    fields: { size: "7", path: "a b/ü", cache: "miss" },
  });
  const err = formatError(416, "range 5-9 outside 0-4");
  assert.deepEqual(parseResponseHeader(err.slice(0, -1)), {
    ok: false,
    code: 416,
    message: "range 5-9 outside 0-4",
  });
});

// --- checkPath ---

Deno.test("checkPath: returns a valid path unchanged", () => {
  for (const path of ["a", "a/b/c.txt", ".hidden", "...", "ü/😀", "\uFEFF", "a b", "a\\b"]) {
    assert.equal(checkPath(path), path);
  }
});

Deno.test("checkPath: rejects empty, NUL, absolute and dot segments with exact messages", () => {
  assertProtocolError(() => checkPath(""), 400, "empty path");
  assertProtocolError(() => checkPath("a\0b"), 400, NUL);
  assertProtocolError(() => checkPath("/a"), 400, RELATIVE);
  assertProtocolError(() => checkPath("/"), 400, RELATIVE);
  for (const path of [".", "..", "./a", "a/./b", "a//b", "a/", "a/..", "../x"]) {
    assertProtocolError(() => checkPath(path), 400, SEGMENT);
  }
});
