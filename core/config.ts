/**
 * test-config.yml in, a validated DtestConfig out. Every problem in a file is collected and
 * reported at once, each with its `file:line`, the field path, the bad value and the fix.
 */
import {
  Composer,
  CST,
  isAlias,
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  Parser,
  type Document,
  type Pair,
  type YAMLMap,
} from "yaml";

import { ConfigError } from "./errors.ts";
import { readPlainYaml } from "./plain-yaml.ts";
import { shortTaskName } from "./protocol.ts";

export const DEFAULT_CONFIG_FILE = "test-config.yml";

/** Larger files are refused before parsing: a scenario is a page of YAML, not megabytes. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

const QUEUE_NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;

/**
 * Deeper YAML is refused before it is built: a config needs five or six levels, and the YAML
 * library builds nodes recursively, so thousands of levels would exhaust the stack.
 */
const MAX_DEPTH = 64;

/**
 * How many values aliases may add beyond what the text spells out. Aliases are shared when the
 * YAML is built, but validation walks and prints values, so a few nested aliases must not stand
 * for billions of them.
 */
const MAX_ALIAS_VALUES = 10_000;

/** A config holds plain values; other tags (!!binary, !!python/object, !custom) are refused. */
const PLAIN_TAGS = new Set(
  ["map", "seq", "str", "null", "bool", "int", "float"].map((t) => `tag:yaml.org,2002:${t}`),
);

/** More YAML syntax errors than this are mostly echoes of the first ones. */
const MAX_SYNTAX_PROBLEMS = 10;

/** A file with more problems than this is not the config its author meant; list the first ones. */
const MAX_PROBLEMS = 100;

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
  retry_config: [
    "max_retries",
    "retry_delay",
    "retry_backoff",
    "retry_backoff_max",
    "retry_jitter",
  ],
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
  const short = shortTaskName(name);
  if (short === "task_a") {
    return { name, kind: "hello", message: "Hello from Task A", duration: 0.1 };
  }
  if (short === "task_b") {
    return { name, kind: "hello", message: "Hello from Task B", duration: 0.2 };
  }
  return undefined;
}

type Path = (string | number)[];

/**
 * A map keyed by names from the file. It has no prototype, so a task called "constructor" or
 * "__proto__" is looked up like any other name instead of finding Object's own members.
 */
function dictionary<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

function showPath(path: Path): string {
  return path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? showKey(p) : `.${showKey(p)}`))
    .join("");
}

/** A key as written, quoted when blank, padded or holding control characters; cut when long. */
function showKey(key: string): string {
  const text = key === "" || /^\s|\s$|[\x00-\x1f\x7f]/.test(key) ? JSON.stringify(key) : key;
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function showValue(value: unknown): string {
  // JSON has no Infinity or NaN and would print them as null, which reads as a missing value.
  const finite = typeof value !== "number" || Number.isFinite(value);
  const text = finite ? (JSON.stringify(value) ?? String(value)) : String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** A mapping key as the built config sees it: YAML's null key becomes "", 5 becomes "5". */
function keyText(key: unknown): string | undefined {
  if (!isScalar(key)) return undefined;
  return key.value === null || key.value === undefined ? "" : String(key.value);
}

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  return `a ${typeof value}`;
}

/** The YAML a config was composed from, for locating what the checks find. */
interface Source {
  doc: Document;
  lines: LineCounter;
}

/**
 * Thrown by a Checker that has no Source when it is asked for a line: the config was read by
 * the plain-YAML fast path, and anything worth saying about it is worth a full parse to locate.
 */
const NEEDS_SOURCE = Symbol("needs the YAML source to locate a problem");

/** Collects located problems while walking the parsed document. */
class Checker {
  readonly problems: string[] = [];
  readonly warnings: string[] = [];

  /** Each mapping's pairs by key, built on first use so that locating n problems stays linear. */
  private readonly pairIndex = new WeakMap<YAMLMap, Map<string, Pair>>();

  constructor(
    readonly file: string,
    private readonly source?: Source,
  ) {}

  /** The line of the key (or list item) a path names, else of its nearest ancestor; 1 when none. */
  line(path: Path): number {
    if (!this.source) throw NEEDS_SOURCE;
    let node: unknown = this.source.doc.contents;
    let offset = 0;

    for (const step of path) {
      if (isMap(node)) {
        const pair = this.pairOf(node, String(step));
        const start = (pair?.key as { range?: number[] } | undefined)?.range?.[0];
        if (!pair || start === undefined) break;
        offset = start;
        node = pair.value;
      } else if (isSeq(node) && typeof step === "number" && isNode(node.items[step])) {
        node = node.items[step];
        offset = (node as { range: number[] }).range[0]!;
      } else {
        break;
      }
    }
    return this.lineAt(offset);
  }

  lineAt(offset: number): number {
    if (!this.source) throw NEEDS_SOURCE;
    return this.source.lines.linePos(offset).line;
  }

  private pairOf(map: YAMLMap, key: string): Pair | undefined {
    let index = this.pairIndex.get(map);
    if (!index) {
      index = new Map();
      for (const pair of map.items) {
        const text = keyText(pair.key);
        if (text !== undefined && !index.has(text)) index.set(text, pair);
      }
      this.pairIndex.set(map, index);
    }
    return index.get(key);
  }

  problem(path: Path, message: string, value: unknown, fix: string): void {
    const got = value === undefined ? "it is missing" : `got ${showValue(value)}`;
    this.fact(path, `${message} (${got})`, fix);
  }

  /** A problem with no single bad value, such as a task that nothing routes. */
  fact(path: Path, message: string, fix: string): void {
    this.problems.push(`${this.file}:${this.line(path)}: ${showPath(path)} ${message}; ${fix}`);
  }

  /** A problem found in the YAML nodes themselves, located by the node's own offset. */
  node(offset: number, path: Path, message: string, fix: string): void {
    const where = path.length > 0 ? showPath(path) : "(top level)";
    this.problems.push(`${this.file}:${this.lineAt(offset)}: ${where} ${message}; ${fix}`);
  }

  /** Problems in file order, so a reader can walk down the file once; at most MAX_PROBLEMS. */
  sorted(): string[] {
    const lineOf = (p: string) => Number(p.slice(this.file.length + 1).split(":")[0]);
    const all = [...this.problems].sort((a, b) => lineOf(a) - lineOf(b));
    if (all.length <= MAX_PROBLEMS) return all;

    const rest = all.length - MAX_PROBLEMS;
    const from = lineOf(all[MAX_PROBLEMS]!);
    const more = `${this.file}:${from}: ${rest} more problems from this line on`;
    return [...all.slice(0, MAX_PROBLEMS), more];
  }

  warn(path: Path, message: string): void {
    this.warnings.push(`${this.file}:${this.line(path)}: ${showPath(path)} ${message}`);
  }

  mapping(path: Path, value: unknown, required = false): Record<string, unknown> | undefined {
    if (value === undefined || (value === null && !required)) return undefined;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      return value as Record<string, unknown>;
    }
    this.problem(
      path,
      `must be a mapping of keys to values`,
      value,
      `write it as "key: value" lines`,
    );
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
    this.problem(
      path,
      "must be a non-empty string",
      value,
      `quote the text, e.g. "${fallback || "text"}"`,
    );
    return fallback;
  }

  integer(
    path: Path,
    value: unknown,
    fallback: number,
    min: number,
    max = Number.MAX_SAFE_INTEGER,
  ): number {
    if (value === undefined || value === null) return fallback;
    if (typeof value === "number" && Number.isInteger(value) && value >= min && value <= max) {
      return value;
    }
    const range = max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`;
    this.problem(
      path,
      `must be an integer ${range}`,
      value,
      `set ${showPath(path)} to a whole number ${range}`,
    );
    return fallback;
  }

  seconds(path: Path, value: unknown, fallback: number, positive = false): number {
    if (value === undefined || value === null) return fallback;
    if (
      typeof value === "number" &&
      Number.isFinite(value) &&
      (positive ? value > 0 : value >= 0)
    ) {
      return value;
    }
    const bound = positive ? "> 0" : "≥ 0";
    this.problem(
      path,
      `must be a number of seconds ${bound}`,
      value,
      `write e.g. ${showPath(path)}: 1.5`,
    );
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
    c.fact(
      ["task_routing"],
      "must route at least one task to a queue",
      'add e.g. "task_routing:\\n  task_a: queue_a"',
    );
    return {};
  }

  const section = c.mapping(["task_routing"], raw, true);
  if (!section) return {};

  const routing = dictionary<string>();
  for (const [task, queue] of Object.entries(section)) {
    if (typeof queue === "string" && QUEUE_NAME.test(queue) && !queue.startsWith("amq.")) {
      routing[task] = queue;
      continue;
    }
    c.problem(
      ["task_routing", task],
      "must name a queue (letters, digits, _ . : -; not amq.*)",
      queue,
      `write e.g. "${showKey(task)}: queue_a"`,
    );
  }

  if (Object.keys(section).length === 0) {
    c.problem(
      ["task_routing"],
      "must route at least one task to a queue",
      section,
      'add e.g. "task_a: queue_a" under task_routing',
    );
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
      c.problem(
        [...path, "exit_code"],
        "applies only to exec tasks",
        section.exit_code,
        "remove it, or use result_contains for this kind",
      );
    }
    expect.exitCode = c.integer([...path, "exit_code"], section.exit_code, 0, 0, 255);
  }
  return expect;
}

function readCommand(c: Checker, path: Path, raw: unknown): string[] {
  const ok =
    Array.isArray(raw) &&
    raw.length > 0 &&
    raw.every((a) => typeof a === "string" || typeof a === "number");
  if (ok) return (raw as unknown[]).map(String);

  c.problem(
    path,
    "must be a non-empty list of program and arguments (it is never run through a shell)",
    raw,
    'write e.g. command: ["pytest", "-q", "tests/"]',
  );
  return [];
}

function readEnv(c: Checker, path: Path, raw: unknown): Record<string, string> {
  const section = c.mapping(path, raw) ?? {};
  const env = dictionary<string>();

  for (const [key, value] of Object.entries(section)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      env[key] = String(value);
    } else {
      c.problem(
        [...path, key],
        "must be a string",
        value,
        `quote the value, e.g. ${showKey(key)}: "1"`,
      );
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
    c.problem(
      [...path, "kind"],
      `must be one of ${TASK_KINDS.join(", ")}`,
      kind,
      `set ${showPath([...path, "kind"])} to hello, noop or exec`,
    );
    return undefined;
  }
  c.unknownKeys(path, section, [...TASK_KEYS.common!, ...TASK_KEYS[kind]!]);

  const common = {
    name,
    timeout:
      section.timeout === undefined
        ? undefined
        : c.seconds([...path, "timeout"], section.timeout, 60, true),
    maxRetries:
      section.max_retries === undefined
        ? undefined
        : c.integer([...path, "max_retries"], section.max_retries, 0, 0, 1000),
    expect: readExpect(c, [...path, "expect"], section.expect, kind),
  };

  if (kind === "noop") return { ...common, kind };
  if (kind === "hello") {
    const fallback = defaultTask(name) as HelloTask | undefined;
    return {
      ...common,
      kind,
      message: c.string(
        [...path, "message"],
        section.message,
        fallback?.message ?? `Hello from ${name}`,
      ),
      duration: c.seconds([...path, "duration"], section.duration, fallback?.duration ?? 0.1),
    };
  }
  return {
    ...common,
    kind: "exec",
    command: readCommand(c, [...path, "command"], section.command),
    cwd:
      section.cwd === undefined ? undefined : c.string([...path, "cwd"], section.cwd, ".", false),
    env: readEnv(c, [...path, "env"], section.env),
    acceptArgs: c.boolean([...path, "accept_args"], section.accept_args, false),
  };
}

function readTasks(
  c: Checker,
  raw: unknown,
  routing: Record<string, string>,
): Record<string, TaskDef> {
  const tasks = dictionary<TaskDef>();
  const section = c.mapping(["tasks"], raw) ?? {};

  // A set, not a scan of the routes per task: a file may define and route thousands of tasks.
  const routed = new Set(Object.keys(routing).flatMap((key) => [key, shortTaskName(key)]));
  for (const [name, value] of Object.entries(section)) {
    const task = readTask(c, name, value);
    if (task) tasks[name] = task;
    if (!routed.has(name)) {
      c.fact(
        ["tasks", name],
        "is not routed to any queue",
        `add ${showKey(name)}: <queue> under task_routing`,
      );
    }
  }

  for (const name of Object.keys(routing)) {
    if (Object.hasOwn(section, name) || Object.hasOwn(section, shortTaskName(name))) continue;

    // A dispatcher may route tasks that only other workers (Celery's, say) define; a dtest
    // worker refuses to start on a queue with an undefined task (see undefinedTasks).
    const fallback = defaultTask(name);
    if (fallback) tasks[name] = fallback;
    else
      c.warn(
        ["task_routing", name],
        "has no definition under tasks: and no dtest worker can run it",
      );
  }
  return tasks;
}

function readEntry(
  c: Checker,
  path: Path,
  raw: unknown,
  routing: Record<string, string>,
  known: string,
): ScenarioEntry | undefined {
  const section = typeof raw === "string" ? { task: raw } : c.mapping(path, raw, true);
  if (!section) return undefined;
  c.unknownKeys(path, section, ["task", "count", "args", "kwargs"]);

  const task = section.task;
  if (typeof task !== "string" || !Object.hasOwn(routing, task)) {
    c.problem(
      [...path, "task"],
      `must name a routed task (routed: ${known})`,
      task,
      "route it under task_routing or fix the name",
    );
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

  const description = c.string(
    ["test_scenario", "description"],
    section.description,
    "dtest scenario",
  );
  const entries = section.tasks;
  if (entries === undefined || entries === null) {
    const tasks = Object.keys(routing).map((task) => ({ task, count: 1, args: [], kwargs: {} }));
    return { description, tasks };
  }

  if (!Array.isArray(entries) || entries.length === 0) {
    c.problem(
      ["test_scenario", "tasks"],
      "must be a non-empty list of tasks to send",
      entries,
      'write e.g. "tasks:\\n    - task: task_a\\n      count: 2"',
    );
    return { description, tasks: [] };
  }

  // Named once for every message: a file may route thousands of tasks.
  const names = Object.keys(routing);
  const known =
    names.length > 8 ? `${names.slice(0, 8).join(", ")}, ...` : names.join(", ") || "none";
  const tasks = entries
    .map((entry, i) => readEntry(c, ["test_scenario", "tasks", i], entry, routing, known))
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
  return new ConfigError(
    file,
    [`${file}:1: the file is ${size} bytes; a config may be at most ${MAX_CONFIG_BYTES} bytes`],
    "trim the file: a scenario needs only a few kilobytes of YAML",
  );
}

function decodeFile(file: string, bytes: Uint8Array): string {
  if (bytes.length > MAX_CONFIG_BYTES) throw tooLarge(file, bytes.length);

  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // The decoder's own message has no position; find the first bad byte for the report.
    const offset = firstInvalidUtf8(bytes);
    const line = new TextDecoder().decode(bytes.subarray(0, offset)).split("\n").length;
    throw new ConfigError(
      file,
      [`${file}:${line}: the file is not valid UTF-8 (byte ${offset})`],
      "save the file as UTF-8",
    );
  }
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  let low = 0;
  let high = bytes.length;

  // Binary search for the shortest prefix that holds a bad byte. In streaming mode a prefix that
  // ends inside a valid multi-byte character is not an error, so the search only stops at a
  // byte that is wrong whatever follows it.
  while (low < high) {
    const mid = (low + high) >> 1;
    try {
      const decoder = new TextDecoder("utf-8", { fatal: true });
      decoder.decode(bytes.subarray(0, mid + 1), { stream: true });
      low = mid + 1;
    } catch {
      high = mid;
    }
  }
  return low;
}

/** The first collection nested deeper than MAX_DEPTH, as an offset; undefined when none is. */
function tooDeep(tokens: CST.Token[]): number | undefined {
  // An explicit stack: the point is to measure depth without recursing that deep ourselves.
  const stack = tokens.map((token): [CST.Token, number] => [token, 0]).reverse();

  while (stack.length > 0) {
    const [token, depth] = stack.pop()!;
    if (token.type === "document" && token.value) stack.push([token.value, depth]);
    if (!CST.isCollection(token)) continue;
    if (depth >= MAX_DEPTH) return token.offset;

    const children = token.items.flatMap((item) => [item.key, item.value]);
    for (const child of children.reverse()) if (child) stack.push([child, depth + 1]);
  }
  return undefined;
}

/** Parses the text into one YAML document; throws ConfigError for syntax the file gets wrong. */
function composeYaml(text: string, file: string, lines: LineCounter): Document {
  // The YAML library makes an Error per syntax problem and a garbage file holds a million of
  // them; their stacks are never shown, and capturing them would triple the time taken.
  const stackLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return composeQuietly(text, file, lines);
  } finally {
    Error.stackTraceLimit = stackLimit;
  }
}

function composeQuietly(text: string, file: string, lines: LineCounter): Document {
  const tokens = [...new Parser(lines.addNewLine).parse(text)];
  const at = (offset: number) => `${file}:${lines.linePos(offset).line}:`;

  const deep = tooDeep(tokens);
  if (deep !== undefined) {
    const problem = `${at(deep)} the YAML nests more than ${MAX_DEPTH} levels deep here`;
    throw new ConfigError(
      file,
      [problem],
      "flatten the structure: a config needs only a few levels",
    );
  }

  // The library's own duplicate-key check compares every key with every other, minutes for a
  // large mapping; checkNodes does it with a set. The library would also print a console
  // warning for a list used as a key: keep it quiet, such keys are reported as unknown keys.
  const composer = new Composer({ uniqueKeys: false, logLevel: "error" });
  const [doc, second] = [...composer.compose(tokens, true, text.length)] as Document[];
  const shown = doc!.errors.slice(0, MAX_SYNTAX_PROBLEMS);
  const rest = doc!.errors.slice(MAX_SYNTAX_PROBLEMS);
  const errors = shown.map((e) => `${at(e.pos[0])} invalid YAML: ${e.message.split("\n")[0]}`);
  if (rest.length > 0) {
    errors.push(`${at(rest[0]!.pos[0])} ${rest.length} more YAML errors from this line on`);
  }
  if (second) {
    const start = second.range?.[0] ?? 0;
    errors.push(`${at(start)} a second YAML document starts here; a config is one document`);
  }

  if (errors.length > 0)
    throw new ConfigError(file, errors, "fix the YAML syntax at the lines shown");
  return doc!;
}

/**
 * Checks the YAML nodes before they become values: refuses tags other than YAML's plain ones,
 * aliases to anchors that are undefined or still open (a value that contains itself), and
 * aliases that together stand for more than MAX_ALIAS_VALUES values.
 */
function checkNodes(c: Checker, doc: Document): void {
  const anchors = new Map<string, number | "open">();
  let aliased = 0;

  // Returns how many values the node stands for once its aliases are expanded.
  const visit = (node: unknown, path: Path): number => {
    if (aliased > MAX_ALIAS_VALUES) return 0;
    if (isAlias(node)) return visitAlias(node.source, node.range?.[0] ?? 0, path);
    if (!isNode(node)) return 0;

    const offset = node.range?.[0] ?? 0;
    if (node.tag && !PLAIN_TAGS.has(node.tag)) {
      const tag = node.tag.replace("tag:yaml.org,2002:", "!!");
      c.node(
        offset,
        path,
        `has the YAML tag ${tag}, which dtest does not read`,
        "remove the tag and write a plain value",
      );
    }
    if (node.anchor) anchors.set(node.anchor, "open");

    let size = 1;
    if (isMap(node)) {
      checkUniqueKeys(c, node, path);
      for (const pair of node.items) {
        size += visit(pair.key, path) + visit(pair.value, [...path, keyText(pair.key) ?? "?"]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => (size += visit(item, [...path, i])));
    }

    if (node.anchor && anchors.get(node.anchor) === "open") anchors.set(node.anchor, size);
    return size;
  };

  const visitAlias = (source: string, offset: number, path: Path): number => {
    const size = anchors.get(source);
    const name = showKey(source);
    if (size === undefined) {
      c.node(
        offset,
        path,
        `refers to *${name}, but no &${name} comes before it`,
        `define &${name} first, or fix the name`,
      );
      return 1;
    }
    if (size === "open") {
      c.node(
        offset,
        path,
        `refers to *${name} inside &${name} itself, a value that never ends`,
        "write the value out instead of the alias",
      );
      return 1;
    }

    aliased += size;
    if (aliased > MAX_ALIAS_VALUES) {
      c.node(
        offset,
        path,
        `expands aliases to more than ${MAX_ALIAS_VALUES} values`,
        "write the values out, or use fewer nested aliases (*name)",
      );
    }
    return size;
  };

  visit(doc.contents, []);
}

/** What the YAML library read leniently (a flow list indented too little, say), as warnings. */
function yamlWarnings(c: Checker, doc: Document): void {
  // Tag warnings are not repeated: checkNodes has refused every tag it does not read.
  const tagCodes = ["TAG_RESOLVE_FAILED", "BAD_COLLECTION_TYPE"];
  const lenient = doc.warnings.filter((w) => !tagCodes.includes(w.code));
  for (const warning of lenient.slice(0, MAX_SYNTAX_PROBLEMS)) {
    const message = warning.message.split("\n")[0];
    c.warnings.push(`${c.file}:${c.lineAt(warning.pos[0])}: YAML: ${message}`);
  }
}

function checkUniqueKeys(c: Checker, map: YAMLMap, path: Path): void {
  const seen = new Map<string, number>();

  for (const pair of map.items) {
    const key = keyText(pair.key);
    const offset = (pair.key as { range?: number[] } | null)?.range?.[0];
    if (key === undefined || offset === undefined) continue;

    const first = seen.get(key);
    if (first === undefined) {
      seen.set(key, offset);
      continue;
    }
    const field = showPath([...path, key]);
    const where = `${c.file}:${c.lineAt(offset)}`;
    c.problems.push(
      `${where}: ${field} is already on line ${c.lineAt(first)} ` +
        "(invalid YAML: Map keys must be unique); keep one of them",
    );
  }
}

/** Parses and validates config text; throws ConfigError listing every problem found. */
export function parseConfig(text: string, file = DEFAULT_CONFIG_FILE): DtestConfig {
  const plain = readPlainYaml(text);
  if (plain !== undefined) {
    try {
      return readConfig(new Checker(file), plain);
    } catch (err) {
      // A problem or a warning: parse again in full, to say on which line.
      if (err !== NEEDS_SOURCE) throw err;
    }
  }

  const lines = new LineCounter();
  const doc = composeYaml(text, file, lines);
  const c = new Checker(file, { doc, lines });

  checkNodes(c, doc);
  if (c.problems.length > 0) throw new ConfigError(file, c.sorted(), "fix each line listed above");
  yamlWarnings(c, doc);

  let raw: unknown;
  try {
    // checkNodes has bounded what aliases expand to, so the library's own, stricter count
    // (which refuses a scalar anchor used more than 50 times) is not needed.
    raw = doc.toJS({ maxAliasCount: -1 });
  } catch (cause) {
    const problem = `${file}:1: the YAML cannot be expanded: ${(cause as Error).message}`;
    throw new ConfigError(file, [problem], "write the values out instead of aliases (*name)");
  }

  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    c.node(
      isNode(doc.contents) ? (doc.contents.range?.[0] ?? 0) : 0,
      [],
      `must be a mapping with task_routing and the other sections (got ${typeName(raw)})`,
      "start from the default test-config.yml",
    );
    throw new ConfigError(file, c.problems);
  }
  return readConfig(c, raw as Record<string, unknown>);
}

/** The sections of a config's top-level mapping, checked; throws ConfigError on any problem. */
function readConfig(c: Checker, top: Record<string, unknown>): DtestConfig {
  c.unknownKeys([], top, SECTIONS[""]!);

  const routing = readRouting(c, top.task_routing);
  const config: DtestConfig = {
    file: c.file,
    system: readSystem(c, top.system, routing),
    scenario: readScenario(c, top.test_scenario, routing),
    rabbitmq: readBroker(c, top.rabbitmq),
    routing,
    retry: readRetry(c, top.retry_config),
    tasks: readTasks(c, top.tasks, routing),
    warnings: c.warnings,
  };

  if (c.problems.length > 0) {
    throw new ConfigError(c.file, c.sorted(), "fix each line listed above");
  }
  return config;
}

/** Reads and validates a config file; throws ConfigError (exit code 2) on any problem. */
export async function loadConfig(file = DEFAULT_CONFIG_FILE): Promise<DtestConfig> {
  const handle = Bun.file(file);
  if (!(await handle.exists())) {
    throw new ConfigError(
      file,
      [`${file}: no such file`],
      `run from the folder that holds ${DEFAULT_CONFIG_FILE}, or pass --config PATH`,
    );
  }

  // Pipes and process substitutions report no finite size; their bytes are checked below.
  if (Number.isFinite(handle.size) && handle.size > MAX_CONFIG_BYTES)
    throw tooLarge(file, handle.size);

  const bytes = new Uint8Array(await handle.arrayBuffer());
  return parseConfig(decodeFile(file, bytes), file);
}

/**
 * Finds a task by the name a message carries. Routing keys may be plain (`task_a`) or Celery's
 * dotted names (`celery_app.task_a`); either matches a message sent under either form.
 */
export function findRoute(config: DtestConfig, name: string): Route | undefined {
  let cache = routeCache.get(config);
  if (!cache) routeCache.set(config, (cache = new Map()));
  if (cache.has(name)) return cache.get(name);

  const own = (table: object, key: string) => Object.hasOwn(table, key);
  const short = shortTaskName(name);
  const key = own(config.routing, name)
    ? name
    : own(config.routing, short)
      ? short
      : Object.keys(config.routing).find((k) => shortTaskName(k) === short);
  const def =
    key === undefined
      ? undefined
      : own(config.tasks, key)
        ? config.tasks[key]
        : own(config.tasks, shortTaskName(key))
          ? config.tasks[shortTaskName(key)]
          : undefined;
  const route = key === undefined ? undefined : { key, queue: config.routing[key]!, def };
  cache.set(name, route);
  return route;
}

export interface Route {
  key: string;
  queue: string;
  def?: TaskDef;
}

/** Workers look a route up for every message; the answer for a name never changes. */
const routeCache = new WeakMap<DtestConfig, Map<string, Route | undefined>>();

/** Tasks routed to `queue` that this config does not define. */
export function undefinedTasks(config: DtestConfig, queue: string): string[] {
  return Object.entries(config.routing)
    .filter(([name, q]) => q === queue && !findRoute(config, name)?.def)
    .map(([name]) => name);
}

/** The distinct queues the routing table uses, in first-seen order. */
export function routedQueues(config: DtestConfig): string[] {
  return [...new Set(Object.values(config.routing))];
}

/** The queues the scenario actually sends to. */
export function scenarioQueues(config: DtestConfig): string[] {
  return [...new Set(config.scenario.tasks.map((entry) => config.routing[entry.task]!))];
}
