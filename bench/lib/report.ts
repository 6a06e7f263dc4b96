/** Figures: one measured number with its unit, target and verdict, printed and saved as JSON. */

export type Verdict = "PASS" | "MISS" | "INFO" | "N/A";

export interface Target {
  op: ">=" | "<=";
  value: number;
}

export interface Figure {
  id: string;
  label: string;
  value: number | null;
  unit: string;
  target?: Target;
  verdict: Verdict;
  /** One line of context: how it was measured, or why there is no verdict. */
  detail?: string;
  /** Raw numbers behind the figure (every round, every sample), for the JSON file. */
  data?: Record<string, unknown>;
}

export interface FigureInput extends Omit<Figure, "verdict"> {
  /** Set when the run cannot judge the target (e.g. --quick at a smaller size). */
  noVerdict?: string;
}

/** Builds a figure, judging it against its target. */
export function figure(input: FigureInput): Figure {
  const { noVerdict, ...rest } = input;
  if (noVerdict) return { ...rest, verdict: "N/A", detail: join(rest.detail, noVerdict) };
  return { ...rest, verdict: judge(rest.value, rest.target) };
}

function judge(value: number | null, target: Target | undefined): Verdict {
  if (!target || value === null || Number.isNaN(value)) return "INFO";

  const pass = target.op === ">=" ? value >= target.value : value <= target.value;
  return pass ? "PASS" : "MISS";
}

function join(a: string | undefined, b: string): string {
  return a ? `${a}; ${b}` : b;
}

/** Rounds for display: 3 significant digits below 100, whole numbers above. */
export function show(value: number | null): string {
  if (value === null || Number.isNaN(value)) return "-";
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
  return Number(value.toPrecision(3)).toString();
}

function showTarget(f: Figure): string {
  return f.target ? `${f.target.op} ${show(f.target.value)} ${f.unit}` : "";
}

/** The figures as an aligned table, each detail on its own indented line. */
export function renderTable(figures: Figure[]): string[] {
  const labelWidth = Math.max(...figures.map((f) => f.label.length), 6);
  const valueWidth = Math.max(...figures.map((f) => `${show(f.value)} ${f.unit}`.length), 5);
  const targetWidth = Math.max(...figures.map((f) => showTarget(f).length), 6);
  const row = (label: string, value: string, target: string, verdict: string) =>
    [
      label.padEnd(labelWidth),
      value.padStart(valueWidth),
      target.padEnd(targetWidth),
      verdict,
    ].join("  ");
  const lines = [row("figure", "value", "target", "verdict")];

  for (const f of figures) {
    lines.push(row(f.label, `${show(f.value)} ${f.unit}`, showTarget(f), f.verdict));
    if (f.detail) lines.push(...wrap(f.detail, DETAIL_WIDTH).map((line) => `    ${line}`));
  }
  return lines;
}

/** Detail lines are wrapped to fit a 100-column terminal under their 4-space indent. */
const DETAIL_WIDTH = 96;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  return line ? [...lines, line] : lines;
}
