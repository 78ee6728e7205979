import assert from "node:assert/strict";
import { formatAccessLog } from "../../cli/server_cli.ts";
import type { RequestRecord } from "../../server.ts";
import { RawConnection, withServer } from "../helpers.ts";

Deno.test("the access log: one record per request, with status, bytes and cache outcome", async () => {
  const records: RequestRecord[] = [];
  await withServer(
    { "a.txt": "alpha" },
    { onRequest: (record) => records.push(record) },
    async ({ port }) => {
      const conn = await RawConnection.open(port);
      try {
        for (const line of ["GET a.txt", "GET a.txt", "GET nope", "FROB", "PING"]) {
          await conn.request(line);
        }
      } finally {
        conn.close();
      }
    },
  );
  const fields = records.map((r) => [r.command, r.path, r.status, r.cache]);
  assert.deepEqual(fields, [
    ["GET", "a.txt", "OK", "miss"],
    ["GET", "a.txt", "OK", "hit"],
    ["GET", "nope", 404, undefined],
    ["-", undefined, 400, undefined],
    ["PING", undefined, "OK", undefined],
  ]);
  // Header and body: "OK 5 size=5 ..." then the five bytes.
  assert.ok(
    records[0].bytes > 5 && records[0].bytes === records[1].bytes - "hit".length + "miss".length,
  );
  assert.equal(records[4].bytes, "OK 0\n".length);
  for (const record of records) {
    assert.match(record.client, /^127\.0\.0\.1:[0-9]+$/);
    assert.ok(record.ms >= 0 && record.ms < 5000);
    assert.ok(Math.abs(record.time - Date.now()) < 60_000);
  }
});

Deno.test("formatAccessLog: a text line with - for what does not apply, or JSON", () => {
  const record: RequestRecord = {
    time: Date.UTC(2026, 10, 25, 12, 0, 0, 5),
    protocol: "tcp",
    client: "127.0.0.1:5000",
    command: "GET",
    path: "my docs/a.txt",
    status: "OK",
    bytes: 120,
    ms: 1.23456,
    cache: "hit",
  };
  assert.equal(
    formatAccessLog(record, "text"),
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 GET my%20docs/a.txt OK 120 1.235 hit",
  );
  assert.equal(
    formatAccessLog(
      { ...record, command: "-", path: undefined, status: 400, cache: undefined },
      "text",
    ),
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 - - 400 120 1.235 -",
  );
  assert.deepEqual(JSON.parse(formatAccessLog(record, "json")), {
    ...record,
    time: "2026-11-25T12:00:00.005Z",
    ms: 1.235,
  });
});

Deno.test("--debug reports a failure with its stack; without it, one line", async () => {
  for (const debug of [false, true]) {
    const root = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${root}/a.txt`, "a");
      const { DirectoryOrigin } = await import("../../origin/directory.ts");
      const real = await DirectoryOrigin.open(root);
      const origin = {
        ...real,
        stat: (p: string) => real.stat(p),
        list: (p: string) => real.list(p),
        open: () => Promise.reject(new Error("EIO: injected")),
      };
      const errors: string[] = [];
      await withServer(
        {},
        { origin, debug, onError: (line) => errors.push(line) },
        async ({ port }) => {
          const conn = await RawConnection.open(port);
          try {
            assert.equal((await conn.request("GET a.txt")).code, 500);
          } finally {
            conn.close();
          }
        },
      );
      assert.equal(errors.length, 1);
      assert.equal(errors[0].includes("\n    at "), debug, errors[0]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  }
});

Deno.test("timeouts longer than a timer can hold are refused as usage errors", async () => {
  const { serverMain } = await import("../../cli/server_cli.ts");
  const error = console.error;
  console.error = () => {};
  try {
    for (const flag of ["--idle-timeout", "--send-timeout", "--shutdown-timeout"]) {
      assert.equal(await serverMain([flag, "2500000"]), 2, flag);
      assert.equal(await serverMain([flag, "0"]), 2, flag);
    }
  } finally {
    console.error = error;
  }
});
