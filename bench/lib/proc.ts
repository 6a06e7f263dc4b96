/**
 * Child processes for the bench: started with their output collected so a line can be awaited,
 * stopped with SIGTERM, timed from spawn to exit, and their memory sampled from /proc.
 */
import { readFileSync } from "node:fs";

import type { Subprocess } from "bun";

/** Output kept per stream; enough for every line the bench looks for, bounded for long runs. */
const KEEP_CHARS = 256 * 1024;

/** A running child whose stdout and stderr are read as they arrive. */
export class Child {
  stdout = "";
  stderr = "";
  private waiters: (() => void)[] = [];
  private readonly drained: Promise<unknown>;

  constructor(
    readonly argv: string[],
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
    /** performance.now() just before the spawn, so timings include fork and exec. */
    readonly startedAt: number,
  ) {
    const out = this.pump(proc.stdout, "stdout");
    const err = this.pump(proc.stderr, "stderr");
    this.drained = Promise.all([out, err]);
  }

  get pid(): number {
    return this.proc.pid;
  }

  private async pump(stream: ReadableStream<Uint8Array>, field: "stdout" | "stderr") {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = this[field] + decoder.decode(chunk, { stream: true });
      this[field] = text.length > KEEP_CHARS ? text.slice(-KEEP_CHARS) : text;
      for (const wake of this.waiters.splice(0)) wake();
    }
  }

  /** Resolves with the ms since spawn once `text` is on stderr; rejects on exit or timeout. */
  async waitForStderr(text: string, timeoutMs = 15_000): Promise<number> {
    const deadline = this.startedAt + timeoutMs;
    let exited = false;
    void this.proc.exited.then(() => (exited = true));

    while (!this.stderr.includes(text)) {
      if (exited || performance.now() > deadline) {
        const why = exited
          ? `exited with ${this.proc.exitCode}`
          : `no "${text}" within ${timeoutMs} ms`;
        throw new Error(`${this.argv.join(" ")}: ${why}; stderr:\n${this.stderr.slice(-2000)}`);
      }
      await Promise.race([new Promise<void>((wake) => this.waiters.push(wake)), Bun.sleep(20)]);
    }
    return performance.now() - this.startedAt;
  }

  /** Waits for exit and the end of its output; returns the exit code. */
  async exit(): Promise<number> {
    const code = await this.proc.exited;
    await this.drained;
    return code;
  }

  /** CPU time the process used, user and system, ms; undefined until it has exited. */
  cpuMs(): number | undefined {
    const usage = this.proc.resourceUsage();
    return usage ? Number(usage.cpuTime.total) / 1000 : undefined;
  }

  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.drainOnly();

    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    await this.exit();
    clearTimeout(timer);
  }

  private async drainOnly(): Promise<void> {
    await this.drained;
  }
}

/** Starts `argv` with piped output and no stdin. */
export function spawnChild(argv: string[], env: Record<string, string> = {}): Child {
  const startedAt = performance.now();
  const proc = Bun.spawn(argv, {
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  return new Child(argv, proc, startedAt);
}

export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
  /** Spawn to exit, ms. */
  wallMs: number;
  /** CPU time of the process, user and system, ms. */
  cpuMs?: number;
}

/** Runs `argv` to completion and times it from spawn to exit. */
export async function runTimed(
  argv: string[],
  env: Record<string, string> = {},
): Promise<Finished> {
  const child = spawnChild(argv, env);
  await child.proc.exited;
  const wallMs = performance.now() - child.startedAt;
  const code = await child.exit();
  return { code, stdout: child.stdout, stderr: child.stderr, wallMs, cpuMs: child.cpuMs() };
}

/** Reads one `kB` field of /proc/<pid>/status in MB; undefined once the process is gone. */
function statusMb(pid: number, field: "VmRSS" | "VmHWM"): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    // The process exited between two samples; the earlier samples stand.
    return undefined;
  }
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return match ? Number(match[1]) / 1024 : undefined;
}

export interface RssSampler {
  /** Stops sampling; returns the largest VmRSS seen across the pids, MB. */
  stop(): { maxRssMb: number; peakHwmMb: number; samples: number };
}

/**
 * Samples VmRSS of `pids` every `everyMs` and keeps the maximum. VmHWM (the kernel's own peak)
 * is read too, as a check that sampling did not miss a short spike.
 */
export function sampleRss(pids: () => number[], everyMs = 25): RssSampler {
  let maxRssMb = 0;
  let peakHwmMb = 0;
  let samples = 0;
  const tick = () => {
    for (const pid of pids()) {
      const rss = statusMb(pid, "VmRSS");
      const hwm = statusMb(pid, "VmHWM");
      if (rss !== undefined) {
        maxRssMb = Math.max(maxRssMb, rss);
        samples++;
      }
      if (hwm !== undefined) peakHwmMb = Math.max(peakHwmMb, hwm);
    }
  };
  tick();
  const timer = setInterval(tick, everyMs);
  return {
    stop() {
      clearInterval(timer);
      tick();
      return { maxRssMb, peakHwmMb, samples };
    },
  };
}
