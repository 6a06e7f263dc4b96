/**
 * dtest's benchmark: measures dtest against the most any client can get out of the same
 * RabbitMQ, and the latency, start-up, memory and scaling figures it is held to.
 *
 *   node_modules/.bin/bun bench/run.ts                       everything (a few minutes)
 *   node_modules/.bin/bun bench/run.ts --quick               small sizes: a smoke run in seconds
 *   node_modules/.bin/bun bench/run.ts --only floor,noop     a subset (parts listed below)
 *   node_modules/.bin/bun bench/run.ts --only floor-sweep    the floor at 1-2 workers, 4 prefetches
 *   node_modules/.bin/bun bench/run.ts --json bench/results.json
 *
 * Options: --n N (round trips per throughput round), --workers K, --prefetch P, --rounds R.
 * Needs ./dtest (make build) and RabbitMQ on 127.0.0.1:5672 (AMQP_URL may name another
 * local broker). Every queue it uses is named bench_<run id>_* and deleted at the end.
 * Exit code: 0 every target met, 1 a target missed, 2 usage error, 3 the bench could not run.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { parseArgs } from "node:util";

import type { ChannelModel } from "amqplib";

import { brokerUrl, connect, Leftovers, mask, RUN_ID } from "./lib/broker.ts";
import type { Context, Settings } from "./lib/context.ts";
import { requireBinary, Workdir } from "./lib/dtest.ts";
import { brokerSchedulerBinding, busyPercent, watchCpu } from "./lib/machine.ts";
import { Pools } from "./lib/pools.ts";
import { renderTable, type Figure } from "./lib/report.ts";
import { measureDispatch } from "./parts/dispatch.ts";
import { measureDispatcherRss } from "./parts/dispatcher-rss.ts";
import { measureFloorSweep } from "./parts/floor-sweep.ts";
import { measureHelp } from "./parts/help.ts";
import { measureLatency } from "./parts/latency.ts";
import { measureScaling } from "./parts/scaling.ts";
import { measureThroughput } from "./parts/throughput.ts";
import { measureWorkerStart } from "./parts/worker-start.ts";

/** Above this share of CPU used by others, the report warns that the figures are noisy. */
const BUSY_WARNING_PERCENT = 10;

const PARTS = [
  "floor",
  "noop",
  "latency",
  "dispatch",
  "help",
  "worker-start",
  "dispatcher-rss",
  "scaling",
];
/** Parts run only when --only names them. */
const EXTRA_PARTS = ["floor-sweep"];
const ALL_PARTS = [...PARTS, ...EXTRA_PARTS];

interface Options {
  settings: Settings;
  parts: Set<string>;
  json?: string;
}

const FLAGS = {
  quick: { type: "boolean", default: false },
  n: { type: "string" },
  workers: { type: "string" },
  prefetch: { type: "string" },
  rounds: { type: "string" },
  only: { type: "string" },
  json: { type: "string" },
  help: { type: "boolean", default: false },
} as const;

function readFlags(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: FLAGS }).values;
  } catch (err) {
    fail(`${(err as Error).message}; see --help`);
  }
}

function parseOptions(argv: string[]): Options {
  const values = readFlags(argv);
  if (values.help) {
    process.stdout.write(usage());
    process.exit(0);
  }

  const quick = values.quick;
  const settings: Settings = {
    quick,
    n: whole("n", values.n, quick ? 2_000 : 20_000),
    workers: whole("workers", values.workers, 2),
    prefetch: whole("prefetch", values.prefetch, 100),
    rounds: whole("rounds", values.rounds, quick ? 1 : 3),
    dispatchRuns: quick ? 3 : 10,
    helpRuns: quick ? 5 : 20,
    startRuns: quick ? 3 : 10,
    latencyTasks: quick ? 500 : 3_000,
    latencyRate: 1_000,
    inflightTasks: quick ? 10_000 : 100_000,
    scalingTasksPerWorker: quick ? 10 : 50,
  };
  return { settings, parts: chooseParts(values.only), json: values.json };
}

function usage(): string {
  const header = /\/\*\*([\s\S]*?)\*\//.exec(readFileSync(import.meta.path, "utf8"))?.[1] ?? "";
  return `${header.replace(/^ \* ?/gm, "").trim()}\n\nParts: ${ALL_PARTS.join(", ")}\n`;
}

function whole(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;

  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    fail(`--${flag} must be a whole number >= 1 (got "${value}"); e.g. --${flag} ${fallback}`);
  }
  return n;
}

function chooseParts(only: string | undefined): Set<string> {
  if (!only) return new Set(PARTS);

  const parts = only
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const unknown = parts.filter((p) => !ALL_PARTS.includes(p));
  if (unknown.length > 0) {
    fail(`--only: unknown part ${unknown.join(", ")}; choose from ${ALL_PARTS.join(", ")}`);
  }
  return new Set(parts);
}

function fail(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

/**
 * Runs the chosen parts. Latency goes before throughput so it is measured on a broker that is
 * not still digesting the throughput bursts; both share the same warmed-up workers.
 */
async function measure(ctx: Context, parts: Set<string>): Promise<Figure[]> {
  const pools = new Pools(ctx);
  const figures: Figure[] = [];

  try {
    if (parts.has("help")) figures.push(...(await measureHelp(ctx)));
    if (parts.has("worker-start")) figures.push(...(await measureWorkerStart(ctx)));
    if (parts.has("dispatch")) figures.push(...(await measureDispatch(ctx)));
    if (parts.has("latency")) figures.push(...(await measureLatency(ctx, pools)));
    if (parts.has("floor") || parts.has("noop")) {
      const plan = { floor: parts.has("floor"), noop: parts.has("noop"), pools };
      figures.push(...(await measureThroughput(ctx, plan)));
    }
    if (parts.has("dispatcher-rss")) figures.push(...(await measureDispatcherRss(ctx, pools)));
    if (parts.has("scaling")) figures.push(...(await measureScaling(ctx)));
    if (parts.has("floor-sweep")) figures.push(...(await measureFloorSweep(ctx)));
  } finally {
    await pools.stop();
  }
  return figures;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  requireBinary();
  const url = brokerUrl();
  const model = await connect(url);
  const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
  model.on("error", (err: Error) => log(`broker connection: ${err.message}`));
  const server = model.connection.serverProperties as { version?: string } | undefined;
  const ctx: Context = {
    url,
    model,
    leftovers: new Leftovers(),
    workdir: new Workdir(),
    settings: options.settings,
    log,
  };

  // Ctrl-C reaches the workers too (same process group); the broker still needs tidying.
  process.once("SIGINT", () => void tidy(ctx).finally(() => process.exit(130)));

  const started = new Date();
  ctx.log(`run ${RUN_ID} against ${mask(url)} (RabbitMQ ${server?.version ?? "?"})`);
  const before = await busyPercent();
  try {
    const cpu = watchCpu();
    const figures = await measure(ctx, options.parts);
    const load = { before, ...cpu.stop() };
    print(ctx, figures, load);
    const rabbitmq = server?.version;
    if (options.json) save(options.json, { ctx, figures, started, load, rabbitmq });
    process.exitCode = figures.some((f) => f.verdict === "MISS") ? 1 : 0;
  } finally {
    await tidy(ctx);
    // Already closed when the broker dropped it; the run's outcome is reported either way.
    await model.close().catch(() => undefined);
  }
}

/** Removes this run's queues and files, over a fresh connection in case the run's own died. */
async function tidy(ctx: Context): Promise<void> {
  ctx.workdir.cleanup();

  let model: ChannelModel;
  try {
    model = await connect(ctx.url);
  } catch (err) {
    const why = (err as Error).message;
    const fix = "remove them with rabbitmqctl delete_queue once RabbitMQ is back";
    ctx.log(`could not delete the queues named bench_${RUN_ID}_* (${why}); ${fix}`);
    return;
  }

  try {
    const deleted = await ctx.leftovers.clean(model);
    if (deleted.length > 0) {
      ctx.log(`deleted ${deleted.length} queues and exchanges named bench_${RUN_ID}_*`);
    }
  } finally {
    await model.close();
  }
}

/** CPU shares in percent: all CPUs busy before the run, during it, and with others' work. */
interface Load {
  before: number;
  busyPercent: number;
  othersPercent: number;
}

function print(ctx: Context, figures: Figure[], load: Load): void {
  const { settings: s } = ctx;
  const pct = (n: number) => `${n.toFixed(0)}%`;
  const noisy = Math.max(load.before, load.othersPercent) > BUSY_WARNING_PERCENT;
  const warning = noisy
    ? ["warning: other processes used the CPUs while the bench ran; these figures are skewed"]
    : [];
  const memory = `${(totalmem() / 2 ** 30).toFixed(0)} GiB`;
  const machine = `${availableParallelism()} CPUs, ${memory}, Bun ${Bun.version}`;
  const binding = brokerSchedulerBinding();
  const schedulers =
    binding === undefined
      ? []
      : [
          `RabbitMQ schedulers: ${binding === "u" ? "unbound" : "bound to CPUs"} (+stbt ` +
            `${binding}; see bench/README.md on the round-trip p99)`,
        ];
  const sizes = `N=${s.n}, workers=${s.workers}, prefetch=${s.prefetch}, rounds=${s.rounds}`;
  const lines = [
    "",
    `dtest bench ${RUN_ID}${s.quick ? " (quick)" : ""}: ${machine}; ${sizes}`,
    `CPU busy: ${pct(load.before)} before the run, ${pct(load.busyPercent)} during it, of which ` +
      `${pct(load.othersPercent)} by processes other than the bench's and RabbitMQ`,
    ...schedulers,
    ...warning,
    "",
    ...renderTable(figures),
    "",
  ];
  process.stdout.write(lines.join("\n"));
}

interface SavedRun {
  ctx: Context;
  figures: Figure[];
  started: Date;
  load: Load;
  rabbitmq?: string;
}

function save(file: string, run: SavedRun): void {
  const body = {
    version: 1,
    run_id: RUN_ID,
    started: run.started.toISOString(),
    finished: new Date().toISOString(),
    machine: {
      cpus: availableParallelism(),
      memory_gib: totalmem() / 2 ** 30,
      bun: Bun.version,
      rabbitmq: run.rabbitmq,
      rabbitmq_scheduler_binding: brokerSchedulerBinding() ?? null,
      cpu_busy_before_percent: run.load.before,
      cpu_busy_during_percent: run.load.busyPercent,
      cpu_used_by_others_percent: run.load.othersPercent,
    },
    settings: run.ctx.settings,
    figures: run.figures,
  };
  writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  run.ctx.log(`figures written to ${file}`);
}

try {
  await main();
} catch (err) {
  // Setup and command failures: one message naming the fix, not a stack trace.
  process.stderr.write(`bench: ${(err as Error).message}\n`);
  process.exitCode = 3;
}
