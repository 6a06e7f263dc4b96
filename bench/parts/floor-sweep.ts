/**
 * The floor at several worker counts and prefetch values, to choose dtest's settings: which
 * prefetch stops paying, and what a second worker process buys on this machine.
 */
import type { Context } from "../lib/context.ts";
import { figure, show, type Figure } from "../lib/report.ts";
import { median } from "../lib/stats.ts";
import { startFloor } from "./floor.ts";

export const SWEEP_WORKERS = [1, 2];
export const SWEEP_PREFETCH = [1, 10, 100, 1000];

export async function measureFloorSweep(ctx: Context): Promise<Figure[]> {
  const figures: Figure[] = [];
  for (const workers of SWEEP_WORKERS) {
    for (const prefetch of SWEEP_PREFETCH) figures.push(await sweepPoint(ctx, workers, prefetch));
  }
  return figures;
}

async function sweepPoint(ctx: Context, workers: number, prefetch: number): Promise<Figure> {
  const { n, rounds } = ctx.settings;
  ctx.log(`floor sweep: ${workers} worker(s), prefetch ${prefetch}`);
  const label = `sweep_k${workers}p${prefetch}`;
  const session = await startFloor({ ...ctx, workers, prefetch, label });

  try {
    await session.round(Math.max(200, Math.round(n / 10)));
    const rates: number[] = [];
    for (let r = 0; r < rounds; r++) rates.push((await session.round(n)).rate);
    return figure({
      id: `floor_rate_k${workers}_p${prefetch}`,
      label: `floor, ${workers} worker(s), prefetch ${prefetch}`,
      value: median(rates),
      unit: "round trips/s",
      detail: `median of ${rounds} x ${n}; rounds ${rates.map(show).join(", ")}`,
      data: { rates },
    });
  } finally {
    await session.stop();
  }
}
