/**
 * Poison messages published straight to a work queue. Each one the worker cannot run is
 * answered FAILURE (when it names a reply queue) and parked in `<queue>.dead` with the
 * reason; integers of every AMQP width, including py-amqp's unsigned 64-bit `L` that amqplib
 * cannot read, are decoded and run. Through all of it the worker stays up and keeps serving.
 */
import { describe, expect, test } from "bun:test";

import { encodeTask, newTask, tagIntegers } from "../core/protocol.ts";
import { BROKER_URL, workerUnderTest } from "./helpers.ts";

const t = workerUnderTest("tasks:\n  task_a: { kind: noop }\n");
const { qa, qb, replies, next } = t;
const dead = `${qa}.dead`;
const EMBED = { callbacks: null, errbacks: null, chain: null, chord: null };

function send(
  body: Buffer | string,
  headers: Record<string, unknown>,
  props: Record<string, unknown> = {},
) {
  const id = typeof headers.id === "string" ? headers.id : crypto.randomUUID();
  t.ch.sendToQueue(qa, Buffer.from(body), {
    contentType: "application/json",
    correlationId: id,
    replyTo: replies,
    headers,
    ...props,
  });
  return id;
}

const validBody = JSON.stringify([[], {}, EMBED]);

describe("poison messages are answered, parked with the reason, and the worker keeps serving", () => {
  const cases: [string, () => string, string, string][] = [
    [
      "a body that is not JSON",
      () => send("{{{", { task: "task_a", id: crypto.randomUUID() }),
      "body is not valid JSON",
      "ProtocolError",
    ],
    [
      "a protocol v1 body (a dict)",
      () => send('{"task": "task_a", "args": []}', { task: "task_a", id: crypto.randomUUID() }),
      "body must be [args, kwargs, embed]",
      "ProtocolError",
    ],
    [
      "args that are not a list",
      () => send('["x", {}, {}]', { task: "task_a", id: crypto.randomUUID() }),
      "body must be [args, kwargs, embed]",
      "ProtocolError",
    ],
    [
      "a 10 MB body",
      () => send(Buffer.alloc(10 * 1024 * 1024, 0x61), { task: "task_a", id: crypto.randomUUID() }),
      "exceeds the 1048576-byte limit",
      "ProtocolError",
    ],
    [
      "no task header",
      () => send(validBody, { id: crypto.randomUUID() }),
      "header task must be a non-empty string",
      "ProtocolError",
    ],
    [
      "a task header that is a number",
      () => send(validBody, { task: 42, id: crypto.randomUUID() }),
      "header task must be a non-empty string",
      "ProtocolError",
    ],
    [
      "retries as a string",
      () => send(validBody, { task: "task_a", id: crypto.randomUUID(), retries: "two" }),
      'header retries must be an integer ≥ 0; got "two"',
      "ProtocolError",
    ],
    [
      "an eta that is not a time",
      () => send(validBody, { task: "task_a", id: crypto.randomUUID(), eta: "soon" }),
      "header eta must be an ISO-8601 time",
      "ProtocolError",
    ],
    [
      "no content type",
      () =>
        send(validBody, { task: "task_a", id: crypto.randomUUID() }, { contentType: undefined }),
      "content_type must be application/json; got none",
      "ProtocolError",
    ],
    [
      "an unknown task",
      () => send(validBody, { task: "proj.tasks.nope", id: crypto.randomUUID() }),
      "task proj.tasks.nope is not registered",
      "NotRegistered",
    ],
    [
      "a task for another queue",
      () => send(validBody, { task: "task_b", id: crypto.randomUUID() }),
      `task_b belongs to queue ${qb}`,
      "WrongQueue",
    ],
    [
      "a Celery chord",
      () =>
        send(
          JSON.stringify([
            [],
            {},
            { ...EMBED, chord: { task: "join", args: [], kwargs: {}, options: {} } },
          ]),
          { task: "task_a", id: crypto.randomUUID() },
        ),
      "chords are not supported",
      "ProtocolError",
    ],
    [
      "an eta a year away",
      () =>
        send(validBody, {
          task: "task_a",
          id: crypto.randomUUID(),
          eta: new Date(Date.now() + 365 * 86400e3).toISOString(),
        }),
      "is more than 24 h away",
      "ProtocolError",
    ],
  ];

  test.each(cases)("%s", async (_name, publish, reason, excType) => {
    const id = publish();

    const reply = JSON.parse((await next(replies)).content.toString());
    expect(reply.task_id).toBe(id);
    expect(reply.status).toBe("FAILURE");
    expect(reply.result.exc_type).toBe(excType);

    const parked = await next(dead, 10_000);
    expect(String(parked.properties.headers?.["x-dtest-reason"])).toContain(reason);
    expect(parked.properties.headers?.["x-dtest-queue"]).toBe(qa);
    expect(t.worker.child.exitCode).toBeNull();
  });

  test("a message with no id and no reply queue is still parked, never dropped", async () => {
    t.ch.sendToQueue(qa, Buffer.from("garbage"), { contentType: "text/plain" });
    const parked = await next(dead);
    expect(parked.content.toString()).toBe("garbage");
    expect(String(parked.properties.headers?.["x-dtest-reason"])).toContain(
      "content_type must be application/json",
    );
  });

  test.each([
    ["byte"],
    ["unsignedbyte"],
    ["short"],
    ["unsignedshort"],
    ["int"],
    ["unsignedint"],
    ["long"],
  ])("retries sent as an AMQP %s integer decodes and the task runs", async (type) => {
    const task = newTask({ name: "task_a", args: [1], kwargs: {}, replyTo: replies });
    const { content, options } = encodeTask(task);
    t.ch.sendToQueue(qa, content, {
      ...options,
      headers: { ...options.headers, retries: { "!": type, value: 0 } },
    });

    const reply = JSON.parse((await next(replies)).content.toString());
    expect(reply).toMatchObject({ task_id: task.id, status: "SUCCESS" });
  });

  test("a py-amqp unsigned 64-bit (L) header, which amqplib cannot read, does not kill the worker", async () => {
    const id = crypto.randomUUID();
    const script = `
import amqp, json, sys
with amqp.Connection("${new URL(BROKER_URL).host}", userid="guest", password="guest") as c:
    body = json.dumps([[], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    headers = {"task": "task_a", "id": "${id}", "retries": 0, "custom": 2**40}
    msg = amqp.Message(body, content_type="application/json", correlation_id="${id}", reply_to="${replies}", application_headers=headers)
    c.channel().basic_publish(msg, exchange="", routing_key="${qa}")
`;
    const py = Bun.spawnSync(["/usr/bin/python3", "-c", script], { stderr: "pipe" });
    expect(py.stderr.toString()).toBe("");
    expect(py.exitCode).toBe(0);

    const reply = JSON.parse((await next(replies)).content.toString());
    expect(reply).toMatchObject({ task_id: id, status: "SUCCESS" });
    expect(t.worker.output).not.toContain("Unexpected type tag");
  });

  test("after every poison message the worker still serves a normal task", async () => {
    const task = newTask({ name: "task_a", args: ["still", "here"], kwargs: {}, replyTo: replies });
    const { content, options } = encodeTask(task);
    t.ch.sendToQueue(qa, content, {
      ...options,
      headers: tagIntegers(options.headers) as Record<string, unknown>,
    });

    const reply = JSON.parse((await next(replies)).content.toString());
    expect(reply.status).toBe("SUCCESS");
    expect(reply.result.result).toEqual(["still", "here"]);
    expect(t.worker.child.exitCode).toBeNull();
    expect(t.worker.output).not.toMatch(/Unhandled|uncaught|^\s+at /im);
  });
});
