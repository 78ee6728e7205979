/**
 * What the bare reference servers (bare_http.ts, bare_tcp.ts) share: the
 * files read into memory at start, and `--workers N`: N threads that each
 * accept on the same port (`SO_REUSEPORT`, which Deno 2.9 lists as unstable:
 * run with `--unstable-net`), the kernel spreading the connections over them.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** Every file under `dir`, by its URL path (`/a/b.bin`). */
export async function loadFiles(dir: string, prefix = ""): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(`${dir}${prefix}`)) {
    const path = `${prefix}/${entry.name}`;
    if (entry.isDirectory) {
      for (const [p, bytes] of await loadFiles(dir, path)) files.set(p, bytes);
    } else if (entry.isFile) {
      files.set(path, await Deno.readFile(`${dir}${path}`));
    }
  }
  return files;
}

/**
 * Listens on 127.0.0.1:`port` and serves each connection (`TCP_NODELAY`,
 * closed when `serve` ends) until the process exits.
 */
export function listen(
  port: number,
  reusePort: boolean,
  serve: (conn: Deno.TcpConn) => Promise<void>,
): Deno.Listener {
  const listener = Deno.listen({ hostname: "127.0.0.1", port, reusePort });
  (async () => {
    while (true) {
      // A client that resets before it is accepted must not end the loop.
      const conn = await listener.accept().catch(() => undefined);
      if (!conn) continue;
      conn.setNoDelay(true);
      serve(conn).catch(() => {}).finally(() => conn.close());
    }
  })();
  return listener;
}

/** Starts one thread's server: its answers built, its listener accepting. */
export type StartServer = (
  dir: string,
  port: number,
  reusePort: boolean,
) => Promise<Deno.Listener>;

interface WorkerStart {
  dir: string;
  port: number;
}

/**
 * The entry point of a bare server's module. On the main thread: reads
 * `--dir`, `--port` and `--workers`, starts its own server, then the other
 * workers (this same module) on the port it got, and prints `NAME listening
 * on 127.0.0.1:PORT` once all accept. In a worker: starts on the port the
 * main thread names, and says so.
 */
export async function serveOnWorkers(
  name: string,
  moduleUrl: string,
  start: StartServer,
): Promise<void> {
  if ("WorkerGlobalScope" in globalThis) {
    const scope = globalThis as unknown as {
      onmessage: ((event: MessageEvent<WorkerStart>) => void) | null;
      postMessage(message: string): void;
    };
    scope.onmessage = async ({ data }) => {
      await start(data.dir, data.port, true);
      scope.postMessage("ready");
    };
    return;
  }
  const { values } = parseArgs({
    options: {
      dir: { type: "string" },
      port: { type: "string", default: "0" },
      workers: { type: "string", default: "1" },
    },
  });
  const workers = Number(values.workers);
  const dir = values.dir;
  if (!dir || !Number.isInteger(workers) || workers < 1) {
    throw new Error(`usage: ${name}.ts --dir DIR [--port PORT] [--workers N]`);
  }
  const listener = await start(dir, Number(values.port), workers > 1);
  const { port } = listener.addr as Deno.NetAddr;
  await Promise.all(
    Array.from({ length: workers - 1 }, () =>
      new Promise<void>((resolve, reject) => {
        const worker = new Worker(moduleUrl, { type: "module" });
        worker.onmessage = () => resolve();
        worker.onerror = (event) => reject(new Error(event.message));
        worker.postMessage({ dir, port } satisfies WorkerStart);
      })),
  );
  console.log(`${name} listening on 127.0.0.1:${port}`);
}
