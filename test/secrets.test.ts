/**
 * The broker password never appears in any output: every command is run at the most
 * verbose log level, in both log formats, with the password in the URL and in the config
 * file, and everything they print or write is searched for it.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import {
  ownQueues,
  requireBinary,
  run,
  start,
  tempDir,
  uniqueName,
  writeConfig,
} from "./helpers.ts";

const user = uniqueName("dtest_user");
const password = `pw-${crypto.randomUUID()}`;
const url = `amqp://${user}:${password}@127.0.0.1:5672`;
const queues = ownQueues();

function ctl(...args: string[]): void {
  const result = Bun.spawnSync(["rabbitmqctl", ...args], { stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`rabbitmqctl ${args.join(" ")}: ${result.stderr}`);
}

beforeAll(async () => {
  await requireBinary();
  ctl("add_user", user, password);
  ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*");
});

afterAll(() => ctl("delete_user", user));

test("no command prints or writes the broker password, even at trace level", async () => {
  const dir = tempDir();
  const q = queues.queue("sq");
  const file = writeConfig(
    dir,
    `
rabbitmq: { host: 127.0.0.1, port: 5672, username: ${user}, password: "${password}" }
task_routing:
  task_a: ${q}
  broken: ${q}
retry_config: { max_retries: 0 }
tasks:
  broken: { kind: exec, command: ["false"] }
`,
  );
  const outputs: string[] = [];
  const collect = (r: { stdout: string; stderr: string }) => outputs.push(r.stdout, r.stderr);
  const env = { AMQP_URL: "" };

  for (const format of ["text", "json"]) {
    const verbose = ["--log-level", "trace", "--log-format", format];
    const worker = start(["worker", "--queue", q, "--config", file, ...verbose], env);
    await worker.waitFor(`consuming ${q}`);
    const monitor = start(["monitor", "--config", file, "--broker", url, "--json", ...verbose]);
    await monitor.waitFor("following the celeryev stream");

    collect(await run(["dispatch", "--config", file, "--broker", url, ...verbose]));
    collect(
      await run(
        [
          "load-test",
          "--config",
          file,
          "--tasks",
          "3",
          "--json",
          join(dir, `load-${format}.json`),
          "--report",
          join(dir, `load-${format}.html`),
          ...verbose,
        ],
        env,
      ),
    );
    collect(await run(["status", "--config", file, "--listen", "0.5", ...verbose], env));
    collect(await run(["status", "--config", file, "--json", "--listen", "0.1", ...verbose], env));
    collect(await run(["dead-letters", "--config", file, ...verbose], env));
    collect(
      await run([
        "dispatch",
        "--config",
        file,
        "--broker",
        url.replace("127.0.0.1:5672", "127.0.0.1:1"),
        "--connect-timeout",
        "0.5",
        ...verbose,
      ]),
    );
    collect(
      await run([
        "dispatch",
        "--config",
        file,
        "--broker",
        url.replace(password, "wrong-password"),
        "--connect-timeout",
        "0.5",
        ...verbose,
      ]),
    );

    for (const p of [worker, monitor]) p.child.kill("SIGINT");
    await Promise.all([worker.exit(), monitor.exit()]);
    collect(worker);
    collect(monitor);
  }
  for (const name of readdirSync(dir))
    outputs.push(readFileSync(join(dir, name), "utf8").replace(password, "<config file holds it>"));

  const all = outputs.join("\n");
  expect(all).toContain("Result from task_a: Hello from Task A");
  expect(all).toContain(`amqp://${user}:***@127.0.0.1`);
  expect(all.length).toBeGreaterThan(5000);
  expect(all).not.toContain(password);
}, 120_000);
