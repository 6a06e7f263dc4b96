/**
 * Remote control both ways with real Celery 5.2: `celery inspect` sees dtest workers, and
 * `dtest status` sees Celery workers (their queues come from `active_queues`).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";

import type { ChannelModel } from "amqplib";

import {
  BROKER_URL,
  connectTestBroker,
  deleteQueues,
  Proc,
  requireBinary,
  run,
  startWorker,
  stopAll,
  tempDir,
  uniqueName,
  writeConfig,
} from "./helpers.ts";

const PYTHON = "/usr/bin/python3";
let conn: ChannelModel;
let dir: string;
const qa = uniqueName("qa");
const qc = uniqueName("qc");
const name = `${uniqueName("dtw")}@pidbox-test`;

beforeAll(async () => {
  await requireBinary();
  conn = await connectTestBroker();
  dir = tempDir();
  const broker = BROKER_URL.endsWith("/") ? `${BROKER_URL}/` : `${BROKER_URL}//`;
  writeConfig(
    dir,
    `from celery import Celery\napp = Celery("capp", broker="${broker}", backend="rpc://")\n\n@app.task(name="probe")\ndef probe():\n    return "ok"\n`,
    "capp.py",
  );
});

afterAll(async () => {
  await deleteQueues(conn, [qa, qc, `${qa}.dead`]);
  await conn.close();
});

function celery(...args: string[]) {
  const result = Bun.spawnSync([PYTHON, "-m", "celery", "-A", "capp", ...args], {
    cwd: dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: result.exitCode, out: result.stdout.toString() + result.stderr.toString() };
}

test("celery inspect ping, active_queues and stats answer from a dtest worker", async () => {
  const file = writeConfig(dir, `task_routing:\n  task_a: ${qa}\n`, "dtest.yml");
  const worker = await startWorker(qa, file, ["--name", name]);

  try {
    const ping = celery("inspect", "ping", "-d", name, "--json");
    expect(ping.code).toBe(0);
    expect(JSON.parse(ping.out.trim().split("\n").at(-1)!)).toEqual({ [name]: { ok: "pong" } });

    const queues = celery("inspect", "active_queues", "-d", name, "--json");
    const answer = JSON.parse(queues.out.trim().split("\n").at(-1)!);
    expect(answer[name].map((q: { name: string }) => q.name)).toEqual([qa]);
    expect(answer[name][0]).toMatchObject({
      durable: true,
      exclusive: false,
      auto_delete: false,
      exchange: { name: qa, type: "direct" },
    });

    const stats = celery("inspect", "stats", "-d", name, "--json");
    expect(JSON.parse(stats.out.trim().split("\n").at(-1)!)[name].pid).toBe(worker.child.pid);
  } finally {
    await stopAll([worker]);
  }
}, 60_000);

test("dtest status sees a Celery worker and its queue, even without heartbeats", async () => {
  const file = writeConfig(dir, `task_routing:\n  probe: ${qc}\n`, "status.yml");
  const cname = `${uniqueName("celery")}@pidbox-test`;
  const child = Bun.spawn(
    [
      PYTHON,
      "-m",
      "celery",
      "-A",
      "capp",
      "worker",
      "-Q",
      qc,
      "-n",
      cname,
      "-P",
      "solo",
      "-l",
      "info",
      "--without-heartbeat",
      "--without-gossip",
      "--without-mingle",
    ],
    {
      cwd: dir,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const proc = new Proc(child);

  try {
    await proc.waitFor("ready.", 30_000);
    const result = await run(["status", "--config", file, "--json", "--listen", "1.5"]);
    expect(result.stderr).toBe("");
    const status = JSON.parse(result.stdout);
    expect(status.queues).toEqual([expect.objectContaining({ queue: qc, consumers: 1 })]);
    expect(status.workers).toContainEqual(
      expect.objectContaining({ hostname: cname, queues: [qc] }),
    );
  } finally {
    child.kill("SIGTERM");
    await proc.exit();
  }
}, 60_000);
