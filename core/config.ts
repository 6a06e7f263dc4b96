/**
 * test-config.yml in, a validated DtestConfig out. Every problem in a file is collected and
 * reported at once, each with its `file:line`, the field path, the bad value and the fix.
 */
import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document } from "yaml";

import { ConfigError } from "./errors.ts";

export const DEFAULT_CONFIG_FILE = "test-config.yml";

/** Larger files are refused before parsing: a scenario is a page of YAML, not megabytes. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const QUEUE_NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;

export interface RetryConfig {
  maxRetries: number;
  /** Seconds before the first retry. */
  retryDelay: number;
  retryBackoff: boolean;
  /** Upper bound of a backoff delay, seconds. */
  retryBackoffMax: number;
  retryJitter: boolean;
}

export interface Expectation {
  exitCode?: number;
  stdoutContains?: string;
  stderrContains?: string;
  resultContains?: string;
}

interface TaskCommon {
  name: string;
  /** Seconds a run may take before it is stopped and counted as failed. */
  timeout?: number;
  maxRetries?: number;
  expect?: Expectation;
}

export interface HelloTask extends TaskCommon {
  kind: "hello";
  message: string;
  /** Seconds the task takes. */
  duration: number;
}

export interface NoopTask extends TaskCommon {
  kind: "noop";
}

export interface ExecTask extends TaskCommon {
  kind: "exec";
  command: string[];
  cwd?: string;
  env: Record<string, string>;
  /** When true, a message's positional args are appended to `command` as argv items. */
  acceptArgs: boolean;
}

export type TaskDef = HelloTask | NoopTask | ExecTask;

export const TASK_KINDS = ["hello", "noop", "exec"] as const;

export interface ScenarioEntry {
  task: string;
  count: number;
  args: unknown[];
  kwargs: Record<string, unknown>;
}

export interface BrokerSettings {
  host: string;
  port: number;
  username: string;
  password: string;
  vhost: string;
}

export interface DtestConfig {
  file: string;
  system: { description: string; workers: number };
  scenario: { description: string; tasks: ScenarioEntry[] };
  rabbitmq: BrokerSettings;
  routing: Record<string, string>;
  retry: RetryConfig;
  tasks: Record<string, TaskDef>;
  warnings: string[];
}

const SECTIONS: Record<string, string[]> = {
  "": ["system", "test_scenario", "rabbitmq", "task_routing", "retry_config", "tasks"],
  system: ["description", "workers"],
  test_scenario: ["description", "tasks"],
  rabbitmq: ["host", "port", "username", "password", "vhost"],
  retry_config: ["max_retries", "retry_delay", "retry_backoff", "retry_backoff_max", "retry_jitter"],
};

const TASK_KEYS: Record<string, string[]> = {
  common: ["kind", "timeout", "max_retries", "expect"],
  hello: ["message", "duration"],
  noop: [],
  exec: ["command", "cwd", "env", "accept_args"],
};

const EXPECT_KEYS = ["exit_code", "stdout_contains", "stderr_contains", "result_contains"];

/** The built-in tasks of the seed scenario, used when `tasks:` does not define them. */
export function defaultTask(name: string): TaskDef | undefined {
  if (name === "task_a") {
    return { name, kind: "hello", message: "Hello from Task A", duration: 0.1 };
  }
  if (name === "task_b") {
    return { name, kind: "hello", message: "Hello from Task B", duration: 0.2 };
  }
  return undefined;
}

type Path = (string | number)[];

function showPath(path: Path): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

function showValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `a ${typeof value}`;
}

/** Collects located problems while walking the parsed document. */
class Checker {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];

  constructor(
    readonly file: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  line(path: Path): number {
    for (let depth = path.length; depth > 0; depth--) {
      const node = this.doc.getIn(path.slice(0, depth), true) as { range?: number[] } | undefined;
      const offset = node?.range?.[0] ?? this.keyOffset(path.slice(0, depth));
      if (offset !== undefined) return this.lines.linePos(offset).line;
    }
    return 1;
  }

  /** Where a key sits, for values that are empty (`key:` with nothing after it). */
  private keyOffset(path: Path): number | undefined {
    const parent = path.length === 1 ? this.doc.contents : this.doc.getIn(path.slice(0, -1), true);
    if (!isMap(parent)) return undefined;

    const pair = parent.items.find((item) => isPair(item) && isScalar(item.key) && item.key.value === path.at(-1));
    return isPair(pair) && isScalar(pair.key) ? pair.key.range?.[0] : undefined;
  }

  problem(path: Path, message: string, value: unknown, fix: string): void {
    const got = value === undefined ? "it is missing" : `got ${showValue(value)}`;
    this.fact(path, `${message} (${got})`, fix);
  }

  /** A problem with no single bad value, such as a task that nothing routes. */
  fact(path: Path, message: string, fix: string): void {
    this.problems.push(`${this.file}:${this.line(path)}: ${showPath(path)} ${message}; ${fix}`);
  }

  /** Problems in file order, so a reader can walk down the file once. */
  sorted(): string[] {
    const lineOf = (p: string) => Number(p.slice(this.file.length + 1).split(":")[0]);
    return [...this.problems].sort((a, b) => lineOf(a) - lineOf(b));
  }

  warn(path: Path, message: string): void {
    this.warnings.push(`${this.file}:${this.line(path)}: ${showPath(path)} ${message}`);
  }

  mapping(path: Path, value: unknown, required = false): Record<string, unknown> | undefined {
    if (value === undefined || (value === null && !required)) return undefined;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
    this.problem(path, `must be a mapping of keys to values`, value, `write it as "key: value" lines`);
    return undefined;
  }

  unknownKeys(path: Path, section: Record<string, unknown>, known: string[]): void {
    for (const key of Object.keys(section)) {
      if (!known.includes(key)) {
        this.warn([...path, key], `is not a known key and is ignored (known: ${known.join(", ")})`);
      }
    }
  }

  string(path: Path, value: unknown, fallback: string, allowEmpty = true): string {
    if (value === undefined || value === null) return fallback;
    if (typeof value === "string" && (allowEmpty || value.length > 0)) return value;
    if (typeof value === "number" && allowEmpty) return String(value);
    this.problem(path, "must be a non-empty string", value, `quote the text, e.g. "${fallback || "text"}"`);
    return fallback;
  }

  integer(path: Path, value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
    if (value === undefined || value === null) return fallback;
    if (typeof value === "number" && Number.isInteger(value) && value >= min && value <= max) {
      return value;
    }
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    this.problem(path, `must be an integer ${range}`, value, `set ${showPath(path)} to a whole number ${range}`);
    return fallback;
  }

  seconds(path: Path, value: unknown, fallback: number, positive = false): number {
    if (value === undefined || value === null) return fallback;
    if (typeof value === "number" && Number.isFinite(value) && (positive ? value > 0 : value >= 0)) {
      return value;
    }
    const bound = positive ? "> 0" : "≥ 0";
    this.problem(path, `must be a number of seconds ${bound}`, value, `write e.g. ${showPath(path)}: 1.5`);
    return fallback;
  }

  boolean(path: Path, value: unknown, fallback: boolean): boolean {
    if (value === undefined || value === null) return fallback;
    if (typeof value === "boolean") return value;
    this.problem(path, "must be true or false", value, "write true or false without quotes");
    return fallback;
  }
}

function readRetry(c: Checker, raw: unknown): RetryConfig {
  const section = c.mapping(["retry_config"], raw) ?? {};
  c.unknownKeys(["retry_config"], section, SECTIONS.retry_config!);

  const at = (key: string) => ["retry_config", key];
  return {
    maxRetries: c.integer(at("max_retries"), section.max_retries, 3, 0, 1000),
    retryDelay: c.seconds(at("retry_delay"), section.retry_delay, 60),
    retryBackoff: c.boolean(at("retry_backoff"), section.retry_backoff, false),
    retryBackoffMax: c.seconds(at("retry_backoff_max"), section.retry_backoff_max, 600),
    retryJitter: c.boolean(at("retry_jitter"), section.retry_jitter, false),
  };
}

function readBroker(c: Checker, raw: unknown): BrokerSettings {
  const section = c.mapping(["rabbitmq"], raw) ?? {};
  c.unknownKeys(["rabbitmq"], section, SECTIONS.rabbitmq!);

  const at = (key: string) => ["rabbitmq", key];
  return {
    host: c.string(at("host"), section.host, "localhost", false),
    port: c.integer(at("port"), section.port, 5672, 1, 65535),
    username: c.string(at("username"), section.username, "guest"),
    password: c.string(at("password"), section.password, "guest"),
    vhost: c.string(at("vhost"), section.vhost, "/", false),
  };
}

function readRouting(c: Checker, raw: unknown): Record<string, string> {
  if (raw === undefined || raw === null) {
    c.fact(["task_routing"], "must route at least one task to a queue",
      'add e.g. "task_routing:\\n  task_a: queue_a"');
    return {};
  }

  const section = c.mapping(["task_routing"], raw, true);
  if (!section) return {};

  const routing: Record<string, string> = {};
  for (const [task, queue] of Object.entries(section)) {
    if (typeof queue === "string" && QUEUE_NAME.test(queue) && !queue.startsWith("amq.")) {
      routing[task] = queue;
      continue;
    }
    c.problem(["task_routing", task], "must name a queue (letters, digits, _ . : -; not amq.*)",
      queue, `write e.g. "${task}: queue_a"`);
  }

  if (Object.keys(section).length === 0) {
    c.problem(["task_routing"], "must route at least one task to a queue", section,
      'add e.g. "task_a: queue_a" under task_routing');
  }
  return routing;
}

function readExpect(c: Checker, path: Path, raw: unknown, kind: string): Expectation | undefined {
  const section = c.mapping(path, raw);
  if (!section) return undefined;
  c.unknownKeys(path, section, EXPECT_KEYS);

  const text = (key: string) => {
    const value = section[key];
    return value === undefined ? undefined : c.string([...path, key], value, "", false);
  };
  const expect: Expectation = {
    stdoutContains: text("stdout_contains"),
    stderrContains: text("stderr_contains"),
    resultContains: text("result_contains"),
  };

  if (section.exit_code !== undefined) {
    if (kind !== "exec") {
      c.problem([...path, "exit_code"], "applies only to exec tasks", section.exit_code,
        "remove it, or use result_contains for this kind");
    }
    expect.exitCode = c.integer([...path, "exit_code"], section.exit_code, 0, 0, 255);
  }
  return expect;
}

function readCommand(c: Checker, path: Path, raw: unknown): string[] {
  const ok = Array.isArray(raw) && raw.length > 0 && raw.every((a) => typeof a === "string" || typeof a === "number");
  if (ok) return (raw as unknown[]).map(String);

  c.problem(path, "must be a non-empty list of program and arguments (it is never run through a shell)",
    raw, 'write e.g. command: ["pytest", "-q", "tests/"]');
  return [];
}

function readEnv(c: Checker, path: Path, raw: unknown): Record<string, string> {
  const section = c.mapping(path, raw) ?? {};
  const env: Record<string, string> = {};

  for (const [key, value] of Object.entries(section)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      env[key] = String(value);
    } else {
      c.problem([...path, key], "must be a string", value, `quote the value, e.g. ${key}: "1"`);
    }
  }
  return env;
}

function readTask(c: Checker, name: string, raw: unknown): TaskDef | undefined {
  const path = ["tasks", name];
  const section = c.mapping(path, raw, true);
  if (!section) return undefined;

  const kind = section.kind ?? defaultTask(name)?.kind;
  if (typeof kind !== "string" || !(TASK_KINDS as readonly string[]).includes(kind)) {
    c.problem([...path, "kind"], `must be one of ${TASK_KINDS.join(", ")}`, kind,
      `set tasks.${name}.kind to hello, noop or exec`);
    return undefined;
  }
  c.unknownKeys(path, section, [...TASK_KEYS.common!, ...TASK_KEYS[kind]!]);

  const common = {
    name,
    timeout: section.timeout === undefined ? undefined : c.seconds([...path, "timeout"], section.timeout, 60, true),
    maxRetries: section.max_retries === undefined ? undefined : c.integer([...path, "max_retries"], section.max_retries, 0, 0, 1000),
    expect: readExpect(c, [...path, "expect"], section.expect, kind),
  };

  if (kind === "noop") return { ...common, kind };
  if (kind === "hello") {
    const fallback = defaultTask(name) as HelloTask | undefined;
    return {
      ...common,
      kind,
      message: c.string([...path, "message"], section.message, fallback?.message ?? `Hello from ${name}`),
      duration: c.seconds([...path, "duration"], section.duration, fallback?.duration ?? 0.1),
    };
  }
  return {
    ...common,
    kind: "exec",
    command: readCommand(c, [...path, "command"], section.command),
    cwd: section.cwd === undefined ? undefined : c.string([...path, "cwd"], section.cwd, ".", false),
    env: readEnv(c, [...path, "env"], section.env),
    acceptArgs: c.boolean([...path, "accept_args"], section.accept_args, false),
  };
}

function readTasks(c: Checker, raw: unknown, routing: Record<string, string>): Record<string, TaskDef> {
  const tasks: Record<string, TaskDef> = {};
  const section = c.mapping(["tasks"], raw) ?? {};

  for (const [name, value] of Object.entries(section)) {
    const task = readTask(c, name, value);
    if (task) tasks[name] = task;
    if (!(name in routing)) {
      c.fact(["tasks", name], "is not routed to any queue",
        `add "${name}: <queue>" under task_routing`);
    }
  }

  for (const name of Object.keys(routing)) {
    if (name in section) continue;

    const fallback = defaultTask(name);
    if (fallback) tasks[name] = fallback;
    else {
      c.fact(["task_routing", name], "has no definition under tasks:",
        `add "tasks:\\n  ${name}:\\n    kind: hello" (or noop, exec)`);
    }
  }
  return tasks;
}

function readEntry(c: Checker, path: Path, raw: unknown, routing: Record<string, string>): ScenarioEntry | undefined {
  const section = typeof raw === "string" ? { task: raw } : c.mapping(path, raw, true);
  if (!section) return undefined;
  c.unknownKeys(path, section, ["task", "count", "args", "kwargs"]);

  const task = section.task;
  if (typeof task !== "string" || !(task in routing)) {
    const known = Object.keys(routing).join(", ") || "none";
    c.problem([...path, "task"], `must name a routed task (routed: ${known})`, task,
      "route it under task_routing or fix the name");
    return undefined;
  }

  const args = section.args ?? [];
  if (!Array.isArray(args)) {
    c.problem([...path, "args"], "must be a list", args, "write e.g. args: [1, 2]");
  }
  const kwargs = c.mapping([...path, "kwargs"], section.kwargs) ?? {};

  return {
    task,
    count: c.integer([...path, "count"], section.count, 1, 1, 1_000_000),
    args: Array.isArray(args) ? args : [],
    kwargs,
  };
}

function readScenario(c: Checker, raw: unknown, routing: Record<string, string>) {
  const section = c.mapping(["test_scenario"], raw) ?? {};
  c.unknownKeys(["test_scenario"], section, SECTIONS.test_scenario!);

  const description = c.string(["test_scenario", "description"], section.description, "dtest scenario");
  const entries = section.tasks;
  if (entries === undefined || entries === null) {
    const tasks = Object.keys(routing).map((task) => ({ task, count: 1, args: [], kwargs: {} }));
    return { description, tasks };
  }

  if (!Array.isArray(entries) || entries.length === 0) {
    c.problem(["test_scenario", "tasks"], "must be a non-empty list of tasks to send", entries,
      'write e.g. "tasks:\\n    - task: task_a\\n      count: 2"');
    return { description, tasks: [] };
  }

  const tasks = entries
    .map((entry, i) => readEntry(c, ["test_scenario", "tasks", i], entry, routing))
    .filter((entry): entry is ScenarioEntry => entry !== undefined);
  return { description, tasks };
}

function readSystem(c: Checker, raw: unknown, routing: Record<string, string>) {
  const section = c.mapping(["system"], raw) ?? {};
  c.unknownKeys(["system"], section, SECTIONS.system!);

  const queues = new Set(Object.values(routing)).size;
  return {
    description: c.string(["system", "description"], section.description, "dtest"),
    workers: c.integer(["system", "workers"], section.workers, Math.max(queues, 1), 1, 100_000),
  };
}

function tooLarge(file: string, size: number): ConfigError {
  return new ConfigError(file, [
    `${file}:1: the file is ${size} bytes; a config may be at most ${MAX_CONFIG_BYTES} bytes`,
  ], "trim the file: a scenario needs only a few kilobytes of YAML");
}

function decodeFile(file: string, bytes: Uint8Array): string {
  if (bytes.length > MAX_CONFIG_BYTES) throw tooLarge(file, bytes.length);

  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // The decoder's own message has no position; find the first bad byte for the report.
    const offset = firstInvalidUtf8(bytes);
    const line = new TextDecoder().decode(bytes.subarray(0, offset)).split("\n").length;
    throw new ConfigError(file, [`${file}:${line}: the file is not valid UTF-8 (byte ${offset})`],
      "save the file as UTF-8");
  }
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let low = 0;
  let high = bytes.length;

  // Binary search for the shortest prefix that fails to decode.
  while (low < high) {
    const mid = (low + high) >> 1;
    try {
      decoder.decode(bytes.subarray(0, mid + 1));
      low = mid + 1;
    } catch {
      high = mid;
    }
  }
  return low;
}

/** Parses and validates config text; throws ConfigError listing every problem found. */
export function parseConfig(text: string, file = DEFAULT_CONFIG_FILE): DtestConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });

  if (doc.errors.length > 0) {
    const problems = doc.errors.map((e) => {
      const line = e.linePos?.[0]?.line ?? 1;
      return `${file}:${line}: invalid YAML: ${e.message.split("\n")[0]}`;
    });
    throw new ConfigError(file, problems, "fix the YAML syntax at the lines shown");
  }

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 50 });
  } catch (cause) {
    throw new ConfigError(file, [`${file}:1: the YAML cannot be expanded: ${(cause as Error).message}`],
      "remove the repeated aliases (*name); write the values out instead");
  }

  const c = new Checker(file, doc, lines);
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    c.problem(["(top level)"], "must be a mapping with task_routing and the other sections", typeName(raw),
      "start from the default test-config.yml");
    throw new ConfigError(file, c.problems);
  }

  const top = raw as Record<string, unknown>;
  c.unknownKeys([], top, SECTIONS[""]!);

  const routing = readRouting(c, top.task_routing);
  const config: DtestConfig = {
    file,
    system: readSystem(c, top.system, routing),
    scenario: readScenario(c, top.test_scenario, routing),
    rabbitmq: readBroker(c, top.rabbitmq),
    routing,
    retry: readRetry(c, top.retry_config),
    tasks: readTasks(c, top.tasks, routing),
    warnings: c.warnings,
  };

  if (c.problems.length > 0) throw new ConfigError(file, c.sorted(), "fix each line listed above");
  return config;
}

/** Reads and validates a config file; throws ConfigError (exit code 2) on any problem. */
export async function loadConfig(file = DEFAULT_CONFIG_FILE): Promise<DtestConfig> {
  const handle = Bun.file(file);
  if (!(await handle.exists())) {
    throw new ConfigError(file, [`${file}: no such file`],
      `run from the folder that holds ${DEFAULT_CONFIG_FILE}, or pass --config PATH`);
  }

  if (handle.size > MAX_CONFIG_BYTES) throw tooLarge(file, handle.size);

  const bytes = new Uint8Array(await handle.arrayBuffer());
  return parseConfig(decodeFile(file, bytes), file);
}

/** The distinct queues the routing table uses, in first-seen order. */
export function routedQueues(config: DtestConfig): string[] {
  return [...new Set(Object.values(config.routing))];
}

/** The queues the scenario actually sends to. */
export function scenarioQueues(config: DtestConfig): string[] {
  return [...new Set(config.scenario.tasks.map((entry) => config.routing[entry.task]!))];
}
