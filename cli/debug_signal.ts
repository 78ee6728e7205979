/**
 * SIGUSR1 kept away from Deno's debugger.
 *
 * Deno (2.9.2 on) answers SIGUSR1 as Node does: it opens the V8 inspector on
 * 127.0.0.1:9229, and any local user who connects to it can run code in the
 * server. Closing the inspector once it appears is not enough: a reviewer's
 * client, polling that port, ran its code within the millisecond the server
 * took to notice. So the signal must never reach Deno's handler: its
 * disposition is set to "ignore" through libc's `signal(2)` (FFI). Deno
 * installs its handler half a second after start, after the server has
 * begun, so the disposition is set again every quarter of a second; a
 * SIGUSR1 is then lost on the server, which is the point (its state line is
 * on SIGUSR2). Without FFI the best left is to close the inspector as soon
 * as it shows, and say so (docs/operating.md warns not to send SIGUSR1).
 *
 * @module
 */

import inspector from "node:inspector";

/** SIGUSR1 on Linux (x86-64 and arm64). */
const SIGUSR1 = 10;
/** `SIG_IGN`, as a handler pointer. */
const SIG_IGN = 1n;
/** How often the disposition is set again. */
const RECHECK_MS = 250;
/** How many times (a millisecond apart) the fallback looks for the inspector after a SIGUSR1. */
const INSPECTOR_CHECKS = 1000;

/**
 * Keeps SIGUSR1 from opening the debugger, for as long as the server runs;
 * `warn` hears why it cannot, where it cannot. Resolves to the function that
 * stops guarding. A server started with an inspector on purpose (`--inspect`)
 * is left as it is.
 */
export function guardDebugSignal(warn: (line: string) => void): () => void {
  if (inspectorOpen()) return () => {};
  const ignoring = ignoreSignal();
  if (ignoring) return ignoring;
  const close = () => closeInspectorSoon(warn);
  Deno.addSignalListener("SIGUSR1", close);
  return () => Deno.removeSignalListener("SIGUSR1", close);
}

/** Whether the inspector is open; false too where looking needs `--allow-sys`. */
function inspectorOpen(): boolean {
  try {
    return inspector.url() !== undefined;
  } catch {
    return false;
  }
}

/** SIGUSR1 ignored through libc, kept so; undefined where FFI or libc is not there. */
function ignoreSignal(): (() => void) | undefined {
  if (Deno.build.os !== "linux") return undefined;
  // Asked, dlopen would prompt on a terminal: a server must not wait on that.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return undefined;
  let libc: Deno.DynamicLibrary<{
    signal: { parameters: ["i32", "pointer"]; result: "pointer" };
  }>;
  try {
    libc = Deno.dlopen("libc.so.6", {
      signal: { parameters: ["i32", "pointer"], result: "pointer" },
    });
  } catch {
    return undefined;
  }
  const ignore = () => void libc.symbols.signal(SIGUSR1, Deno.UnsafePointer.create(SIG_IGN));
  ignore();
  const timer = setInterval(ignore, RECHECK_MS);
  Deno.unrefTimer(timer);
  return () => {
    clearInterval(timer);
    libc.close();
  };
}

/** The fallback: closes the inspector Deno opened, as soon as it shows. */
function closeInspectorSoon(warn: (line: string) => void): void {
  let checks = 0;
  const timer = setInterval(() => {
    let open: boolean;
    try {
      open = inspector.url() !== undefined;
    } catch {
      clearInterval(timer);
      warn(
        "tcpcache: SIGUSR1: Deno may have opened a debugger; without --allow-sys the server " +
          "cannot close it: restart the server",
      );
      return;
    }
    if (open) {
      inspector.close();
      clearInterval(timer);
      warn(
        "tcpcache: SIGUSR1: closed the debugger Deno opened on it, a way in for any local " +
          "user while it was open: run the server with --allow-ffi, and SIGUSR1 is ignored",
      );
    } else if (++checks >= INSPECTOR_CHECKS) {
      clearInterval(timer);
    }
  }, 1);
}
