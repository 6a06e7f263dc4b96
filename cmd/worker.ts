/** `dtest worker --queue NAME`: consume one queue and run the tasks routed to it. */
import { defineCommand } from "citty";

import { resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig, routedQueues, undefinedTasks } from "../core/config.ts";
import { reexecWith, WORKER_ENGINE_ENV } from "../core/engine.ts";
import { UsageError } from "../core/errors.ts";
import { defaultWorkerName, DEFAULT_MAX_MESSAGE_BYTES, runWorker } from "../core/runtime.ts";
import {
  checkFlags,
  guard,
  parseCount,
  parseSeconds,
  selfCommand,
  sharedArgs,
  startRun,
} from "./shared.ts";

const args = {
  ...sharedArgs,
  queue: { type: "string", description: "The queue to consume, e.g. queue_a (required)" },
  concurrency: { type: "string", description: "Tasks run at once, and the prefetch (default 1)" },
  name: { type: "string", description: "Worker name (default worker-<queue suffix>@<hostname>)" },
  grace: {
    type: "string",
    description: "Seconds in-flight tasks get to finish on SIGTERM (default 30)",
  },
  "max-message-bytes": {
    type: "string",
    description: `Larger messages are dead-lettered unread (default ${DEFAULT_MAX_MESSAGE_BYTES})`,
  },
} as const;

export default defineCommand({
  meta: { name: "worker", description: "Consume one queue and run the tasks routed to it" },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      reexecWith(WORKER_ENGINE_ENV, selfCommand());
      const config = await loadConfig(values.config);
      const queue = values.queue;
      if (!queue) {
        throw new UsageError(
          "--queue is required",
          `pass one of: ${routedQueues(config)
            .map((q) => `--queue ${q}`)
            .join(", ")}`,
        );
      }
      if (!routedQueues(config).includes(queue)) {
        throw new UsageError(
          `no task in ${config.file} is routed to ${queue}`,
          `use one of ${routedQueues(config).join(", ")}, or route a task to ${queue} under task_routing`,
        );
      }

      const undefinedHere = undefinedTasks(config, queue);
      if (undefinedHere.length > 0) {
        throw new UsageError(
          `${config.file}: ${undefinedHere.join(", ")} routed to ${queue} but not defined under tasks:`,
          `define ${undefinedHere[0]} under tasks: with a kind (hello, noop or exec), or start this worker on another queue`,
        );
      }

      const concurrency = parseCount("concurrency", values.concurrency, 1);
      const graceMs = parseSeconds("grace", values.grace, 30) * 1000;
      const maxMessageBytes = parseCount(
        "max-message-bytes",
        values["max-message-bytes"],
        DEFAULT_MAX_MESSAGE_BYTES,
      );
      const { logger, signal, forceSignal } = startRun(values);
      for (const warning of config.warnings) logger.warn(warning);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      const name = values.name || defaultWorkerName(queue);
      const connectTimeout = parseSeconds("connect-timeout", values["connect-timeout"], 10) * 1000;
      await runWorker({
        config,
        queue,
        broker,
        concurrency,
        name,
        logger,
        signal,
        forceSignal,
        graceMs,
        maxMessageBytes,
        connectTimeout,
      });
    }),
});
