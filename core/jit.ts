/**
 * The compiled binary starts with JavaScriptCore's JIT made reluctant: the Makefile builds it
 * with `--compile-jit-policy=20`, tier-up thresholds 20 times the usual. Start-up code runs
 * once, and compiling it costs more than interpreting it. Commands that go on to handle a
 * stream of messages call `startupFinished` when they reach that steady state, so the code
 * that runs per message is compiled as usual.
 */

/** Restores the normal JIT policy; a no-op where the runtime has no such control. */
export function startupFinished(): void {
  Bun.unsafe.setJITPolicy?.(1);
}
