/**
 * TLS connections accepted by the server's listeners have Nagle's algorithm
 * off (`TCP_NODELAY`, inherited from the listener: engine/socket_control.ts), read
 * back with getsockopt on the accepted socket; a TLS listener opened without
 * it is the control.
 *
 * @module
 */

import assert from "node:assert/strict";
import { listen } from "../../server/listeners.ts";
import { makeCertificates, opensslAvailable } from "../access/certs.ts";

const getsockopt = Deno.dlopen("libc.so.6", {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
});

/** TCP_NODELAY of this process's established sockets from local `port` to remote `peer`. */
function noDelayOf(port: number, peer: number): number[] {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === "01" && f[1].endsWith(`:${hex(port)}`) && f[2].endsWith(`:${hex(peer)}`)) {
      inodes.add(f[9]);
    }
  }
  const values: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    let link = "";
    try {
      link = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[([0-9]+)\]$/.exec(link)?.[1];
    if (!inode || !inodes.has(inode)) continue;
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    const fd = Number(entry.name);
    assert.equal(
      getsockopt.symbols.getsockopt(
        fd,
        6,
        1,
        new Uint8Array(value.buffer),
        new Uint8Array(length.buffer),
      ),
      0,
    );
    values.push(value[0] === 0 ? 0 : 1);
  }
  return values;
}

Deno.test({
  name: "TLS: accepted connections have TCP_NODELAY; a bare Deno.listenTls's do not",
  ignore: !opensslAvailable(),
  fn: async () => {
    const certs = await makeCertificates();
    try {
      const tls = { cert: certs.leaf.cert, key: certs.leaf.key };
      for (
        const [listener, expected] of [
          [listen("127.0.0.1", 0, "alone", tls), 1],
          [Deno.listenTls({ hostname: "127.0.0.1", port: 0, ...tls }), 0],
        ] as const
      ) {
        const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
        const accepted = await listener.accept();
        const local = (accepted.localAddr as Deno.NetAddr).port;
        const peer = (client.localAddr as Deno.NetAddr).port;
        assert.deepEqual(noDelayOf(local, peer), [expected]);
        accepted.close();
        client.close();
        listener.close();
      }
    } finally {
      await certs.remove();
      getsockopt.close();
    }
  },
});
