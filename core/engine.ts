/**
 * JavaScriptCore settings that fit how dtest runs.
 *
 * Start-up: the compiled binary starts with the JIT made reluctant (the Makefile builds it
 * with `--compile-jit-policy=20`, tier-up thresholds 20 times the usual). Start-up code runs
 * once, and compiling it costs more than interpreting it. Commands that go on to handle a
 * stream of messages call `startupFinished` when they reach that steady state.
 *
 * Workers: JavaScriptCore sizes its heap from the machine's RAM and compiles hot code up to
 * its last tier (FTL) on background threads. For a small process that runs the same short
 * path per message, many of them per host, both are a poor trade: a worker's resident memory
 * under load rose to ~105 MB. A worker therefore re-executes itself once at start with a heap
 * sized for 512 MB and the FTL tier off (~78 MB under the same load, no slower). Turning the
 * DFG tier off as well saves ~8 MB more but adds ~0.14 ms to every round trip.
 * Settings already in the environment win; DTEST_ENGINE_TUNED=1 skips the re-execution.
 * After it, DTEST_ENGINE_TUNED lists the variables dtest added, so that the commands exec
 * tasks run (which may well be Bun programs) get the environment the worker was started with.
 */

/** Environment JavaScriptCore reads at start for a worker. */
export const WORKER_ENGINE_ENV: Record<string, string> = {
  BUN_JSC_forceRAMSize: String(512 * 1024 * 1024),
  BUN_JSC_useFTLJIT: "0",
};

const TUNED = "DTEST_ENGINE_TUNED";

/** Restores the normal JIT policy; a no-op where the runtime has no such control. */
export function startupFinished(): void {
  Bun.unsafe.setJITPolicy?.(1);
}

/**
 * Replaces this process with itself, same arguments and PID, started with `env` added to its
 * environment (existing variables win). Returns only when that already happened, was turned
 * off, or cannot be done here.
 */
export function reexecWith(env: Record<string, string>, command: string[]): void {
  if (process.env[TUNED] !== undefined || typeof process.execve !== "function") return;

  const added = Object.keys(env).filter((key) => process.env[key] === undefined);
  const merged = { ...env, ...process.env, [TUNED]: added.join(",") || "1" };
  try {
    process.execve(command[0]!, [...command, ...process.argv.slice(2)], merged);
  } catch {
    // The binary cannot be executed again (moved, or a no-exec mount): run as started, with
    // the engine's defaults, rather than not at all.
  }
}

/** This process's environment without what `reexecWith` added: for the commands it runs. */
export function originalEnvironment(): Record<string, string | undefined> {
  const env = { ...process.env };
  for (const key of (env[TUNED] ?? "").split(",")) {
    if (key.startsWith("BUN_JSC_")) delete env[key];
  }
  delete env[TUNED];
  return env;
}
