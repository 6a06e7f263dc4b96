/**
 * The load test: sends N tasks of each routed type (or of one), all at once or at an offered
 * rate, and measures how the system held up: counts, latency from publish to result,
 * throughput over time, execution time per task type. Memory stays bounded by the tasks in
 * flight: statistics stream into histograms, and only unfinished tasks are remembered.
 */
import type { ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";

import {
  connectBroker,
  inspectQueues,
  ReplyLink,
  waitForWorkers,
  type Broker,
  type BrokerUrl,
  type QueueState,
} from "./broker.ts";
import type { DtestConfig } from "./config.ts";
import { startupFinished } from "./engine.ts";
import { EXIT, UsageError } from "./errors.ts";
import type { Logger } from "./log.ts";
import { decodeResult, encodeTask, FINAL_STATUSES, newTask, ProtocolError } from "./protocol.ts";
import { BitSet, Histogram, Summary, Timeline } from "./stats.ts";
import { sleepUnlessAborted } from "./tasks.ts";

export const LOAD_REPORT_VERSION = 1;

/**
 * A timed run without an offered rate sends as fast as the workers answer, with at most this
 * many tasks unanswered unless told otherwise, so its memory and the queue stay bounded however
 * long it runs.
 */
export const IN_FLIGHT_WINDOW = 10_000;

/** Replies are acknowledged in batches: every this many, or after ACK_DELAY_MS. */
const ACK_BATCH = 256;
const ACK_DELAY_MS = 20;

export interface LoadOptions {
  config: DtestConfig;
  broker: BrokerUrl;
  logger: Logger;
  /** Stops the sending; what was sent is still waited for. */
  signal: AbortSignal;
  /** Stops the wait for results too (a second Ctrl-C); the tasks without one count as lost. */
  stopNow?: AbortSignal;
  /** Tasks of each type (ignored with `duration`). */
  perType: number;
  /** Load only this task. */
  only?: string;
  /** Offered rate, tasks per second across all types; all at once when absent. */
  rate?: number;
  /** Keep sending for this many seconds instead of a fixed count. */
  duration?: number;
  /**
   * At most this many tasks unanswered at once; sending waits for room. Unlimited by default,
   * IN_FLIGHT_WINDOW for a timed run without a rate.
   */
  maxInFlight?: number;
  /** Seconds to wait for results after the last task is sent. */
  timeout: number;
  workerWait: number;
  connectTimeout?: number;
  onProgress?: (progress: LoadProgress) => void;
  progressEveryMs?: number;
}

export interface LoadProgress {
  sent: number;
  done: number;
  /** Tasks the run will send, when known in advance. */
  planned?: number;
  elapsedSeconds: number;
}

export interface LoadReport {
  version: number;
  tasks: {
    sent: number;
    succeeded: number;
    failed: number;
    lost: number;
    duplicates: number;
    retries: number;
  };
  workers: { start: Record<string, number>; end: Record<string, number> };
  total_seconds: number;
  throughput_per_second: number;
  /** Most tasks sent and not yet answered at once. */
  max_in_flight: number;
  latency_ms: { p50: number; p95: number; p99: number; max: number; mean: number };
  execution_seconds: Record<string, { count: number; mean: number; max: number }>;
  timeline: { second: number; completed: number }[];
  histogram: { from_ms: number; to_ms: number; count: number }[];
  /** A signal stopped the sending before all planned tasks (or the duration) were sent. */
  stopped_early: boolean;
  exit_code: number;
  reason: string;
}

class LoadTest {
  private broker?: Broker;
  private readonly link: ReplyLink;
  private readonly prefix = crypto.randomUUID().slice(0, 24);
  private readonly names: string[];
  private readonly sentAt = new Map<number, number>();
  private readonly confirmed = new BitSet();
  private readonly completed = new BitSet();
  private readonly retryReplies = new Map<number, number>();
  private readonly latency = new Histogram();
  private readonly execution = new Map<string, Summary>();
  private timeline = new Timeline(0);
  private counts = { sent: 0, succeeded: 0, failed: 0, duplicates: 0, retries: 0 };
  private maxInFlight = 0;
  /** A signal ended the sending before the count or the duration did. */
  private stoppedEarly = false;
  private sending = true;
  private wake?: () => void;
  private unacked: ConsumeMessage | undefined;
  private unackedCount = 0;
  private ackTimer?: Timer;
  private readonly log: Logger;

  constructor(private readonly options: LoadOptions) {
    this.log = options.logger.withTag("load-test");
    this.names = loadedTasks(options.config, options.only);
    this.link = new ReplyLink({
      taskQueues: this.queues,
      prefetch: 5000,
      onReply: (channel, msg) => this.onReply(channel, msg),
      logger: this.log,
    });
  }

  private get queues(): string[] {
    return loadedQueues(this.options.config, this.options.only);
  }

  private get done(): number {
    return this.counts.succeeded + this.counts.failed;
  }

  private idOf(seq: number): string {
    return this.prefix + seq.toString(16).padStart(12, "0");
  }

  private seqOf(id: string): number | undefined {
    return id.startsWith(this.prefix)
      ? Number.parseInt(id.slice(this.prefix.length), 16)
      : undefined;
  }

  async run(): Promise<LoadReport> {
    const { options } = this;
    this.broker = await connectBroker(options.broker, {
      logger: options.logger,
      name: "dtest load-test",
      setup: (model) => this.openChannel(model),
      connectTimeout: options.connectTimeout,
      signal: options.signal,
    });

    try {
      const queues = this.queues;
      const start = await waitForWorkers(
        this.broker.model,
        queues,
        options.workerWait * 1000,
        options.signal,
        this.link.queues,
      );
      startupFinished();
      const began = performance.now();
      this.timeline = new Timeline(began);

      const timer = this.startProgress(began);
      const outcome = await this.sendAll(began)
        .then(() => this.link.ready())
        .then(() => this.waitForResults());
      clearInterval(timer);
      this.reportProgress(began);
      this.flushAcks();

      const elapsed = (performance.now() - began) / 1000;
      const end = await inspectQueues(this.broker.model, queues);
      return this.report(start, end, elapsed, outcome);
    } finally {
      await this.cleanup();
    }
  }

  /** Runs on every (re)connect; resends what the broker never confirmed. */
  private async openChannel(model: ChannelModel): Promise<void> {
    await this.link.open(model);
    this.unacked = undefined;
    this.unackedCount = 0;

    const resend = [...this.sentAt.keys()].filter((seq) => !this.confirmed.has(seq));
    if (resend.length > 0)
      this.log.warn(`resending ${resend.length} task(s) the broker had not confirmed`);
    for (const seq of resend) this.publish(seq);
  }

  /** Publishes task `seq`; returns false when the channel's buffer is full. */
  private publish(seq: number): boolean {
    const channel = this.link.channel;
    if (!channel) return true;

    const name = this.names[seq % this.names.length]!;
    const task = newTask({
      id: this.idOf(seq),
      name,
      args: [],
      kwargs: {},
      replyTo: this.link.queue,
    });
    const { content, options } = encodeTask(task);
    try {
      return channel.publish("", this.options.config.routing[name]!, content, options, (err) => {
        if (!err) this.confirmed.add(seq);
      });
    } catch (err) {
      // The channel closed under us (broker restart): the task stays unconfirmed, and
      // openChannel sends it again after the reconnect.
      this.log.debug(`publish of task ${seq} deferred: ${(err as Error).message}`);
      return true;
    }
  }

  private planned(): number | undefined {
    return this.options.duration ? undefined : this.options.perType * this.names.length;
  }

  private async sendAll(began: number): Promise<void> {
    const { rate, duration, signal } = this.options;
    const planned = this.planned() ?? Infinity;
    const deadline = duration ? began + duration * 1000 : Infinity;
    const timedFlat = duration !== undefined && rate === undefined;
    const window = this.options.maxInFlight ?? (timedFlat ? IN_FLIGHT_WINDOW : Infinity);

    for (let seq = 0; seq < planned; seq++) {
      if (window < Infinity) await this.roomInWindow(window, deadline);
      if (signal.aborted) {
        this.stoppedEarly = true;
        break;
      }
      const now = performance.now();
      if (now >= deadline) break;
      if (rate) {
        const due = began + (seq / rate) * 1000;
        if (due >= deadline) break;
        if (due - now >= 1 && !(await sleepUnlessAborted(due - now, signal))) {
          this.stoppedEarly = true;
          break;
        }
      } else if (seq % 1000 === 999) {
        // Let replies in while a large burst is being published.
        await Bun.sleep(0);
      }

      this.sentAt.set(seq, performance.now());
      this.counts.sent++;
      this.maxInFlight = Math.max(this.maxInFlight, this.counts.sent - this.done);
      if (!this.publish(seq)) await this.drained();
    }
    this.sending = false;
    this.wake?.();
  }

  /** Waits while `window` tasks are unanswered, until `deadline` at the latest. */
  private async roomInWindow(window: number, deadline: number): Promise<void> {
    while (
      this.counts.sent - this.done >= window &&
      performance.now() < deadline &&
      !this.options.signal.aborted
    ) {
      await Bun.sleep(1);
    }
  }

  /** Waits for the channel's buffer to drain, or for the channel to go (a reconnect resends). */
  private drained(): Promise<void> {
    const channel = this.link.channel;
    if (!channel) return Bun.sleep(10);
    return new Promise((resolve) => {
      const done = () => {
        channel.off("drain", done);
        channel.off("close", done);
        resolve();
      };
      channel.once("drain", done);
      channel.once("close", done);
    });
  }

  private waitForResults(): Promise<"done" | "timeout" | "aborted"> {
    const { timeout } = this.options;
    const stop = this.options.stopNow ?? this.options.signal;
    if (this.done >= this.counts.sent) return Promise.resolve("done");
    if (stop.aborted) return Promise.resolve("aborted");

    return new Promise((resolve) => {
      const finish = (outcome: "done" | "timeout" | "aborted") => {
        clearTimeout(timer);
        stop.removeEventListener("abort", onAbort);
        resolve(outcome);
      };
      const onAbort = () => finish("aborted");
      const timer = setTimeout(() => finish("timeout"), timeout * 1000);
      stop.addEventListener("abort", onAbort, { once: true });
      this.wake = () => {
        if (!this.sending && this.done >= this.counts.sent) finish("done");
      };
      this.wake();
    });
  }

  private onReply(channel: ConfirmChannel, msg: ConsumeMessage): void {
    this.ackLater(channel, msg);
    let reply;
    try {
      reply = decodeResult(msg);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.log.warn(`ignored a malformed reply: ${err.message}`);
      return;
    }

    const seq = this.seqOf(reply.task_id);
    if (seq === undefined) return;
    if (reply.status === "RETRY") this.retryReplies.set(seq, (this.retryReplies.get(seq) ?? 0) + 1);
    if (!FINAL_STATUSES.includes(reply.status)) return;
    if (this.completed.has(seq)) {
      this.counts.duplicates++;
      return;
    }

    this.record(seq, reply.status === "SUCCESS", reply.result);
    this.wake?.();
  }

  private record(seq: number, ok: boolean, result: unknown): void {
    const now = performance.now();
    this.completed.add(seq);
    this.latency.record(now - (this.sentAt.get(seq) ?? now));
    this.timeline.record(now);
    this.sentAt.delete(seq);
    this.counts[ok ? "succeeded" : "failed"]++;

    const value = result as Record<string, unknown> | null;
    const name = this.names[seq % this.names.length]!;
    const retryCount = value?.retry_count;
    this.counts.retries +=
      typeof retryCount === "number" ? retryCount : (this.retryReplies.get(seq) ?? 0);
    this.retryReplies.delete(seq);
    if (typeof value?.execution_time === "number") {
      if (!this.execution.has(name)) this.execution.set(name, new Summary());
      this.execution.get(name)!.record(value.execution_time);
    }
  }

  /** Acks replies in batches (multiple=true); a reply that is lost unacked is redelivered. */
  private ackLater(channel: ConfirmChannel, msg: ConsumeMessage): void {
    if (channel !== this.link.channel) return;
    this.unacked = msg;
    this.unackedCount++;
    if (this.unackedCount >= ACK_BATCH) this.flushAcks();
    else this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
  }

  private flushAcks(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const msg = this.unacked;
    this.unacked = undefined;
    this.unackedCount = 0;
    const channel = this.link.channel;
    if (!msg || !channel) return;
    try {
      channel.ack(msg, true);
    } catch (err) {
      // The channel closed: the broker requeues these replies and delivers them again.
      this.log.debug(`reply acks dropped with the channel: ${(err as Error).message}`);
    }
  }

  private startProgress(began: number): Timer {
    return setInterval(() => this.reportProgress(began), this.options.progressEveryMs ?? 1000);
  }

  private reportProgress(began: number): void {
    const elapsedSeconds = (performance.now() - began) / 1000;
    this.options.onProgress?.({
      sent: this.counts.sent,
      done: this.done,
      planned: this.planned(),
      elapsedSeconds,
    });
  }

  private report(
    start: QueueState[],
    end: QueueState[],
    elapsed: number,
    outcome: string,
  ): LoadReport {
    const c = this.counts;
    const lost = c.sent - this.done;
    const asMap = (states: QueueState[]) =>
      Object.fromEntries(states.map((s) => [s.queue, s.consumers]));
    const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;
    const exitCode = lost > 0 ? EXIT.unreachable : c.failed > 0 ? EXIT.tasksFailed : EXIT.ok;
    const waited = outcome === "aborted" ? "interrupted" : `waited ${this.options.timeout} s`;
    const verdict =
      lost > 0
        ? `${lost} task(s) without a result (${waited})`
        : c.failed > 0
          ? `${c.failed} task(s) failed`
          : "all tasks succeeded";
    const cut = this.stoppedEarly;
    const reason = cut ? `sending interrupted after ${c.sent} tasks; ${verdict}` : verdict;

    return {
      version: LOAD_REPORT_VERSION,
      tasks: {
        sent: c.sent,
        succeeded: c.succeeded,
        failed: c.failed,
        lost,
        duplicates: c.duplicates,
        retries: c.retries,
      },
      workers: { start: asMap(start), end: asMap(end) },
      total_seconds: round(elapsed),
      throughput_per_second: round(elapsed > 0 ? this.done / elapsed : 0, 1),
      max_in_flight: this.maxInFlight,
      latency_ms: {
        p50: round(this.latency.percentile(50)),
        p95: round(this.latency.percentile(95)),
        p99: round(this.latency.percentile(99)),
        max: round(this.latency.max),
        mean: round(this.latency.mean()),
      },
      execution_seconds: Object.fromEntries(
        [...this.execution].map(([name, s]) => [
          name,
          { count: s.count, mean: round(s.mean(), 4), max: round(s.max, 4) },
        ]),
      ),
      timeline: this.timeline.perSecond.map((completed, second) => ({ second, completed })),
      histogram: this.latency
        .bars()
        .map((b) => ({ from_ms: round(b.fromMs), to_ms: round(b.toMs), count: b.count })),
      stopped_early: cut,
      exit_code: exitCode,
      reason,
    };
  }

  private async cleanup(): Promise<void> {
    await this.link.remove();
    await this.broker?.close();
  }
}

/** The task types a load test sends: every routed one, or `only`; throws UsageError if unknown. */
export function loadedTasks(config: DtestConfig, only?: string): string[] {
  const routed = Object.keys(config.routing);
  if (only && !routed.includes(only)) {
    throw new UsageError(
      `--task ${only} is not routed in ${config.file}`,
      `use one of: ${routed.join(", ")}`,
    );
  }
  return only ? [only] : routed;
}

/** The queues the loaded task types are routed to, each once. */
export function loadedQueues(config: DtestConfig, only?: string): string[] {
  return [...new Set(loadedTasks(config, only).map((name) => config.routing[name]!))];
}

/** Runs one load test; never throws for failed or lost tasks (see `exit_code`). */
export function runLoadTest(options: LoadOptions): Promise<LoadReport> {
  return new LoadTest(options).run();
}

/** The console report. */
export function renderLoadReport(r: LoadReport): string[] {
  const workers = (m: Record<string, number>) =>
    Object.entries(m)
      .map(([q, n]) => `${q}=${n}`)
      .join(", ");
  const t = r.tasks;
  const ms = (key: keyof LoadReport["latency_ms"]) => `${key} ${r.latency_ms[key].toFixed(2)}ms`;
  const lines = [
    `Workers at start: ${workers(r.workers.start)}`,
    `Workers at end: ${workers(r.workers.end)}`,
    `Tasks: sent ${t.sent}, succeeded ${t.succeeded}, failed ${t.failed}, lost ${t.lost}, ` +
      `duplicates ${t.duplicates}`,
    `Retries: ${t.retries}`,
    `Total time: ${r.total_seconds.toFixed(3)}s`,
    `Throughput: ${r.throughput_per_second.toFixed(1)} tasks/s`,
    `Most in flight at once: ${r.max_in_flight}`,
    `Latency (publish to result): ${ms("p50")}, ${ms("p95")}, ${ms("p99")}, ${ms("max")}`,
  ];
  for (const [name, s] of Object.entries(r.execution_seconds)) {
    const times = `mean ${s.mean.toFixed(4)}s, max ${s.max.toFixed(4)}s`;
    lines.push(`Execution time ${name}: ${times} (${s.count} tasks)`);
  }
  if (r.exit_code !== EXIT.ok) lines.push(`FAILED: ${r.reason}`);
  else if (r.stopped_early) lines.push(`Stopped early: ${r.reason}`);
  return lines;
}
