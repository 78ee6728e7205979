/**
 * An experiment, not part of the server: can Deno send a file to a socket
 * without copying it through JavaScript? Deno 2.9 has no `sendfile` and no
 * way to get a connection's descriptor; through FFI, `sendfile(2)` works once
 * the socket's descriptor is found (its inode in `/proc/net/tcp`, matched in
 * `/proc/self/fd`). This server answers every HTTP request on a connection
 * with `--file`, either copied (`--mode copy`: 256 KiB reads and writes, as
 * the server does) or with `sendfile` (`--mode sendfile`: when the socket is
 * full, `poll(2)` on a blocking-pool thread waits for room). Loopback IPv4
 * only. docs/performance.md has what it measured.
 *
 *     deno run -A bench/reference/sendfile_ffi.ts --mode sendfile --file F --port P
 *
 * @module
 */

import { parseArgs } from "node:util";

const libc = Deno.dlopen("libc.so.6", {
  sendfile: { parameters: ["i32", "i32", "buffer", "usize"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});
const EAGAIN = 11;
const POLLOUT = 4;
const encoder = new TextEncoder();

function errno(): number {
  return new Deno.UnsafePointerView(libc.symbols.__errno_location()!).getInt32();
}

/** The descriptor of an accepted loopback socket: its inode in /proc/net/tcp, found in /proc/self/fd. */
function socketDescriptor(conn: Deno.TcpConn): number {
  const hex = (port: number) => port.toString(16).toUpperCase().padStart(4, "0");
  const pair = `0100007F:${hex(conn.localAddr.port)} 0100007F:${hex(conn.remoteAddr.port)}`;
  const line = Deno.readTextFileSync("/proc/net/tcp").split("\n").find((l) => l.includes(pair));
  if (!line) throw new Error("socket not in /proc/net/tcp");
  const link = `socket:[${line.trim().split(/\s+/)[9]}]`;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === link) return Number(entry.name);
    } catch {
      // closed meanwhile
    }
  }
  throw new Error("socket descriptor not found");
}

async function copyFile(conn: Deno.TcpConn, path: string): Promise<void> {
  using file = await Deno.open(path);
  const chunk = new Uint8Array(256 * 1024);
  for (let n; (n = await file.read(chunk)) !== null;) {
    for (let written = 0; written < n;) written += await conn.write(chunk.subarray(written, n));
  }
}

async function sendFile(conn: Deno.TcpConn, path: string, size: number): Promise<void> {
  const socket = socketDescriptor(conn);
  const file = libc.symbols.open(encoder.encode(`${path}\0`), 0);
  if (file < 0) throw new Error(`open failed: errno ${errno()}`);
  const offset = new BigInt64Array(1); // sendfile advances it
  const waitForRoom = new Uint8Array(8); // struct pollfd
  new DataView(waitForRoom.buffer).setInt32(0, socket, true);
  new DataView(waitForRoom.buffer).setInt16(4, POLLOUT, true);
  try {
    while (offset[0] < BigInt(size)) {
      const left = BigInt(size) - offset[0];
      const sent = libc.symbols.sendfile(socket, file, new Uint8Array(offset.buffer), left);
      if (Number(sent) >= 0) continue;
      if (errno() !== EAGAIN) throw new Error(`sendfile failed: errno ${errno()}`);
      await libc.symbols.poll(waitForRoom, 1n, 1000);
    }
  } finally {
    libc.symbols.close(file);
  }
}

async function serve(conn: Deno.TcpConn, mode: string, path: string, size: number) {
  const head = encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
  const request = new Uint8Array(4096);
  while ((await conn.read(request)) !== null) {
    await conn.write(head);
    if (mode === "sendfile") await sendFile(conn, path, size);
    else await copyFile(conn, path);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      mode: { type: "string", default: "copy" },
      file: { type: "string" },
      port: { type: "string", default: "0" },
    },
  });
  if (!values.file || !["copy", "sendfile"].includes(values.mode)) {
    throw new Error("usage: sendfile_ffi.ts --mode copy|sendfile --file F [--port P]");
  }
  const path = await Deno.realPath(values.file);
  const { size } = await Deno.stat(path);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(values.port) });
  console.log(`sendfile_ffi (${values.mode}) listening on 127.0.0.1:${listener.addr.port}`);
  for await (const conn of listener) {
    serve(conn, values.mode, path, size).catch((error) => console.error(String(error)))
      .finally(() => conn.close());
  }
}
