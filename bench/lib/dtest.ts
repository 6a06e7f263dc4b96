/**
 * Driving the compiled ./dtest: configs written for one run, workers started and awaited, and
 * the queues and exchanges dtest declares for a queue, so the bench can remove them after.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import type { Leftovers } from "./broker.ts";
import { spawnChild, type Child } from "./proc.ts";

export const ROOT = resolve(import.meta.dir, "../..");
export const BIN = join(ROOT, "dtest");

export function requireBinary(): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing; build it with \`make build\``);
}

export interface TaskSpec {
  queue: string;
  kind: "noop" | "hello";
  /** Seconds, for hello tasks. */
  duration?: number;
  message?: string;
}

/** A temporary directory for this run's configs and load-test JSON; removed by `cleanup`. */
export class Workdir {
  readonly path = mkdtempSync(join(tmpdir(), "dtest-bench-"));

  /** Writes a config routing each task to its queue; the seed's retry policy is kept. */
  config(name: string, tasks: Record<string, TaskSpec>, description = "bench"): string {
    const file = join(this.path, `${name}.yml`);
    writeFileSync(file, renderConfig(tasks, description));
    return file;
  }

  file(name: string): string {
    return join(this.path, name);
  }

  cleanup(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

function renderConfig(tasks: Record<string, TaskSpec>, description: string): string {
  const routing = Object.entries(tasks).map(([name, t]) => `  ${name}: ${t.queue}`);
  const defs = Object.entries(tasks).flatMap(([name, t]) => [
    `  ${name}:`,
    `    kind: ${t.kind}`,
    ...(t.duration === undefined ? [] : [`    duration: ${t.duration}`]),
    ...(t.message === undefined ? [] : [`    message: ${JSON.stringify(t.message)}`]),
  ]);
  const queues = new Set(Object.values(tasks).map((t) => t.queue)).size;
  return [
    "system:",
    `  description: ${JSON.stringify(description)}`,
    `  workers: ${queues}`,
    "test_scenario:",
    `  description: ${JSON.stringify(description)}`,
    "task_routing:",
    ...routing,
    "tasks:",
    ...defs,
    "retry_config:",
    "  max_retries: 3",
    "  retry_delay: 60",
    "  retry_backoff: true",
    "  retry_backoff_max: 600",
    "  retry_jitter: true",
    "",
  ].join("\n");
}

/** Marks what a dtest worker declares for `queue` for removal: queue, exchange, dead letters. */
export function removeAfterRun(leftovers: Leftovers, queue: string): void {
  leftovers.queue(queue, `${queue}.dead`);
  leftovers.exchange(queue);
}

export interface WorkerStart {
  url: string;
  config: string;
  queue: string;
  concurrency: number;
}

/** Spawns `dtest worker` (not yet awaited). */
export function spawnWorker(start: WorkerStart): Child {
  const concurrency = String(start.concurrency);
  return spawnChild([
    BIN,
    "worker",
    "--queue",
    start.queue,
    "--concurrency",
    concurrency,
    "--config",
    start.config,
    "--broker",
    start.url,
  ]);
}

/** Starts `count` workers on one queue and resolves once each prints `consuming <queue>`. */
export async function startWorkers(start: WorkerStart, count: number): Promise<Child[]> {
  const workers = Array.from({ length: count }, () => spawnWorker(start));
  try {
    await Promise.all(workers.map((w) => w.waitForStderr(`consuming ${start.queue}`)));
  } catch (err) {
    await stopAll(workers);
    throw err;
  }
  return workers;
}

export async function stopAll(children: Child[]): Promise<void> {
  await Promise.all(children.map((c) => c.stop()));
}
