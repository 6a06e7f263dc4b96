/**
 * The fleet of workers as the broker and the workers themselves report it: consumers and
 * messages per queue, live workers from their heartbeats, containers per compose service,
 * and scaling a service until the broker sees the new number of consumers.
 */
import type { RecoveringChannelModel } from "amqplib";

import { deadLetterQueue, inspectQueues } from "./broker.ts";
import {
  mustCompose,
  serviceContainers,
  serviceQueues,
  type Compose,
  type ServiceContainers,
} from "./compose.ts";
import { BrokerError, UsageError } from "./errors.ts";
import { HEARTBEAT_SECONDS, subscribeEvents, type CeleryEvent } from "./events.ts";
import type { Logger } from "./log.ts";
import { broadcast } from "./pidbox.ts";

export interface WorkerInfo {
  hostname: string;
  queues: string[];
  active: number;
  held: number;
  processed: number;
  software: string;
}

export interface QueueStatus {
  queue: string;
  consumers: number;
  ready: number;
  /** Tasks the queue's workers hold (running, or waiting for an eta), from their heartbeats. */
  unacked: number;
  deadLetters: number;
}

export interface FleetStatus {
  queues: QueueStatus[];
  workers: WorkerInfo[];
  containers: ServiceContainers[] | null;
  /** Why containers are not shown, when a compose tool exists but could not answer. */
  containersError?: string;
}

/** Listens to the event stream for `ms` and returns the workers that announced themselves. */
export async function collectWorkers(
  model: RecoveringChannelModel,
  ms: number,
): Promise<WorkerInfo[]> {
  const channel = await model.createChannel();
  const seen = new Map<string, WorkerInfo>();
  const onEvents = (events: CeleryEvent[]) => {
    for (const e of events) {
      if (e.type === "worker-offline") seen.delete(e.hostname);
      if (e.type !== "worker-online" && e.type !== "worker-heartbeat") continue;
      seen.set(e.hostname, {
        hostname: e.hostname,
        queues: Array.isArray(e.queues) ? e.queues.map(String) : [],
        active: Number(e.active ?? 0),
        held: Number(e.held ?? 0),
        processed: Number(e.processed ?? 0),
        software: `${e.sw_ident ?? "?"} ${e.sw_ver ?? ""}`.trim(),
      });
    }
  };

  await subscribeEvents(channel, onEvents);
  // Remote control finds workers that send no heartbeats and the queues of Celery workers,
  // whose heartbeats do not name them.
  const control = await model.createChannel();
  const [queuesOf] = await Promise.all([broadcast(control, "active_queues", ms), Bun.sleep(ms)]);
  await Promise.all([channel.close(), control.close()]);

  for (const [hostname, value] of Object.entries(queuesOf)) {
    const queues = Array.isArray(value)
      ? value.map((q) => String((q as { name?: unknown }).name))
      : [];
    const known = seen.get(hostname);
    if (known) known.queues = known.queues.length ? known.queues : queues;
    else
      seen.set(hostname, {
        hostname,
        queues,
        active: 0,
        held: 0,
        processed: 0,
        software: "no heartbeat seen",
      });
  }
  return [...seen.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
}

/** Consumers, ready, unacked and dead-lettered messages per queue, plus workers and containers. */
export async function readStatus(
  model: RecoveringChannelModel,
  queues: string[],
  compose: Compose | null,
  listenMs = (HEARTBEAT_SECONDS + 0.3) * 1000,
): Promise<FleetStatus> {
  const [states, dead, everyone] = await Promise.all([
    inspectQueues(model, queues),
    inspectQueues(model, queues.map(deadLetterQueue)),
    collectWorkers(model, listenMs),
  ]);
  // The event stream carries every worker on the broker; show those of this config's queues.
  const workers = everyone.filter(
    (w) => w.queues.length === 0 || w.queues.some((q) => queues.includes(q)),
  );

  const status = states.map((s, i) => ({
    queue: s.queue,
    consumers: s.consumers,
    ready: s.messages,
    unacked: workers
      .filter((w) => w.queues.includes(s.queue))
      .reduce((sum, w) => sum + w.active + w.held, 0),
    deadLetters: dead[i]!.messages,
  }));

  if (!compose) return { queues: status, workers, containers: null };
  try {
    return {
      queues: status,
      workers,
      containers: await serviceContainers(compose, Object.keys(serviceQueues(compose.files))),
    };
  } catch (err) {
    // The broker's view is still worth printing when the container engine is down.
    return {
      queues: status,
      workers,
      containers: null,
      containersError: (err as Error).message.split("\n")[0],
    };
  }
}

export function renderStatus(status: FleetStatus): string[] {
  const lines = ["QUEUE                 WORKERS  READY  UNACKED  DEAD"];
  for (const q of status.queues) {
    lines.push(
      `${q.queue.padEnd(22)}${String(q.consumers).padStart(7)}${String(q.ready).padStart(7)}${String(q.unacked).padStart(9)}${String(q.deadLetters).padStart(6)}`,
    );
  }

  lines.push(
    "",
    status.workers.length ? "WORKERS (from heartbeats)" : "WORKERS: none sent a heartbeat",
  );
  for (const w of status.workers) {
    lines.push(
      `  ${w.hostname}  queues ${w.queues.join(",") || "?"}  active ${w.active}  processed ${w.processed}  (${w.software})`,
    );
  }

  if (status.containersError) lines.push("", `CONTAINERS: not shown (${status.containersError})`);
  if (status.containers) {
    lines.push("", "CONTAINERS");
    for (const c of status.containers)
      lines.push(
        `  ${c.service}: ${c.running} running${c.names.length ? ` (${c.names.join(", ")})` : ""}`,
      );
  }
  return lines;
}

export interface ScaleOptions {
  model: RecoveringChannelModel;
  compose: Compose;
  /** Service name → replica count. */
  targets: Record<string, number>;
  logger: Logger;
  /** Seconds to wait for the broker to show the new consumer counts. */
  wait: number;
  signal: AbortSignal;
}

/**
 * Scales compose services, then waits until each queue's consumer count equals the consumers
 * that are not this service's containers plus the new replica count.
 */
export async function scaleServices(options: ScaleOptions): Promise<QueueStatus[]> {
  const { model, compose, targets, logger } = options;
  const queues = serviceQueues(compose.files);
  const unknown = Object.keys(targets).filter((s) => !(s in queues));
  if (unknown.length > 0) {
    throw new UsageError(
      `no worker service named ${unknown.join(", ")} in ${compose.files.join(", ")}`,
      `use one of: ${Object.keys(queues).join(", ")}`,
    );
  }

  const services = Object.keys(targets);
  const before = await serviceContainers(compose, services);
  const states = await inspectQueues(
    model,
    services.map((s) => queues[s]!),
  );
  const expected = new Map<string, number>();
  services.forEach((service, i) => {
    const queue = queues[service]!;
    const others = Math.max(0, states[i]!.consumers - before[i]!.running);
    expected.set(queue, (expected.get(queue) ?? others) + targets[service]!);
  });

  const scaleArgs = services.flatMap((s) => ["--scale", `${s}=${targets[s]}`]);
  logger.info(`scaling ${services.map((s) => `${s}=${targets[s]}`).join(", ")}`);
  await mustCompose(compose, ["up", "-d", "--no-recreate", ...scaleArgs, ...services]);

  return waitForConsumers(model, expected, options);
}

async function waitForConsumers(
  model: RecoveringChannelModel,
  expected: Map<string, number>,
  options: Pick<ScaleOptions, "wait" | "signal" | "logger">,
): Promise<QueueStatus[]> {
  const deadline = Date.now() + options.wait * 1000;
  const queues = [...expected.keys()];

  while (true) {
    const states = await inspectQueues(model, queues);
    const done = states.every((s) => s.consumers === expected.get(s.queue));
    if (done) {
      options.logger.success(
        states.map((s) => `${s.queue}: ${s.consumers} consumer(s)`).join(", "),
      );
      return states.map((s) => ({
        queue: s.queue,
        consumers: s.consumers,
        ready: s.messages,
        unacked: 0,
        deadLetters: 0,
      }));
    }
    if (Date.now() > deadline) {
      const seen = states
        .map((s) => `${s.queue} has ${s.consumers}, expected ${expected.get(s.queue)}`)
        .join("; ");
      throw new BrokerError(
        `the broker did not show the new consumer counts within ${options.wait} s: ${seen}`,
        {
          hint: "check the containers' logs (make logs) for workers that cannot reach the broker",
        },
      );
    }
    options.signal.throwIfAborted();
    await Bun.sleep(200);
  }
}
