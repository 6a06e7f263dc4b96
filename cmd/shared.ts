/**
 * What every subcommand shares: the common flags, building the logger, one AbortController
 * wired to SIGINT/SIGTERM, and the wrapper that turns a DtestError into a message and an exit
 * code instead of a stack trace.
 */
import type { BrokerUrl } from "../core/broker.ts";
import { DEFAULT_CONFIG_FILE } from "../core/config.ts";
import { describeError, DtestError, EXIT, UsageError } from "../core/errors.ts";
import { createLogger, maskSecrets, type LogFormat, type Logger } from "../core/log.ts";
import { spawnWorkers, type LocalWorkers } from "../core/spawn.ts";

export const sharedArgs = {
  config: {
    type: "string",
    description: `Scenario and worker config file (default ${DEFAULT_CONFIG_FILE})`,
    default: DEFAULT_CONFIG_FILE,
  },
  broker: {
    type: "string",
    description:
      "Broker URL, amqp[s]://user:pass@host:port/vhost (else AMQP_URL, BROKER_URL, the config)",
  },
  ca: {
    type: "string",
    description:
      "PEM file of the CA that signed an amqps:// broker's certificate (else AMQP_CA_FILE)",
  },
  "connect-timeout": {
    type: "string",
    description: "Seconds to keep trying to reach the broker at start (default 10)",
  },
  "log-level": {
    type: "string",
    description: "silent, error, warn, info, debug or trace (default info, or CONSOLA_LEVEL)",
  },
  "log-format": {
    type: "string",
    description: "text, or json for one JSON object per line",
    default: "text",
  },
} as const;

export interface SharedArgValues {
  config: string;
  broker?: string;
  ca?: string;
  "connect-timeout"?: string;
  "log-level"?: string;
  "log-format"?: string;
}

export interface Run {
  logger: Logger;
  signal: AbortSignal;
  /** Aborts on a second SIGINT/SIGTERM: stop waiting and give work back. */
  forceSignal: AbortSignal;
}

/** Builds the logger and the signal handling for one command. */
export function startRun(args: SharedArgValues): Run {
  const format = args["log-format"] ?? "text";
  if (format !== "text" && format !== "json") {
    throw new UsageError(
      `--log-format must be text or json (got "${format}")`,
      "use --log-format json",
    );
  }

  let logger: Logger;
  try {
    logger = createLogger({ level: args["log-level"], format: format as LogFormat });
  } catch (err) {
    throw new UsageError((err as Error).message, "use --log-level debug, for example");
  }

  const controller = new AbortController();
  const force = new AbortController();
  const onSignal = (name: string) => {
    if (controller.signal.aborted) {
      logger.warn(`${name} again: stopping now`);
      force.abort(new Error(name));
      return;
    }
    logger.info(`${name} received: stopping gracefully (send it again to stop now)`);
    controller.abort(new Error(name));
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  return { logger, signal: controller.signal, forceSignal: force.signal };
}

/** Parses a whole number flag; throws UsageError naming the flag. */
export function parseCount(
  flag: string,
  value: string | undefined,
  fallback: number,
  min = 1,
): number {
  if (value === undefined || value === "") return fallback;

  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(
      `--${flag} must be a whole number ≥ ${min} (got "${value}")`,
      `pass e.g. --${flag} ${Math.max(min, 1)}`,
    );
  }
  return n;
}

/** Parses a number > 0 in `unit`; throws UsageError naming the flag, the unit and an example. */
export function parsePositive(
  flag: string,
  value: string | undefined,
  fallback: number,
  measure: { unit: string; example: number },
): number {
  if (value === undefined || value === "") return fallback;

  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new UsageError(
      `--${flag} must be a number of ${measure.unit} > 0 (got "${value}")`,
      `pass e.g. --${flag} ${measure.example}`,
    );
  }
  return n;
}

const SECONDS = { unit: "seconds", example: 30 };

/** Parses a duration in seconds; throws UsageError naming the flag. */
export function parseSeconds(flag: string, value: string | undefined, fallback: number): number {
  return parsePositive(flag, value, fallback, SECONDS);
}

/**
 * For `--spawn-workers`: one local worker per queue, started from this same program, logging
 * in this command's format and at its level (warn unless one was given).
 */
export function spawnLocalWorkers(
  queues: string[],
  run: { values: SharedArgValues; configFile: string; broker: BrokerUrl; logger: Logger },
  concurrency?: number,
): LocalWorkers {
  return spawnWorkers(queues, {
    self: selfCommand(),
    configFile: run.configFile,
    broker: run.broker,
    logger: run.logger,
    logLevel: run.values["log-level"] ?? "warn",
    logFormat: run.values["log-format"],
    concurrency,
  });
}

/** How to start this program again: the compiled binary alone, or bun with the entry script. */
export function selfCommand(): string[] {
  return Bun.main.endsWith(".ts") ? [process.execPath, Bun.main] : [process.execPath];
}

/** Runs a command body; a DtestError becomes its message and hint on stderr and its exit code. */
export async function guard(body: () => Promise<number | void>): Promise<void> {
  try {
    process.exitCode = (await body()) ?? EXIT.ok;
  } catch (err) {
    if (!(err instanceof DtestError)) throw err;
    const cause = err.cause ? ` (${describeError(err.cause)})` : "";
    process.stderr.write(maskSecrets(`error: ${err.message}${cause}\n`));
    if (err.hint) process.stderr.write(maskSecrets(`hint: ${err.hint}\n`));
    process.exitCode = err.exitCode;
  }
}

/** Refuses flags the command does not define, naming the flag (citty ignores them). */
export function checkFlags(rawArgs: string[], defined: Record<string, unknown>): void {
  for (const raw of rawArgs) {
    if (!raw.startsWith("--") || raw === "--") continue;

    const name = raw.slice(2).split("=")[0]!;
    const base = name.startsWith("no-") ? name.slice(3) : name;
    if (name in defined || base in defined || name === "help") continue;
    throw new UsageError(`unknown flag --${name}`, `see the flags with --help`);
  }
}
