/**
 * The floor's client: publishes N tasks and collects N replies, timing the whole round.
 *
 *   bun bench/floor/client.ts --url URL --queue QUEUE --reply-queue REPLY --n N [--rate R]
 *
 * Publishes N persistent messages to QUEUE on a confirm channel without waiting between them
 * (only for the socket to drain when amqplib's buffer is full), or paced at R per second, and
 * consumes the replies on REPLY with batched acks. Prints one JSON object on stdout: seconds
 * from the first publish to the last reply, round trips per second, and per-message latency
 * in ms (publish to reply).
 */
import { once } from "node:events";
import { parseArgs } from "node:util";

import amqp, { type Channel, type ConfirmChannel, type ConsumeMessage } from "amqplib";

import { latencySummary } from "../lib/stats.ts";

/** Replies acked at once (multiple=true); the reply prefetch is a few batches deep. */
const ACK_BATCH = 100;

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    queue: { type: "string" },
    "reply-queue": { type: "string" },
    n: { type: "string" },
    rate: { type: "string" },
  },
});
const n = Number(values.n);
const rate = values.rate === undefined ? undefined : Number(values.rate);
if (!values.url || !values.queue || !values["reply-queue"] || !Number.isInteger(n) || n < 1) {
  throw new Error("usage: client.ts --url URL --queue Q --reply-queue R --n N; run bench/run.ts");
}

const sentAt = new Float64Array(n);
const latencyMs = new Float64Array(n);
let received = 0;
let unacked = 0;
let allReplies!: () => void;
const done = new Promise<void>((resolve) => (allReplies = resolve));

function onReply(channel: Channel, msg: ConsumeMessage): void {
  const index = Number(msg.properties.correlationId);
  latencyMs[received++] = performance.now() - sentAt[index]!;
  if (++unacked >= ACK_BATCH || received === n) {
    channel.ack(msg, true);
    unacked = 0;
  }
  if (received === n) allReplies();
}

/** With a rate, waits until message `i` is due; sleeps under 1 ms are skipped, as dtest does. */
async function pace(i: number, started: number): Promise<void> {
  if (!rate) return;

  const wait = started + (i / rate) * 1000 - performance.now();
  if (wait >= 1) await Bun.sleep(wait);
}

async function publishAll(channel: ConfirmChannel, queue: string, replyTo: string): Promise<void> {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    await pace(i, started);
    const body = Buffer.from(`{"i":${i}}`);
    sentAt[i] = performance.now();
    const options = { persistent: true, replyTo, correlationId: String(i) };
    const ok = channel.publish("", queue, body, options);
    // amqplib buffers without limit; waiting for `drain` keeps memory flat, as a fair client would.
    if (!ok) await once(channel, "drain");
  }
  await channel.waitForConfirms();
}

// Nagle off, as dtest sets it: otherwise a reply can wait ~40 ms on a delayed ACK.
const connection = await amqp.connect(values.url, { noDelay: true });
const replies = await connection.createChannel();
await replies.prefetch(ACK_BATCH * 10);
await replies.consume(values["reply-queue"], (msg) => msg && onReply(replies, msg));
const tasks = await connection.createConfirmChannel();

const started = performance.now();
await publishAll(tasks, values.queue, values["reply-queue"]);
const publishedMs = performance.now() - started;
await done;
const seconds = (performance.now() - started) / 1000;

await connection.close();
const result = {
  n,
  seconds,
  rate: n / seconds,
  publish_confirmed_ms: publishedMs,
  latency_ms: latencySummary(latencyMs),
};
process.stdout.write(`${JSON.stringify(result)}\n`);
