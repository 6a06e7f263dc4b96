/**
 * A run as JUnit XML, the format Jenkins, GitLab and GitHub test reporters read: one
 * <testsuite> for the scenario inside <testsuites>, one <testcase> per task. A task whose
 * final reply was FAILURE or REVOKED has a <failure>: it ran and did not pass. A task with no
 * reply at all has an <error>: nothing reported on it, which JUnit tells apart from a failed
 * check. dtest never skips a task, so `skipped` is always 0.
 */
import { cleanOutput, type RunReport, type RunTask } from "./report.ts";

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Text content: the five XML specials escaped, characters XML cannot hold made visible. */
function text(value: string): string {
  return cleanOutput(value)
    .replace(LONE_SURROGATE, "\ufffd")
    .replace(
      /[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c]!,
    );
}

/** An attribute value; line ends and tabs as references so parsers keep them. */
function attr(value: string): string {
  return text(value).replace(/\n/g, "&#10;").replace(/\t/g, "&#9;");
}

function attrs(pairs: Record<string, string | number>): string {
  return Object.entries(pairs)
    .map(([k, v]) => ` ${k}="${attr(String(v))}"`)
    .join("");
}

/** Seconds as JUnit readers parse them: a plain decimal, no unit. */
const secs = (value: number | null) => (value ?? 0).toFixed(3);

/**
 * Ant's form, which every reader accepts: no fraction and no zone suffix. dtest writes UTC.
 */
const timestamp = (isoTime: string) => isoTime.replace(/(\.\d+)?Z$/, "");

function outputBlock(task: RunTask): string {
  const parts: string[] = [];
  if (task.exit_code !== null) parts.push(`exit code: ${task.exit_code}`);
  if (task.stdout_tail) parts.push(`--- stdout (tail) ---\n${task.stdout_tail.trimEnd()}`);
  if (task.stderr_tail) parts.push(`--- stderr (tail) ---\n${task.stderr_tail.trimEnd()}`);
  return parts.join("\n");
}

function verdict(task: RunTask): string {
  if (task.outcome === "pass") return "";

  const tag = task.outcome === "fail" ? "failure" : "error";
  const message = task.error ?? task.status;
  const body = [message, outputBlock(task)].filter(Boolean).join("\n\n");
  const type = task.error_type ?? task.status;
  return `\n      <${tag}${attrs({ message, type })}>${text(body)}</${tag}>`;
}

function systemOut(task: RunTask): string {
  const where = task.worker ? `on ${task.worker}` : "on no worker";
  const state = `status ${task.status}, retries ${task.retries}`;
  const head = `task ${task.id} ${where}, queue ${task.queue}, ${state}`;
  const out = task.stdout_tail ? `\n${task.stdout_tail}` : "";
  const err = task.stderr_tail ? `\n      <system-err>${text(task.stderr_tail)}</system-err>` : "";
  return `\n      <system-out>${text(head + out)}</system-out>${err}`;
}

function testcase(task: RunTask): string {
  const head = attrs({
    classname: task.queue,
    name: task.label,
    time: secs(task.execution_seconds),
  });
  return `    <testcase${head}>${verdict(task)}${systemOut(task)}\n    </testcase>`;
}

/** The JUnit XML document for a run. */
export function renderJunit(run: RunReport): string {
  const t = run.totals;
  const counts = {
    tests: t.tasks,
    failures: t.failed,
    errors: t.no_result,
    skipped: 0,
    time: secs(t.wall_seconds),
    timestamp: timestamp(run.started_at),
  };
  const properties = [
    ["config_file", run.scenario.config_file],
    ["system", run.scenario.system],
    ["exit_code", String(run.exit_code)],
    ["reason", run.reason],
    ["retries", String(t.retries)],
  ].map(([name, value]) => `      <property${attrs({ name: name!, value: value! })}/>`);

  const suite = attrs({
    name: run.scenario.description,
    ...counts,
    hostname: run.hostname,
    id: 0,
    package: "dtest",
  });
  return `<?xml version="1.0" encoding="UTF-8"?>
<testsuites${attrs({ name: `dtest: ${run.scenario.description}`, ...counts })}>
  <testsuite${suite}>
    <properties>
${properties.join("\n")}
    </properties>
${run.tasks.map(testcase).join("\n")}
  </testsuite>
</testsuites>
`;
}
