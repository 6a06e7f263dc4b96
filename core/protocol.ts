/**
 * Celery message protocol v2 (JSON body) and the `rpc://` result format, as Celery 5.2 puts
 * them on the wire. Encoders return the body and amqplib publish options; decoders validate
 * what arrives and throw ProtocolError with a reason a dead-letter entry can carry.
 */
import { hostname } from "node:os";

export const CONTENT_TYPE = "application/json";
export const CONTENT_ENCODING = "utf-8";

export type TaskStatus = "PENDING" | "STARTED" | "RETRY" | "SUCCESS" | "FAILURE" | "REVOKED";

export const FINAL_STATUSES: readonly TaskStatus[] = ["SUCCESS", "FAILURE", "REVOKED"];

/** A task as both sides see it; `name` is the header as sent (e.g. `celery_app.task_a`). */
export interface TaskMessage {
  id: string;
  name: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  retries: number;
  eta: Date | null;
  expires: Date | null;
  replyTo: string;
  correlationId: string;
  priority: number;
  rootId: string;
  parentId: string | null;
  origin: string;
  ignoreResult: boolean;
  /** [hard, soft] time limits in seconds, as Celery sends them. */
  timelimit: [number | null, number | null];
  /** Any headers beyond Celery's own, carried through retries unchanged. */
  extraHeaders: Record<string, unknown>;
  /** Celery's canvas: what runs after this task (body item 3). */
  embed: Embed;
}

/** A Celery signature as carried in a message's embed. */
export interface Signature {
  task: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  options?: {
    task_id?: string;
    reply_to?: string;
    queue?: string;
    routing_key?: string;
    link?: Signature[];
  };
  immutable?: boolean;
}

export interface Embed {
  callbacks: Signature[] | null;
  errbacks: Signature[] | null;
  /** The rest of a chain, the next step last (Celery's order). */
  chain: Signature[] | null;
  chord: unknown;
}

export const NO_EMBED: Embed = { callbacks: null, errbacks: null, chain: null, chord: null };

export interface ExceptionInfo {
  exc_type: string;
  exc_message: unknown[];
  exc_module: string;
}

export interface ResultMessage {
  task_id: string;
  status: TaskStatus;
  result: unknown;
  traceback: string | null;
  children: unknown[];
}

export interface Encoded {
  content: Buffer;
  options: {
    contentType: string;
    contentEncoding: string;
    deliveryMode: number;
    priority: number;
    correlationId?: string;
    replyTo?: string;
    headers: Record<string, unknown>;
  };
}

/** The fields an incoming AMQP message has that the decoders read. */
export interface RawMessage {
  content: Buffer;
  properties: {
    contentType?: string;
    correlationId?: string;
    replyTo?: string;
    priority?: number;
    headers?: Record<string, unknown>;
  };
}

export class ProtocolError extends Error {
  constructor(
    message: string,
    readonly taskId?: string,
    readonly replyTo?: string,
  ) {
    super(message);
    this.name = "ProtocolError";
  }
}

const CELERY_HEADERS = new Set([
  "lang",
  "task",
  "id",
  "shadow",
  "eta",
  "expires",
  "group",
  "group_index",
  "retries",
  "timelimit",
  "root_id",
  "parent_id",
  "argsrepr",
  "kwargsrepr",
  "origin",
  "ignore_result",
]);

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;

/**
 * Tags every integer in a header value so amqplib writes it as a 32- or 64-bit integer.
 * amqplib's default picks the narrowest type, and py-amqp misreads two of them: 8-bit values
 * as unsigned and 16-bit values as strings, which crashes a Celery worker.
 */
export function tagIntegers(value: unknown): unknown {
  if (typeof value === "number" && Number.isInteger(value)) {
    const fits32 = value >= INT32_MIN && value <= INT32_MAX;
    return { "!": fits32 ? "int" : "int64", value };
  }
  if (Array.isArray(value)) return value.map(tagIntegers);
  if (value && typeof value === "object" && !Buffer.isBuffer(value) && !("!" in value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, tagIntegers(v)]));
  }
  return value;
}

/** `celery_app.task_a` and `task_a` both name task `task_a`. */
export function shortTaskName(name: string): string {
  return name.slice(name.lastIndexOf(".") + 1);
}

/** Python-like repr for display headers (argsrepr/kwargsrepr); never parsed back. */
export function reprArgs(args: unknown[]): string {
  const items = args.map((a) => JSON.stringify(a));
  return `(${items.join(", ")}${items.length === 1 ? "," : ""})`;
}

let origin: string | undefined;

/** Celery's `origin` header for this process, e.g. `gen4242@station-7` (read once). */
export function originName(): string {
  return (origin ??= `gen${process.pid}@${hostname()}`);
}

export function newTask(
  fields: Pick<TaskMessage, "name" | "args" | "kwargs" | "replyTo"> & Partial<TaskMessage>,
): TaskMessage {
  const id = fields.id ?? crypto.randomUUID();
  return {
    id,
    retries: 0,
    eta: null,
    expires: null,
    correlationId: id,
    priority: 0,
    rootId: id,
    parentId: null,
    origin: originName(),
    ignoreResult: false,
    timelimit: [null, null],
    extraHeaders: {},
    embed: NO_EMBED,
    ...fields,
  };
}

/**
 * Encodes a task as Celery's `apply_async` does, less the headers that only restate what a
 * Celery worker assumes when they are absent (null shadow, eta, expires, group and parent,
 * no time limits, retries 0, ignore_result false): a Celery worker reads every one of them
 * with a default, and each header RabbitMQ does not have to parse is CPU it can route with.
 */
export function encodeTask(task: TaskMessage): Encoded {
  const headers: Record<string, unknown> = {
    ...(tagIntegers(task.extraHeaders) as Record<string, unknown>),
    lang: "py",
    task: task.name,
    id: task.id,
    root_id: task.rootId,
    argsrepr: reprArgs(task.args),
    kwargsrepr: JSON.stringify(task.kwargs),
    origin: task.origin,
  };
  if (task.eta) headers.eta = task.eta.toISOString();
  if (task.expires) headers.expires = task.expires.toISOString();
  if (task.retries > 0) headers.retries = tagIntegers(task.retries);
  if (task.timelimit[0] !== null || task.timelimit[1] !== null)
    headers.timelimit = tagIntegers(task.timelimit);
  if (task.parentId) headers.parent_id = task.parentId;
  if (task.ignoreResult) headers.ignore_result = true;

  return {
    content: Buffer.from(JSON.stringify([task.args, task.kwargs, embedOf(task.embed)])),
    options: {
      contentType: CONTENT_TYPE,
      contentEncoding: CONTENT_ENCODING,
      deliveryMode: 2,
      priority: task.priority,
      // A Celery worker answers with the task id when correlation_id is absent (rpc backend).
      correlationId: task.correlationId === task.id ? undefined : task.correlationId,
      replyTo: task.replyTo || undefined,
      headers,
    },
  };
}

/**
 * The embed as sent: `{}` when the task has no canvas, which a Celery worker reads as four
 * nulls. It is most of a no-op task's body, and every byte is one the broker handles twice.
 */
function embedOf(embed: Embed): Partial<Embed> {
  const { callbacks, errbacks, chain, chord } = embed;
  return callbacks || errbacks || chain || chord ? embed : {};
}

/** The message Celery publishes for `self.retry(countdown)`: same id, retries+1, an eta. */
export function retryOf(task: TaskMessage, delaySeconds: number, now = Date.now()): TaskMessage {
  return {
    ...task,
    retries: task.retries + 1,
    eta: new Date(now + delaySeconds * 1000),
    parentId: task.id,
    origin: originName(),
    ignoreResult: false,
  };
}

function parseTime(value: unknown, field: string, id: string, replyTo: string): Date | null {
  if (value === null || value === undefined) return null;

  // Celery reads times without an offset as UTC (its default timezone).
  const text =
    typeof value === "string" && !/(Z|[+-]\d\d:?\d\d)$/.test(value) ? `${value}Z` : value;
  const date = typeof text === "string" ? new Date(text) : new Date(NaN);
  if (Number.isNaN(date.getTime())) {
    throw new ProtocolError(
      `header ${field} must be an ISO-8601 time; got ${JSON.stringify(value)}`,
      id,
      replyTo,
    );
  }
  return date;
}

function headerString(headers: Record<string, unknown>, field: string): string | undefined {
  const value = headers[field];
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

function signatures(value: unknown): Signature[] | null {
  if (!Array.isArray(value) || value.length === 0) return null;
  return value.filter(
    (s): s is Signature =>
      !!s && typeof s === "object" && typeof (s as Signature).task === "string",
  );
}

function decodeEmbed(value: unknown): Embed {
  if (!value || typeof value !== "object") return NO_EMBED;
  const e = value as Record<string, unknown>;
  return {
    callbacks: signatures(e.callbacks),
    errbacks: signatures(e.errbacks),
    chain: signatures(e.chain),
    chord: e.chord ?? null,
  };
}

function decodeBody(
  content: Buffer,
  id: string,
  replyTo: string,
): [unknown[], Record<string, unknown>, Embed] {
  let body: unknown;
  try {
    body = JSON.parse(content.toString("utf8"));
  } catch (cause) {
    throw new ProtocolError(`body is not valid JSON: ${(cause as Error).message}`, id, replyTo);
  }

  const isObject = (v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v);
  if (!Array.isArray(body) || body.length !== 3 || !Array.isArray(body[0]) || !isObject(body[1])) {
    throw new ProtocolError("body must be [args, kwargs, embed] (Celery protocol v2)", id, replyTo);
  }
  return [body[0], body[1] as Record<string, unknown>, decodeEmbed(body[2])];
}

/** Validates and decodes a Celery v2 task message; throws ProtocolError naming the fault. */
export function decodeTask(message: RawMessage): TaskMessage {
  const props = message.properties;
  const headers = props.headers ?? {};
  const replyTo = props.replyTo ?? "";
  const id = headerString(headers, "id") ?? props.correlationId ?? "";

  if (props.contentType !== CONTENT_TYPE) {
    const got = props.contentType === undefined ? "none" : JSON.stringify(props.contentType);
    throw new ProtocolError(`content_type must be ${CONTENT_TYPE}; got ${got}`, id, replyTo);
  }

  const name = headerString(headers, "task");
  if (!name) throw new ProtocolError("header task must be a non-empty string", id, replyTo);
  if (!headerString(headers, "id"))
    throw new ProtocolError("header id must be a non-empty string", id, replyTo);

  const retries = headers.retries ?? 0;
  if (typeof retries !== "number" || !Number.isInteger(retries) || retries < 0) {
    throw new ProtocolError(
      `header retries must be an integer ≥ 0; got ${JSON.stringify(retries)}`,
      id,
      replyTo,
    );
  }

  const [args, kwargs, embed] = decodeBody(message.content, id, replyTo);
  const limits = Array.isArray(headers.timelimit) ? headers.timelimit : [null, null];
  const asLimit = (v: unknown) => (typeof v === "number" && v > 0 ? v : null);
  const extraHeaders = Object.fromEntries(
    Object.entries(headers).filter(([k]) => !CELERY_HEADERS.has(k)),
  );

  return {
    id,
    name,
    args,
    kwargs,
    retries,
    eta: parseTime(headers.eta, "eta", id, replyTo),
    expires: parseTime(headers.expires, "expires", id, replyTo),
    replyTo,
    correlationId: props.correlationId ?? id,
    priority: props.priority ?? 0,
    rootId: headerString(headers, "root_id") ?? id,
    parentId: headerString(headers, "parent_id") ?? null,
    origin: headerString(headers, "origin") ?? "",
    ignoreResult: headers.ignore_result === true,
    timelimit: [asLimit(limits[0]), asLimit(limits[1])],
    extraHeaders,
    embed,
  };
}

export function exceptionInfo(
  type: string,
  message: string | unknown[],
  module = "celery.exceptions",
): ExceptionInfo {
  return {
    exc_type: type,
    exc_message: Array.isArray(message) ? message : [message],
    exc_module: module,
  };
}

/**
 * A task header asking the worker to say who ran it and when: the reply headers below. Only
 * `dispatch` asks, for its reports; load tests skip the cost of encoding and reading them.
 */
export const WANT_RUN_INFO = "dtest-run-info";

/** Reply headers a dtest worker adds: its name and when the run started and finished (ISO). */
export const REPLY_HEADERS = {
  worker: "dtest-worker",
  started: "dtest-started",
  finished: "dtest-finished",
} as const;

/** Encodes an `rpc://` reply; correlation_id and task_id are both the task id (see spec §3). */
export function encodeResult(reply: ResultMessage): Encoded {
  return {
    content: Buffer.from(JSON.stringify(reply)),
    options: {
      contentType: CONTENT_TYPE,
      contentEncoding: CONTENT_ENCODING,
      // Celery sends replies transient (1). dtest sends them persistent so a reply that
      // reached a durable reply queue outlives a broker restart; Celery clients accept both.
      deliveryMode: 2,
      priority: 0,
      correlationId: reply.task_id,
      headers: {},
    },
  };
}

const STATUSES: readonly string[] = [
  "PENDING",
  "STARTED",
  "RETRY",
  "SUCCESS",
  "FAILURE",
  "REVOKED",
];

/** Decodes an `rpc://` reply; throws ProtocolError when it is not one. */
export function decodeResult(message: RawMessage): ResultMessage {
  let body: unknown;
  try {
    body = JSON.parse(message.content.toString("utf8"));
  } catch (cause) {
    throw new ProtocolError(`reply is not valid JSON: ${(cause as Error).message}`);
  }

  const reply = body as Partial<ResultMessage> | null;
  const taskId = reply?.task_id ?? message.properties.correlationId;
  if (!reply || typeof taskId !== "string" || !STATUSES.includes(reply.status as string)) {
    throw new ProtocolError("reply must be an object with task_id and a Celery status", taskId);
  }

  return {
    task_id: taskId,
    status: reply.status as TaskStatus,
    result: reply.result ?? null,
    traceback: reply.traceback ?? null,
    children: reply.children ?? [],
  };
}

/** Reads an ExceptionInfo back into one line, e.g. `ValueError: boom`. */
export function describeException(result: unknown): string {
  const info = result as Partial<ExceptionInfo> | null;
  if (!info || typeof info.exc_type !== "string") return JSON.stringify(result);

  const parts = (info.exc_message ?? []).map((m) =>
    typeof m === "string" ? m : JSON.stringify(m),
  );
  return `${info.exc_type}: ${parts.join(", ")}`;
}
