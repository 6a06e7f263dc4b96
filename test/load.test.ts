/**
 * `dtest load-test` against the real broker with small N: counts, percentiles, exit codes,
 * the JSON shape, non-TTY progress, the HTML page, and a worker killed mid-run.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

import {
  BIN,
  BROKER_URL,
  connectTestBroker,
  run,
  start,
  startWorker,
  stopAll,
  tempDir,
  writeConfig,
  type Proc,
  ownQueues,
} from "./helpers.ts";

const owned = ownQueues();

function setup(tasks: (qa: string, qb: string) => string) {
  const qa = owned.queue("qa");
  const qb = owned.queue("qb");
  const dir = tempDir();
  return { dir, qa, qb, file: writeConfig(dir, tasks(qa, qb)) };
}

/** One task type on its own queue, a worker for it, and a path for the JSON report. */
async function oneTask(name: string, definition: string, concurrency: number) {
  const { dir, file, qa } = setup(
    (qa) => `task_routing:\n  ${name}: ${qa}\ntasks:\n  ${name}: ${definition}\n`,
  );
  const worker = await startWorker(qa, file, ["--concurrency", String(concurrency)]);
  return { file, qa, worker, json: join(dir, "load.json") };
}

function readJson(path: string) {
  return JSON.parse(readFileSync(path, "utf8"));
}

/** Runs `load-test` on `file` with `args` and its JSON to `json`; expects exit 0. */
async function passingLoad(file: string, json: string, args: string[]) {
  const result = await run(["load-test", "--config", file, ...args, "--json", json]);
  expect(result.code).toBe(0);
  return { result, report: readJson(json) };
}

describe("load-test", () => {
  test("sends N of each routed type and reports counts, latency and execution per type", async () => {
    const { dir, qa, qb, file } = setup(
      (qa, qb) => `
task_routing:
  task_a: ${qa}
  task_b: ${qb}
tasks:
  task_a: { kind: hello, duration: 0.01 }
  task_b: { kind: noop }
`,
    );
    const workers = [
      await startWorker(qa, file, ["--concurrency", "4"]),
      await startWorker(qb, file, ["--concurrency", "4"]),
    ];

    try {
      const out = join(dir, "load.json");
      const result = await run(["load-test", "--config", file, "--tasks", "25", "--json", out]);

      expect(result.stdout).toContain(`Workers at start: ${qa}=1, ${qb}=1`);
      expect(result.stdout).toContain(
        "Tasks: sent 50, succeeded 50, failed 0, lost 0, duplicates 0",
      );
      expect(result.stdout).toMatch(
        /Latency \(publish to result\): p50 [\d.]+ms, p95 [\d.]+ms, p99 [\d.]+ms, max [\d.]+ms/,
      );
      expect(result.stdout).toMatch(/Execution time task_a: mean 0\.01\d\ds/);
      expect(result.stderr).toMatch(/^progress: 50\/50 done, 50 sent/m);
      expect(result.code).toBe(0);

      const report = JSON.parse(readFileSync(out, "utf8"));
      expect(report.version).toBe(1);
      expect(report.tasks).toEqual({
        sent: 50,
        succeeded: 50,
        failed: 0,
        lost: 0,
        duplicates: 0,
        retries: 0,
      });
      expect(report.workers).toEqual({ start: { [qa]: 1, [qb]: 1 }, end: { [qa]: 1, [qb]: 1 } });
      const l = report.latency_ms;
      expect(l.p50).toBeGreaterThan(0);
      expect(l.p50).toBeLessThanOrEqual(l.p95);
      expect(l.p95).toBeLessThanOrEqual(l.p99);
      expect(l.p99).toBeLessThanOrEqual(l.max);
      expect(report.execution_seconds.task_a.count).toBe(25);
      expect(report.histogram.reduce((n: number, b: { count: number }) => n + b.count, 0)).toBe(50);
      expect(
        report.timeline.reduce((n: number, p: { completed: number }) => n + p.completed, 0),
      ).toBe(50);
      expect(report.throughput_per_second).toBeGreaterThan(0);
    } finally {
      await stopAll(workers);
    }
  });

  test("percentiles follow the tasks' real times: half take 50 ms, half 300 ms", async () => {
    const { dir, file, qa } = setup(
      (qa) => `
task_routing:
  quick: ${qa}
  slow: ${qa}
tasks:
  quick: { kind: hello, duration: 0.05 }
  slow: { kind: hello, duration: 0.3 }
`,
    );
    const worker = await startWorker(qa, file, ["--concurrency", "40"]);

    try {
      const out = join(dir, "load.json");
      const result = await run(["load-test", "--config", file, "--tasks", "20", "--json", out]);
      expect(result.code).toBe(0);

      const { latency_ms: l, execution_seconds: execution } = JSON.parse(readFileSync(out, "utf8"));
      expect(l.p50).toBeGreaterThanOrEqual(50);
      expect(l.p50).toBeLessThan(200);
      expect(l.p95).toBeGreaterThanOrEqual(300);
      expect(l.p95).toBeLessThan(600);
      expect(l.max).toBeGreaterThanOrEqual(l.p99);
      expect(l.mean).toBeGreaterThan(l.p50);
      expect(execution.quick.mean).toBeCloseTo(0.05, 1);
      expect(execution.slow.mean).toBeCloseTo(0.3, 1);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--spawn-workers starts one worker per loaded queue at --concurrency", async () => {
    const { file, qa, qb } = setup(
      (qa, qb) => `
task_routing:
  quick: ${qa}
  other: ${qb}
tasks:
  quick: { kind: hello, duration: 0.05 }
  other: { kind: noop }
`,
    );

    const result = await run([
      "load-test",
      "--config",
      file,
      "--task",
      "quick",
      "--tasks",
      "40",
      "--spawn-workers",
      "--concurrency",
      "8",
    ]);
    expect(result.stdout).toContain(`Workers at start: ${qa}=1\n`);
    expect(result.stdout).toContain("Tasks: sent 40, succeeded 40, failed 0, lost 0");
    expect(result.stdout).not.toContain(qb);
    // One at a time, 40 tasks of 50 ms take 2 s; eight at a time, a quarter of a second.
    expect(Number(/Total time: ([\d.]+)s/.exec(result.stdout)?.[1])).toBeLessThan(1.5);
    expect(result.code).toBe(0);

    const conn = await connectTestBroker();
    try {
      const channel = await conn.createChannel();
      expect((await channel.checkQueue(qa)).consumerCount).toBe(0);
    } finally {
      await conn.close();
    }
  });

  test("--duration alone sends as fast as answered, within the in-flight window", async () => {
    const { file, worker, json } = await oneTask("ping", "{ kind: noop }", 50);

    try {
      const { result, report } = await passingLoad(file, json, ["--duration", "2"]);
      expect(report.total_seconds).toBeGreaterThanOrEqual(2);
      expect(report.tasks.succeeded).toBe(report.tasks.sent);
      expect(report.tasks.lost).toBe(0);
      // Publishing outruns one worker several times over: without the window the backlog
      // passes 10,000 within the two seconds.
      expect(report.tasks.sent).toBeGreaterThan(10_000);
      expect(report.max_in_flight).toBeGreaterThan(5_000);
      expect(report.max_in_flight).toBeLessThanOrEqual(10_000);
      expect(result.stdout).toContain(`Most in flight at once: ${report.max_in_flight}`);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--max-in-flight N keeps at most N unanswered, and the run still completes", async () => {
    const { file, worker, json } = await oneTask("ping", "{ kind: noop }", 10);

    try {
      const args = ["--tasks", "2000", "--max-in-flight", "25"];
      const { report } = await passingLoad(file, json, args);
      expect(report.tasks).toMatchObject({ sent: 2000, succeeded: 2000, lost: 0 });
      expect(report.max_in_flight).toBe(25);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--duration with --rate offers that rate for that long", async () => {
    const { file, worker, json } = await oneTask("ping", "{ kind: noop }", 10);

    try {
      const { report } = await passingLoad(file, json, ["--duration", "1", "--rate", "200"]);
      expect(report.tasks.sent).toBeGreaterThanOrEqual(190);
      expect(report.tasks.sent).toBeLessThanOrEqual(200);
      expect(report.tasks.succeeded).toBe(report.tasks.sent);
      expect(report.max_in_flight).toBeLessThan(100);
    } finally {
      await stopAll([worker]);
    }
  });

  test("a SIGINT stops the sending and reports what was sent; all succeeded: exit 0", async () => {
    const { file, worker, json } = await oneTask("work", "{ kind: hello, duration: 0.3 }", 20);

    try {
      const args = ["--duration", "60", "--rate", "50", "--json", json];
      const load = start(["load-test", "--config", file, ...args]);
      await load.waitFor(/progress: \d+\/\d+ done, [1-9]\d* sent/);
      load.child.kill("SIGINT");
      const code = await load.exit();

      const report = readJson(json);
      expect(report.stopped_early).toBe(true);
      expect(report.tasks.sent).toBeGreaterThan(0);
      expect(report.tasks.sent).toBeLessThan(60 * 50);
      expect(report.tasks.succeeded).toBe(report.tasks.sent);
      expect(report.total_seconds).toBeLessThan(10);
      const line = `Stopped early: sending interrupted after ${report.tasks.sent} tasks`;
      expect(load.stdout).toContain(line);
      expect(code).toBe(0);
    } finally {
      await stopAll([worker]);
    }
  });

  test("a second SIGINT stops the wait: what has no result is lost, exit 3", async () => {
    const { file, worker, json } = await oneTask("slow", "{ kind: hello, duration: 30 }", 4);

    try {
      const load = start(["load-test", "--config", file, "--tasks", "4", "--json", json]);
      await load.waitFor("progress: 0/4 done, 4 sent");
      load.child.kill("SIGINT");
      await load.waitFor("stopping gracefully");
      await Bun.sleep(300);
      expect(load.child.exitCode).toBeNull();
      load.child.kill("SIGINT");
      const code = await load.exit();

      const report = readJson(json);
      expect(report.tasks).toMatchObject({ sent: 4, succeeded: 0, lost: 4 });
      expect(report.stopped_early).toBe(false);
      expect(code).toBe(3);
    } finally {
      worker.child.kill("SIGKILL");
      await worker.exit();
    }
  });

  test("a report that cannot be written is named, and the others are still written", async () => {
    const { file, worker, json } = await oneTask("ping", "{ kind: noop }", 10);

    try {
      const blocked = join(file, "load.json"); // under a regular file: cannot be created
      const svg = json.replace(/\.json$/, ".svg");
      const args = ["--tasks", "5", "--json", blocked, "--report", svg];
      const result = await run(["load-test", "--config", file, ...args]);

      expect(result.stdout).toContain("Tasks: sent 5, succeeded 5");
      expect(result.stderr).toContain(`could not write 1 report(s):\n  JSON report ${blocked}:`);
      expect(result.stderr).toContain("hint: check that each report path is one you can write\n");
      expect(readFileSync(svg, "utf8")).toContain("sent 5, succeeded 5");
      expect(result.code).toBe(2);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--log-format json: every stderr line is JSON, progress and spawned workers too", async () => {
    const { file, qa } = setup(
      (qa) => `task_routing:\n  ping: ${qa}\ntasks:\n  ping: { kind: noop }\n`,
    );
    // At info, the spawned worker says it is consuming; at their default (warn) it says nothing.
    const logs = ["--log-format", "json", "--log-level", "info"];
    const args = ["--tasks", "30", "--spawn-workers", ...logs];
    const result = await run(["load-test", "--config", file, ...args]);
    expect(result.code).toBe(0);

    const records = result.stderr.trimEnd().split("\n").map((line) => JSON.parse(line));
    const progress = records.filter((r) => r.msg === "progress");
    expect(progress.at(-1)).toMatchObject({ tag: "load-test", done: 30, sent: 30, planned: 30 });
    expect(records.some((r) => r.tag === `worker-${qa}@${hostname()}`)).toBe(true);
  });

  test("on a terminal the progress is one bar redrawn in place, ended by a newline", async () => {
    const { file, worker } = await oneTask("ping", "{ kind: hello, duration: 0.01 }", 20);

    try {
      // script(1) gives the command a pseudo-terminal; -e passes its exit code through.
      const command = [BIN, "load-test", "--config", file, "--tasks", "200", "--rate", "200"];
      const shell = command.map((arg) => `'${arg}'`).join(" ");
      const tty = Bun.spawn(["script", "-qec", shell, "/dev/null"], {
        env: { ...process.env, AMQP_URL: BROKER_URL },
        stdin: "ignore",
        stdout: "pipe",
      });
      const [screen, code] = await Promise.all([new Response(tty.stdout).text(), tty.exited]);

      const bars = [...screen.matchAll(/\r\[([#.]{30})\] (\d+)\/200 \d+\/s /g)];
      expect(bars.length).toBeGreaterThan(2);
      expect(bars.at(-1)![1]).toBe("#".repeat(30));
      expect(bars.at(-1)![2]).toBe("200");
      const done = bars.map((m) => Number(m[2]));
      expect(done).toEqual([...done].sort((a, b) => a - b));
      expect(screen).not.toContain("progress: ");
      expect(screen).toMatch(/\] 200\/200 \d+\/s \r?\nWorkers at start/);
      expect(code).toBe(0);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--concurrency without --spawn-workers is refused, naming the fix", async () => {
    const result = await run(["load-test", "--concurrency", "4"]);
    expect(result.stderr).toContain("--concurrency sets the workers --spawn-workers starts");
    expect(result.stderr).toContain("hint: add --spawn-workers");
    expect(result.code).toBe(2);
  });

  test("--task loads one kind; failures exit 1 and are counted", async () => {
    const { file, qa } = setup(
      (qa) => `
task_routing:
  bad: ${qa}
  good: ${qa}
retry_config: { max_retries: 1, retry_delay: 0.01 }
tasks:
  bad: { kind: exec, command: ["false"] }
  good: { kind: noop }
`,
    );
    const worker = await startWorker(qa, file, ["--concurrency", "4"]);

    try {
      const result = await run(["load-test", "--config", file, "--task", "bad", "--tasks", "5"]);
      expect(result.stdout).toContain("Tasks: sent 5, succeeded 0, failed 5, lost 0, duplicates 0");
      expect(result.stdout).toContain("Retries: 5");
      expect(result.stdout).toContain("FAILED: 5 task(s) failed");
      expect(result.code).toBe(1);
    } finally {
      await stopAll([worker]);
    }
  });

  test("--rate offers tasks at that pace, and --report writes an HTML page with both charts", async () => {
    const { dir, file, qa } = setup(
      (qa) => `task_routing:\n  ping: ${qa}\ntasks:\n  ping: { kind: noop }\n`,
    );
    const worker = await startWorker(qa, file);

    try {
      const page = join(dir, "report.html");
      const result = await run([
        "load-test",
        "--config",
        file,
        "--tasks",
        "40",
        "--rate",
        "50",
        "--report",
        page,
      ]);
      const seconds = Number(/Total time: ([\d.]+)s/.exec(result.stdout)?.[1]);
      expect(seconds).toBeGreaterThanOrEqual(0.75);
      expect(result.code).toBe(0);

      const html = readFileSync(page, "utf8");
      expect(html).toStartWith("<!doctype html>");
      expect(html.match(/<svg /g)).toHaveLength(2);
      expect(html).toContain("sent 40, succeeded 40");
      expect(html).not.toMatch(/<script|src="http/);
    } finally {
      await stopAll([worker]);
    }
  });

  test("tasks nobody answers are counted lost and exit 3", async () => {
    const { file, qa } = setup(
      (qa) => `task_routing:\n  slow: ${qa}\ntasks:\n  slow: { kind: hello, duration: 10 }\n`,
    );
    const worker = await startWorker(qa, file);

    try {
      const result = await run(["load-test", "--config", file, "--tasks", "3", "--timeout", "0.5"]);
      expect(result.stdout).toContain("Tasks: sent 3, succeeded 0, failed 0, lost 3");
      expect(result.code).toBe(3);
    } finally {
      worker.child.kill("SIGKILL");
      await worker.exit();
    }
  });

  test("a worker killed mid-run loses nothing: every task is reported exactly once", async () => {
    const { file, qa } = setup(
      (qa) => `task_routing:\n  work: ${qa}\ntasks:\n  work: { kind: hello, duration: 0.02 }\n`,
    );
    const victim = await startWorker(qa, file, ["--concurrency", "5"]);
    const survivor = await startWorker(qa, file, ["--concurrency", "5"]);
    const load = start(["load-test", "--config", file, "--tasks", "300", "--timeout", "60"]);
    let late: Proc | undefined;

    try {
      await victim.waitFor(/succeeded/);
      victim.child.kill("SIGKILL");
      await victim.exit();
      late = await startWorker(qa, file, ["--concurrency", "5"]);

      expect(await load.exit()).toBe(0);
      expect(load.stdout).toMatch(
        /Tasks: sent 300, succeeded 300, failed 0, lost 0, duplicates \d+/,
      );
    } finally {
      await stopAll([survivor, ...(late ? [late] : [])]);
    }
  });

  test.each([
    [["load-test", "--tasks", "0"], "--tasks must be a whole number ≥ 1"],
    [["load-test", "--tasks", "-3"], "--tasks must be a whole number ≥ 1"],
    [["load-test", "--rate", "fast"], "--rate must be a number of tasks per second > 0"],
    [["load-test", "--max-in-flight", "0"], "--max-in-flight must be a whole number ≥ 1"],
    [["load-test", "--task", "nope", "--wait-workers", "0.1"], "--task nope is not routed"],
  ])("usage error %p exits 2", async (args, message) => {
    const result = await run(args);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(2);
  });
});
