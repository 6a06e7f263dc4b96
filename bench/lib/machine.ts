/**
 * How busy the machine is, from /proc: figures taken beside other work are noisy, so the
 * bench reports how much CPU went to processes that are neither its own nor the broker.
 */
import { readdirSync, readFileSync } from "node:fs";

function cpuTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // Fields: user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  const total = ticks.reduce((sum, t) => sum + t, 0);
  return { busy: total - idle, total };
}

/**
 * utime + stime of a process, plus cutime + cstime (children it has waited for) when asked;
 * clock ticks, the unit of /proc/stat. 0 when the process is gone.
 */
function processTicks(pid: number | "self", withChildren: boolean): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    // The broker restarted or the process exited; its share is unknown, not an error.
    return 0;
  }
  // The command name can hold spaces and parentheses; fields are counted after the last ')'.
  const fields = stat
    .slice(stat.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  const own = fields[11]! + fields[12]!;
  return withChildren ? own + fields[13]! + fields[14]! : own;
}

/** Clock ticks per second in /proc: USER_HZ, fixed at 100 by Linux's ABI on every platform. */
const TICKS_PER_SECOND = 100;

/** Clock ticks `pids` have used so far (own, not children); a process that is gone counts 0. */
function ticksOf(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + processTicks(pid, false), 0);
}

/** CPU time of `pids` so far (own, not children), ms. */
export function cpuMs(pids: number[]): number {
  return (ticksOf(pids) * 1000) / TICKS_PER_SECOND;
}

/**
 * How RabbitMQ's scheduler threads are bound to CPUs (the Erlang VM's `+stbt` flag, which
 * RabbitMQ's start script sets to `db`; `u` is unbound), read from the VM's command line;
 * undefined when it cannot be read.
 */
export function brokerSchedulerBinding(): string | undefined {
  const pid = brokerPids()[0];
  if (pid === undefined) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    const at = argv.findIndex((arg) => arg === "-stbt" || arg === "+stbt");
    // Without the flag the Erlang VM leaves its schedulers unbound.
    return at >= 0 ? argv[at + 1] : "u";
  } catch {
    return undefined;
  }
}

/** The pids of RabbitMQ's Erlang VM on this machine. */
export function brokerPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const name = readFileSync(`/proc/${entry}/comm`, "utf8").trim();
      if (name === "beam.smp") pids.push(Number(entry));
    } catch {
      // Exited while the list was read.
    }
  }
  return pids;
}

interface Snapshot {
  busy: number;
  total: number;
  ours: number;
}

function snapshot(brokers: number[]): Snapshot {
  const { busy, total } = cpuTicks();
  return { busy, total, ours: processTicks("self", true) + ticksOf(brokers) };
}

export interface CpuWatch {
  /** Percent of all CPUs busy, and busy with processes that are neither ours nor the broker. */
  stop(): { busyPercent: number; othersPercent: number };
}

/**
 * Starts counting CPU time. "Ours" is this process, the children it has reaped (every worker
 * and client it started) and RabbitMQ; the broker also serves whoever else uses it, so other
 * work on the same broker is counted as ours and this figure can only understate the noise.
 */
export function watchCpu(): CpuWatch {
  const brokers = brokerPids();
  const start = snapshot(brokers);
  return {
    stop() {
      const end = snapshot(brokers);
      const total = end.total - start.total || 1;
      const busy = end.busy - start.busy;
      const others = Math.max(0, busy - (end.ours - start.ours));
      return { busyPercent: (100 * busy) / total, othersPercent: (100 * others) / total };
    },
  };
}

/** Share of all CPUs busy over the next `ms`, in percent. */
export async function busyPercent(ms = 1000): Promise<number> {
  const before = cpuTicks();
  await Bun.sleep(ms);
  const after = cpuTicks();
  const total = after.total - before.total;
  return total > 0 ? (100 * (after.busy - before.busy)) / total : 0;
}
