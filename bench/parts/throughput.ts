/**
 * Throughput: the floor and dtest's no-op load test, same N, same worker processes and
 * prefetch, rounds interleaved so a slow spell on the machine hits both alike.
 */
import type { Context } from "../lib/context.ts";
import { runLoadTest, unsound, type Fleet, type LoadTestRun } from "../lib/load-test.ts";
import type { Pools } from "../lib/pools.ts";
import { brokerPids, cpuMs } from "../lib/machine.ts";
import { sampleRss, type Child } from "../lib/proc.ts";
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
    ...(floor ? [cpuFigure("floor", rounds.floorCpu)] : []),
    ...(noop ? noopFigures(ctx, rounds.noop) : []),
    ...(noop ? [cpuFigure("dtest", rounds.noopCpu)] : []),
    ...(floor && noop ? [ratioFigure(rounds.floor, rounds.noop)] : []),
  ];
}

interface Rounds {
  floor: FloorRound[];
  noop: LoadTestRun[];
  /** Largest VmRSS of the echo workers in each floor round, MB: a Bun + amqplib baseline. */
  echoRssMb: number[];
  floorCpu: CpuSplit[];
  noopCpu: CpuSplit[];
}

/** CPU time per round trip of one round, µs, by who spent it. */
interface CpuSplit {
  broker: number;
  workers: number;
  client: number;
}

/** Counts the broker's and the workers' CPU time while `round` runs; the client's comes back. */
async function withCpu<T>(
  workers: Child[],
  n: number,
  round: () => Promise<T>,
  clientMs: (result: T) => number,
): Promise<{ result: T; cpu: CpuSplit }> {
  const brokers = brokerPids();
  const pids = workers.map((w) => w.pid);
  const before = { broker: cpuMs(brokers), workers: cpuMs(pids) };
  const result = await round();
  const perTrip = (ms: number) => (ms * 1000) / n;
  const cpu = {
    broker: perTrip(cpuMs(brokers) - before.broker),
    workers: perTrip(cpuMs(pids) - before.workers),
    client: perTrip(clientMs(result)),
  };
  return { result, cpu };
}

async function floorRound(floor: FloorSession, n: number, rounds: Rounds) {
  const sampler = sampleRss(() => floor.workers.map((w) => w.pid));
  try {
    const measured = await withCpu(
      floor.workers,
      n,
      () => floor.round(n),
      (r) => r.client_cpu_ms,
    );
    rounds.floorCpu.push(measured.cpu);
    return measured.result;
  } finally {
    rounds.echoRssMb.push(sampler.stop().maxRssMb);
  }
}

async function noopRound(ctx: Context, fleet: Fleet, n: number, label: string, rounds: Rounds) {
  const measured = await withCpu(
    fleet.workers,
    n,
    () => runLoadTest(ctx, fleet, { tasks: n, label }),
    (r) => r.clientCpuMs,
  );
  rounds.noopCpu.push(measured.cpu);
  return measured.result;
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

  const result: Rounds = { floor: [], noop: [], echoRssMb: [], floorCpu: [], noopCpu: [] };
  for (let r = 0; r < rounds; r++) {
    if (floor) result.floor.push(await floorRound(floor, n, result));
    if (fleet) result.noop.push(await noopRound(ctx, fleet, n, `noop-${r}`, result));
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

/** Median CPU per round trip, split by process; the broker's share is what a 2-core run is short of. */
function cpuFigure(side: "floor" | "dtest", rounds: CpuSplit[]): Figure {
  const part = (key: keyof CpuSplit) => median(rounds.map((r) => r[key]));
  const split = { broker: part("broker"), workers: part("workers"), client: part("client") };
  return figure({
    id: `${side}_cpu_us_per_trip`,
    label: `CPU per round trip, ${side}`,
    value: split.broker + split.workers + split.client,
    unit: "µs",
    detail:
      `median of the rounds: RabbitMQ ${show(split.broker)} µs, workers ${show(split.workers)}` +
      ` µs, client ${show(split.client)} µs (/proc and the client's own usage)`,
    data: { rounds, median: split },
  });
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
