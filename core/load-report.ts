/**
 * The load test as a picture: the latency histogram and throughput over time, with the
 * figures, either as a self-contained HTML page or as one standalone SVG image. No scripts,
 * no external files.
 */
import type { LoadReport } from "./load.ts";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = 40;
const PLOT_WIDTH = WIDTH - PAD - 10;
const PLOT_HEIGHT = HEIGHT - PAD - 10;
const BASELINE = HEIGHT - PAD;
const SVG_NS = "http://www.w3.org/2000/svg";

function escape(text: string): string {
  return text.replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!,
  );
}

type Attrs = Record<string, string | number | undefined>;

/** One element; numbers are rounded to a tenth, text is escaped, `inner` is markup. */
function el(name: string, attrs: Attrs, inner?: string): string {
  const list = Object.entries(attrs)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}="${typeof v === "number" ? +v.toFixed(1) : escape(v!)}"`)
    .join("");
  return inner === undefined ? `<${name}${list}/>` : `<${name}${list}>${inner}</${name}>`;
}

function text(attrs: Attrs, content: string): string {
  return el("text", attrs, escape(content));
}

function axes(xLabel: string, yLabel: string): string {
  const middle = HEIGHT / 2;
  return [
    el("line", { x1: PAD, y1: BASELINE, x2: WIDTH - 10, y2: BASELINE, stroke: "#333" }),
    el("line", { x1: PAD, y1: 10, x2: PAD, y2: BASELINE, stroke: "#333" }),
    text({ x: WIDTH / 2, y: HEIGHT - 8, "text-anchor": "middle" }, xLabel),
    text(
      { x: 12, y: middle, transform: `rotate(-90 12 ${middle})`, "text-anchor": "middle" },
      yLabel,
    ),
  ].join("\n");
}

/** The labels at both ends of the x axis. */
function ends(left: string, right: string): string {
  return [
    text({ x: PAD, y: BASELINE + 14 }, left),
    text({ x: WIDTH - 10, y: BASELINE + 14, "text-anchor": "end" }, right),
  ].join("\n");
}

function chart(parts: string[], at?: { y: number }): string {
  const attrs = { xmlns: SVG_NS, y: at?.y, width: WIDTH, height: HEIGHT };
  return el("svg", { ...attrs, "font-size": 11, "font-family": "sans-serif" }, parts.join("\n"));
}

/** Bars of the latency histogram on a log scale of milliseconds, with p50 and p99 marked. */
export function latencySvg(report: LoadReport, at?: { y: number }): string {
  const bars = report.histogram;
  const top = Math.max(1, ...bars.map((b) => b.count));
  const step = PLOT_WIDTH / Math.max(1, bars.length);
  const plot = bars.map((b, i) => {
    const h = (PLOT_HEIGHT * b.count) / top;
    const box = { x: PAD + i * step, y: BASELINE - h, width: Math.max(1, step - 1), height: h };
    const title = `${b.from_ms.toFixed(2)}–${b.to_ms.toFixed(2)} ms: ${b.count}`;
    return el("rect", { ...box, fill: "#3b82f6" }, el("title", {}, escape(title)));
  });

  const first = bars[0]?.from_ms ?? 0;
  const last = bars.at(-1)?.to_ms ?? 0;
  const span = Math.log(last / first) || 1;
  const marks: [string, number][] = [
    ["p50", report.latency_ms.p50],
    ["p99", report.latency_ms.p99],
  ];
  const markers = marks.map(([name, ms], i) => {
    const x = PAD + (PLOT_WIDTH * Math.log(ms / first)) / span;
    const label = x > WIDTH - 120 ? { x: x - 3, "text-anchor": "end" } : { x: x + 3 };
    const dashes = { stroke: "#111", "stroke-dasharray": "4 3" };
    return [
      el("line", { x1: x, y1: 10, x2: x, y2: BASELINE, ...dashes }),
      text({ ...label, y: 22 + i * 14 }, `${name} ${ms.toFixed(2)} ms`),
    ].join("\n");
  });

  const parts = [axes("latency, publish to result (log scale)", "tasks"), ...plot];
  if (bars.length > 0) parts.push(...markers);
  parts.push(ends(`${first.toFixed(2)} ms`, `${last.toFixed(2)} ms`));
  return chart(parts, at);
}

/** Tasks completed in each second of the run, as a step line. */
export function throughputSvg(report: LoadReport, at?: { y: number }): string {
  const seconds = report.timeline;
  const top = Math.max(1, ...seconds.map((p) => p.completed));
  const step = PLOT_WIDTH / Math.max(1, seconds.length);
  const at1 = (n: number) => +n.toFixed(1);
  const path = seconds.map((p, i) => {
    const y = at1(BASELINE - (PLOT_HEIGHT * p.completed) / top);
    return `${i === 0 ? "M" : "L"}${at1(PAD + i * step)},${y} H${at1(PAD + (i + 1) * step)}`;
  });

  const line = { d: path.join(" "), fill: "none", stroke: "#16a34a", "stroke-width": 2 };
  return chart(
    [
      axes("seconds since start", "completed per second"),
      el("path", line),
      text({ x: PAD + 4, y: 20 }, `peak ${top}/s`),
      ends("0 s", `${seconds.length} s`),
    ],
    at,
  );
}

/** The figures beside the charts, as label and text. */
function summaryRows(report: LoadReport): [string, string][] {
  const t = report.tasks;
  const l = report.latency_ms;
  const w = report.workers;
  return [
    [
      "Tasks",
      `sent ${t.sent}, succeeded ${t.succeeded}, failed ${t.failed}, lost ${t.lost}, ` +
        `duplicates ${t.duplicates}`,
    ],
    ["Retries", String(t.retries)],
    ["Total time", `${report.total_seconds.toFixed(3)} s`],
    ["Throughput", `${report.throughput_per_second.toFixed(1)} tasks/s`],
    ["Most in flight at once", String(report.max_in_flight)],
    ["Latency", `p50 ${l.p50} ms, p95 ${l.p95} ms, p99 ${l.p99} ms, max ${l.max} ms`],
    ["Workers", `start ${JSON.stringify(w.start)}, end ${JSON.stringify(w.end)}`],
    ["Result", report.reason],
  ];
}

/** The whole page. */
export function renderLoadHtml(report: LoadReport, title: string): string {
  const table = summaryRows(report)
    .map(([k, v]) => `<tr><th>${escape(k)}</th><td>${escape(v)}</td></tr>`)
    .join("\n");

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
<style>body{font-family:sans-serif;margin:2em;color:#222}th{text-align:left;padding-right:1em}
h2{margin-top:1.5em;font-size:1.1em}</style></head>
<body>
<h1>${escape(title)}</h1>
<table>${table}</table>
<h2>Latency histogram</h2>
${latencySvg(report)}
<h2>Throughput over time</h2>
${throughputSvg(report)}
</body></html>
`;
}

/** One standalone SVG image: the title, the figures, then both charts under each other. */
export function renderLoadSvg(report: LoadReport, title: string): string {
  const line = 17;
  const bold = { "font-weight": "bold" };
  const figures = summaryRows(report).map(([k, v], i) => {
    const label = el("tspan", bold, escape(`${k}:`));
    return el("text", { x: 10, y: 52 + i * line }, `${label} ${escape(v)}`);
  });
  const latencyAt = 52 + figures.length * line + 20;
  const throughputAt = latencyAt + HEIGHT + 30;
  const height = throughputAt + HEIGHT + 10;

  const body = [
    el("title", {}, escape(title)),
    el("rect", { width: "100%", height: "100%", fill: "#fff" }),
    text({ x: 10, y: 24, "font-size": 18, ...bold }, title),
    ...figures,
    text({ x: 10, y: latencyAt - 6, ...bold }, "Latency histogram"),
    latencySvg(report, { y: latencyAt }),
    text({ x: 10, y: throughputAt - 6, ...bold }, "Throughput over time"),
    throughputSvg(report, { y: throughputAt }),
  ];
  const page = { xmlns: SVG_NS, width: WIDTH, height, viewBox: `0 0 ${WIDTH} ${height}` };
  const font = { "font-family": "sans-serif", "font-size": 12 };
  const svg = el("svg", { ...page, ...font }, `\n${body.join("\n")}\n`);
  return `<?xml version="1.0" encoding="utf-8"?>\n${svg}\n`;
}

/** The SVG image when the file is named `*.svg`, the HTML page otherwise. */
export function renderLoadPicture(report: LoadReport, title: string, file: string): string {
  return file.toLowerCase().endsWith(".svg")
    ? renderLoadSvg(report, title)
    : renderLoadHtml(report, title);
}
