/** `dtest monitor`: follow workers and tasks live from Celery's event stream. */
import { defineCommand } from "citty";

import { resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig } from "../core/config.ts";
import { monitor } from "../core/monitor.ts";
import { checkFlags, guard, parseSeconds, sharedArgs, startRun } from "./shared.ts";

const args = {
  ...sharedArgs,
  json: { type: "boolean", description: "Print each event as one JSON object per line" },
  interval: { type: "string", description: "Seconds between per-queue summary lines (default 5)" },
} as const;

export default defineCommand({
  meta: {
    name: "monitor",
    description: "Follow workers joining and leaving and tasks as they run, until Ctrl-C",
  },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const config = await loadConfig(values.config);
      const interval = parseSeconds("interval", values.interval, 5);
      const { logger, signal } = startRun(values);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      const print = (line: string) => process.stdout.write(`${line}\n`);
      await monitor({
        config,
        broker,
        logger,
        signal,
        json: values.json ?? false,
        interval,
        print,
      });
    }),
});
