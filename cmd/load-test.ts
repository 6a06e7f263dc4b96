/** `dtest load-test --tasks N`: load the workers and report throughput and latency. */
import { defineCommand } from "citty";

import { resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig } from "../core/config.ts";
import { UsageError } from "../core/errors.ts";
import { renderLoadPicture } from "../core/load-report.ts";
import {
  loadedQueues,
  renderLoadReport,
  runLoadTest,
  type LoadProgress,
  type LoadReport,
} from "../core/load.ts";
import { textReport, writeReportFiles, type ReportFile } from "../core/report.ts";
import type { Logger } from "../core/log.ts";
import {
  checkFlags,
  guard,
  parseCount,
  parsePositive,
  parseSeconds,
  sharedArgs,
  spawnLocalWorkers,
  startRun,
} from "./shared.ts";

const RATE = { unit: "tasks per second", example: 100 };

const args = {
  ...sharedArgs,
  tasks: { type: "string", description: "Tasks of each routed type (default 20)" },
  task: { type: "string", description: "Load only this task, e.g. a noop task for pure overhead" },
  rate: { type: "string", description: "Offered rate in tasks/s (default: all at once)" },
  duration: {
    type: "string",
    description: "Keep sending for this many seconds instead of --tasks",
  },
  "max-in-flight": {
    type: "string",
    description: "Most tasks unanswered at once (default: no limit; 10000 with --duration alone)",
  },
  timeout: {
    type: "string",
    description: "Seconds to wait for results after the last send (default 300)",
  },
  "wait-workers": {
    type: "string",
    description: "Seconds to wait for a worker on each queue (default 5, 15 with --spawn-workers)",
  },
  "spawn-workers": {
    type: "boolean",
    description: "Start one local worker per loaded queue, then stop them",
  },
  concurrency: {
    type: "string",
    description: "Tasks each spawned worker runs at once (with --spawn-workers; default 1)",
  },
  json: { type: "string", description: "Write the figures as JSON to this file" },
  report: {
    type: "string",
    description: "Write the charts to this file: one SVG image if it ends in .svg, else HTML",
  },
} as const;

/** How progress is shown: a bar on a terminal, a plain line, or a JSON log record. */
type ProgressStyle = "bar" | "line" | "json";

function progressPrinter(style: ProgressStyle, logger: Logger): (p: LoadProgress) => void {
  const log = logger.withTag("load-test");
  return (p) => {
    const rate = p.elapsedSeconds > 0 ? Math.round(p.done / p.elapsedSeconds) : 0;
    const total = p.planned ?? p.sent;
    if (style === "json") {
      const elapsed_seconds = Number(p.elapsedSeconds.toFixed(3));
      const fields = { done: p.done, sent: p.sent, planned: p.planned ?? null, elapsed_seconds };
      log.info({ message: "progress", ...fields, per_second: rate });
      return;
    }
    if (style === "line") {
      const counts = `${p.done}/${total} done, ${p.sent} sent`;
      process.stderr.write(`progress: ${counts}, ${rate}/s, ${p.elapsedSeconds.toFixed(1)}s\n`);
      return;
    }
    const width = 30;
    const filled = total > 0 ? Math.round((width * p.done) / total) : 0;
    const bar = "#".repeat(filled) + ".".repeat(width - filled);
    process.stderr.write(`\r[${bar}] ${p.done}/${total} ${rate}/s `);
  };
}

export default defineCommand({
  meta: {
    name: "load-test",
    description: "Send N tasks of each type and report throughput, latency and losses",
  },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const config = await loadConfig(values.config);
      const perType = parseCount("tasks", values.tasks, 20);
      const rate =
        values.rate === undefined ? undefined : parsePositive("rate", values.rate, 1, RATE);
      const duration =
        values.duration === undefined ? undefined : parseSeconds("duration", values.duration, 1);
      const maxInFlight =
        values["max-in-flight"] === undefined
          ? undefined
          : parseCount("max-in-flight", values["max-in-flight"], 1);
      const timeout = parseSeconds("timeout", values.timeout, 300);
      const spawn = values["spawn-workers"] === true;
      const workerWait = parseSeconds("wait-workers", values["wait-workers"], spawn ? 15 : 5);
      const concurrency = parseCount("concurrency", values.concurrency, 1);
      if (values.concurrency !== undefined && !spawn) {
        throw new UsageError(
          "--concurrency sets the workers --spawn-workers starts",
          "add --spawn-workers, or pass --concurrency to each `dtest worker` instead",
        );
      }
      const connectTimeout = parseSeconds("connect-timeout", values["connect-timeout"], 10) * 1000;
      const queues = loadedQueues(config, values.task);
      const { logger, signal, forceSignal } = startRun(values);
      for (const warning of config.warnings) logger.warn(warning);

      const style: ProgressStyle =
        values["log-format"] === "json" ? "json" : process.stderr.isTTY ? "bar" : "line";
      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      const run = { values, configFile: config.file, broker, logger };
      const workers = spawn ? spawnLocalWorkers(queues, run, concurrency) : undefined;

      let report: LoadReport;
      try {
        report = await runLoadTest({
          config,
          broker,
          logger,
          signal,
          stopNow: forceSignal,
          perType,
          only: values.task,
          rate,
          duration,
          maxInFlight,
          timeout,
          workerWait,
          connectTimeout,
          onProgress: progressPrinter(style, logger),
          progressEveryMs: style === "bar" ? 200 : 2000,
        });
      } finally {
        await workers?.stop();
      }
      if (style === "bar") process.stderr.write("\n");

      process.stdout.write(`${renderLoadReport(report).join("\n")}\n`);
      const files: ReportFile[] = [];
      if (values.json) {
        const json = () => `${JSON.stringify(report, null, 2)}\n`;
        files.push(textReport("JSON report", values.json, json));
      }
      if (values.report) {
        const title = `dtest load test: ${config.scenario.description}`;
        const picture = () => renderLoadPicture(report, title, values.report!);
        files.push(textReport("load-test report", values.report, picture));
      }
      await writeReportFiles(files, logger);
      return report.exit_code;
    }),
});
