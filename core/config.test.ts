import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { findRoute, loadConfig, parseConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";

const SEED = readFileSync(join(import.meta.dir, "..", "test-config.yml"), "utf8");

function problemsOf(yaml: string): string[] {
  try {
    parseConfig(yaml, "bad.yml");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loading the seed", () => {
  test("the seed test-config.yml loads unchanged with the built-in hello tasks", async () => {
    const config = await loadConfig(join(import.meta.dir, "..", "test-config.yml"));

    expect(config.scenario.description).toBe("Basic two-task execution test");
    expect(config.system.workers).toBe(2);
    expect(config.routing).toEqual({ task_a: "queue_a", task_b: "queue_b" });
    expect(config.retry).toEqual({
      maxRetries: 3,
      retryDelay: 60,
      retryBackoff: true,
      retryBackoffMax: 600,
      retryJitter: true,
    });
    expect(config.tasks.task_a).toMatchObject({
      kind: "hello",
      message: "Hello from Task A",
      duration: 0.1,
    });
    expect(config.tasks.task_b).toMatchObject({
      kind: "hello",
      message: "Hello from Task B",
      duration: 0.2,
    });
    expect(config.scenario.tasks.map((t) => t.task)).toEqual(["task_a", "task_b"]);
    expect(config.warnings).toEqual([]);
  });

  test("extensions: task kinds, scenario counts and arguments", () => {
    const config = parseConfig(
      `${SEED}
tasks:
  task_a: { kind: noop }
  task_b:
    kind: exec
    command: ["pytest", "-q"]
    cwd: /srv
    env: { CI: 1 }
    timeout: 30
    accept_args: true
    expect: { exit_code: 0, stdout_contains: passed }
`.replace(
        'description: "Basic two-task execution test"',
        `description: "x"
  tasks:
    - task_a
    - { task: task_b, count: 3, args: ["tests/unit"] }`,
      ),
    );

    expect(config.tasks.task_b).toMatchObject({
      kind: "exec",
      command: ["pytest", "-q"],
      cwd: "/srv",
      env: { CI: "1" },
      timeout: 30,
      acceptArgs: true,
      expect: { exitCode: 0, stdoutContains: "passed" },
    });
    expect(config.scenario.tasks).toEqual([
      { task: "task_a", count: 1, args: [], kwargs: {} },
      { task: "task_b", count: 3, args: ["tests/unit"], kwargs: {} },
    ]);
  });

  test("a routed task with no definition is a warning: only other workers can run it", () => {
    const config = parseConfig(
      SEED.replace("task_b: queue_b", "task_b: queue_b\n  celery_app.report: queue_c"),
      "w.yml",
    );
    expect(config.warnings).toEqual([
      expect.stringMatching(/^w\.yml:14: task_routing\.celery_app\.report has no definition/),
    ]);
  });

  test("an unknown key is a warning with its line, not an error", () => {
    const config = parseConfig(`${SEED}colour: blue\n`, "w.yml");
    expect(config.warnings).toEqual([
      expect.stringMatching(/^w\.yml:20: colour is not a known key/),
    ]);
  });
});

describe("rejecting bad files", () => {
  test.each([
    [
      "a negative worker count",
      SEED.replace("workers: 2", "workers: -1"),
      "bad.yml:3: system.workers must be an integer from 1 to 100000 (got -1)",
    ],
    [
      "max_retries as text",
      SEED.replace("max_retries: 3", "max_retries: three"),
      'bad.yml:15: retry_config.max_retries must be an integer from 0 to 1000 (got "three")',
    ],
    [
      "a negative retry delay",
      SEED.replace("retry_delay: 60", "retry_delay: -5"),
      "bad.yml:16: retry_config.retry_delay must be a number of seconds ≥ 0 (got -5)",
    ],
    [
      "retry_backoff as a string",
      SEED.replace("retry_backoff: true", 'retry_backoff: "yes"'),
      'bad.yml:17: retry_config.retry_backoff must be true or false (got "yes")',
    ],
    [
      "a port out of range",
      SEED.replace("port: 5672", "port: 70000"),
      "bad.yml:8: rabbitmq.port must be an integer from 1 to 65535 (got 70000)",
    ],
    [
      "a queue name with a space",
      SEED.replace("task_b: queue_b", "task_b: queue b"),
      "bad.yml:13: task_routing.task_b must name a queue",
    ],
    [
      "no task_routing",
      "system:\n  workers: 2\n",
      "bad.yml:1: task_routing must route at least one task to a queue",
    ],
    [
      "an unknown task kind",
      `${SEED}tasks:\n  task_a:\n    kind: shell\n`,
      'bad.yml:22: tasks.task_a.kind must be one of hello, noop, exec (got "shell")',
    ],
    [
      "a task routed nowhere",
      `${SEED}tasks:\n  task_c: { kind: noop }\n`,
      "bad.yml:21: tasks.task_c is not routed to any queue",
    ],
    [
      "an exec command given as a string",
      `${SEED}tasks:\n  task_a:\n    kind: exec\n    command: "rm -rf /"\n`,
      "bad.yml:23: tasks.task_a.command must be a non-empty list",
    ],
    [
      "exit_code on a hello task",
      `${SEED}tasks:\n  task_a:\n    kind: hello\n    expect: { exit_code: 0 }\n`,
      "bad.yml:23: tasks.task_a.expect.exit_code applies only to exec tasks",
    ],
    [
      "a scenario naming an unrouted task",
      SEED.replace('description: "Basic two-task execution test"', "tasks: [task_x]"),
      'bad.yml:5: test_scenario.tasks[0].task must name a routed task (routed: task_a, task_b) (got "task_x")',
    ],
    [
      "a zero count",
      SEED.replace(
        'description: "Basic two-task execution test"',
        "tasks: [{task: task_a, count: 0}]",
      ),
      "bad.yml:5: test_scenario.tasks[0].count must be an integer from 1 to 1000000 (got 0)",
    ],
    ["invalid YAML", "system:\n  workers: [2\n", "invalid YAML: Flow sequence"],
    [
      "a duplicate key",
      "task_routing:\n  task_a: q1\n  task_a: q2\n",
      "invalid YAML: Map keys must be unique",
    ],
    ["a list at the top", "- a\n- b\n", "(top level) must be a mapping"],
  ])("%s", (_name, yaml, expected) => {
    const problems = problemsOf(yaml);
    expect(problems.some((p) => p.startsWith(expected) || p.includes(expected))).toBe(true);
  });

  test("every problem in a file is reported at once, in line order", () => {
    const yaml = SEED.replace("workers: 2", "workers: zero")
      .replace("port: 5672", "port: -1")
      .replace("max_retries: 3", "max_retries: 1.5");
    const problems = problemsOf(yaml);
    expect(problems.map((p) => p.split(":")[1])).toEqual(["3", "8", "15"]);
  });

  test("each message names the fix", () => {
    for (const p of problemsOf(SEED.replace("workers: 2", "workers: -1")))
      expect(p).toContain("; set system.workers to");
  });

  test("a file that does not exist names the flag that fixes it", async () => {
    const err = await loadConfig("/nonexistent/test-config.yml").catch((e) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain("/nonexistent/test-config.yml: no such file");
    expect(err.hint).toContain("--config");
  });
});

describe("Celery task names", () => {
  test("a message's dotted or plain name finds a route written either way", () => {
    const plain = parseConfig(SEED);
    const dotted = parseConfig(SEED.replace("task_a: queue_a", "celery_app.task_a: queue_a"));

    expect(findRoute(plain, "celery_app.task_a")).toMatchObject({
      key: "task_a",
      queue: "queue_a",
      def: { kind: "hello" },
    });
    expect(findRoute(dotted, "task_a")).toMatchObject({
      key: "celery_app.task_a",
      queue: "queue_a",
      def: { message: "Hello from Task A" },
    });
    expect(findRoute(dotted, "other.task_c")).toBeUndefined();
  });
});
