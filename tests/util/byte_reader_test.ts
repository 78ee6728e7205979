import assert from "node:assert/strict";
import {
  ByteReader,
  LineTooLongError,
  type Reader,
  UnexpectedEofError,
  writeAll,
} from "../../util/byte_reader.ts";
import { seededBytes, seededRandom } from "../helpers.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Hands out `data` in chunks of the given sizes (cycled), then null. */
class FakeReader implements Reader {
  /** Bytes handed out so far. */
  handedOut = 0;
  /** Calls to read, the ones answered with null included. */
  reads = 0;
  #data: Uint8Array;
  #chunks: number[];

  constructor(data: string | Uint8Array, chunks: number[] = [Infinity]) {
    this.#data = typeof data === "string" ? encoder.encode(data) : data;
    this.#chunks = chunks;
  }

  read(buffer: Uint8Array): Promise<number | null> {
    const chunk = this.#chunks[this.reads++ % this.#chunks.length];
    if (this.handedOut === this.#data.length) return Promise.resolve(null);
    const count = Math.min(chunk, buffer.length, this.#data.length - this.handedOut);
    buffer.set(this.#data.subarray(this.handedOut, this.handedOut + count));
    this.handedOut += count;
    return Promise.resolve(count);
  }
}

/** An endless stream of "a" without any LF, in chunks of `chunk` bytes. */
class EndlessReader implements Reader {
  handedOut = 0;

  constructor(readonly chunk: number) {}

  read(buffer: Uint8Array): Promise<number | null> {
    if (this.handedOut > 1024 * 1024) throw new Error("read far past any line bound");
    const count = Math.min(this.chunk, buffer.length);
    buffer.fill(0x61, 0, count);
    this.handedOut += count;
    return Promise.resolve(count);
  }
}

async function readText(reader: ByteReader, maxBytes = 1024): Promise<string | null> {
  const line = await reader.readLine(maxBytes);
  return line === null ? null : decoder.decode(line);
}

async function readBodyText(reader: ByteReader, length: number): Promise<string[]> {
  const chunks: string[] = [];
  await reader.readBody(length, (chunk) => {
    chunks.push(decoder.decode(chunk));
  });
  return chunks;
}

Deno.test("readLine: lines split over 1-byte reads are put back together", async () => {
  const reader = new ByteReader(new FakeReader("hello\nworld\n", [1]));
  assert.equal(await readText(reader), "hello");
  assert.equal(await readText(reader), "world");
  assert.equal(await readText(reader), null);
});

Deno.test("readLine: several lines from one read come out one by one", async () => {
  const source = new FakeReader("PING\nGET a\nSTATS\n");
  const reader = new ByteReader(source);
  assert.equal(await readText(reader), "PING");
  assert.equal(reader.buffered, 12);
  assert.equal(await readText(reader), "GET a");
  assert.equal(await readText(reader), "STATS");
  assert.equal(source.reads, 1);
  assert.equal(reader.buffered, 0);
  assert.equal(await readText(reader), null);
});

Deno.test("readLine: the LF is dropped, a CR and empty lines are kept", async () => {
  const reader = new ByteReader(new FakeReader("a\r\n\nb\n"));
  assert.deepEqual(await reader.readLine(10), new Uint8Array([0x61, 0x0d]));
  assert.deepEqual(await reader.readLine(10), new Uint8Array([]));
  assert.deepEqual(await reader.readLine(10), new Uint8Array([0x62]));
});

Deno.test("readLine: a line of exactly maxBytes, LF included, is accepted", async () => {
  for (const chunk of [1, 3, 8, Infinity]) {
    const reader = new ByteReader(new FakeReader("1234567\nnext\n", [chunk]));
    assert.equal(await readText(reader, 8), "1234567", `chunk ${chunk}`);
    assert.equal(await readText(reader, 8), "next", `chunk ${chunk}`);
  }
});

Deno.test("readLine: a line one byte over maxBytes throws LineTooLongError", async () => {
  for (const chunk of [1, 3, 8, 9, Infinity]) {
    const reader = new ByteReader(new FakeReader("12345678\n", [chunk]));
    await assert.rejects(reader.readLine(8), {
      name: "LineTooLongError",
      message: "line longer than 8 bytes",
    }, `chunk ${chunk}`);
  }
});

Deno.test("readLine: no LF within maxBytes stops reading at the bound", async () => {
  const byteByByte = new EndlessReader(1);
  await assert.rejects(new ByteReader(byteByByte).readLine(100), LineTooLongError);
  assert.equal(byteByByte.handedOut, 100);

  // Larger reads stop at the first read that reaches the bound: 15 * 7 = 105.
  const sevens = new EndlessReader(7);
  await assert.rejects(new ByteReader(sevens).readLine(100), LineTooLongError);
  assert.equal(sevens.handedOut, 105);

  const big = new EndlessReader(4096);
  await assert.rejects(new ByteReader(big).readLine(8192), LineTooLongError);
  assert.equal(big.handedOut, 8192);
});

Deno.test("readLine: maxBytes above the buffer size is a RangeError", async () => {
  const reader = new ByteReader(new FakeReader("0123456789abcde\n"), 16);
  await assert.rejects(reader.readLine(17), RangeError);
  assert.equal(await readText(reader, 16), "0123456789abcde");
});

Deno.test("readLine: a line reaching the buffer's end is moved to the front", async () => {
  for (const chunk of [1, 5, 8]) {
    const reader = new ByteReader(new FakeReader("ab\n1234567\ncd\n", [chunk]), 8);
    assert.equal(await readText(reader, 8), "ab", `chunk ${chunk}`);
    assert.equal(await readText(reader, 8), "1234567", `chunk ${chunk}`);
    assert.equal(await readText(reader, 8), "cd", `chunk ${chunk}`);
    assert.equal(await readText(reader, 8), null, `chunk ${chunk}`);
  }
});

Deno.test("readLine: null on a clean end of stream, again and again", async () => {
  assert.equal(await readText(new ByteReader(new FakeReader(""))), null);
  const reader = new ByteReader(new FakeReader("PING\n", [2]));
  assert.equal(await readText(reader), "PING");
  assert.equal(await readText(reader), null);
  assert.equal(await readText(reader), null);
});

Deno.test("readLine: the stream ending inside a line is an UnexpectedEofError", async () => {
  const reader = new ByteReader(new FakeReader("PING\nGET a", [3]));
  assert.equal(await readText(reader), "PING");
  await assert.rejects(reader.readLine(100), {
    name: "UnexpectedEofError",
    message: "connection closed in the middle of a line",
  });
  await assert.rejects(new ByteReader(new FakeReader("x")).readLine(100), UnexpectedEofError);
});

Deno.test("readBody: takes buffered bytes first, then fresh reads", async () => {
  const source = new FakeReader("OK 5\nhello" + "PING\n", [8, 2, 100]);
  const reader = new ByteReader(source);
  assert.equal(await readText(reader), "OK 5");
  assert.equal(reader.buffered, 3);
  assert.deepEqual(await readBodyText(reader, 5), ["hel", "lo"]);
  assert.equal(await readText(reader), "PING");
  assert.equal(await readText(reader), null);
});

Deno.test("readBody: a body many times the buffer's size", async () => {
  const body = seededBytes(1000, 3);
  const reader = new ByteReader(new FakeReader(body, [7]), 16);
  const received: number[] = [];
  await reader.readBody(body.length, (chunk) => {
    assert.ok(chunk.length <= 16);
    received.push(...chunk);
  });
  assert.deepEqual(new Uint8Array(received), body);
});

Deno.test("readBody: a length of 0 reads nothing", async () => {
  const source = new FakeReader("x");
  const reader = new ByteReader(source);
  let calls = 0;
  await reader.readBody(0, () => {
    calls++;
  });
  assert.equal(calls, 0);
  assert.equal(source.reads, 0);
});

Deno.test("readBody: the stream ending inside a body is an UnexpectedEofError", async () => {
  const reader = new ByteReader(new FakeReader("OK 5\nhel"));
  assert.equal(await readText(reader), "OK 5");
  const chunks: string[] = [];
  await assert.rejects(
    reader.readBody(5, (chunk) => {
      chunks.push(decoder.decode(chunk));
    }),
    { name: "UnexpectedEofError", message: "connection closed in the middle of a body" },
  );
  assert.deepEqual(chunks, ["hel"]);
});

Deno.test("readBody: waits for an async sink before reusing its buffer", async () => {
  const body = seededBytes(64, 5);
  const reader = new ByteReader(new FakeReader(body, [1]), 4);
  const received: number[] = [];
  await reader.readBody(body.length, async (chunk) => {
    for (let i = 0; i < 10; i++) await Promise.resolve();
    received.push(...chunk); // still the bytes handed to the sink
  });
  assert.deepEqual(new Uint8Array(received), body);
});

Deno.test("lines and bodies survive seeded random chunking", async () => {
  const random = seededRandom(11);
  const messages: Array<{ line: string; body: Uint8Array }> = [];
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 200; i++) {
    const body = seededBytes(Math.floor(random() * 100), i + 1);
    const line = `OK ${body.length} n=${i}`;
    messages.push({ line, body });
    parts.push(encoder.encode(line + "\n"), body);
  }
  const stream = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    stream.set(part, offset);
    offset += part.length;
  }
  const chunks = Array.from({ length: 97 }, () => 1 + Math.floor(random() * 40));
  const reader = new ByteReader(new FakeReader(stream, chunks), 64);
  for (const { line, body } of messages) {
    assert.equal(await readText(reader, 64), line);
    const received: number[] = [];
    await reader.readBody(body.length, (chunk) => {
      received.push(...chunk);
    });
    assert.deepEqual(new Uint8Array(received), body, line);
  }
  assert.equal(await readText(reader, 64), null);
});

Deno.test("writeAll: keeps writing until a partial writer took every byte", async () => {
  const bytes = encoder.encode("0123456789");
  const calls: string[] = [];
  const writer = {
    write(chunk: Uint8Array): Promise<number> {
      const taken = Math.min(3, chunk.length);
      calls.push(decoder.decode(chunk.subarray(0, taken)));
      return Promise.resolve(taken);
    },
  };
  await writeAll(writer, bytes);
  assert.deepEqual(calls, ["012", "345", "678", "9"]);
  await writeAll(writer, new Uint8Array());
  assert.equal(calls.length, 4);
});

/** The end of a block: just past its first empty line (`\n\n` or `\n\r\n`), as HTTP heads end. */
function blockEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    if (bytes[i] !== 0x0a) continue;
    if (bytes[i + 1] === 0x0a && i + 1 < to) return i + 2;
    if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a && i + 2 < to) return i + 3;
  }
  return -1;
}

Deno.test("readBlock: skips empty lines before a block, never a lone CR, in any chunking", async () => {
  const cases: [string, (string | null)[]][] = [
    ["A\r\n\r\nB\n\n", ["A\r\n\r\n", "B\n\n", null]],
    ["\r\n\n\r\nA\r\n\r\n", ["A\r\n\r\n", null]],
    ["\r\rA\r\n\r\n", ["\r\rA\r\n\r\n", null]],
    ["\r\n", [null]],
  ];
  for (const [input, expected] of cases) {
    for (const chunk of [1, 2, 3, 1000]) {
      const reader = new ByteReader(new FakeReader(input, [chunk]), 64);
      const blocks: (string | null)[] = [];
      while (true) {
        const block = await reader.readBlock(64, blockEnd);
        blocks.push(block === null ? null : decoder.decode(block));
        if (block === null) break;
      }
      assert.deepEqual(blocks, expected, `${JSON.stringify(input)} in chunks of ${chunk}`);
    }
  }
  const endless = new ByteReader(new EndlessReader(7), 64);
  await assert.rejects(endless.readBlock(64, blockEnd), LineTooLongError);
});
