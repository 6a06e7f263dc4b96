/**
 * A worker fed raw messages, as a Celery client or a faulty publisher would send them:
 * Celery-named tasks, tasks for other queues, unknown tasks and undecodable messages.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { WORKER_ENGINE_ENV } from "../core/engine.ts";
import { encodeTask, newTask, tagIntegers } from "../core/protocol.ts";
import {
  deleteQueues,
  startWorker,
  stopAll,
  tempDir,
  uniqueName,
  workerUnderTest,
  writeConfig,
} from "./helpers.ts";

const t = workerUnderTest();
const { qa, qb, replies, next } = t;

function fixture(name: string) {
  return JSON.parse(readFileSync(join(import.meta.dir, "fixtures/celery", name), "utf8"));
}

describe("what the worker runs", () => {
  test("a task sent by Celery as celery_app.task_a runs and replies with the seed's result shape", async () => {
    const captured = fixture("task.task_a.json");
    const id = crypto.randomUUID();
    const headers = { ...captured.properties.headers, id, root_id: id };
    t.ch.sendToQueue(qa, Buffer.from(captured.body_raw), {
      contentType: "application/json",
      contentEncoding: "utf-8",
      correlationId: id,
      replyTo: replies,
      headers: tagIntegers(headers) as Record<string, unknown>,
    });

    const msg = await next(replies);
    const body = JSON.parse(msg.content.toString());
    expect(msg.properties.correlationId).toBe(id);
    expect(body.task_id).toBe(id);
    expect(body.status).toBe("SUCCESS");
    expect(Object.keys(body.result).sort()).toEqual([
      "execution_time",
      "result",
      "retry_count",
      "task",
    ]);
    expect(body.result.result).toBe("Hello from Task A");
    expect(body.result.task).toBe("A");
    expect(body.result.retry_count).toBe(0);
    expect(body.result.execution_time).toBeGreaterThanOrEqual(0.1);
    expect(body.traceback).toBeNull();
    expect(body.children).toEqual([]);
  });

  test("a task routed to another queue is refused with FAILURE naming its queue, and never run", async () => {
    const task = newTask({ name: "task_b", args: [], kwargs: {}, replyTo: replies });
    const { content, options } = encodeTask(task);
    t.ch.sendToQueue(qa, content, options);

    const body = JSON.parse((await next(replies)).content.toString());
    expect(body.status).toBe("FAILURE");
    expect(body.result.exc_type).toBe("WrongQueue");
    expect(body.result.exc_message[0]).toContain(`task_b belongs to queue ${qb}, not ${qa}`);
    expect(t.worker.output).not.toContain(`task_b[${task.id}] received`);

    const parked = await next(`${qa}.dead`);
    expect(parked.properties.headers?.id).toBe(task.id);
    expect(String(parked.properties.headers?.["x-dtest-reason"])).toContain(
      `belongs to queue ${qb}`,
    );
  });

  test("an unknown task gets Celery's NotRegistered FAILURE", async () => {
    const captured = fixture("task.unknown_name.json");
    const id = crypto.randomUUID();
    t.ch.sendToQueue(qa, Buffer.from(captured.body_raw), {
      contentType: "application/json",
      correlationId: id,
      replyTo: replies,
      headers: tagIntegers({ ...captured.properties.headers, id }) as Record<string, unknown>,
    });

    const body = JSON.parse((await next(replies)).content.toString());
    expect(body.status).toBe("FAILURE");
    expect(body.result).toEqual({
      exc_type: "NotRegistered",
      exc_message: [captured.properties.headers.task],
      exc_module: "celery.exceptions",
    });
    await next(`${qa}.dead`);
  });

  test("an undecodable message is dead-lettered with its reason and the worker keeps serving", async () => {
    const id = crypto.randomUUID();
    t.ch.sendToQueue(qa, Buffer.from("this is not json"), {
      contentType: "application/json",
      correlationId: id,
      replyTo: replies,
      headers: { task: "task_a", id },
    });

    const failure = JSON.parse((await next(replies)).content.toString());
    expect(failure.task_id).toBe(id);
    expect(failure.status).toBe("FAILURE");

    const parked = await next(`${qa}.dead`);
    expect(parked.content.toString()).toBe("this is not json");
    expect(String(parked.properties.headers?.["x-dtest-reason"])).toContain(
      "body is not valid JSON",
    );

    const { content, options } = encodeTask(
      newTask({ name: "task_a", args: [], kwargs: {}, replyTo: replies }),
    );
    t.ch.sendToQueue(qa, content, options);
    expect(JSON.parse((await next(replies)).content.toString()).status).toBe("SUCCESS");
  });

  test("an expired task is answered REVOKED and not run", async () => {
    const task = newTask({
      name: "task_a",
      args: [],
      kwargs: {},
      replyTo: replies,
      expires: new Date(Date.now() - 1000),
    });
    const { content, options } = encodeTask(task);
    t.ch.sendToQueue(qa, content, options);

    const body = JSON.parse((await next(replies)).content.toString());
    expect(body.status).toBe("REVOKED");
    expect(body.result.exc_type).toBe("TaskRevokedError");
  });

  test("a task with an eta waits for it, then runs", async () => {
    const eta = new Date(Date.now() + 600);
    const task = newTask({ name: "task_a", args: [], kwargs: {}, replyTo: replies, eta });
    const { content, options } = encodeTask(task);
    t.ch.sendToQueue(qa, content, options);

    const msg = await next(replies);
    expect(Date.now()).toBeGreaterThanOrEqual(eta.getTime());
    expect(JSON.parse(msg.content.toString()).status).toBe("SUCCESS");
  });
});

describe("engine settings", () => {
  const environOf = (pid: number) =>
    Object.fromEntries(
      readFileSync(`/proc/${pid}/environ`, "utf8")
        .split("\0")
        .filter(Boolean)
        .map((entry) => [entry.slice(0, entry.indexOf("=")), entry.slice(entry.indexOf("=") + 1)]),
    );

  test("a worker re-executes itself, same PID, with a small heap and no FTL tier", () => {
    const env = environOf(t.worker.child.pid);
    expect(env).toMatchObject(WORKER_ENGINE_ENV);
    expect(env.DTEST_ENGINE_TUNED!.split(",").sort()).toEqual(
      Object.keys(WORKER_ENGINE_ENV).sort(),
    );
    expect(readFileSync(`/proc/${t.worker.child.pid}/cmdline`, "utf8").split("\0")).toContain(qa);
  });

  test("settings already in the environment win, and DTEST_ENGINE_TUNED=1 turns it off", async () => {
    const file = writeConfig(tempDir(), `task_routing:\n  task_a: ${qa}\n`);
    const chosen = await startWorker(qa, file, [], { BUN_JSC_useFTLJIT: "1" });
    const untouched = await startWorker(qa, file, [], { DTEST_ENGINE_TUNED: "1" });
    try {
      expect(environOf(chosen.child.pid).BUN_JSC_useFTLJIT).toBe("1");
      expect(environOf(chosen.child.pid).BUN_JSC_forceRAMSize).toBeDefined();
      expect(environOf(untouched.child.pid).BUN_JSC_forceRAMSize).toBeUndefined();
    } finally {
      await stopAll([chosen, untouched]);
    }
  });

  test("exec tasks get the environment the worker was started with, not the engine settings", async () => {
    const queue = uniqueName("qenv");
    const file = writeConfig(
      tempDir(),
      `task_routing:\n  show_env: ${queue}\ntasks:\n  show_env: { kind: exec, command: [env] }\n`,
    );
    const envWorker = await startWorker(queue, file, [], { BUN_JSC_useFTLJIT: "1" });
    try {
      const task = newTask({ name: "show_env", args: [], kwargs: {}, replyTo: replies });
      const { content, options } = encodeTask(task);
      t.ch.sendToQueue(queue, content, options);

      const reply = JSON.parse((await next(replies)).content.toString());
      expect(reply.status).toBe("SUCCESS");
      const lines = (reply.result.stdout_tail as string).split("\n");
      expect(lines).toContain("BUN_JSC_useFTLJIT=1");
      expect(lines.filter((l) => /^(BUN_JSC_forceRAMSize|DTEST_ENGINE_TUNED)=/.test(l))).toEqual(
        [],
      );
      expect(environOf(envWorker.child.pid).BUN_JSC_forceRAMSize).toBeDefined();
    } finally {
      await stopAll([envWorker]);
      await deleteQueues(t.conn, [queue, `${queue}.dead`]);
    }
  });
});
