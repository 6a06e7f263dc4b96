import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import {
  decodeResult,
  decodeTask,
  encodeResult,
  encodeTask,
  newTask,
  ProtocolError,
  retryOf,
  shortTaskName,
  tagIntegers,
} from "./protocol.ts";

function fixture(name: string) {
  return JSON.parse(
    readFileSync(join(import.meta.dir, "..", "test", "fixtures", "celery", name), "utf8"),
  );
}

/** A captured message as amqplib would hand it to a consumer. */
function asDelivered(captured: ReturnType<typeof fixture>) {
  const p = captured.properties;
  return {
    content: Buffer.from(captured.body_raw),
    properties: {
      contentType: p.content_type,
      correlationId: p.correlation_id,
      replyTo: p.reply_to,
      priority: p.priority,
      headers: p.headers,
    },
  };
}

describe("decoding Celery's task messages", () => {
  test("the captured task_a message decodes to its id, args, name and reply queue", () => {
    const task = decodeTask(asDelivered(fixture("task.task_a.json")));
    expect(task).toMatchObject({
      id: "54e1685c-cb80-4988-b724-bb80a23fb193",
      name: "celery_app.task_a",
      args: [2, 3],
      kwargs: {},
      retries: 0,
      eta: null,
      replyTo: "f077eeba-7490-367b-9f9a-c3caa4221d63",
      timelimit: [null, null],
    });
    expect(shortTaskName(task.name)).toBe("task_a");
  });

  test("apply_async options: eta, expires, priority, time limits and custom headers survive", () => {
    const task = decodeTask(asDelivered(fixture("task.options.json")));
    expect(task.eta?.toISOString()).toBe("2026-12-03T16:20:54.474Z");
    expect(task.expires?.toISOString()).toBe("2026-12-03T16:21:24.474Z");
    expect(task.priority).toBe(5);
    expect(task.timelimit).toEqual([300, 200]);
    expect(task.extraHeaders).toEqual({ custom: "x" });
  });

  test("a retry republished by Celery reads as retries 1 with its parent and eta", () => {
    const task = decodeTask(asDelivered(fixture("task.retry_republish.json")));
    expect(task.retries).toBe(1);
    expect(task.parentId).toBe(task.id);
    expect(task.eta).toBeInstanceOf(Date);
  });

  test.each([
    [
      "no content type",
      { contentType: undefined },
      "content_type must be application/json; got none",
    ],
    [
      "text/plain",
      { contentType: "text/plain" },
      'content_type must be application/json; got "text/plain"',
    ],
    ["no task header", { headers: { id: "x" } }, "header task must be a non-empty string"],
    [
      "a string retries header",
      { headers: { task: "t", id: "x", retries: "2" } },
      'header retries must be an integer ≥ 0; got "2"',
    ],
    [
      "a bad eta",
      { headers: { task: "t", id: "x", eta: "tomorrow" } },
      'header eta must be an ISO-8601 time; got "tomorrow"',
    ],
  ])("refuses %s", (_name, props, reason) => {
    const base = { contentType: "application/json", headers: { task: "t", id: "x" } };
    const message = { content: Buffer.from("[[], {}, {}]"), properties: { ...base, ...props } };
    expect(() => decodeTask(message)).toThrow(new ProtocolError(reason));
  });

  test.each([
    ["not JSON", "{oops", "body is not valid JSON"],
    [
      "protocol v1 (a dict body)",
      '{"task": "t", "id": "x", "args": []}',
      "body must be [args, kwargs, embed]",
    ],
    ["args not a list", "[1, {}, {}]", "body must be [args, kwargs, embed]"],
  ])("refuses a body that is %s", (_name, body, reason) => {
    const message = {
      content: Buffer.from(body),
      properties: { contentType: "application/json", headers: { task: "t", id: "x" } },
    };
    expect(() => decodeTask(message)).toThrow(reason);
  });
});

describe("encoding for Celery", () => {
  test("a task encodes to the captured shape: headers, properties and [args, kwargs, embed]", () => {
    const captured = fixture("task.task_a.json");
    const decoded = decodeTask(asDelivered(captured));
    const { content, options } = encodeTask(decoded);

    // An embed of four nulls goes as {}, which a Celery worker reads the same way.
    const [args, kwargs, embed] = captured.body;
    expect(Object.values(embed).every((v) => v === null)).toBe(true);
    expect(JSON.parse(content.toString())).toEqual([args, kwargs, {}]);
    expect(decodeTask({ content, properties: options }).embed).toEqual(decoded.embed);
    expect(options).toMatchObject({
      contentType: "application/json",
      contentEncoding: "utf-8",
      deliveryMode: 2,
      replyTo: decoded.replyTo,
    });
    // The correlation id restates the task id, which is what a Celery worker falls back to.
    expect(captured.properties.correlation_id).toBe(decoded.id);
    expect(options.correlationId).toBeUndefined();
    expect(encodeTask({ ...decoded, correlationId: "other" }).options.correlationId).toBe("other");
    // Celery's headers, less those restating a Celery worker's default for a missing one.
    const headers = options.headers;
    const restated = ["shadow", "eta", "expires", "group", "group_index", "parent_id"];
    const defaults = [...restated, "retries", "timelimit", "ignore_result"];
    const kept = Object.keys(captured.properties.headers).filter((k) => !defaults.includes(k));
    expect(Object.keys(headers).sort()).toEqual(kept.sort());
    for (const key of kept) expect(headers[key]).toEqual(captured.properties.headers[key]);
    for (const key of restated) expect(captured.properties.headers[key]).toBeNull();
  });

  test("headers that differ from Celery's defaults are sent, tagged, and decode back", () => {
    const task = decodeTask(asDelivered(fixture("task.options.json")));
    const retried = { ...retryOf(task, 5), ignoreResult: true };
    const { content, options } = encodeTask(retried);
    expect(options.headers).toMatchObject({
      retries: { "!": "int", value: 1 },
      timelimit: [
        { "!": "int", value: 300 },
        { "!": "int", value: 200 },
      ],
      parent_id: task.id,
      ignore_result: true,
      custom: "x",
    });

    const plain = (value: unknown): unknown =>
      Array.isArray(value)
        ? value.map(plain)
        : value && typeof value === "object" && "!" in value
          ? (value as unknown as { value: unknown }).value
          : value;
    const headers = Object.fromEntries(
      Object.entries(options.headers).map(([k, v]) => [k, plain(v)]),
    );
    const back = decodeTask({ content, properties: { ...options, headers } });
    expect(back).toEqual(retried);
  });

  test("every header integer is tagged 32- or 64-bit, including inside lists (py-amqp misreads b and s)", () => {
    expect(tagIntegers({ a: 5, b: [300, null], c: 2 ** 40, d: 1.5, e: "7" })).toEqual({
      a: { "!": "int", value: 5 },
      b: [{ "!": "int", value: 300 }, null],
      c: { "!": "int64", value: 2 ** 40 },
      d: 1.5,
      e: "7",
    });
  });

  test("a task with a canvas sends its whole embed", () => {
    const next = { task: "celery_app.task_b", args: [1], options: { task_id: "b" } };
    const task = newTask({ name: "t", args: [], kwargs: {}, replyTo: "r" });
    const chained = { ...task, embed: { ...task.embed, chain: [next] } };
    const body = JSON.parse(encodeTask(chained).content.toString());
    expect(body[2]).toEqual({ callbacks: null, errbacks: null, chain: [next], chord: null });
  });

  test("a retry keeps id and reply queue, adds one to retries, sets eta and parent like Celery", () => {
    const original = decodeTask(asDelivered(fixture("task.task_a.json")));
    const retry = retryOf(original, 2, Date.parse("2026-01-01T00:00:00Z"));
    expect(retry).toMatchObject({
      id: original.id,
      replyTo: original.replyTo,
      args: original.args,
      retries: 1,
      parentId: original.id,
    });
    expect(retry.eta?.toISOString()).toBe("2026-01-01T00:00:02.000Z");
  });

  test("results round-trip with Celery's captured SUCCESS, FAILURE and RETRY bodies", () => {
    for (const name of [
      "result.SUCCESS.json",
      "result.FAILURE.json",
      "result.RETRY.json",
      "result.FAILURE.not_registered.json",
    ]) {
      const captured = fixture(name);
      const decoded = decodeResult({ content: Buffer.from(captured.body_raw), properties: {} });
      expect(decoded).toEqual(captured.body);
      const { content, options } = encodeResult(decoded);
      expect(JSON.parse(content.toString())).toEqual(captured.body);
      expect(options.correlationId).toBe(captured.body.task_id);
    }
  });
});
