/**
 * amqps:// for real: the compiled binary against a RabbitMQ node this file starts with a TLS
 * listener and a throwaway CA. Covers the CA given by flag and by environment, a certificate
 * refused without the right CA, --ca values that cannot work, and a reconnect that stays on TLS.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { join } from "node:path";

import {
  requireBinary,
  run,
  start,
  stopAll,
  tempDir,
  uniqueName,
  writeConfig,
  type Proc,
} from "./helpers.ts";
import { makeCertificates, type Certificates } from "./tls/certificates.ts";
import { startTlsNode, type TlsNode } from "./tls/node.ts";

let dir: string;
let certs: Certificates;
let node: TlsNode;

beforeAll(async () => {
  await requireBinary();
  dir = tempDir();
  certs = await makeCertificates(join(dir, "pki"));
  node = await startTlsNode(join(dir, "rabbitmq"), certs);
}, 90_000);

afterAll(async () => {
  // The node's queues vanish with it; nothing else needs cleaning.
  await node?.stop();

  // Left on disk when the node failed to start: its logs are named in the failure.
  if (node) rmSync(dir, { recursive: true, force: true });
}, 30_000);

/** Hides any broker settings of the caller's shell, so each test says exactly what it uses. */
const NO_BROKER_ENV = { AMQP_URL: "", BROKER_URL: "", AMQP_CA_FILE: "" };

/** How a command is told the broker: flags or environment. */
interface BrokerArgs {
  args: string[];
  env: Record<string, string>;
}

const tlsUrl = () => `amqps://guest:guest@localhost:${node.tlsPort}`;
const viaFlags = (): BrokerArgs => ({
  args: ["--broker", tlsUrl(), "--ca", certs.ca],
  env: NO_BROKER_ENV,
});
const viaEnv = (): BrokerArgs => ({
  args: [],
  env: { ...NO_BROKER_ENV, AMQP_URL: tlsUrl(), AMQP_CA_FILE: certs.ca },
});

/**
 * A config routing task_a (and task_b) to fresh queues. Its own broker settings name a port
 * nothing listens on, so a command that dropped the amqps:// URL fails instead of connecting.
 */
function scenario(tasks: 1 | 2): { file: string; queues: string[] } {
  const queues = ["task_a", "task_b"].slice(0, tasks).map(() => uniqueName("tls"));
  const routing = queues.map((q, i) => `  task_${"ab"[i]}: ${q}`).join("\n");
  const yaml = `rabbitmq:\n  host: 127.0.0.1\n  port: 1\ntask_routing:\n${routing}\n`;
  return { file: writeConfig(dir, yaml, `${uniqueName("scenario")}.yml`), queues };
}

async function tlsWorker(queue: string, config: string, how: BrokerArgs): Promise<Proc> {
  const args = ["worker", "--queue", queue, "--config", config, "--log-level", "debug"];
  const proc = start([...args, ...how.args], how.env);
  await proc.waitFor(`consuming ${queue}`, 15_000);
  return proc;
}

/** Every client connection on the node came in on the TLS port and is encrypted. */
async function expectOnlyTls(atLeast: number): Promise<void> {
  const rows = (await node.ctl(["list_connections", "--no-table-headers", "port", "ssl"]))
    .trim()
    .split("\n");
  expect(rows.length).toBeGreaterThanOrEqual(atLeast);
  for (const row of rows) expect(row.split(/\s+/)).toEqual([String(node.tlsPort), "true"]);
}

describe("amqps:// with a private CA", () => {
  test("runs the scenario: a worker given --ca, dispatch given AMQP_CA_FILE", async () => {
    const { file, queues } = scenario(2);
    const workers = [
      await tlsWorker(queues[0]!, file, viaFlags()),
      await tlsWorker(queues[1]!, file, viaEnv()),
    ];

    try {
      const result = await run(["dispatch", "--config", file], viaEnv().env);
      expect(result.stdout).toContain("Result from task_a: Hello from Task A");
      expect(result.stdout).toContain("Result from task_b: Hello from Task B");
      expect(result.stdout).toContain("Total retries: 0");
      expect(result.code).toBe(0);

      await expectOnlyTls(2);
    } finally {
      await stopAll(workers);
    }
  });

  test.each([
    ["no --ca and no AMQP_CA_FILE", "none"],
    ["--ca naming a CA that did not sign the broker", "other"],
  ])(
    "refuses the certificate with %s: exit 3 within the connect timeout, password masked",
    async (_, ca) => {
      const { file } = scenario(1);
      const caArgs = ca === "other" ? ["--ca", certs.otherCa] : [];
      const started = Date.now();

      const result = await run(
        ["dispatch", "--config", file, "--broker", tlsUrl(), "--connect-timeout", "2", ...caArgs],
        NO_BROKER_ENV,
      );
      const seconds = (Date.now() - started) / 1000;

      // Retrying cannot fix a refused certificate, so it fails on the first attempt.
      expect(result.stderr).toContain(
        `error: RabbitMQ at amqps://guest:***@localhost:${node.tlsPort} refused the connection`,
      );
      expect(result.stdout + result.stderr).not.toContain("guest:guest");
      expect(result.stdout).not.toContain("Result from");
      expect(seconds).toBeLessThan(2);
      expect(result.code).toBe(3);
    },
  );

  test("a refused certificate is named as the reason, and the hint points at --ca", async () => {
    const { file } = scenario(1);
    const result = await run(
      ["dispatch", "--config", file, "--broker", tlsUrl(), "--connect-timeout", "2"],
      NO_BROKER_ENV,
    );

    expect(result.stderr).toMatch(/^error: .*certificate/im);
    expect(result.stderr).toMatch(/^hint: .*(--ca|AMQP_CA_FILE)/m);
    expect(result.code).toBe(3);
  });

  test.each([
    ["--broker and --ca", "flags"],
    ["AMQP_URL and AMQP_CA_FILE", "env"],
  ])("a CA with a plain amqp:// URL (%s) is a usage error naming the fix", async (_, how) => {
    const { file } = scenario(1);
    const url = `amqp://guest:guest@localhost:${node.tcpPort}`;
    const given: BrokerArgs =
      how === "flags"
        ? { args: ["--broker", url, "--ca", certs.ca], env: NO_BROKER_ENV }
        : { args: [], env: { ...NO_BROKER_ENV, AMQP_URL: url, AMQP_CA_FILE: certs.ca } };

    const result = await run(["dispatch", "--config", file, ...given.args], given.env);

    expect(result.stderr).toContain(
      `but the broker URL is not amqps:// (amqp://guest:***@localhost:${node.tcpPort})`,
    );
    expect(result.stderr).toMatch(/^hint: use an amqps:\/\/.*drop --ca \/ AMQP_CA_FILE/m);
    expect(result.stdout).not.toContain("Dispatching");
    expect(result.code).toBe(2);
  });

  test.each([
    ["does not exist", "missing"],
    ["is a directory", "directory"],
    ["holds a private key, not a certificate", "key"],
  ])("--ca naming a file that %s is a usage error naming the file", async (_, kind) => {
    const { file } = scenario(1);
    const caFile = {
      missing: join(dir, "missing.pem"),
      directory: join(dir, "pki"),
      key: certs.key,
    }[kind]!;

    const args = ["--broker", tlsUrl(), "--ca", caFile, "--connect-timeout", "2"];
    const result = await run(["dispatch", "--config", file, ...args], NO_BROKER_ENV);

    // The whole of stderr when no line starts with "error: ", so a failure shows what came out.
    const error = result.stderr.split("\n").find((line) => line.startsWith("error: "));
    expect(error ?? result.stderr).toContain(caFile);
    expect(result.stderr).toMatch(/^hint: /m);
    expect(result.stderr).not.toContain("    at ");
    expect(result.code).toBe(2);
  });

  test("a worker reconnects over TLS after the broker closes its connection", async () => {
    const { file, queues } = scenario(1);
    const worker = await tlsWorker(queues[0]!, file, viaFlags());

    try {
      await node.ctl(["close_all_connections", "--global", "dtest TLS reconnect test"]);
      await worker.waitFor(/connection lost[\s\S]*\[broker\] debug: connected/, 15_000);

      const result = await run(["dispatch", "--config", file, ...viaFlags().args], NO_BROKER_ENV);
      expect(result.stdout).toContain("Result from task_a: Hello from Task A");
      expect(result.code).toBe(0);

      await expectOnlyTls(1);
    } finally {
      await stopAll([worker]);
    }
  });
});
