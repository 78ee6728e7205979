/**
 * Nagle's algorithm off for TLS connections. Deno's TLS connections have no
 * `setNoDelay`, and with Nagle on, the last small segment of an answer
 * waits for the client's delayed ACK (40 ms) whenever earlier bytes are
 * unacknowledged: rustls writes a large answer as 16 KiB records, each a
 * segment shorter than the loopback's MSS, so a 1 MiB answer over TLS
 * stalled on every few answers (docs/network.md, "Speed").
 *
 * Linux copies `TCP_NODELAY` from a listening socket to the connections it
 * accepts, so the option is set once per listener, with libc's
 * `setsockopt` (FFI). The listener's descriptor is found through /proc: the
 * inode of the port's listening socket (/proc/net/tcp, tcp6), then this
 * process's descriptors that link to it (every thread's, with `--workers`:
 * the descriptor table is the process's).
 *
 * @module
 */

const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const TCP_LISTEN = "0A";

const SYMBOLS = {
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
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
    // not Linux with glibc: Nagle stays on
  }
  return libc;
}

/** Whether this process can turn Nagle's algorithm off for TLS connections (FFI, libc). */
export function canTurnNagleOff(): boolean {
  return openLibc() !== null;
}

/**
 * Sets `TCP_NODELAY` on this process's listening sockets on `port`, so that
 * the connections they accept have it: false when it could not be done
 * (no FFI, no /proc), and Nagle's algorithm stays on.
 */
export function noDelayForAccepted(port: number): boolean {
  const lib = openLibc();
  if (!lib) return false;
  const inodes = listeningInodes(port);
  const one = new Uint8Array(new Int32Array([1]).buffer);
  let set = 0;
  try {
    for (const entry of Deno.readDirSync("/proc/self/fd")) {
      const inode = socketInode(`/proc/self/fd/${entry.name}`);
      if (inode === undefined || !inodes.has(inode)) continue;
      if (lib.symbols.setsockopt(Number(entry.name), IPPROTO_TCP, TCP_NODELAY, one, 4) === 0) set++;
    }
  } catch {
    return false;
  }
  return set > 0;
}

/** The inodes of the listening TCP sockets (IPv4 and IPv6) on `port`. */
function listeningInodes(port: number): Set<string> {
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
      if (fields.length < 10 || fields[3] !== TCP_LISTEN) continue;
      if (parseInt(fields[1].slice(fields[1].lastIndexOf(":") + 1), 16) === port) {
        inodes.add(fields[9]);
      }
    }
  }
  return inodes;
}

/** The socket inode a descriptor links to (`socket:[INODE]`), or undefined. */
function socketInode(link: string): string | undefined {
  try {
    return /^socket:\[([0-9]+)\]$/.exec(Deno.readLinkSync(link))?.[1];
  } catch {
    return undefined; // closed meanwhile
  }
}
