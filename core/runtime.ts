/**
 * The worker: consumes one queue, runs only the tasks routed to it, replies in Celery's
 * `rpc://` format, retries the way Celery does and acknowledges a message only after
 * everything it caused (reply, retry, dead letter) is confirmed by the broker.
 */
import { hostname } from "node:os";

import type { ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";

import {
  connectBroker,
  deadLetterQueue,
  declareDeadLetterQueue,
  declareTaskQueue,
  type Broker,
  type BrokerUrl,
} from "./broker.ts";
import { abandonedSteps, followUps } from "./canvas.ts";
import { findRoute, type DtestConfig, type RetryConfig, type TaskDef } from "./config.ts";
import { startupFinished } from "./engine.ts";
import { describeError } from "./errors.ts";
import { declareEventExchange, EventPublisher } from "./events.ts";
import { serveControl } from "./pidbox.ts";
import { LOG_LEVELS, type Logger } from "./log.ts";
import {
  decodeTask,
  encodeResult,
  encodeTask,
  exceptionInfo,
  ProtocolError,
  REPLY_HEADERS,
  reprArgs,
  WANT_RUN_INFO,
  retryOf,
  shortTaskName,
  tagIntegers,
  type Encoded,
  type ExceptionInfo,
  type ResultMessage,
  type TaskMessage,
} from "./protocol.ts";
import { runTask, type TaskOutcome } from "./tasks.ts";

/** Messages larger than this are dead-lettered unread unless the worker is told otherwise. */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

/** An eta further away than this is refused rather than held in memory for days. */
export const MAX_ETA_HOLD_MS = 24 * 60 * 60 * 1000;

export interface WorkerOptions {
  config: DtestConfig;
  queue: string;
  broker: BrokerUrl;
  concurrency: number;
  name: string;
  logger: Logger;
  /** Aborting starts a graceful stop: no new tasks, in-flight ones finish. */
  signal: AbortSignal;
  /** Aborting ends the grace period at once: unfinished tasks are requeued. */
  forceSignal?: AbortSignal;
  /** How long in-flight tasks may take to finish after a stop, ms. */
  graceMs?: number;
  maxMessageBytes?: number;
  connectTimeout?: number;
  /** Send Celery task events (worker events are always sent). Default true. */
  taskEvents?: boolean;
}

export interface WorkerSummary {
  succeeded: number;
  failed: number;
  retried: number;
  deadLettered: number;
  requeued: number;
}

/** The default worker name: `worker-a@host` for queue_a, `worker-<queue>@host` otherwise. */
export function defaultWorkerName(queue: string): string {
  const match = /^queue_(.+)$/.exec(queue);
  return `worker-${match ? match[1] : queue}@${hostname()}`;
}

/**
 * Celery's retry countdown: retry_delay·2^n capped at retry_backoff_max with backoff, and
 * a uniformly random share of that (full jitter) when retry_jitter is on. Seconds.
 */
export function retryDelay(retry: RetryConfig, retries: number, random = Math.random): number {
  const base = retry.retryBackoff
    ? Math.min(retry.retryBackoffMax, retry.retryDelay * 2 ** retries)
    : retry.retryDelay;
  return retry.retryJitter ? random() * base : base;
}

function publishConfirmed(channel: ConfirmChannel, queue: string, encoded: Encoded): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.publish("", queue, encoded.content, encoded.options, (err) =>
      err ? reject(err) : resolve(),
    );
  });
}

type ChannelModelLike = Pick<ChannelModel, "createConfirmChannel" | "createChannel" | "once">;

const watchedModels = new WeakSet<object>();
const closedModels = new WeakSet<object>();

interface Delivery {
  message: ConsumeMessage;
  channel: ConfirmChannel;
}

function pyRepr(info: { exc_type: string; exc_message: unknown[] }): string {
  return `${info.exc_type}(${info.exc_message.map((m) => JSON.stringify(m)).join(", ")})`;
}

class Worker {
  private channel?: ConfirmChannel;
  private eventChannel?: ConfirmChannel;
  private readonly events: EventPublisher;
  private processed = 0;
  private consumerTag?: string;
  private broker?: Broker;
  private stopping = false;
  private readonly running = new Map<string, AbortController>();
  /** Deliveries between receipt and settlement (ack, requeue or park), held ones aside. */
  private settling = 0;
  private readonly timing = new Map<string, { startedAt: string; finishedAt: string }>();
  private readonly held = new Map<Delivery, Timer>();
  private readonly log: Logger;
  private readonly summary: WorkerSummary = {
    succeeded: 0,
    failed: 0,
    retried: 0,
    deadLettered: 0,
    requeued: 0,
  };
  private idle?: () => void;

  constructor(private readonly options: WorkerOptions) {
    this.log = options.logger.withTag(options.name);
    this.events = new EventPublisher(
      options.name,
      () => this.eventChannel,
      () => ({
        active: this.running.size,
        held: this.held.size,
        processed: this.processed,
        queues: [options.queue],
      }),
      this.log,
    );
  }

  private get debugging(): boolean {
    return this.log.level >= LOG_LEVELS.debug!;
  }

  /** Whether task events are worth building: enabled, and someone reads the stream. */
  private get sendsTaskEvents(): boolean {
    return this.options.taskEvents !== false && this.events.hasListeners;
  }

  /** `fields` is only called when the event will be sent. */
  private taskEvent(type: string, fields: () => Record<string, unknown>): void {
    if (this.sendsTaskEvents) this.events.task(type, fields());
  }

  async run(): Promise<WorkerSummary> {
    const { options } = this;
    this.broker = await connectBroker(options.broker, {
      logger: options.logger,
      name: `dtest worker ${options.name}`,
      setup: (model) => this.openChannel(model),
      connectTimeout: options.connectTimeout,
      signal: options.signal,
    });

    this.events.start();
    startupFinished();
    this.log.success(`consuming ${options.queue} (concurrency ${options.concurrency})`);
    await new Promise<void>((resolve) => {
      if (options.signal.aborted) return resolve();
      options.signal.addEventListener("abort", () => resolve(), { once: true });
    });

    await this.shutdown();
    return this.summary;
  }

  /** Opens the channel, declares what Celery would and starts consuming; runs on every reconnect. */
  private async openChannel(model: ChannelModelLike): Promise<void> {
    const { queue, concurrency } = this.options;
    if (!watchedModels.has(model)) {
      watchedModels.add(model);
      model.once("close", () => closedModels.add(model));
    }

    const events = await model.createConfirmChannel();
    events.on("error", (err: Error) => this.log.debug(`event channel error: ${err.message}`));
    await declareEventExchange(events);
    this.eventChannel = events;

    const control = await model.createChannel();
    control.on("error", (err: Error) => this.log.debug(`control channel error: ${err.message}`));
    await serveControl(
      control,
      {
        hostname: this.options.name,
        queues: [queue],
        stats: () => ({
          pid: process.pid,
          total: { ...this.summary },
          pool: { "max-concurrency": concurrency },
          sw_ident: "dtest",
        }),
      },
      (err) => this.log.warn(`ignored a malformed control message: ${err.message}`),
    );

    const channel = await model.createConfirmChannel();
    channel.on("error", (err: Error) => this.log.warn(`channel error: ${err.message}`));
    channel.on("handler-error", (err: Error, event: string) =>
      this.log.error(`a channel "${event}" listener threw: ${describeError(err)}`),
    );
    channel.on("close", () => this.onChannelClosed(channel, model));

    // Channel-wide (global) prefetch so it can be raised while eta tasks are held; a
    // per-consumer limit set after basic.consume would not apply to the running consumer.
    await channel.prefetch(concurrency + this.held.size, true);
    await declareTaskQueue(channel, queue);
    await declareDeadLetterQueue(channel, queue);

    const { consumerTag } = await channel.consume(queue, (msg) => {
      if (msg) void this.onMessage({ message: msg, channel });
      else this.log.warn(`RabbitMQ cancelled the consumer of ${queue} (queue deleted?)`);
    });
    this.channel = channel;
    this.consumerTag = consumerTag;
  }

  /**
   * A channel closed by a channel-level error leaves the connection up, and amqplib's
   * recovery only acts on connection loss, so the worker reopens the channel itself. When
   * the whole connection went, recovery's setup reopens it instead.
   */
  private onChannelClosed(channel: ConfirmChannel, model: ChannelModelLike): void {
    if (this.channel !== channel) return;
    this.channel = undefined;
    for (const [delivery, timer] of this.held) {
      if (delivery.channel !== channel) continue;
      clearTimeout(timer);
      this.held.delete(delivery);
    }
    if (this.stopping) return;

    // The connection's own close event follows its channels' close events; wait for it.
    setTimeout(() => {
      if (this.stopping || this.channel || closedModels.has(model)) return;
      this.log.warn("channel closed by the broker; reopening it");
      this.openChannel(model).catch((err: Error) =>
        this.log.warn(`could not reopen the channel: ${err.message}`),
      );
    }, 100);
  }

  private async onMessage(delivery: Delivery): Promise<void> {
    this.settling++;
    try {
      await this.handle(delivery);
    } catch (err) {
      // The channel went away mid-task (reconnect); the broker requeues the unacked message.
      this.log.warn(`message not settled: ${describeError(err)}; it will be redelivered`);
    } finally {
      this.settled();
    }
  }

  private settled(): void {
    this.settling--;
    if (this.settling === 0) this.idle?.();
  }

  private async handle(delivery: Delivery): Promise<void> {
    const { message } = delivery;
    const limit = this.options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    if (message.content.length > limit) {
      const reason = `message of ${message.content.length} bytes exceeds the ${limit}-byte limit`;
      return this.reject(
        delivery,
        new ProtocolError(reason, headerId(message), message.properties.replyTo),
      );
    }

    let task: TaskMessage;
    try {
      task = decodeTask(message);
    } catch (err) {
      if (err instanceof ProtocolError) return this.reject(delivery, err);
      throw err;
    }

    if (task.embed.chord) {
      // TODO: run chords (a group whose results feed one callback) — it needs a result store
      // the group's workers share, which the rpc:// reply model does not give dtest.
      const error = new ProtocolError(
        "Celery chords are not supported by dtest workers; send the group and its callback as separate tasks",
        task.id,
        task.replyTo,
      );
      return this.reject(delivery, error, task);
    }

    const refusal = this.refuse(task);
    if (refusal) {
      this.taskEvent("task-failed", () => ({
        uuid: task.id,
        exception: pyRepr(refusal.reply),
        traceback: null,
      }));
      return this.reject(delivery, refusal.error, task, refusal.reply);
    }

    this.taskEvent("task-received", () => ({
      uuid: task.id,
      name: task.name,
      args: reprArgs(task.args),
      kwargs: JSON.stringify(task.kwargs),
      root_id: task.rootId,
      parent_id: task.parentId,
      retries: task.retries,
      eta: task.eta?.toISOString() ?? null,
      expires: task.expires?.toISOString() ?? null,
      queue: this.options.queue,
    }));

    if (task.expires && task.expires.getTime() <= Date.now()) {
      this.log.info(`${task.name}[${task.id}] expired at ${task.expires.toISOString()}; revoked`);
      const reply = exceptionInfo("TaskRevokedError", "expired");
      await this.reply(task, { status: "REVOKED", result: reply, traceback: null });
      return this.ack(delivery);
    }

    const wait = task.eta ? task.eta.getTime() - Date.now() : 0;
    if (wait > MAX_ETA_HOLD_MS) {
      const error = new ProtocolError(
        `eta ${task.eta!.toISOString()} is more than 24 h away`,
        task.id,
        task.replyTo,
      );
      return this.reject(delivery, error, task);
    }
    if (wait > 0) return this.hold(delivery, task, wait);

    await this.execute(delivery, task);
  }

  /** Returns why this worker must not run the task, or nothing when it may. */
  private refuse(task: TaskMessage): { error: ProtocolError; reply: ExceptionInfo } | undefined {
    const name = shortTaskName(task.name);
    const home = findRoute(this.options.config, task.name)?.queue;
    if (home === undefined) {
      const error = new ProtocolError(
        `task ${task.name} is not registered on this worker`,
        task.id,
        task.replyTo,
      );
      return { error, reply: exceptionInfo("NotRegistered", task.name) };
    }
    if (home !== this.options.queue) {
      const text = `task ${name} belongs to queue ${home}, not ${this.options.queue}; start a worker with --queue ${home}`;
      return {
        error: new ProtocolError(text, task.id, task.replyTo),
        reply: exceptionInfo("WrongQueue", text, "dtest"),
      };
    }
    return undefined;
  }

  private hold(delivery: Delivery, task: TaskMessage, wait: number): void {
    this.log.debug(`${task.name}[${task.id}] held until ${task.eta!.toISOString()}`);
    const timer = setTimeout(() => {
      this.held.delete(delivery);
      this.settling++;
      void this.setPrefetch(delivery.channel);
      void this.execute(delivery, task)
        .catch((err) =>
          this.log.warn(`${task.name}[${task.id}] not settled: ${describeError(err)}`),
        )
        .finally(() => this.settled());
    }, wait);
    this.held.set(delivery, timer);
    void this.setPrefetch(delivery.channel);
  }

  private async setPrefetch(channel: ConfirmChannel): Promise<void> {
    try {
      await channel.prefetch(this.options.concurrency + this.held.size, true);
    } catch (err) {
      this.log.debug(`prefetch not updated: ${(err as Error).message}`);
    }
  }

  private async execute(delivery: Delivery, task: TaskMessage): Promise<void> {
    const def = findRoute(this.options.config, task.name)!.def!;
    const abort = new AbortController();
    this.running.set(task.id, abort);
    if (this.debugging) {
      this.log.debug({
        message: `${task.name}[${task.id}] received (retries ${task.retries})`,
        task: task.name,
        id: task.id,
      });
    }
    this.taskEvent("task-started", () => ({ uuid: task.id }));

    try {
      // Only dispatch asks who ran a task and when; load tests skip the clock reads.
      const timed = task.extraHeaders[WANT_RUN_INFO] !== undefined;
      const startedAt = timed ? new Date().toISOString() : "";
      const outcome = await runTask(def, task, abort.signal);
      if (timed) this.timing.set(task.id, { startedAt, finishedAt: new Date().toISOString() });
      await this.settle(delivery, task, def, outcome);
    } catch (err) {
      if (!abort.signal.aborted) throw err;
      this.requeue(delivery);
    } finally {
      this.timing.delete(task.id);
      this.running.delete(task.id);
    }
  }

  private async settle(
    delivery: Delivery,
    task: TaskMessage,
    def: TaskDef,
    outcome: TaskOutcome,
  ): Promise<void> {
    const seconds = outcome.value.execution_time;
    this.processed++;
    if (outcome.ok) {
      this.summary.succeeded++;
      this.taskEvent("task-succeeded", () => ({
        uuid: task.id,
        result: JSON.stringify(outcome.value.result),
        runtime: seconds,
      }));
      if (this.debugging) this.log.debug(`${task.name}[${task.id}] succeeded in ${seconds}s`);
      if (!task.ignoreResult)
        await this.reply(task, { status: "SUCCESS", result: outcome.value, traceback: null });
      await this.publishFollowUps(delivery, task, outcome.value);
      return this.ack(delivery);
    }

    const allowed = def.maxRetries ?? this.options.config.retry.maxRetries;
    const why = `${outcome.error!.exc_type}: ${outcome.error!.exc_message.join(" ")}`;
    const failure = { uuid: task.id, exception: pyRepr(outcome.error!), traceback: why };
    if (task.retries < allowed) {
      const delay = retryDelay(this.options.config.retry, task.retries);
      this.summary.retried++;
      this.taskEvent("task-retried", () => failure);
      this.log.info(
        `${task.name}[${task.id}] failed (${why}); retry ${task.retries + 1}/${allowed} in ${delay.toFixed(2)}s`,
      );
      // Publish the retry before acking the original, as Celery does: if the worker dies in
      // between, the original is redelivered and nothing is lost.
      await publishConfirmed(
        delivery.channel,
        this.options.queue,
        encodeTask(retryOf(task, delay)),
      );
      await this.reply(task, { status: "RETRY", result: outcome.error, traceback: why });
      return this.ack(delivery);
    }

    this.summary.failed++;
    this.taskEvent("task-failed", () => failure);
    this.log.warn(`${task.name}[${task.id}] failed after ${task.retries} retries: ${why}`);
    const result = { ...outcome.error, ...outcome.value };
    await this.reply(task, { status: "FAILURE", result, traceback: why });
    for (const step of abandonedSteps(task)) {
      await this.reply(
        { ...task, id: step.id, replyTo: step.replyTo },
        { status: "FAILURE", result, traceback: why },
      );
    }
    this.ack(delivery);
  }

  /** Publishes a chain's next step and link callbacks before the task is acked. */
  private async publishFollowUps(
    delivery: Delivery,
    task: TaskMessage,
    result: unknown,
  ): Promise<void> {
    for (const next of followUps(this.options.config, task, result)) {
      if (next.queue) {
        await publishConfirmed(delivery.channel, next.queue, encodeTask(next.task));
        continue;
      }
      this.log.warn(
        `${task.name}[${task.id}]: no route for the next step ${next.task.name}; failing it`,
      );
      await this.reply(next.task, {
        status: "FAILURE",
        result: exceptionInfo("NotRegistered", next.task.name),
        traceback: null,
      });
    }
  }

  private async reply(
    task: TaskMessage,
    fields: Pick<ResultMessage, "status" | "result" | "traceback">,
  ): Promise<void> {
    if (!task.replyTo || !this.channel) return;
    const encoded = encodeResult({ task_id: task.id, children: [], ...fields });
    // Who ran the task and when, for timelines; Celery clients ignore reply headers.
    const timing = this.timing.get(task.id);
    if (task.extraHeaders[WANT_RUN_INFO]) {
      encoded.options.headers = {
        [REPLY_HEADERS.worker]: this.options.name,
        ...(timing && {
          [REPLY_HEADERS.started]: timing.startedAt,
          [REPLY_HEADERS.finished]: timing.finishedAt,
        }),
      };
    }
    await publishConfirmed(this.channel, task.replyTo, encoded);
  }

  /** Answers a message the worker will not run with FAILURE, parks it with the reason, acks it. */
  private async reject(
    delivery: Delivery,
    error: ProtocolError,
    task?: TaskMessage,
    result?: unknown,
  ): Promise<void> {
    const { message, channel } = delivery;
    const id = task?.id ?? error.taskId;
    this.summary.deadLettered++;
    this.log.warn(
      `dead-lettered ${id ? `task ${id}` : "a message"} from ${this.options.queue}: ${error.message}`,
    );

    const replyTo = task?.replyTo ?? error.replyTo;
    if (id && replyTo) {
      const info = result ?? exceptionInfo("ProtocolError", error.message, "dtest");
      const reply = encodeResult({
        task_id: id,
        status: "FAILURE",
        result: info,
        traceback: error.message,
        children: [],
      });
      await publishConfirmed(channel, replyTo, reply);
    }

    await publishConfirmed(
      channel,
      deadLetterQueue(this.options.queue),
      this.deadLetter(message, error.message),
    );
    this.ack(delivery);
  }

  private deadLetter(message: ConsumeMessage, reason: string): Encoded {
    const props = message.properties;
    const original = tableSize(props.headers) < 32 * 1024 ? (props.headers ?? {}) : {};
    return {
      content: message.content,
      options: {
        contentType: props.contentType ?? "application/octet-stream",
        contentEncoding: props.contentEncoding ?? "",
        deliveryMode: 2,
        priority: props.priority ?? 0,
        correlationId: props.correlationId ?? "",
        replyTo: props.replyTo,
        headers: tagIntegers({
          ...original,
          "x-dtest-reason": reason,
          "x-dtest-queue": this.options.queue,
          "x-dtest-worker": this.options.name,
          "x-dtest-time": new Date().toISOString(),
        }) as Record<string, unknown>,
      },
    };
  }

  private ack(delivery: Delivery): void {
    // After a reconnect the delivery tag belongs to a dead channel and the broker has
    // already requeued the message; acking it on the new channel would close that channel.
    if (delivery.channel !== this.channel) return;
    delivery.channel.ack(delivery.message);
  }

  private requeue(delivery: Delivery): void {
    this.summary.requeued++;
    if (delivery.channel === this.channel) delivery.channel.nack(delivery.message, false, true);
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    const grace = this.options.graceMs ?? 30_000;
    this.log.info(`stopping: ${this.settling} task(s) in flight, up to ${grace / 1000}s to finish`);

    await this.stopConsuming();
    for (const [delivery, timer] of this.held) {
      clearTimeout(timer);
      this.requeue(delivery);
    }
    this.held.clear();

    await this.drain(grace);
    await this.events.stop();
    await this.broker?.close();
    this.log.success(`stopped (${JSON.stringify(this.summary)})`);
  }

  private async stopConsuming(): Promise<void> {
    if (!this.channel || !this.consumerTag) return;
    try {
      await this.channel.cancel(this.consumerTag);
    } catch (err) {
      this.log.debug(`cancel: ${(err as Error).message}`);
    }
  }

  /**
   * Waits until every message in hand is settled, up to the grace period or a second signal,
   * then aborts the tasks still running so their messages are requeued.
   */
  private async drain(grace: number): Promise<void> {
    if (this.settling === 0) return;

    let timer: Timer | undefined;
    await new Promise<void>((resolve) => {
      const force = this.options.forceSignal;
      if (force?.aborted) return resolve();
      this.idle = resolve;
      timer = setTimeout(resolve, grace);
      force?.addEventListener("abort", () => resolve(), { once: true });
    });
    clearTimeout(timer);

    if (this.settling === 0) return;
    this.log.warn(`${this.running.size} task(s) still running; requeueing them`);
    const finished = new Promise<void>((resolve) => (this.idle = resolve));
    for (const abort of this.running.values()) abort.abort(new Error("worker stopping"));
    await finished;
  }
}

function headerId(message: ConsumeMessage): string | undefined {
  const id = message.properties.headers?.id;
  return typeof id === "string" ? id : message.properties.correlationId;
}

function tableSize(headers: Record<string, unknown> | undefined): number {
  try {
    return JSON.stringify(headers ?? {}).length;
  } catch {
    // Not representable as JSON (e.g. a BigInt); treat as too large to copy.
    return Number.MAX_SAFE_INTEGER;
  }
}

/** Runs a worker until `signal` aborts, then stops gracefully; returns what it did. */
export function runWorker(options: WorkerOptions): Promise<WorkerSummary> {
  return new Worker(options).run();
}
