/**
 * Logging: consola writing to stderr, either for people or as one JSON object per line.
 * Every line passes through `maskSecrets`, so a broker password never reaches a log.
 */
import { createConsola, type ConsolaInstance, type ConsolaReporter, type LogObject } from "consola/core";

export type Logger = ConsolaInstance;

export type LogFormat = "text" | "json";

export interface LoggerOptions {
  level?: string;
  format?: LogFormat;
  stream?: NodeJS.WriteStream | { write(chunk: string): unknown };
}

export const LOG_LEVELS: Record<string, number> = {
  silent: -999,
  error: 0,
  warn: 1,
  info: 3,
  debug: 4,
  trace: 5,
};

const URL_CREDENTIALS = /(amqps?:\/\/[^:/@\s]*:)([^@\s]*)@/g;

/** Replaces the password of every amqp(s) URL in `text` with `***`. */
export function maskSecrets(text: string): string {
  return text.replace(URL_CREDENTIALS, "$1***@");
}

/** Parses a level name or number; throws a message naming the allowed values. */
export function parseLogLevel(value: string | undefined): number {
  if (value === undefined || value === "") return envLevel() ?? LOG_LEVELS.info!;

  const named = LOG_LEVELS[value];
  if (named !== undefined) return named;

  const numeric = Number(value);
  if (Number.isInteger(numeric)) return numeric;

  throw new Error(
    `--log-level must be one of ${Object.keys(LOG_LEVELS).join(", ")} or a number (got "${value}")`,
  );
}

function envLevel(): number | undefined {
  const raw = process.env.CONSOLA_LEVEL;
  if (!raw) return undefined;

  const numeric = Number(raw);
  return Number.isInteger(numeric) ? numeric : LOG_LEVELS[raw];
}

function formatArg(arg: unknown): string {
  if (arg instanceof Error) return arg.message;
  if (typeof arg === "string") return arg;
  return JSON.stringify(arg);
}

/** Splits consola's args into the message text and extra fields passed as `{ message, ... }`. */
function splitArgs(log: LogObject): { msg: string; fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  const words: string[] = [];

  for (const arg of log.args) {
    if (arg && typeof arg === "object" && !(arg instanceof Error) && !Array.isArray(arg)) {
      const { message, ...rest } = arg as Record<string, unknown>;
      if (message !== undefined) words.push(String(message));
      Object.assign(fields, rest);
    } else {
      words.push(formatArg(arg));
    }
  }

  if (log.message) words.unshift(log.message);
  return { msg: words.join(" "), fields };
}

/**
 * The fields consola moved onto the log object itself: a call with one `{ message, ... }`
 * object is merged into the record rather than kept as an argument.
 */
function ownFields(log: LogObject): Record<string, unknown> {
  const { date, type, level, tag, args, message, additional, ...rest } = log as LogObject & {
    message?: unknown;
    additional?: unknown;
  };
  return rest;
}

function jsonReporter(write: (line: string) => void): ConsolaReporter {
  return {
    log(log) {
      const { msg, fields } = splitArgs(log);
      const extra = { ...ownFields(log), ...fields };
      const line = { time: log.date.toISOString(), level: log.type, tag: log.tag, msg, ...extra };
      write(maskSecrets(JSON.stringify(line)) + "\n");
    },
  };
}

function textReporter(write: (line: string) => void): ConsolaReporter {
  return {
    log(log) {
      const { msg } = splitArgs(log);
      const tag = log.tag ? `[${log.tag}] ` : "";
      const level = log.type === "log" || log.type === "info" ? "" : `${log.type}: `;
      write(maskSecrets(`${tag}${level}${msg}`) + "\n");
    },
  };
}

/** Builds the logger every command passes down; output goes to stderr unless told otherwise. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const stream = options.stream ?? process.stderr;
  const write = (line: string) => stream.write(line);
  const reporter = options.format === "json" ? jsonReporter(write) : textReporter(write);

  return createConsola({ level: parseLogLevel(options.level), reporters: [reporter] });
}
