/**
 * Worker services run under a compose tool: finding one (`docker compose`, `docker-compose`
 * or `podman-compose`), mapping each service to the queue its worker consumes, scaling a
 * service and listing its containers.
 */
import { existsSync, readFileSync } from "node:fs";

import { parse } from "yaml";

import { DtestError, UsageError } from "./errors.ts";

const CANDIDATES = [["docker", "compose"], ["docker-compose"], ["podman-compose"]];

const PODMAN_SOCKET = "/run/podman/podman.sock";

/**
 * The environment for compose: where no Docker socket exists but podman's Docker-compatible
 * socket does (see scripts/container-engine.sh), point DOCKER_HOST at it.
 */
export function composeEnv(env = process.env): Record<string, string | undefined> {
  if (env.DOCKER_HOST || existsSync("/var/run/docker.sock") || !existsSync(PODMAN_SOCKET))
    return env;
  return { ...env, DOCKER_HOST: `unix://${PODMAN_SOCKET}` };
}

export interface Compose {
  /** The command that runs compose, with the files passed as -f. */
  argv: string[];
  files: string[];
}

export interface ServiceContainers {
  service: string;
  running: number;
  names: string[];
}

async function answers(argv: string[]): Promise<boolean> {
  try {
    const child = Bun.spawn([...argv, "version"], {
      stdout: "ignore",
      stderr: "ignore",
      stdin: "ignore",
      env: composeEnv(),
    });
    return (await child.exited) === 0;
  } catch {
    // Not installed: spawn fails with ENOENT.
    return false;
  }
}

/** The compose files: COMPOSE_FILE (colon-separated) if set, else docker-compose.yml. */
export function composeFiles(env = process.env): string[] {
  if (env.COMPOSE_FILE) return env.COMPOSE_FILE.split(":").filter(Boolean);
  return ["docker-compose.yml"];
}

/** Finds a compose tool; throws DtestError naming what to install when there is none. */
export async function findCompose(files = composeFiles()): Promise<Compose> {
  const missing = files.filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new UsageError(
      `compose file not found: ${missing.join(", ")}`,
      "run from the dtest folder, or set COMPOSE_FILE",
    );
  }

  for (const candidate of CANDIDATES) {
    if (await answers(candidate))
      return { argv: [...candidate, ...files.flatMap((f) => ["-f", f])], files };
  }
  throw new DtestError(
    "no compose tool found (tried docker compose, docker-compose, podman-compose)",
    {
      hint: "install Docker Compose (the docker compose plugin or docker-compose) or podman-compose",
    },
  );
}

function queueOf(command: unknown): string | undefined {
  const words = Array.isArray(command)
    ? command.map(String)
    : typeof command === "string"
      ? command.split(/\s+/)
      : [];
  const at = words.indexOf("--queue");
  if (at >= 0) return words[at + 1];
  return words.find((w) => w.startsWith("--queue="))?.slice("--queue=".length);
}

/** Maps each worker service to its queue, read from its `worker --queue Q` command. */
export function serviceQueues(files: string[]): Record<string, string> {
  const queues: Record<string, string> = {};
  for (const file of files) {
    const doc = parse(readFileSync(file, "utf8")) as {
      services?: Record<string, { command?: unknown }>;
    } | null;
    for (const [service, def] of Object.entries(doc?.services ?? {})) {
      const queue = queueOf(def?.command);
      if (queue) queues[service] = queue;
    }
  }
  return queues;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCompose(compose: Compose, args: string[]): Promise<RunResult> {
  const child = Bun.spawn([...compose.argv, ...args], {
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: composeEnv(),
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, stdout, stderr };
}

/** Runs compose and throws DtestError with its output when it fails. */
export async function mustCompose(compose: Compose, args: string[]): Promise<string> {
  const result = await runCompose(compose, args);
  if (result.code !== 0) {
    const tail = (result.stderr || result.stdout).trim().split("\n").slice(-5).join("\n  ");
    throw new DtestError(
      `${compose.argv.join(" ")} ${args.join(" ")} failed (exit ${result.code}):\n  ${tail}`,
      {
        hint: "check that the container engine is running (DOCKER_HOST) and the image builds",
      },
    );
  }
  return result.stdout;
}

/**
 * Running containers per service. Compose v2 answers `ps --format json`; docker-compose v1
 * and podman-compose only print a table, whose State column reads "Up" for running ones.
 */
export async function serviceContainers(
  compose: Compose,
  services: string[],
): Promise<ServiceContainers[]> {
  const json = await runCompose(compose, ["ps", "--format", "json"]);
  // docker-compose v1 answers an unknown --format with its usage text and exit 0.
  const understood = json.code === 0 && !json.stderr.includes("Usage:");
  const rows = understood
    ? parseJsonRows(json.stdout)
    : parseTable(await mustCompose(compose, ["ps"]), services);

  return services.map((service) => {
    const mine = rows.filter((r) => r.service === service && r.running);
    return { service, running: mine.length, names: mine.map((r) => r.name) };
  });
}

interface Row {
  name: string;
  service: string;
  running: boolean;
}

function parseJsonRows(text: string): Row[] {
  const trimmed = text.trim();
  if (!trimmed) return [];
  const items = trimmed.startsWith("[")
    ? JSON.parse(trimmed)
    : trimmed.split("\n").map((l) => JSON.parse(l));
  return (items as Record<string, string>[]).map((i) => ({
    name: i.Name ?? "",
    service: i.Service ?? "",
    running: (i.State ?? "").toLowerCase() === "running",
  }));
}

/** docker-compose v1 names containers `<project>_<service>_<n>`; projects may contain `_` too. */
function parseTable(text: string, services: string[]): Row[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => /^-{5,}/.test(l));
  return lines
    .slice(start + 1)
    .filter((l) => l.trim())
    .map((line) => {
      const name = line.trim().split(/\s+/)[0]!;
      const service = services.find((s) =>
        new RegExp(`[_-]${s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}[_-]\\d+$`).test(name),
      );
      return { name, service: service ?? name, running: /\sUp(\s|$)/.test(line) };
    });
}
