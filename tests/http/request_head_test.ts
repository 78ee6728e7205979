/**
 * The strict request-head parser, rule by rule: each rule of
 * `http/request_head.ts` as a table of heads and what they must give, an
 * accepted head (method, path, version, keep-alive, fields) or a refusal
 * with its exact status; then `findHeadEnd` on whole, split and bare-LF
 * buffers.
 */

import assert from "node:assert/strict";
import {
  findHeadEnd,
  HttpError,
  MAX_FIELDS,
  MAX_HEAD,
  parseRequestHead,
  type RequestHead,
} from "../../http/request_head.ts";
import { collidingPair } from "../helpers.ts";

const encoder = new TextEncoder();

/** Bytes of `text`, each character one byte (latin-1), so tests can send any byte. */
function bytes(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => {
    const code = char.charCodeAt(0);
    if (code > 0xff) throw new Error(`not a byte: ${char}`);
    return code;
  });
}

/** `text` as a JavaScript string literal, bytes outside printable ASCII as `\xHH`. */
function show(text: string): string {
  return JSON.stringify(text).replace(
    /[\x7f-\xff]/g,
    (char) => `\\x${char.charCodeAt(0).toString(16)}`,
  );
}

/** The status `parseRequestHead` refuses `head` with, or the head it accepted. */
function parse(head: string | Uint8Array): RequestHead | number {
  try {
    return parseRequestHead(typeof head === "string" ? bytes(head) : head);
  } catch (error) {
    if (error instanceof HttpError) return error.status;
    throw error;
  }
}

/** What an accepted head must hold; `fields` lists values by lower-case name. */
interface Accepted {
  method: "GET" | "HEAD";
  target?: string;
  path: string;
  version: "HTTP/1.0" | "HTTP/1.1";
  keepAlive: boolean;
  fields?: Record<string, string | null>;
}

function assertAccepted(head: string, expected: Accepted, what = show(head)): void {
  const got = parse(head);
  assert.ok(typeof got !== "number", `${what}: refused with ${got}, expected accepted`);
  assert.equal(got.method, expected.method, what);
  if (expected.target !== undefined) assert.equal(got.target, expected.target, what);
  assert.equal(got.path, expected.path, what);
  assert.equal(got.version, expected.version, what);
  assert.equal(got.keepAlive, expected.keepAlive, what);
  for (const [name, value] of Object.entries(expected.fields ?? {})) {
    assert.equal(got.fields.get(name), value, `${what}: field ${name}`);
  }
}

function assertRefused(head: string | Uint8Array, status: number, what?: string): void {
  const label = what ?? (typeof head === "string" ? show(head) : "bytes");
  const got = parse(head);
  assert.equal(
    typeof got === "number" ? got : "accepted",
    status,
    `${label}: expected ${status}`,
  );
}

/** A GET of `target` over HTTP/1.1 with `fields` (each a whole line) and CRLF line ends. */
function get(target: string, ...fields: string[]): string {
  return [`GET ${target} HTTP/1.1`, ...fields, "", ""].join("\r\n");
}

Deno.test("good heads: origin-form, absolute-form, HTTP/1.0, bare LF, repeated fields", () => {
  const cases: [string, string, Accepted][] = [
    ["origin-form with a query", get("/a%20b/c.txt?x=1&y=/z", "Host: h"), {
      method: "GET",
      target: "/a%20b/c.txt?x=1&y=/z",
      path: "/a%20b/c.txt",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { host: "h" },
    }],
    ["the root", get("/", "Host: h"), {
      method: "GET",
      path: "/",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["HEAD", "HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n", {
      method: "HEAD",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["absolute-form: its authority is ignored", get("http://elsewhere:8080/f/g?q", "Host: h"), {
      method: "GET",
      target: "http://elsewhere:8080/f/g?q",
      path: "/f/g",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { host: "h" },
    }],
    ["absolute-form, https, upper-case scheme", get("HTTPS://a/b", "Host: h"), {
      method: "GET",
      path: "/b",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["absolute-form with an empty path is the root", get("http://a", "Host: a"), {
      method: "GET",
      path: "/",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["absolute-form with a query and no path", get("http://a?x=/y", "Host: a"), {
      method: "GET",
      path: "/",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", {
      method: "GET",
      path: "/x",
      version: "HTTP/1.0",
      keepAlive: false,
      fields: { host: null },
    }],
    ["HTTP/1.0 with one Host", "GET /x HTTP/1.0\r\nHost: h:80\r\n\r\n", {
      method: "GET",
      path: "/x",
      version: "HTTP/1.0",
      keepAlive: false,
      fields: { host: "h:80" },
    }],
    ["bare LF line ends", "GET /x HTTP/1.1\nHost: h\nAccept: */*\n\n", {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { host: "h", accept: "*/*" },
    }],
    ["mixed CRLF and LF", "GET /x HTTP/1.1\nHost: h\r\nAccept: */*\n\r\n", {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { accept: "*/*" },
    }],
    [
      "repeated fields joined with a comma, names case-insensitive",
      get("/x", "Host: h", "Accept: a/b", "X-Twice: 1", "ACCEPT: c/d", "x-twice: 2"),
      {
        method: "GET",
        path: "/x",
        version: "HTTP/1.1",
        keepAlive: true,
        fields: { accept: "a/b, c/d", "x-twice": "1, 2" },
      },
    ],
    [
      "OWS around a value trimmed, inner kept; tab and obs-text allowed",
      get(
        "/x",
        "Host:h",
        "User-Agent: \t a\tb  c \t ",
        "X-Latin: caf\xe9",
      ),
      {
        method: "GET",
        path: "/x",
        version: "HTTP/1.1",
        keepAlive: true,
        fields: { host: "h", "user-agent": "a\tb  c", "x-latin": "caf\xe9" },
      },
    ],
    ["an empty value", get("/x", "Host: h", "X-Empty:"), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { "x-empty": "" },
    }],
    ["Content-Length: 0", get("/x", "Host: h", "Content-Length: 0"), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { "content-length": "0" },
    }],
    ["Host: an IPv6 literal with a port", get("/x", "Host: [::1]:8080"), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["Host: an IPv4 address, an empty port", get("/x", "Host: 127.0.0.1:"), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["Host: empty (RFC 9112 §3.2: a target without authority)", get("/x", "Host:"), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
      fields: { host: "" },
    }],
    ["a path with every sub-delim, a colon and an at sign", get("/a!$&'()*+,;=:@b", "Host: h"), {
      method: "GET",
      path: "/a!$&'()*+,;=:@b",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
    ["exactly MAX_FIELDS fields", get("/x", "Host: h", ...fieldLines(MAX_FIELDS - 1)), {
      method: "GET",
      path: "/x",
      version: "HTTP/1.1",
      keepAlive: true,
    }],
  ];
  for (const [what, head, expected] of cases) assertAccepted(head, expected, what);
});

Deno.test("keep-alive: Connection close and keep-alive for HTTP/1.0 and HTTP/1.1", () => {
  const cases: ["HTTP/1.0" | "HTTP/1.1", string | null, boolean][] = [
    ["HTTP/1.1", null, true],
    ["HTTP/1.1", "close", false],
    ["HTTP/1.1", "Close", false],
    ["HTTP/1.1", "keep-alive", true],
    ["HTTP/1.1", "keep-alive, close", false],
    ["HTTP/1.1", "Upgrade,  CLOSE ", false],
    ["HTTP/1.1", "closed", true],
    ["HTTP/1.0", null, false],
    ["HTTP/1.0", "keep-alive", true],
    ["HTTP/1.0", "Keep-Alive", true],
    ["HTTP/1.0", "te, keep-alive", true],
    ["HTTP/1.0", "close", false],
    ["HTTP/1.0", "keep-alive, close", false],
  ];
  for (const [version, connection, keepAlive] of cases) {
    const head = [
      `GET /k ${version}`,
      "Host: h",
      ...(connection === null ? [] : [`Connection: ${connection}`]),
      "",
      "",
    ].join("\r\n");
    assertAccepted(
      head,
      { method: "GET", path: "/k", version, keepAlive },
      `${version} ${connection}`,
    );
  }
  // Two Connection fields are one list.
  assertAccepted(
    get("/k", "Host: h", "Connection: keep-alive", "Connection: close"),
    { method: "GET", path: "/k", version: "HTTP/1.1", keepAlive: false },
  );
});

Deno.test("Host: exactly one on HTTP/1.1, at most one on HTTP/1.0, a URI host and port", () => {
  const cases: [string, string | Uint8Array, number][] = [
    ["HTTP/1.1 without Host", get("/x"), 400],
    ["HTTP/1.1 without Host, bare LF", "GET /x HTTP/1.1\n\n", 400],
    ["two Hosts", get("/x", "Host: a", "Host: a"), 400],
    ["two Hosts, different case", get("/x", "Host: a", "host: b"), 400],
    ["two Hosts on HTTP/1.0", "GET /x HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["a slash in Host", get("/stats", "Host: x/-"), 400],
    ["a # in Host", get("/tiny.txt", "Host: x#"), 400],
    ["a ? in Host", get("/x", "Host: x?y"), 400],
    ["an @ in Host", get("/x", "Host: u@x"), 400],
    ["a space in Host", get("/x", "Host: a b"), 400],
    ["a port that is not digits", get("/x", "Host: a:b"), 400],
    ["two ports", get("/x", "Host: a:1:2"), 400],
    ["a bracket left open", get("/x", "Host: [::1"), 400],
    ["invalid Host on HTTP/1.0", "GET /x HTTP/1.0\r\nHost: x/-\r\n\r\n", 400],
    ["Host with obs-text", get("/x", "Host: caf\xe9"), 400],
    ["Host with a backslash", get("/x", "Host: a\\b"), 400],
  ];
  for (const [what, head, status] of cases) assertRefused(head, status, what);
});

Deno.test("field syntax: token names, no space before the colon, no obs-fold, no controls", () => {
  const cases: [string, string, number][] = [
    ["a space before the colon", get("/x", "Host: h", "Accept : */*"), 400],
    ["a tab before the colon", get("/x", "Host: h", "Accept\t: */*"), 400],
    ["a space before the colon of Host", get("/x", "Host : h"), 400],
    ["obs-fold with a space", get("/x", "Host: h", "X-A: 1", " 2"), 400],
    ["obs-fold with a tab", get("/x", "Host: h", "X-A: 1", "\t2"), 400],
    ["whitespace before the first field", get("/x", " Host: h"), 400],
    ["a line without a colon", get("/x", "Host: h", "NoColon"), 400],
    ["an empty name", get("/x", "Host: h", ": v"), 400],
    ["a name with a separator", get("/x", "Host: h", "X(A): v"), 400],
    ["a name with a slash", get("/x", "Host: h", "X/A: v"), 400],
    ["a name with obs-text", get("/x", "Host: h", "X-\xe9: v"), 400],
    ["a NUL in a value", get("/x", "Host: h", "X-A: a\x00b"), 400],
    ["a NUL in a name", get("/x", "Host: h", "X\x00A: b"), 400],
    ["a NUL in the request line", "GET /a\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a bare CR inside a value", get("/x", "Host: h", "X-A: a\rb"), 400],
    ["a bare CR ending a field line", "GET /x HTTP/1.1\r\nHost: h\r\rX: y\r\n\r\n", 400],
    ["a bare CR ending the request line", "GET /x HTTP/1.1\rHost: h\r\n\r\n", 400],
    ["CR CR LF", "GET /x HTTP/1.1\r\nHost: h\r\r\n\r\n", 400],
    ["a control character in a value", get("/x", "Host: h", "X-A: a\x01b"), 400],
    ["ESC in a value", get("/x", "Host: h", "X-A: \x1b[31m"), 400],
    ["vertical tab in a value", get("/x", "Host: h", "X-A: a\x0bb"), 400],
    ["DEL in a value", get("/x", "Host: h", "X-A: a\x7fb"), 400],
    ["a control character in Host", get("/x", "Host: h\x01"), 400],
  ];
  for (const [what, head, status] of cases) assertRefused(head, status, what);
});

Deno.test("no bodies: any Transfer-Encoding is 400, a Content-Length other than 0 is 413 or 400", () => {
  const cases: [string, string, number][] = [
    ["TE chunked", get("/x", "Host: h", "Transfer-Encoding: chunked"), 400],
    ["TE chunked, identity", get("/x", "Host: h", "Transfer-Encoding: chunked, identity"), 400],
    ["TE with a leading tab", get("/x", "Host: h", "Transfer-Encoding:\tchunked"), 400],
    ["TE identity", get("/x", "Host: h", "Transfer-Encoding: identity"), 400],
    ["TE empty", get("/x", "Host: h", "Transfer-Encoding:"), 400],
    ["TE upper-case name", get("/x", "Host: h", "TRANSFER-ENCODING: chunked"), 400],
    ["TE with CL 0", get("/x", "Host: h", "Content-Length: 0", "Transfer-Encoding: chunked"), 400],
    ["TE on HTTP/1.0", "GET /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["TE on HEAD", "HEAD /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["CL 5", get("/x", "Host: h", "Content-Length: 5"), 413],
    ["CL huge", get("/x", "Host: h", "Content-Length: 99999999999999999999999"), 413],
    ["CL 1000000 on HTTP/1.0", "GET /x HTTP/1.0\r\nContent-Length: 1000000\r\n\r\n", 413],
    ["CL 5, 5 (one value repeated)", get("/x", "Host: h", "Content-Length: 5, 5"), 413],
    ["CL 0, 5", get("/x", "Host: h", "Content-Length: 0, 5"), 400],
    ["CL +0", get("/x", "Host: h", "Content-Length: +0"), 400],
    ["CL -1", get("/x", "Host: h", "Content-Length: -1"), 400],
    ["CL 0x0", get("/x", "Host: h", "Content-Length: 0x0"), 400],
    ["CL 0.0", get("/x", "Host: h", "Content-Length: 0.0"), 400],
    ["CL 1e3", get("/x", "Host: h", "Content-Length: 1e3"), 400],
    ["CL empty", get("/x", "Host: h", "Content-Length:"), 400],
    ["CL with a space inside", get("/x", "Host: h", "Content-Length: 1 0"), 400],
    ["two CLs, 0 and 5", get("/x", "Host: h", "Content-Length: 0", "Content-Length: 5"), 400],
    ["two CLs, 5 and 0", get("/x", "Host: h", "Content-Length: 5", "content-length: 0"), 400],
    ["two CLs, 5 and 6", get("/x", "Host: h", "Content-Length: 5", "Content-Length: 6"), 400],
  ];
  for (const [what, head, status] of cases) assertRefused(head, status, what);
});

Deno.test("the request line: versions (505 or 400), single spaces, the target's form and bytes", () => {
  const cases: [string, string, number][] = [
    ["the HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\n", 505],
    ["HTTP/1.2", "GET /x HTTP/1.2\r\nHost: h\r\n\r\n", 505],
    ["HTTP/2.0", "GET /x HTTP/2.0\r\nHost: h\r\n\r\n", 505],
    ["HTTP/0.9 spelled out", "GET /x HTTP/0.9\r\n\r\n", 505],
    ["HTTP/3.0", "GET /x HTTP/3.0\r\nHost: h\r\n\r\n", 505],
    ["a lower-case version", "GET /x http/1.1\r\nHost: h\r\n\r\n", 400],
    ["HTTP/1", "GET /x HTTP/1\r\nHost: h\r\n\r\n", 400],
    ["HTTP/11.0", "GET /x HTTP/11.0\r\nHost: h\r\n\r\n", 400],
    ["HTTP/1.1x", "GET /x HTTP/1.1x\r\nHost: h\r\n\r\n", 400],
    ["no version (HTTP/0.9 style)", "GET /x\r\n\r\n", 400],
    ["a double space after the method", "GET  /x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a double space before the version", "GET /x  HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a trailing space", "GET /x HTTP/1.1 \r\nHost: h\r\n\r\n", 400],
    ["a leading space", " GET /x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["tabs for spaces", "GET\t/x\tHTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a space in the target", "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["an empty request line", "\r\n\r\n", 400],
    ["a # in the target", get("/a#b", "Host: h"), 400],
    ["a # in the query", get("/a?b#c", "Host: h"), 400],
    ["a non-ASCII target", get("/caf\xe9", "Host: h"), 400],
    ["a UTF-8 target", get("/caf\xc3\xa9", "Host: h"), 400],
    ["DEL in the target", get("/a\x7f", "Host: h"), 400],
    ["the * target", get("*", "Host: h"), 400],
    ["authority-form", get("h:80", "Host: h:80"), 400],
    ["a relative target", get("x/y", "Host: h"), 400],
    ["another scheme", get("ftp://h/x", "Host: h"), 400],
    ["a scheme without //", get("http:/x", "Host: h"), 400],
    ["a method that is not a token", "G(T /x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["POST", "POST /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["PUT", "PUT /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["DELETE", "DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["OPTIONS", "OPTIONS /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["CONNECT authority-form", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405],
    ["methods are case-sensitive: get", "get /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["an unknown method", "BREW /x HTTP/1.1\r\nHost: h\r\n\r\n", 405],
    ["POST on HTTP/1.0", "POST /x HTTP/1.0\r\n\r\n", 405],
  ];
  for (const [what, head, status] of cases) assertRefused(head, status, what);
});

Deno.test("a method other than GET and HEAD is 405 once the request line is read, whatever the fields", () => {
  const cases: [string, string][] = [
    ["POST without Host", "POST /x HTTP/1.1\r\n\r\n"],
    ["POST with two Hosts", "POST /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"],
    ["POST with a body", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"],
    ["POST chunked", "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"],
    ["PUT with a bad field name", "PUT /x HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n"],
    ["DELETE with obs-fold", "DELETE /x HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"],
    [
      "OPTIONS with too many fields",
      get("/x", "Host: h", ...fieldLines(MAX_FIELDS + 5))
        .replace("GET", "OPTIONS"),
    ],
  ];
  for (const [what, head] of cases) assertRefused(head, 405, what);
});

Deno.test("the path: dot segments resolved as a URL's (%2e is a dot), never above the root, no query", () => {
  const cases: [string, string][] = [
    ["/a/b/../c", "/a/c"],
    ["/a/./b", "/a/b"],
    ["/a/..", "/"],
    ["/a/b/..", "/a/"],
    ["/a/.", "/a/"],
    ["/..", "/"],
    ["/../../etc/passwd", "/etc/passwd"],
    ["/a/%2e%2e/b", "/b"],
    ["/a/%2E%2e/%2e/b", "/b"],
    ["/a/.%2e/b", "/b"],
    ["/a/..b/c", "/a/..b/c"],
    ["/a/...", "/a/..."],
    ["/a/%2e%2e%2f/b", "/a/%2e%2e%2f/b"], // an encoded slash is not a segment boundary
    ["/a//../b", "/a/b"],
    ["//x", "//x"],
    ["/a/../b?c=/../d", "/b"],
    ["/a/..?x", "/"],
  ];
  for (const [target, path] of cases) {
    assertAccepted(get(target, "Host: h"), {
      method: "GET",
      target,
      path,
      version: "HTTP/1.1",
      keepAlive: true,
    }, target);
  }
  assertAccepted(get("http://h/a/../../b/./c?x", "Host: h"), {
    method: "GET",
    path: "/b/c",
    version: "HTTP/1.1",
    keepAlive: true,
  }, "absolute-form");
});

Deno.test("RFC 3986 hosts and http authorities; OWS is SP and HT only (found by the fuzz test)", () => {
  // Each head with its answer: a status, or "keep" / "close" for an accepted
  // head and its keep-alive. Every mismatch is listed, not only the first.
  const cases: [string, number | "keep" | "close"][] = [
    // Host: RFC 9110 §7.2 uri-host [":" port], uri-host as RFC 3986 §3.2.2 has it.
    ...([
      ["%41", "keep"],
      ["[::ffff:1.2.3.4]", "keep"],
      ["[1:2:3:4:5:6:7::]", "keep"],
      ["[v1.x]", "keep"], // IPvFuture
      ["[V1.x]:80", "keep"], // ABNF strings are case-insensitive (RFC 5234 §2.3)
      ["%", 400],
      ["%zz", 400],
      ["a%4", 400],
      ["[:]", 400],
      ["[...]", 400],
      ["[1::2::3]", 400],
      ["[1:2:3:4:5:6:7:8:9]", 400],
      ["[12345::]", 400],
    ] as const).map(([host, answer]) => [get("/x", `Host: ${host}`), answer] as [string, number]),
    // absolute-form: an http URI (RFC 9110 §4.2.1), whose host must not be
    // empty ("A recipient that processes such a URI reference MUST reject it"),
    // and userinfo in it an error (§4.2.4, a SHOULD this server keeps).
    ...[
      "http:///x",
      "HTTP://",
      "http://:80/x",
      "http://[/x",
      "http://a:b/x",
      "http://h:8x/",
      "http://u@h/",
    ]
      .map((target) => [get(target, "Host: h"), 400] as [string, number]),
    // Field values are trimmed of OWS (SP, HT), not of every Unicode space:
    // "0\xa0" is not 1*DIGIT (RFC 9110 §8.6), "close\xa0" is not "close".
    [get("/x", "Host: h", "Content-Length: 0\xa0"), 400],
    [get("/x", "Host: h", "Content-Length: \xa00"), 400],
    [get("/x", "Host: h", "Content-Length: 0, 0\xa0"), 400],
    [get("/x", "Host: h", "Connection: close\xa0"), "keep"],
    ["GET /x HTTP/1.0\r\nConnection: keep-alive\xa0\r\n\r\n", "close"],
  ];
  const wrong: string[] = [];
  for (const [head, expected] of cases) {
    const got = parse(head);
    const answer = typeof got === "number" ? got : got.keepAlive ? "keep" : "close";
    if (answer !== expected) wrong.push(`${show(head)}: ${answer}, expected ${expected}`);
  }
  assert.deepEqual(wrong, []);
});

/** `count` distinct header field lines. */
function fieldLines(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `X-Field-${i}: ${i}`);
}

Deno.test("limits: more than MAX_FIELDS fields or MAX_HEAD bytes is 431", () => {
  assertRefused(get("/x", "Host: h", ...fieldLines(MAX_FIELDS)), 431, "MAX_FIELDS + 1 fields");
  assertRefused(
    "GET /x HTTP/1.0\n" + fieldLines(MAX_FIELDS + 1).join("\n") + "\n\n",
    431,
    "MAX_FIELDS + 1 fields, HTTP/1.0, bare LF",
  );
  assertRefused(get("/x", "Host: h", ...fieldLines(5000)), 431, "5000 fields");

  // A head of exactly MAX_HEAD bytes passes; one more byte is 431.
  const padded = (size: number) => {
    const bare = get("/x", "Host: h", "X-Pad: ");
    const head = get("/x", "Host: h", `X-Pad: ${"p".repeat(size - bare.length)}`);
    assert.equal(head.length, size);
    return head;
  };
  assertAccepted(padded(MAX_HEAD), {
    method: "GET",
    path: "/x",
    version: "HTTP/1.1",
    keepAlive: true,
  }, "MAX_HEAD bytes");
  assertRefused(padded(MAX_HEAD + 1), 431, "MAX_HEAD + 1 bytes");
  assertRefused(get(`/${"a".repeat(MAX_HEAD)}`, "Host: h"), 431, "a long target");
  assertRefused(padded(MAX_HEAD * 8), 431, "64 KiB");
});

Deno.test("every refusal is an HttpError that carries a message", () => {
  for (
    const head of [get("/x"), get("/x", "Host: h", "Content-Length: 5"), "PRI * HTTP/2.0\r\n\r\n"]
  ) {
    assert.throws(() => parseRequestHead(bytes(head)), (error: unknown) => {
      assert.ok(error instanceof HttpError);
      assert.equal(error.name, "HttpError");
      assert.ok(error.message.length > 0);
      return true;
    });
  }
});

Deno.test("findHeadEnd: CRLF and LF forms, after a pipelined head, and no end", () => {
  const find = (text: string, from = 0, to = text.length) => findHeadEnd(bytes(text), from, to);
  const crlf = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  assert.equal(find(crlf), crlf.length);
  assert.equal(find(crlf + "GET / HT"), crlf.length, "the next request's bytes are not the head's");
  const lf = "GET / HTTP/1.1\nHost: a\n\n";
  assert.equal(find(lf), lf.length);
  assert.equal(find("GET / HTTP/1.1\r\nHost: a\n\r\n"), 26, "LF then CRLF");
  assert.equal(find("GET / HTTP/1.1\nHost: a\r\n\n"), 25, "CRLF then LF");
  assert.equal(find("GET / HTTP/1.0\r\n\r\n"), 18, "no fields");

  // The HTTP/2 connection preface ends a head after its first empty line.
  const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  assert.equal(find(preface), 18);
  assertRefused(preface.slice(0, 18), 505, "the preface's head");

  // Incomplete: no empty line yet.
  for (
    const partial of [
      "",
      "G",
      "GET / HTTP/1.1",
      "GET / HTTP/1.1\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n\r",
    ]
  ) {
    assert.equal(find(partial), -1, JSON.stringify(partial));
  }
  // A bare CR is not a line end: the head has not ended.
  assert.equal(find("GET / HTTP/1.1\r\nHost: a\r\r\r"), -1);
  assert.equal(find("GET / HTTP/1.1\r\r\n"), -1);

  // `to` bounds the search; `from` starts it at the second of two pipelined heads.
  assert.equal(find(crlf, 0, crlf.length - 1), -1);
  assert.equal(find(crlf + crlf, crlf.length), 2 * crlf.length);
  assert.equal(find(crlf + lf, crlf.length), crlf.length + lf.length);
  assert.equal(find(crlf + crlf, crlf.length, 2 * crlf.length - 1), -1);
});

Deno.test("findHeadEnd on a head that arrives in pieces: -1 until its last byte, at every split", () => {
  for (
    const head of [
      "GET /a HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
      "GET /a HTTP/1.1\nHost: a\n\n",
    ]
  ) {
    const whole = encoder.encode(head + "NEXT");
    // A growing buffer, as a connection's read buffer fills.
    for (let filled = 0; filled <= whole.length; filled++) {
      const expected = filled < head.length ? -1 : head.length;
      assert.equal(findHeadEnd(whole, 0, filled), expected, `${JSON.stringify(head)} at ${filled}`);
    }
    // The head at an offset in a larger buffer, ended early by `to`.
    const buffer = new Uint8Array(7 + whole.length + 7);
    buffer.set(whole, 7);
    assert.equal(findHeadEnd(buffer, 7, 7 + head.length), 7 + head.length);
    assert.equal(findHeadEnd(buffer, 7, 7 + head.length - 1), -1);
    assert.equal(findHeadEnd(buffer.subarray(7), 0, head.length), head.length);
  }
});

Deno.test("a repeated head is the head parsed before, unchanged; a refused one is refused every time", () => {
  const bytes = encoder.encode("GET /memo.txt HTTP/1.1\r\nHost: h\r\n\r\n");
  const first = parseRequestHead(bytes);
  assert.equal(parseRequestHead(bytes.slice()), first);
  assert.ok(Object.isFrozen(first));
  assert.throws(() => first.fields.add("x-late", "1"), TypeError, "its fields are read-only too");
  assert.notEqual(
    parseRequestHead(encoder.encode("GET /memo.txt HTTP/1.1\r\nHost: i\r\n\r\n")),
    first,
  );
  const refused = encoder.encode("GET /memo.txt HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n");
  for (let i = 0; i < 2; i++) {
    assert.throws(
      () => parseRequestHead(refused),
      (e) => e instanceof HttpError && e.status === 400,
    );
  }
  // Heads of one NUL apart: the NUL one is refused, whatever was parsed before.
  parseRequestHead(encoder.encode("GET /a HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n"));
  const nul = encoder.encode("GET /a HTTP/1.1\r\nHost: h\r\nX: \0\r\n\r\n");
  assert.throws(() => parseRequestHead(nul), (e) => e instanceof HttpError && e.status === 400);
});

Deno.test("findHeadEnd looks no further than `to`, whatever lies past it", () => {
  const bytes = encoder.encode("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  const buffer = new Uint8Array(64);
  buffer.set(bytes);
  assert.equal(findHeadEnd(buffer, 0, bytes.length), bytes.length);
  assert.equal(findHeadEnd(buffer, 0, bytes.length - 1), -1);
  assert.equal(findHeadEnd(buffer, 0, bytes.length - 2), -1);
  // The bytes past `to` would complete a head: they must not count.
  assert.equal(findHeadEnd(buffer, 10, 20), -1);
});

Deno.test("two heads whose bytes hash alike (the memo's key) are each parsed as themselves", () => {
  const head = (i: number) => encoder.encode(`GET /c${i} HTTP/1.1\r\nHost: h\r\n\r\n`);
  const [a, b] = collidingPair(head);
  for (let round = 0; round < 2; round++) {
    assert.equal(parseRequestHead(head(a)).path, `/c${a}`);
    assert.equal(parseRequestHead(head(b)).path, `/c${b}`);
  }
});
