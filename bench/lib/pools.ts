/**
 * Worker processes shared by several parts of one run: the floor's echo workers and dtest's
 * no-op workers, each started on first use with the run's K and P and stopped at the end.
 * Sharing them means every part after the first measures warmed-up processes on both sides.
 */
import { startFloor, type FloorSession } from "../parts/floor.ts";
import type { Context } from "./context.ts";
import { startFleet, type Fleet } from "./load-test.ts";

export class Pools {
  private floorSession?: Promise<FloorSession>;
  private noopFleet?: Promise<Fleet>;

  constructor(private readonly ctx: Context) {}

  floor(): Promise<FloorSession> {
    const { workers, prefetch } = this.ctx.settings;
    const label = `k${workers}p${prefetch}`;
    return (this.floorSession ??= startFloor({ ...this.ctx, workers, prefetch, label }));
  }

  noop(): Promise<Fleet> {
    const { workers, prefetch: concurrency } = this.ctx.settings;
    const spec = { label: "noop", kind: "noop", workers, concurrency } as const;
    return (this.noopFleet ??= startFleet(this.ctx, spec));
  }

  /** Stops whatever was started; a pool that failed to start has stopped its own workers. */
  async stop(): Promise<void> {
    const started = [this.floorSession, this.noopFleet].filter((p) => p !== undefined);
    const pools = await Promise.all(started.map((p) => p.catch(() => undefined)));
    await Promise.all(pools.map((pool) => pool?.stop()));
  }
}
