/** `dtest dead-letters`: list what workers parked and why; requeue it after a fix. */
import { defineCommand } from "citty";

import { connectBroker, resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig, routedQueues } from "../core/config.ts";
import { listDeadLetters, renderDeadLetters, requeueDeadLetters } from "../core/dead-letters.ts";
import { UsageError } from "../core/errors.ts";
import { checkFlags, guard, parseCount, sharedArgs, startRun } from "./shared.ts";

const args = {
  ...sharedArgs,
  queue: {
    type: "string",
    description: "Only this work queue's dead letters (default: every routed queue)",
  },
  requeue: { type: "boolean", description: "Move the dead letters back to their work queues" },
  id: { type: "string", description: "With --requeue: only these task ids (comma-separated)" },
  limit: { type: "string", description: "At most this many messages per queue (default 1000)" },
  json: { type: "boolean", description: "Print the list as JSON" },
} as const;

export default defineCommand({
  meta: {
    name: "dead-letters",
    description: "List dead-lettered messages with their reasons, or requeue them",
  },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const config = await loadConfig(values.config);
      const queues = values.queue ? [values.queue] : routedQueues(config);
      const limit = parseCount("limit", values.limit, 1000);
      if (values.id && !values.requeue)
        throw new UsageError("--id goes with --requeue", "add --requeue");
      const { logger, signal } = startRun(values);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      await using connection = await connectBroker(broker, {
        logger,
        name: "dtest dead-letters",
        signal,
      });
      if (values.requeue) {
        const ids = values.id
          ?.split(",")
          .map((s) => s.trim())
          .filter(Boolean);
        const moved = await requeueDeadLetters(connection.model, queues, limit, ids);
        process.stdout.write(`Requeued ${moved} message(s).\n`);
        return;
      }

      const letters = await listDeadLetters(connection.model, queues, limit);
      const out = values.json ? [JSON.stringify(letters)] : renderDeadLetters(letters);
      process.stdout.write(`${out.join("\n")}\n`);
    }),
});
