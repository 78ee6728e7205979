/**
 * Unit tests of the human output of `list`, `files`, `stat` and `stats`
 * (`cli/client/format.ts`): exact text for fixed inputs.
 *
 * @module
 */

import assert from "node:assert/strict";
import { formatFields, formatFiles, formatListing } from "../../../cli/client/format.ts";
import type { ClusterListing } from "../../../client/cluster.ts";

const KiB = 1024;
/** 2026-01-02 03:04:05 UTC, and a second later. */
const T = Date.UTC(2026, 0, 2, 3, 4, 5);
const T1 = T + 1000;

Deno.test("formatListing: entries in eviction order, then the summary", async (t) => {
  await t.step("one server", () => {
    const listing = {
      capacity: 1024 * KiB,
      used: 200 * KiB + 6,
      policy: "fifo",
      entries: [
        { path: "zeta.bin", size: 200 * KiB, admitted: T },
        { path: "docs/alpha.txt", size: 6, admitted: T1 },
      ],
    };
    assert.equal(
      formatListing(listing),
      [
        "#     SIZE  ADMITTED (UTC)       PATH",
        "1  200 KiB  2026-01-02 03:04:05  zeta.bin",
        "2      6 B  2026-01-02 03:04:06  docs/alpha.txt",
        "2 entries, 200 KiB of 1.0 MiB used (19.5%), policy fifo; #1 is evicted next",
      ].join("\n"),
    );
  });

  await t.step("an empty cache: the summary alone", () => {
    const listing = { capacity: 1024 * KiB, used: 0, policy: "lru", entries: [] };
    assert.equal(
      formatListing(listing),
      "0 entries, 0 B of 1.0 MiB used (0.0%), policy lru; #1 is evicted next",
    );
  });

  await t.step("no capacity: 0%", () => {
    const listing = { capacity: 0, used: 0, policy: "fifo", entries: [] };
    assert.equal(
      formatListing(listing),
      "0 entries, 0 B of 0 B used (0%), policy fifo; #1 is evicted next",
    );
  });

  await t.step("control characters in a path are escaped", () => {
    const listing = {
      capacity: 100,
      used: 1,
      policy: "fifo",
      entries: [{ path: "a\nb", size: 1, admitted: T }],
    };
    assert.equal(
      formatListing(listing),
      [
        "#  SIZE  ADMITTED (UTC)       PATH",
        "1   1 B  2026-01-02 03:04:05  a%0Ab",
        "1 entry, 1 B of 100 B used (1.0%), policy fifo; #1 is evicted next",
      ].join("\n"),
    );
  });

  await t.step("a cluster: each entry's node, and the nodes that are down", () => {
    const listing: ClusterListing = {
      capacity: 2048,
      used: 6,
      policy: "fifo",
      entries: [{ path: "a.txt", size: 6, admitted: T, node: "127.0.0.1:9001" }],
      nodes: [
        { node: "127.0.0.1:9001", up: true, capacity: 1024, used: 6, entries: 1 },
        { node: "127.0.0.1:9002", up: true, capacity: 1024, used: 0, entries: 0 },
        { node: "127.0.0.1:9003", up: false, error: "cannot connect" },
      ],
    };
    assert.equal(
      formatListing(listing),
      [
        "#  SIZE  ADMITTED (UTC)       NODE            PATH",
        "1   6 B  2026-01-02 03:04:05  127.0.0.1:9001  a.txt",
        "1 entry, 6 B of 2.0 KiB used (0.3%), policy fifo; each node's entries in its " +
        "eviction order; 2 of 3 nodes up (down: 127.0.0.1:9003)",
      ].join("\n"),
    );
  });

  await t.step("a cluster with every node up", () => {
    const listing: ClusterListing = {
      capacity: 1024,
      used: 0,
      policy: "fifo",
      entries: [],
      nodes: [{ node: "127.0.0.1:9001", up: true, capacity: 1024, used: 0, entries: 0 }],
    };
    assert.equal(
      formatListing(listing),
      "0 entries, 0 B of 1.0 KiB used (0.0%), policy fifo; each node's entries in its " +
        "eviction order; 1 of 1 nodes up",
    );
  });
});

Deno.test("formatFiles: the directory, then its entries", async (t) => {
  await t.step("files and a directory", () => {
    const listing = {
      path: "docs",
      entries: [
        { name: "sub", type: "dir" as const, size: 0, mtime: T },
        { name: "big.bin", type: "file" as const, size: 300 * KiB, mtime: T1 },
        { name: "tab\there", type: "file" as const, size: 6, mtime: T },
      ],
    };
    assert.equal(
      formatFiles(listing),
      [
        "/docs",
        "TYPE     SIZE  MODIFIED (UTC)       NAME",
        "dir         -  2026-01-02 03:04:05  sub/",
        "file  300 KiB  2026-01-02 03:04:06  big.bin",
        "file      6 B  2026-01-02 03:04:05  tab%09here",
      ].join("\n"),
    );
  });

  await t.step("an empty served directory", () => {
    assert.equal(formatFiles({ path: "", entries: [] }), "/: empty");
  });
});

Deno.test("formatFields: aligned key: value lines, readable forms beside the values", () => {
  const record = {
    path: "a\tb",
    size: 2048,
    mtime: T,
    cached: true,
    sha256: null,
    requests: 5000,
    bytesSent: 1000,
    nested: { used: 100, memory: 4096, empty: {} },
    uptimeMs: 125_000,
  };
  assert.equal(
    formatFields(record),
    [
      "path:      a%09b",
      "size:      2048 (2.0 KiB)",
      "mtime:     1767323045000 (2026-01-02 03:04:05 UTC)",
      "cached:    true",
      "sha256:    null",
      "requests:  5000",
      "bytesSent: 1000",
      "nested:",
      "  used:    100",
      "  memory:  4096 (4.0 KiB)",
      "  empty:   {}",
      "uptimeMs:  125000 (2 min 05 s)",
    ].join("\n"),
  );
});
