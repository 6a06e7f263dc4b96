import { describe, expect, test } from "bun:test";

import { createLogger, parseLogLevel, type LogFormat } from "./log.ts";

function capture(format: LogFormat, level = "debug") {
  const lines: string[] = [];
  const logger = createLogger({ format, level, stream: { write: (c: string) => lines.push(c) } });
  return { logger, lines };
}

describe("JSON logs", () => {
  test("one object per line with time, level, tag and message", () => {
    const { logger, lines } = capture("json");
    logger.withTag("worker").warn("queue_a is gone");

    expect(lines).toHaveLength(1);
    expect(lines[0]).toEndWith("}\n");
    const record = JSON.parse(lines[0]!);
    expect(record).toMatchObject({ level: "warn", tag: "worker", msg: "queue_a is gone" });
    expect(Number.isNaN(Date.parse(record.time))).toBe(false);
  });

  test("fields of a { message, ... } call become fields of the record", () => {
    const { logger, lines } = capture("json");
    logger.withTag("broker").debug({ message: "reconnect attempt 2", attempt: 2, delay: 500 });
    logger.info("sent", { message: "a batch", count: 3 });

    const [alone, after] = lines.map((line) => JSON.parse(line));
    expect(alone).toMatchObject({ msg: "reconnect attempt 2", attempt: 2, delay: 500 });
    expect(after).toMatchObject({ msg: "sent a batch", count: 3 });
  });

  test("broker passwords are masked in the message and in fields", () => {
    const { logger, lines } = capture("json");
    logger.error({ message: "lost amqp://guest:hunter2@host:5672", url: "amqps://u:p4ss@h/v" });

    expect(lines[0]).not.toContain("hunter2");
    expect(lines[0]).not.toContain("p4ss");
    expect(JSON.parse(lines[0]!)).toMatchObject({
      msg: "lost amqp://guest:***@host:5672",
      url: "amqps://u:***@h/v",
    });
  });
});

describe("text logs", () => {
  test("a tag in brackets, the level unless it is info, then the message", () => {
    const { logger, lines } = capture("text");
    logger.withTag("spawn").info("started a worker");
    logger.warn("slow broker");

    expect(lines).toEqual(["[spawn] started a worker\n", "warn: slow broker\n"]);
  });

  test("the level filters what is written", () => {
    const { logger, lines } = capture("text", "warn");
    logger.info("hidden");
    logger.debug("hidden too");
    logger.error("shown");

    expect(lines).toEqual(["error: shown\n"]);
  });
});

describe("parseLogLevel", () => {
  test("names and numbers are accepted; anything else names the choices", () => {
    expect(parseLogLevel("debug")).toBe(4);
    expect(parseLogLevel("2")).toBe(2);
    expect(() => parseLogLevel("loud")).toThrow(
      '--log-level must be one of silent, error, warn, info, debug, trace or a number (got "loud")',
    );
  });
});
