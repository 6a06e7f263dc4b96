/** `dtest scale SERVICE COUNT` / `dtest scale --all COUNT`: scale worker containers. */
import { defineCommand } from "citty";

import { connectBroker, resolveBrokerUrl } from "../core/broker.ts";
import { findCompose, serviceQueues } from "../core/compose.ts";
import { loadConfig } from "../core/config.ts";
import { UsageError } from "../core/errors.ts";
import { scaleServices } from "../core/fleet.ts";
import { checkFlags, guard, parseCount, parseSeconds, sharedArgs, startRun } from "./shared.ts";

const args = {
  ...sharedArgs,
  service: {
    type: "positional",
    required: false,
    description: "Compose service, e.g. worker-a (or a count with --all)",
  },
  count: { type: "positional", required: false, description: "Number of containers, 0 or more" },
  all: { type: "boolean", description: "Scale every worker service to the count" },
  wait: {
    type: "string",
    description: "Seconds to wait for the broker to see the new consumers (default 120)",
  },
} as const;

export default defineCommand({
  meta: {
    name: "scale",
    description: "Scale worker services through compose and wait for their consumers",
  },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const negative = rawArgs.find((a) => /^-\d+$/.test(a));
      if (negative)
        throw new UsageError(
          `--count must be a whole number ≥ 0 (got "${negative}")`,
          "e.g. dtest scale worker-a 0",
        );

      const compose = await findCompose();
      const services = Object.keys(serviceQueues(compose.files));
      const [service, rawCount] = values.all
        ? [undefined, values.service]
        : [values.service, values.count];
      if (!values.all && !service) {
        throw new UsageError(
          "scale needs a service and a count",
          `e.g. dtest scale ${services[0] ?? "worker-a"} 3, or dtest scale --all 2`,
        );
      }
      if (rawCount === undefined)
        throw new UsageError("scale needs a count", "e.g. dtest scale worker-a 3");

      const count = parseCount("count", rawCount, 1, 0);
      const targets = Object.fromEntries(
        (values.all ? services : [service!]).map((s) => [s, count]),
      );
      const wait = parseSeconds("wait", values.wait, 120);
      const config = await loadConfig(values.config);
      const { logger, signal } = startRun(values);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      await using connection = await connectBroker(broker, { logger, name: "dtest scale", signal });
      const states = await scaleServices({
        model: connection.model,
        compose,
        targets,
        logger,
        wait,
        signal,
      });
      for (const s of states) process.stdout.write(`${s.queue}: ${s.consumers} consumer(s)\n`);
    }),
});
