/**
 * Dispatcher memory with every task in flight at once: the workers are stopped until the load
 * test has sent the last one, then let go to drain the queue.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest, unsound } from "../lib/load-test.ts";
import type { Pools } from "../lib/pools.ts";
import { figure, show, type Figure } from "../lib/report.ts";

/** The size the target is set for; a smaller run (--quick) is shown without a verdict. */
const TARGET_TASKS = 100_000;

export async function measureDispatcherRss(ctx: Context, pools: Pools): Promise<Figure[]> {
  const tasks = ctx.settings.inflightTasks;
  const label = `load-test RSS, ${show(tasks)} tasks`;
  const base = { id: "dispatcher_rss_mb", label, unit: "MB" };

  ctx.log(`dispatcher memory: load-test of ${tasks} no-op tasks, all in flight at once`);
  const args = { tasks, label: "inflight", watchBacklog: true, holdWorkers: true };
  const run = await runLoadTest(ctx, await pools.noop(), args);
  const { report } = run;
  return [
    figure({
      ...base,
      value: run.dispatcherRssMb,
      target: { op: "<=", value: 300 },
      detail:
        "max VmRSS of the load-test process, sampled every 25 ms; workers held until all were " +
        `sent: ${show(run.peakQueued ?? null)} tasks waited in the queue at once (the rest in ` +
        "the stopped workers' prefetch); " +
        `${show(report.throughput_per_second)} tasks/s, ${unsound(report, tasks)} not succeeded ` +
        `once; workers peaked at ${run.workerRssMb.toFixed(0)} MB`,
      noVerdict: tasks < TARGET_TASKS ? `the target is for ${show(TARGET_TASKS)} tasks` : undefined,
      data: {
        report,
        wall_ms: run.wallMs,
        worker_rss_mb: run.workerRssMb,
        peak_queued: run.peakQueued,
      },
    }),
  ];
}
