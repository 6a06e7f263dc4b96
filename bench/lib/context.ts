/** What every part of the bench receives: the broker, the run's leftovers, sizes and a log. */
import type { ChannelModel } from "amqplib";

import type { Leftovers } from "./broker.ts";
import type { Workdir } from "./dtest.ts";

export interface Settings {
  quick: boolean;
  /** Round trips per throughput round (floor and dtest alike). */
  n: number;
  /** Worker processes for the floor and the no-op run. */
  workers: number;
  /** Floor prefetch, and dtest's --concurrency (which is its prefetch). */
  prefetch: number;
  /** Throughput rounds of each kind, interleaved; the median is reported. */
  rounds: number;
  dispatchRuns: number;
  helpRuns: number;
  startRuns: number;
  latencyTasks: number;
  latencyRate: number;
  inflightTasks: number;
  /** Hello tasks per worker in each scaling step. */
  scalingTasksPerWorker: number;
}

export interface Context {
  url: string;
  model: ChannelModel;
  leftovers: Leftovers;
  workdir: Workdir;
  settings: Settings;
  /** Progress on stderr, so stdout carries only the report. */
  log(line: string): void;
}
