/**
 * Scenario overhead: `./dtest dispatch` of the seed scenario (task_a sleeps 0.1 s on one
 * queue, task_b 0.2 s on another), minus the 0.2 s the longest task must take anyway.
 */
import { runName } from "../lib/broker.ts";
import type { Context } from "../lib/context.ts";
import { BIN, removeAfterRun, startWorkers, stopAll } from "../lib/dtest.ts";
import { runTimed, type Child } from "../lib/proc.ts";
import { figure, type Figure } from "../lib/report.ts";
import { median } from "../lib/stats.ts";

const LONGEST_TASK_MS = 200;

const TOTAL_LINE = /^Total dispatcher time: ([\d.]+)s/m;

interface DispatchRun {
  /** The report's own "Total dispatcher time": first publish to last result, ms. */
  reportedMs: number;
  /** Spawn to exit of the whole process: start, config, connect, preflight, work, close. */
  wallMs: number;
}

export async function measureDispatch(ctx: Context): Promise<Figure[]> {
  const queueA = runName("queue_a");
  const queueB = runName("queue_b");
  removeAfterRun(ctx.leftovers, queueA);
  removeAfterRun(ctx.leftovers, queueB);
  const config = ctx.workdir.config(
    "seed",
    {
      task_a: { queue: queueA, kind: "hello", message: "Hello from Task A", duration: 0.1 },
      task_b: { queue: queueB, kind: "hello", message: "Hello from Task B", duration: 0.2 },
    },
    "Basic two-task execution test",
  );

  const workers: Child[] = [];
  try {
    for (const queue of [queueA, queueB]) {
      workers.push(...(await startWorkers({ url: ctx.url, config, queue, concurrency: 1 }, 1)));
    }
    return overheadFigures(await dispatchRuns(ctx, config));
  } finally {
    await stopAll(workers);
  }
}

async function dispatchRuns(ctx: Context, config: string): Promise<DispatchRun[]> {
  const count = ctx.settings.dispatchRuns;
  ctx.log(`dispatch: seed scenario x${count}`);
  const argv = [BIN, "dispatch", "--config", config, "--broker", ctx.url];
  const runs: DispatchRun[] = [];

  for (let i = 0; i < count; i++) {
    const { code, stdout, stderr, wallMs } = await runTimed(argv);
    const total = TOTAL_LINE.exec(stdout);
    if (code !== 0 || !total) {
      const output = `${stdout}${stderr}`.slice(-2000);
      const why = `exited with ${code}, no "Total dispatcher time" line`;
      throw new Error(`./dtest dispatch ${why}:\n${output}`);
    }
    runs.push({ reportedMs: Number(total[1]) * 1000, wallMs });
  }
  return runs;
}

function overheadFigures(runs: DispatchRun[]): Figure[] {
  const warm = runs.map((r) => r.reportedMs - LONGEST_TASK_MS);
  const cold = runs.map((r) => r.wallMs - LONGEST_TASK_MS);
  return [
    figure({
      id: "dispatch_overhead_warm_ms",
      label: "scenario overhead, warm",
      value: median(warm),
      unit: "ms",
      target: { op: "<=", value: 10 },
      detail:
        `median of ${runs.length}: "Total dispatcher time" minus the 0.2 s task ` +
        "(the report prints whole ms)",
      data: { runs_ms: warm },
    }),
    figure({
      id: "dispatch_overhead_connect_ms",
      label: "scenario overhead, with connect",
      value: median(cold),
      unit: "ms",
      target: { op: "<=", value: 50 },
      detail:
        `median of ${runs.length}: process wall time minus 0.2 s ` +
        "(process start, config, connect, worker check, work, close)",
      data: { runs_ms: cold },
    }),
  ];
}
