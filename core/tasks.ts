/**
 * What a task does once a worker decides to run it: the built-in kinds (hello, noop, exec),
 * time limits and expectations. Commands come only from the worker's own config; a message
 * contributes arguments, which exec passes as argv items and never through a shell.
 */
import type { ExecTask, Expectation, TaskDef } from "./config.ts";
import { originalEnvironment } from "./engine.ts";
import { exceptionInfo, type ExceptionInfo, type TaskMessage } from "./protocol.ts";

/** Bytes of stdout/stderr an exec result keeps (the end of each stream). */
export const OUTPUT_TAIL_BYTES = 4096;

export interface TaskOutcome {
  ok: boolean;
  /** The task's result object; present for failures too, so a report can show output. */
  value: Record<string, unknown>;
  error?: ExceptionInfo;
}

export class TaskTimeoutError extends Error {
  constructor(readonly seconds: number) {
    super(`timed out after ${seconds} s`);
    this.name = "TimeLimitExceeded";
  }
}

/** `task_a` → "A" (the seed's label); other names stay as they are. */
export function taskLabel(name: string): string {
  const match = /^task_([a-z0-9]+)$/i.exec(name);
  return match ? match[1]!.toUpperCase() : name;
}

/** Sleeps `ms`; resolves false at once when `signal` aborts first, true otherwise. */
export async function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
  return !signal.aborted;
}

function tail(text: string): string {
  return text.length > OUTPUT_TAIL_BYTES ? text.slice(-OUTPUT_TAIL_BYTES) : text;
}

function checkArgs(def: TaskDef, message: TaskMessage): ExceptionInfo | undefined {
  if (def.kind !== "exec") return undefined;

  if (!def.acceptArgs && (message.args.length > 0 || Object.keys(message.kwargs).length > 0)) {
    return exceptionInfo(
      "TypeError",
      `${def.name} takes no arguments (set accept_args: true in the worker's config to allow them)`,
      "builtins",
    );
  }
  const bad = message.args.find((a) => typeof a !== "string" && typeof a !== "number");
  if (bad !== undefined) {
    return exceptionInfo(
      "TypeError",
      `${def.name} arguments must be strings or numbers; got ${JSON.stringify(bad)}`,
      "builtins",
    );
  }
  if (Object.keys(message.kwargs).length > 0) {
    return exceptionInfo("TypeError", `${def.name} takes positional arguments only`, "builtins");
  }
  return undefined;
}

async function readStream(stream: ReadableStream<Uint8Array>): Promise<string> {
  // Keep only the tail so a chatty test cannot grow the worker's memory without bound.
  const decoder = new TextDecoder();
  let kept = "";
  for await (const chunk of stream) {
    kept = tail(kept + decoder.decode(chunk, { stream: true }));
  }
  return kept + decoder.decode();
}

async function runExec(def: ExecTask, message: TaskMessage, signal: AbortSignal) {
  const argv = [...def.command, ...message.args.map(String)];
  const child = Bun.spawn(argv, {
    cwd: def.cwd,
    env: {
      ...originalEnvironment(),
      ...def.env,
      DTEST_TASK_ID: message.id,
      DTEST_RETRIES: String(message.retries),
    },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    // Its own process group, so a time limit stops the whole tree the test started.
    detached: true,
  });

  const killGroup = () => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // The group is already gone: the child exited on its own just before the deadline.
    }
  };
  signal.addEventListener("abort", killGroup, { once: true });

  try {
    const [stdout, stderr, exitCode] = await Promise.all([
      readStream(child.stdout),
      readStream(child.stderr),
      child.exited,
    ]);
    if (signal.aborted) throw signal.reason;
    return {
      result: `exit ${exitCode}`,
      exit_code: exitCode,
      stdout_tail: stdout,
      stderr_tail: stderr,
    };
  } finally {
    signal.removeEventListener("abort", killGroup);
  }
}

function unmet(
  expect: Expectation | undefined,
  value: Record<string, unknown>,
  kind: string,
): string | undefined {
  const exitCode = expect?.exitCode ?? (kind === "exec" ? 0 : undefined);
  if (exitCode !== undefined && value.exit_code !== exitCode) {
    return `expected exit code ${exitCode}, got ${value.exit_code}`;
  }
  if (!expect) return undefined;

  const has = (field: string, text?: string) =>
    text === undefined || String(value[field] ?? "").includes(text);
  if (!has("stdout_tail", expect.stdoutContains))
    return `expected stdout to contain "${expect.stdoutContains}"`;
  if (!has("stderr_tail", expect.stderrContains))
    return `expected stderr to contain "${expect.stderrContains}"`;
  if (
    expect.resultContains !== undefined &&
    !JSON.stringify(value.result).includes(expect.resultContains)
  ) {
    return `expected the result to contain "${expect.resultContains}"`;
  }
  return undefined;
}

async function perform(
  def: TaskDef,
  message: TaskMessage,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  if (def.kind === "hello") {
    if (!(await sleepUnlessAborted(def.duration * 1000, signal))) throw signal.reason;
    return { result: def.message };
  }
  if (def.kind === "noop") return { result: message.args, kwargs: message.kwargs };
  return runExec(def, message, signal);
}

/** The effective time limit in seconds: the task's own, else the message's hard limit. */
export function timeLimit(def: TaskDef, message: TaskMessage): number | undefined {
  return def.timeout ?? message.timelimit[0] ?? undefined;
}

/**
 * Runs one task to an outcome. Never throws for the task's own faults (bad arguments, a
 * failed expectation, a time limit): those become a failed outcome with Celery's exception
 * shape. `signal` aborting (worker shutdown) rejects with its reason.
 */
export async function runTask(
  def: TaskDef,
  message: TaskMessage,
  signal: AbortSignal,
): Promise<TaskOutcome> {
  const started = performance.now();
  const base = { task: taskLabel(def.name), retry_count: message.retries };
  const elapsed = () => Math.round(performance.now() - started) / 1000;

  const badArgs = checkArgs(def, message);
  if (badArgs)
    return { ok: false, value: { ...base, result: null, execution_time: 0 }, error: badArgs };

  const limit = timeLimit(def, message);
  const deadline =
    limit === undefined ? signal : AbortSignal.any([signal, AbortSignal.timeout(limit * 1000)]);

  try {
    const value = {
      ...(await perform(def, message, deadline)),
      execution_time: elapsed(),
      ...base,
    };
    const problem = unmet(def.expect, value, def.kind);
    if (!problem) return { ok: true, value };
    return { ok: false, value, error: exceptionInfo("ExpectationFailed", problem, "dtest") };
  } catch (cause) {
    if (signal.aborted) throw cause;
    if (deadline.aborted && limit !== undefined) {
      const error = new TaskTimeoutError(limit);
      return {
        ok: false,
        value: { ...base, result: null, execution_time: elapsed() },
        error: exceptionInfo("TimeLimitExceeded", error.message, "celery.exceptions"),
      };
    }
    const message_ = cause instanceof Error ? cause.message : String(cause);
    return {
      ok: false,
      value: { ...base, result: null, execution_time: elapsed() },
      error: exceptionInfo("RuntimeError", message_, "builtins"),
    };
  }
}
