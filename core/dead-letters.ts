/**
 * Reading and requeueing dead-lettered messages: what a worker parked in `<queue>.dead`,
 * why, and putting it back on its work queue once the cause is fixed.
 */
import type { ConfirmChannel, GetMessage, RecoveringChannelModel } from "amqplib";

import { deadLetterQueue, inspectQueues } from "./broker.ts";
import { tagIntegers } from "./protocol.ts";

export interface DeadLetter {
  queue: string;
  id: string | null;
  task: string | null;
  reason: string;
  worker: string | null;
  time: string | null;
  bytes: number;
}

const DTEST_HEADERS = ["x-dtest-reason", "x-dtest-queue", "x-dtest-worker", "x-dtest-time"];

function describe(queue: string, msg: GetMessage): DeadLetter {
  const h = msg.properties.headers ?? {};
  const text = (v: unknown) => (typeof v === "string" ? v : null);
  return {
    queue,
    id: text(h.id) ?? text(msg.properties.correlationId),
    task: text(h.task),
    reason: text(h["x-dtest-reason"]) ?? "(no reason recorded)",
    worker: text(h["x-dtest-worker"]),
    time: text(h["x-dtest-time"]),
    bytes: msg.content.length,
  };
}

/**
 * Visits up to `limit` dead letters of each queue. `decide` returns true to move a message
 * back to its work queue; the others are returned to the dead-letter queue untouched.
 */
async function visit(
  model: RecoveringChannelModel,
  queues: string[],
  limit: number,
  decide: (letter: DeadLetter) => boolean,
): Promise<{ seen: DeadLetter[]; moved: number }> {
  const existing = (await inspectQueues(model, queues.map(deadLetterQueue))).filter(
    (s) => s.exists,
  );
  const channel = await model.createConfirmChannel();
  const seen: DeadLetter[] = [];
  let moved = 0;

  try {
    for (const state of existing) {
      const queue = state.queue.slice(0, -".dead".length);
      for (let i = 0; i < limit; i++) {
        const msg = await channel.get(state.queue, { noAck: false });
        if (!msg) break;

        const letter = describe(queue, msg);
        seen.push(letter);
        if (decide(letter)) {
          await republish(channel, queue, msg);
          channel.ack(msg);
          moved++;
        }
      }
    }
  } finally {
    // Closing the channel returns every message it got and did not ack to its queue.
    await channel.close();
  }
  return { seen, moved };
}

function republish(channel: ConfirmChannel, queue: string, msg: GetMessage): Promise<void> {
  const p = msg.properties;
  const headers = Object.fromEntries(
    Object.entries(p.headers ?? {}).filter(([k]) => !DTEST_HEADERS.includes(k)),
  );
  return new Promise((resolve, reject) => {
    channel.sendToQueue(
      queue,
      msg.content,
      {
        contentType: p.contentType,
        contentEncoding: p.contentEncoding,
        correlationId: p.correlationId,
        replyTo: p.replyTo,
        priority: p.priority,
        deliveryMode: 2,
        headers: tagIntegers(headers) as Record<string, unknown>,
      },
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

/** Lists up to `limit` dead letters per queue without removing them. */
export async function listDeadLetters(
  model: RecoveringChannelModel,
  queues: string[],
  limit: number,
): Promise<DeadLetter[]> {
  return (await visit(model, queues, limit, () => false)).seen;
}

/** Moves dead letters (all, or those whose task id is in `ids`) back to their work queues. */
export async function requeueDeadLetters(
  model: RecoveringChannelModel,
  queues: string[],
  limit: number,
  ids?: string[],
): Promise<number> {
  return (await visit(model, queues, limit, (l) => !ids || (l.id !== null && ids.includes(l.id))))
    .moved;
}

export function renderDeadLetters(letters: DeadLetter[]): string[] {
  if (letters.length === 0) return ["No dead-lettered messages."];
  return letters.map(
    (l) =>
      `${l.queue}  ${l.task ?? "?"}[${l.id ?? "no id"}]  ${l.bytes} B  ${l.time ?? ""}  ${l.worker ?? ""}\n    reason: ${l.reason}`,
  );
}
