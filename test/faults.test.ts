/**
 * Faults under load, against the real broker and the compiled binary: a worker killed, the
 * broker restarted three times, a worker stopped with SIGTERM (once, and twice), a task past
 * its time limit. Every task must be reported exactly once, and no process may show an
 * unhandled error.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";

import type { ChannelModel } from "amqplib";

import {
  connectTestBroker,
  deleteQueues,
  requireBinary,
  run,
  start,
  startWorker,
  stopAll,
  tempDir,
  uniqueName,
  writeConfig,
  type Proc,
} from "./helpers.ts";

let conn: ChannelModel | undefined;
const queues: string[] = [];

beforeAll(async () => {
  await requireBinary();
  conn = await connectTestBroker();
});

afterAll(async () => {
  conn = await connectTestBroker();
  await deleteQueues(
    conn,
    queues.flatMap((q) => [q, `${q}.dead`]),
  );
  await conn.close();
});

function setup(tasks: (q: string) => string): { file: string; q: string } {
  const q = uniqueName("fq");
  queues.push(q);
  return { q, file: writeConfig(tempDir(), tasks(q)) };
}

/** The counts line of a load-test report. */
function counts(stdout: string) {
  const m = /Tasks: sent (\d+), succeeded (\d+), failed (\d+), lost (\d+), duplicates (\d+)/.exec(
    stdout,
  );
  if (!m) throw new Error(`no counts line in:\n${stdout}`);
  const [sent, succeeded, failed, lost, duplicates] = m.slice(1).map(Number);
  return { sent, succeeded, failed, lost, duplicates };
}

const UNHANDLED = /Unhandled|uncaught|^\s+at .*\(|^TypeError|^Error:/m;

function expectNoUnhandledErrors(...procs: Proc[]): void {
  for (const p of procs) expect(p.stderr).not.toMatch(UNHANDLED);
}

describe("faults", () => {
  test("SIGKILL of one of two workers in a 1,000-task run: every task completes, each once", async () => {
    const { file, q } = setup(
      (q) => `task_routing:\n  work: ${q}\ntasks:\n  work: { kind: hello, duration: 0.005 }\n`,
    );
    const victim = await startWorker(q, file, ["--concurrency", "10"]);
    const survivor = await startWorker(q, file, ["--concurrency", "10"]);
    const load = start(["load-test", "--config", file, "--tasks", "1000", "--timeout", "120"]);

    try {
      await victim.waitFor(/work\[[0-9a-f-]+\] succeeded/);
      victim.child.kill("SIGKILL");
      expect(await load.exit()).toBe(0);
    } finally {
      victim.child.kill("SIGKILL");
      await stopAll([survivor]);
    }

    expect(counts(load.stdout)).toMatchObject({ sent: 1000, succeeded: 1000, failed: 0, lost: 0 });
    console.log(`SIGKILL: ${load.stdout.match(/Tasks: .*/)?.[0]}`);
    expectNoUnhandledErrors(load, survivor);
  }, 180_000);

  test("RabbitMQ restarted three times during a 10,000-task load test: all reported exactly once", async () => {
    const { file, q } = setup(
      (q) => `task_routing:\n  work: ${q}\ntasks:\n  work: { kind: noop }\n`,
    );
    const workers = [
      await startWorker(q, file, ["--concurrency", "50", "--log-level", "info"]),
      await startWorker(q, file, ["--concurrency", "50", "--log-level", "info"]),
    ];
    const load = start([
      "load-test",
      "--config",
      file,
      "--tasks",
      "10000",
      "--rate",
      "400",
      "--timeout",
      "120",
    ]);

    // This test's own connection would only die with the broker; it reconnects in afterAll.
    await conn?.close();
    conn = undefined;
    try {
      for (let i = 0; i < 3; i++) {
        await Bun.sleep(3000);
        expect(Bun.spawnSync(["rabbitmqctl", "stop_app"]).exitCode).toBe(0);
        expect(Bun.spawnSync(["rabbitmqctl", "start_app"]).exitCode).toBe(0);
      }
      expect(await load.exit()).toBe(0);
    } finally {
      load.child.kill("SIGKILL");
      await stopAll(workers);
    }
    const c = counts(load.stdout);
    console.log(`broker restarts: ${load.stdout.match(/Tasks: .*/)?.[0]}`);
    expect(c).toMatchObject({ sent: 10000, succeeded: 10000, failed: 0, lost: 0 });
    for (const w of workers) {
      expect(w.stderr.match(/connection lost/g)?.length).toBeGreaterThanOrEqual(3);
      expect(w.child.exitCode).toBe(0);
    }
    expect(load.stderr).toMatch(/connection lost/);
    expectNoUnhandledErrors(load, ...workers);
  }, 240_000);

  test("SIGTERM under load: in-flight tasks finish, the worker exits 0, nothing lost or duplicated", async () => {
    const { file, q } = setup(
      (q) => `task_routing:\n  work: ${q}\ntasks:\n  work: { kind: hello, duration: 0.3 }\n`,
    );
    const stopping = await startWorker(q, file, ["--concurrency", "4"]);
    const other = await startWorker(q, file, ["--concurrency", "4"]);
    const load = start(["load-test", "--config", file, "--tasks", "40", "--timeout", "60"]);

    await stopping.waitFor(/work\[[0-9a-f-]+\] received/);
    stopping.child.kill("SIGTERM");
    expect(await stopping.exit()).toBe(0);
    expect(stopping.stderr).toMatch(/stopping: [1-4] task\(s\) in flight/);
    expect(stopping.stderr).not.toContain("requeueing");

    expect(await load.exit()).toBe(0);
    await stopAll([other]);
    expect(counts(load.stdout)).toEqual({
      sent: 40,
      succeeded: 40,
      failed: 0,
      lost: 0,
      duplicates: 0,
    });
    expectNoUnhandledErrors(load, stopping, other);
  }, 120_000);

  test.each([
    ["the grace period ends", ["--grace", "0.3"], false],
    ["a second signal arrives", ["--grace", "60"], true],
  ])(
    "when %s, unfinished tasks are requeued, not dropped",
    async (_name, flags, twice) => {
      const { file, q } = setup(
        (q) => `task_routing:\n  long: ${q}\ntasks:\n  long: { kind: hello, duration: 2 }\n`,
      );
      const stopping = await startWorker(q, file, ["--concurrency", "3", ...flags]);
      const load = start(["load-test", "--config", file, "--tasks", "3", "--timeout", "60"]);

      await stopping.waitFor(/(long\[[0-9a-f-]+\] received[\s\S]*){3}/);
      stopping.child.kill("SIGTERM");
      if (twice) {
        await stopping.waitFor("stopping gracefully");
        stopping.child.kill("SIGTERM");
      }
      expect(await stopping.exit()).toBe(0);
      expect(stopping.stderr).toContain("3 task(s) still running; requeueing them");

      const rescuer = await startWorker(q, file, ["--concurrency", "3"]);
      expect(await load.exit()).toBe(0);
      await stopAll([rescuer]);
      expect(counts(load.stdout)).toEqual({
        sent: 3,
        succeeded: 3,
        failed: 0,
        lost: 0,
        duplicates: 0,
      });
      expectNoUnhandledErrors(load, stopping, rescuer);
    },
    60_000,
  );

  test("an exec task past its time limit is killed with its whole process group; the worker carries on", async () => {
    const marker = `${Math.floor(Math.random() * 1e6)}.5`;
    const { file, q } = setup(
      (q) => `
task_routing:
  hang: ${q}
  quick: ${q}
retry_config: { max_retries: 0 }
tasks:
  hang:
    kind: exec
    command: ["sh", "-c", "sleep ${marker} & sleep ${marker}; wait"]
    timeout: 0.5
  quick: { kind: noop }
`,
    );
    const worker = await startWorker(q, file);

    try {
      const hung = await run(["load-test", "--config", file, "--task", "hang", "--tasks", "1"]);
      expect(counts(hung.stdout)).toMatchObject({ sent: 1, failed: 1 });
      expect(worker.stderr).toContain("TimeLimitExceeded: timed out after 0.5 s");
      const left = Bun.spawnSync(["pgrep", "-f", `sleep ${marker}`])
        .stdout.toString()
        .trim();
      expect(left).toBe("");

      const after = await run(["load-test", "--config", file, "--task", "quick", "--tasks", "5"]);
      expect(counts(after.stdout)).toMatchObject({ sent: 5, succeeded: 5 });
      expectNoUnhandledErrors(worker);
    } finally {
      await stopAll([worker]);
    }
  }, 60_000);
});
