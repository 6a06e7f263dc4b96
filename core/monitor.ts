/**
 * A live view of the fleet from Celery's event stream: workers joining and leaving, each
 * task's progress with its runtime, and per-queue counts and rates. Works with dtest and
 * Celery workers alike; a Celery task's queue is found from the config's routing.
 */
import { connectBroker, type BrokerUrl } from "./broker.ts";
import type { DtestConfig } from "./config.ts";
import { HEARTBEAT_SECONDS, subscribeEvents, type CeleryEvent } from "./events.ts";
import { startupFinished } from "./engine.ts";
import type { Logger } from "./log.ts";
import { shortTaskName } from "./protocol.ts";

/** Task names remembered for events that carry only a uuid; the oldest go first. */
const MAX_TRACKED_TASKS = 100_000;
const RATE_WINDOW_SECONDS = 10;

interface QueueCounts {
  received: number;
  started: number;
  succeeded: number;
  failed: number;
  retried: number;
  runtimeSum: number;
  /** Finish times (ms) in the rate window. */
  recent: number[];
}

interface WorkerState {
  hostname: string;
  queues: string[];
  lastSeen: number;
  freq: number;
  online: boolean;
}

export interface MonitorView {
  /** An event enriched with `queue` and `name` where they can be found. */
  event(event: CeleryEvent): void;
  line(text: string): void;
}

export class MonitorState {
  readonly workers = new Map<string, WorkerState>();
  readonly queues = new Map<string, QueueCounts>();
  private readonly tasks = new Map<string, { name: string; queue: string }>();

  constructor(private readonly routing: Record<string, string>) {}

  private counts(queue: string): QueueCounts {
    let counts = this.queues.get(queue);
    if (!counts) {
      counts = {
        received: 0,
        started: 0,
        succeeded: 0,
        failed: 0,
        retried: 0,
        runtimeSum: 0,
        recent: [],
      };
      this.queues.set(queue, counts);
    }
    return counts;
  }

  private queueOf(event: CeleryEvent, name: string | undefined): string {
    if (typeof event.queue === "string") return event.queue;
    const routed = name ? this.routing[shortTaskName(name)] : undefined;
    return routed ?? this.workers.get(event.hostname)?.queues[0] ?? "?";
  }

  /** Applies one event; returns it with `name` and `queue` filled in for display. */
  apply(event: CeleryEvent, now = Date.now()): CeleryEvent {
    if (event.type.startsWith("worker-")) return this.applyWorker(event, now);

    const uuid = String(event.uuid ?? "");
    const known = this.tasks.get(uuid);
    const name = typeof event.name === "string" ? event.name : known?.name;
    const queue = known?.queue ?? this.queueOf(event, name);
    if (event.type === "task-received" && name) this.remember(uuid, name, queue);

    const counts = this.counts(queue);
    if (event.type === "task-received") counts.received++;
    if (event.type === "task-started") counts.started++;
    if (event.type === "task-retried") counts.retried++;
    if (event.type === "task-succeeded" || event.type === "task-failed") {
      if (event.type === "task-succeeded") counts.succeeded++;
      else counts.failed++;
      counts.runtimeSum += Number(event.runtime ?? 0);
      counts.recent.push(now);
      this.tasks.delete(uuid);
    }
    return { ...event, name: name ?? "?", queue };
  }

  private remember(uuid: string, name: string, queue: string): void {
    if (this.tasks.size >= MAX_TRACKED_TASKS) this.tasks.delete(this.tasks.keys().next().value!);
    this.tasks.set(uuid, { name, queue });
  }

  private applyWorker(event: CeleryEvent, now: number): CeleryEvent {
    const existing = this.workers.get(event.hostname);
    const queues = Array.isArray(event.queues)
      ? event.queues.map(String)
      : (existing?.queues ?? []);
    const online = event.type !== "worker-offline";
    this.workers.set(event.hostname, {
      hostname: event.hostname,
      queues,
      lastSeen: now,
      freq: Number(event.freq ?? HEARTBEAT_SECONDS),
      online,
    });
    return { ...event, queue: queues.join(",") || "?", joined: online && !existing?.online };
  }

  /** Workers whose heartbeats stopped: more than two missed beats. Marks them offline. */
  lost(now = Date.now()): WorkerState[] {
    const gone = [...this.workers.values()].filter(
      (w) => w.online && now - w.lastSeen > w.freq * 2500,
    );
    for (const w of gone) w.online = false;
    return gone;
  }

  /** One summary line per queue: workers, counts, rate over the last 10 s, mean runtime. */
  summary(now = Date.now()): string[] {
    return [...this.queues.entries()].sort().map(([queue, c]) => {
      c.recent = c.recent.filter((t) => now - t <= RATE_WINDOW_SECONDS * 1000);
      const workers = [...this.workers.values()].filter(
        (w) => w.online && w.queues.includes(queue),
      ).length;
      const done = c.succeeded + c.failed;
      const mean = done ? (c.runtimeSum / done).toFixed(3) : "-";
      const rate = (c.recent.length / RATE_WINDOW_SECONDS).toFixed(1);
      return `${queue}: workers ${workers}, received ${c.received}, succeeded ${c.succeeded}, failed ${c.failed}, retried ${c.retried}, ${rate}/s, mean runtime ${mean}s`;
    });
  }
}

function clock(event: CeleryEvent): string {
  return new Date(event.timestamp * 1000).toISOString().slice(11, 23);
}

/** One human line per event worth showing; heartbeats are summarised, not printed. */
export function describeEvent(e: CeleryEvent): string | undefined {
  const task = `${e.name}[${e.uuid}]`;
  switch (e.type) {
    case "worker-online":
      return `${clock(e)} worker joined  ${e.hostname} (${e.queue}, ${e.sw_ident ?? "?"})`;
    case "worker-heartbeat":
      return e.joined ? `${clock(e)} worker seen    ${e.hostname} (${e.queue})` : undefined;
    case "worker-offline":
      return `${clock(e)} worker left    ${e.hostname}`;
    case "task-received":
      return `${clock(e)} received  ${task} on ${e.hostname} (${e.queue})`;
    case "task-started":
      return `${clock(e)} started   ${task} on ${e.hostname}`;
    case "task-succeeded":
      return `${clock(e)} succeeded ${task} in ${Number(e.runtime ?? 0).toFixed(3)}s on ${e.hostname}`;
    case "task-failed":
      return `${clock(e)} failed    ${task} ${e.exception} on ${e.hostname}`;
    case "task-retried":
      return `${clock(e)} retried   ${task} ${e.exception} on ${e.hostname}`;
    default:
      return undefined;
  }
}

export interface MonitorOptions {
  config: DtestConfig;
  broker: BrokerUrl;
  logger: Logger;
  signal: AbortSignal;
  json: boolean;
  /** Seconds between summary lines (text mode). */
  interval: number;
  print: (line: string) => void;
}

/** Follows the event stream until `signal` aborts. */
export async function monitor(options: MonitorOptions): Promise<void> {
  const state = new MonitorState(options.config.routing);
  const { print } = options;
  const onEvents = (events: CeleryEvent[]) => {
    for (const raw of events) {
      const event = state.apply(raw);
      if (options.json) print(JSON.stringify(event));
      else {
        const text = describeEvent(event);
        if (text) print(text);
      }
    }
  };

  await using broker = await connectBroker(options.broker, {
    logger: options.logger,
    name: "dtest monitor",
    signal: options.signal,
    setup: async (model) => {
      await subscribeEvents(await model.createChannel(), onEvents);
    },
  });
  startupFinished();
  options.logger.withTag("monitor").info("following the celeryev stream; Ctrl-C to stop");

  const timer = setInterval(() => {
    for (const w of state.lost()) {
      const event = {
        type: "worker-lost",
        hostname: w.hostname,
        timestamp: Date.now() / 1000,
        queue: w.queues.join(","),
      };
      print(
        options.json
          ? JSON.stringify(event)
          : `${clock(event)} worker lost    ${w.hostname} (no heartbeat)`,
      );
    }
    if (!options.json) for (const line of state.summary()) print(`-- ${line}`);
  }, options.interval * 1000);

  await new Promise<void>((resolve) => {
    if (options.signal.aborted) return resolve();
    options.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  clearInterval(timer);
}
