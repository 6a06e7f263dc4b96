/**
 * Throughput: the floor and dtest's no-op load test, same N, same worker processes and
 * prefetch, rounds interleaved so a slow spell on the machine hits both alike.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest, unsound, type Fleet, type LoadTestRun } from "../lib/load-test.ts";
import type { Pools } from "../lib/pools.ts";
import { sampleRss } from "../lib/proc.ts";
import { figure, show, type Figure } from "../lib/report.ts";
import { median } from "../lib/stats.ts";
import type { FloorRound, FloorSession } from "./floor.ts";

export interface ThroughputPlan {
  floor: boolean;
  noop: boolean;
  /** The floor's and dtest's workers, shared with the other parts. */
  pools: Pools;
}

export async function measureThroughput(ctx: Context, plan: ThroughputPlan): Promise<Figure[]> {
  const noop = plan.noop;
  const floor = plan.floor ? await plan.pools.floor() : undefined;
  const fleet = noop ? await plan.pools.noop() : undefined;

  const rounds = await interleave(ctx, floor, fleet);
  return [
    ...(floor ? [floorFigure(ctx, rounds.floor), echoRssFigure(ctx, rounds.echoRssMb)] : []),
    ...(noop ? noopFigures(ctx, rounds.noop) : []),
    ...(floor && noop ? [ratioFigure(rounds.floor, rounds.noop)] : []),
  ];
}

interface Rounds {
  floor: FloorRound[];
  noop: LoadTestRun[];
  /** Largest VmRSS of the echo workers in each floor round, MB: a Bun + amqplib baseline. */
  echoRssMb: number[];
}

async function sampledFloorRound(floor: FloorSession, n: number, rssMb: number[]) {
  const sampler = sampleRss(() => floor.workers.map((w) => w.pid));
  try {
    return await floor.round(n);
  } finally {
    rssMb.push(sampler.stop().maxRssMb);
  }
}

async function interleave(
  ctx: Context,
  floor: FloorSession | undefined,
  fleet: Fleet | undefined,
): Promise<Rounds> {
  const { n, rounds } = ctx.settings;
  const warmup = Math.max(200, Math.round(n / 10));
  ctx.log(`throughput: warm-up of ${warmup}, then ${rounds} round(s) of ${n} each`);
  await floor?.round(warmup);
  if (fleet) await runLoadTest(ctx, fleet, { tasks: warmup, label: "noop-warmup" });

  const result: Rounds = { floor: [], noop: [], echoRssMb: [] };
  for (let r = 0; r < rounds; r++) {
    if (floor) result.floor.push(await sampledFloorRound(floor, n, result.echoRssMb));
    if (fleet) result.noop.push(await runLoadTest(ctx, fleet, { tasks: n, label: `noop-${r}` }));
    const parts = [
      floor ? `floor ${show(result.floor.at(-1)!.rate)}/s` : "",
      fleet ? `dtest ${show(result.noop.at(-1)!.report.throughput_per_second)}/s` : "",
    ];
    ctx.log(`  round ${r + 1}: ${parts.filter(Boolean).join(", ")}`);
  }
  return result;
}

function floorFigure(ctx: Context, rounds: FloorRound[]): Figure {
  const { workers, prefetch, n } = ctx.settings;
  const rates = rounds.map((r) => r.rate);
  return figure({
    id: "floor_rate",
    label: "floor: amqplib echo",
    value: median(rates),
    unit: "round trips/s",
    detail:
      `median of ${rounds.length} x ${n}; ${workers} echo process(es), prefetch ` +
      `${prefetch}; durable queue, persistent both ways, confirms both ways, the worker acks ` +
      `after its reply is confirmed (as dtest does); rounds ${rates.map(show).join(", ")}`,
    data: { rounds },
  });
}

function echoRssFigure(ctx: Context, perRound: number[]): Figure {
  return figure({
    id: "floor_worker_rss_mb",
    label: "floor echo worker RSS",
    value: Math.max(...perRound),
    unit: "MB",
    detail:
      `max VmRSS of the ${ctx.settings.workers} echo process(es) during the floor rounds: ` +
      "Bun and amqplib alone, for comparison with the worker figure",
    data: { per_round_mb: perRound },
  });
}

function noopFigures(ctx: Context, rounds: LoadTestRun[]): Figure[] {
  const { workers, prefetch, n } = ctx.settings;
  const rates = rounds.map((r) => r.report.throughput_per_second);
  const bad = rounds.reduce((sum, r) => sum + unsound(r.report, n), 0);
  const worst = rounds.map((r) => r.workerRssMb);
  return [
    figure({
      id: "noop_rate",
      label: "dtest load-test, no-op",
      value: median(rates),
      unit: "tasks/s",
      detail:
        `median of ${rounds.length} x ${n}; ${workers} worker(s), --concurrency ` +
        `${prefetch}; throughput_per_second from its JSON; rounds ${rates.map(show).join(", ")}`,
      data: { rounds: rounds.map((r) => ({ ...r.report, wall_ms: r.wallMs })) },
    }),
    figure({
      id: "noop_unsound_tasks",
      label: "no-op tasks not succeeded once",
      value: bad,
      unit: "tasks",
      target: { op: "<=", value: 0 },
      detail: `failed + lost + duplicated + unaccounted over all ${rounds.length} round(s)`,
    }),
    figure({
      id: "worker_rss_mb",
      label: "worker RSS under load",
      value: Math.max(...worst),
      unit: "MB",
      target: { op: "<=", value: 80 },
      detail: `max VmRSS of the ${workers} worker(s), sampled every 25 ms during the no-op rounds`,
      data: { per_round_mb: worst },
    }),
  ];
}

function ratioFigure(floor: FloorRound[], noop: LoadTestRun[]): Figure {
  const floorRate = median(floor.map((r) => r.rate));
  const noopRate = median(noop.map((r) => r.report.throughput_per_second));
  return figure({
    id: "noop_to_floor",
    label: "dtest / floor",
    value: noopRate / floorRate,
    unit: "",
    target: { op: ">=", value: 0.6 },
    detail: `${show(noopRate)} / ${show(floorRate)} (medians of the interleaved rounds)`,
  });
}
