/**
 * Tokens over real sockets: the TCP protocol's `AUTH`, HTTP's Bearer
 * tokens, the admin scope, the per-address guessing limit, what the access
 * log shows, and a token file re-read on SIGHUP.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { RequestRecord } from "../../server.ts";
import { connect, ServerError } from "../../client.ts";
import { formatAccessLog } from "../../service/access_line.ts";
import { json, RawConnection, spawnServer, withServer } from "../helpers.ts";

const READ = "read-token-0123456789abcdef";
const ADMIN = "admin-token-0123456789abcdef";
const TOKENS = `${READ} alice\n${ADMIN} ops admin\n`;
const tree = { "hello.txt": "hello\n", "docs/a.txt": "alpha\n" };
const COMMANDS = ["GET hello.txt", "LIST", "FILES", "STAT hello.txt", "PURGE hello.txt", "STATS"]
  .concat(["PING", "QUIT"]);

Deno.test("AUTH: every command before it gets ERR 401; a wrong token too; the right one serves", async () => {
  const records: RequestRecord[] = [];
  await withServer(
    tree,
    { authTokens: TOKENS, onRequest: (r) => records.push(r) },
    async ({ port }) => {
      const conn = await RawConnection.open(port);
      try {
        for (const line of COMMANDS) {
          const answer = await conn.request(line);
          assert.equal(answer.line, "ERR 401 authentication required", line);
        }
        assert.equal(
          (await conn.request("AUTH not-the-token-at-all")).line,
          "ERR 401 invalid token",
        );
        assert.equal((await conn.request("PING")).line, "ERR 401 invalid token");
        assert.equal((await conn.request(`AUTH ${READ}`)).line, "OK 0");
        const hit = await conn.request("GET hello.txt");
        assert.equal(new TextDecoder().decode(hit.body), "hello\n");
        for (const line of ["STATS", "LIST", "PURGE hello.txt"]) {
          assert.equal((await conn.request(line)).line, "ERR 403 this needs an admin token", line);
        }
        assert.equal(json(await conn.request("FILES")).path, "");
        assert.equal((await conn.request(`AUTH ${ADMIN}`)).line, "OK 0");
        assert.equal(json(await conn.request("STATS")).requests, COMMANDS.length + 10);
        assert.ok((await conn.request("QUIT")).ok);
      } finally {
        conn.close();
      }
    },
  );
  // The log names the token (never shows it), once it was accepted.
  const users = records.map((r) => [r.command, r.user ?? "-"]);
  assert.deepEqual(users.slice(COMMANDS.length), [
    ["AUTH", "-"],
    ["PING", "-"],
    ["AUTH", "alice"],
    ["GET", "alice"],
    ["STATS", "alice"], // refused (403): the log says who tried
    ["LIST", "alice"],
    ["PURGE", "alice"],
    ["FILES", "alice"],
    ["AUTH", "ops"],
    ["STATS", "ops"],
    ["QUIT", "ops"],
  ]);
  for (const record of records) {
    for (const format of ["text", "json"] as const) {
      const line = formatAccessLog(record, format);
      assert.ok(!line.includes(READ) && !line.includes(ADMIN), line);
      assert.ok(!line.includes("not-the-token"), line);
    }
  }
});

Deno.test("AUTH on a server without tokens is OK 0: a client with a token still works", async () => {
  await withServer(tree, {}, async ({ port }) => {
    const client = await connect({ port, token: READ });
    try {
      assert.equal(new TextDecoder().decode((await client.get("hello.txt")).bytes), "hello\n");
    } finally {
      client.close();
    }
  });
});

Deno.test("HTTP: 401 with WWW-Authenticate: Bearer; 403 for a read token on /-/*; admin reads it", async () => {
  await withServer(tree, { authTokens: TOKENS, httpPort: 0 }, async ({ server }) => {
    const base = `http://127.0.0.1:${server.httpAddr!.port}`;
    const ask = async (path: string, authorization?: string, method = "GET") => {
      const headers: Record<string, string> = authorization ? { authorization } : {};
      const response = await fetch(`${base}${path}`, { headers, method });
      return { status: response.status, headers: response.headers, body: await response.text() };
    };
    const none = await ask("/hello.txt");
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="tcpcache"');
    const wrong = await ask("/hello.txt", "Bearer wrong-token-0123456789");
    assert.equal(wrong.status, 401);
    assert.equal(
      wrong.headers.get("www-authenticate"),
      'Bearer realm="tcpcache", error="invalid_token"',
    );
    assert.equal((await ask("/hello.txt", `Basic ${btoa(`x:${READ}`)}`)).status, 401);
    const ok = await ask("/hello.txt", `Bearer ${READ}`);
    assert.deepEqual([ok.status, ok.body], [200, "hello\n"]);
    assert.equal((await ask("/docs/", `bearer ${READ}`)).status, 200, "the scheme is case-blind");
    for (const path of ["/-/stats", "/-/metrics", "/-/cache", "/-/recent", "/-/"]) {
      const refused = await ask(path, `Bearer ${READ}`);
      assert.equal(refused.status, 403, path);
      assert.equal(
        refused.headers.get("www-authenticate"),
        'Bearer realm="tcpcache", error="insufficient_scope"',
      );
      assert.equal((await ask(path, `Bearer ${ADMIN}`)).status, 200, path);
    }
    assert.equal((await ask("/hello.txt", `Bearer ${READ}`, "PURGE")).status, 403);
    assert.equal((await ask("/hello.txt", `Bearer ${ADMIN}`, "PURGE")).status, 200);
    const stats = JSON.parse((await ask("/-/stats", `Bearer ${ADMIN}`)).body);
    assert.equal(stats.access.authFailures, 1, "the Basic field names no Bearer token: no guess");
    assert.equal(stats.errors["401"], 3);
  });
});

Deno.test("the guessing limit: 10 wrong tokens from an address, then 429 unchecked, on both protocols", async () => {
  await withServer(tree, { authTokens: TOKENS, httpPort: 0 }, async ({ port, server }) => {
    const conn = await RawConnection.open(port);
    try {
      for (let i = 0; i < 10; i++) {
        assert.equal((await conn.request(`AUTH wrong-guess-0123456789-${i}`)).code, 401);
      }
      const limited = await conn.request(`AUTH ${READ}`);
      assert.equal(limited.code, 429, "even the right token is not checked now");
      assert.match(limited.message, /too many failed authentication attempts; retry in [0-9]+ s/);
      const http = await fetch(`http://127.0.0.1:${server.httpAddr!.port}/hello.txt`, {
        headers: { authorization: "Bearer another-guess-0123456789" },
      });
      await http.body?.cancel();
      assert.equal(http.status, 429);
      assert.match(http.headers.get("retry-after") ?? "", /^[0-9]+$/);
      const stats = await server.stats();
      assert.equal(stats.access.authFailures, 10);
      assert.equal(stats.access.authLimited, 2);
    } finally {
      conn.close();
    }
  });
});

Deno.test("a client with a wrong token gets a ServerError 401 at connect", async () => {
  await withServer(tree, { authTokens: TOKENS }, async ({ port }) => {
    await assert.rejects(
      connect({ port, token: "wrong-token-0123456789" }),
      (error: unknown) => error instanceof ServerError && error.code === 401,
    );
  });
});

Deno.test("SIGHUP re-reads the token file: a removed token stops working on open connections", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tcpcache-tokens-" });
  const tokens = `${dir}/tokens`;
  await Deno.writeTextFile(tokens, TOKENS);
  await Deno.mkdir(`${dir}/files`);
  await Deno.writeTextFile(`${dir}/files/hello.txt`, "hello\n");
  const server = await spawnServer(
    ["--workers", "2", "--dir", `${dir}/files`, "--quiet", "--cache-dir", `${dir}/cache`]
      .concat(["--auth-tokens", tokens]),
  );
  try {
    const alice = await RawConnection.open(server.port);
    try {
      assert.equal((await alice.request(`AUTH ${READ}`)).line, "OK 0");
      const bob = "bob-token-0123456789abcdef";
      await Deno.writeTextFile(tokens, `${bob} bob\n${ADMIN} ops admin\n`);
      server.child.kill("SIGHUP");
      assert.match(await server.nextErrorLine(), /SIGHUP: reloaded the tokens/);
      assert.equal((await alice.request("GET hello.txt")).line, "ERR 401 invalid token");
      const client = await connect({ port: server.port, token: bob });
      assert.equal(new TextDecoder().decode((await client.get("hello.txt")).bytes), "hello\n");
      // A file that does not parse changes nothing, and says so.
      await Deno.writeTextFile(tokens, "short\n");
      server.child.kill("SIGHUP");
      assert.match(await server.nextErrorLine(), /SIGHUP: kept the tokens in force: .*line 1/);
      assert.equal((await client.stat("hello.txt")).size, 6, "bob's token still works");
      client.close();
    } finally {
      alice.close();
    }
  } finally {
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
