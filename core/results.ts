/**
 * Aggregating task replies into one record per task and rendering the console report in the
 * seed's format. A task delivered twice is still reported once: the first final reply wins.
 */
import {
  describeException,
  FINAL_STATUSES,
  REPLY_HEADERS,
  shortTaskName,
  type ResultMessage,
  type TaskStatus,
} from "./protocol.ts";
import { taskLabel } from "./tasks.ts";

export interface TaskRecord {
  id: string;
  task: string;
  queue: string;
  /** 1-based position among the scenario's tasks of the same name. */
  index: number;
  /** How many of this task the scenario sends; labels get `#n` when more than one. */
  of: number;
  sentAt: number;
  /** When the reply arrived (ms since the epoch). */
  finishedAt?: number;
  /** The worker that sent the final reply, when it said. */
  worker?: string;
  /** When the worker started and finished the run that produced the final reply (ISO). */
  runStartedAt?: string;
  runFinishedAt?: string;
  status: TaskStatus;
  value?: unknown;
  error?: string;
  executionTime?: number;
  retries: number;
  duplicates: number;
}

export interface RunTotals {
  totalSeconds: number;
  sequentialSeconds: number;
  retries: number;
  succeeded: number;
  failed: number;
  missing: number;
}

/** Folds one reply into its record; returns true when the reply completed the task. */
export function applyReply(
  record: TaskRecord,
  reply: ResultMessage,
  now: number,
  headers: Record<string, unknown> = {},
): boolean {
  const final = FINAL_STATUSES.includes(reply.status);
  if (FINAL_STATUSES.includes(record.status)) {
    if (final) record.duplicates++;
    return false;
  }

  if (reply.status === "RETRY") record.retries++;
  if (!final) {
    if (reply.status !== "RETRY") record.status = reply.status;
    return false;
  }

  const value = reply.result as Record<string, unknown> | null;
  record.status = reply.status;
  record.finishedAt = now;
  const text = (v: unknown) => (typeof v === "string" ? v : undefined);
  record.worker = text(headers[REPLY_HEADERS.worker]);
  record.runStartedAt = text(headers[REPLY_HEADERS.started]);
  record.runFinishedAt = text(headers[REPLY_HEADERS.finished]);
  record.value = value;
  record.retries = Math.max(record.retries, numberField(value, "retry_count") ?? 0);
  record.executionTime = numberField(value, "execution_time") ?? (now - record.sentAt) / 1000;
  if (reply.status !== "SUCCESS") record.error = describeException(value);
  return true;
}

function numberField(value: unknown, field: string): number | undefined {
  if (!value || typeof value !== "object") return undefined;
  const n = (value as Record<string, unknown>)[field];
  return typeof n === "number" ? n : undefined;
}

export function recordLabel(record: TaskRecord): string {
  const base = `Task ${taskLabel(shortTaskName(record.task))}`;
  return record.of > 1 ? `${base} #${record.index}` : base;
}

function shownResult(record: TaskRecord): string {
  if (record.status === "SUCCESS") {
    const value = record.value as Record<string, unknown> | null;
    const shown = value && typeof value === "object" && "result" in value ? value.result : value;
    return typeof shown === "string" ? shown : JSON.stringify(shown);
  }
  if (record.status === "REVOKED") return `REVOKED (${record.error})`;
  if (record.status === "FAILURE") return `FAILED (${record.error})`;
  return `NO RESULT (task ${record.id} did not finish in time)`;
}

export function totals(records: TaskRecord[], totalSeconds: number): RunTotals {
  const done = records.filter((r) => r.finishedAt !== undefined);
  return {
    totalSeconds,
    sequentialSeconds: done.reduce((sum, r) => sum + (r.executionTime ?? 0), 0),
    retries: records.reduce((sum, r) => sum + r.retries, 0),
    succeeded: records.filter((r) => r.status === "SUCCESS").length,
    failed: done.filter((r) => r.status !== "SUCCESS").length,
    missing: records.length - done.length,
  };
}

/** The per-task lines of the report, in scenario order. */
export function renderResults(records: TaskRecord[]): string[] {
  return records.flatMap((record) => {
    const label = recordLabel(record);
    const lines = [`Result from ${shortTaskName(record.task)}: ${shownResult(record)}`];
    if (record.finishedAt !== undefined) {
      lines.push(`${label} execution time: ${(record.executionTime ?? 0).toFixed(3)}s`);
    }
    lines.push(`${label} retries: ${record.retries}`);
    return lines;
  });
}

export function renderTotals(t: RunTotals): string[] {
  const lines = [
    `Total dispatcher time: ${t.totalSeconds.toFixed(3)}s (concurrent execution)`,
    `Sequential time would be: ${t.sequentialSeconds.toFixed(3)}s`,
    `Total retries: ${t.retries}`,
  ];
  if (t.failed > 0) lines.push(`Failed tasks: ${t.failed}`);
  if (t.missing > 0) lines.push(`Tasks without a result: ${t.missing}`);
  return lines;
}
