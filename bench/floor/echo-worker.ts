/**
 * The floor's echo worker: the least a worker can do and still keep dtest's guarantees.
 *
 *   bun bench/floor/echo-worker.ts --url URL --queue QUEUE --prefetch P
 *
 * Consumes QUEUE with prefetch P, publishes each message's body back to its `reply_to` through
 * the default exchange (persistent, on a confirm channel) and acks the task only once the
 * broker has confirmed the reply, as a dtest worker does. Prints `consuming QUEUE` on stderr
 * when ready; SIGTERM stops it.
 */
import { parseArgs } from "node:util";

import amqp, { type ConfirmChannel, type ConsumeMessage } from "amqplib";

const { values } = parseArgs({
  options: { url: { type: "string" }, queue: { type: "string" }, prefetch: { type: "string" } },
});
if (!values.url || !values.queue || !values.prefetch) {
  throw new Error("usage: echo-worker.ts --url URL --queue QUEUE --prefetch P; run bench/run.ts");
}

function echo(channel: ConfirmChannel, msg: ConsumeMessage): void {
  const { replyTo, correlationId } = msg.properties;
  const options = { correlationId, persistent: true };
  channel.publish("", replyTo, msg.content, options, (err) => {
    if (err) process.stderr.write(`reply to ${correlationId} not confirmed: ${err.message}\n`);
    else channel.ack(msg);
  });
}

// Nagle off, as dtest sets it: otherwise a reply can wait ~40 ms on a delayed ACK.
const connection = await amqp.connect(values.url, { noDelay: true });
const channel = await connection.createConfirmChannel();
await channel.prefetch(Number(values.prefetch));
const { consumerTag } = await channel.consume(values.queue, (msg) => msg && echo(channel, msg));
process.stderr.write(`consuming ${values.queue}\n`);

process.once("SIGTERM", async () => {
  await channel.cancel(consumerTag);
  await channel.waitForConfirms();
  await connection.close();
  process.exit(0);
});
