/**
 * Round-trip latency at a modest offered rate, where queueing should not dominate: dtest's
 * load test, and the floor's echo paced the same way for comparison. Both get the same
 * warm-up at that rate first, so neither is measured with cold code.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest } from "../lib/load-test.ts";
import type { Pools } from "../lib/pools.ts";
import { figure, type Figure } from "../lib/report.ts";

export async function measureLatency(ctx: Context, pools: Pools): Promise<Figure[]> {
  return [...(await dtestLatency(ctx, pools)), ...(await floorLatency(ctx, pools))];
}

function warmup(tasks: number): number {
  return Math.min(tasks, 1000);
}

async function dtestLatency(ctx: Context, pools: Pools): Promise<Figure[]> {
  const { latencyTasks: tasks, latencyRate: rate, workers, prefetch } = ctx.settings;
  ctx.log(`latency: ${tasks} no-op tasks at ${rate}/s through dtest`);
  const fleet = await pools.noop();
  await runLoadTest(ctx, fleet, { tasks: warmup(tasks), rate, label: "latency-warmup" });
  const args = { tasks, rate, label: "latency", sampleMemory: false };
  const { report } = await runLoadTest(ctx, fleet, args);
  const { latency_ms: latency, throughput_per_second: achieved } = report;
  const how =
    `dtest load-test, publish to result: ${tasks} no-op tasks offered at ${rate}/s ` +
    `(achieved ${achieved.toFixed(0)}/s), ${workers} worker(s), --concurrency ${prefetch}`;
  return [
    figure({
      id: "latency_p50_ms",
      label: "round trip p50",
      value: latency.p50,
      unit: "ms",
      target: { op: "<=", value: 1 },
      detail: how,
      data: { report },
    }),
    figure({
      id: "latency_p99_ms",
      label: "round trip p99",
      value: latency.p99,
      unit: "ms",
      target: { op: "<=", value: 5 },
      detail: `p95 ${latency.p95} ms, max ${latency.max} ms, mean ${latency.mean} ms`,
    }),
  ];
}

async function floorLatency(ctx: Context, pools: Pools): Promise<Figure[]> {
  const { latencyTasks: tasks, latencyRate: rate } = ctx.settings;
  ctx.log(`latency: ${tasks} floor echoes at ${rate}/s`);
  const session = await pools.floor();
  await session.round(warmup(tasks), rate);
  const round = await session.round(tasks, rate);
  const { p50, p95, p99, max } = round.latency_ms;
  return [
    figure({
      id: "floor_latency_p50_ms",
      label: "floor round trip p50",
      value: p50,
      unit: "ms",
      detail: `the floor's echo paced the same way (${tasks} at ${rate}/s), for comparison`,
      data: { round },
    }),
    figure({
      id: "floor_latency_p99_ms",
      label: "floor round trip p99",
      value: p99,
      unit: "ms",
      detail: `p95 ${p95.toFixed(2)} ms, max ${max.toFixed(2)} ms`,
    }),
  ];
}
