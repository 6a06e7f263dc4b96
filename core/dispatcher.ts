/**
 * The dispatcher: checks that every queue the scenario needs has a worker, publishes the
 * scenario's tasks with publisher confirms, gathers every reply on one reply queue and
 * reports each task once, in scenario order.
 */
import type { ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";

import {
  connectBroker,
  describeConsumers,
  ReplyLink,
  waitForWorkers,
  type Broker,
  type BrokerUrl,
} from "./broker.ts";
import { scenarioQueues, type DtestConfig } from "./config.ts";
import { EXIT } from "./errors.ts";
import { startupFinished } from "./engine.ts";
import type { Logger } from "./log.ts";
import {
  decodeResult,
  encodeTask,
  newTask,
  ProtocolError,
  WANT_RUN_INFO,
  type TaskMessage,
} from "./protocol.ts";
import {
  applyReply,
  recordLabel,
  renderResults,
  renderTotals,
  totals,
  type RunTotals,
  type TaskRecord,
} from "./results.ts";

export interface DispatchOptions {
  config: DtestConfig;
  broker: BrokerUrl;
  logger: Logger;
  signal: AbortSignal;
  /** Seconds to wait for all results. */
  timeout: number;
  /** Seconds to wait for a worker on each needed queue before giving up. */
  workerWait?: number;
  /** How long to keep trying the first connection, ms. */
  connectTimeout?: number;
  /** Receives each report line for stdout. */
  print: (line: string) => void;
}

export interface DispatchReport {
  records: TaskRecord[];
  totals: RunTotals;
  exitCode: number;
  reason: string;
  /** When dispatching began and ended (ms since the epoch). */
  startedAt: number;
  finishedAt: number;
}

interface Pending {
  record: TaskRecord;
  task: TaskMessage;
  confirmed: boolean;
}

class Dispatch {
  private broker?: Broker;
  private readonly link: ReplyLink;
  private readonly pending = new Map<string, Pending>();
  private remaining = 0;
  private startedAt = 0;
  private allDone?: () => void;
  private readonly log: Logger;

  constructor(private readonly options: DispatchOptions) {
    this.log = options.logger.withTag("dispatch");
    this.link = new ReplyLink({
      taskQueues: scenarioQueues(options.config),
      prefetch: 1000,
      onReply: (channel, msg) => this.onReply(channel, msg),
      logger: this.log,
    });
  }

  async run(): Promise<DispatchReport> {
    const { config, print } = this.options;
    print(`Loaded config: ${config.scenario.description}`);
    print(`Expected workers: ${config.system.workers}`);

    this.broker = await connectBroker(this.options.broker, {
      logger: this.options.logger,
      name: "dtest dispatcher",
      setup: (model) => this.openChannel(model),
      connectTimeout: this.options.connectTimeout,
      signal: this.options.signal,
    });

    try {
      await this.preflight();
      startupFinished();
      return await this.sendAndCollect();
    } finally {
      await this.cleanup();
    }
  }

  /** Runs on every (re)connect: reply queue, reply consumer, and any unconfirmed publishes. */
  private async openChannel(model: ChannelModel): Promise<void> {
    await this.link.open(model);
    for (const entry of this.pending.values()) {
      if (!entry.confirmed) this.publish(entry);
    }
  }

  private async preflight(): Promise<void> {
    const queues = scenarioQueues(this.options.config);
    const waitMs = (this.options.workerWait ?? 5) * 1000;
    const states = await waitForWorkers(
      this.broker!.model,
      queues,
      waitMs,
      this.options.signal,
      this.link.queues,
    );

    const found = states.reduce((sum, s) => sum + s.consumers, 0);
    const expected = this.options.config.system.workers;
    const detail = describeConsumers(states);
    if (found < expected) this.log.warn(`expected ${expected} workers, found ${found} (${detail})`);
    else this.log.info(`workers ready: ${detail}`);
  }

  private buildRecords(): Pending[] {
    const { config } = this.options;
    const entries: Pending[] = [];
    const perTask = new Map<string, number>();
    const totalOf = new Map<string, number>();
    for (const entry of config.scenario.tasks)
      totalOf.set(entry.task, (totalOf.get(entry.task) ?? 0) + entry.count);

    for (const entry of config.scenario.tasks) {
      for (let i = 0; i < entry.count; i++) {
        const index = (perTask.get(entry.task) ?? 0) + 1;
        perTask.set(entry.task, index);
        const task = newTask({
          name: entry.task,
          args: entry.args,
          kwargs: entry.kwargs,
          replyTo: this.link.queue,
          extraHeaders: { [WANT_RUN_INFO]: true },
        });
        const record: TaskRecord = {
          id: task.id,
          task: entry.task,
          queue: config.routing[entry.task]!,
          index,
          of: totalOf.get(entry.task)!,
          sentAt: 0,
          status: "PENDING",
          retries: 0,
          duplicates: 0,
        };
        entries.push({ record, task, confirmed: false });
      }
    }
    return entries;
  }

  private publish(entry: Pending): Promise<void> {
    const channel = this.link.channel;
    if (!channel) return Promise.resolve();

    const encoded = encodeTask(entry.task);
    return new Promise((resolve) => {
      // An unconfirmed publish, or one refused by a closing channel, is sent again by
      // openChannel after the reconnect.
      const settle = (err: Error | null | undefined) => {
        if (err)
          this.log.warn(`publish of ${entry.task.id} not confirmed (${err.message}); will resend`);
        else entry.confirmed = true;
        resolve();
      };
      try {
        channel.publish("", entry.record.queue, encoded.content, encoded.options, settle);
      } catch (err) {
        settle(err as Error);
      }
    });
  }

  private async sendAndCollect(): Promise<DispatchReport> {
    const { print, timeout, signal } = this.options;
    const entries = this.buildRecords();
    for (const entry of entries) this.pending.set(entry.task.id, entry);
    this.remaining = entries.length;

    print("Dispatching tasks...");
    const started = performance.now();
    this.startedAt = Date.now();
    const done = new Promise<void>((resolve) => (this.allDone = resolve));
    if (this.remaining === 0) this.allDone!();

    for (const entry of entries) entry.record.sentAt = Date.now();
    await Promise.all(entries.map((entry) => this.publish(entry)));
    await this.link.ready();
    for (const entry of entries)
      print(`${recordLabel(entry.record)} sent with ID: ${entry.task.id}`);
    print("Waiting for results...");

    const outcome = await waitFor(done, timeout * 1000, signal);
    const elapsed = (performance.now() - started) / 1000;
    const records = entries.map((e) => e.record);
    for (const line of renderResults(records)) print(line);

    const sums = totals(records, elapsed);
    for (const line of renderTotals(sums)) print(line);
    return this.verdict(records, sums, outcome);
  }

  private verdict(
    records: TaskRecord[],
    sums: RunTotals,
    outcome: "done" | "timeout" | "aborted",
  ): DispatchReport {
    const times = { startedAt: this.startedAt, finishedAt: Date.now() };
    if (outcome !== "done") {
      const missing = records
        .filter((r) => r.finishedAt === undefined)
        .map((r) => `${r.task}[${r.id}]`);
      const why =
        outcome === "timeout" ? `no result within ${this.options.timeout} s` : "interrupted";
      this.log.error(`${why} for ${missing.length} task(s): ${missing.slice(0, 10).join(", ")}`);
      return {
        records,
        totals: sums,
        exitCode: EXIT.unreachable,
        reason: `${why} for ${missing.length} task(s)`,
        ...times,
      };
    }
    if (sums.failed > 0) {
      return {
        records,
        totals: sums,
        exitCode: EXIT.tasksFailed,
        reason: `${sums.failed} task(s) failed`,
        ...times,
      };
    }
    return { records, totals: sums, exitCode: EXIT.ok, reason: "all tasks succeeded", ...times };
  }

  private onReply(channel: ConfirmChannel, msg: ConsumeMessage): void {
    try {
      channel.ack(msg);
    } catch (err) {
      // The channel is closing: the reply is requeued and comes again; duplicates are ignored.
      this.log.debug(`reply ack dropped: ${(err as Error).message}`);
    }
    let reply;
    try {
      reply = decodeResult(msg);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.log.warn(`ignored a malformed reply on ${this.link.queue}: ${err.message}`);
      return;
    }

    const entry = this.pending.get(reply.task_id);
    if (!entry) {
      this.log.debug(`reply for unknown task ${reply.task_id} ignored`);
      return;
    }
    if (reply.status === "RETRY")
      this.log.info(`${entry.record.task}[${reply.task_id}] will be retried`);
    if (applyReply(entry.record, reply, Date.now(), msg.properties.headers)) {
      this.remaining--;
      if (this.remaining === 0) this.allDone?.();
    } else if (entry.record.duplicates > 0 && reply.status !== "RETRY") {
      this.log.debug(`duplicate ${reply.status} for ${reply.task_id} ignored`);
    }
  }

  private async cleanup(): Promise<void> {
    await this.link.remove();
    await this.broker?.close();
  }
}

async function waitFor(
  done: Promise<void>,
  ms: number,
  signal: AbortSignal,
): Promise<"done" | "timeout" | "aborted"> {
  let timer: Timer | undefined;
  let onAbort: (() => void) | undefined;
  const result = await Promise.race([
    done.then(() => "done" as const),
    new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms))),
    new Promise<"aborted">((resolve) => {
      onAbort = () => resolve("aborted");
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }),
  ]);
  clearTimeout(timer);
  if (onAbort) signal.removeEventListener("abort", onAbort);
  return result;
}

/** Runs the config's scenario once; never throws for failed tasks (see `exitCode`). */
export function dispatch(options: DispatchOptions): Promise<DispatchReport> {
  return new Dispatch(options).run();
}
