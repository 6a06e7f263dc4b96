/**
 * Shared pieces for tests that need RabbitMQ and the compiled binary: a broker connection,
 * unique queue names, temporary configs, and processes whose output can be awaited.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import amqp, { type Channel, type ChannelModel, type GetMessage } from "amqplib";
import type { Subprocess } from "bun";
import { afterAll, beforeAll, expect } from "bun:test";

export const BROKER_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
export const ROOT = resolve(import.meta.dir, "..");
export const BIN = join(ROOT, "dtest");

/** Connects to the test broker or fails with one line that says how to start one. */
export async function connectTestBroker(): Promise<ChannelModel> {
  try {
    return await amqp.connect(BROKER_URL);
  } catch (err) {
    throw new Error(
      `RabbitMQ is not reachable at ${BROKER_URL.replace(/:[^:@]*@/, ":***@")} (${(err as Error).message}); ` +
        "start it with `rabbitmq-server -detached` or set AMQP_URL",
    );
  }
}

export async function requireBinary(): Promise<void> {
  if (!(await Bun.file(BIN).exists()))
    throw new Error(`${BIN} is missing; build it with \`make build\``);
}

/** A short unique prefix so each test owns its queues. */
export function uniqueName(prefix = "t"): string {
  return `${prefix}_${crypto.randomUUID().slice(0, 8)}`;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "dtest-"));
}

export function writeConfig(dir: string, yaml: string, name = "test-config.yml"): string {
  const file = join(dir, name);
  writeFileSync(file, yaml);
  return file;
}

/** A process whose stdout and stderr are collected as they arrive, so tests can await lines. */
export class Proc {
  stdout = "";
  stderr = "";
  private waiters: (() => void)[] = [];
  private readonly drained: Promise<unknown>;

  constructor(readonly child: Subprocess<"ignore", "pipe", "pipe">) {
    this.drained = Promise.all([
      this.pump(child.stdout, "stdout"),
      this.pump(child.stderr, "stderr"),
    ]);
  }

  private async pump(
    stream: ReadableStream<Uint8Array>,
    field: "stdout" | "stderr",
  ): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this[field] += decoder.decode(chunk, { stream: true });
      for (const wake of this.waiters.splice(0)) wake();
    }
  }

  /** Resolves when `pattern` appears in stdout+stderr; rejects after `ms` with the output so far. */
  async waitFor(pattern: string | RegExp, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    const seen = () =>
      typeof pattern === "string" ? this.output.includes(pattern) : pattern.test(this.output);
    while (!seen()) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${pattern}; output:\n${this.output}`);
      await Promise.race([new Promise<void>((r) => this.waiters.push(r)), Bun.sleep(50)]);
    }
  }

  get output(): string {
    return this.stdout + this.stderr;
  }

  /** Waits for the process to exit and its output to be read to the end. */
  async exit(): Promise<number> {
    const code = await this.child.exited;
    await this.drained;
    return code;
  }
}

/** Starts the compiled binary with `args`; the broker URL is passed through AMQP_URL. */
export function start(args: string[], env: Record<string, string> = {}, cwd = ROOT): Proc {
  const child = Bun.spawn([BIN, ...args], {
    cwd,
    env: { ...process.env, AMQP_URL: BROKER_URL, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  return new Proc(child);
}

/** Runs the binary to completion. */
export async function run(args: string[], env: Record<string, string> = {}, cwd = ROOT) {
  const proc = start(args, env, cwd);
  const code = await proc.exit();
  return { code, stdout: proc.stdout, stderr: proc.stderr };
}

/** Starts a worker and waits until it consumes its queue. */
export async function startWorker(
  queue: string,
  config: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<Proc> {
  const proc = start(
    ["worker", "--queue", queue, "--config", config, "--log-level", "debug", ...extra],
    env,
  );
  await proc.waitFor(`consuming ${queue}`);
  return proc;
}

/** Stops worker processes with SIGTERM and waits for them. */
export async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) p.child.kill("SIGTERM");
  await Promise.all(procs.map((p) => p.exit()));
}

/** Deletes queues a test created; missing ones are fine. */
export async function deleteQueues(conn: ChannelModel, names: string[]): Promise<void> {
  const ch = await conn.createChannel();
  for (const name of names) {
    await ch.deleteQueue(name);
    await ch.deleteExchange(name);
  }
  await ch.close();
}

/** Takes every message waiting in `queue` now (acked on receipt). */
export async function drainQueue(channel: Channel, queue: string): Promise<GetMessage[]> {
  const messages: GetMessage[] = [];
  let msg: GetMessage | false;
  while ((msg = await channel.get(queue, { noAck: true }))) messages.push(msg);
  return messages;
}

/** Polls `queue` until a message arrives (acked on receipt); throws after `ms`. */
export async function nextMessage(channel: Channel, queue: string, ms = 5000): Promise<GetMessage> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const msg = await channel.get(queue, { noAck: true });
    if (msg) return msg;
    await Bun.sleep(20);
  }
  throw new Error(`nothing arrived on ${queue} within ${ms} ms`);
}

/** The seed's console report, line by line (ids and times vary). */
export const SEED_REPORT = [
  /^Loaded config: Basic two-task execution test$/,
  /^Expected workers: 2$/,
  /^Dispatching tasks\.\.\.$/,
  /^Task A sent with ID: [0-9a-f-]{36}$/,
  /^Task B sent with ID: [0-9a-f-]{36}$/,
  /^Waiting for results\.\.\.$/,
  /^Result from task_a: Hello from Task A$/,
  /^Task A execution time: 0\.1\d\ds$/,
  /^Task A retries: 0$/,
  /^Result from task_b: Hello from Task B$/,
  /^Task B execution time: 0\.2\d\ds$/,
  /^Task B retries: 0$/,
  /^Total dispatcher time: \d+\.\d{3}s \(concurrent execution\)$/,
  /^Sequential time would be: 0\.3\d\ds$/,
  /^Total retries: 0$/,
];

/** Checks a dispatch's stdout against the seed's report, line by line. */
export function expectSeedReport(stdout: string): void {
  const lines = stdout.trimEnd().split("\n");
  expect(lines).toHaveLength(SEED_REPORT.length);
  lines.forEach((line, i) => expect(line).toMatch(SEED_REPORT[i]!));
}

/**
 * Set-up and tidy-up for a test file whose tests each make their own queues: the binary must
 * exist (and the broker answer) before the first test, and every queue made with `queue()`,
 * with its dead-letter queue, is deleted after the last. Call it once, at the top level.
 */
export function ownQueues(): { queue(prefix?: string): string } {
  const names: string[] = [];

  beforeAll(async () => {
    await requireBinary();
    await (await connectTestBroker()).close();
  });

  afterAll(async () => {
    const conn = await connectTestBroker();
    await deleteQueues(
      conn,
      names.flatMap((q) => [q, `${q}.dead`]),
    );
    await conn.close();
  });

  return {
    queue(prefix = "q") {
      const name = uniqueName(prefix);
      names.push(name);
      return name;
    },
  };
}

export interface WorkerUnderTest {
  /** The queue the worker consumes; a queue task_b is routed to that no worker consumes. */
  qa: string;
  qb: string;
  /** A queue for the replies of the tasks a test publishes. */
  replies: string;
  conn: ChannelModel;
  ch: Channel;
  worker: Proc;
  next(queue: string, ms?: number): Promise<GetMessage>;
}

/**
 * For a test file that feeds a worker raw messages: a worker on a fresh queue (task_a there,
 * task_b on another, `tasks` YAML added to its config), a reply queue and a channel, ready
 * before the file's tests and removed after them.
 */
export function workerUnderTest(tasks = ""): WorkerUnderTest {
  const t = {
    qa: uniqueName("qa"),
    qb: uniqueName("qb"),
    replies: uniqueName("replies"),
    next: (queue: string, ms?: number) => nextMessage(t.ch, queue, ms),
  } as WorkerUnderTest;

  beforeAll(async () => {
    await requireBinary();
    t.conn = await connectTestBroker();
    t.ch = await t.conn.createChannel();
    await t.ch.assertQueue(t.replies, { durable: false });
    const routing = `task_routing:\n  task_a: ${t.qa}\n  task_b: ${t.qb}\n`;
    t.worker = await startWorker(t.qa, writeConfig(tempDir(), routing + tasks));
  });

  afterAll(async () => {
    await stopAll([t.worker]);
    await deleteQueues(t.conn, [t.qa, t.qb, `${t.qa}.dead`, t.replies]);
    await t.conn.close();
  });

  return t;
}
