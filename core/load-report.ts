/**
 * The load test as a self-contained HTML page: the latency histogram and throughput over
 * time as inline SVG, the figures as a table. No scripts, no external files.
 */
import type { LoadReport } from "./load.ts";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = 40;

function escape(text: string): string {
  return text.replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!,
  );
}

function axes(xLabel: string, yLabel: string): string {
  return `<line x1="${PAD}" y1="${HEIGHT - PAD}" x2="${WIDTH - 10}" y2="${HEIGHT - PAD}" stroke="#333"/>
<line x1="${PAD}" y1="10" x2="${PAD}" y2="${HEIGHT - PAD}" stroke="#333"/>
<text x="${WIDTH / 2}" y="${HEIGHT - 8}" text-anchor="middle">${escape(xLabel)}</text>
<text x="12" y="${HEIGHT / 2}" transform="rotate(-90 12 ${HEIGHT / 2})" text-anchor="middle">${escape(yLabel)}</text>`;
}

/** Bars of the latency histogram on a log scale of milliseconds. */
export function latencySvg(report: LoadReport): string {
  const bars = report.histogram;
  const top = Math.max(1, ...bars.map((b) => b.count));
  const step = (WIDTH - PAD - 10) / Math.max(1, bars.length);
  const plot = bars.map((b, i) => {
    const h = ((HEIGHT - PAD - 10) * b.count) / top;
    const title = `${b.from_ms.toFixed(2)}–${b.to_ms.toFixed(2)} ms: ${b.count}`;
    return `<rect x="${(PAD + i * step).toFixed(1)}" y="${(HEIGHT - PAD - h).toFixed(1)}" width="${Math.max(1, step - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="#3b82f6"><title>${title}</title></rect>`;
  });
  const first = bars[0]?.from_ms ?? 0;
  const last = bars.at(-1)?.to_ms ?? 0;
  const ticks = `<text x="${PAD}" y="${HEIGHT - PAD + 14}">${first.toFixed(2)} ms</text>
<text x="${WIDTH - 10}" y="${HEIGHT - PAD + 14}" text-anchor="end">${last.toFixed(2)} ms</text>`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-size="11" font-family="sans-serif">
${axes("latency, publish to result (log scale)", "tasks")}
${plot.join("\n")}
${ticks}
</svg>`;
}

/** Completed tasks per second over the run. */
export function throughputSvg(report: LoadReport): string {
  const points = report.timeline;
  const top = Math.max(1, ...points.map((p) => p.completed));
  const step = (WIDTH - PAD - 10) / Math.max(1, points.length - 1);
  const path = points.map((p, i) => {
    const x = PAD + i * step;
    const y = HEIGHT - PAD - ((HEIGHT - PAD - 10) * p.completed) / top;
    return `${i === 0 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)}`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" font-size="11" font-family="sans-serif">
${axes("seconds since start", "completed per second")}
<path d="${path.join(" ")}" fill="none" stroke="#16a34a" stroke-width="2"/>
<text x="${PAD + 4}" y="20">peak ${top}/s</text>
</svg>`;
}

/** The whole page. */
export function renderLoadHtml(report: LoadReport, title: string): string {
  const t = report.tasks;
  const l = report.latency_ms;
  const rows: [string, string][] = [
    [
      "Tasks",
      `sent ${t.sent}, succeeded ${t.succeeded}, failed ${t.failed}, lost ${t.lost}, duplicates ${t.duplicates}`,
    ],
    ["Retries", String(t.retries)],
    ["Total time", `${report.total_seconds.toFixed(3)} s`],
    ["Throughput", `${report.throughput_per_second.toFixed(1)} tasks/s`],
    ["Latency", `p50 ${l.p50} ms, p95 ${l.p95} ms, p99 ${l.p99} ms, max ${l.max} ms`],
    [
      "Workers",
      `start ${JSON.stringify(report.workers.start)}, end ${JSON.stringify(report.workers.end)}`,
    ],
    ["Result", report.reason],
  ];
  const table = rows
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
