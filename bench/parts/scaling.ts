/**
 * Scaling: 100 ms hello tasks on 1 worker, then on 4 (concurrency 1 each). Four workers
 * should finish four times the work in the same time; the figure is the share of that ideal.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest, startFleet, unsound, type FleetSpec } from "../lib/load-test.ts";
import { figure, show, type Figure } from "../lib/report.ts";

const TASK_SECONDS = 0.1;
const MOST_WORKERS = 4;

export async function measureScaling(ctx: Context): Promise<Figure[]> {
  const label = `scaling 1 -> ${MOST_WORKERS} workers`;
  const base = { id: "scaling_efficiency", label, unit: "% of ideal" };

  const perWorker = ctx.settings.scalingTasksPerWorker;
  const spec: FleetSpec = {
    label: "hello",
    kind: "hello",
    duration: TASK_SECONDS,
    workers: 1,
    concurrency: 1,
  };
  const fleet = await startFleet(ctx, spec);
  try {
    ctx.log(`scaling: ${perWorker} hello tasks on 1 worker`);
    const one = await runLoadTest(ctx, fleet, { tasks: perWorker, label: "scaling-1" });

    await fleet.grow(MOST_WORKERS - 1);
    const tasks = perWorker * MOST_WORKERS;
    ctx.log(`scaling: ${tasks} hello tasks on ${MOST_WORKERS} workers`);
    const many = await runLoadTest(ctx, fleet, { tasks, label: `scaling-${MOST_WORKERS}` });

    const rate1 = one.report.throughput_per_second;
    const rateMany = many.report.throughput_per_second;
    const bad = unsound(one.report, perWorker) + unsound(many.report, tasks);
    return [
      figure({
        ...base,
        value: (100 * rateMany) / (MOST_WORKERS * rate1),
        target: { op: ">=", value: 90 },
        detail:
          `${show(rateMany)}/s with ${MOST_WORKERS} vs ${show(rate1)}/s with 1 ` +
          `(${TASK_SECONDS * 1000} ms tasks: at most ${1 / TASK_SECONDS}/s per worker); ` +
          `${bad} not succeeded once`,
        data: { one: one.report, many: many.report },
      }),
    ];
  } finally {
    await fleet.stop();
  }
}
