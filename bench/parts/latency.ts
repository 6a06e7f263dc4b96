/**
 * Round-trip latency at a modest offered rate, where queueing should not dominate: dtest's
 * load test, and the floor's echo paced the same way for comparison. Both get the same
 * warm-up at that rate first, so neither is measured with cold code, and their rounds are
 * interleaved so that a slow spell on the machine hits both alike; each percentile is the
 * median over the rounds.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest } from "../lib/load-test.ts";
import type { Pools } from "../lib/pools.ts";
import { figure, show, type Figure } from "../lib/report.ts";
import { median } from "../lib/stats.ts";

interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export async function measureLatency(ctx: Context, pools: Pools): Promise<Figure[]> {
  const { latencyTasks: tasks, latencyRate: rate, rounds } = ctx.settings;
  const fleet = await pools.noop();
  const floor = await pools.floor();

  ctx.log(`latency: warm-up, then ${rounds} round(s) of ${tasks} tasks at ${rate}/s each`);
  const warmup = Math.min(tasks, 1000);
  await runLoadTest(ctx, fleet, { tasks: warmup, rate, label: "latency-warmup" });
  await floor.round(warmup, rate);

  const dtest: Percentiles[] = [];
  const echo: Percentiles[] = [];
  let achieved = 0;
  for (let r = 0; r < rounds; r++) {
    const args = { tasks, rate, label: `latency-${r}`, sampleMemory: false };
    const { report } = await runLoadTest(ctx, fleet, args);
    dtest.push(report.latency_ms);
    achieved = report.throughput_per_second;
    echo.push((await floor.round(tasks, rate)).latency_ms);
    const p50 = { dtest: show(dtest.at(-1)!.p50), floor: show(echo.at(-1)!.p50) };
    ctx.log(`  round ${r + 1}: p50 dtest ${p50.dtest} ms, floor ${p50.floor} ms`);
  }

  const of = (runs: Percentiles[], key: keyof Percentiles) => median(runs.map((p) => p[key]));
  const list = (runs: Percentiles[], key: keyof Percentiles) =>
    runs.map((p) => p[key].toFixed(2)).join(", ");
  const { workers, prefetch } = ctx.settings;
  const how =
    `dtest load-test, publish to result: ${tasks} no-op tasks offered at ${rate}/s ` +
    `(achieved ${achieved.toFixed(0)}/s), ${workers} worker(s), --concurrency ${prefetch}; ` +
    `median of ${rounds} round(s) interleaved with the floor's: ${list(dtest, "p50")}`;
  return [
    figure({
      id: "latency_p50_ms",
      label: "round trip p50",
      value: of(dtest, "p50"),
      unit: "ms",
      target: { op: "<=", value: 1 },
      detail: how,
      data: { rounds: dtest },
    }),
    figure({
      id: "latency_p99_ms",
      label: "round trip p99",
      value: of(dtest, "p99"),
      unit: "ms",
      target: { op: "<=", value: 5 },
      detail: `rounds ${list(dtest, "p99")}; p95 ${of(dtest, "p95")} ms, max ${of(dtest, "max")} ms`,
    }),
    figure({
      id: "floor_latency_p50_ms",
      label: "floor round trip p50",
      value: of(echo, "p50"),
      unit: "ms",
      detail: `the floor's echo paced the same way, for comparison: rounds ${list(echo, "p50")}`,
      data: { rounds: echo },
    }),
    figure({
      id: "floor_latency_p99_ms",
      label: "floor round trip p99",
      value: of(echo, "p99"),
      unit: "ms",
      detail: `rounds ${list(echo, "p99")}; p95 ${of(echo, "p95").toFixed(2)} ms`,
    }),
  ];
}
