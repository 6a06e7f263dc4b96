/**
 * The compiled binary end to end against the real broker: workers, dispatch, retries,
 * expectations, isolation and a worker killed in the middle of a task.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

import {
  BIN,
  ROOT,
  run,
  start,
  startWorker,
  stopAll,
  tempDir,
  writeConfig,
  type Proc,
  expectSeedReport,
  ownQueues,
} from "./helpers.ts";

const owned = ownQueues();

/** A config whose queues belong to this test alone. */
function config(body: (qa: string, qb: string) => string): {
  file: string;
  qa: string;
  qb: string;
} {
  const qa = owned.queue("qa");
  const qb = owned.queue("qb");
  return { file: writeConfig(tempDir(), body(qa, qb)), qa, qb };
}

describe("seed scenario", () => {
  test("two workers and dispatch print the seed's report line for line and exit 0", async () => {
    const seed = readFileSync(join(ROOT, "test-config.yml"), "utf8");
    const { file, qa, qb } = config((qa, qb) =>
      seed.replace("task_a: queue_a", `task_a: ${qa}`).replace("task_b: queue_b", `task_b: ${qb}`),
    );
    const workers = [await startWorker(qa, file), await startWorker(qb, file)];

    try {
      const result = await run(["dispatch", "--config", file]);
      expectSeedReport(result.stdout);
      expect(result.code).toBe(0);
    } finally {
      await stopAll(workers);
    }
  });

  test("--spawn-workers runs the default scenario with no workers started by hand", async () => {
    const { file } = config((qa, qb) => `task_routing:\n  task_a: ${qa}\n  task_b: ${qb}\n`);
    const result = await run(["dispatch", "--config", file, "--spawn-workers"]);

    expect(result.stdout).toContain("Result from task_a: Hello from Task A");
    expect(result.stdout).toContain("Result from task_b: Hello from Task B");
    expect(result.code).toBe(0);
  });

  test("tasks run concurrently: the total is well under the sum of task times", async () => {
    const { file, qa } = config(
      (qa) => `
task_routing:
  slow: ${qa}
tasks:
  slow: { kind: hello, message: done, duration: 0.4 }
test_scenario:
  tasks:
    - task: slow
      count: 4
`,
    );
    const worker = await startWorker(qa, file, ["--concurrency", "4"]);

    try {
      const result = await run(["dispatch", "--config", file]);
      const total = Number(/Total dispatcher time: ([\d.]+)s/.exec(result.stdout)?.[1]);
      const sequential = Number(/Sequential time would be: ([\d.]+)s/.exec(result.stdout)?.[1]);
      expect(sequential).toBeGreaterThanOrEqual(1.6);
      expect(total).toBeLessThan(sequential / 2);
      expect(result.stdout).toContain("Task slow #4 retries: 0");
      expect(result.code).toBe(0);
    } finally {
      await stopAll([worker]);
    }
  });
});

describe("failures and retries", () => {
  test("a task that fails twice then succeeds reports 2 retries and exits 0", async () => {
    const dir = tempDir();
    const marker = join(dir, "attempts");
    const { file, qa } = config(
      (qa) => `
task_routing:
  flaky: ${qa}
retry_config: { max_retries: 3, retry_delay: 0.05, retry_backoff: true, retry_backoff_max: 1, retry_jitter: false }
tasks:
  flaky:
    kind: exec
    command: ["sh", "-c", "echo x >> ${marker}; test $(wc -l < ${marker}) -ge 3"]
`,
    );
    const worker = await startWorker(qa, file);

    try {
      const result = await run(["dispatch", "--config", file]);
      expect(result.stdout).toContain("Result from flaky: exit 0");
      expect(result.stdout).toContain("Task flaky retries: 2");
      expect(result.stdout).toContain("Total retries: 2");
      expect(result.code).toBe(0);
    } finally {
      await stopAll([worker]);
    }
  });

  test("an exec task whose expectation holds passes; one that fails exits 1 with the reason", async () => {
    const { file, qa } = config(
      (qa) => `
task_routing:
  greets: ${qa}
  wrong: ${qa}
retry_config: { max_retries: 0 }
tasks:
  greets:
    kind: exec
    command: ["echo", "all 12 tests passed"]
    expect: { exit_code: 0, stdout_contains: "tests passed" }
  wrong:
    kind: exec
    command: ["echo", "2 tests failed"]
    expect: { stdout_contains: "tests passed" }
`,
    );
    const worker = await startWorker(qa, file);

    try {
      const result = await run(["dispatch", "--config", file]);
      expect(result.stdout).toContain("Result from greets: exit 0");
      expect(result.stdout).toMatch(
        /Result from wrong: FAILED \(ExpectationFailed: expected stdout to contain "tests passed"\)/,
      );
      expect(result.stdout).toContain("Failed tasks: 1");
      expect(result.code).toBe(1);
    } finally {
      await stopAll([worker]);
    }
  });

  test("no worker on a needed queue: exit 3 naming the queue and the command that starts one", async () => {
    const { file, qb } = config((qa, qb) => `task_routing:\n  task_b: ${qb}\n`);
    const result = await run(["dispatch", "--config", file, "--wait-workers", "0.5"]);

    expect(result.stderr).toContain(`no worker consumes ${qb}`);
    expect(result.stderr).toContain(`dtest worker --queue ${qb}`);
    expect(result.code).toBe(3);
  });

  test("--timeout reports the task without a result and exits 3", async () => {
    const { file, qa } = config(
      (qa) => `
task_routing:
  sleepy: ${qa}
tasks:
  sleepy: { kind: hello, duration: 5 }
`,
    );
    const worker = await startWorker(qa, file);

    try {
      const result = await run(["dispatch", "--config", file, "--timeout", "0.5"]);
      expect(result.stdout).toMatch(
        /Result from sleepy: NO RESULT \(task [0-9a-f-]{36} did not finish in time\)/,
      );
      expect(result.stderr).toContain("no result within 0.5 s for 1 task(s)");
      expect(result.code).toBe(3);
    } finally {
      worker.child.kill("SIGKILL");
      await worker.exit();
    }
  });
});

describe("delivery guarantees", () => {
  test("a worker killed mid-task leaves it to another worker; dispatch reports it once", async () => {
    const { file, qa } = config(
      (qa) => `
task_routing:
  long: ${qa}
tasks:
  long: { kind: hello, message: survived, duration: 1.5 }
`,
    );
    const first = await startWorker(qa, file);
    const dispatcher = start(["dispatch", "--config", file, "--timeout", "30"]);
    let second: Proc | undefined;

    try {
      await first.waitFor(/long\[[0-9a-f-]+\] received/);
      first.child.kill("SIGKILL");
      await first.exit();
      second = await startWorker(qa, file);

      const code = await dispatcher.exit();
      expect(dispatcher.stdout.match(/Result from long:/g)).toHaveLength(1);
      expect(dispatcher.stdout).toContain("Result from long: survived");
      expect(second.output).toMatch(/long\[[0-9a-f-]+\] succeeded/);
      expect(code).toBe(0);
    } finally {
      if (second) await stopAll([second]);
    }
  });

  test("SIGTERM lets the in-flight task finish and reply, then the worker exits 0", async () => {
    const { file, qa } = config(
      (qa) => `
task_routing:
  long: ${qa}
tasks:
  long: { kind: hello, message: finished anyway, duration: 1 }
`,
    );
    const worker = await startWorker(qa, file);
    const dispatcher = start(["dispatch", "--config", file]);

    await worker.waitFor(/long\[[0-9a-f-]+\] received/);
    worker.child.kill("SIGTERM");

    expect(await worker.exit()).toBe(0);
    expect(worker.output).toContain("stopping: 1 task(s) in flight");
    expect(await dispatcher.exit()).toBe(0);
    expect(dispatcher.stdout).toContain("Result from long: finished anyway");
  });

  test("the binary runs with no node_modules beside it", async () => {
    const dir = tempDir();
    const copy = join(dir, "dtest");
    await Bun.write(copy, Bun.file(BIN));
    chmodSync(copy, 0o755);

    const child = Bun.spawn([copy, "--version"], { cwd: dir, stdout: "pipe" });
    expect(await new Response(child.stdout).text()).toMatch(/^\d+\.\d+\.\d+/);
    expect(await child.exited).toBe(0);
    expect(existsSync(join(dir, "node_modules"))).toBe(false);
  });
});

describe("broker and arguments", () => {
  test("an unreachable broker is a clear error after the bounded wait, exit 3, password masked", async () => {
    const result = await run([
      "dispatch",
      "--broker",
      "amqp://guest:hunter2@127.0.0.1:1",
      "--connect-timeout",
      "1",
    ]);

    expect(result.stderr).toContain(
      "cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1 within 1 s",
    );
    expect(result.stderr).toContain("hint: start RabbitMQ");
    expect(result.stdout + result.stderr).not.toContain("hunter2");
    expect(result.code).toBe(3);
  });

  test.each([
    [["dispatch", "--timeout", "-1"], "--timeout must be a number of seconds > 0"],
    [
      ["worker", "--queue", "queue_a", "--concurrency", "0"],
      "--concurrency must be a whole number ≥ 1",
    ],
    [["worker", "--queue", "nowhere"], "no task in test-config.yml is routed to nowhere"],
    [["worker"], "--queue is required"],
    [["dispatch", "--frobnicate"], "unknown flag --frobnicate"],
    [["launch"], "Unknown command"],
  ])("usage error %p exits 2", async (args, message) => {
    const result = await run(args);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(2);
  });

  test("a bad config exits 2 with file:line and no stack trace", async () => {
    const file = writeConfig(
      tempDir(),
      "task_routing:\n  task_a: queue_a\nretry_config:\n  max_retries: -2\n",
    );
    const result = await run(["dispatch", "--config", file]);

    expect(result.stderr).toContain(
      `${file}:4: retry_config.max_retries must be an integer from 0 to 1000 (got -2)`,
    );
    expect(result.stderr).not.toContain("    at ");
    expect(result.code).toBe(2);
  });

  test("--log-format json writes one JSON object per line to stderr", async () => {
    const { file, qa } = config((qa) => `task_routing:\n  task_a: ${qa}\n`);
    const worker = start(["worker", "--queue", qa, "--config", file, "--log-format", "json"]);
    await worker.waitFor(`consuming ${qa}`);
    await stopAll([worker]);

    const lines = worker.stderr
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines.length).toBeGreaterThanOrEqual(3);
    for (const line of lines)
      expect(Object.keys(line)).toEqual(expect.arrayContaining(["time", "level", "msg"]));
    expect(worker.stdout).toBe("");
  });
});
