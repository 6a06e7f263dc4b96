/** Worker start: from spawning `./dtest worker` to its `consuming <queue>` line on stderr. */
import { runName } from "../lib/broker.ts";
import type { Context } from "../lib/context.ts";
import { removeAfterRun, spawnWorker } from "../lib/dtest.ts";
import { figure, type Figure } from "../lib/report.ts";
import { median } from "../lib/stats.ts";

export async function measureWorkerStart(ctx: Context): Promise<Figure[]> {
  const runs = ctx.settings.startRuns;
  const queue = runName("start");
  removeAfterRun(ctx.leftovers, queue);
  const config = ctx.workdir.config("start", { bench_start: { queue, kind: "noop" } });
  ctx.log(`worker start: ./dtest worker --queue ${queue} x${runs}`);
  const ms: number[] = [];

  // One worker at a time, each stopped before the next, so none competes for the CPU.
  for (let i = 0; i < runs; i++) {
    const worker = spawnWorker({ url: ctx.url, config, queue, concurrency: 1 });
    try {
      ms.push(await worker.waitForStderr(`consuming ${queue}`));
    } finally {
      await worker.stop();
    }
  }

  return [
    figure({
      id: "worker_start_ms",
      label: "worker start to consuming",
      value: median(ms),
      unit: "ms",
      target: { op: "<=", value: 250 },
      detail:
        `median of ${runs}; spawn to "consuming <queue>" on stderr ` +
        `(the first run, which declares the queue: ${ms[0]!.toFixed(0)} ms)`,
      data: { runs_ms: ms },
    }),
  ];
}
