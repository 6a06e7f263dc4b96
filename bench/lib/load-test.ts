/**
 * Running `./dtest load-test` against workers started by the bench: its JSON report read and
 * checked, and the memory of the load-test process and of the workers sampled meanwhile.
 */
import { readFileSync } from "node:fs";

import type { ChannelModel } from "amqplib";

import { RUN_ID } from "./broker.ts";
import type { LoadReport } from "../../core/load.ts";
import type { Context } from "./context.ts";
import { BIN, removeAfterRun, startWorkers, stopAll } from "./dtest.ts";
import { sampleRss, spawnChild, type Child } from "./proc.ts";

/** The JSON `dtest load-test --json FILE` writes; the bench reads a few of its fields. */
export type LoadTestReport = LoadReport;

export interface LoadTestRun {
  report: LoadTestReport;
  exitCode: number;
  /** Spawn to exit of the load-test process, ms. */
  wallMs: number;
  /** Largest VmRSS of the load-test process, MB (NaN when not sampled). */
  dispatcherRssMb: number;
  /** Largest VmRSS of any worker during the run, MB. */
  workerRssMb: number;
  /** CPU time of the load-test process, ms. */
  clientCpuMs: number;
  /** Most tasks seen waiting in the queue at once, when asked to watch. */
  peakQueued?: number;
}

/** Workers on one queue with one task routed to it; `stop()` ends them. */
export interface Fleet {
  queue: string;
  task: string;
  config: string;
  workers: Child[];
  /** Adds workers on the same queue (for scaling). */
  grow(count: number): Promise<void>;
  stop(): Promise<void>;
}

export interface FleetSpec {
  label: string;
  kind: "noop" | "hello";
  duration?: number;
  workers: number;
  concurrency: number;
}

/** Writes a config for one task on a queue of this run and starts its workers. */
export async function startFleet(ctx: Context, spec: FleetSpec): Promise<Fleet> {
  const queue = `bench_${RUN_ID}_${spec.label}`;
  const task = `bench_${spec.label}`;
  removeAfterRun(ctx.leftovers, queue);
  const def = { queue, kind: spec.kind, duration: spec.duration };
  const config = ctx.workdir.config(spec.label, { [task]: def });
  const start = { url: ctx.url, config, queue, concurrency: spec.concurrency };

  const workers = await startWorkers(start, spec.workers);
  return {
    queue,
    task,
    config,
    workers,
    grow: async (count) => {
      workers.push(...(await startWorkers(start, count)));
    },
    stop: () => stopAll(workers),
  };
}

export interface LoadTestArgs {
  tasks: number;
  /** Offered rate, tasks/s; unset sends as fast as dtest can. */
  rate?: number;
  /** Names the JSON file, so each run's report stays readable after a failure. */
  label: string;
  /** Sample the memory of the load-test process and the workers (default true). */
  sampleMemory?: boolean;
  /** Poll the task queue's depth, to show how many tasks were really waiting at once. */
  watchBacklog?: boolean;
  /**
   * Stop the workers (SIGSTOP) until every task is in the queue, so all of them are in flight
   * at once; their consumers stay registered, so the load test still finds them.
   */
  holdWorkers?: boolean;
}

/** Runs one load test against `fleet`; throws when dtest fails or its report is incomplete. */
export async function runLoadTest(
  ctx: Context,
  fleet: Fleet,
  args: LoadTestArgs,
): Promise<LoadTestRun> {
  const out = ctx.workdir.file(`${args.label}.json`);
  const argv = [
    BIN,
    "load-test",
    "--config",
    fleet.config,
    "--task",
    fleet.task,
    "--tasks",
    String(args.tasks),
    "--json",
    out,
    "--broker",
    ctx.url,
  ];
  if (args.rate !== undefined) argv.push("--rate", String(args.rate));

  // Reading /proc every 25 ms costs a little CPU; latency runs skip it so it cannot add jitter.
  const sample = args.sampleMemory ?? true;
  const workerRss = sample ? sampleRss(() => fleet.workers.map((w) => w.pid)) : undefined;
  const watch = args.watchBacklog || args.holdWorkers;
  const backlog = watch ? await watchBacklog(ctx.model, fleet.queue) : undefined;
  const hold = args.holdWorkers ? holdWorkers(fleet.workers) : undefined;
  const child = spawnChild(argv);
  if (hold && backlog) {
    // Its progress line (every 2 s off a terminal) says when the last task has been published;
    // the broker may still be taking them in, so the queue must stop growing too.
    const sentAll = child.waitForStderr(`, ${args.tasks} sent,`, 600_000);
    void sentAll.then(() => backlog.settled()).finally(hold.release);
  }
  const dispatcherRss = sample ? sampleRss(() => [child.pid]) : undefined;
  await child.proc.exited.finally(() => hold?.release());
  const wallMs = performance.now() - child.startedAt;
  const peakQueued = await backlog?.stop();
  const memory = {
    dispatcherRssMb: dispatcherRss?.stop().maxRssMb ?? Number.NaN,
    workerRssMb: workerRss?.stop().maxRssMb ?? Number.NaN,
  };
  const code = await child.exit();
  const clientCpuMs = child.cpuMs() ?? Number.NaN;

  // A run with failed or lost tasks still writes its report (and exits non-zero); the counts
  // are part of what the bench shows, so only a missing or malformed report stops it.
  const report = readReport(out);
  if (!report) {
    const output = `${child.stdout.slice(-1500)}${child.stderr.slice(-1500)}`;
    const command = argv.join(" ");
    throw new Error(`${command} exited with ${code} and wrote no version 1 report:\n${output}`);
  }
  return { report, exitCode: code, wallMs, peakQueued, clientCpuMs, ...memory };
}

/** SIGSTOPs the workers now; `release()` (safe to call again) lets them go on. */
function holdWorkers(workers: Child[]) {
  for (const w of workers) process.kill(w.pid, "SIGSTOP");
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      for (const w of workers) process.kill(w.pid, "SIGCONT");
    },
  };
}

/** Polls a queue's ready count every 200 ms; `stop()` returns the largest seen. */
async function watchBacklog(model: ChannelModel, queue: string) {
  const channel = await model.createChannel();
  channel.on("error", () => {
    // A failed poll also rejects its checkQueue, which is handled below.
  });
  let peak = 0;
  let latest = 0;
  let failure: Error | undefined;
  let polling = Promise.resolve();
  const poll = () => {
    polling = channel
      .checkQueue(queue)
      .then((ok) => {
        latest = ok.messageCount;
        peak = Math.max(peak, latest);
      })
      .catch((err: Error) => void (failure ??= err));
  };
  const timer = setInterval(poll, 200);
  return {
    /** Resolves once two polls in a row saw the same count, or after 30 s. */
    async settled(): Promise<void> {
      const deadline = performance.now() + 30_000;
      let seen = -1;
      while (latest !== seen && performance.now() < deadline) {
        seen = latest;
        await Bun.sleep(450);
      }
    },
    async stop(): Promise<number> {
      clearInterval(timer);
      await polling;
      if (failure) throw new Error(`could not watch ${queue}: ${failure.message}`);
      await channel.close();
      return peak;
    },
  };
}

function readReport(file: string): LoadTestReport | undefined {
  let report: LoadTestReport;
  try {
    report = JSON.parse(readFileSync(file, "utf8")) as LoadTestReport;
  } catch {
    // No file, or not JSON: the caller reports the process's own output instead.
    return undefined;
  }
  const complete =
    report.version === 1 &&
    typeof report.throughput_per_second === "number" &&
    typeof report.tasks === "object" &&
    typeof report.latency_ms === "object";
  return complete ? report : undefined;
}

/** Tasks that did not succeed exactly once: failed, lost, duplicated, or never reported. */
export function unsound(report: LoadTestReport, tasks: number): number {
  const t = report.tasks;
  return t.failed + t.lost + t.duplicates + Math.max(0, tasks - t.succeeded - t.failed - t.lost);
}
