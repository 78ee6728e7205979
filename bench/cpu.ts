/**
 * Where the CPU went, from /proc: the machine's, this process's, and a
 * server's thread by thread. Driver and server share the machine's cores,
 * so a figure means little without them.
 *
 * @module
 */

/** The CPU's model name, from /proc/cpuinfo. */
export function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? "";
  } catch {
    return "";
  }
}

/** The machine's CPU seconds so far, from /proc/stat: processes' and interrupts'. */
function machineSeconds(): { tasks: number; softirq: number } {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/);
  const sum = (indexes: number[]) => indexes.reduce((a, i) => a + Number(fields[i]), 0) / 100;
  // cpu user nice system idle iowait irq softirq steal ...
  return { tasks: sum([1, 2, 3]), softirq: sum([6, 7]) };
}

/**
 * CPU seconds so far: the whole machine's (all but idle, iowait and steal), and this
 * process's with its children's (counted once they are reaped).
 */
export function cpuSeconds(): { machine: number; ours: number } {
  try {
    const { tasks, softirq } = machineSeconds();
    const self = Deno.readTextFileSync("/proc/self/stat");
    const own = self.slice(self.lastIndexOf(")") + 2).split(" ").map(Number);
    return {
      // Tasks here are charged the softirq time of loopback traffic, so the
      // machine's side must count it too.
      machine: tasks + softirq,
      ours: (own[11] + own[12] + own[13] + own[14]) / 100,
    };
  } catch {
    return { machine: NaN, ours: NaN };
  }
}

/** A thread's CPU ticks (1/100 s, user and system) so far. */
interface ThreadTicks {
  name: string;
  main: boolean;
  ticks: number;
}

/** Every thread of the processes, by thread id. */
function threadTicks(pids: number[]): Map<string, ThreadTicks> {
  const threads = new Map<string, ThreadTicks>();
  for (const pid of pids) {
    try {
      for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
        const stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        threads.set(task.name, {
          name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
          // The first process's own thread (nginx's workers are other processes).
          main: task.name === String(pids[0]),
          ticks: Number(fields[11]) + Number(fields[12]),
        });
      }
    } catch {
      // gone meanwhile
    }
  }
  return threads;
}

/**
 * CPU seconds (user and system) that the processes `pids` have used so
 * far: the difference of two calls is what a piece of work cost them. The
 * process's own count, which keeps the time of threads that have ended
 * (Deno's blocking-pool threads, which write files, come and go).
 */
export function processSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100;
}

/** CPU over a window, in cores. */
export interface CpuUse {
  /** The server's processes together. */
  server: number;
  /** The server's busiest thread, as a fraction of one core. */
  busiest: number;
  /** Its name, marked `(main)` for the server's main thread. */
  busiestName: string;
  /** This process: the driver's workers (and the idle main thread). */
  driver: number;
  /**
   * Every other process on the machine: a busy neighbour shows here, and its
   * share of the cores is missing from the figures.
   */
  others: number;
  /** Interrupt and softirq time, no process's: much of it is the loopback traffic's. */
  softirq: number;
}

/**
 * Samples CPU over the counted window of a load that starts now: from the
 * end of its warm-up to the end of its window, on timers (the main thread is
 * idle meanwhile; the load runs in the driver's workers). `pids` are the
 * server's processes, its main process first.
 */
export async function sampleCpu(
  pids: number[],
  warmupMs: number,
  durationMs: number,
): Promise<CpuUse> {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const sample = () => ({
    server: threadTicks(pids),
    driver: threadTicks([Deno.pid]),
    machine: machineSeconds(),
    at: performance.now(),
  });
  await sleep(warmupMs);
  const before = sample();
  await sleep(durationMs);
  const after = sample();
  const seconds = (after.at - before.at) / 1000;
  const server = ticksBetween(before.server, after.server);
  const driver = ticksBetween(before.driver, after.driver);
  const tasks = after.machine.tasks - before.machine.tasks;
  return {
    server: server.total / 100 / seconds,
    busiest: server.busiest / 100 / seconds,
    busiestName: server.busiestName,
    driver: driver.total / 100 / seconds,
    others: Math.max(0, tasks - (server.total + driver.total) / 100) / seconds,
    softirq: (after.machine.softirq - before.machine.softirq) / seconds,
  };
}

/** Ticks used between two samples: in all, and by the busiest thread. */
function ticksBetween(before: Map<string, ThreadTicks>, after: Map<string, ThreadTicks>) {
  let total = 0;
  let busiest = 0;
  let busiestName = "-";
  for (const [tid, thread] of after) {
    const ticks = thread.ticks - (before.get(tid)?.ticks ?? 0);
    total += ticks;
    if (ticks > busiest) {
      busiest = ticks;
      busiestName = thread.main ? `${thread.name} (main)` : thread.name;
    }
  }
  return { total, busiest, busiestName };
}
