import assert from "node:assert/strict";
import { MAX_TOKEN_LENGTH, TokenTable } from "../../access/tokens.ts";
import { GuessLimiter } from "../../access/guess_limit.ts";
import { AccessGate } from "../../access/gate.ts";

const READ = "read-token-0123456789abcdef";
const ADMIN = "admin-token-0123456789abcdef";
const FILE = `# who may read\n\n${READ} alice\n  ${ADMIN}   ops admin  \n`;

Deno.test("TokenTable: names and scopes from the file; only an exact token matches", () => {
  const table = TokenTable.parse(FILE);
  assert.equal(table.size, 2);
  assert.equal(table.adminCount, 1);
  assert.deepEqual(table.check(READ), { name: "alice", scope: "read" });
  assert.deepEqual(table.check(ADMIN), { name: "ops", scope: "admin" });
  for (
    const guess of [
      "",
      READ.slice(0, -1),
      `${READ}x`,
      READ.toUpperCase(),
      `${READ}\0`,
      READ + "a".repeat(MAX_TOKEN_LENGTH),
      "é".repeat(200),
    ]
  ) {
    assert.equal(table.check(guess), undefined, JSON.stringify(guess));
  }
  // A token without a name is named after its line.
  assert.deepEqual(TokenTable.parse(`\n${READ}\n`).check(READ), {
    name: "token-2",
    scope: "read",
  });
});

Deno.test("TokenTable: a bad file is refused with its line, never quoting the token", () => {
  const secret = "s3cr3t-but-short";
  for (
    const [text, message] of [
      ["# nothing\n", /no tokens/],
      ["short alice\n", /16 to 256 characters/],
      [`${READ} alice admin extra\n`, /expected TOKEN \[NAME\] \[SCOPE\]/],
      [`${READ}% alice\n`, /letters, digits/],
      [`${READ} al/ice\n`, /a name is/],
      [`${READ} alice root\n`, /read or admin, not "root"/],
      [`${READ} a\n${READ} b\n`, /line 2: this token is given twice/],
      [`${READ} a\n${ADMIN} a\n`, /line 2: the name a is given twice/],
      [`${"x".repeat(MAX_TOKEN_LENGTH + 1)}\n`, /16 to 256/],
      [`${secret}é alice\n`, /line 1/],
    ] as const
  ) {
    assert.throws(
      () => TokenTable.parse(text),
      (error: Error) => message.test(error.message) && !error.message.includes(secret),
      text,
    );
  }
});

Deno.test("GuessLimiter: 10 failures, then one per refill interval; IPv6 by /64", () => {
  let now = 0;
  const limiter = new GuessLimiter({ burst: 10, refillMs: 6000, maxAddresses: 3, now: () => now });
  for (let i = 0; i < 10; i++) {
    assert.equal(limiter.waitMs("192.0.2.1"), 0, `attempt ${i}`);
    limiter.failed("192.0.2.1");
  }
  assert.equal(limiter.waitMs("192.0.2.1"), 6000);
  assert.equal(limiter.waitMs("192.0.2.2"), 0, "another address is not limited");
  now += 3000;
  assert.equal(limiter.waitMs("192.0.2.1"), 3000);
  now += 3000;
  assert.equal(limiter.waitMs("192.0.2.1"), 0, "one failure forgiven");
  limiter.failed("192.0.2.1");
  assert.equal(limiter.waitMs("192.0.2.1"), 6000);
  // One host of a /64 spends the budget of the whole /64.
  for (let i = 0; i < 10; i++) limiter.failed(`2001:db8:1:2::${i + 1}`);
  assert.ok(limiter.waitMs("2001:db8:1:2:ffff::9") > 0);
  assert.equal(limiter.waitMs("2001:db8:1:3::1"), 0);
  // IPv4-mapped is the IPv4 address.
  assert.ok(limiter.waitMs("::ffff:192.0.2.1") > 0);
});

Deno.test("AccessGate: verdicts by scope; replaced tokens are checked again on the next request", () => {
  const failures: string[] = [];
  const gate = new AccessGate({
    tokens: TokenTable.parse(FILE),
    onFailure: (kind) => failures.push(kind),
  });
  assert.deepEqual(gate.judge(undefined, "read"), {
    allowed: false,
    status: 401,
    message: "authentication required",
  });
  const alice = gate.present("192.0.2.1", READ);
  assert.ok(alice && !("status" in alice));
  assert.deepEqual(gate.judge(alice, "read"), {
    allowed: true,
    grant: { name: "alice", scope: "read" },
  });
  const refused = gate.judge(alice, "admin");
  assert.ok(!refused.allowed && refused.status === 403 && refused.error === "insufficient_scope");
  const wrong = gate.present("192.0.2.1", "nope-nope-nope-nope");
  assert.ok(wrong && !("status" in wrong) && wrong.grant === undefined);
  const verdict = gate.judge(wrong, "read");
  assert.ok(!verdict.allowed && verdict.status === 401 && verdict.error === "invalid_token");
  assert.deepEqual(failures, ["invalid"]);
  // alice's token is removed: her connection's next request is refused.
  gate.replaceTokens(TokenTable.parse(`${ADMIN} ops admin\n`));
  assert.equal(gate.judge(alice, "read").allowed, false);
  assert.deepEqual(failures, ["invalid"], "a re-check is not a guess");
  // Without tokens everything is allowed, AUTH included, and tokens cannot be turned on.
  const open = new AccessGate();
  assert.equal(open.present("192.0.2.1", READ), undefined);
  assert.deepEqual(open.judge(undefined, "admin"), { allowed: true });
  assert.throws(() => open.replaceTokens(TokenTable.parse(FILE)), /needs a restart/);
});

Deno.test("AccessGate: the failure budget is split between threads", () => {
  const gate = new AccessGate({ tokens: TokenTable.parse(FILE), threads: 2 });
  const outcomes = Array.from(
    { length: 7 },
    () => gate.present("192.0.2.9", "wrong-wrong-wrong-1"),
  );
  const limited = outcomes.filter((outcome) => outcome && "status" in outcome);
  assert.equal(limited.length, 2, "5 guesses per thread of 2, then 429");
});
