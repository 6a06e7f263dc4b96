import { describe, expect, test } from "bun:test";

import type { RetryConfig } from "./config.ts";
import { defaultWorkerName, retryDelay } from "./runtime.ts";

const seed: RetryConfig = {
  maxRetries: 3,
  retryDelay: 60,
  retryBackoff: true,
  retryBackoffMax: 600,
  retryJitter: false,
};

describe("retry delays follow Celery's formula", () => {
  test.each([
    [0, 60],
    [1, 120],
    [2, 240],
    [3, 480],
    [4, 600],
    [9, 600],
  ])("with backoff, retry %i waits %i s (capped at retry_backoff_max)", (retries, seconds) => {
    expect(retryDelay(seed, retries)).toBe(seconds);
  });

  test("without backoff every retry waits retry_delay", () => {
    expect(retryDelay({ ...seed, retryBackoff: false }, 5)).toBe(60);
  });

  test("full jitter draws uniformly below the backoff delay", () => {
    const jitter = { ...seed, retryJitter: true };
    expect(retryDelay(jitter, 2, () => 0.5)).toBe(120);
    expect(retryDelay(jitter, 2, () => 0)).toBe(0);
  });
});

test("the default worker name comes from the queue and the host", () => {
  expect(defaultWorkerName("queue_a")).toMatch(/^worker-a@.+/);
  expect(defaultWorkerName("builds")).toMatch(/^worker-builds@.+/);
});
