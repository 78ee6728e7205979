/**
 * The processes the benchmark starts and watches: the servers (tcpcache,
 * nginx, the Python reference, the bare HTTP loop), helper commands, and what /proc says about
 * their memory and sockets (their CPU: cpu.ts). Every process started here
 * is tracked, so an early exit can stop them all.
 *
 * @module
 */

/** The only address the benchmark uses. */
export const HOST = "127.0.0.1";
/** The repository's root (bench/..). */
export const REPO: string = decodeURIComponent(new URL("..", import.meta.url).pathname)
  .replace(/\/$/, "");
/** How long a server may take to be ready. */
export const STARTUP_MS = 20_000;
const STOP_MS = 12_000;
const SERVER_TS = `${REPO}/server.ts`;
const PYTHON_REFERENCE = `${REPO}/bench/reference/original_design.py`;
const BARE_HTTP = `${REPO}/bench/reference/bare_http.ts`;
const BARE_TCP = `${REPO}/bench/reference/bare_tcp.ts`;

/** The path of an executable on PATH (or in /usr/sbin, /sbin), if there is one. */
export function findExecutable(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/sbin"]);
  for (const dir of dirs) {
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && (info.mode ?? 0) & 0o111) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs a command to completion within `timeoutMs`; never throws. */
export async function run(
  command: string,
  args: string[],
  timeoutMs = 10_000,
): Promise<{ ok: boolean; out: string }> {
  try {
    const output = await new Deno.Command(command, {
      args,
      cwd: REPO,
      stdin: "null",
      env: { DEBIAN_FRONTEND: "noninteractive" },
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    const decoder = new TextDecoder();
    return {
      ok: output.success,
      out: decoder.decode(output.stdout) + decoder.decode(output.stderr),
    };
  } catch (error) {
    return { ok: false, out: (error as Error).message };
  }
}

/**
 * The servers compared: `bare` is the bare HTTP loop; `bare-tcp` the bare
 * loop of tcpcache's TCP protocol on one thread, `bare-tcp-workers` on one
 * thread per core.
 */
export type ServerName =
  | "tcpcache"
  | "tcpcache-workers"
  | "nginx"
  | "python"
  | "bare"
  | "bare-tcp"
  | "bare-tcp-workers";

/** A server the bench started. `pid` is the real server process (never a wrapper). */
export interface Server {
  name: ServerName;
  protocol: "tcpcache" | "http";
  port: number;
  /** tcpcache's HTTP front end's port, when it was started with one. */
  httpPort?: number;
  pid: number;
  child: Deno.ChildProcess;
  stderr: string[];
  exited: boolean;
}

/** Keeps the first lines a process writes to stderr, for the report. */
function collectLines(stream: ReadableStream<Uint8Array>, into: string[]): void {
  (async () => {
    let pending = "";
    try {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        pending += text;
        const lines = pending.split("\n");
        pending = lines.pop() ?? "";
        for (const line of lines) if (into.length < 20) into.push(line.slice(0, 300));
        pending = pending.slice(-4096);
      }
    } catch {
      // the process is gone
    }
  })();
}

/**
 * The ready line: `listening on 127.0.0.1:PORT`, and for tcpcache with an
 * HTTP front end `, HTTP on http://127.0.0.1:HPORT/` after it.
 */
const READY =
  /listening on 127\.0\.0\.1:([0-9]+)(?: \(TLS\))?(?:, HTTP on https?:\/\/[^\s/]+:([0-9]+)\/)?/;

/** The ports a server's ready line announced. */
export interface ReadyPorts {
  port: number;
  /** tcpcache's HTTP front end's, when it has one. */
  httpPort?: number;
  /**
   * Threads that serve (`--workers`); past 1 the server is named
   * `tcpcache-workers`.
   * @default {1}
   */
  workers?: number;
}

/**
 * Resolves with the ports of the first ready line on the child's (piped)
 * stdout, once the line is whole, then keeps draining stdout so the server
 * never blocks on the pipe. Rejects if the child exits, closes stdout or
 * stays silent for `timeoutMs` first.
 */
export async function readyPorts(
  child: Deno.ChildProcess,
  timeoutMs = STARTUP_MS,
): Promise<ReadyPorts> {
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    while (true) {
      const next = await Promise.race([reader.read(), child.status, timeout]);
      if (next === "timeout") throw new Error(`no ready line within ${timeoutMs / 1000} s`);
      if ("code" in next) throw new Error(`exited with code ${next.code} at start`);
      if (next.done) throw new Error("closed its stdout before the ready line");
      text = (text + decoder.decode(next.value, { stream: true })).slice(-8192);
      const match = READY.exec(text);
      if (match && text.indexOf("\n", match.index) >= 0) {
        return { port: Number(match[1]), httpPort: match[2] ? Number(match[2]) : undefined };
      }
    }
  } finally {
    clearTimeout(timer);
    drainInBackground(reader);
  }
}

/** Every process the bench started and that still runs: an early exit stops them all. */
const children = new Set<Deno.ChildProcess>();

/** Registers a child process so that {@linkcode stopChildren} can stop it; returns it. */
export function track(child: Deno.ChildProcess): Deno.ChildProcess {
  children.add(child);
  child.status.then(() => children.delete(child));
  return child;
}

/** SIGTERM to every process still running, SIGKILL after {@linkcode STOP_MS}. */
export async function stopChildren(): Promise<void> {
  const waiting = [...children];
  for (const child of waiting) terminate(child, "SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise((resolve) => timer = setTimeout(resolve, STOP_MS));
  await Promise.race([Promise.all(waiting.map((c) => c.status)), late]);
  clearTimeout(timer);
  for (const child of children) terminate(child, "SIGKILL");
}

function terminate(child: Deno.ChildProcess, signal: Deno.Signal): void {
  try {
    child.kill(signal);
  } catch {
    // exited meanwhile
  }
}

function spawn(name: ServerName, command: string, args: string[], stdout: boolean): Server {
  const child = track(
    new Deno.Command(command, {
      args,
      cwd: REPO,
      stdin: "null",
      stdout: stdout ? "piped" : "null",
      stderr: "piped",
    }).spawn(),
  );
  const server: Server = {
    name,
    protocol: name === "nginx" || name === "bare" ? "http" : "tcpcache",
    port: 0,
    pid: child.pid,
    child,
    stderr: [],
    exited: false,
  };
  child.status.then(() => server.exited = true);
  collectLines(child.stderr, server.stderr);
  return server;
}

async function startReady(server: Server): Promise<Server> {
  try {
    Object.assign(server, await readyPorts(server.child));
    return server;
  } catch (error) {
    await stopServer(server);
    const said = server.stderr.length > 0 ? `; stderr: ${server.stderr.join(" / ")}` : "";
    throw new Error(`${server.name} did not start: ${(error as Error).message}${said}`);
  }
}

/** What tcpcache serves besides its TCP protocol. */
export interface TcpcacheOptions {
  /**
   * Also serve HTTP (`--http-port`) on this port, 0 for a free one: the
   * server's `httpPort` then says which.
   */
  httpPort?: number;
  /**
   * Threads that serve (`--workers`); past 1 the server is named
   * `tcpcache-workers`.
   * @default {1}
   */
  workers?: number;
  /** Serve over TLS with this certificate and key (file paths, PEM). */
  tls?: { cert: string; key: string };
}

/** Runs server.ts directly with the Deno running the bench (no npx wrapper, so the PID is real). */
export function startTcpcache(
  dir: string,
  cacheDir: string,
  cacheSize: string,
  options: TcpcacheOptions = {},
): Promise<Server> {
  const workers = options.workers ?? 1;
  const args = ["run", "-A", "--unstable-net", SERVER_TS, "--dir", dir, "--cache-dir", cacheDir]
    .concat(["--cache-size", cacheSize, "--host", HOST, "--port", "0"])
    .concat(["--quiet", "--max-connections", "4000", "--workers", String(workers)]);
  if (options.httpPort !== undefined) args.push("--http-port", String(options.httpPort));
  if (options.tls) args.push("--tls-cert", options.tls.cert, "--tls-key", options.tls.key);
  const name = workers === 1 ? "tcpcache" : "tcpcache-workers";
  return startReady(spawn(name, Deno.execPath(), args, true));
}

/** Runs the original design's Python server (bench/reference/original_design.py). */
export function startPython(python3: string, dir: string): Promise<Server> {
  return startReady(
    spawn("python", python3, [PYTHON_REFERENCE, "--dir", dir, "--port", "0"], true),
  );
}

/**
 * Runs the bare HTTP/1.1 loop (bench/reference/bare_http.ts) with the Deno
 * running the bench: every file under `dir` answered from memory.
 */
export function startBareHttp(dir: string): Promise<Server> {
  const args = ["run", "-A", BARE_HTTP, "--dir", dir, "--port", "0"];
  return startReady(spawn("bare", Deno.execPath(), args, true));
}

/**
 * Runs the bare loop of tcpcache's TCP protocol (bench/reference/bare_tcp.ts)
 * on `workers` threads: every file under `dir` answered from memory.
 */
export function startBareTcp(dir: string, workers: number): Promise<Server> {
  const args = ["run", "-A", "--unstable-net", BARE_TCP, "--dir", dir, "--port", "0"]
    .concat(["--workers", String(workers)]);
  const name = workers === 1 ? "bare-tcp" : "bare-tcp-workers";
  return startReady(spawn(name, Deno.execPath(), args, true));
}

/**
 * nginx's config for the benches: the common settings (no access log,
 * `sendfile`, long keep-alive), `workers` worker processes, and `servers`:
 * the server blocks, with any http-level directives they share.
 */
export function nginxConfig(
  dir: string,
  servers: string,
  workers: number | "auto" = "auto",
): string {
  const user = Deno.uid() === 0 ? "user root;\n" : "";
  return `daemon off;
master_process on;
worker_processes ${workers};
${user}pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${servers}}
`;
}

/** Starts nginx on a free port with a config in `dir`; ready once it accepts a connection. */
export async function startNginx(nginx: string, dir: string, files: string): Promise<Server> {
  const probe = Deno.listen({ hostname: HOST, port: 0 });
  const port = probe.addr.port;
  probe.close();
  await Deno.mkdir(dir, { recursive: true });
  const block =
    `  server {\n    listen ${HOST}:${port};\n    root ${files};\n    location / { }\n  }\n`;
  await Deno.writeTextFile(`${dir}/nginx.conf`, nginxConfig(dir, block));
  const server = spawn("nginx", nginx, [
    "-p",
    dir,
    "-c",
    `${dir}/nginx.conf`,
    "-e",
    `${dir}/error.log`,
  ], false);
  server.port = port;
  const until = Date.now() + STARTUP_MS;
  while (Date.now() < until && !server.exited) {
    try {
      (await Deno.connect({ hostname: HOST, port })).close();
      return server;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  await stopServer(server);
  const errorLog = await Deno.readTextFile(`${dir}/error.log`).catch(() => "");
  throw new Error(`nginx did not start: ${server.stderr.join(" / ")} ${errorLog.trim()}`);
}

/** SIGTERM (every server here shuts down on it), then SIGKILL after {@linkcode STOP_MS}. */
export async function stopServer(server: Server): Promise<void> {
  if (server.exited) return;
  try {
    server.child.kill("SIGTERM");
  } catch {
    return;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_MS));
  if (await Promise.race([server.child.status, late]) === "late") {
    log(`${server.name} did not exit within ${STOP_MS / 1000} s of SIGTERM; killing it`);
    server.child.kill("SIGKILL");
    await server.child.status;
  }
  clearTimeout(timer);
}

/** The process and its descendants (nginx's workers, say). */
export async function processTree(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      parents.set(Number(entry.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) {
    for (const [child, parent] of parents) if (parent === tree[i]) tree.push(child);
  }
  return tree;
}

/** Resident and peak resident KiB of a set of processes, summed. */
export async function memoryKiB(pids: number[]): Promise<{ rss: number; hwm: number }> {
  let rss = 0;
  let hwm = 0;
  for (const pid of pids) {
    try {
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      rss += Number(/^VmRSS:\s+([0-9]+)/m.exec(status)?.[1] ?? 0);
      hwm += Number(/^VmHWM:\s+([0-9]+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return { rss, hwm };
}

/** The inode of each socket a process holds open, once per descriptor. */
async function socketInodes(pid: number): Promise<string[]> {
  const inodes: string[] = [];
  try {
    for await (const entry of Deno.readDir(`/proc/${pid}/fd`)) {
      const target = await Deno.readLink(`/proc/${pid}/fd/${entry.name}`).catch(() => "");
      const match = /^socket:\[([0-9]+)\]$/.exec(target);
      if (match) inodes.push(match[1]);
    }
  } catch {
    // gone
  }
  return inodes;
}

/** The sockets the processes hold open (listeners included). */
export async function countSockets(pids: number[]): Promise<number> {
  let count = 0;
  for (const pid of pids) count += (await socketInodes(pid)).length;
  return count;
}

/** Samples the tree's resident memory every 25 ms until stopped; resolves with the peak KiB. */
export function sampleMemory(pids: number[]): { stop: () => Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, (await memoryKiB(pids)).rss);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return peak;
    },
  };
}

/**
 * Resolves true once `stream` has said `word`, false if it ends or `ms` pass
 * first; it keeps draining the stream afterwards.
 */
export async function saysWithin(
  stream: ReadableStream<Uint8Array>,
  word: string,
  ms: number,
): Promise<boolean> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), ms));
  let said = "";
  let heard = false;
  try {
    while (!heard) {
      const next = await Promise.race([reader.read(), late]);
      if (next === "late" || next.done) break;
      said = (said + next.value).slice(-4096);
      heard = said.includes(word);
    }
  } finally {
    clearTimeout(timer);
  }
  drainInBackground(reader);
  return heard;
}

/**
 * Reads and discards the rest of a child's output, in the background, so
 * that the child never blocks on a full pipe (a server's access log, say).
 */
export function drainInBackground(reader: ReadableStreamDefaultReader<unknown>): void {
  (async () => {
    try {
      while (!(await reader.read()).done) {
        // discard
      }
    } catch {
      // the process is gone
    }
  })();
}

/** A progress line on stderr (stdout carries only the results). */
export function log(message: string): void {
  console.error(`bench: ${message}`);
}
