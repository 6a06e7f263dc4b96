/**
 * A RabbitMQ node owned by the TLS tests: a child process with its own name, data, logs, config,
 * Erlang cookie and ports, all on 127.0.0.1. It shares only epmd with the node on 5672, which
 * it never contacts.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";

import type { Subprocess } from "bun";

import type { Certificates } from "./certificates.ts";

export interface TlsNode {
  /** The Erlang node name, for `rabbitmqctl -n`. */
  name: string;
  tcpPort: number;
  tlsPort: number;
  /** Runs rabbitmqctl against this node and returns its stdout; throws with its stderr. */
  ctl(args: string[]): Promise<string>;
  /** Stops the node and waits for it to exit; safe to call twice. */
  stop(): Promise<void>;
}

interface Ports {
  tcpPort: number;
  tlsPort: number;
  distPort: number;
}

/** Starts the node and waits until its TLS port completes a handshake; throws one clear line. */
export async function startTlsNode(dir: string, certs: Certificates): Promise<TlsNode> {
  const server = rabbitScript("rabbitmq-server");
  const ports = await freePorts();
  const name = `dtest-tls-${process.pid}@localhost`;
  const env = writeNodeFiles(dir, name, ports, certs);

  const out = openSync(join(dir, "console.log"), "a");
  const child = Bun.spawn([server], { cwd: dir, env, stdin: "ignore", stdout: out, stderr: out });
  closeSync(out);
  const stop = stopper(child, dir);

  try {
    await waitForHandshake(ports.tlsPort, certs.ca, child);
  } catch (err) {
    await stop();
    const why = `${(err as Error).message} (${firstLoggedError(dir, name)}; files in ${dir})`;
    throw new Error(`the TLS tests' RabbitMQ node ${name} did not start: ${why}`);
  }

  const ctl = (args: string[]) => runCtl(env, ["-n", name, "-q", ...args]);
  return { name, tcpPort: ports.tcpPort, tlsPort: ports.tlsPort, ctl, stop };
}

/**
 * Debian's /usr/sbin wrappers re-run the scripts as the rabbitmq user, who can read neither a
 * root-owned temp dir nor this node's cookie; the scripts they wrap run as the caller.
 */
function rabbitScript(name: "rabbitmq-server" | "rabbitmqctl"): string {
  const direct = join("/usr/lib/rabbitmq/bin", name);
  if (existsSync(direct)) return direct;

  const found = Bun.which(name);
  if (!found) {
    const fix = "apt-get install rabbitmq-server";
    throw new Error(`${name} is not installed; the TLS tests start their own node (${fix})`);
  }
  return found;
}

/** A port the kernel reports free on 127.0.0.1, still held by the returned listener. */
function holdFreePort(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

/** Three free ports, held at once so that they differ, then released for the node. */
async function freePorts(): Promise<Ports> {
  const held = [await holdFreePort(), await holdFreePort(), await holdFreePort()];
  const [tcpPort, tlsPort, distPort] = held.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(held.map((s) => new Promise((resolve) => s.close(resolve))));
  return { tcpPort: tcpPort!, tlsPort: tlsPort!, distPort: distPort! };
}

function rabbitmqConf(ports: Ports, certs: Certificates): string {
  return [
    `listeners.tcp.default = 127.0.0.1:${ports.tcpPort}`,
    `listeners.ssl.default = 127.0.0.1:${ports.tlsPort}`,
    `ssl_options.cacertfile = ${certs.ca}`,
    `ssl_options.certfile = ${certs.cert}`,
    `ssl_options.keyfile = ${certs.key}`,
    // Clients authenticate with a password, not a certificate.
    "ssl_options.verify = verify_none",
    "ssl_options.fail_if_no_peer_cert = false",
    // guest may log in only over loopback, which is all this node listens on.
    "loopback_users.guest = true",
    "",
  ].join("\n");
}

/** Writes the config, cookie and plugin list; returns the environment the scripts run with. */
function writeNodeFiles(dir: string, name: string, ports: Ports, certs: Certificates) {
  const home = join(dir, "home");
  mkdirSync(home, { recursive: true });
  mkdirSync(join(dir, "log"), { recursive: true });

  // Its own cookie: rabbitmqctl reaches this node only, and the node can never join the other.
  const cookie = crypto.randomUUID().replaceAll("-", "");
  writeFileSync(join(home, ".erlang.cookie"), cookie, { mode: 0o400 });
  writeFileSync(join(dir, "enabled_plugins"), "[].\n");
  writeFileSync(join(dir, "rabbitmq-env.conf"), "");
  writeFileSync(join(dir, "rabbitmq.conf"), rabbitmqConf(ports, certs));

  return {
    ...inheritedEnv(),
    HOME: home,
    RABBITMQ_NODENAME: name,
    RABBITMQ_DIST_PORT: String(ports.distPort),
    // An empty env file: the host's rabbitmq-env.conf names the shared node.
    RABBITMQ_CONF_ENV_FILE: join(dir, "rabbitmq-env.conf"),
    RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.conf"),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, "advanced.config"),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
    RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: join(dir, "log"),
    RABBITMQ_PID_FILE: join(dir, "beam.pid"),
    ERL_CRASH_DUMP: join(dir, "erl_crash.dump"),
    ERL_EPMD_ADDRESS: "127.0.0.1",
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-kernel inet_dist_use_interface {127,0,0,1}",
  };
}

/** The caller's environment without RabbitMQ or Erlang settings meant for another node. */
function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !/^(RABBITMQ_|ERL_)/.test(key)) env[key] = value;
  }
  return env;
}

/** How long the node gets to boot; it takes about 4 s here, more on a loaded CI machine. */
const BOOT_MS = 60_000;

/** Retries a verified handshake until one completes, the node exits or BOOT_MS pass. */
async function waitForHandshake(port: number, caFile: string, child: Subprocess): Promise<void> {
  const ca = readFileSync(caFile);
  const deadline = Date.now() + BOOT_MS;
  let exitCode: number | undefined;
  void child.exited.then((code) => (exitCode = code));
  let last = "no attempt yet";

  while (Date.now() < deadline) {
    if (exitCode !== undefined) throw new Error(`rabbitmq-server exited with code ${exitCode}`);
    try {
      return await handshake(port, ca);
    } catch (err) {
      last = (err as Error).message;
    }
    // A refused connection returns at once; this spaces the attempts while Erlang boots.
    await Promise.race([child.exited, Bun.sleep(100)]);
  }
  throw new Error(`no TLS handshake on 127.0.0.1:${port} within ${BOOT_MS / 1000} s (${last})`);
}

function handshake(port: number, ca: Buffer): Promise<void> {
  const options = { host: "127.0.0.1", port, ca, servername: "localhost", timeout: 2_000 };

  return new Promise((resolve, reject) => {
    const socket = tlsConnect(options, () => {
      socket.destroy();
      resolve();
    });
    socket.once("timeout", () => socket.destroy(new Error("handshake timed out")));
    socket.once("error", reject);
  });
}

/** SIGTERM lets the script stop the VM cleanly; both get SIGKILL if that takes over 15 s. */
function stopper(child: Subprocess, dir: string): () => Promise<void> {
  let stopping: Promise<void> | undefined;

  const stop = async () => {
    child.kill("SIGTERM");
    const late = Bun.sleep(15_000).then(() => "late" as const);
    if ((await Promise.race([child.exited, late])) !== "late") return;

    killIfAlive(Number(readFileIfAny(join(dir, "beam.pid"))));
    child.kill("SIGKILL");
    await child.exited;
  };
  return () => (stopping ??= stop());
}

function killIfAlive(pid: number): void {
  if (!(pid > 0)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch (err) {
    // ESRCH: the VM has already exited and only the script is left.
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

async function runCtl(env: Record<string, string>, args: string[]): Promise<string> {
  const child = Bun.spawn([rabbitScript("rabbitmqctl"), ...args], {
    env,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    signal: AbortSignal.timeout(30_000),
  });
  const [code, stdout, stderr] = await Promise.all([
    child.exited,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);

  if (code !== 0) {
    throw new Error(`rabbitmqctl ${args.join(" ")} exited with ${code}: ${stderr.trim()}`);
  }
  return stdout;
}

/** The first error the node logged: the cause of a failed boot, before the crash reports. */
function firstLoggedError(dir: string, name: string): string {
  const files = [join(dir, "console.log"), join(dir, "log", `${name}.log`)];
  for (const line of files.map(readFileIfAny).join("\n").split("\n")) {
    const error = /\[error\] <[^>]*> +(\S.*)$/.exec(line);
    if (error) return `first error logged: ${error[1]}`;
  }
  return "no error logged";
}

function readFileIfAny(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8") : "";
}
