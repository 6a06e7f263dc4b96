/**
 * Interop with real Celery 5.2 on the real broker: a Python client calling dtest workers,
 * `dtest dispatch` driving Celery workers, both kinds of worker sharing one queue under
 * `dtest load-test`, and each side reading the other's events. The Python side lives in
 * test/celery: a Celery app shaped like the system dtest replaces, and a client that prints
 * what it saw as JSON.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { ChannelModel } from "amqplib";

import {
  BROKER_URL,
  connectTestBroker,
  deleteQueues,
  Proc,
  requireBinary,
  ROOT,
  run,
  start,
  tempDir,
  uniqueName,
  writeConfig,
  expectSeedReport,
} from "./helpers.ts";

type Env = Record<string, string>;

/** Debian's python3-celery installs no `celery` script; `python3 -m celery` is the same CLI. */
const PYTHON = process.env.CELERY_PYTHON ?? "/usr/bin/python3";
const CELERY_DIR = join(import.meta.dir, "celery");

// Bun's default is 5 s per test and hook; starting Celery and waiting for heartbeats (every
// 2 s) on a busy machine can take longer.
setDefaultTimeout(30_000);

let conn: ChannelModel;
const queues: string[] = [];
const procs: Proc[] = [];

beforeAll(async () => {
  await requireBinary();
  conn = await connectTestBroker();
  requireCelery();
});

afterAll(async () => {
  await stop(procs);
  await deleteQueues(
    conn,
    queues.flatMap((q) => [q, `${q}.dead`]),
  );
  await conn.close();
});

function requireCelery(): void {
  const check = Bun.spawnSync([PYTHON, "-c", "import celery; print(celery.__version__)"]);
  if (check.exitCode === 0 && check.stdout.toString().startsWith("5.")) return;

  const why = check.stderr.toString().trim().split("\n").pop() || check.stdout.toString().trim();
  throw new Error(
    `Celery 5 is not importable by ${PYTHON} (${why}); install it with ` +
      "`apt-get install python3-celery python3-amqp python3-yaml`, or set CELERY_PYTHON",
  );
}

/** Fresh queue names; afterAll deletes them with their exchanges and dead-letter queues. */
function ownQueues(count: number): string[] {
  const names = Array.from({ length: count }, (_, i) => uniqueName(`q${"abcdef"[i]}`));
  queues.push(...names);
  return names;
}

/** What the Python side needs: the broker, the test's queues, and no .pyc files in the tree. */
function pythonEnv(qa: string, qb: string, extra: Env = {}): Env {
  return {
    ...(process.env as Env),
    CELERY_BROKER_URL: BROKER_URL,
    QUEUE_A: qa,
    QUEUE_B: qb,
    PYTHONPATH: CELERY_DIR,
    PYTHONDONTWRITEBYTECODE: "1",
    PYTHONUNBUFFERED: "1",
    ...extra,
  };
}

function spawnPython(args: string[], env: Env): Proc {
  const child = Bun.spawn([PYTHON, ...args], {
    cwd: CELERY_DIR,
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const proc = new Proc(child);
  procs.push(proc);
  return proc;
}

/** Runs test/celery/client.py and returns the JSON it printed. */
async function client(env: Env, scenario: string, ...tasks: string[]) {
  const proc = spawnPython(["client.py", scenario, ...tasks], env);
  const code = await proc.exit();
  if (code !== 0) {
    throw new Error(`client.py ${scenario} ${tasks.join(" ")} exited ${code}:\n${proc.output}`);
  }
  return JSON.parse(proc.stdout.trim().split("\n").pop()!);
}

/** Starts a dtest worker and waits until it consumes `queue`; afterAll stops any left over. */
async function startDtest(queue: string, file: string, extra: string[] = []): Promise<Proc> {
  const args = ["--queue", queue, "--config", file, "--log-level", "debug", ...extra];
  const proc = start(["worker", ...args]);
  procs.push(proc);
  await proc.waitFor(`consuming ${queue}`);
  return proc;
}

/** Starts a Celery worker (solo pool) on `queue` and waits until it is ready. */
async function startCelery(name: string, queue: string, env: Env, flags: string[] = []) {
  const proc = spawnPython(
    [
      "-m",
      "celery",
      "-A",
      "celery_app",
      "worker",
      "-Q",
      queue,
      "-n",
      name,
      "-P",
      "solo",
      "-c",
      "1",
      "-l",
      "INFO",
      "--without-gossip",
      "--without-mingle",
      ...flags,
    ],
    env,
  );
  await proc.waitFor(`${name} ready.`, 20_000);
  return proc;
}

/** SIGTERM to those still running, then SIGKILL to any that has not exited after 10 s. */
async function stop(list: Proc[]): Promise<void> {
  const running = list.filter((proc) => proc.child.exitCode === null && !proc.child.killed);
  await Promise.all(
    running.map(async (proc) => {
      proc.child.kill("SIGTERM");
      const timer = setTimeout(() => proc.child.kill("SIGKILL"), 10_000);
      await proc.exit();
      clearTimeout(timer);
    }),
  );
}

async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await Bun.sleep(50);
  }
}

/** The seed's test-config.yml with this test's queues. */
function seedConfig(qa: string, qb: string): string {
  const seed = readFileSync(join(ROOT, "test-config.yml"), "utf8");
  const yaml = seed
    .replace("task_a: queue_a", `task_a: ${qa}`)
    .replace("task_b: queue_b", `task_b: ${qb}`);
  return writeConfig(tempDir(), yaml);
}

/** A dtest config with the seed's tasks and the extra ones the Celery app defines too. */
function interopConfig(qa: string, qb: string, dir: string, scenario = ""): string {
  return writeConfig(
    dir,
    `
system: { workers: 2 }
task_routing:
  task_a: ${qa}
  task_b: ${qb}
  fail: ${qa}
  flaky: ${qa}
  noop: ${qa}
retry_config:
  max_retries: 3
  retry_delay: 0.05
  retry_backoff: false
  retry_jitter: false
tasks:
  fail: { kind: exec, command: ["false"], max_retries: 0 }
  flaky:
    kind: exec
    command: ["sh", "-c", "echo run >> ${dir}/runs; test $(wc -l < ${dir}/runs) -ge 3"]
  noop: { kind: noop }
${scenario}`,
  );
}

describe("a Python Celery client calling dtest workers", () => {
  let env: Env;
  let workers: Proc[] = [];

  beforeAll(async () => {
    const [qa, qb] = ownQueues(2) as [string, string];
    const file = interopConfig(qa, qb, tempDir());
    env = pythonEnv(qa, qb);
    workers = await Promise.all([startDtest(qa, file), startDtest(qb, file)]);
  });

  afterAll(() => stop(workers));

  test(".delay().get() returns the seed's result dict for task_a and task_b", async () => {
    const [a, b] = await Promise.all([
      client(env, "get", "celery_app.task_a"),
      client(env, "get", "celery_app.task_b"),
    ]);

    expect(a.state).toBe("SUCCESS");
    const keys = Object.keys(a.result).sort();
    expect(keys).toEqual(["execution_time", "result", "retry_count", "task"]);
    expect(a.result).toMatchObject({ result: "Hello from Task A", task: "A", retry_count: 0 });
    expect(a.result.execution_time).toBeGreaterThanOrEqual(0.1);
    expect(a.result.execution_time).toBeLessThan(0.2);
    expect(b.result).toMatchObject({ result: "Hello from Task B", task: "B", retry_count: 0 });
  });

  test(".state and .ready() poll from PENDING to SUCCESS", async () => {
    const polled = await client(env, "poll", "celery_app.task_a");

    expect(polled.first).toEqual({ state: "PENDING", ready: false });
    expect(polled.states.filter((state: string) => state !== "PENDING")).toEqual([]);
    expect(polled.ready).toBe(true);
    expect(polled.state).toBe("SUCCESS");
    expect(polled.result.result).toBe("Hello from Task A");
  });

  test("a failing exec task raises in Python with the worker's exception and reason", async () => {
    const failed = await client(env, "raises", "celery_app.fail");

    // exc_module "dtest" is no Python module, so Celery makes the class up under
    // celery.exceptions, as it does for any exception type it cannot find.
    expect(failed.type).toBe("ExpectationFailed");
    expect(failed.module).toBe("celery.exceptions");
    expect(failed.message).toBe("expected exit code 0, got 1");
    expect(failed.state).toBe("FAILURE");
  });

  test("a task that fails twice reports RETRY twice, then SUCCESS with retry_count 2", async () => {
    const retried = await client(env, "retry", "celery_app.flaky");

    expect(retried.statuses).toEqual(["RETRY", "RETRY", "SUCCESS"]);
    expect(retried.state).toBe("SUCCESS");
    expect(retried.result).toMatchObject({ result: "exit 0", task: "flaky", retry_count: 2 });
  });

  test("an unknown task raises celery.exceptions.NotRegistered", async () => {
    const unknown = await client(env, "raises", "celery_app.no_such_task");

    expect(unknown.not_registered).toBe(true);
    expect(unknown.type).toBe("NotRegistered");
    expect(unknown.module).toBe("celery.exceptions");
    expect(unknown.message).toBe("'celery_app.no_such_task'");
    expect(unknown.state).toBe("FAILURE");
  });

  // The chain's next step travels in the message body's embed; the worker that finishes a
  // step publishes the next one.
  test("a chain of task_a then task_b runs both and returns task_b's result", async () => {
    const chained = await client(env, "chain", "celery_app.task_a", "celery_app.task_b");

    expect(chained.state).toBe("SUCCESS");
    expect(chained.result).toMatchObject({ result: "Hello from Task B", task: "B" });
  });
});

describe("dtest dispatch driving Celery workers", () => {
  let qa: string;
  let qb: string;
  let workers: Proc[] = [];

  beforeAll(async () => {
    [qa, qb] = ownQueues(2) as [string, string];
    // These workers also register the bare names (task_a), which a plain seed config sends;
    // the last test here routes the dotted names instead.
    const env = pythonEnv(qa, qb, { CELERY_SHORT_NAMES: "1" });
    workers = await Promise.all([
      startCelery(`${uniqueName("celery-a")}@interop`, qa, env, ["--without-heartbeat"]),
      startCelery(`${uniqueName("celery-b")}@interop`, qb, env, ["--without-heartbeat"]),
    ]);
  });

  afterAll(() => stop(workers));

  test("prints the seed's report line for line and exits 0", async () => {
    const result = await run(["dispatch", "--config", seedConfig(qa, qb)]);

    expectSeedReport(result.stdout);
    expect(result.code).toBe(0);
    expect(workers[0]!.output).toMatch(/Task task_a\[[0-9a-f-]{36}\] succeeded/);
    expect(workers[1]!.output).toMatch(/Task task_b\[[0-9a-f-]{36}\] succeeded/);
  });

  test("a raising task is a FAILED line and exit 1; a retried one counts its retries", async () => {
    const scenario = "test_scenario:\n  description: Failures\n  tasks: [task_a, fail, flaky]\n";
    const result = await run(["dispatch", "--config", interopConfig(qa, qb, tempDir(), scenario)]);

    expect(result.stdout).toContain("Result from task_a: Hello from Task A");
    expect(result.stdout).toContain("Result from fail: FAILED (ValueError: disk quota exceeded)");
    expect(result.stdout).toContain("Task fail retries: 0");
    expect(result.stdout).toContain("Result from flaky: third time lucky");
    expect(result.stdout).toContain("Task flaky retries: 2");
    expect(result.stdout).toContain("Total retries: 2");
    expect(result.stdout).toContain("Failed tasks: 1");
    expect(result.code).toBe(1);
    expect(workers[0]!.output).toMatch(/Task flaky\[[0-9a-f-]{36}\] retry: Retry in 0\.05s/);
  });

  // The seed's Celery app registers only celery_app.task_a: routing that full name makes
  // dtest send it, and the report still reads by the short name, as with dtest workers.
  test("runs the seed on Celery workers that know only celery_app.* names", async () => {
    const [q1, q2] = ownQueues(2) as [string, string];
    const env = pythonEnv(q1, q2);
    const seedWorkers = await Promise.all([
      startCelery(`${uniqueName("seed-a")}@interop`, q1, env, ["--without-heartbeat"]),
      startCelery(`${uniqueName("seed-b")}@interop`, q2, env, ["--without-heartbeat"]),
    ]);

    try {
      const seed = readFileSync(seedConfig(q1, q2), "utf8")
        .replace(`task_a: ${q1}`, `celery_app.task_a: ${q1}`)
        .replace(`task_b: ${q2}`, `celery_app.task_b: ${q2}`);
      const result = await run([
        "dispatch",
        "--config",
        writeConfig(tempDir(), seed),
        "--timeout",
        "10",
      ]);
      expectSeedReport(result.stdout);
      expect(result.code).toBe(0);
      expect(seedWorkers[0]!.output).toMatch(/Task celery_app\.task_a\[[0-9a-f-]{36}\] succeeded/);
    } finally {
      await stop(seedWorkers);
    }
  });
});

describe("a Celery worker and a dtest worker on one queue", () => {
  test("share a 200-task load test with nothing lost, duplicated or refused", async () => {
    const [queue] = ownQueues(1) as [string];
    const dir = tempDir();
    const file = interopConfig(queue, queue, dir);
    const name = `${uniqueName("celery-m")}@interop`;
    const env = pythonEnv(queue, queue);
    const [celery, dtest] = await Promise.all([
      startCelery(name, queue, env, ["--without-heartbeat"]),
      startDtest(queue, file),
    ]);

    try {
      const out = join(dir, "load.json");
      const load = ["load-test", "--task", "noop", "--tasks", "200", "--json", out];
      const result = await run([...load, "--config", file]);
      expect(result.stdout).toContain(`Workers at start: ${queue}=2`);
      const counts = "Tasks: sent 200, succeeded 200, failed 0, lost 0, duplicates 0";
      expect(result.stdout).toContain(counts);
      expect(result.code).toBe(0);
      const tasks = JSON.parse(readFileSync(out, "utf8")).tasks;
      expect(tasks).toEqual({
        sent: 200,
        succeeded: 200,
        failed: 0,
        lost: 0,
        duplicates: 0,
        retries: 0,
      });

      // Both log a task after replying to it, so the last lines may still be on their way.
      const ids = (proc: Proc, line: RegExp) => [...proc.output.matchAll(line)].map((m) => m[1]!);
      const byCelery = () => ids(celery, /Task noop\[([0-9a-f-]+)\] succeeded/g);
      const byDtest = () => ids(dtest, /\bnoop\[([0-9a-f-]+)\] succeeded/g);
      const logged = () => byCelery().length + byDtest().length;
      await waitUntil(() => logged() >= 200, 5000, "the workers to log 200 tasks");

      expect(byCelery().length).toBeGreaterThan(0);
      expect(byDtest().length).toBeGreaterThan(0);
      expect(logged()).toBe(200);
      expect(new Set([...byCelery(), ...byDtest()]).size).toBe(200);
      for (const output of [celery.output, dtest.output, result.stderr]) {
        expect(output).not.toContain("PRECONDITION_FAILED");
        expect(output).not.toContain("inequivalent arg");
      }
    } finally {
      await stop([celery, dtest]);
    }
  });
});

describe("events across the two", () => {
  /** A line of `celery events --dump` from `host`: `host [time] what...`. */
  const dumped = (host: string, what: string) => new RegExp(`^${host} \\[[^\\]]+\\] ${what}`, "m");

  test("celery events --dump shows a dtest worker's heartbeats and task events", async () => {
    const [queue] = ownQueues(1) as [string];
    const file = writeConfig(tempDir(), `task_routing:\n  task_a: ${queue}\n`);
    const host = `${uniqueName("dtest-ev")}@interop`;
    const env = pythonEnv(queue, queue);
    const dump = spawnPython(["-m", "celery", "-A", "celery_app", "events", "--dump"], env);
    let worker: Proc | undefined;

    try {
      await dump.waitFor("-> evdump: starting capture...");
      worker = await startDtest(queue, file, ["--name", host]);
      // Heartbeats come every 2 s; the first also shows the dump is subscribed.
      await dump.waitFor(dumped(host, "heartbeat: .*sw_ident=dtest"), 8000);

      const sent = await run(["dispatch", "--config", file]);
      expect(sent.code).toBe(0);
      const id = /Task A sent with ID: (\S+)/.exec(sent.stdout)![1]!;
      await dump.waitFor(dumped(host, `task succeeded: task_a\\(${id}\\)`));
      await stop([worker]);
      await dump.waitFor(dumped(host, "shutdown"));

      expect(dump.stdout).toMatch(dumped(host, `heartbeat: .*queues=\\['${queue}'\\]`));
      const received = `task received: task_a\\(${id}\\) args=\\(\\) kwargs=\\{\\}`;
      expect(dump.stdout).toMatch(dumped(host, received));
      expect(dump.stdout).toMatch(dumped(host, `task started: task_a\\(${id}\\)`));
      const succeeded = `task succeeded: task_a\\(${id}\\).* runtime=0\\.1`;
      expect(dump.stdout).toMatch(dumped(host, succeeded));
    } finally {
      await stop(worker ? [worker, dump] : [dump]);
    }
  });

  test("dtest monitor --json shows a Celery worker's heartbeats and task events", async () => {
    const [queue] = ownQueues(1) as [string];
    const file = writeConfig(tempDir(), `task_routing:\n  task_a: ${queue}\n`);
    const host = `${uniqueName("celery-ev")}@interop`;
    const env = pythonEnv(queue, queue);
    const monitor = start(["monitor", "--config", file, "--json"]);
    let celery: Proc | undefined;

    // The stream is shared with other runs: only this worker's events count. The last line
    // may still be arriving, so only whole lines are read.
    const events = () => {
      const whole = monitor.stdout.slice(0, monitor.stdout.lastIndexOf("\n") + 1);
      return whole
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line))
        .filter((e) => e.hostname === host);
    };
    const seen = (match: (e: Record<string, unknown>) => boolean, what: string, ms = 10_000) =>
      waitUntil(() => events().some(match), ms, what);

    try {
      await monitor.waitFor("following the celeryev stream");
      celery = await startCelery(host, queue, env, ["-E"]);
      const called = await client(env, "get", "celery_app.task_a");
      await seen((e) => e.type === "task-succeeded" && e.uuid === called.id, "task-succeeded");
      await seen((e) => e.type === "worker-heartbeat", "a heartbeat");
      await stop([celery]);
      await seen((e) => e.type === "worker-offline", "worker-offline");

      const types = new Set(events().map((e) => e.type));
      for (const type of ["worker-online", "task-received", "task-started"]) {
        expect(types).toContain(type);
      }
      const beat = events().find((e) => e.type === "worker-heartbeat");
      expect(beat).toMatchObject({ sw_ident: "py-celery", freq: 2 });
      const done = events().find((e) => e.type === "task-succeeded" && e.uuid === called.id);
      expect(done).toMatchObject({ name: "celery_app.task_a", queue });
      expect(Number(done.runtime)).toBeGreaterThanOrEqual(0.1);
    } finally {
      await stop(celery ? [celery, monitor] : [monitor]);
    }
  });
});
