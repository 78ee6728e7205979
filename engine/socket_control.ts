/**
 * What Deno's TLS connections cannot do themselves, done on their sockets
 * through libc (FFI), found by their inodes in /proc:
 *
 * - **Nagle's algorithm off.** TLS connections have no `setNoDelay`; with
 *   Nagle on, the last small segment of an answer waits for the client's
 *   delayed ACK (40 ms) whenever earlier bytes are unacknowledged, and
 *   rustls writes a large answer as 16 KiB records, each shorter than the
 *   loopback's MSS: 1 MiB answers stalled every few answers
 *   (docs/network.md, "Speed"). Linux copies `TCP_NODELAY` from a listening
 *   socket to the connections it accepts, so it is set once per listener.
 * - **Closing before the handshake.** Closing a TLS connection whose
 *   handshake has not finished does not close its socket: Deno waits for
 *   the handshake, which a silent client never finishes. A client refused by
 *   the allow list, or that timed out in its handshake, would keep its socket
 *   (and a descriptor) for as long as it likes. `shutdown(2)` on the socket
 *   ends the handshake at once, and the close with it.
 *
 * A descriptor is found through /proc: the inode of the socket (from
 * /proc/net/tcp and tcp6), then this process's descriptor that links to it
 * (the descriptor table is the process's, every thread's).
 *
 * @module
 */

import { parseAddress } from "../access/allow_list.ts";

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SHUT_RDWR = 2;
const TCP_LISTEN = "0A";

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
} as const;

let libc: Deno.DynamicLibrary<typeof SYMBOLS> | null | undefined;

/** libc, or null where FFI is not allowed or libc cannot be opened. */
function openLibc(): Deno.DynamicLibrary<typeof SYMBOLS> | null {
  if (libc !== undefined) return libc;
  libc = null;
  // Asked, dlopen would prompt on a terminal: a server must not wait on that.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return libc;
  try {
    libc = Deno.dlopen("libc.so.6", SYMBOLS);
  } catch {
    // not Linux with glibc: neither can be done
  }
  return libc;
}

/** Whether this process can control its TLS sockets (FFI, libc). */
export function canControlSockets(): boolean {
  return openLibc() !== null;
}

/**
 * Sets `TCP_NODELAY` on this process's listening sockets on `port`, so that
 * the connections they accept have it: false when it could not be done.
 */
export function noDelayForAccepted(port: number): boolean {
  const lib = openLibc();
  if (!lib) return false;
  const one = new Uint8Array(new Int32Array([1]).buffer);
  const fds = descriptorsOf(
    socketInodes((local, _remote, state) => state === TCP_LISTEN && portOf(local) === port),
  );
  let set = 0;
  for (const fd of fds) {
    if (lib.symbols.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4) === 0) set++;
  }
  return set > 0;
}

/**
 * Shuts down the socket of `conn` (both directions), so that a TLS
 * connection whose handshake never finished is closed at once when it is
 * closed: false when it could not be done.
 */
export function shutDown(conn: Deno.Conn): boolean {
  const lib = openLibc();
  if (!lib) return false;
  const local = conn.localAddr as Deno.NetAddr;
  const remote = conn.remoteAddr as Deno.NetAddr;
  const remoteHex = procAddresses(remote.hostname);
  const fds = descriptorsOf(
    socketInodes((l, r) =>
      portOf(l) === local.port && portOf(r) === remote.port &&
      remoteHex.includes(r.slice(0, r.lastIndexOf(":")))
    ),
  );
  let done = 0;
  for (const fd of fds) if (lib.symbols.shutdown(fd, SHUT_RDWR) === 0) done++;
  return done > 0;
}

/** The port of a /proc/net/tcp address (`HEX:PORT`). */
function portOf(address: string): number {
  return parseInt(address.slice(address.lastIndexOf(":") + 1), 16);
}

/**
 * How /proc/net/tcp (or tcp6) writes an address: its 32-bit words in the
 * host's byte order, in hex; an IPv4 address as itself and as IPv4-mapped
 * IPv6 (a dual-stack listener's connections are in tcp6).
 */
function procAddresses(hostname: string): string[] {
  const bytes = parseAddress(hostname);
  if (!bytes) return [];
  const words = (b: Uint8Array) => {
    let hex = "";
    for (let i = 0; i < b.length; i += 4) {
      for (let j = 3; j >= 0; j--) hex += b[i + j].toString(16).padStart(2, "0");
    }
    return hex.toUpperCase();
  };
  if (bytes.length === 16) return [words(bytes)];
  const mapped = new Uint8Array(16);
  mapped.set([0xff, 0xff], 10);
  mapped.set(bytes, 12);
  return [words(bytes), words(mapped)];
}

/** The inodes of the TCP sockets (IPv4 and IPv6) whose addresses and state pass `test`. */
function socketInodes(
  test: (local: string, remote: string, state: string) => boolean,
): Set<string> {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length >= 10 && test(fields[1], fields[2], fields[3])) inodes.add(fields[9]);
    }
  }
  return inodes;
}

/** This process's descriptors of the sockets `inodes` names. */
function descriptorsOf(inodes: Set<string>): number[] {
  if (inodes.size === 0) return [];
  const fds: number[] = [];
  try {
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      let link: string;
      try {
        link = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      } catch {
        continue; // closed meanwhile
      }
      const inode = /^socket:\[([0-9]+)\]$/.exec(link)?.[1];
      if (inode !== undefined && inodes.has(inode)) fds.push(Number(entry.name));
    }
  } catch {
    // no /proc
  }
  return fds;
}
