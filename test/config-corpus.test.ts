/**
 * Malformed configs fed to the compiled binary. Each file in test/fixtures/bad-configs, and a few
 * too large or too binary to commit that are written at run time, must make `./dtest dispatch`
 * exit 2 at config load: stderr names `FILE:LINE:` and the field (or the YAML fault) from the
 * manifest below, shows no stack trace, and the process ends within RUN_LIMIT_MS.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { BIN, requireBinary, ROOT, tempDir } from "./helpers.ts";

const CORPUS = join(ROOT, "test", "fixtures", "bad-configs");

/** A config error is reported in about 50 ms; a 1 MiB file of garbage in a few seconds. */
const RUN_LIMIT_MS = 10_000;

/** Room for the kill and the checks after it, so a hang is reported as one, not as a timeout. */
const TEST_LIMIT_MS = RUN_LIMIT_MS + 5_000;

/** Many problems are listed up to a cap, so even the worst file's report stays readable. */
const MAX_STDERR_BYTES = 32 * 1024;

interface Case {
  /** File name, in the corpus folder or the run-time folder. */
  file: string;
  /** The line the message must name; null where the command names no line (see the case). */
  line: number | null;
  /** What follows `FILE:LINE: `: the field path, or the YAML fault in text that is no config. */
  names: string;
  /** Other text stderr must hold: the bad value, or a count of problems left out. */
  also?: string;
  /** The dtest arguments before `--config FILE`, when not `dispatch`. */
  command?: string[];
}

/**
 * The committed files: name, line, what follows `FILE:LINE: ` and, where useful, other text
 * stderr must hold. The seed config starts at line 2, after a comment saying what is wrong.
 */
type Row = [file: string, line: number, names: string, also?: string];

const COMMITTED_ROWS: Row[] = [
  ["workers-negative.yml", 4, "system.workers", "(got -3)"],
  ["workers-zero.yml", 4, "system.workers", "(got 0)"],
  ["workers-as-text.yml", 4, "system.workers", '(got "two")'],
  ["workers-fraction.yml", 4, "system.workers", "(got 2.5)"],
  ["workers-as-list.yml", 4, "system.workers"],
  ["system-as-text.yml", 2, "system must be a mapping"],
  ["description-as-mapping.yml", 3, "system.description"],
  ["scenario-tasks-as-text.yml", 6, "test_scenario.tasks"],
  ["scenario-tasks-empty-list.yml", 6, "test_scenario.tasks"],
  ["scenario-count-negative.yml", 6, "test_scenario.tasks[0].count"],
  ["scenario-count-zero.yml", 8, "test_scenario.tasks[0].count"],
  ["scenario-count-as-text.yml", 6, "test_scenario.tasks[0].count"],
  ["scenario-args-as-mapping.yml", 6, "test_scenario.tasks[0].args"],
  ["scenario-kwargs-as-list.yml", 6, "test_scenario.tasks[0].kwargs"],
  ["scenario-unrouted-task.yml", 8, "test_scenario.tasks[1].task", '"task_c"'],
  ["scenario-task-missing.yml", 6, "test_scenario.tasks[0].task", "it is missing"],
  ["scenario-task-prototype-name.yml", 6, "test_scenario.tasks[0].task", '"toString"'],
  ["port-out-of-range.yml", 9, "rabbitmq.port", "(got 70000)"],
  ["port-negative.yml", 9, "rabbitmq.port"],
  ["port-as-text.yml", 9, "rabbitmq.port"],
  ["host-empty.yml", 8, "rabbitmq.host"],
  ["rabbitmq-as-url.yml", 7, "rabbitmq must be a mapping", "guest:***@"],
  ["no-task-routing.yml", 1, "task_routing must route at least one task"],
  ["task-routing-empty.yml", 12, "task_routing must route at least one task"],
  ["task-routing-as-list.yml", 12, "task_routing must be a mapping"],
  ["queue-name-with-space.yml", 14, "task_routing.task_b", '"queue b"'],
  ["queue-name-amq-prefix.yml", 13, "task_routing.task_a", "not amq.*"],
  ["queue-name-too-long.yml", 14, "task_routing.task_b", "qqq..."],
  ["queue-as-mapping.yml", 13, "task_routing.task_a"],
  ["task-routed-to-nothing.yml", 14, "task_routing.task_b", "(got null)"],
  ["max-retries-as-text.yml", 16, "retry_config.max_retries"],
  ["max-retries-too-large.yml", 16, "retry_config.max_retries"],
  ["retry-delay-negative.yml", 17, "retry_config.retry_delay"],
  ["retry-backoff-quoted.yml", 18, "retry_config.retry_backoff"],
  ["retry-jitter-as-number.yml", 20, "retry_config.retry_jitter"],
  ["retry-backoff-max-infinite.yml", 19, "retry_config.retry_backoff_max", "(got Infinity)"],
  ["retry-config-as-list.yml", 15, "retry_config must be a mapping"],
  ["task-prototype-name-not-routed.yml", 22, "tasks.toString is not routed"],
  ["task-with-empty-name.yml", 22, 'tasks."" is not routed'],
  ["task-kind-unknown.yml", 23, "tasks.task_a.kind", '"shell"'],
  ["task-kind-missing.yml", 23, "tasks.task_c.kind", "it is missing"],
  ["task-not-routed.yml", 22, "tasks.task_c is not routed"],
  ["task-definition-as-text.yml", 22, "tasks.task_a must be a mapping"],
  ["tasks-as-list.yml", 21, "tasks must be a mapping"],
  ["task-timeout-zero.yml", 24, "tasks.task_a.timeout"],
  ["task-max-retries-negative.yml", 24, "tasks.task_a.max_retries"],
  ["hello-duration-negative.yml", 24, "tasks.task_a.duration"],
  ["hello-message-as-list.yml", 24, "tasks.task_a.message"],
  ["exec-command-as-string.yml", 24, "tasks.task_a.command", "never run through a shell"],
  ["exec-command-empty.yml", 24, "tasks.task_a.command", "(got [])"],
  ["exec-command-nested-list.yml", 24, "tasks.task_a.command"],
  ["exec-command-missing.yml", 22, "tasks.task_a.command", "it is missing"],
  ["exec-env-value-mapping.yml", 26, "tasks.task_a.env.DEBUG"],
  ["exec-env-as-list.yml", 25, "tasks.task_a.env must be a mapping"],
  ["exec-cwd-empty.yml", 25, "tasks.task_a.cwd"],
  ["exec-accept-args-as-text.yml", 25, "tasks.task_a.accept_args"],
  ["expect-exit-code-on-hello.yml", 25, "tasks.task_a.expect.exit_code applies only to exec"],
  ["expect-exit-code-out-of-range.yml", 26, "tasks.task_a.expect.exit_code", "(got 256)"],
  ["expect-stdout-empty.yml", 26, "tasks.task_a.expect.stdout_contains"],
  ["expect-as-list.yml", 24, "tasks.task_a.expect must be a mapping"],
  // The YAML parser notices the missing ] where the next key starts.
  ["yaml-unclosed-flow-list.yml", 5, "invalid YAML", "end with a ]"],
  ["yaml-unclosed-quote.yml", 3, "invalid YAML", "quote"],
  ["yaml-bad-indentation.yml", 4, "invalid YAML", "same column"],
  ["yaml-tab-indentation.yml", 4, "invalid YAML", "Tabs"],
  ["yaml-missing-colon.yml", 9, "invalid YAML"],
  ["yaml-list-item-in-mapping.yml", 14, "invalid YAML"],
  ["duplicate-key.yml", 15, "task_routing.task_a is already on line 13"],
  ["duplicate-section.yml", 21, "system is already on line 2"],
  ["two-documents.yml", 21, "a second YAML document starts here"],
  ["python-tag.yml", 22, "tasks.task_a has the YAML tag !!python/object/apply:os.system"],
  ["custom-tag.yml", 4, "system.workers has the YAML tag !int"],
  ["binary-tag.yml", 11, "rabbitmq.password has the YAML tag !!binary"],
  // lol5 is the first level whose aliases stand for more than 10 000 values.
  ["alias-bomb.yml", 25, "lol5[0] expands aliases to more than 10000 values"],
  ["alias-cycle.yml", 6, "test_scenario.tasks[1] refers to *loop inside &loop itself"],
  ["alias-undefined.yml", 4, "system.workers refers to *count"],
  ["bom-and-bad-port.yml", 9, "rabbitmq.port"],
  ["top-level-list.yml", 2, "(top level) must be a mapping", "(got a list)"],
  ["top-level-scalar.yml", 2, "(top level) must be a mapping", "(got a string)"],
  ["empty.yml", 1, "(top level) must be a mapping", "(got null)"],
  ["only-comments.yml", 1, "(top level) must be a mapping"],
  ["deep-nesting.yml", 21, "the YAML nests more than 64 levels deep"],
  ["deep-block-nesting.yml", 22, "the YAML nests more than 64 levels deep"],
];

const COMMITTED: Case[] = [
  ...COMMITTED_ROWS.map(([file, line, names, also]) => ({ file, line, names, also })),
  // A route to a task no file defines is only a warning for a dispatcher (Celery workers may
  // define it); the worker that would run it refuses to start, and names the task but no line.
  {
    file: "route-to-undefined-task.yml",
    line: null,
    names: "task_c routed to queue_c but not defined under tasks:",
    command: ["worker", "--queue", "queue_c"],
  },
];

const SEED_TEXT = await Bun.file(join(ROOT, "test-config.yml")).text();

function seedWith(from: string, to: string): string {
  if (!SEED_TEXT.includes(from)) throw new Error(`test-config.yml has no "${from}"`);
  return SEED_TEXT.replace(from, to);
}

function manyLines(count: number, line: (i: number) => string): string {
  return Array.from({ length: count }, (_, i) => line(i)).join("");
}

/** Files written at run time: over 1 MiB, not UTF-8, or large enough to find slow paths. */
const GENERATED: (Case & { content: () => string | Uint8Array })[] = [
  {
    file: "huge.yml",
    line: 1,
    names: "the file is",
    also: "at most 1048576 bytes",
    content: () => SEED_TEXT + `# ${"padding ".repeat(140_000)}\n`,
  },
  {
    file: "not-utf8.yml",
    line: 2,
    names: "the file is not valid UTF-8",
    // "Café" in Latin-1: the é is the single byte 0xE9.
    content: () => latin1(seedWith("Minimal distributed", "Caf\u00e9 distributed")),
  },
  {
    // Valid multi-byte characters before the bad byte must not be mistaken for it.
    file: "not-utf8-after-multibyte.yml",
    line: 10,
    names: "the file is not valid UTF-8",
    content: () => {
      const text = seedWith("Minimal distributed test system", "é".repeat(300));
      const marked = text.replace("password: guest", "password: gu\u0000est");
      const bytes = new TextEncoder().encode(marked);
      bytes[bytes.indexOf(0)] = 0xff;
      return bytes;
    },
  },
  {
    file: "very-long-queue-name.yml",
    line: 13,
    names: "task_routing.task_b",
    also: "qqq...",
    content: () => seedWith("task_b: queue_b", `task_b: ${"q".repeat(600_000)}`),
  },
  {
    file: "very-long-task-name.yml",
    line: 21,
    names: `tasks.${"t".repeat(57)}... is not routed`,
    // An explicit key (`? key`), since YAML caps a plain implicit key at 1024 characters.
    content: () => `${SEED_TEXT}tasks:\n  ? ${"t".repeat(300_000)}\n  : {kind: noop}\n`,
  },
  {
    // Every route is bad: the report lists the first hundred and counts the rest.
    file: "many-problems.yml",
    line: 13,
    names: "task_routing.t0",
    also: "4900 more problems from this line on",
    content: () => {
      const routes = manyLines(5000, (i) => `  t${i}: q q\n`);
      return `system: {workers: 1}\n${"#\n".repeat(10)}task_routing:\n${routes}`;
    },
  },
  {
    // A mapping of 50 000 keys: a duplicate check that compares every pair takes minutes.
    file: "many-keys-one-duplicate.yml",
    line: 50_002,
    names: "task_routing.t7 is already on line 9",
    content: () => {
      const routes = manyLines(50_000, (i) => `  t${i}: queue_a\n`);
      return `task_routing:\n${routes}  t7: queue_b\n`;
    },
  },
  {
    file: "bracket-garbage.yml",
    line: 1,
    names: "invalid YAML",
    also: "more YAML errors from this line on",
    content: () => "[]".repeat(500_000),
  },
  {
    file: "deep-nesting-500k.yml",
    line: 1,
    names: "the YAML nests more than 64 levels deep",
    content: () => `x: ${"[".repeat(500_000)}`,
  },
];

/** Adds `at` for the test title: "line N", or "the file" where no line is named. */
function titled<T extends Case>(cases: T[]): (T & { at: string })[] {
  return cases.map((entry) => ({
    ...entry,
    at: entry.line === null ? "the file" : `line ${entry.line}`,
  }));
}

function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0));
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  killed: boolean;
}

/** Runs the binary; kills it if it outlives RUN_LIMIT_MS, and says so. */
async function runBinary(args: string[]): Promise<Run> {
  const child = Bun.spawn([BIN, ...args], {
    cwd: ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    // A broker in the environment must not matter: the config is refused before any connect.
    env: { ...process.env, AMQP_URL: "amqp://guest:guest@127.0.0.1:1", NO_COLOR: "1" },
  });

  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, RUN_LIMIT_MS);

  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr, killed };
}

/** Where stderr shows something only a crash prints. */
function crashSigns(stderr: string): string[] {
  const signs = [
    /^\s+at /m,
    /\b(TypeError|RangeError|ReferenceError|SyntaxError)\b/,
    /Maximum call stack/,
    /^Bun v\d/m,
  ];
  return signs.filter((sign) => sign.test(stderr)).map(String);
}

let generatedDir = "";

beforeAll(async () => {
  await requireBinary();
  // The corpus tests the binary, so a binary older than the loader would test old code.
  const source = join(ROOT, "core", "config.ts");
  if (statSync(BIN).mtimeMs < statSync(source).mtimeMs) {
    throw new Error(`${BIN} is older than core/config.ts; rebuild it with \`make build\``);
  }

  generatedDir = tempDir();
  for (const entry of GENERATED) writeFileSync(join(generatedDir, entry.file), entry.content());
});

afterAll(() => {
  if (generatedDir) rmSync(generatedDir, { recursive: true, force: true });
});

function runCase(path: string, entry: Case): Promise<Run> {
  return runBinary([...(entry.command ?? ["dispatch"]), "--config", path]);
}

function checkRefusal(path: string, entry: Case, run: Run): void {
  expect(run.killed, `still running after ${RUN_LIMIT_MS} ms`).toBe(false);
  expect(crashSigns(run.stderr)).toEqual([]);
  expect(run.stdout).toBe("");
  expect(run.stderr.length).toBeLessThan(MAX_STDERR_BYTES);

  const prefix = entry.line === null ? `${path}: ` : `${path}:${entry.line}: `;
  const message = run.stderr.split("\n").find((line) => line.includes(`${prefix}${entry.names}`));
  expect(message ?? run.stderr.slice(0, 2000)).toContain(`${prefix}${entry.names}`);
  if (entry.also) expect(run.stderr).toContain(entry.also);

  expect(run.code).toBe(2);
}

describe("malformed configs through the compiled binary", () => {
  test("the manifest lists every corpus file and no other", () => {
    const files = readdirSync(CORPUS)
      .filter((name) => name.endsWith(".yml"))
      .sort();
    expect(COMMITTED.map((entry) => entry.file).sort()).toEqual(files);
    expect(files.length + GENERATED.length).toBeGreaterThanOrEqual(30);
  });

  test.each(titled(COMMITTED))(
    "$file is refused with exit 2, naming $at and $names",
    async (entry) => {
      const path = join(CORPUS, entry.file);
      checkRefusal(path, entry, await runCase(path, entry));
    },
    TEST_LIMIT_MS,
  );

  test.each(titled(GENERATED))(
    "generated $file is refused with exit 2, naming $at and $names",
    async (entry) => {
      const path = join(generatedDir, entry.file);
      checkRefusal(path, entry, await runCase(path, entry));
    },
    TEST_LIMIT_MS,
  );
});
