/** How busy the machine is, from /proc/stat: figures taken beside other work are noisy. */
import { readFileSync } from "node:fs";

function cpuTicks(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // Fields: user nice system idle iowait irq softirq steal ...; idle and iowait are not busy.
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  const total = ticks.reduce((sum, t) => sum + t, 0);
  return { busy: total - idle, total };
}

/** Share of all CPUs busy over the next `ms`, in percent. */
export async function busyPercent(ms = 1000): Promise<number> {
  const before = cpuTicks();
  await Bun.sleep(ms);
  const after = cpuTicks();
  const total = after.total - before.total;
  return total > 0 ? (100 * (after.busy - before.busy)) / total : 0;
}
