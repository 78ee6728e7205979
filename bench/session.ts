/**
 * How a benchmark program starts and ends: its command line, and a run that
 * leaves nothing behind however it ends (servers, driver workers, files).
 *
 * @module
 */

import { DriverPool } from "./driver.ts";
import { log, stopChildren } from "./processes.ts";

/**
 * Parses the command line with `parse`. Returns the options, or the exit
 * status when the program should stop there: 0 once `--help` printed the
 * usage, 2 once a bad option was explained on stderr.
 */
export function readCommandLine<O extends object>(
  program: string,
  usage: string,
  args: string[],
  parse: (args: string[]) => O | "help",
): O | number {
  try {
    const parsed = parse(args);
    if (parsed !== "help") return parsed;
    console.log(usage);
    return 0;
  } catch (error) {
    console.error(`${program}: ${(error as Error).message}\n(see --help)`);
    return 2;
  }
}

/** What a benchmark run works with. */
export interface Session {
  /** A fresh scratch directory, removed at the end. */
  root: string;
  /** The load driver, closed at the end. */
  pool: DriverPool;
}

/** How {@linkcode runSession} sets a run up. */
export interface SessionSetup {
  /** The program's name, for its messages. */
  program: string;
  /** The scratch directory's name prefix. */
  tempPrefix: string;
  /** The load driver's Deno Workers. */
  driverWorkers: number;
  /** Every load is bounded, but a wedged server must not hold the machine forever. */
  hardCapMs: number;
}

/**
 * Runs `body` in a fresh session and returns the exit status: 0 when it
 * returns, 1 when it throws or outlives the hard cap, 130 on Ctrl-C. Every
 * way out stops the child processes, closes the driver and removes the
 * scratch directory.
 */
export async function runSession(
  setup: SessionSetup,
  body: (session: Session) => Promise<void>,
): Promise<number> {
  const root = await Deno.makeTempDir({ prefix: setup.tempPrefix });
  removeAtExit(root);
  const pool = new DriverPool(setup.driverWorkers);
  const cleanUp = async () => {
    pool.close();
    await stopChildren();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  };
  const hardCap = setTimeout(async () => {
    log(`hard time cap of ${setup.hardCapMs / 1000} s reached; stopping`);
    await cleanUp();
    Deno.exit(1);
  }, setup.hardCapMs);
  const onInterrupt = async () => {
    log("interrupted");
    await cleanUp();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    await body({ root, pool });
    return 0;
  } catch (error) {
    console.error(`${setup.program}: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    clearTimeout(hardCap);
    Deno.removeSignalListener("SIGINT", onInterrupt);
    await cleanUp();
  }
}

/**
 * Removes `dir` again when the process exits. Servers running in this
 * process (the cluster benchmark's hit-ratio part) may still write files
 * when a Ctrl-C ends the session, and the first removal then fails; at exit
 * (Deno.exit dispatches "unload") this thread starts nothing more, so
 * removing again succeeds.
 */
function removeAtExit(dir: string): void {
  globalThis.addEventListener("unload", () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        Deno.removeSync(dir, { recursive: true });
        return;
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return;
      }
    }
    console.error(`could not remove ${dir}`);
  });
}
