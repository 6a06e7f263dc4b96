/** `dtest dispatch`: run the scenario in the config against the workers and report. */
import { defineCommand } from "citty";

import { resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig, scenarioQueues } from "../core/config.ts";
import { dispatch } from "../core/dispatcher.ts";
import { spawnWorkers, type LocalWorkers } from "../core/spawn.ts";
import { checkFlags, guard, parseSeconds, selfCommand, sharedArgs, startRun } from "./shared.ts";

const args = {
  ...sharedArgs,
  timeout: { type: "string", description: "Seconds to wait for all results (default 300)" },
  "wait-workers": { type: "string", description: "Seconds to wait for a worker on each queue (default 5)" },
  "spawn-workers": { type: "boolean", description: "Start one local worker per needed queue, then stop them" },
} as const;

export default defineCommand({
  meta: { name: "dispatch", description: "Send the scenario's tasks, wait for results, report" },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const config = await loadConfig(values.config);
      const timeout = parseSeconds("timeout", values.timeout, 300);
      const workerWait = parseSeconds("wait-workers", values["wait-workers"], values["spawn-workers"] ? 15 : 5);
      const { logger, signal } = startRun(values);
      for (const warning of config.warnings) logger.warn(warning);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      let workers: LocalWorkers | undefined;
      if (values["spawn-workers"]) {
        workers = spawnWorkers(scenarioQueues(config), {
          self: selfCommand(), configFile: config.file, broker, logger, logLevel: values["log-level"] ?? "warn",
        });
      }

      try {
        const print = (line: string) => process.stdout.write(`${line}\n`);
        const connectTimeout = parseSeconds("connect-timeout", values["connect-timeout"], 10) * 1000;
        const report = await dispatch({ config, broker, logger, signal, timeout, workerWait, connectTimeout, print });
        return report.exitCode;
      } finally {
        await workers?.stop();
      }
    }),
});
