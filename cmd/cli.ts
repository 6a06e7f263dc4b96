#!/usr/bin/env bun
/**
 * dtest: distributed test dispatch over RabbitMQ, speaking Celery's message protocol.
 *
 *   dtest worker --queue queue_a      run tasks routed to queue_a
 *   dtest dispatch                    run the scenario in test-config.yml and report
 *   dtest status                      workers, messages and containers per queue
 *   dtest scale worker-a 3            scale a worker service through compose
 *   dtest monitor                     follow workers and tasks live
 *   dtest load-test --tasks 20        load the workers, report throughput and latency
 *   dtest dead-letters [--requeue]    what workers parked and why; put it back after a fix
 *   dtest report diff OLD NEW         status changes and time regressions between two runs
 *   dtest --help                      every subcommand and flag
 */
import { defineCommand, runCommand, showUsage, type CommandDef } from "citty";

import { EXIT } from "../core/errors.ts";
import deadLetters from "./dead-letters.ts";
import dispatch from "./dispatch.ts";
import loadTest from "./load-test.ts";
import monitor from "./monitor.ts";
import report from "./report.ts";
import scale from "./scale.ts";
import status from "./status.ts";
import worker from "./worker.ts";

const VERSION = "0.1.0";

const main = defineCommand({
  meta: {
    name: "dtest",
    version: VERSION,
    description: "Distributed test dispatch over RabbitMQ (Celery protocol v2)",
  },
  subCommands: {
    dispatch,
    worker,
    "load-test": loadTest,
    scale,
    status,
    monitor,
    "dead-letters": deadLetters,
    report,
  },
});

/** Finds the (possibly nested) subcommand the arguments name, for usage output. */
function resolve(rawArgs: string[]): [CommandDef, CommandDef?] {
  let command = main as CommandDef;
  let parent: CommandDef | undefined;
  for (const word of rawArgs.filter((a) => !a.startsWith("-"))) {
    const sub = (command.subCommands as Record<string, CommandDef> | undefined)?.[word];
    if (!sub) break;
    [parent, command] = [command, sub];
  }
  return [command, parent];
}

async function runCli(rawArgs: string[]): Promise<void> {
  if (rawArgs.length === 1 && (rawArgs[0] === "--version" || rawArgs[0] === "-v")) {
    console.log(VERSION);
    return;
  }
  if (rawArgs.length === 0 || rawArgs.includes("--help") || rawArgs.includes("-h")) {
    await showUsage(...resolve(rawArgs));
    return;
  }

  try {
    await runCommand(main, { rawArgs });
  } catch (err) {
    // citty's own argument errors (unknown command, missing value) are usage errors: exit 2.
    if (!(err instanceof Error) || err.name !== "CLIError") throw err;
    await showUsage(...resolve(rawArgs));
    console.error(`error: ${err.message}`);
    process.exitCode = EXIT.usage;
  }
}

await runCli(process.argv.slice(2));
