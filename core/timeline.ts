/**
 * A run as one self-contained HTML page: the headline and totals, a timeline with one row per
 * worker and one bar per task from its start to its finish (coloured by outcome, the details
 * in a tooltip), then the task table and the output of each task that did not pass. The
 * timeline is inline SVG; the page needs no script and loads nothing else.
 */
import {
  cleanOutput,
  headline,
  OUTCOME_MARKER,
  seconds,
  taskDetail,
  type Outcome,
  type RunReport,
  type RunTask,
} from "./report.ts";

const WIDTH = 1100;
const LABEL_WIDTH = 220;
const PLOT_WIDTH = WIDTH - LABEL_WIDTH - 30;
const AXIS_HEIGHT = 26;
const LANE_HEIGHT = 16;
const LANE_GAP = 4;
const ROW_PAD = 7;

const COLOURS: Record<Outcome, string> = { pass: "#16a34a", fail: "#dc2626", no_result: "#9ca3af" };

/** The row of tasks that never reported: they have no worker to sit under. */
const NO_RESULT_ROW = "(no result)";

interface Span {
  task: RunTask;
  row: string;
  /** When it was sent, started and finished, ms since the epoch. */
  sent: number;
  start: number;
  end: number;
  lane: number;
}

function escape(value: string): string {
  const entities: Record<string, string> = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#39;",
  };
  return cleanOutput(value).replace(/[&<>"']/g, (c) => entities[c]!);
}

type Attrs = Record<string, string | number>;

/** One element; attribute values are escaped, children are markup already. */
function el(name: string, attrs: Attrs, ...children: string[]): string {
  const list = Object.entries(attrs)
    .map(([k, v]) => ` ${k}="${escape(String(v))}"`)
    .join("");
  return `<${name}${list}>${children.join("")}</${name}>`;
}

/** An element holding only text, escaped. */
const textEl = (name: string, attrs: Attrs, text: string) => el(name, attrs, escape(text));

const parse = (time: string | null) => (time === null ? Number.NaN : Date.parse(time));

/**
 * Where a bar goes. The worker's own start and finish times when its reply carried them;
 * otherwise the reply's arrival minus the execution time (a worker that is not dtest).
 */
function spanOf(task: RunTask, runEnd: number): Span {
  const sent = parse(task.sent_at);
  if (task.outcome === "no_result")
    return { task, row: NO_RESULT_ROW, sent, start: sent, end: runEnd, lane: 0 };

  const end = Number.isNaN(parse(task.finished_at))
    ? parse(task.replied_at)
    : parse(task.finished_at);
  const started = parse(task.started_at);
  const start = Number.isNaN(started) ? end - (task.execution_seconds ?? 0) * 1000 : started;
  return { task, row: task.worker ?? "(unknown worker)", sent, start, end, lane: 0 };
}

/** Spreads overlapping bars of one row over lanes, so tasks run at once sit one above another. */
function assignLanes(spans: Span[]): number {
  const laneEnds: number[] = [];
  for (const span of [...spans].sort((a, b) => a.start - b.start)) {
    const free = laneEnds.findIndex((end) => end <= span.start);
    span.lane = free === -1 ? laneEnds.length : free;
    laneEnds[span.lane] = span.end;
  }
  return Math.max(1, laneEnds.length);
}

/** A tick step of 1, 2 or 5 times a power of ten giving about eight ticks. */
function tickStep(totalSeconds: number): number {
  const rough = totalSeconds / 8;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough) ?? rough;
}

function tooltip(span: Span, origin: number): string {
  const t = span.task;
  const at = (ms: number) => `+${((ms - origin) / 1000).toFixed(3)} s`;
  return [
    `${t.label} (${t.id})`,
    `${OUTCOME_MARKER[t.outcome]} in ${seconds(t.execution_seconds)} on ${t.worker ?? "no worker"}`,
    `sent ${at(span.sent)}, started ${at(span.start)}, finished ${at(span.end)}`,
    `retries ${t.retries}`,
  ].join("\n");
}

/** Bar labels are drawn only where they fit: about this many pixels per character. */
const CHAR_WIDTH = 6.5;

function bar(span: Span, x: (ms: number) => number, top: number, origin: number): string {
  const t = span.task;
  const y = top + ROW_PAD + span.lane * (LANE_HEIGHT + LANE_GAP);
  const mid = y + LANE_HEIGHT / 2;
  const left = x(span.start);
  const width = Math.max(2, x(span.end) - left);
  const parts: string[] = [];
  if (span.sent < span.start && t.outcome !== "no_result") {
    const line = {
      class: "wait",
      x1: x(span.sent).toFixed(1),
      y1: mid,
      x2: left.toFixed(1),
      y2: mid,
    };
    parts.push(el("line", { ...line, stroke: "#6b7280", "stroke-dasharray": "3 3" }));
  }

  const rect = {
    class: `task-bar ${t.outcome}`,
    "data-task": t.label,
    "data-id": t.id,
    x: left.toFixed(1),
    y,
    width: width.toFixed(1),
    height: LANE_HEIGHT,
    rx: 2,
    fill: COLOURS[t.outcome],
  };
  parts.push(el("rect", rect, textEl("title", {}, tooltip(span, origin))));
  if (width >= t.label.length * CHAR_WIDTH + 8) {
    const label = { class: "bar-label", x: (left + 4).toFixed(1), y: mid + 4, fill: "#ffffff" };
    parts.push(textEl("text", { ...label, "font-size": 11, "pointer-events": "none" }, t.label));
  }
  return parts.join("");
}

function axis(origin: number, total: number, x: (ms: number) => number, height: number): string {
  const step = tickStep(total / 1000);
  const digits = step < 1 ? Math.min(3, Math.ceil(-Math.log10(step))) : 0;
  const ticks: string[] = [];
  for (let s = 0; s * 1000 <= total + 1e-6; s += step) {
    const at = x(origin + s * 1000).toFixed(1);
    const grid = { x1: at, y1: AXIS_HEIGHT - 6, x2: at, y2: height, stroke: "#e5e7eb" };
    const label = { x: at, y: AXIS_HEIGHT - 10, "text-anchor": "middle" };
    ticks.push(el("line", grid), textEl("text", label, `${s.toFixed(digits)} s`));
  }
  return ticks.join("\n");
}

/** The rows in order: workers by name, then the tasks that never reported. */
function rowNames(spans: Span[]): string[] {
  const names = [...new Set(spans.map((s) => s.row))].filter((n) => n !== NO_RESULT_ROW).sort();
  return spans.some((s) => s.row === NO_RESULT_ROW) ? [...names, NO_RESULT_ROW] : names;
}

/** The timeline as inline SVG: one row per worker, one bar per task. */
export function timelineSvg(run: RunReport): string {
  const runStart = Date.parse(run.started_at);
  const runEnd = Date.parse(run.finished_at);
  const spans = run.tasks.map((task) => spanOf(task, runEnd));
  const origin = Math.min(runStart, ...spans.map((s) => s.sent).filter(Number.isFinite));
  const last = Math.max(runEnd, ...spans.map((s) => s.end).filter(Number.isFinite));
  const total = Math.max(1, last - origin);
  const x = (ms: number) => LABEL_WIDTH + (PLOT_WIDTH * (Math.max(origin, ms) - origin)) / total;

  let top = AXIS_HEIGHT;
  const rows = rowNames(spans).map((name, i) => {
    const mine = spans.filter((s) => s.row === name);
    const height = 2 * ROW_PAD + assignLanes(mine) * (LANE_HEIGHT + LANE_GAP) - LANE_GAP;
    const shown = name.length > 30 ? `${name.slice(0, 29)}…` : name;
    const background = { x: 0, y: top, width: WIDTH, height, fill: i % 2 ? "#ffffff" : "#f3f4f6" };
    const label = el(
      "text",
      { x: 8, y: top + height / 2 + 4 },
      textEl("title", {}, name),
      escape(`${shown} (${mine.length})`),
    );
    const bars = mine.map((s) => bar(s, x, top, origin));
    top += height;
    const group = { class: "worker-row", "data-worker": name, "data-tasks": mine.length };
    return el("g", group, el("rect", background), label, ...bars);
  });

  const svg = {
    class: "timeline",
    xmlns: "http://www.w3.org/2000/svg",
    width: WIDTH,
    height: top + 4,
    "font-size": 12,
    "font-family": "sans-serif",
  };
  return el("svg", svg, axis(origin, total, x, top), "\n", rows.join("\n"));
}

function taskRow(task: RunTask, origin: number): string {
  const started = parse(task.started_at);
  const offset = Number.isNaN(started) ? "-" : `+${((started - origin) / 1000).toFixed(3)} s`;
  const cells = [
    task.label,
    task.queue,
    task.worker ?? "-",
    offset,
    seconds(task.execution_seconds),
    String(task.retries),
    taskDetail(task),
  ];
  const status = textEl("td", { class: `status ${task.outcome}` }, OUTCOME_MARKER[task.outcome]);
  return el(
    "tr",
    { class: "task-row", "data-id": task.id },
    status,
    ...cells.map((c) => textEl("td", {}, c)),
  );
}

function failureDetails(task: RunTask): string {
  const blocks = [task.error ?? task.status];
  if (task.stdout_tail) blocks.push(`--- stdout (tail) ---\n${task.stdout_tail}`);
  if (task.stderr_tail) blocks.push(`--- stderr (tail) ---\n${task.stderr_tail}`);
  const summary = `${OUTCOME_MARKER[task.outcome]} ${task.label} (${task.id})`;
  return el(
    "details",
    { open: "" },
    textEl("summary", {}, summary),
    textEl("pre", {}, blocks.join("\n\n")),
  );
}

const STYLE = [
  "body{font-family:sans-serif;margin:2em;color:#1f2937}",
  "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}",
  ".headline{font-weight:bold;font-size:1.1em}.pass{color:#15803d}.fail{color:#b91c1c}",
  "table{border-collapse:collapse}",
  "th,td{text-align:left;padding:.25em .8em;border-bottom:1px solid #e5e7eb}",
  "td.status{font-weight:bold}td.no_result{color:#6b7280}",
  ".legend span{display:inline-block;margin-right:1.2em}",
  ".swatch{vertical-align:middle;margin-right:.3em}",
  "pre{background:#f9fafb;padding:.8em;overflow:auto;max-height:30em}",
].join("\n");

const TASK_COLUMNS = [
  "Status",
  "Task",
  "Queue",
  "Worker",
  "Started",
  "Time",
  "Retries",
  "Result or error",
];

function legend(): string {
  const swatches = (Object.keys(COLOURS) as Outcome[]).map((o) => {
    const box = el(
      "svg",
      { class: "swatch", width: 12, height: 12 },
      el("rect", { width: 12, height: 12, fill: COLOURS[o] }),
    );
    return el("span", {}, box, escape(OUTCOME_MARKER[o]));
  });
  const wait = textEl("span", {}, "dashed line: waiting in the queue, from sent to started");
  return el("p", { class: "legend" }, ...swatches, wait);
}

function totalsTable(run: RunReport): string {
  const t = run.totals;
  const facts: [string, string][] = [
    ["Tasks", `${t.tasks}: passed ${t.passed}, failed ${t.failed}, no result ${t.no_result}`],
    ["Retries", String(t.retries)],
    ["Wall time", seconds(t.wall_seconds)],
    ["Sequential time", seconds(t.sequential_seconds)],
    ["Exit code", `${run.exit_code} (${run.reason})`],
    ["Config", `${run.scenario.config_file} on ${run.hostname}`],
    ["Started", `${run.started_at}, finished ${run.finished_at}`],
  ];
  const rows = facts.map(([k, v]) => el("tr", {}, textEl("th", {}, k), textEl("td", {}, v)));
  return el("table", { class: "totals" }, ...rows);
}

/** The whole page. */
export function renderRunHtml(run: RunReport): string {
  const title = `dtest: ${run.scenario.description}`;
  const sent = run.tasks.map((task) => parse(task.sent_at)).filter(Number.isFinite);
  const origin = Math.min(Date.parse(run.started_at), ...sent);
  const header = el("tr", {}, ...TASK_COLUMNS.map((c) => textEl("th", {}, c)));
  const tasks = el(
    "table",
    { class: "tasks" },
    header,
    ...run.tasks.map((task) => taskRow(task, origin)),
  );
  const failures = run.tasks.filter((task) => task.outcome !== "pass");
  const body = [
    textEl("h1", {}, title),
    textEl("p", { class: `headline ${run.exit_code === 0 ? "pass" : "fail"}` }, headline(run)),
    totalsTable(run),
    textEl("h2", {}, "Timeline by worker"),
    legend(),
    timelineSvg(run),
    textEl("h2", {}, "Tasks"),
    tasks,
  ];
  if (failures.length > 0)
    body.push(textEl("h2", {}, "Tasks that did not pass"), ...failures.map(failureDetails));

  const head = `<meta charset="utf-8">${textEl("title", {}, title)}<style>${STYLE}</style>`;
  const page = `<html lang="en"><head>${head}</head>\n<body>\n${body.join("\n")}\n</body></html>`;
  return `<!doctype html>\n${page}\n`;
}
