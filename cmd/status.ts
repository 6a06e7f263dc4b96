/** `dtest status`: consumers and messages per routed queue, live workers, containers. */
import { existsSync } from "node:fs";

import { defineCommand } from "citty";

import { connectBroker, resolveBrokerUrl } from "../core/broker.ts";
import { composeFiles, findCompose, type Compose } from "../core/compose.ts";
import { loadConfig, routedQueues } from "../core/config.ts";
import { readStatus, renderStatus } from "../core/fleet.ts";
import type { Logger } from "../core/log.ts";
import { checkFlags, guard, parseSeconds, sharedArgs, startRun } from "./shared.ts";

const args = {
  ...sharedArgs,
  json: { type: "boolean", description: "Print one JSON object for scripts" },
  listen: { type: "string", description: "Seconds to listen for worker heartbeats (default 2.3)" },
} as const;

/** Compose is optional for status: without a compose file or tool, containers are not shown. */
async function optionalCompose(logger: Logger): Promise<Compose | null> {
  if (!composeFiles().every((f) => existsSync(f))) return null;
  try {
    return await findCompose();
  } catch (err) {
    logger.debug(`containers not shown: ${(err as Error).message}`);
    return null;
  }
}

export default defineCommand({
  meta: {
    name: "status",
    description: "Show workers, ready and unacked messages per queue, and containers",
  },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const config = await loadConfig(values.config);
      const listenMs = parseSeconds("listen", values.listen, 2.3) * 1000;
      const { logger, signal } = startRun(values);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      await using connection = await connectBroker(broker, {
        logger,
        name: "dtest status",
        signal,
      });
      const compose = await optionalCompose(logger);
      const status = await readStatus(connection.model, routedQueues(config), compose, listenMs);

      const out = values.json ? [JSON.stringify(status)] : renderStatus(status);
      process.stdout.write(`${out.join("\n")}\n`);
    }),
});
