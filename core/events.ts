/**
 * Celery's event stream on the `celeryev` topic exchange: workers announce themselves
 * (online, heartbeat every 2 s, offline) and report each task (received, started,
 * succeeded, failed, retried). Task events go out in batches under `task.multi`, as a
 * prefork Celery worker sends them, so `celery events` and `dtest monitor` read the same
 * stream.
 *
 * Task events cost the worker and the broker a share of every task, and nobody reads them
 * unless a monitor is subscribed. So worker events double as a probe: they are published
 * with `mandatory`, and the broker returns them when no queue is bound to the exchange. Task
 * events are sent while the latest probe found a listener; one that subscribes sees them
 * from the next heartbeat on (at most 2 s), as Celery's `enable_events` would give it.
 */
import { loadavg } from "node:os";

import type { Channel, ConfirmChannel, ConsumeMessage } from "amqplib";

import type { Logger } from "./log.ts";
import { CONTENT_ENCODING, CONTENT_TYPE } from "./protocol.ts";

export const EVENT_EXCHANGE = "celeryev";
export const HEARTBEAT_SECONDS = 2;

/** Task events wait at most this long (ms) to be sent in one batch. */
const FLUSH_MS = 100;
const MAX_BATCH = 200;

export type CeleryEvent = Record<string, unknown> & {
  type: string;
  hostname: string;
  timestamp: number;
};

export interface WorkerStats {
  active: number;
  /** Tasks received with a future eta, waiting unacknowledged. */
  held: number;
  processed: number;
  queues: string[];
}

export async function declareEventExchange(channel: Channel): Promise<void> {
  await channel.assertExchange(EVENT_EXCHANGE, "topic", { durable: true });
}

/** Celery's `utcoffset`: hours west of UTC. */
function utcOffset(): number {
  return Math.round(new Date().getTimezoneOffset() / 60);
}

/** Publishes one worker's events; `channel()` returns the current channel (or none while reconnecting). */
export class EventPublisher {
  private clock = 0;
  private batch: CeleryEvent[] = [];
  private flushTimer?: Timer;
  private heartbeat?: Timer;
  /** Whether the latest worker event reached a queue: someone reads the stream. */
  private listened = false;
  /** The broker returned the probe in flight (a return comes before its confirm). */
  private probeReturned = false;
  private readonly watched = new WeakSet<ConfirmChannel>();

  constructor(
    private readonly hostname: string,
    private readonly channel: () => ConfirmChannel | undefined,
    private readonly stats: () => WorkerStats,
    private readonly logger: Logger,
  ) {}

  /** True while a listener is subscribed, as far as the latest worker event could tell. */
  get hasListeners(): boolean {
    return this.listened;
  }

  private event(type: string, fields: Record<string, unknown>): CeleryEvent {
    return {
      hostname: this.hostname,
      utcoffset: utcOffset(),
      pid: process.pid,
      clock: ++this.clock,
      ...fields,
      timestamp: Date.now() / 1000,
      type,
    };
  }

  private send(routingKey: string, body: unknown, probe = false): void {
    const channel = this.channel();
    if (!channel) return;
    if (probe) this.watchReturns(channel);
    const options = {
      contentType: CONTENT_TYPE,
      contentEncoding: CONTENT_ENCODING,
      deliveryMode: 1,
      mandatory: probe,
      headers: { hostname: this.hostname },
    };
    const onConfirm = (err: unknown) => {
      if (!err) this.listened = !this.probeReturned;
      this.probeReturned = false;
    };
    try {
      const content = Buffer.from(JSON.stringify(body));
      channel.publish(EVENT_EXCHANGE, routingKey, content, options, probe ? onConfirm : undefined);
    } catch (err) {
      // Events are best effort, as in Celery: a lost event never holds up a task.
      this.logger.debug(`event not sent: ${(err as Error).message}`);
    }
  }

  private watchReturns(channel: ConfirmChannel): void {
    if (this.watched.has(channel)) return;
    this.watched.add(channel);
    // Only probes are mandatory, so whatever comes back is a probe nobody received.
    channel.on("return", () => (this.probeReturned = true));
  }

  /** worker-online, worker-heartbeat or worker-offline, sent at once; each is a probe. */
  worker(type: "worker-online" | "worker-heartbeat" | "worker-offline"): void {
    const stats = this.stats();
    const event = this.event(type, {
      freq: HEARTBEAT_SECONDS,
      active: stats.active,
      held: stats.held,
      processed: stats.processed,
      queues: stats.queues,
      loadavg: loadavg().map((n) => Math.round(n * 100) / 100),
      sw_ident: "dtest",
      sw_ver: "0.1.0",
      sw_sys: process.platform === "linux" ? "Linux" : process.platform,
    });
    this.send(type.replace("-", "."), event, true);
  }

  /** A task event, batched under `task.multi`; dropped while nobody listens. */
  task(type: string, fields: Record<string, unknown>): void {
    if (!this.listened) return;
    this.batch.push(this.event(type, fields));
    if (this.batch.length >= MAX_BATCH) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), FLUSH_MS);
  }

  flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.batch.length === 0) return;

    const batch = this.batch;
    this.batch = [];
    this.send("task.multi", batch);
  }

  start(): void {
    this.worker("worker-online");
    this.heartbeat = setInterval(() => this.worker("worker-heartbeat"), HEARTBEAT_SECONDS * 1000);
  }

  /** Sends what is batched and worker-offline, then closes the channel so they are written. */
  async stop(): Promise<void> {
    clearInterval(this.heartbeat);
    this.flush();
    this.worker("worker-offline");

    // Closing the channel waits for the broker's close-ok, which comes after every frame
    // published before it; closing only the connection could cut those frames off.
    try {
      await this.channel()?.close();
    } catch (err) {
      this.logger.debug(`event channel close: ${(err as Error).message}`);
    }
  }
}

/** Reads one event message in either form: a single event or a `task.multi` array. */
export function decodeEvents(message: Pick<ConsumeMessage, "content">): CeleryEvent[] {
  let body: unknown;
  try {
    body = JSON.parse(message.content.toString("utf8"));
  } catch {
    // Not an event we can read (another publisher on the exchange); skip it.
    return [];
  }

  const items = Array.isArray(body) ? body : [body];
  return items.filter(
    (e): e is CeleryEvent =>
      !!e && typeof e === "object" && typeof (e as CeleryEvent).type === "string",
  );
}

/**
 * Subscribes to every event on the exchange through a queue of its own, declared as Celery's
 * event receivers declare theirs (auto-delete, 5 s message TTL, 60 s expiry).
 */
export async function subscribeEvents(
  channel: Channel,
  onEvents: (events: CeleryEvent[]) => void,
): Promise<string> {
  await declareEventExchange(channel);
  const queue = `celeryev.${crypto.randomUUID()}`;
  await channel.assertQueue(queue, {
    durable: false,
    autoDelete: true,
    arguments: { "x-message-ttl": 5000, "x-expires": 60000 },
  });
  await channel.bindQueue(queue, EVENT_EXCHANGE, "#");
  await channel.consume(queue, (msg) => msg && onEvents(decodeEvents(msg)), { noAck: true });
  return queue;
}
