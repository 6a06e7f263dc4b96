/** `dtest dispatch`: run the scenario in the config against the workers and report. */
import { defineCommand } from "citty";

import { resolveBrokerUrl } from "../core/broker.ts";
import { loadConfig, scenarioQueues, type DtestConfig } from "../core/config.ts";
import { dispatch, type DispatchReport } from "../core/dispatcher.ts";
import { UsageError } from "../core/errors.ts";
import { renderJunit } from "../core/junit.ts";
import type { Logger } from "../core/log.ts";
import {
  buildRunReport,
  saveToHistory,
  textReport,
  writeReportFiles,
  type ReportFile,
} from "../core/report.ts";
import { renderSummary } from "../core/summary.ts";
import { renderRunHtml } from "../core/timeline.ts";
import {
  checkFlags,
  guard,
  parseSeconds,
  sharedArgs,
  spawnLocalWorkers,
  startRun,
} from "./shared.ts";

const args = {
  ...sharedArgs,
  timeout: { type: "string", description: "Seconds to wait for all results (default 300)" },
  "wait-workers": {
    type: "string",
    description: "Seconds to wait for a worker on each queue (default 5)",
  },
  "spawn-workers": {
    type: "boolean",
    description: "Start one local worker per needed queue, then stop them",
  },
  json: { type: "string", description: "Write the run as JSON (schema dtest.run/1) to this file" },
  junit: { type: "string", description: "Write JUnit XML, one testcase per task, to this file" },
  summary: { type: "string", description: "Write a Markdown summary ($GITHUB_STEP_SUMMARY) here" },
  html: { type: "string", description: "Write an HTML page with a timeline per worker here" },
  history: { type: "string", description: "Keep each run's JSON in this directory (report diff)" },
} as const;

type ReportFlag = "json" | "junit" | "summary" | "html" | "history";

const REPORT_FLAGS: ReportFlag[] = ["json", "junit", "summary", "html", "history"];

type ReportPaths = Partial<Record<ReportFlag, string>>;

/** The report paths asked for; a flag given without a path is a usage error. */
function reportPaths(values: Partial<Record<ReportFlag, unknown>>): ReportPaths {
  const paths: ReportPaths = {};
  for (const flag of REPORT_FLAGS) {
    const value = values[flag];
    if (value === undefined) continue;
    if (typeof value !== "string" || value.trim() === "") {
      const example = flag === "history" ? "runs/" : `report.${flag === "summary" ? "md" : flag}`;
      const got = `(got "${String(value)}")`;
      throw new UsageError(`--${flag} needs a path ${got}`, `pass e.g. --${flag} ${example}`);
    }
    paths[flag] = value;
  }
  return paths;
}

/** Writes the reports asked for; nothing when none was. */
async function writeReports(
  paths: ReportPaths,
  config: DtestConfig,
  report: DispatchReport,
  logger: Logger,
): Promise<void> {
  if (Object.keys(paths).length === 0) return;

  const run = buildRunReport(config, report);
  const reports: ReportFile[] = [];
  const add = (what: string, target: string | undefined, render: () => string) =>
    target !== undefined && reports.push(textReport(what, target, render));
  add("JSON report", paths.json, () => `${JSON.stringify(run, null, 2)}\n`);
  add("JUnit XML", paths.junit, () => renderJunit(run));
  add("Markdown summary", paths.summary, () => renderSummary(run));
  add("HTML report", paths.html, () => renderRunHtml(run));
  if (paths.history) {
    const dir = paths.history;
    reports.push({ what: "history entry", target: dir, write: () => saveToHistory(run, dir) });
  }
  await writeReportFiles(reports, logger);
}

export default defineCommand({
  meta: { name: "dispatch", description: "Send the scenario's tasks, wait for results, report" },
  args,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, args);
      const paths = reportPaths(values);
      const config = await loadConfig(values.config);
      const timeout = parseSeconds("timeout", values.timeout, 300);
      const workerWait = parseSeconds(
        "wait-workers",
        values["wait-workers"],
        values["spawn-workers"] ? 15 : 5,
      );
      const { logger, signal } = startRun(values);
      for (const warning of config.warnings) logger.warn(warning);

      const broker = resolveBrokerUrl(values, config.rabbitmq, config.file);
      const run = { values, configFile: config.file, broker, logger };
      const workers = values["spawn-workers"]
        ? spawnLocalWorkers(scenarioQueues(config), run)
        : undefined;

      try {
        const print = (line: string) => process.stdout.write(`${line}\n`);
        const connectTimeout =
          parseSeconds("connect-timeout", values["connect-timeout"], 10) * 1000;
        const report = await dispatch({
          config,
          broker,
          logger,
          signal,
          timeout,
          workerWait,
          connectTimeout,
          print,
        });
        await writeReports(paths, config, report, logger);
        return report.exitCode;
      } finally {
        await workers?.stop();
      }
    }),
});
