/** `dtest report diff A B`: compare two runs kept with --json or --history. */
import { defineCommand } from "citty";

import { UsageError } from "../core/errors.ts";
import { diffRuns, renderDiff, resolveRunPair } from "../core/report.ts";
import { checkFlags, guard } from "./shared.ts";

const diffArgs = {
  a: {
    type: "positional",
    description:
      "The older run: a run JSON file, or a --history directory (alone: its last two runs)",
    required: true,
  },
  b: {
    type: "positional",
    description: "The newer run: a run JSON file or a --history directory",
    required: false,
  },
  threshold: {
    type: "string",
    description: "Percent slower that counts as a time regression (default 20)",
  },
  "min-ms": {
    type: "string",
    description: "Milliseconds slower that a time regression needs at least (default 50)",
  },
  json: { type: "boolean", description: "Print the comparison as JSON (schema dtest.diff/1)" },
} as const;

/** Parses a number ≥ 0; throws UsageError naming the flag. */
function parseAmount(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === "") return fallback;

  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    throw new UsageError(
      `--${flag} must be a number ≥ 0 (got "${value}")`,
      `pass e.g. --${flag} ${fallback}`,
    );
  }
  return n;
}

const diff = defineCommand({
  meta: {
    name: "diff",
    description:
      "Status changes and time regressions between two runs; exit 1 when there are regressions",
  },
  args: diffArgs,
  run: ({ args: values, rawArgs }) =>
    guard(async () => {
      checkFlags(rawArgs, diffArgs);
      const thresholdPercent = parseAmount("threshold", values.threshold, 20);
      const minMs = parseAmount("min-ms", values["min-ms"], 50);

      const [base, head] = await resolveRunPair(values.a, values.b || undefined);
      const result = diffRuns(base, head, { thresholdPercent, minMs });
      const out = values.json ? [JSON.stringify(result, null, 2)] : renderDiff(result);
      process.stdout.write(`${out.join("\n")}\n`);
      return result.exit_code;
    }),
});

export default defineCommand({
  meta: {
    name: "report",
    description: "Compare kept runs: report diff OLD NEW [--threshold PCT] [--min-ms MS] [--json]",
  },
  subCommands: { diff },
});
