/**
 * Seeded random mutations of valid configs, fed to parseConfig in-process. Whatever the text, it
 * must return a config or throw ConfigError, every problem must start with `fuzz.yml:<line>: `,
 * and each case must finish quickly. Wherever the plain-YAML fast path reads a text, it must
 * read exactly what the YAML library reads, from a text the library reads without complaint.
 *
 *   bun test core/config.fuzz.test.ts                        # the fixed default seed
 *   DTEST_FUZZ_SEED=123 DTEST_FUZZ_CASES=20000 bun test core/config.fuzz.test.ts
 *
 * A failure prints the seed, the case number, the mutations and the text, enough to replay it.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument } from "yaml";

import { parseConfig, type DtestConfig } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { readPlainYaml } from "./plain-yaml.ts";

const SEED_CONFIG = readFileSync(join(import.meta.dir, "..", "test-config.yml"), "utf8");

/** Every feature the loader reads, in both YAML styles, with an anchor and an alias. */
const RICH_CONFIG = `# a config that uses every section
system:
  description: "Nightly run"
  workers: 3
test_scenario:
  description: 'Unit, smoke and load'
  tasks:
    - task_a
    - task: unit_tests
      count: 3
      args: ["-k", "smoke", 7]
      kwargs: { verbose: true, level: 2 }
    - { task: ping, count: 100 }
rabbitmq:
  host: broker.internal
  port: 5671
  username: dtest
  password: "s3cret:with@chars"
  vhost: /ci
task_routing:
  task_a: queue_a
  task_b: queue_b
  unit_tests: queue.tests
  ping: queue_a
retry_config:
  max_retries: 2
  retry_delay: 0.5
  retry_backoff: false
  retry_backoff_max: 30
  retry_jitter: false
tasks:
  task_a:
    kind: hello
    message: &greeting "Hello from Task A"
    duration: 0.1
  task_b: { kind: hello, message: *greeting, duration: 0 }
  ping:
    kind: noop
    expect: { result_contains: "[]" }
  unit_tests:
    kind: exec
    command: ["pytest", "-q", "tests/unit"]
    cwd: /srv/app
    env:
      PYTHONHASHSEED: "0"
      CI: 1
    accept_args: true
    timeout: 300
    max_retries: 1
    expect:
      exit_code: 0
      stdout_contains: passed
`;

const DEFAULT_SEED = 20_260_101;
const SEED = Number(process.env.DTEST_FUZZ_SEED ?? DEFAULT_SEED);
const CASES = Number(process.env.DTEST_FUZZ_CASES ?? 2500);

/** One case may take this long; a typical one takes well under a millisecond. */
const CASE_LIMIT_MS = 1000;

/** A small deterministic generator (xorshift32), so one number replays a whole run. */
class Random {
  private state: number;

  constructor(seed: number) {
    // xorshift has a fixed point at 0; any other 32-bit state is fine.
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state / 2 ** 32;
  }

  int(below: number): number {
    return Math.floor(this.next() * below);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }
}

const NUMBERS = [
  "0",
  "-1",
  "-0",
  "1",
  "65536",
  "1e400",
  "-1e400",
  "9007199254740993",
  "0.5",
  "1e-9",
  ".nan",
  ".inf",
  "-.inf",
  "0x1F",
  "0o17",
  "1_000",
  "007",
  "+12",
];
const WORDS = [
  "true",
  "false",
  "yes",
  "no",
  "null",
  "~",
  "",
  "''",
  '""',
  "amq.direct",
  "queue b",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
  "task_a",
  "task_b",
  "-",
  "?",
  "<<",
];
const COLLECTIONS = [
  "[]",
  "{}",
  "[1, 2]",
  '["a", {b: c}]',
  "{a: 1, b: [2]}",
  "[[[[]]]]",
  "{a: {b: {c: {}}}}",
  "&x [*x]",
  "&y {k: *y}",
  "*nowhere",
  "&z 5",
  "[*z, *z]",
  "!!binary aGVsbG8=",
  "!!python/object:os.system",
  "!!set {a, b}",
  "!!timestamp 2001-12-14",
  "!custom 5",
  "!!str 5",
  "!!int '7'",
  "|\n  block\n  text",
  ">-\n  folded",
  "? complex\n: key",
  "- item",
  "'unclosed",
  '"unclosed',
  "[unclosed",
  "{unclosed: 1",
];
const PUNCTUATION = [
  ":",
  "{",
  "}",
  "[",
  "]",
  ",",
  "&",
  "*",
  "#",
  "?",
  "|",
  "-",
  "<",
  ">",
  "=",
  "!",
  "%",
  "@",
  "`",
  '"',
  "'",
  "\t",
  "\n",
  "\r",
  " ",
  "---\n",
  "...\n",
  "\\",
  "\u00a0",
  "\ufeff",
];

function randomUnicode(r: Random, length: number): string {
  let text = "";
  for (let i = 0; i < length; i++) {
    const range = r.pick([
      [0, 0x20],
      [0x20, 0x7f],
      [0x80, 0x800],
      [0x800, 0xd800],
      [0xd800, 0xe000],
      [0xe000, 0x10000],
      [0x10000, 0x110000],
    ] as const);
    const code = range[0] + r.int(range[1] - range[0]);
    // Lone surrogates are allowed on purpose: a JavaScript string can hold them.
    const surrogate = code >= 0xd800 && code < 0xe000;
    text += surrogate ? String.fromCharCode(code) : String.fromCodePoint(code);
  }
  return text;
}

function randomValue(r: Random): string {
  switch (r.int(6)) {
    case 0:
      return r.pick(NUMBERS);
    case 1:
      return r.pick(WORDS);
    case 2:
      return r.pick(COLLECTIONS);
    case 3:
      return JSON.stringify(randomUnicode(r, 1 + r.int(12)));
    case 4:
      return randomUnicode(r, 1 + r.int(6));
    default:
      return "x".repeat(1 + r.int(20_000));
  }
}

type Mutation = (r: Random, text: string) => string;

/** Each mutation works on lines or characters and returns new text; names appear in reports. */
const MUTATIONS: Record<string, Mutation> = {
  deleteLine: (r, text) => {
    const lines = text.split("\n");
    lines.splice(r.int(lines.length), 1);
    return lines.join("\n");
  },
  duplicateLine: (r, text) => {
    const lines = text.split("\n");
    const i = r.int(lines.length);
    lines.splice(i, 0, lines[i]!);
    return lines.join("\n");
  },
  swapLines: (r, text) => {
    const lines = text.split("\n");
    const [i, j] = [r.int(lines.length), r.int(lines.length)];
    [lines[i], lines[j]] = [lines[j]!, lines[i]!];
    return lines.join("\n");
  },
  reindent: (r, text) => {
    const lines = text.split("\n");
    const i = r.int(lines.length);
    const body = lines[i]!.trimStart();
    const indent = r.chance(0.2) ? "\t" : " ".repeat(r.int(9));
    lines[i] = indent + body;
    return lines.join("\n");
  },
  replaceValue: (r, text) => {
    const lines = text.split("\n");
    const hasValue = (line: string) => /:\s*\S/.test(line) || /^\s*- /.test(line);
    const candidates = lines.flatMap((line, i) => (hasValue(line) ? [i] : []));
    if (candidates.length === 0) return text;
    const i = r.pick(candidates);
    const line = lines[i]!;
    const cut = /:\s/.test(line) ? line.indexOf(": ") + 2 : line.indexOf("- ") + 2;
    lines[i] = line.slice(0, cut) + randomValue(r);
    return lines.join("\n");
  },
  replaceKey: (r, text) => {
    const lines = text.split("\n");
    const i = r.int(lines.length);
    const key = r.pick(WORDS) || "k";
    lines[i] = lines[i]!.replace(/^(\s*)[^:\s#][^:]*:/, (_m, indent: string) => `${indent}${key}:`);
    return lines.join("\n");
  },
  insertPunctuation: (r, text) => {
    const at = r.int(text.length + 1);
    return text.slice(0, at) + r.pick(PUNCTUATION) + text.slice(at);
  },
  insertUnicode: (r, text) => {
    const at = r.int(text.length + 1);
    return text.slice(0, at) + randomUnicode(r, 1 + r.int(4)) + text.slice(at);
  },
  truncateChars: (r, text) => text.slice(0, r.int(text.length + 1)),
  truncateBytes: (r, text) => {
    // A file cut mid-character decodes to U+FFFD, as a lenient reader would see it.
    const bytes = new TextEncoder().encode(text);
    return new TextDecoder().decode(bytes.subarray(0, r.int(bytes.length + 1)));
  },
  aliasBomb: (r, text) => {
    const levels = 3 + r.int(8);
    let bomb = `lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n`;
    for (let i = 1; i < levels; i++) {
      bomb += `lol${i}: &lol${i} [${Array(9)
        .fill(`*lol${i - 1}`)
        .join(", ")}]\n`;
    }
    return r.chance(0.5) ? bomb + text : text + "\n" + bomb;
  },
  deepNesting: (r, text) => {
    const depth = 10 + r.int(300);
    const [open, close] = r.chance(0.5) ? ["[", "]"] : ["{a: ", "}"];
    const value = open.repeat(depth) + close.repeat(depth);
    return `${text}\ndeep: ${value}\n`;
  },
  spliceOtherConfig: (r, text) => {
    const other = (r.chance(0.5) ? SEED_CONFIG : RICH_CONFIG).split("\n");
    const lines = text.split("\n");
    const from = r.int(other.length);
    lines.splice(r.int(lines.length + 1), 0, ...other.slice(from, from + 1 + r.int(4)));
    return lines.join("\n");
  },
};

const MUTATION_NAMES = Object.keys(MUTATIONS);

interface Outcome {
  kind: "config" | "config-error";
  ms: number;
  plain: boolean;
}

/** Where the fast path reads a text, why its reading differs from the YAML library's, if it does. */
function plainViolation(text: string, plain: unknown): string | undefined {
  const doc = parseDocument(text, { uniqueKeys: true });
  const trouble = doc.errors[0] ?? doc.warnings[0];
  if (trouble) return `the fast path read text the YAML library flags: ${trouble.message}`;

  const full = doc.toJS();
  if (Bun.deepEquals(plain, full, true)) return undefined;
  const show = (value: unknown) => JSON.stringify(value)?.slice(0, 300);
  return `the fast path read ${show(plain)} where the YAML library reads ${show(full)}`;
}

/** Checks one parse against the loader's contract; returns why it broke it, or nothing. */
function violation(text: string): { broken?: string; outcome?: Outcome } {
  const plain = readPlainYaml(text);
  const misread = plain === undefined ? undefined : plainViolation(text, plain);
  if (misread !== undefined) return { broken: misread };

  const started = performance.now();
  let config: DtestConfig | undefined;
  let error: unknown;
  try {
    config = parseConfig(text, "fuzz.yml");
  } catch (err) {
    error = err;
  }
  const ms = performance.now() - started;

  if (ms > CASE_LIMIT_MS) return { broken: `took ${ms.toFixed(0)} ms (limit ${CASE_LIMIT_MS} ms)` };
  if (error !== undefined && !(error instanceof ConfigError)) {
    const name = error instanceof Error ? error.name : typeof error;
    const message = error instanceof Error ? error.message : String(error);
    return { broken: `threw ${name}, not ConfigError: ${message}` };
  }

  const maxLine = text.split(/\r\n|\r|\n/).length + 1;
  const located = (line: string) => {
    const match = /^fuzz\.yml:([1-9]\d*): \S/.exec(line);
    return match !== null && Number(match[1]) <= maxLine;
  };

  if (error instanceof ConfigError) {
    const bad = error.problems.find((p) => !located(p));
    if (error.problems.length === 0) return { broken: "ConfigError with no problems" };
    if (bad !== undefined) {
      return { broken: `problem without a valid fuzz.yml:<line>: prefix: ${bad.slice(0, 200)}` };
    }
    if (error.exitCode !== 2) return { broken: `ConfigError exit code ${error.exitCode}` };
    return { outcome: { kind: "config-error", ms, plain: plain !== undefined } };
  }

  const outcome: Outcome = { kind: "config", ms, plain: plain !== undefined };
  return configViolation(config!, located) ?? { outcome };
}

/** A config that loaded must be one the dispatcher and workers can use as it is. */
function configViolation(
  config: DtestConfig,
  located: (line: string) => boolean,
): { broken: string } | undefined {
  const bad = config.warnings.find((w) => !located(w));
  if (bad !== undefined) {
    return { broken: `warning without a valid fuzz.yml:<line>: prefix: ${bad.slice(0, 200)}` };
  }

  const unrouted = config.scenario.tasks.find((e) => !Object.hasOwn(config.routing, e.task));
  if (unrouted) return { broken: `scenario sends ${unrouted.task}, which is not routed` };

  const badQueue = Object.values(config.routing).find((q) => typeof q !== "string" || q === "");
  if (badQueue !== undefined) return { broken: `a route to ${String(badQueue)}` };

  try {
    // Arguments travel as JSON, so a loaded config must serialise (no cycles through aliases).
    JSON.stringify(config);
  } catch (err) {
    return { broken: `the loaded config does not serialise: ${(err as Error).message}` };
  }
  return undefined;
}

interface Failure {
  seed: number;
  case: number;
  mutations: string[];
  broken: string;
  text: string;
}

/** Runs `cases` mutated copies of `base`; returns every failure and the counts. */
function fuzz(base: string, seed: number, cases: number) {
  const r = new Random(seed);
  const failures: Failure[] = [];
  const counts = { config: 0, "config-error": 0, plain: 0 };
  let slowest = 0;

  for (let i = 0; i < cases; i++) {
    const mutations = Array.from({ length: 1 + r.int(4) }, () => r.pick(MUTATION_NAMES));
    const text = mutations.reduce((current, name) => MUTATIONS[name]!(r, current), base);
    const { broken, outcome } = violation(text);

    if (broken !== undefined) failures.push({ seed, case: i, mutations, broken, text });
    if (outcome) {
      counts[outcome.kind]++;
      if (outcome.plain) counts.plain++;
      slowest = Math.max(slowest, outcome.ms);
    }
  }
  return { failures, counts, slowest };
}

function report(label: string, seed: number, result: ReturnType<typeof fuzz>, ms: number): void {
  const { counts, slowest, failures } = result;
  console.log(
    `config fuzz (${label}): seed ${seed}, ${CASES} cases in ${ms.toFixed(0)} ms, ` +
      `${counts.config} loaded, ${counts["config-error"]} refused, ` +
      `${counts.plain} read by the plain-YAML fast path, ` +
      `slowest ${slowest.toFixed(1)} ms, ` +
      `${failures.length} broken (replay with DTEST_FUZZ_SEED=${seed})`,
  );
}

/** The first few failures, shortened so that a report stays readable. */
function shown(failures: Failure[]) {
  return failures.slice(0, 3).map((f) => ({ ...f, text: JSON.stringify(f.text.slice(0, 2000)) }));
}

describe("config loading under random mutation", () => {
  test("mutations of the seed test-config.yml load or fail with located problems", () => {
    const started = performance.now();
    const result = fuzz(SEED_CONFIG, SEED, CASES);
    report("seed config", SEED, result, performance.now() - started);

    expect(shown(result.failures)).toEqual([]);
    // Both outcomes must occur, or the mutations are too weak (or too strong) to test anything.
    expect(result.counts.config).toBeGreaterThan(0);
    expect(result.counts["config-error"]).toBeGreaterThan(0);
    // Many mutations of a plain file stay plain: the fast path must be compared, not skipped.
    expect(result.counts.plain).toBeGreaterThan(CASES / 10);
  }, 60_000);

  test("mutations of a config using every section load or fail with located problems", () => {
    const started = performance.now();
    const seed = (SEED + 1) >>> 0;
    const result = fuzz(RICH_CONFIG, seed, CASES);
    report("rich config", seed, result, performance.now() - started);

    expect(shown(result.failures)).toEqual([]);
    expect(result.counts.config).toBeGreaterThan(0);
    expect(result.counts["config-error"]).toBeGreaterThan(0);
  }, 60_000);

  test("the unmutated configs load, so that mutations start from valid text", () => {
    expect(parseConfig(SEED_CONFIG, "fuzz.yml").warnings).toEqual([]);
    const rich = parseConfig(RICH_CONFIG, "fuzz.yml");
    expect(Object.keys(rich.tasks).sort()).toEqual(["ping", "task_a", "task_b", "unit_tests"]);
    expect(rich.warnings).toEqual([]);
  });

  test("the generator replays: one seed gives the same mutated texts", () => {
    const texts = (seed: number) => {
      const r = new Random(seed);
      return Array.from({ length: 20 }, () => MUTATIONS[r.pick(MUTATION_NAMES)]!(r, SEED_CONFIG));
    };
    expect(texts(SEED)).toEqual(texts(SEED));
    expect(texts(SEED)).not.toEqual(texts(SEED + 1));
  });
});

/** Problems from parsing `text` as fuzz.yml; fails the test if it loads. */
function problemsOf(text: string): string[] {
  try {
    parseConfig(text, "fuzz.yml");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("cases the fuzzing found", () => {
  test("an alias inside its own anchor is a located problem, not a JSON cycle error", () => {
    const text = SEED_CONFIG.replace("password: guest", "password: &y {k: *y}");
    expect(problemsOf(text)).toEqual([
      expect.stringMatching(/^fuzz\.yml:10: rabbitmq\.password\.k refers to \*y inside &y/),
    ]);
  });

  test('a null key is shown as "" in warnings, so the line still names a field', () => {
    const config = parseConfig(SEED_CONFIG.replace("test_scenario:", "~:"), "fuzz.yml");
    expect(config.warnings).toEqual([expect.stringMatching(/^fuzz\.yml:4: "" is not a known key/)]);
  });

  test("task names that are members of every JavaScript object are ordinary names", () => {
    const text =
      SEED_CONFIG.replace("task_b: queue_b", "task_b: queue_b\n  constructor: queue_c") +
      "tasks:\n  constructor: {kind: noop}\n";
    const config = parseConfig(text, "fuzz.yml");

    expect(config.tasks.constructor).toMatchObject({ kind: "noop" });
    expect(config.routing.toString).toBeUndefined();
    const protoRoute = SEED_CONFIG.replace("task_b: queue_b", "task_b: queue_b\n  __proto__: q");
    const unrouted = `${protoRoute}tasks:\n  hasOwnProperty: {kind: noop}\n`;
    expect(problemsOf(unrouted)).toEqual([
      expect.stringMatching(/^fuzz\.yml:22: tasks\.hasOwnProperty is not routed/),
    ]);
  });

  test("a scalar anchor used sixty times still loads: only large expansions are refused", () => {
    const routes = Array.from({ length: 60 }, (_, i) => `  t${i}: *q\n`).join("");
    const tasks = Array.from({ length: 60 }, (_, i) => `  t${i}: {kind: noop}\n`).join("");
    const text = `task_routing:\n  task_a: &q queue_a\n${routes}tasks:\n${tasks}`;
    expect(parseConfig(text, "fuzz.yml").routing.t59).toBe("queue_a");
  });
});
