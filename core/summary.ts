/**
 * A run as GitHub-flavoured Markdown, for `$GITHUB_STEP_SUMMARY` or a merge request comment:
 * a title, a PASS/FAIL headline, the totals, a table with one row per task, then the error and
 * output tail of each task that did not pass.
 */
import {
  cleanOutput,
  headline,
  OUTCOME_MARKER,
  seconds,
  taskDetail,
  type RunReport,
  type RunTask,
} from "./report.ts";

/** One table cell: pipes escaped, on one line, cut when long. */
function cell(value: string): string {
  const flat = cleanOutput(value)
    .replace(/\s*\n\s*/g, " ")
    .trim();
  const short = flat.length > 120 ? `${flat.slice(0, 117)}...` : flat;
  return short.replace(/[\\|`*<>[\]]/g, (c) => `\\${c}`) || "-";
}

/** A fence longer than any run of backticks inside, so output cannot close it early. */
function fenced(body: string): string {
  const longest = Math.max(0, ...(body.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(Math.max(3, longest + 1));
  return `${fence}text\n${body.trimEnd()}\n${fence}`;
}

function taskRow(task: RunTask): string {
  const cells = [
    OUTCOME_MARKER[task.outcome],
    task.label,
    task.queue,
    seconds(task.execution_seconds),
    String(task.retries),
    task.worker ?? "-",
    taskDetail(task),
  ];
  return `| ${cells.map(cell).join(" | ")} |`;
}

function failureSection(task: RunTask): string {
  const lines = [`### ${OUTCOME_MARKER[task.outcome]} ${cell(task.label)} (\`${task.id}\`)`, ""];
  lines.push(fenced(cleanOutput(task.error ?? task.status)));
  if (task.stdout_tail) lines.push("", "stdout (tail):", "", fenced(cleanOutput(task.stdout_tail)));
  if (task.stderr_tail) lines.push("", "stderr (tail):", "", fenced(cleanOutput(task.stderr_tail)));
  return lines.join("\n");
}

/** The Markdown summary of a run. */
export function renderSummary(run: RunReport): string {
  const t = run.totals;
  const totals = [t.tasks, t.passed, t.failed, t.no_result, t.retries];
  const times = [seconds(t.wall_seconds), seconds(t.sequential_seconds)];
  const failures = run.tasks.filter((task) => task.outcome !== "pass");
  const parts = [
    `# dtest: ${cell(run.scenario.description)}`,
    `**${headline(run)}**`,
    [
      "| Tasks | Passed | Failed | No result | Retries | Wall time | Sequential time |",
      "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
      `| ${[...totals.map(String), ...times].join(" | ")} |`,
    ].join("\n"),
    [
      "| Status | Task | Queue | Time | Retries | Worker | Result or error |",
      "| --- | --- | --- | ---: | ---: | --- | --- |",
      ...run.tasks.map(taskRow),
    ].join("\n"),
  ];
  if (failures.length > 0)
    parts.push(`## Tasks that did not pass\n\n${failures.map(failureSection).join("\n\n")}`);
  parts.push(
    `Config ${cell(run.scenario.config_file)} on ${cell(run.hostname)}, ` +
      `${run.started_at} to ${run.finished_at}, exit code ${run.exit_code}.`,
  );
  return `${parts.join("\n\n")}\n`;
}
