/**
 * Fuzz tests of the wire protocol: the request-line parser in process, and a
 * live server over raw sockets (pipelined random lines, binary garbage, a
 * request line that never ends).
 *
 * Every random choice comes from `seededRandom` with a fixed seed, and every
 * assertion message names the seed, the case and the input bytes in hex, so a
 * failure reproduces exactly.
 *
 * The oracle is the contract itself: `contractModel` below decides a request
 * line from `PROTOCOL.md` alone (with `decodeURIComponent` as an independent
 * percent/UTF-8 decoder), and the served tree is known, so every response's
 * code, and every body of a GET, is predicted exactly.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  formatRequest,
  MAX_REQUEST_LINE,
  parseRequest,
  percentDecode,
  percentEncode,
  type ProtocolRequest,
  RequestError,
} from "../../protocol.ts";
import {
  concat,
  json,
  RawConnection,
  type RawResponse,
  seededBytes,
  seededRandom,
  sha256,
  withServer,
} from "../helpers.ts";

// ---------------------------------------------------------------------------
// Seeds: change one to explore, keep them fixed in the repository.

const PARSER_SEED = 0x0f022001;
const SOCKET_SEED = 0x0f022002;
const GARBAGE_SEED = 0x0f022003;
const ENDLESS_SEED = 0x0f022004;

// ---------------------------------------------------------------------------
// Randomness and formatting helpers.

/** A seeded random source with the few shapes of choice the generators need. */
class Rng {
  readonly seed: number;
  readonly #next: () => number;

  constructor(seed: number) {
    this.seed = seed;
    this.#next = seededRandom(seed);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }

  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  chance(p: number): boolean {
    return this.#next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

const encoder = new TextEncoder();
const HEX = "0123456789ABCDEF";

function hex(bytes: Uint8Array, max = 600): string {
  let out = "";
  for (const byte of bytes.subarray(0, max)) out += HEX[byte >> 4] + HEX[byte & 15];
  return bytes.length > max ? `${out}…(${bytes.length} bytes in all)` : out;
}

function escapeByte(byte: number, lower: boolean): string {
  const text = "%" + HEX[byte >> 4] + HEX[byte & 15];
  return lower ? text.toLowerCase() : text;
}

/** Lines joined, each followed by its LF. */
function joinLines(lines: Uint8Array[]): Uint8Array {
  return concat(...lines.flatMap((line) => [line, Uint8Array.of(0x0a)]));
}

/** Random bytes without an LF (an LF becomes a byte picked again). */
function bytesWithoutLf(rng: Rng, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    let byte = rng.int(256);
    while (byte === 0x0a) byte = rng.int(256);
    out[i] = byte;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The contract as an executable model (PROTOCOL.md, "Requests").

const ARITY: Record<string, [number, number]> = {
  GET: [1, 3],
  LIST: [0, 0],
  FILES: [0, 3],
  STAT: [1, 1],
  PURGE: [1, 1],
  STATS: [0, 0],
  PING: [0, 0],
  QUIT: [0, 0],
  AUTH: [1, 1],
};
const COMMANDS = Object.keys(ARITY) as ProtocolRequest["command"][];

/** Percent-decoding by the platform's decoder: raw non-ASCII bytes are escaped first. */
function decodeArgument(token: Uint8Array): string | null {
  let text = "";
  for (const byte of token) {
    text += byte >= 0x80 ? escapeByte(byte, false) : String.fromCharCode(byte);
  }
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function contractPath(path: string): boolean {
  return path.length > 0 && !path.startsWith("/") && !path.includes("\0") &&
    path.split("/").every((segment) => segment !== "" && segment !== "." && segment !== "..");
}

function contractNumber(text: string): number | null {
  return /^[0-9]{1,15}$/.test(text) ? Number(text) : null;
}

/** A name a FILES page may start after: one segment, never `.` or `..` (`.` is the start). */
function contractName(text: string): boolean {
  return text !== "" && text !== "." && text !== ".." && !text.includes("/") &&
    !text.includes("\0");
}

/** What a request line (without its LF) means by the contract, or null for a 400. */
function contractModel(line: Uint8Array): ProtocolRequest | null {
  if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
  if (line.length === 0) return null;
  if (line.some((byte) => byte < 0x20 || byte === 0x7f)) return null;
  const tokens: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i <= line.length; i++) {
    if (i === line.length || line[i] === 0x20) {
      tokens.push(line.subarray(start, i));
      start = i + 1;
    }
  }
  if (tokens.some((token) => token.length === 0)) return null;
  const [head, ...raw] = tokens;
  if (head.some((byte) => byte >= 0x80)) return null;
  const command = String.fromCharCode(...head).toUpperCase();
  if (!Object.hasOwn(ARITY, command)) return null;
  const [min, max] = ARITY[command];
  if (raw.length < min || raw.length > max) return null;
  const args = raw.map(decodeArgument);
  if (args.some((arg) => arg === null)) return null;
  switch (command) {
    case "GET": {
      const [path, offset, length] = args as string[];
      if (!contractPath(path)) return null;
      const numbers = [offset, length].map((text) =>
        text === undefined ? undefined : contractNumber(text)
      );
      if (numbers.includes(null)) return null;
      return {
        command,
        path,
        offset: numbers[0] ?? undefined,
        length: numbers[1] ?? undefined,
      };
    }
    case "FILES": {
      // FILES [<dir> [<after> [<limit>]]], `.` meaning the served directory, then the start.
      const [dir, after, limit] = args as (string | undefined)[];
      const request: Extract<ProtocolRequest, { command: "FILES" }> = { command, path: "" };
      if (dir !== undefined && dir !== ".") {
        if (!contractPath(dir)) return null;
        request.path = dir;
      }
      if (after !== undefined && after !== ".") {
        if (!contractName(after)) return null;
        request.after = after;
      }
      if (limit !== undefined) {
        const number = contractNumber(limit);
        if (number === null || number < 1 || number > 10_000) return null;
        request.limit = number;
      }
      return request;
    }
    case "STAT":
      return contractPath(args[0]!) ? { command, path: args[0]! } : null;
    case "PURGE": {
      // A raw argument ending in `*` is a prefix; what precedes it, decoded,
      // must be empty or could begin a valid path.
      if (raw[0][raw[0].length - 1] !== 0x2a) {
        return contractPath(args[0]!) ? { command, path: args[0]!, prefix: false } : null;
      }
      const prefix = decodeArgument(raw[0].subarray(0, -1));
      if (prefix === null) return null;
      if (prefix !== "" && !contractPath(prefix.endsWith("/") ? `${prefix}x` : prefix)) return null;
      return { command, path: prefix, prefix: true };
    }
    case "AUTH":
      return { command, token: args[0]! };
    default:
      return { command } as ProtocolRequest;
  }
}

/** The contract's rules on a path the parser returned. */
function assertContractRequest(request: ProtocolRequest, where: string): void {
  if (!("path" in request)) return;
  const { path } = request;
  if (request.command === "FILES" && path === "") return;
  if (request.command === "PURGE" && request.prefix) return;
  assert.ok(
    contractPath(path),
    `${where}: returned path breaks the contract: ${JSON.stringify(path)}`,
  );
  assert.ok(path.isWellFormed(), `${where}: returned path is not well-formed Unicode`);
  if (request.command === "GET") {
    for (const n of [request.offset, request.length]) {
      if (n === undefined) continue;
      assert.ok(Number.isSafeInteger(n) && n >= 0 && n <= 999_999_999_999_999, `${where}: ${n}`);
    }
  }
}

/**
 * Parses a line the way the server must: a ProtocolRequest or a RequestError 400,
 * nothing else, and exactly what the contract model says.
 */
function checkParse(line: Uint8Array, where: string): ProtocolRequest | null {
  let parsed: ProtocolRequest | null = null;
  try {
    parsed = parseRequest(line);
  } catch (error) {
    assert.ok(
      error instanceof RequestError,
      `${where}: threw something other than a RequestError: ${error}`,
    );
    assert.equal(error.code, 400, `${where}: RequestError ${error.code}, expected 400`);
  }
  if (parsed !== null) assertContractRequest(parsed, where);
  assert.deepEqual(parsed, contractModel(line), `${where}: parser and contract disagree`);
  return parsed;
}

// ---------------------------------------------------------------------------
// Generators.

const ASCII_POOL = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ..."-_.~+=&?#!'()*,;:@[]$ %\\\"<>^`{|}",
];
const CONTROL_POOL = ["\t", "\x01", "\x0b", "\x1b", "\x1f", "\x7f", "\r", "\n"];
const UNICODE_POOL = [
  "é",
  "ü",
  "ß",
  "中",
  "文",
  "ア",
  "😀",
  "🂡",
  "\uFEFF", // byte-order mark: an ordinary character
  "\u2028",
  "\u00A0",
  "\u0301",
  "\u200B",
  "\uFFFD",
  "\uFFFF",
  "\u{10FFFF}",
];

function randomSegment(rng: Rng): string {
  let segment = "";
  const length = rng.range(1, 10);
  for (let i = 0; i < length; i++) {
    const kind = rng.int(10);
    const pool = kind < 7 ? ASCII_POOL : kind < 8 ? CONTROL_POOL : UNICODE_POOL;
    segment += rng.pick(pool);
  }
  return segment === "." || segment === ".." ? segment + "x" : segment;
}

function randomPath(rng: Rng): string {
  const segments: string[] = [];
  const count = rng.range(1, 4);
  for (let i = 0; i < count; i++) segments.push(randomSegment(rng));
  return segments.join("/");
}

function randomDigits(rng: Rng): string {
  let digits = "";
  const length = rng.range(1, 15);
  for (let i = 0; i < length; i++) digits += String(rng.int(10));
  return digits;
}

/** A grammar-valid request: what it means, and its arguments as decoded text. */
interface Generated {
  request: ProtocolRequest;
  args: string[];
}

/** Paths and numbers for a request; the socket tests bias them to the served tree. */
interface ArgSource {
  path(rng: Rng, command: "GET" | "STAT" | "FILES"): string;
  /** A name for a FILES page to start after. */
  name(rng: Rng): string;
  number(rng: Rng, path: string, which: "offset" | "length", offset: number): string;
}

const RANDOM_ARGS: ArgSource = {
  path: (rng) => randomPath(rng),
  name: (rng) => randomSegment(rng),
  number: (rng) => randomDigits(rng),
};

function generateRequest(rng: Rng, source: ArgSource, commands = COMMANDS): Generated {
  const command = rng.pick(commands);
  switch (command) {
    case "GET": {
      const path = source.path(rng, "GET");
      const request: ProtocolRequest = { command, path, offset: undefined, length: undefined };
      const args = [path];
      const count = rng.int(3);
      if (count >= 1) {
        const text = source.number(rng, path, "offset", 0);
        request.offset = Number(text);
        args.push(text);
      }
      if (count >= 2) {
        const text = source.number(rng, path, "length", request.offset!);
        request.length = Number(text);
        args.push(text);
      }
      return { request, args };
    }
    case "FILES": {
      if (rng.chance(0.3)) return { request: { command, path: "" }, args: [] };
      const path = rng.chance(0.2) ? "" : source.path(rng, "FILES");
      const request: Extract<ProtocolRequest, { command: "FILES" }> = { command, path };
      const args = [path === "" ? "." : path];
      if (rng.chance(0.5)) {
        const after = rng.chance(0.3) ? "." : source.name(rng);
        if (after !== ".") request.after = after;
        args.push(after);
        if (rng.chance(0.5)) {
          request.limit = rng.range(1, 10_000);
          args.push(String(request.limit));
        }
      }
      return { request, args: path === "" && args.length === 1 ? [] : args };
    }
    case "STAT": {
      const path = source.path(rng, "STAT");
      return { request: { command, path }, args: [path] };
    }
    case "PURGE": {
      const path = source.path(rng, "STAT");
      return { request: { command, path, prefix: false }, args: [path] };
    }
    case "AUTH": {
      // Any argument is a token to the parser (the server checks it).
      const token = source.path(rng, "STAT");
      return { request: { command, token }, args: [token] };
    }
    default:
      return { request: { command } as ProtocolRequest, args: [] };
  }
}

/** A request's arguments, in order. */
function requestArgs(request: ProtocolRequest): (string | number)[] {
  switch (request.command) {
    case "GET":
      return [request.path, request.offset, request.length].filter((arg) => arg !== undefined);
    case "FILES": {
      const window = request.after !== undefined || request.limit !== undefined;
      if (request.path === "" && !window) return [];
      const args: (string | number)[] = [request.path === "" ? "." : request.path];
      if (window) args.push(request.after ?? ".");
      if (request.limit !== undefined) args.push(request.limit);
      return args;
    }
    case "STAT":
    case "PURGE":
      return [request.path];
    case "AUTH":
      return [request.token];
    default:
      return [];
  }
}

/**
 * The request's canonical line, built with percentEncode (no LF). A PURGE
 * path's last `*` is written `%2A` (a raw one would make it a prefix), and a
 * prefix gets its raw `*`.
 */
function canonicalLine(request: ProtocolRequest): string {
  const args = requestArgs(request).map((arg) => percentEncode(String(arg)));
  if (request.command === "PURGE") {
    args[0] = request.prefix ? `${args[0]}*` : args[0].replace(/\*$/, "%2A");
  }
  return [request.command, ...args].join(" ");
}

/**
 * Encodes an argument as any client may: the bytes that must be escaped are,
 * others sometimes are (random hex case), raw UTF-8 otherwise.
 */
function encodeLoosely(rng: Rng, text: string): number[] {
  const out: number[] = [];
  for (const byte of encoder.encode(text)) {
    const must = byte <= 0x20 || byte === 0x7f || byte === 0x25;
    if (must || rng.chance(0.15)) {
      out.push(...encoder.encode(escapeByte(byte, rng.chance(0.5))));
    } else {
      out.push(byte);
    }
  }
  return out;
}

/** A random, still valid, line for a generated request (no LF). */
function looseLine(rng: Rng, generated: Generated): Uint8Array {
  let command = "";
  for (const c of generated.request.command) command += rng.chance(0.3) ? c.toLowerCase() : c;
  const bytes = [...encoder.encode(command)];
  for (const arg of generated.args) {
    const encoded = encodeLoosely(rng, arg);
    // A PURGE path's raw final `*` would make it a prefix: that one must be escaped.
    if (generated.request.command === "PURGE" && encoded.at(-1) === 0x2a) {
      encoded.splice(-1, 1, ...encoder.encode("%2A"));
    }
    bytes.push(0x20, ...encoded);
  }
  if (rng.chance(0.2)) bytes.push(0x0d);
  return Uint8Array.from(bytes);
}

const UTF8_FRAGMENTS: number[][] = [
  [0x80],
  [0xbf],
  [0xc3],
  [0xe2, 0x82],
  [0xf0, 0x9f, 0x98],
  [0xc0, 0xaf], // overlong "/"
  [0xc0, 0xae], // overlong "."
  [0xc0, 0x80], // overlong NUL
  [0xe0, 0x80, 0xae], // overlong "."
  [0xe0, 0x80, 0xaf],
  [0xf0, 0x80, 0x80, 0xaf],
  [0xc1, 0xbf],
  [0xed, 0xa0, 0x80], // a surrogate
  [0xed, 0xbf, 0xbf],
  [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
  [0xf5],
  [0xfe],
  [0xff],
  [0xc3, 0xa9], // valid: é
  [0xef, 0xbb, 0xbf], // valid: BOM
  [0xf0, 0x9f, 0x98, 0x80], // valid: 😀
  [0xe2, 0x80, 0xa8], // valid: U+2028
  [0xc2, 0x85], // valid: NEL
];
const BAD_ESCAPES = ["%", "%G", "%1", "%1G", "%G1", "%%", "%zz", "% 1", "%0", "%-1", "%+F"];
const PATH_BITS = ["/", "//", "/./", "/../", ".", "..", "%2F", "%2f", "%2E%2E", "%2F..%2F", "/%00"];
const NUMBER_BITS = [
  " 0",
  " 00",
  " 999999999999999",
  " 1000000000000000",
  " 0000000000000001",
  " +1",
  " -1",
  " 1e3",
  " 0x10",
  " 1.5",
  " \u0661",
  " %31",
  " 9007199254740993",
];

/** Applies 1-4 random byte-level mutations to a line (one, half of the time). */
function mutate(rng: Rng, line: Uint8Array): Uint8Array {
  const b = [...line];
  const bytesOf = (text: string) => [...encoder.encode(text)];
  const count = rng.chance(0.5) ? 1 : rng.range(2, 4);
  for (let n = 0; n < count; n++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(14)) {
      case 0: // insert a byte
        b.splice(at, 0, rng.int(256));
        break;
      case 1: // delete bytes
        b.splice(at, rng.range(1, 3));
        break;
      case 2: // replace a byte
        if (b.length > 0) b[rng.int(b.length)] = rng.int(256);
        break;
      case 3: { // duplicate a run
        const length = rng.range(1, 8);
        b.splice(at, 0, ...b.slice(at, at + length));
        break;
      }
      case 4: { // flip the case of the ASCII letters in a run
        const end = Math.min(b.length, at + rng.range(1, 8));
        for (let i = at; i < end; i++) {
          const lower = b[i] | 0x20;
          if (lower >= 0x61 && lower <= 0x7a) b[i] ^= 0x20;
        }
        break;
      }
      case 5: // a valid escape of any byte
        b.splice(at, 0, ...bytesOf(escapeByte(rng.int(256), rng.chance(0.5))));
        break;
      case 6: // an invalid escape
        b.splice(at, 0, ...bytesOf(rng.pick(BAD_ESCAPES)));
        break;
      case 7: // spaces
        b.splice(at, 0, ...(rng.chance(0.5) ? [0x20] : [0x20, 0x20]));
        break;
      case 8: // CR, at the end (ignored) or anywhere
        if (rng.chance(0.5)) b.push(0x0d);
        else b.splice(at, 0, 0x0d);
        break;
      case 9: { // a raw control byte, or an escaped NUL
        const byte = rng.pick([0x00, 0x00, 0x7f, 0x09, 0x0b, 0x0c, 0x1b, 0x1f]);
        b.splice(at, 0, ...(rng.chance(0.3) ? bytesOf("%00") : [byte]));
        break;
      }
      case 10: { // a UTF-8 fragment or overlong form, raw or escaped
        const fragment = rng.pick(UTF8_FRAGMENTS);
        const lower = rng.chance(0.5);
        const bytes = rng.chance(0.5)
          ? fragment
          : fragment.flatMap((byte) => bytesOf(escapeByte(byte, lower)));
        b.splice(at, 0, ...bytes);
        break;
      }
      case 11: // path separators and dot segments
        b.splice(at, 0, ...bytesOf(rng.pick(PATH_BITS)));
        break;
      case 12: // numbers, valid and not
        b.splice(at, 0, ...bytesOf(rng.pick(NUMBER_BITS)));
        break;
      default: // truncate
        b.length = Math.min(b.length, at);
    }
  }
  return Uint8Array.from(b);
}

function randomBytesLine(rng: Rng, maxLength = 300): Uint8Array {
  const out = new Uint8Array(rng.int(maxLength + 1));
  for (let i = 0; i < out.length; i++) out[i] = rng.int(256);
  return out;
}

// ---------------------------------------------------------------------------
// 1. The parser, in process.

Deno.test("fuzz: parseRequest answers every line with a ProtocolRequest or a 400, as the contract says", () => {
  const rng = new Rng(PARSER_SEED);
  const seed = `seed=0x${PARSER_SEED.toString(16)}`;
  const tally = { random: [0, 0], mutated: [0, 0], grammar: [0, 0] };
  const count = (kind: keyof typeof tally, parsed: ProtocolRequest | null) =>
    tally[kind][parsed ? 0 : 1]++;

  for (let i = 0; i < 2000; i++) {
    const line = randomBytesLine(rng);
    count("random", checkParse(line, `${seed} random #${i} line=${hex(line)}`));
  }

  for (let i = 0; i < 2000; i++) {
    const base = looseLine(rng, generateRequest(rng, RANDOM_ARGS));
    const line = mutate(rng, base);
    count("mutated", checkParse(line, `${seed} mutated #${i} base=${hex(base)} line=${hex(line)}`));
  }

  for (let i = 0; i < 2000; i++) {
    const generated = generateRequest(rng, RANDOM_ARGS);
    const { request } = generated;
    const canonical = canonicalLine(request);
    const where = `${seed} grammar #${i} request=${JSON.stringify(request)}`;
    assert.equal(formatRequest(request.command, requestArgs(request)), canonical + "\n", where);
    if ("path" in request) {
      assert.equal(percentDecode(percentEncode(request.path)), request.path, where);
    }
    const parsedBack = checkParse(encoder.encode(canonical), `${where} canonical=${canonical}`);
    assert.deepEqual(parsedBack, request, `${where}: the canonical line does not round-trip`);
    const loose = looseLine(rng, generated);
    const parsedLoose = checkParse(loose, `${where} loose=${hex(loose)}`);
    assert.deepEqual(parsedLoose, request, `${where} loose=${hex(loose)}: wrong meaning`);
    count("grammar", parsedLoose);
  }

  // The generators must reach both outcomes, or the fuzzing proves little.
  const cases = Object.values(tally).reduce((sum, [ok, bad]) => sum + ok + bad, 0);
  assert.ok(cases >= 5000, `${seed}: only ${cases} cases`);
  assert.equal(tally.grammar[1], 0, `${seed}: grammar-valid lines were rejected`);
  assert.ok(tally.random[1] > 1900, `${seed}: random lines: ${tally.random}`);
  assert.ok(
    tally.mutated[0] > 100 && tally.mutated[1] > 1000,
    `${seed}: mutated: ${tally.mutated}`,
  );
});

// ---------------------------------------------------------------------------
// A served tree whose every answer is known.

const TREE: Record<string, string | Uint8Array> = {
  "a.txt": "alpha\n",
  "empty.txt": "",
  "dir/b.bin": seededBytes(5000, 7),
  "big.bin": seededBytes(100_000, 11), // larger than a write buffer of 64 KiB
  "dir/sub/c.txt": "charlie\n",
  "ünï/cödé 1.txt": "unicode name\n",
  "sp ace/100%.txt": "percent\n",
};
const FILES = new Map(
  Object.entries(TREE).map(([path, body]) => [
    path,
    typeof body === "string" ? encoder.encode(body) : body,
  ]),
);
/** Directory → its entries as FILES lists them (name → type and size). */
const DIRS = new Map<string, Map<string, { type: string; size: number }>>([["", new Map()]]);
for (const [path, body] of FILES) {
  const parts = path.split("/");
  for (let i = 0; i < parts.length; i++) {
    const dir = parts.slice(0, i).join("/");
    if (!DIRS.has(dir)) DIRS.set(dir, new Map());
    const isFile = i === parts.length - 1;
    DIRS.get(dir)!.set(parts[i], { type: isFile ? "file" : "dir", size: isFile ? body.length : 0 });
  }
}
const FILE_PATHS = [...FILES.keys()];
const DIR_PATHS = [...DIRS.keys()].filter((dir) => dir !== "");

/** Arguments biased to the served tree, so that successes and 416s are common. */
const TREE_ARGS: ArgSource = {
  name(rng) {
    if (rng.chance(0.25)) return randomSegment(rng);
    const names = [...DIRS.values()].flatMap((entries) => [...entries.keys()]);
    return rng.pick(names);
  },
  path(rng, command) {
    if (rng.chance(0.25)) return randomPath(rng);
    if (command === "FILES" || rng.chance(0.1)) return rng.pick(DIR_PATHS);
    return rng.pick(FILE_PATHS);
  },
  number(rng, path, which, offset) {
    const size = FILES.get(path)?.length ?? 100;
    const room = Math.max(0, size - offset);
    const text = rng.pick([
      "0",
      String(rng.int(size + 1)),
      String(which === "offset" ? size : room),
      String((which === "offset" ? size : room) + 1),
      String(rng.int(room + 1)),
      randomDigits(rng),
    ]);
    return rng.chance(0.1) ? "0".repeat(rng.range(1, 15 - Math.min(text.length, 14))) + text : text;
  },
};

type Json = Record<string, unknown>;

/** What the server must answer to a line. */
type Expected =
  | { kind: "error"; code: 400 | 404 | 416 }
  | { kind: "empty"; closes: boolean }
  | { kind: "purged" }
  | { kind: "bytes"; path: string; offset: number; body: Uint8Array }
  | { kind: "json"; check: (value: Json, where: string) => void };

/** The exact answer to a line, from the contract model and the served tree. */
function expectedAnswer(line: Uint8Array): Expected {
  const request = contractModel(line);
  if (request === null) return { kind: "error", code: 400 };
  switch (request.command) {
    case "PING":
    case "QUIT":
    case "AUTH": // a server without tokens has nothing to check
      return { kind: "empty", closes: request.command === "QUIT" };
    case "PURGE":
      return { kind: "purged" };
    case "GET": {
      const file = FILES.get(request.path);
      if (!file) return { kind: "error", code: 404 };
      const offset = request.offset ?? 0;
      const length = request.length ?? file.length - offset;
      if (offset > file.length || offset + length > file.length) {
        return { kind: "error", code: 416 };
      }
      return {
        kind: "bytes",
        path: request.path,
        offset,
        body: file.subarray(offset, offset + length),
      };
    }
    case "STAT": {
      const file = FILES.get(request.path);
      if (!file) return { kind: "error", code: 404 };
      return {
        kind: "json",
        check(value, where) {
          assert.equal(value.path, request.path, where);
          assert.equal(value.size, file.length, where);
          assert.equal(typeof value.mtime, "number", where);
          assert.equal(typeof value.cached, "boolean", where);
          const digest = value.sha256;
          assert.ok(digest === null || digest === sha256(file), `${where}: sha256 ${digest}`);
        },
      };
    }
    case "FILES": {
      const dir = DIRS.get(request.path);
      if (!dir) return { kind: "error", code: 404 };
      // The names after `after` in byte order, at most `limit` of them, and `next` when
      // more follow. (The tree's names are all below U+D800, where `<` is byte order.)
      const after = [...dir].map(([name, info]) => ({ name, ...info }))
        .sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
        .filter((entry) => request.after === undefined || entry.name > request.after);
      const page = after.slice(0, request.limit ?? 10_000);
      return {
        kind: "json",
        check(value, where) {
          assert.equal(value.path, request.path, where);
          const entries = value.entries as { name: string; type: string; size: number }[];
          assert.deepEqual(
            entries.map(({ name, type, size }) => ({ name, type, size })),
            page,
            where,
          );
          const next = page.length < after.length ? page.at(-1)!.name : undefined;
          assert.equal(value.next, next, where);
          assert.equal("next" in value, next !== undefined, `${where}: next only when more follow`);
        },
      };
    }
    case "LIST":
      return {
        kind: "json",
        check(value, where) {
          assert.equal(value.capacity, 64 * 1024 * 1024, where);
          assert.equal(value.policy, "fifo", where);
          assert.ok(Array.isArray(value.entries), where);
        },
      };
    case "STATS":
      return {
        kind: "json",
        check(value, where) {
          assert.equal(typeof value.requests, "number", where);
          assert.equal(typeof (value.connections as Json).open, "number", where);
        },
      };
  }
}

const OK_LINE = /^OK (0|[1-9][0-9]{0,14})(?: [A-Za-z0-9_-]+=[\x21-\x7e]*)*$/;
// deno-lint-ignore no-control-regex
const ERR_LINE = /^ERR ([0-9]{3}) [^\x00-\x1f\x7f\u2028\u2029]+$/;
const ALLOWED_CODES = [400, 403, 404, 416];

/** Checks a response against its expected answer, exactly. */
function checkAnswer(response: RawResponse, expected: Expected, where: string): void {
  const at = `${where} response=${JSON.stringify(response.line)}`;
  if (!response.ok) {
    assert.match(response.line, ERR_LINE, `${at}: malformed ERR line`);
    assert.ok(ALLOWED_CODES.includes(response.code), `${at}: code ${response.code} not allowed`);
    assert.equal(expected.kind, "error", `${at}: expected ${expected.kind}`);
    if (expected.kind === "error") assert.equal(response.code, expected.code, at);
    return;
  }
  assert.match(response.line, OK_LINE, `${at}: malformed OK line`);
  assert.equal(Number(response.line.split(" ")[1]), response.body.length, at);
  switch (expected.kind) {
    case "error":
      assert.fail(`${at}: expected ERR ${expected.code}`);
      break;
    case "empty":
      assert.equal(response.line, "OK 0", at);
      break;
    case "purged":
      assert.match(response.line, /^OK 0 purged=[0-9]+$/, at);
      break;
    case "bytes": {
      const file = FILES.get(expected.path)!;
      assert.equal(response.fields.size, String(file.length), at);
      assert.equal(response.fields.offset, String(expected.offset), at);
      assert.ok(["hit", "miss", "bypass"].includes(response.fields.cache), at);
      if ("sha256" in response.fields) assert.equal(response.fields.sha256, sha256(file), at);
      assert.equal(response.body.length, expected.body.length, `${at}: body length`);
      const differs = response.body.findIndex((byte, i) => byte !== expected.body[i]);
      assert.equal(differs, -1, `${at}: body differs from byte ${differs} on`);
      break;
    }
    case "json":
      assert.equal(response.fields.type, "json", at);
      expected.check(json(response), at);
      break;
  }
}

/** `promise`, or a failure that says where once `ms` have passed without it. */
async function within<T>(promise: Promise<T>, ms: number, where: string): Promise<T> {
  promise.catch(() => {}); // still pending when the deadline wins
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } catch (error) {
    assert.fail(`${where}: ${(error as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads one response; a dropped connection or a silent server fails, saying where. */
function nextResponse(conn: RawConnection, where: string): Promise<RawResponse> {
  return within(conn.response(), 5000, `${where}: no response`);
}

/** Checks that the server closes the connection (within a bound). */
async function assertClosed(conn: RawConnection, where: string): Promise<void> {
  assert.ok(await within(conn.closedByServer(), 5000, where), `${where}: data after the end`);
}

interface Stats {
  requests: number;
  connections: { open: number; total: number };
  errors: Record<string, number>;
}

async function stats(conn: RawConnection): Promise<Stats> {
  return json<Stats>(await conn.request("STATS")) as unknown as Stats;
}

// ---------------------------------------------------------------------------
// 2. Pipelined random lines over one connection.

/** A line for the socket fuzz: any of the generators, never QUIT, never an LF. */
function socketLine(rng: Rng): Uint8Array {
  const noQuit = COMMANDS.filter((command) => command !== "QUIT");
  while (true) {
    const kind = rng.int(100);
    let line: Uint8Array;
    if (kind < 25) {
      line = bytesWithoutLf(rng, rng.int(301));
    } else if (kind < 55) {
      const base = looseLine(rng, generateRequest(rng, rng.chance(0.7) ? TREE_ARGS : RANDOM_ARGS));
      line = mutate(rng, base).map((byte) => byte === 0x0a ? 0x20 : byte);
    } else if (kind < 80) {
      line = looseLine(rng, generateRequest(rng, TREE_ARGS, noQuit));
    } else if (kind < 97) {
      line = looseLine(rng, generateRequest(rng, TREE_ARGS, ["GET"]));
    } else {
      line = longLine(rng);
    }
    if (contractModel(line)?.command !== "QUIT") return line;
  }
}

/** A line of 7000 to 8191 bytes (with its LF, at most the 8192 the contract allows). */
function longLine(rng: Rng): Uint8Array {
  const length = rng.chance(0.3) ? MAX_REQUEST_LINE - 1 : rng.range(7000, MAX_REQUEST_LINE - 1);
  const fill = (head: string, unit: string) => {
    let text = head;
    while (text.length < length) text += unit;
    return encoder.encode(text.slice(0, length));
  };
  switch (rng.int(4)) {
    case 0:
      return fill("GET ", "abcdefgh/");
    case 1:
      return fill("STAT ", "%41");
    case 2:
      return fill("GET a.txt 0 ", "0");
    default:
      return bytesWithoutLf(rng, length);
  }
}

Deno.test("fuzz: thousands of pipelined random lines each get exactly their one answer", async () => {
  const rng = new Rng(SOCKET_SEED);
  const seed = `seed=0x${SOCKET_SEED.toString(16)}`;
  const BATCHES = 30;
  const PER_BATCH = 100;
  await withServer(TREE, {}, async ({ port }) => {
    const conn = await RawConnection.open(port);
    try {
      const before = await stats(conn);
      const errors: Record<string, number> = { ...before.errors };
      let requests = before.requests;
      let ok = 0;
      for (let batch = 0; batch < BATCHES; batch++) {
        const lines = Array.from({ length: PER_BATCH }, () => socketLine(rng));
        const expected = lines.map(expectedAnswer);
        const writing = conn.send(joinLines(lines));
        writing.catch(() => {});
        for (let i = 0; i < lines.length; i++) {
          const where = `${seed} batch ${batch} line ${i} bytes=${hex(lines[i])}`;
          const response = await nextResponse(conn, where);
          checkAnswer(response, expected[i], where);
          if (response.ok) ok++;
          else errors[response.code] = (errors[response.code] ?? 0) + 1;
        }
        await writing;
        requests += lines.length;
        const pong = await conn.request("PING");
        assert.equal(pong.line, "OK 0", `${seed}: PING after batch ${batch}`);
        assert.equal(conn.reader.buffered, 0, `${seed}: stray bytes after batch ${batch}`);
        requests++;
      }
      const after = await stats(conn);
      assert.equal(after.requests, requests + 1, `${seed}: STATS.requests counts every line`);
      assert.deepEqual(after.errors, errors, `${seed}: STATS.errors counts every error`);
      assert.ok(ok > 500 && ok < BATCHES * PER_BATCH - 500, `${seed}: ${ok} OK answers`);
    } finally {
      conn.close();
    }
  });
});

// ---------------------------------------------------------------------------
// 3. Binary garbage on several connections while a well-behaved client works.

type GarbageKind = "uniform" | "dense" | "overlong" | "abrupt";

/**
 * A ~200 KiB stream: uniform random bytes (an LF every 256 bytes or so), a
 * dense mix of valid requests and short junk lines, random bytes with one
 * 10,000-byte run without LF (a 413), or random bytes sent by a client that
 * closes without reading.
 */
function garbageStream(rng: Rng, kind: GarbageKind): Uint8Array {
  const size = 200 * 1024;
  if (kind === "dense") {
    const noQuit = COMMANDS.filter((command) => command !== "QUIT");
    const parts: Uint8Array[] = [];
    let length = 0;
    while (length < size) {
      const line = rng.chance(0.3)
        ? looseLine(rng, generateRequest(rng, TREE_ARGS, noQuit))
        : bytesWithoutLf(rng, rng.int(101));
      const end = rng.chance(0.25) ? Uint8Array.of(0x0d, 0x0a) : Uint8Array.of(0x0a);
      parts.push(line, end);
      length += line.length + end.length;
    }
    return concat(...parts);
  }
  const stream = new Uint8Array(size);
  for (let i = 0; i < size; i++) stream[i] = rng.int(256);
  if (kind === "overlong") {
    for (let i = 60 * 1024; i < 60 * 1024 + 10_000; i++) {
      if (stream[i] === 0x0a) stream[i] = 0x0b;
    }
  }
  return stream;
}

/** The answers a stream must get: one per complete line, then maybe a 413. */
function expectedForStream(stream: Uint8Array): {
  lines: { line: Uint8Array; expected: Expected }[];
  ends413: boolean;
} {
  const lines: { line: Uint8Array; expected: Expected }[] = [];
  let start = 0;
  while (true) {
    const lf = stream.indexOf(0x0a, start);
    const end = lf < 0 ? stream.length : lf;
    // The line with its LF would exceed the bound: 413 once 8192 bytes are in.
    if (end - start >= MAX_REQUEST_LINE) return { lines, ends413: true };
    // A last line without LF: the client closed in the middle of it, no answer.
    if (lf < 0) return { lines, ends413: false };
    const line = stream.subarray(start, lf);
    const expected = expectedAnswer(line);
    lines.push({ line, expected });
    if (expected.kind === "empty" && expected.closes) return { lines, ends413: false };
    start = lf + 1;
  }
}

// deno-lint-ignore no-control-regex
const ERR_413 = /^ERR 413 [^\x00-\x1f\x7f\u2028\u2029]+$/;

/** Sends a stream on a fresh connection and checks every answer, and the close. */
async function runGarbage(port: number, stream: Uint8Array, kind: GarbageKind, where: string) {
  const conn = await RawConnection.open(port);
  try {
    if (kind === "abrupt") {
      await conn.send(stream);
      return; // closed by the finally, answers unread
    }
    const { lines, ends413 } = expectedForStream(stream);
    let writeError: unknown;
    const writing = conn.send(stream)
      .then(() => conn.conn.closeWrite())
      .catch((error) => writeError = error);
    for (let i = 0; i < lines.length; i++) {
      const at = `${where} line ${i} bytes=${hex(lines[i].line)}`;
      checkAnswer(await nextResponse(conn, at), lines[i].expected, at);
    }
    if (ends413) {
      const response = await nextResponse(conn, `${where} after ${lines.length} lines`);
      assert.match(response.line, ERR_413, `${where}: expected 413 after ${lines.length} lines`);
    }
    await assertClosed(conn, `${where}: the server must close after ${lines.length} answers`);
    await writing;
    // Only a server that closed early (413) may make the write fail.
    if (!ends413) assert.equal(writeError, undefined, `${where}: write failed: ${writeError}`);
  } finally {
    conn.close();
  }
}

Deno.test("fuzz: binary garbage on several connections; a fresh client is served throughout", async () => {
  const rng = new Rng(GARBAGE_SEED);
  const seed = `seed=0x${GARBAGE_SEED.toString(16)}`;
  const kinds: GarbageKind[] = ["uniform", "dense", "overlong", "abrupt", "uniform", "dense"];
  const streams = kinds.map((kind) => garbageStream(rng, kind));
  await withServer(TREE, {}, async ({ port }) => {
    const probe = await RawConnection.open(port);
    try {
      const probeGet = async (n: number, when: string) => {
        const path = FILE_PATHS[n % FILE_PATHS.length];
        const line = encoder.encode(`GET ${percentEncode(path)}`);
        const where = `${seed} probe ${when} #${n} GET ${path}`;
        await probe.send(joinLines([line]));
        checkAnswer(await nextResponse(probe, where), expectedAnswer(line), where);
      };
      const before = await stats(probe);
      let running = true;
      let probes = 0;
      const probing = (async () => {
        while (running) await probeGet(probes++, "during the garbage");
      })();
      probing.catch(() => {}); // awaited below, once the garbage is sent
      const results = await Promise.allSettled(
        streams.map((stream, k) =>
          runGarbage(port, stream, kinds[k], `${seed} connection ${k} (${kinds[k]})`)
        ),
      );
      running = false;
      await probing;
      for (const result of results) if (result.status === "rejected") throw result.reason;
      assert.ok(probes > 0, `${seed}: the probe never ran`);
      for (let n = 0; n < FILE_PATHS.length; n++) await probeGet(n, "after the garbage");

      let after = await stats(probe);
      for (let i = 0; i < 250 && after.connections.open !== before.connections.open; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        after = await stats(probe);
      }
      assert.equal(
        after.connections.open,
        before.connections.open,
        `${seed}: garbage connections still open after 5 s`,
      );
      assert.equal(after.connections.total, before.connections.total + streams.length, seed);
      const overlong = kinds.filter((kind) => kind === "overlong").length;
      assert.equal(
        (after.errors["413"] ?? 0) - (before.errors["413"] ?? 0),
        overlong,
        `${seed}: 413s`,
      );
    } finally {
      probe.close();
    }
  });
});

// ---------------------------------------------------------------------------
// 4. A request line that never ends.

Deno.test("fuzz: a request line that never ends gets ERR 413, then the server closes", async () => {
  const rng = new Rng(ENDLESS_SEED);
  const seed = `seed=0x${ENDLESS_SEED.toString(16)}`;
  await withServer(TREE, {}, async ({ port }) => {
    const endless = await RawConnection.open(port);
    try {
      const bytes = bytesWithoutLf(rng, 100 * 1024);
      // The server may close before it has read everything: the write may fail.
      const writing = endless.send(bytes).catch(() => {});
      const response = await nextResponse(endless, `${seed} 100 KiB without LF`);
      assert.match(response.line, ERR_413, `${seed} 100 KiB without LF`);
      await assertClosed(endless, `${seed}: not closed after 413`);
      await writing;
    } finally {
      endless.close();
    }

    // At the bound: 8191 bytes without LF are a line in progress (no answer
    // yet); the 8192nd byte makes it too long, and the 413 comes at once.
    const edge = await RawConnection.open(port);
    try {
      const head = bytesWithoutLf(rng, MAX_REQUEST_LINE - 1);
      await edge.send(head);
      const answer = edge.response();
      answer.catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      const early = await Promise.race([
        answer.then((r) => r.line, () => "closed"),
        new Promise<string>((resolve) => timer = setTimeout(() => resolve("waiting"), 200)),
      ]);
      clearTimeout(timer);
      assert.equal(early, "waiting", `${seed}: answered 8191 bytes without LF: ${hex(head, 64)}`);
      await edge.send(Uint8Array.of(0x41));
      const response = await within(answer, 2000, `${seed}: no answer to the 8192nd byte`);
      assert.match(response.line, ERR_413, `${seed}: 8192 bytes without LF`);
      await assertClosed(edge, `${seed}: not closed after 413 at the bound`);
    } finally {
      edge.close();
    }

    // Pipelined requests, then a line that never ends, all in one write and
    // read only afterwards: every answer arrives, then the 413, then the close
    // (closing with unread input must not reset the answers away).
    const pipelined = await RawConnection.open(port);
    try {
      const lines = Array.from(
        { length: 400 },
        (_, i) =>
          encoder.encode(
            i % 2 === 0 ? "PING" : `GET ${percentEncode(FILE_PATHS[(i >> 1) % FILE_PATHS.length])}`,
          ),
      );
      const tail = bytesWithoutLf(rng, 100 * 1024);
      await pipelined.send(joinLines(lines)).catch(() => {});
      const writing = pipelined.send(tail).catch(() => {});
      // A client that is slow to read: the server has answered everything by now.
      await new Promise((resolve) => setTimeout(resolve, 100));
      for (let i = 0; i < lines.length; i++) {
        const where = `${seed} pipelined line ${i} (${new TextDecoder().decode(lines[i])})`;
        checkAnswer(await nextResponse(pipelined, where), expectedAnswer(lines[i]), where);
      }
      const response = await nextResponse(pipelined, `${seed} after ${lines.length} lines`);
      assert.match(response.line, ERR_413, `${seed}: pipelined, then 100 KiB without LF`);
      await assertClosed(pipelined, `${seed}: not closed after pipelined 413`);
      await writing;
    } finally {
      pipelined.close();
    }

    const fresh = await RawConnection.open(port);
    try {
      const line = encoder.encode("GET dir/b.bin");
      await fresh.send(joinLines([line]));
      checkAnswer(await nextResponse(fresh, "after"), expectedAnswer(line), `${seed} after`);
    } finally {
      fresh.close();
    }
  });
});
