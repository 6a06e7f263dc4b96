/**
 * Error types shared by every command. A DtestError carries what a user needs to act: the
 * message names what failed, `hint` says how to fix it and `exitCode` is the process code a
 * command should end with.
 */

export const EXIT = {
  ok: 0,
  tasksFailed: 1,
  usage: 2,
  unreachable: 3,
} as const;

export interface DtestErrorOptions {
  hint?: string;
  file?: string;
  cause?: unknown;
  exitCode?: number;
}

export class DtestError extends Error {
  readonly hint?: string;
  readonly file?: string;
  readonly exitCode: number;

  constructor(message: string, options: DtestErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "DtestError";
    this.hint = options.hint;
    this.file = options.file;
    this.exitCode = options.exitCode ?? EXIT.usage;
  }
}

/** A problem in a config file; `problems` holds every one found, each already located. */
export class ConfigError extends DtestError {
  readonly problems: string[];

  constructor(file: string, problems: string[], hint?: string) {
    const head = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
    super(`${file}: ${head}\n  ${problems.join("\n  ")}`, { file, hint, exitCode: EXIT.usage });
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Bad command-line input. */
export class UsageError extends DtestError {
  constructor(message: string, hint?: string) {
    super(message, { hint, exitCode: EXIT.usage });
    this.name = "UsageError";
  }
}

/** The broker, a queue's workers or a deadline could not be reached in time. */
export class BrokerError extends DtestError {
  constructor(message: string, options: Omit<DtestErrorOptions, "exitCode"> = {}) {
    super(message, { ...options, exitCode: EXIT.unreachable });
    this.name = "BrokerError";
  }
}

/** Follows `cause` links and joins every message on one line. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;

  for (let depth = 0; current && depth < 8; depth++) {
    parts.push(current instanceof Error ? current.message : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }

  return parts.join(": caused by: ");
}
