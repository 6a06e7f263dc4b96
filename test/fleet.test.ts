/**
 * `status`, `monitor` and `scale` against the real broker, with dtest workers and with
 * events captured from a real Celery worker.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { ChannelModel } from "amqplib";

import { encodeTask, newTask } from "../core/protocol.ts";
import {
  connectTestBroker,
  deleteQueues,
  drainQueue,
  requireBinary,
  run,
  start,
  startWorker,
  stopAll,
  tempDir,
  uniqueName,
  writeConfig,
} from "./helpers.ts";

let conn: ChannelModel;
const qa = uniqueName("qa");
const qb = uniqueName("qb");
let file: string;

beforeAll(async () => {
  await requireBinary();
  conn = await connectTestBroker();
  file = writeConfig(
    tempDir(),
    `
task_routing:
  task_a: ${qa}
  task_b: ${qb}
`,
  );
});

afterAll(async () => {
  await deleteQueues(conn, [qa, qb, `${qa}.dead`, `${qb}.dead`]);
  await conn.close();
});

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

describe("status", () => {
  test("--json shows consumers, ready messages and live workers per routed queue", async () => {
    const worker = await startWorker(qa, file);
    const ch = await conn.createChannel();
    await ch.assertQueue(qb, { durable: true });
    const { content, options } = encodeTask(
      newTask({ name: "task_b", args: [], kwargs: {}, replyTo: "" }),
    );
    ch.sendToQueue(qb, content, options);
    await ch.close();

    try {
      const result = await run(["status", "--config", file, "--json"]);
      const status = JSON.parse(result.stdout);
      expect(status.queues).toEqual([
        { queue: qa, consumers: 1, ready: 0, unacked: 0, deadLetters: 0 },
        { queue: qb, consumers: 0, ready: 1, unacked: 0, deadLetters: 0 },
      ]);
      expect(status.workers).toEqual([
        expect.objectContaining({
          hostname: expect.stringMatching(/^worker-/),
          queues: [qa],
          software: "dtest 0.1.0",
        }),
      ]);
      expect(result.code).toBe(0);
    } finally {
      await stopAll([worker]);
    }
  });

  test("the text table names each queue with its counts", async () => {
    const result = await run(["status", "--config", file, "--listen", "0.2"]);
    expect(result.stdout).toMatch(new RegExp(`^${qa}\\s+0\\s+0\\s+0\\s+0$`, "m"));
    expect(result.code).toBe(0);
  });
});

describe("monitor", () => {
  test("--json follows a dtest worker joining, running a task and leaving", async () => {
    const monitor = start(["monitor", "--config", file, "--json"]);
    await monitor.waitFor("following the celeryev stream");
    const worker = await startWorker(qa, file);

    const result = await run([
      "dispatch",
      "--config",
      writeConfig(tempDir(), `task_routing:\n  task_a: ${qa}\n`),
    ]);
    expect(result.code).toBe(0);
    await stopAll([worker]);
    await monitor.waitFor('"type":"worker-offline"');
    monitor.child.kill("SIGINT");
    expect(await monitor.exit()).toBe(0);

    const events = jsonLines(monitor.stdout);
    const types = events.map((e) => e.type);
    for (const type of [
      "worker-online",
      "task-received",
      "task-started",
      "task-succeeded",
      "worker-offline",
    ]) {
      expect(types).toContain(type);
    }
    const succeeded = events.find((e) => e.type === "task-succeeded")!;
    expect(succeeded).toMatchObject({ name: "task_a", queue: qa });
    expect(Number(succeeded.runtime)).toBeGreaterThanOrEqual(0.1);
  });

  test("task events flow only while something listens, from the next heartbeat on", async () => {
    const name = `${uniqueName("quiet")}@fleet`;
    const ch = await conn.createChannel();
    await ch.assertExchange("celeryev", "topic", { durable: true });
    // Bound to task events only: worker events find no queue, so the worker sees no listener.
    const taskEvents = uniqueName("ev-tasks");
    await ch.assertQueue(taskEvents, { exclusive: true });
    await ch.bindQueue(taskEvents, "celeryev", "task.#");
    const fromWorker = async () =>
      (await drainQueue(ch, taskEvents))
        .flatMap((msg) => [JSON.parse(msg.content.toString())].flat())
        .filter((e) => e.hostname === name)
        .map((e) => e.type);
    const dispatch = async () => {
      const config = writeConfig(tempDir(), `task_routing:\n  task_a: ${qa}\n`);
      expect((await run(["dispatch", "--config", config])).code).toBe(0);
      await Bun.sleep(300); // task events are batched for up to 100 ms
    };
    const worker = await startWorker(qa, file, ["--name", name]);

    try {
      await dispatch();
      expect(await fromWorker()).toEqual([]);

      const everything = uniqueName("ev-all");
      await ch.assertQueue(everything, { exclusive: true });
      await ch.bindQueue(everything, "celeryev", "#");
      await Bun.sleep(2500); // the next heartbeat finds the listener
      await dispatch();
      expect(await fromWorker()).toEqual(["task-received", "task-started", "task-succeeded"]);
    } finally {
      await stopAll([worker]);
      await ch.close();
    }
  });

  test("shows a Celery worker's batched task events, placing the task by the config's routing", async () => {
    const monitor = start(["monitor", "--config", file, "--interval", "0.3"]);
    await monitor.waitFor("following the celeryev stream");

    const ch = await conn.createChannel();
    for (const name of [
      "event.worker-online.json",
      "event.task-multi.received.json",
      "event.task-multi.succeeded.json",
    ]) {
      const captured = JSON.parse(
        readFileSync(join(import.meta.dir, "fixtures/celery", name), "utf8"),
      );
      ch.publish("celeryev", captured.routing_key, Buffer.from(captured.body_raw), {
        contentType: "application/json",
        headers: captured.properties.headers,
      });
    }
    await ch.close();

    await monitor.waitFor(/succeeded celery_app\.task_a\[54e1685c/);
    await monitor.waitFor(/-- \S+: workers \d, received 1, succeeded 1/);
    monitor.child.kill("SIGINT");
    await monitor.exit();

    expect(monitor.stdout).toContain("worker joined  w1@vm (?, py-celery)");
    expect(monitor.stdout).toContain(
      `received  celery_app.task_b[2802f484-b17c-4e69-af0d-b5734086f7c8] on w1@vm (${qb})`,
    );
  });
});

describe("scale", () => {
  test("with no compose tool on PATH it names what to install, exit 2", async () => {
    const dir = tempDir();
    writeConfig(
      dir,
      "services:\n  worker-a:\n    command: [worker, --queue, queue_a]\n",
      "docker-compose.yml",
    );
    const result = await run(
      ["scale", "worker-a", "2", "--config", file],
      { PATH: "/nonexistent", COMPOSE_FILE: "" },
      dir,
    );

    expect(result.stderr).toContain("no compose tool found");
    expect(result.stderr).toContain("install Docker Compose");
    expect(result.code).toBe(2);
  });

  test.each([
    [["scale"], "scale needs a service and a count"],
    [["scale", "worker-a"], "scale needs a count"],
    [["scale", "worker-a", "-1"], "--count must be a whole number ≥ 0"],
    [["scale", "worker-z", "1"], "no worker service named worker-z"],
  ])("usage error %p exits 2", async (args, message) => {
    const result = await run([...args, "--config", file]);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(2);
  });
});
