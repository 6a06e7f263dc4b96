/**
 * Celery's remote control ("pidbox") on both sides. A worker answers broadcast commands on
 * the `celery.pidbox` fanout exchange (ping, active_queues, stats, hello), so `celery inspect`
 * sees dtest workers; and a client can broadcast a command and gather every worker's answer,
 * so dtest sees Celery workers. Declarations match Celery's exactly (spec section 1).
 */
import type { Channel, ConsumeMessage } from "amqplib";

import { CONTENT_ENCODING, CONTENT_TYPE, tagIntegers } from "./protocol.ts";

export const PIDBOX_EXCHANGE = "celery.pidbox";
export const REPLY_EXCHANGE = "reply.celery.pidbox";
const QUEUE_ARGS = { "x-expires": 10000, "x-message-ttl": 300000 };

export interface ControlRequest {
  method: string;
  arguments?: Record<string, unknown>;
  destination?: string[] | null;
  ticket?: string;
  reply_to?: { exchange: string; routing_key: string };
}

export interface WorkerFacts {
  hostname: string;
  queues: string[];
  stats: () => Record<string, unknown>;
}

/** kombu's description of a queue, as `inspect active_queues` returns it. */
export function kombuQueue(name: string): Record<string, unknown> {
  return {
    name,
    exchange: {
      name,
      type: "direct",
      arguments: null,
      durable: true,
      passive: false,
      auto_delete: false,
      delivery_mode: null,
      no_declare: false,
    },
    routing_key: name,
    queue_arguments: null,
    binding_arguments: null,
    consumer_arguments: null,
    durable: true,
    exclusive: false,
    auto_delete: false,
    no_ack: false,
    alias: null,
    bindings: [],
    no_declare: null,
    expires: null,
    message_ttl: null,
    max_length: null,
    max_length_bytes: null,
    max_priority: null,
  };
}

/** What a worker answers to one command; undefined means "not for me / no answer". */
export function answer(request: ControlRequest, facts: WorkerFacts): unknown {
  switch (request.method) {
    case "ping":
      return { ok: "pong" };
    case "active_queues":
      return facts.queues.map(kombuQueue);
    case "stats":
      return facts.stats();
    case "hello":
      return { revoked: {}, clock: 0 };
    default:
      return { error: `No such control command: ${request.method}` };
  }
}

function isForMe(
  request: ControlRequest,
  hostname: string,
  headers: Record<string, unknown> | undefined,
): boolean {
  const expires = Number(headers?.expires ?? 0);
  if (expires && expires * 1000 < Date.now()) return false;
  if (request.method === "hello" && request.arguments?.from_node === hostname) return false;
  return !request.destination || request.destination.includes(hostname);
}

/** Declares this worker's control queue and answers commands on `channel`. */
export async function serveControl(
  channel: Channel,
  facts: WorkerFacts,
  onError: (err: Error) => void,
): Promise<void> {
  const queue = `${facts.hostname}.celery.pidbox`;
  await channel.assertExchange(PIDBOX_EXCHANGE, "fanout", { durable: false });
  await channel.assertQueue(queue, { durable: false, autoDelete: true, arguments: QUEUE_ARGS });
  await channel.bindQueue(queue, PIDBOX_EXCHANGE, "");
  await channel.assertExchange(REPLY_EXCHANGE, "direct", { durable: false });

  let clock = 0;
  await channel.consume(
    queue,
    (msg) => {
      if (!msg) return;
      try {
        const request = JSON.parse(msg.content.toString("utf8")) as ControlRequest;
        if (!isForMe(request, facts.hostname, msg.properties.headers)) return;

        const value = answer(request, facts);
        if (!request.reply_to || !request.ticket) return;
        channel.publish(
          request.reply_to.exchange,
          request.reply_to.routing_key,
          Buffer.from(JSON.stringify({ [facts.hostname]: value })),
          {
            contentType: CONTENT_TYPE,
            contentEncoding: CONTENT_ENCODING,
            deliveryMode: 1,
            headers: tagIntegers({ ticket: request.ticket, clock: ++clock }) as Record<
              string,
              unknown
            >,
          },
        );
      } catch (err) {
        // A malformed control message must not stop the worker; it is logged and skipped.
        onError(err as Error);
      }
    },
    { noAck: true },
  );
}

/**
 * Broadcasts a command and gathers replies for `ms`: `{hostname: value}` per worker. The
 * reply queue is declared as a Celery client declares its own.
 */
export async function broadcast(
  channel: Channel,
  method: string,
  ms: number,
): Promise<Record<string, unknown>> {
  const oid = crypto.randomUUID();
  const queue = `${oid}.reply.celery.pidbox`;
  await channel.assertExchange(PIDBOX_EXCHANGE, "fanout", { durable: false });
  await channel.assertExchange(REPLY_EXCHANGE, "direct", { durable: false });
  await channel.assertQueue(queue, { durable: false, autoDelete: true, arguments: QUEUE_ARGS });
  await channel.bindQueue(queue, REPLY_EXCHANGE, oid);

  const ticket = crypto.randomUUID();
  const replies: Record<string, unknown> = {};
  await channel.consume(
    queue,
    (msg: ConsumeMessage | null) => {
      if (!msg || msg.properties.headers?.ticket !== ticket) return;
      try {
        Object.assign(replies, JSON.parse(msg.content.toString("utf8")));
      } catch {
        // A reply that is not JSON is not an answer to this broadcast.
      }
    },
    { noAck: true },
  );

  const body = {
    method,
    arguments: {},
    destination: null,
    pattern: null,
    matcher: null,
    ticket,
    reply_to: { exchange: REPLY_EXCHANGE, routing_key: oid },
  };
  channel.publish(PIDBOX_EXCHANGE, "", Buffer.from(JSON.stringify(body)), {
    contentType: CONTENT_TYPE,
    contentEncoding: CONTENT_ENCODING,
    deliveryMode: 2,
    headers: { clock: { "!": "int", value: 1 }, expires: Date.now() / 1000 + ms / 1000 },
  });

  await Bun.sleep(ms);
  await channel.deleteQueue(queue);
  return replies;
}
