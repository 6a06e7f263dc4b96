import { afterEach, describe, expect, test } from "bun:test";

import { originalEnvironment, reexecWith } from "./engine.ts";

const KEYS = ["DTEST_ENGINE_TUNED", "BUN_JSC_forceRAMSize", "BUN_JSC_useFTLJIT"];
const saved = Object.fromEntries(KEYS.map((k) => [k, process.env[k]]));

afterEach(() => {
  for (const key of KEYS) {
    if (saved[key] === undefined) delete process.env[key];
    else process.env[key] = saved[key];
  }
});

describe("engine settings", () => {
  test("a process that cannot be executed again carries on instead of failing", () => {
    delete process.env.DTEST_ENGINE_TUNED;
    expect(() => reexecWith({ BUN_JSC_forceRAMSize: "1" }, ["/nonexistent/dtest"])).not.toThrow();
  });

  test("commands get the environment without what the re-execution added, and keep the rest", () => {
    process.env.DTEST_ENGINE_TUNED = "BUN_JSC_forceRAMSize";
    process.env.BUN_JSC_forceRAMSize = String(512 * 1024 * 1024);
    process.env.BUN_JSC_useFTLJIT = "1"; // set by the user before the worker started

    const env = originalEnvironment();
    expect(env.BUN_JSC_forceRAMSize).toBeUndefined();
    expect(env.DTEST_ENGINE_TUNED).toBeUndefined();
    expect(env.BUN_JSC_useFTLJIT).toBe("1");
    expect(env.PATH).toBe(process.env.PATH);
  });
});
