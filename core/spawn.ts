/**
 * Local worker processes started from this same executable, for `--spawn-workers` of
 * `dispatch` and `load-test`: the whole system on one machine without containers.
 */
import type { Subprocess } from "bun";

import type { BrokerUrl } from "./broker.ts";
import type { Logger } from "./log.ts";

export interface SpawnOptions {
  /** How to run this program again: the compiled binary, or bun and the entry script. */
  self: string[];
  configFile: string;
  broker: BrokerUrl;
  logger: Logger;
  logLevel?: string;
  /** `text` or `json`, as the command that spawns them logs. */
  logFormat?: string;
  /** Each worker's `--concurrency`; the worker's own default when unset. */
  concurrency?: number;
}

export interface LocalWorkers {
  stop(): Promise<void>;
}

/** Starts one worker process per queue; `stop()` sends SIGTERM and waits for each to exit. */
export function spawnWorkers(queues: string[], options: SpawnOptions): LocalWorkers {
  const log = options.logger.withTag("spawn");
  const children: Subprocess[] = queues.map((queue) => {
    const argv = [...options.self, "worker", "--queue", queue, "--config", options.configFile];
    if (options.logLevel) argv.push("--log-level", options.logLevel);
    if (options.logFormat) argv.push("--log-format", options.logFormat);
    if (options.concurrency) argv.push("--concurrency", String(options.concurrency));

    const child = Bun.spawn(argv, {
      env: {
        ...process.env,
        AMQP_URL: options.broker.url,
        ...(options.broker.caFile && { AMQP_CA_FILE: options.broker.caFile }),
      },
      stdin: "ignore",
      stdout: "inherit",
      stderr: "inherit",
    });
    log.info(`started a worker for ${queue} (pid ${child.pid})`);
    return child;
  });

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const child of children) child.kill("SIGTERM");
      const codes = await Promise.all(children.map((child) => child.exited));
      log.debug(`workers exited with ${codes.join(", ")}`);
    })());
  return { stop };
}
