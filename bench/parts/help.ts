/** `./dtest --help` wall time: what a user waits for before seeing anything at all. */
import type { Context } from "../lib/context.ts";
import { BIN } from "../lib/dtest.ts";
import { runTimed } from "../lib/proc.ts";
import { figure, type Figure } from "../lib/report.ts";
import { median, percentile } from "../lib/stats.ts";

export async function measureHelp(ctx: Context): Promise<Figure[]> {
  const runs = ctx.settings.helpRuns;
  ctx.log(`help: ./dtest --help x${runs}`);
  const ms: number[] = [];

  for (let i = 0; i < runs; i++) {
    const { code, stderr, wallMs } = await runTimed([BIN, "--help"]);
    if (code !== 0) throw new Error(`./dtest --help exited with ${code}: ${stderr.slice(-500)}`);
    ms.push(wallMs);
  }

  const spread = `min ${Math.min(...ms).toFixed(1)} ms, p90 ${percentile(ms, 90).toFixed(1)} ms`;
  return [
    figure({
      id: "help_ms",
      label: "./dtest --help",
      value: median(ms),
      unit: "ms",
      target: { op: "<=", value: 50 },
      detail: `median of ${runs} runs, spawn to exit (${spread})`,
      data: { runs_ms: ms },
    }),
  ];
}
