/**
 * The floor: a minimal amqplib echo over the same broker with dtest's guarantees (durable
 * queue, persistent messages both ways, confirms on both sides, ack after the reply is
 * confirmed). Nothing built on this broker can round-trip faster.
 */
import { join } from "node:path";

import type { ChannelModel } from "amqplib";

import { runName, type Leftovers } from "../lib/broker.ts";
import { runTimed, spawnChild, type Child } from "../lib/proc.ts";
import type { LatencySummary } from "../lib/stats.ts";

/** A queue left by a bench that died removes itself after this long unused (ms). */
const ORPHAN_EXPIRES_MS = 10 * 60 * 1000;

const HERE = import.meta.dir;

export interface FloorRound {
  n: number;
  seconds: number;
  rate: number;
  publish_confirmed_ms: number;
  latency_ms: LatencySummary;
  /** CPU time of the client process, ms. */
  client_cpu_ms: number;
}

export interface FloorSession {
  workers: Child[];
  /** One round of `n` round trips (paced at `rate`/s if given), from a fresh client process. */
  round(n: number, rate?: number): Promise<FloorRound>;
  stop(): Promise<void>;
}

export interface FloorSetup {
  url: string;
  model: ChannelModel;
  leftovers: Leftovers;
  workers: number;
  prefetch: number;
  /** Distinguishes the queues of several sessions in one run. */
  label: string;
}

/** Declares the queues and starts the echo workers; resolves once every worker consumes. */
export async function startFloor(setup: FloorSetup): Promise<FloorSession> {
  const queue = runName(`floor_${setup.label}`);
  const replyQueue = `${queue}_reply`;
  setup.leftovers.queue(queue, replyQueue);

  const ch = await setup.model.createChannel();
  const args = { "x-expires": ORPHAN_EXPIRES_MS };
  await ch.assertQueue(queue, { durable: true, arguments: args });
  await ch.assertQueue(replyQueue, { durable: true, arguments: args });
  await ch.close();

  const workers: Child[] = [];
  for (let i = 0; i < setup.workers; i++) {
    const argv = [
      process.execPath,
      join(HERE, "../floor/echo-worker.ts"),
      "--url",
      setup.url,
      "--queue",
      queue,
      "--prefetch",
      String(setup.prefetch),
    ];
    workers.push(spawnChild(argv));
  }
  try {
    await Promise.all(workers.map((w) => w.waitForStderr(`consuming ${queue}`)));
  } catch (err) {
    await Promise.all(workers.map((w) => w.stop()));
    throw err;
  }

  return {
    workers,
    round: (n, rate) => clientRound({ url: setup.url, queue, replyQueue, n, rate }),
    stop: async () => {
      await Promise.all(workers.map((w) => w.stop()));
    },
  };
}

interface ClientRun {
  url: string;
  queue: string;
  replyQueue: string;
  n: number;
  rate?: number;
}

async function clientRound(run: ClientRun): Promise<FloorRound> {
  const argv = [
    process.execPath,
    join(HERE, "../floor/client.ts"),
    "--url",
    run.url,
    "--queue",
    run.queue,
    "--reply-queue",
    run.replyQueue,
    "--n",
    String(run.n),
  ];
  if (run.rate !== undefined) argv.push("--rate", String(run.rate));
  const { code, stdout, stderr, cpuMs } = await runTimed(argv);
  if (code !== 0) throw new Error(`floor client exited with ${code}:\n${stderr.slice(-2000)}`);
  return { ...(JSON.parse(stdout) as FloorRound), client_cpu_ms: cpuMs ?? Number.NaN };
}
