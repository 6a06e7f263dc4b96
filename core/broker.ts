/**
 * The amqplib lifecycle: which broker to use, connecting with amqplib's own recovery, the
 * declarations Celery makes, and closing in order. Reconnecting is amqplib's job; callers
 * pass a `setup` that restores their channels and consumers after every (re)connect.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

// Must load before amqplib: it swaps in a table decoder that survives headers amqplib
// cannot read (see amqp-tables.ts).
import "./amqp-tables.ts";
import amqp, {
  type Channel,
  type ChannelModel,
  type ConfirmChannel,
  type ConsumeMessage,
  type RecoveringChannelModel,
} from "amqplib";

import type { BrokerSettings } from "./config.ts";
import { BrokerError, describeError, UsageError } from "./errors.ts";
import { maskSecrets, type Logger } from "./log.ts";
import { batchWrites } from "./write-batching.ts";

export const DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672";

export interface BrokerUrl {
  url: string;
  /** Where the URL came from, for messages: `--broker`, `AMQP_URL`, `BROKER_URL` or the file. */
  source?: string;
  /** PEM file of the CA that signed an amqps:// broker's certificate. */
  caFile?: string;
}

/**
 * Picks the broker URL: `--broker`, then AMQP_URL, then BROKER_URL, then the config file;
 * and the CA file for amqps:// from `--ca`, then AMQP_CA_FILE.
 */
export function resolveBrokerUrl(
  flags: { broker?: string; ca?: string },
  settings: BrokerSettings,
  file: string,
): BrokerUrl {
  const caFile = flags.ca || process.env.AMQP_CA_FILE || undefined;
  if (flags.broker) return { url: flags.broker, source: "--broker", caFile };
  if (process.env.AMQP_URL) return { url: process.env.AMQP_URL, source: "AMQP_URL", caFile };
  if (process.env.BROKER_URL) return { url: process.env.BROKER_URL, source: "BROKER_URL", caFile };

  const user = encodeURIComponent(settings.username);
  const pass = encodeURIComponent(settings.password);
  const vhost = settings.vhost === "/" ? "" : `/${encodeURIComponent(settings.vhost)}`;
  const url = `amqp://${user}:${pass}@${settings.host}:${settings.port}${vhost}`;
  return { url, source: `${file} rabbitmq:`, caFile };
}

function tlsOptions(target: BrokerUrl): { ca?: Buffer[] } {
  if (!target.caFile) return {};
  if (!/^amqps:\/\//i.test(target.url)) {
    throw new UsageError(
      `a CA file is set (--ca or AMQP_CA_FILE) but the broker URL is not amqps:// (${maskSecrets(target.url)})`,
      "use an amqps://host:5671 URL, or drop --ca / AMQP_CA_FILE",
    );
  }

  // Checked here because a directory would escape as a raw EISDIR, and a file with no
  // certificate would only show up as connection attempts failing until the deadline.
  try {
    const pem = readFileSync(target.caFile);
    new X509Certificate(pem);
    return { ca: [pem] };
  } catch (cause) {
    throw new UsageError(
      `--ca / AMQP_CA_FILE ${target.caFile} is not a readable PEM certificate (${describeError(cause)})`,
      "pass the CA's certificate, the file that starts with -----BEGIN CERTIFICATE-----",
    );
  }
}

/** Node's TLS error codes for a certificate the client did not accept. */
const CERTIFICATE_CODES = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME/;

/** Failures that retrying cannot fix: a refused certificate or refused credentials. */
function isFatal(err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code ?? "";
  return (
    CERTIFICATE_CODES.test(code) ||
    /ACCESS_REFUSED|access_refused|not_allowed|NOT_ALLOWED/.test(err.message)
  );
}

function unreachableHint(failure: Error | undefined): string {
  const code = (failure as NodeJS.ErrnoException | undefined)?.code ?? "";
  if (CERTIFICATE_CODES.test(code)) {
    return "the broker's TLS certificate was refused: pass --ca (or AMQP_CA_FILE) with the PEM file of the CA that signed it, and connect by a host name the certificate lists";
  }
  if (failure && /ACCESS_REFUSED|access_refused/.test(failure.message)) {
    return "RabbitMQ refused the user name or password: fix them in --broker / AMQP_URL or the config's rabbitmq: section";
  }
  if (failure && /not_allowed|NOT_ALLOWED/i.test(failure.message)) {
    return "the user may not use this vhost: grant it (rabbitmqctl set_permissions) or pick another vhost";
  }
  return "start RabbitMQ (rabbitmq-server -detached), or point --broker / AMQP_URL at a running one";
}

export interface ConnectOptions {
  logger: Logger;
  /** Shown in RabbitMQ's management UI and `rabbitmqctl list_connections`. */
  name: string;
  /** Runs after every successful (re)connect, before the connection is handed out. */
  setup?: (model: ChannelModel) => Promise<void>;
  /** How long to keep trying the first connection, ms. */
  connectTimeout?: number;
  signal?: AbortSignal;
}

export interface Broker {
  model: RecoveringChannelModel;
  url: string;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

function watchConnection(model: RecoveringChannelModel, logger: Logger): void {
  model.on("disconnect", (err: Error) =>
    logger.warn(`connection lost (${err.message}); reconnecting`),
  );
  model.on("connect", () => logger.debug("connected"));
  model.on("reconnect-scheduled", ({ attempt, delay }: { attempt: number; delay: number }) =>
    logger.debug({ message: `reconnect attempt ${attempt} in ${delay} ms`, attempt, delay }),
  );
  model.on("reconnect-failed", (err: Error) =>
    logger.error(`gave up reconnecting: ${err.message}`),
  );
  model.on("error", (err: Error) => logger.warn(`connection error: ${err.message}`));
  model.on("handler-error", (err: Error, event: string) =>
    logger.error(`a "${event}" listener threw: ${describeError(err)}`),
  );
  model.on("blocked", (reason: string) => logger.warn(`broker blocked publishing: ${reason}`));
  model.on("unblocked", () => logger.info("broker unblocked publishing"));
}

/** Connects with recovery on; throws BrokerError when no broker answers within connectTimeout. */
export async function connectBroker(target: BrokerUrl, options: ConnectOptions): Promise<Broker> {
  const logger = options.logger.withTag("broker");
  const url = target.url;
  const masked = maskSecrets(url);
  const timeout = options.connectTimeout ?? 10_000;

  const model = await amqp.connect(url, {
    ...tlsOptions(target),
    // Frames are already gathered into one write per event-loop turn (write-batching.ts), so
    // Nagle's algorithm only adds delay: a reply could wait on the ack of the previous write.
    noDelay: true,
    clientProperties: { connection_name: options.name },
    recovery: {
      waitForConnect: false,
      initialDelay: 100,
      maxDelay: 2_000,
      maxRetries: Infinity,
      setup: async (connected: ChannelModel) => {
        if (!batchWrites(connected.connection)) logger.debug("frames are written one by one");
        await options.setup?.(connected);
      },
    },
  });
  watchConnection(model, logger);

  // amqplib reports why an attempt failed only through "connect-failed". Keep the last
  // reason, and stop at once on failures that retrying cannot fix.
  let lastFailure: Error | undefined;
  let fail: (err: Error) => void = () => {};
  const fatal = new Promise<never>((_, reject) => (fail = reject));
  fatal.catch(() => {
    // Observed by the race below; this only keeps an unused rejection from being reported.
  });
  model.on("connect-failed", (err: Error) => {
    lastFailure = err;
    logger.debug(`connection attempt failed: ${err.message}`);
    if (isFatal(err)) fail(err);
  });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= model.close().catch((err) => logger.debug(`close: ${err.message}`)));

  const abort = () => void close();
  options.signal?.addEventListener("abort", abort, { once: true });

  try {
    await withDeadline(Promise.race([model.waitForConnect(), fatal]), timeout);
  } catch (cause) {
    await close();
    const what =
      lastFailure && isFatal(lastFailure)
        ? `RabbitMQ at ${masked} refused the connection`
        : `cannot reach RabbitMQ at ${masked} within ${timeout / 1000} s`;
    throw new BrokerError(what, {
      cause: lastFailure ?? cause,
      hint: unreachableHint(lastFailure),
    });
  } finally {
    options.signal?.removeEventListener("abort", abort);
  }

  logger.debug(`connected to ${masked}`);
  return { model, url, close, [Symbol.asyncDispose]: close };
}

async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: Timer | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no connection after ${ms} ms`)), ms);
  });

  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Declares a task queue exactly as Celery does (a durable direct exchange of the same name,
 * a durable queue with no arguments, bound by its own name), so that a Celery process
 * declaring the same queue never gets PRECONDITION_FAILED.
 */
export async function declareTaskQueue(channel: Channel, queue: string): Promise<QueueState> {
  await channel.assertExchange(queue, "direct", { durable: true });
  const ok = await channel.assertQueue(queue, {
    durable: true,
    exclusive: false,
    autoDelete: false,
  });
  await channel.bindQueue(queue, queue, queue);
  return { queue, exists: true, consumers: ok.consumerCount, messages: ok.messageCount };
}

/** A reply queue nobody consumes for this long is removed by RabbitMQ (ms). */
export const REPLY_QUEUE_EXPIRES_MS = 10 * 60 * 1000;

/**
 * Declares a dispatcher's reply queue: durable and non-exclusive with an idle expiry. An
 * exclusive or auto-delete queue would vanish with a dropped connection, taking the replies
 * that arrive meanwhile with it; the expiry removes one a crashed dispatcher left behind.
 */
export async function declareReplyQueue(channel: Channel, name: string): Promise<void> {
  await channel.assertQueue(name, {
    durable: true,
    exclusive: false,
    autoDelete: false,
    arguments: { "x-expires": REPLY_QUEUE_EXPIRES_MS },
  });
}

export interface ReplyChannelOptions {
  replyQueue: string;
  /** Task queues to declare as Celery's client does, so tasks wait even if a worker restarts. */
  taskQueues: string[];
  /** Unacknowledged replies the broker may send ahead. */
  prefetch: number;
  onReply: (channel: ConfirmChannel, message: ConsumeMessage) => void;
  /** Called when this channel closes (a reconnect opens another). */
  onClose: (channel: ConfirmChannel) => void;
  logger: Logger;
}

export interface ReplyChannel {
  channel: ConfirmChannel;
  /** The task queues as their declarations found them: consumers and ready messages. */
  queues: QueueState[];
  /** Settles once replies are being consumed; rejects if the consumer could not be set up. */
  consuming: Promise<void>;
}

/**
 * The sending side's channel: confirms on, reply queue declared and consumed. The task
 * queues are declared at the same time, each on a short-lived channel of its own: a channel
 * answers one request at a time, so this turns a dozen round trips in a row into about five.
 *
 * It returns before the reply consumer is ready. The reply queue's declaration is already on
 * its way, and whatever is published on this channel afterwards reaches the broker behind it,
 * so the broker routes a task only once the queue for its reply exists; replies that come
 * before the consumer wait in that queue.
 */
export async function openReplyChannel(
  model: ChannelModel,
  options: ReplyChannelOptions,
): Promise<ReplyChannel> {
  const declared = Promise.all(
    options.taskQueues.map((queue) => declareOnOwnChannel(model, queue)),
  );
  // Observed below; an early failure here must not surface as an unhandled rejection.
  declared.catch(() => {});

  const channel = await model.createConfirmChannel();
  channel.on("error", (err: Error) => options.logger.warn(`channel error: ${err.message}`));
  channel.on("handler-error", (err: Error, event: string) =>
    options.logger.error(`a channel "${event}" listener threw: ${describeError(err)}`),
  );
  channel.on("close", () => options.onClose(channel));

  const consuming = (async () => {
    await declareReplyQueue(channel, options.replyQueue);
    await channel.prefetch(options.prefetch);
    await channel.consume(options.replyQueue, (msg) => msg && options.onReply(channel, msg));
  })();
  // The caller awaits it before it waits for replies.
  consuming.catch(() => {});
  return { channel, queues: await declared, consuming };
}

async function declareOnOwnChannel(model: ChannelModel, queue: string): Promise<QueueState> {
  const channel = await model.createChannel();
  // A refused declaration closes the channel with the reason, which the caller reports.
  channel.on("error", () => {});
  const state = await declareTaskQueue(channel, queue);
  channel.close().catch(() => {
    // The connection went first; the channel went with it.
  });
  return state;
}

/**
 * A sender's reply queue and the channel it publishes on, across reconnects. `open` is the
 * connection's setup: every (re)connect gets a fresh channel reading the same durable queue,
 * so replies sent while the connection was down are still there.
 */
export class ReplyLink {
  /** The run's own reply queue. */
  readonly queue = replyQueueName();
  /** The channel to publish on; undefined while the connection is down. */
  channel?: ConfirmChannel;
  /** The task queues as the latest declaration found them (consumers, ready messages). */
  queues?: QueueState[];
  private consuming?: Promise<void>;

  constructor(private readonly options: Omit<ReplyChannelOptions, "replyQueue" | "onClose">) {}

  async open(model: ChannelModel): Promise<void> {
    const reconnect = this.consuming !== undefined;
    const opened = await openReplyChannel(model, {
      ...this.options,
      replyQueue: this.queue,
      onClose: (channel) => {
        if (this.channel === channel) this.channel = undefined;
      },
    });
    this.channel = opened.channel;
    this.queues = opened.queues;
    this.consuming = opened.consuming;
    // Only the first connection is in a hurry to publish; after a reconnect, a consumer that
    // cannot be set up fails the setup, and recovery deals with it.
    if (reconnect) await opened.consuming;
  }

  /** Resolves once replies are being read; throws why they cannot be. */
  async ready(): Promise<void> {
    await this.consuming;
  }

  /** Deletes the reply queue; if that fails it expires by itself (x-expires). */
  async remove(): Promise<void> {
    try {
      await this.channel?.deleteQueue(this.queue);
    } catch (err) {
      this.options.logger.debug(`reply queue ${this.queue} not deleted: ${(err as Error).message}`);
    }
  }
}

/** A fresh reply queue name for one dispatcher run. */
function replyQueueName(): string {
  return `dtest.reply.${crypto.randomUUID()}`;
}

/** The queue where a worker parks messages it cannot process, with the reason in headers. */
export function deadLetterQueue(queue: string): string {
  return `${queue}.dead`;
}

export async function declareDeadLetterQueue(channel: Channel, queue: string): Promise<string> {
  const name = deadLetterQueue(queue);
  await channel.assertQueue(name, { durable: true, exclusive: false, autoDelete: false });
  return name;
}

/**
 * Waits until every queue has a consumer, up to `waitMs`; throws BrokerError naming the idle
 * queues and the command that starts a worker for each. Returns the last states read.
 * `known` states, when given, are used for the first check instead of asking again.
 */
export async function waitForWorkers(
  model: RecoveringChannelModel,
  queues: string[],
  waitMs: number,
  signal: AbortSignal,
  known?: QueueState[],
): Promise<QueueState[]> {
  const started = Date.now();
  // States a declaration just returned save the first round of passive checks.
  let states = known ?? (await inspectQueues(model, queues));

  while (states.some((s) => s.consumers === 0) && Date.now() - started < waitMs) {
    signal.throwIfAborted();
    await Bun.sleep(100);
    states = await inspectQueues(model, queues);
  }

  const idle = states.filter((s) => s.consumers === 0);
  if (idle.length > 0) {
    const names = idle.map((s) => s.queue).join(", ");
    const start = idle.map((s) => `./dtest worker --queue ${s.queue}`).join(" & ");
    throw new BrokerError(`no worker consumes ${names} (waited ${waitMs / 1000} s)`, {
      hint: `start one with: ${start}  (or pass --spawn-workers to start them for this run)`,
    });
  }
  return states;
}

/** `queue_a=1, queue_b=2`, for logs and reports. */
export function describeConsumers(states: QueueState[]): string {
  return states.map((s) => `${s.queue}=${s.consumers}`).join(", ");
}

export interface QueueState {
  queue: string;
  exists: boolean;
  consumers: number;
  messages: number;
}

/** Reads consumers and ready messages of each queue without declaring anything. */
async function openQuietChannel(model: RecoveringChannelModel): Promise<Channel> {
  const channel = await model.createChannel();
  channel.on("error", () => {
    // The 404 for a missing queue arrives here too; it is reported through checkQueue.
  });
  return channel;
}

export async function inspectQueues(
  model: RecoveringChannelModel,
  queues: string[],
): Promise<QueueState[]> {
  const states: QueueState[] = [];
  let channel: Channel | undefined;

  for (const queue of queues) {
    // A passive declare of a missing queue closes its channel (404); the channel is reused
    // until that happens, then the next queue gets a fresh one.
    channel ??= await openQuietChannel(model);
    try {
      const ok = await channel.checkQueue(queue);
      states.push({ queue, exists: true, consumers: ok.consumerCount, messages: ok.messageCount });
    } catch {
      // Only a missing queue lands here; connection faults surface on the next call.
      states.push({ queue, exists: false, consumers: 0, messages: 0 });
      channel = undefined;
    }
  }

  await channel?.close();
  return states;
}
