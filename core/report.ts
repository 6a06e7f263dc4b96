/**
 * One dispatch run as a versioned JSON document (schema `dtest.run/1`) and what the report
 * renderers (junit.ts, summary.ts, timeline.ts) share; writing report files; a history of runs
 * in a directory; and the comparison of two runs: status changes and time regressions.
 */
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join } from "node:path";

import type { DtestConfig } from "./config.ts";
import type { DispatchReport } from "./dispatcher.ts";
import { DtestError, EXIT } from "./errors.ts";
import type { Logger } from "./log.ts";
import type { TaskRecord } from "./results.ts";

export const RUN_SCHEMA = "dtest.run/1";
export const DIFF_SCHEMA = "dtest.diff/1";

/** pass: a SUCCESS reply; fail: a FAILURE or REVOKED reply; no_result: no final reply. */
export type Outcome = "pass" | "fail" | "no_result";

export const OUTCOME_MARKER: Record<Outcome, string> = {
  pass: "PASS",
  fail: "FAIL",
  no_result: "NO RESULT",
};

export interface RunTask {
  name: string;
  /** The name, with ` #n` when the scenario sends several of this task. */
  label: string;
  index: number;
  of: number;
  queue: string;
  id: string;
  worker: string | null;
  /** The Celery state of the final reply, or the last state seen when there was none. */
  status: string;
  outcome: Outcome;
  result: unknown;
  error: string | null;
  error_type: string | null;
  exit_code: number | null;
  stdout_tail: string | null;
  stderr_tail: string | null;
  execution_seconds: number | null;
  retries: number;
  duplicates: number;
  sent_at: string;
  started_at: string | null;
  finished_at: string | null;
  replied_at: string | null;
}

export interface RunTotals {
  tasks: number;
  passed: number;
  failed: number;
  no_result: number;
  retries: number;
  duplicates: number;
  wall_seconds: number;
  sequential_seconds: number;
}

export interface RunReport {
  schema: typeof RUN_SCHEMA;
  scenario: { description: string; config_file: string; system: string; expected_workers: number };
  hostname: string;
  started_at: string;
  finished_at: string;
  totals: RunTotals;
  exit_code: number;
  reason: string;
  tasks: RunTask[];
}

/**
 * Task output made safe for a report: terminal colour and cursor sequences removed, CR and
 * CRLF line ends made LF, and other control characters (which XML 1.0 cannot carry at all)
 * shown as `\xNN` text.
 */
export function cleanOutput(text: string): string {
  return text
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "")
    .replace(/\r\n?/g, "\n")
    .replace(
      /[\x00-\x08\x0b-\x1f\x7f]/g,
      (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
    );
}

/** One line for the top of a report: PASS or FAIL, the counts, and the exit code's reason. */
export function headline(run: RunReport): string {
  const t = run.totals;
  if (run.exit_code === EXIT.ok) return `PASS: all ${t.tasks} tasks passed`;

  const parts: string[] = [];
  if (t.failed > 0) parts.push(`${t.failed} of ${t.tasks} tasks failed`);
  if (t.no_result > 0) parts.push(`${t.no_result} of ${t.tasks} without a result`);
  return `FAIL: ${parts.join(", ") || run.reason} (exit ${run.exit_code}: ${run.reason})`;
}

/** What a report shows for a task: its result when it passed, else its error. */
export function taskDetail(task: RunTask): string {
  if (task.outcome !== "pass") return task.error ?? task.status;
  return typeof task.result === "string" ? task.result : (JSON.stringify(task.result) ?? "");
}

/** Seconds with millisecond precision, or "-" when unknown. */
export function seconds(value: number | null): string {
  return value === null ? "-" : `${value.toFixed(3)} s`;
}

/** One report to write: what it is (for messages), where, and how; `write` returns the file. */
export interface ReportFile {
  what: string;
  target: string;
  write: () => Promise<string>;
}

/** A report that is a text file, written with any missing directories. */
export function textReport(what: string, target: string, render: () => string): ReportFile {
  return {
    what,
    target,
    write: async () => {
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, render());
      return target;
    },
  };
}

/** Seconds rounded to the millisecond, the precision every time in a run has. */
const toMs = (value: number) => Math.round(value * 1000) / 1000;

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

function field(value: unknown, key: string): unknown {
  return value && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

function outcomeOf(record: TaskRecord): Outcome {
  if (record.status === "SUCCESS") return "pass";
  return record.finishedAt === undefined ? "no_result" : "fail";
}

function taskResult(record: TaskRecord): unknown {
  const value = record.value;
  if (value && typeof value === "object" && "result" in value)
    return field(value, "result") ?? null;
  return record.status === "SUCCESS" ? (value ?? null) : null;
}

function toRunTask(record: TaskRecord, reason: string): RunTask {
  const outcome = outcomeOf(record);
  const text = (key: string) => {
    const v = field(record.value, key);
    return typeof v === "string" ? v : null;
  };
  const exitCode = field(record.value, "exit_code");
  const missing = `no result before the run ended (last state ${record.status}; ${reason})`;

  return {
    name: record.task,
    label: record.of > 1 ? `${record.task} #${record.index}` : record.task,
    index: record.index,
    of: record.of,
    queue: record.queue,
    id: record.id,
    worker: record.worker ?? null,
    status: record.status,
    outcome,
    result: taskResult(record),
    error: outcome === "no_result" ? missing : (record.error ?? null),
    error_type: outcome === "no_result" ? "NoResult" : text("exc_type"),
    exit_code: typeof exitCode === "number" ? exitCode : null,
    stdout_tail: text("stdout_tail"),
    stderr_tail: text("stderr_tail"),
    execution_seconds: record.finishedAt === undefined ? null : (record.executionTime ?? null),
    retries: record.retries,
    duplicates: record.duplicates,
    sent_at: iso(record.sentAt)!,
    started_at: record.runStartedAt ?? null,
    finished_at: record.runFinishedAt ?? null,
    replied_at: iso(record.finishedAt),
  };
}

/** The run as a `dtest.run/1` document. */
export function buildRunReport(
  config: DtestConfig,
  report: DispatchReport,
  host = hostname(),
): RunReport {
  const tasks = report.records.map((record) => toRunTask(record, report.reason));
  const count = (outcome: Outcome) => tasks.filter((t) => t.outcome === outcome).length;

  return {
    schema: RUN_SCHEMA,
    scenario: {
      description: config.scenario.description,
      config_file: config.file,
      system: config.system.description,
      expected_workers: config.system.workers,
    },
    hostname: host,
    started_at: iso(report.startedAt)!,
    finished_at: iso(report.finishedAt)!,
    totals: {
      tasks: tasks.length,
      passed: count("pass"),
      failed: count("fail"),
      no_result: count("no_result"),
      retries: report.totals.retries,
      duplicates: tasks.reduce((sum, t) => sum + t.duplicates, 0),
      wall_seconds: toMs(report.totals.totalSeconds),
      sequential_seconds: toMs(report.totals.sequentialSeconds),
    },
    exit_code: report.exitCode,
    reason: report.reason,
    tasks,
  };
}

/** A history file name that sorts by time: `run-2026-12-03T17-14-57-123Z.json`. */
export function historyFileName(startedAt: string): string {
  return `run-${startedAt.replace(/[:.]/g, "-")}.json`;
}

/** Stores the run in `dir` under a name that sorts by start time; returns the file. */
export async function saveToHistory(run: RunReport, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  // Two runs never start in the same millisecond in practice; if they do, the later one
  // takes the next free millisecond so the order still holds and nothing is overwritten.
  let started = Date.parse(run.started_at);
  for (;;) {
    const file = join(dir, historyFileName(new Date(started).toISOString()));
    try {
      await writeFile(file, `${JSON.stringify(run, null, 2)}\n`, { flag: "wx" });
      return file;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      started++;
    }
  }
}

/**
 * Writes each report. Tries them all before throwing a DtestError that names each one that
 * could not be written.
 */
export async function writeReportFiles(reports: ReportFile[], logger: Logger): Promise<void> {
  const log = logger.withTag("report");
  const failed: { report: ReportFile; why: string }[] = [];
  for (const report of reports) {
    try {
      log.info(`wrote the ${report.what} to ${await report.write()}`);
    } catch (err) {
      failed.push({ report, why: `${report.what} ${report.target}: ${(err as Error).message}` });
    }
  }

  if (failed.length > 0) {
    const note = failed.some((f) => f.report.what === "history entry")
      ? " (--history names a directory)"
      : "";
    const list = failed.map((f) => f.why).join("\n  ");
    throw new DtestError(`could not write ${failed.length} report(s):\n  ${list}`, {
      hint: `check that each report path is one you can write${note}`,
    });
  }
}

/** A run read back from disk, with the file it came from. */
export interface LoadedRun {
  file: string;
  run: RunReport;
}

function notARun(file: string, problem: string): DtestError {
  return new DtestError(`${file} is not a dtest run report: ${problem}`, {
    file,
    hint: `pass a file written by dtest dispatch --json or --history (schema "${RUN_SCHEMA}")`,
  });
}

/** Reads and checks a run file; throws DtestError naming the file and what is wrong. */
export async function readRunFile(file: string): Promise<LoadedRun> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new DtestError(`cannot read ${file}: ${(err as Error).message}`, {
      file,
      hint: "pass a run JSON file or a --history directory",
      cause: err,
    });
  }

  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw notARun(file, `invalid JSON (${(err as Error).message})`);
  }
  const schema = field(data, "schema");
  if (schema !== RUN_SCHEMA)
    throw notARun(file, `schema is ${JSON.stringify(schema)}, expected "${RUN_SCHEMA}"`);

  const tasks = field(data, "tasks");
  if (!Array.isArray(tasks)) throw notARun(file, "it has no tasks array");
  const bad = tasks.findIndex(
    (t) => typeof field(t, "name") !== "string" || typeof field(t, "outcome") !== "string",
  );
  if (bad >= 0) throw notARun(file, `tasks[${bad}] lacks a name or an outcome`);
  return { file, run: data as RunReport };
}

/** The run files of a history directory, oldest first. */
export async function historyFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  return names
    .filter((n) => /^run-.+\.json$/.test(n))
    .sort()
    .map((n) => join(dir, n));
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    // A path that does not exist is reported by readRunFile with the reason.
    return false;
  }
}

async function latestRuns(dir: string, count: number): Promise<string[]> {
  const files = await historyFiles(dir);
  if (files.length < count) {
    throw new DtestError(`${dir} holds ${files.length} run(s); the comparison needs ${count}`, {
      file: dir,
      hint: "run dtest dispatch --history with this directory (again), or pass two run files",
    });
  }
  return files.slice(-count);
}

/**
 * Resolves the two runs to compare. One directory: its last two runs. Two paths: each a run
 * file, or a history directory standing for its latest run.
 */
export async function resolveRunPair(a: string, b?: string): Promise<[LoadedRun, LoadedRun]> {
  if (b === undefined) {
    if (!(await isDirectory(a))) {
      throw new DtestError(`one argument must be a history directory (got ${a})`, {
        hint: "pass two run files (dtest report diff OLD.json NEW.json) or one --history directory",
      });
    }
    const [older, newer] = await latestRuns(a, 2);
    return [await readRunFile(older!), await readRunFile(newer!)];
  }

  const pick = async (path: string) =>
    (await isDirectory(path)) ? (await latestRuns(path, 1))[0]! : path;
  return [await readRunFile(await pick(a)), await readRunFile(await pick(b))];
}

export interface DiffOptions {
  /** A time regression is slower by more than this share, percent. */
  thresholdPercent: number;
  /** ... and by at least this many milliseconds, so jitter on short tasks is not one. */
  minMs: number;
}

export type DiffState = Outcome | "absent";

export interface StatusChange {
  key: string;
  label: string;
  from: DiffState;
  to: DiffState;
  /** The task does not pass in the newer run, and passed in (or was absent from) the older. */
  regression: boolean;
}

export interface TimeRegression {
  key: string;
  label: string;
  from_seconds: number;
  to_seconds: number;
  change_percent: number;
  change_ms: number;
}

export interface RunDiff {
  schema: typeof DIFF_SCHEMA;
  base: { file: string; started_at: string; exit_code: number };
  head: { file: string; started_at: string; exit_code: number };
  threshold_percent: number;
  min_ms: number;
  status_changes: StatusChange[];
  time_regressions: TimeRegression[];
  status_regressions: number;
  exit_code: number;
}

/** Tasks are matched across runs by name and position (`name#index`), never by id. */
function byKey(run: RunReport): Map<string, RunTask> {
  return new Map(run.tasks.map((t) => [`${t.name}#${t.index ?? 1}`, t]));
}

function statusChange(
  key: string,
  old: RunTask | undefined,
  now: RunTask | undefined,
): StatusChange | undefined {
  const from: DiffState = old?.outcome ?? "absent";
  const to: DiffState = now?.outcome ?? "absent";
  if (from === to) return undefined;

  const several = (old?.of ?? 1) > 1 || (now?.of ?? 1) > 1;
  const task = (now ?? old)!;
  const label = several ? `${task.name} #${task.index}` : task.name;
  const regression = to !== "pass" && to !== "absent" && (from === "pass" || from === "absent");
  return { key, label, from, to, regression };
}

function timeRegression(
  key: string,
  old: RunTask,
  now: RunTask,
  options: DiffOptions,
): TimeRegression | undefined {
  if (old.outcome !== "pass" || now.outcome !== "pass") return undefined;
  const before = old.execution_seconds;
  const after = now.execution_seconds;
  if (before === null || after === null) return undefined;

  const changeMs = (after - before) * 1000;
  const changePercent = before > 0 ? (100 * (after - before)) / before : Number.POSITIVE_INFINITY;
  if (changeMs < options.minMs || changePercent <= options.thresholdPercent) return undefined;
  const percent = Number.isFinite(changePercent) ? Math.round(changePercent * 10) / 10 : 100_000;
  return {
    key,
    label: now.label,
    from_seconds: before,
    to_seconds: after,
    change_percent: percent,
    change_ms: Math.round(changeMs),
  };
}

/** Compares an older run (`base`) with a newer one (`head`). */
export function diffRuns(base: LoadedRun, head: LoadedRun, options: DiffOptions): RunDiff {
  const old = byKey(base.run);
  const now = byKey(head.run);
  const keys = [...now.keys(), ...[...old.keys()].filter((k) => !now.has(k))];

  const statusChanges: StatusChange[] = [];
  const timeRegressions: TimeRegression[] = [];
  for (const key of keys) {
    const change = statusChange(key, old.get(key), now.get(key));
    if (change) statusChanges.push(change);
    const a = old.get(key);
    const b = now.get(key);
    const slower = a && b ? timeRegression(key, a, b, options) : undefined;
    if (slower) timeRegressions.push(slower);
  }

  const statusRegressions = statusChanges.filter((c) => c.regression).length;
  const side = ({ file, run }: LoadedRun) => ({
    file,
    started_at: run.started_at,
    exit_code: run.exit_code,
  });
  return {
    schema: DIFF_SCHEMA,
    base: side(base),
    head: side(head),
    threshold_percent: options.thresholdPercent,
    min_ms: options.minMs,
    status_changes: statusChanges,
    time_regressions: timeRegressions,
    status_regressions: statusRegressions,
    exit_code: statusRegressions + timeRegressions.length > 0 ? EXIT.tasksFailed : EXIT.ok,
  };
}

const STATE_TEXT: Record<DiffState, string> = { ...OUTCOME_MARKER, absent: "(absent)" };

/** The comparison as console lines. */
export function renderDiff(diff: RunDiff): string[] {
  const width = Math.max(
    4,
    ...diff.status_changes.map((c) => c.label.length),
    ...diff.time_regressions.map((t) => t.label.length),
  );
  const lines = [
    `Base: ${diff.base.file} (started ${diff.base.started_at}, exit ${diff.base.exit_code})`,
    `Head: ${diff.head.file} (started ${diff.head.started_at}, exit ${diff.head.exit_code})`,
  ];

  lines.push(diff.status_changes.length > 0 ? "Status changes:" : "Status changes: none");
  for (const c of diff.status_changes) {
    const note = c.from === "absent" ? " (new)" : c.to === "absent" ? " (removed)" : "";
    const mark = c.regression ? "  REGRESSION" : "";
    lines.push(
      `  ${c.label.padEnd(width)}  ${STATE_TEXT[c.from]} → ${STATE_TEXT[c.to]}${note}${mark}`,
    );
  }

  const rule = `more than ${diff.threshold_percent}% and at least ${diff.min_ms} ms slower`;
  lines.push(
    diff.time_regressions.length > 0
      ? `Time regressions (${rule}):`
      : `Time regressions (${rule}): none`,
  );
  for (const t of diff.time_regressions) {
    const change = `+${t.change_percent}%, +${t.change_ms} ms`;
    const [from, to] = [t.from_seconds.toFixed(3), t.to_seconds.toFixed(3)];
    lines.push(`  ${t.label.padEnd(width)}  ${from}s → ${to}s (${change})`);
  }

  const slower = diff.time_regressions.length;
  const verdict =
    diff.exit_code === EXIT.ok
      ? "no regressions"
      : `${diff.status_regressions} status regression(s), ${slower} time regression(s)`;
  lines.push(`Result: ${verdict}`);
  return lines;
}
