import assert from "node:assert/strict";
import { AllowList, parseAddress } from "../../access/allow_list.ts";

Deno.test("AllowList: IPv4 and IPv6 networks, single hosts, and IPv4-mapped IPv6 clients", () => {
  const list = AllowList.parse("10.1.0.0/16, 192.168.7.9,::1,fd00:ab::/32");
  assert.deepEqual(list.networks, ["10.1.0.0/16", "192.168.7.9/32", "::1/128", "fd00:ab::/32"]);
  for (const address of ["10.1.0.1", "10.1.255.255", "192.168.7.9", "::1", "fd00:ab:1::7"]) {
    assert.ok(list.admits(address), address);
  }
  for (const address of ["10.2.0.1", "192.168.7.10", "::2", "fd00:ac::1", "127.0.0.1", "bogus"]) {
    assert.ok(!list.admits(address), address);
  }
  // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d, and a
  // network may be written that way for an IPv4 listener's clients.
  assert.ok(list.admits("::ffff:10.1.2.3"));
  assert.ok(!list.admits("::ffff:10.2.2.3"));
  const mappedList = AllowList.parse("::ffff:127.0.0.1");
  assert.ok(mappedList.admits("127.0.0.1"));
  assert.ok(!mappedList.admits("127.0.0.2"));
});

Deno.test("AllowList: prefixes that do not end on a byte, and host bits below the prefix", () => {
  const list = AllowList.parse("172.16.0.0/12,10.9.8.7/8,2001:db8::/33");
  assert.deepEqual(list.networks, ["172.16.0.0/12", "10.0.0.0/8", "2001:db8::/33"]);
  assert.ok(list.admits("172.31.255.255"));
  assert.ok(!list.admits("172.32.0.0"));
  assert.ok(list.admits("10.200.1.1"));
  assert.ok(list.admits("2001:db8:7fff::1"));
  assert.ok(!list.admits("2001:db8:8000::1"));
  assert.ok(AllowList.parse("0.0.0.0/0").admits("203.0.113.5"));
  assert.ok(!AllowList.parse("0.0.0.0/0").admits("2001:db8::1"), "IPv4's /0 is not IPv6");
});

Deno.test("AllowList: a malformed entry is an error that names it", () => {
  for (
    const [text, message] of [
      ["", /at least one/],
      ["10.0.0.0/33", /prefix length outside 0-32/],
      ["::/129", /outside 0-128/],
      ["10.0.0", /"10.0.0" is not/],
      ["10.0.0.256", /not an IPv4 or IPv6/],
      ["1:2:3:4:5:6:7:8:9", /not an IPv4 or IPv6/],
      ["1::2::3", /not an IPv4 or IPv6/],
      ["10.0.0.0/8x", /prefix length/],
      ["10.0.0.0/08", /prefix length/],
      ["010.0.0.1", /not an IPv4 or IPv6/],
      ["example.com", /not an IPv4 or IPv6/],
    ] as const
  ) {
    assert.throws(() => AllowList.parse(text), message, text);
  }
});

Deno.test("parseAddress: IPv6 forms (compressed, embedded IPv4, zone, brackets)", () => {
  const hex = (text: string) => Array.from(parseAddress(text)!, (b) => b.toString(16)).join(",");
  assert.equal(hex("::"), "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0");
  assert.equal(hex("::ffff:1.2.3.4"), "0,0,0,0,0,0,0,0,0,0,ff,ff,1,2,3,4");
  assert.equal(hex("fe80::1%eth0"), hex("fe80::1"));
  assert.equal(hex("[2001:db8::1]"), hex("2001:db8:0:0:0:0:0:1"));
  assert.equal(parseAddress("1:2:3:4:5:6:7::8"), null, ":: must stand for at least one group");
});
