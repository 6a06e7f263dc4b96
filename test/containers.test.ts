/**
 * The image and compose services on a real container engine: build, up, the seed scenario
 * against the containers, isolation in the logs, scaling, a stop that loses nothing, down.
 *
 * Needs a Docker-compatible engine (scripts/container-engine.sh sets up podman). Without one
 * the tests are skipped with a line saying so, except in CI (CI=true), where they fail.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";

import { composeEnv } from "../core/compose.ts";
import { BIN, requireBinary, ROOT, run, tempDir, writeConfig } from "./helpers.ts";

const PROJECT = `dtest_ct${process.pid}`;
const ENV = {
  COMPOSE_FILE: "docker-compose.yml:docker-compose.test.yml",
  COMPOSE_PROJECT_NAME: PROJECT,
  DTEST_IMAGE: `dtest-test:${process.pid}`,
};

async function engineAnswers(): Promise<boolean> {
  const env = composeEnv();
  if (!env.DOCKER_HOST && !existsSync("/var/run/docker.sock")) return false;
  try {
    const child = Bun.spawn(["docker-compose", "version"], {
      env,
      stdout: "ignore",
      stderr: "ignore",
    });
    return (await child.exited) === 0;
  } catch {
    // docker-compose is not installed.
    return false;
  }
}

const engine = await engineAnswers();
if (!engine) {
  const why = "no container engine answers (run scripts/container-engine.sh to set up podman)";
  if (process.env.CI) throw new Error(`container tests are required in CI: ${why}`);
  console.warn(`\n*** CONTAINER TESTS DID NOT RUN: ${why} ***\n`);
}

async function compose(...args: string[]) {
  const child = Bun.spawn(["docker-compose", ...args], {
    cwd: ROOT,
    env: { ...composeEnv(), ...ENV },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (code !== 0) throw new Error(`docker-compose ${args.join(" ")} failed (${code}):\n${stderr}`);
  return stdout + stderr;
}

const dtest = (args: string[]) => run(args, ENV);

async function consumers(): Promise<Record<string, number>> {
  const result = await dtest(["status", "--json", "--listen", "0.1"]);
  const status = JSON.parse(result.stdout);
  return Object.fromEntries(
    status.queues.map((q: { queue: string; consumers: number }) => [q.queue, q.consumers]),
  );
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(200);
  }
}

/** Containers of this project whose logs show a task of `name` succeeding. */
function workersThatRan(logs: string, name: string): Set<string> {
  const pattern = new RegExp(`^(\\S+)\\s+\\|.*${name}\\[[0-9a-f-]+\\] succeeded`, "gm");
  return new Set([...logs.matchAll(pattern)].map((m) => m[1]!));
}

describe.skipIf(!engine)("containers", () => {
  beforeAll(async () => {
    await requireBinary();
    expect(existsSync(BIN)).toBe(true);
    await compose("down", "--remove-orphans");
  });

  afterAll(async () => {
    await compose("down", "--remove-orphans");
    Bun.spawnSync(["podman", "rmi", "-f", ENV.DTEST_IMAGE], { stdout: "ignore", stderr: "ignore" });
  });

  test("the image builds with the binary as entrypoint, running as a non-root user", async () => {
    await compose("build");
    const inspect = Bun.spawnSync([
      "podman",
      "image",
      "inspect",
      ENV.DTEST_IMAGE,
      "--format",
      "{{.Config.User}} {{json .Config.Entrypoint}} {{.Size}}",
    ]);
    const [user, entrypoint, size] = inspect.stdout.toString().trim().split(" ");
    expect(user).toBe("dtest");
    expect(entrypoint).toBe('["/usr/local/bin/dtest"]');
    console.log(`image size: ${(Number(size) / 1e6).toFixed(1)} MB`);
  }, 300_000);

  test("up starts one worker per queue, each consuming, non-root on a read-only root", async () => {
    const started = performance.now();
    await compose("up", "-d");
    await until(
      async () => {
        const c = await consumers();
        return c.queue_a === 1 && c.queue_b === 1;
      },
      60_000,
      "one consumer on queue_a and queue_b",
    );
    console.log(`up to consuming: ${((performance.now() - started) / 1000).toFixed(2)} s`);

    const ids = (await compose("ps", "-q")).trim().split("\n");
    for (const id of ids) {
      const inspect = Bun.spawnSync([
        "podman",
        "inspect",
        id,
        "--format",
        "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}",
      ]);
      expect(inspect.stdout.toString().trim()).toBe("true dtest");
    }
  }, 120_000);

  test("the seed scenario runs against the containers: seed output, exit 0", async () => {
    const result = await dtest(["dispatch"]);
    expect(result.stdout).toContain("Result from task_a: Hello from Task A");
    expect(result.stdout).toContain("Result from task_b: Hello from Task B");
    expect(result.stdout).toMatch(/Total dispatcher time: \d\.\d{3}s \(concurrent execution\)/);
    expect(result.code).toBe(0);
  });

  test("worker-a's logs show only queue_a tasks, worker-b's only queue_b", async () => {
    const a = await compose("logs", "--no-color", "worker-a");
    const b = await compose("logs", "--no-color", "worker-b");
    expect(a).toMatch(/task_a\[[0-9a-f-]+\] succeeded/);
    expect(a).not.toMatch(/task_b\[/);
    expect(b).toMatch(/task_b\[[0-9a-f-]+\] succeeded/);
    expect(b).not.toMatch(/task_a\[/);
  });

  test("scale worker-a 3: three consumers on queue_a, and a burst spreads over all three", async () => {
    const scaled = await dtest(["scale", "worker-a", "3", "--wait", "60"]);
    expect(scaled.stdout).toContain("queue_a: 3 consumer(s)");
    expect(scaled.code).toBe(0);
    expect((await consumers()).queue_a).toBe(3);

    const burst = writeConfig(
      tempDir(),
      "task_routing:\n  task_a: queue_a\ntest_scenario:\n  tasks:\n    - { task: task_a, count: 30 }\n",
    );
    const result = await dtest(["dispatch", "--config", burst]);
    expect(result.code).toBe(0);
    expect(workersThatRan(await compose("logs", "--no-color", "worker-a"), "task_a").size).toBe(3);
  }, 120_000);

  test("scale --all 1 brings every service back to one consumer", async () => {
    const result = await dtest(["scale", "--all", "1", "--wait", "60"]);
    expect(result.code).toBe(0);
    expect(await consumers()).toEqual({ queue_a: 1, queue_b: 1 });
  }, 120_000);

  test("stopping a worker under load (SIGTERM) loses no task: all are reported once", async () => {
    const burst = writeConfig(
      tempDir(),
      "task_routing:\n  task_b: queue_b\ntest_scenario:\n  tasks:\n    - { task: task_b, count: 15 }\n",
    );
    const dispatcher = Bun.spawn([BIN, "dispatch", "--config", burst, "--timeout", "120"], {
      env: { ...process.env, ...ENV },
      stdout: "pipe",
      stderr: "pipe",
    });

    await Bun.sleep(700);
    await compose("stop", "worker-b");
    await compose("start", "worker-b");

    const stdout = await new Response(dispatcher.stdout).text();
    expect(stdout.match(/^Result from task_b: Hello from Task B$/gm)).toHaveLength(15);
    expect(await dispatcher.exited).toBe(0);

    const logs = await compose("logs", "--no-color", "worker-b");
    expect(logs).toMatch(/stopping: 1 task\(s\) in flight/);
  }, 180_000);

  test("down leaves nothing running", async () => {
    await compose("down");
    expect((await compose("ps", "-q")).trim()).toBe("");
    const left = Bun.spawnSync([
      "podman",
      "ps",
      "-q",
      "--filter",
      `label=com.docker.compose.project=${PROJECT}`,
    ]);
    expect(left.stdout.toString().trim()).toBe("");
  }, 120_000);
});
