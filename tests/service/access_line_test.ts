import assert from "node:assert/strict";
import { formatAccessLog } from "../../service/access_line.ts";
import type { RequestRecord } from "../../server.ts";

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
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 GET my%20docs/a.txt OK 120 1.235 hit - -",
  );
  assert.equal(
    formatAccessLog({ ...record, tls: true, user: "alice" }, "text"),
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 GET my%20docs/a.txt OK 120 1.235 hit tls alice",
  );
  assert.equal(
    formatAccessLog(
      { ...record, command: "-", path: undefined, status: 400, cache: undefined },
      "text",
    ),
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 - - 400 120 1.235 - - -",
  );
  assert.equal(
    formatAccessLog({ ...record, command: "FILES", path: "" }, "text"),
    "2026-11-25T12:00:00.005Z 127.0.0.1:5000 FILES / OK 120 1.235 hit - -",
    "the served directory itself: one field, never an empty one",
  );
  assert.deepEqual(JSON.parse(formatAccessLog(record, "json")), {
    ...record,
    time: "2026-11-25T12:00:00.005Z",
    ms: 1.235,
  });
});

Deno.test("formatAccessLog: the same time and path formatted again give the same text", () => {
  const base: RequestRecord = {
    time: Date.UTC(2026, 10, 25, 12, 0, 0, 5),
    protocol: "http",
    client: "c",
    command: "GET",
    path: "a b",
    status: 200,
    bytes: 1,
    ms: 0,
  };
  const first = formatAccessLog(base, "text");
  assert.equal(formatAccessLog({ ...base }, "text"), first);
  assert.equal(
    formatAccessLog({ ...base, time: base.time + 1, path: "c" }, "text"),
    "2026-11-25T12:00:00.006Z c GET c 200 1 0.000 - - -",
  );
  assert.equal(formatAccessLog(base, "text"), first);
});
