/**
 * `dtest dead-letters`: lists what a worker parked with the reason, and after the cause is
 * fixed, requeues it so it runs.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";

import type { Channel, ChannelModel } from "amqplib";

import { encodeTask, newTask } from "../core/protocol.ts";
import {
  connectTestBroker,
  deleteQueues,
  drainQueue,
  nextMessage,
  requireBinary,
  run,
  startWorker,
  stopAll,
  tempDir,
  uniqueName,
  writeConfig,
} from "./helpers.ts";

let conn: ChannelModel;
let ch: Channel;
const qa = uniqueName("qa");
const replies = uniqueName("replies");

beforeAll(async () => {
  await requireBinary();
  conn = await connectTestBroker();
  ch = await conn.createChannel();
  await ch.assertQueue(replies, { durable: false });
});

afterAll(async () => {
  await deleteQueues(conn, [qa, `${qa}.dead`, replies]);
  await conn.close();
});

const next = (queue: string, ms?: number) => nextMessage(ch, queue, ms);

test("a task refused for a missing route is listed with its reason and runs once requeued after the fix", async () => {
  const dir = tempDir();
  const before = writeConfig(dir, `task_routing:\n  task_a: ${qa}\n`, "before.yml");
  const after = writeConfig(
    dir,
    `task_routing:\n  task_a: ${qa}\n  report: ${qa}\ntasks:\n  report: { kind: noop }\n`,
    "after.yml",
  );

  const old = await startWorker(qa, before);
  const parked = newTask({ name: "report", args: ["weekly"], kwargs: {}, replyTo: replies });
  const other = newTask({ name: "report", args: ["daily"], kwargs: {}, replyTo: replies });
  for (const task of [parked, other]) {
    const { content, options } = encodeTask(task);
    ch.sendToQueue(qa, content, options);
    expect(JSON.parse((await next(replies)).content.toString()).status).toBe("FAILURE");
  }
  await stopAll([old]);

  const listed = await run(["dead-letters", "--config", after, "--json"]);
  const letters = JSON.parse(listed.stdout);
  expect(letters).toHaveLength(2);
  expect(letters[0]).toMatchObject({
    queue: qa,
    id: parked.id,
    task: "report",
    reason: `task report is not registered on this worker`,
  });
  expect(listed.code).toBe(0);

  const text = await run(["dead-letters", "--config", after]);
  expect(text.stdout).toContain(`${qa}  report[${parked.id}]`);
  expect(text.stdout).toContain("reason: task report is not registered on this worker");

  const fixed = await startWorker(qa, after);
  try {
    const moved = await run(["dead-letters", "--config", after, "--requeue", "--id", parked.id]);
    expect(moved.stdout).toContain("Requeued 1 message(s).");

    const reply = JSON.parse((await next(replies)).content.toString());
    expect(reply).toMatchObject({ task_id: parked.id, status: "SUCCESS" });
    expect(reply.result.result).toEqual(["weekly"]);

    const left = JSON.parse((await run(["dead-letters", "--config", after, "--json"])).stdout);
    expect(left.map((l: { id: string }) => l.id)).toEqual([other.id]);
  } finally {
    await stopAll([fixed]);
  }
});

test("--id without --requeue is a usage error", async () => {
  const result = await run(["dead-letters", "--id", "x"]);
  expect(result.stderr).toContain("--id goes with --requeue");
  expect(result.code).toBe(2);
});

test("a worker stopped while refusing messages parks every message it answered", async () => {
  const queue = uniqueName("qs");
  const answers = uniqueName("answers");
  const config = writeConfig(tempDir(), `task_routing:\n  task_a: ${queue}\n`);
  await ch.assertQueue(answers, { durable: false });
  const worker = await startWorker(queue, config, ["--concurrency", "50"]);
  const total = 2000;

  try {
    for (let i = 0; i < total; i++) {
      const task = newTask({ name: "unknown", args: [i], kwargs: {}, replyTo: answers });
      const { content, options } = encodeTask(task);
      ch.sendToQueue(queue, content, options);
    }
    await next(answers);
    await stopAll([worker]);

    const answered = 1 + (await drainQueue(ch, answers)).length;
    const parked = await drainQueue(ch, `${queue}.dead`);
    const waiting = await drainQueue(ch, queue);
    expect(answered).toBeLessThan(total);
    expect(parked.length).toBe(answered);
    expect(parked.length + waiting.length).toBe(total);
  } finally {
    await deleteQueues(conn, [queue, `${queue}.dead`, answers]);
  }
});
