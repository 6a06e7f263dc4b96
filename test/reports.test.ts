/**
 * The reports `dtest dispatch` writes for CI (JSON, JUnit XML, Markdown, HTML), the history of
 * runs and `dtest report diff`, and the SVG picture of `dtest load-test --report`, against the
 * real broker and the compiled binary. The JUnit XML is checked with xmllint against
 * test/fixtures/junit/junit.xsd; the HTML page and the SVG are rendered by a real headless
 * Chromium.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inflateSync } from "node:zlib";

import { ROOT, run, startWorker, stopAll, tempDir, writeConfig, ownQueues } from "./helpers.ts";

const XSD = join(ROOT, "test/fixtures/junit/junit.xsd");

const owned = ownQueues();

function queue(prefix: string): string {
  return owned.queue(prefix);
}

/** A tool the test needs from the system, or one line saying how to install it. */
function tool(name: string, envVar: string, install: string): string {
  const path = process.env[envVar] || Bun.which(name);
  if (path && existsSync(path)) return path;
  throw new Error(
    `${name} is not installed (${path ?? "not on PATH"}); install it with \`${install}\``,
  );
}

async function exec(argv: string[], timeoutMs = 30_000) {
  const started = Date.now();
  const child = Bun.spawn(argv, {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: timeoutMs,
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (child.signalCode && Date.now() - started >= timeoutMs) {
    throw new Error(`${argv[0]} did not finish within ${timeoutMs / 1000} s and was stopped`);
  }
  return { code, stdout, stderr };
}

function xmllint(file: string) {
  const bin = tool("xmllint", "XMLLINT", "apt-get install libxml2-utils");
  return exec([bin, "--noout", "--schema", XSD, file]);
}

/** Runs headless Chromium on a local page; no network, a fresh profile each time. */
async function chromium(page: string, extra: string[]) {
  const bin = tool("chromium", "CHROMIUM", "apt-get install chromium");
  const flags = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    `--user-data-dir=${tempDir()}`,
  ];
  const result = await exec([bin, ...flags, ...extra, `file://${page}`]);
  if (result.code !== 0) {
    const last = result.stderr.trim().split("\n").at(-1) ?? "";
    throw new Error(`chromium exited ${result.code} and did not render ${page}: ${last}`);
  }
  return result;
}

/** The RGB(A) pixels of an 8-bit, non-interlaced PNG, as Chromium writes screenshots. */
function decodePng(bytes: Uint8Array): {
  width: number;
  height: number;
  pixel: (x: number, y: number) => number[];
} {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const idat: Uint8Array[] = [];
  let width = 0;
  let height = 0;
  let channels = 0;
  for (let at = 8; at < bytes.length;) {
    const length = view.getUint32(at);
    const type = new TextDecoder().decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(at + 8);
      height = view.getUint32(at + 12);
      if (data[8] !== 8 || data[12] !== 0) throw new Error("expected an 8-bit, non-interlaced PNG");
      channels = ({ 2: 3, 6: 4 } as Record<number, number>)[data[9]!] ?? 0;
      if (channels === 0) throw new Error(`unexpected PNG colour type ${data[9]}`);
    }
    if (type === "IDAT") idat.push(data);
    at += 12 + length;
  }

  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    for (let i = 0; i < stride; i++) {
      const value = raw[y * (stride + 1) + 1 + i]!;
      const left = i >= channels ? out[y * stride + i - channels]! : 0;
      const up = y > 0 ? out[(y - 1) * stride + i]! : 0;
      const corner = y > 0 && i >= channels ? out[(y - 1) * stride + i - channels]! : 0;
      const p = left + up - corner;
      const [pa, pb, pc] = [Math.abs(p - left), Math.abs(p - up), Math.abs(p - corner)];
      const paeth = pa <= pb && pa <= pc ? left : pb <= pc ? up : corner;
      const predictor = [0, left, up, (left + up) >> 1, paeth][filter]!;
      out[y * stride + i] = (value + predictor) & 0xff;
    }
  }
  const pixel = (x: number, y: number) => [
    ...out.subarray(y * stride + x * channels, y * stride + x * channels + 3),
  ];
  return { width, height, pixel };
}

describe("reports of one run", () => {
  const dir = tempDir();
  const qa = queue("rep_a");
  const qb = queue("rep_b");
  const workerA = `${qa}@reports`;
  const workerB = `${qb}@reports`;
  const out = (name: string) => join(dir, "out", name);
  let result: { code: number; stdout: string; stderr: string };

  beforeAll(async () => {
    const marker = join(dir, "attempts");
    const file = writeConfig(
      dir,
      `
test_scenario:
  description: "Reports scenario"
  tasks:
    - task: passes
    - task: breaks
    - task: flaky
    - task: many
      count: 3
task_routing:
  passes: ${qa}
  flaky: ${qa}
  breaks: ${qb}
  many: ${qb}
retry_config: { max_retries: 2, retry_delay: 0.05, retry_backoff: false, retry_jitter: false }
tasks:
  passes: { kind: hello, message: "all good", duration: 0.1 }
  flaky:
    kind: exec
    command: ["sh", "-c", "echo x >> ${marker}; test $(wc -l < ${marker}) -ge 2"]
  breaks:
    kind: exec
    max_retries: 0
    command: ["sh", "-c", "echo 'ran 3 checks'; printf '\\\\033[31mcheck <b> & c failed\\\\033[0m\\\\n' >&2; exit 3"]
  many: { kind: hello, message: "one of many", duration: 0.2 }
`,
    );
    const workers = [
      await startWorker(qa, file, ["--concurrency", "2", "--name", workerA]),
      await startWorker(qb, file, ["--concurrency", "2", "--name", workerB]),
    ];
    try {
      result = await run([
        "dispatch",
        "--config",
        file,
        "--json",
        out("run.json"),
        "--junit",
        out("junit.xml"),
        "--summary",
        out("summary.md"),
        "--html",
        out("run.html"),
      ]);
    } finally {
      await stopAll(workers);
    }
  });

  test("dispatch prints its usual report, logs each file written and exits 1 for the failed task", () => {
    expect(result.stdout).toContain(
      "Result from breaks: FAILED (ExpectationFailed: expected exit code 0, got 3)",
    );
    for (const name of ["run.json", "junit.xml", "summary.md", "run.html"])
      expect(result.stderr).toContain(out(name));
    expect(result.code).toBe(1);
  });

  test("the JSON carries the schema tag, the scenario, every task with its worker, times and output", () => {
    const report = JSON.parse(readFileSync(out("run.json"), "utf8"));
    expect(report.schema).toBe("dtest.run/1");
    expect(report.scenario).toMatchObject({
      description: "Reports scenario",
      config_file: join(dir, "test-config.yml"),
    });
    expect(report.totals).toMatchObject({
      tasks: 6,
      passed: 5,
      failed: 1,
      no_result: 0,
      retries: 1,
      duplicates: 0,
    });
    expect(report).toMatchObject({ exit_code: 1, reason: "1 task(s) failed" });
    expect(report.tasks.map((t: { label: string }) => t.label)).toEqual([
      "passes",
      "breaks",
      "flaky",
      "many #1",
      "many #2",
      "many #3",
    ]);

    const [passes, breaks, flaky] = report.tasks;
    expect(passes).toMatchObject({
      queue: qa,
      worker: workerA,
      status: "SUCCESS",
      outcome: "pass",
      result: "all good",
      error: null,
    });
    expect(flaky).toMatchObject({ outcome: "pass", retries: 1, exit_code: 0 });
    expect(breaks).toMatchObject({
      queue: qb,
      worker: workerB,
      status: "FAILURE",
      outcome: "fail",
      result: "exit 3",
      exit_code: 3,
      retries: 0,
      error: "ExpectationFailed: expected exit code 0, got 3",
      error_type: "ExpectationFailed",
      stdout_tail: "ran 3 checks\n",
    });
    expect(breaks.stderr_tail).toContain("check <b> & c failed");

    for (const task of report.tasks) {
      expect(task.id).toMatch(/^[0-9a-f-]{36}$/);
      const times = [task.sent_at, task.started_at, task.finished_at, task.replied_at].map(
        Date.parse,
      );
      expect(times.every(Number.isFinite)).toBe(true);
      expect([...times].sort((a, b) => a - b)).toEqual(times);
      expect(task.execution_seconds).toBeGreaterThanOrEqual(0);
    }
  });

  test("the JUnit XML validates against the schema, with counts, failure text and output", async () => {
    const lint = await xmllint(out("junit.xml"));
    expect(lint.stderr).toContain("validates");
    expect(lint.code).toBe(0);

    const xml = readFileSync(out("junit.xml"), "utf8");
    expect(xml).toMatch(
      /<testsuite name="Reports scenario" tests="6" failures="1" errors="0" skipped="0" time="[\d.]+"/,
    );
    expect(xml.match(/<testcase /g)).toHaveLength(6);
    expect(xml).toContain(`<testcase classname="${qb}" name="many #2" time="0.2`);
    expect(xml).toContain(
      '<failure message="ExpectationFailed: expected exit code 0, got 3" type="ExpectationFailed">',
    );
    expect(xml).toContain("<system-out>task ");
    expect(xml).toContain("ran 3 checks");
    // The colour codes are gone and the specials escaped.
    expect(xml).toContain("<system-err>check &lt;b&gt; &amp; c failed\n</system-err>");
  });

  test("the schema refuses a testcase without a name, so validation is not vacuous", async () => {
    const broken = join(dir, "broken.xml");
    writeFileSync(
      broken,
      readFileSync(out("junit.xml"), "utf8").replace(
        /<testcase classname="([^"]+)" name="[^"]+"/,
        '<testcase classname="$1"',
      ),
    );
    const lint = await xmllint(broken);
    expect(lint.stderr).toContain("The attribute 'name' is required but missing");
    expect(lint.code).not.toBe(0);
  });

  test("the Markdown summary has the headline, the totals and a row per task", () => {
    const md = readFileSync(out("summary.md"), "utf8");
    expect(md).toStartWith("# dtest: Reports scenario\n");
    expect(md).toContain("**FAIL: 1 of 6 tasks failed (exit 1: 1 task(s) failed)**");
    expect(md).toMatch(/\| 6 \| 5 \| 1 \| 0 \| 1 \| [\d.]+ s \| [\d.]+ s \|/);
    expect(md).toContain(`| PASS | passes | ${qa} | 0.1`);
    expect(md).toContain(`| FAIL | breaks | ${qb} | `);
    expect(md).toMatch(
      new RegExp(`\\| PASS \\| flaky \\| ${qa} \\| [\\d.]+ s \\| 1 \\| ${workerA} \\| exit 0 \\|`),
    );
    expect(md.match(/^\| PASS \| many #\d /gm)).toHaveLength(3);
    expect(md).toContain("## Tasks that did not pass");
  });

  test("the HTML page loads nothing from elsewhere and has no script", () => {
    const page = readFileSync(out("run.html"), "utf8");
    expect(page).toStartWith("<!doctype html>");
    expect(page).not.toMatch(/<script|<link|<img|<iframe|\bsrc=|\bhref=|url\(|@import/i);
  });

  test("headless Chromium renders one timeline row per worker and one bar per task", async () => {
    const { stdout: dom } = await chromium(out("run.html"), ["--dump-dom"]);
    const rows = [
      ...dom.matchAll(/<g class="worker-row" data-worker="([^"]+)" data-tasks="(\d+)"/g),
    ];
    expect(rows.map((m) => [m[1], m[2]])).toEqual([
      [workerA, "2"],
      [workerB, "4"],
    ]);
    const bars = [...dom.matchAll(/<rect class="task-bar (\w+)" data-task="([^"]+)"/g)];
    expect(bars.map((m) => m[2]).sort()).toEqual([
      "breaks",
      "flaky",
      "many #1",
      "many #2",
      "many #3",
      "passes",
    ]);
    expect(bars.filter((m) => m[1] === "fail").map((m) => m[2])).toEqual(["breaks"]);
    expect(dom.match(/<tr class="task-row"/g)).toHaveLength(6);
  });

  test("the screenshot of the page is a real picture with the bars' colours in it", async () => {
    const png = join(dir, "timeline.png");
    await chromium(out("run.html"), [`--screenshot=${png}`, "--window-size=1200,800"]);
    const bytes = new Uint8Array(readFileSync(png));
    expect(bytes.length).toBeGreaterThan(10_000);

    const image = decodePng(bytes);
    expect([image.width, image.height]).toEqual([1200, 800]);
    const seen = new Map<string, number>();
    for (let y = 0; y < image.height; y += 2) {
      for (let x = 0; x < image.width; x += 2) {
        const key = image.pixel(x, y).join(",");
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
    }
    expect(seen.size).toBeGreaterThan(20);
    expect(seen.get("22,163,74") ?? 0).toBeGreaterThan(200); // pass bars, #16a34a
    expect(seen.get("220,38,38") ?? 0).toBeGreaterThan(0); // the failed bar, #dc2626
  });
});

describe("the load-test picture", () => {
  test("--report FILE.svg is one well-formed SVG that Chromium draws with both charts", async () => {
    const qa = queue("pic");
    const dir = tempDir();
    const yaml = `task_routing:\n  ping: ${qa}\ntasks:\n  ping: { kind: noop }\n`;
    const file = writeConfig(dir, yaml);
    const worker = await startWorker(qa, file);
    const svg = join(dir, "load.svg");
    try {
      const result = await run(["load-test", "--config", file, "--tasks", "300", "--report", svg]);
      expect(result.code).toBe(0);
    } finally {
      await stopAll([worker]);
    }

    const text = readFileSync(svg, "utf8");
    expect(text).toStartWith('<?xml version="1.0" encoding="utf-8"?>\n<svg ');
    expect(text.match(/<svg /g)).toHaveLength(3);
    expect(text).toContain("sent 300, succeeded 300");
    expect(text).toMatch(/stroke-dasharray="4 3"\/>\n<text [^>]*>p50 [\d.]+ ms<\/text>/);
    expect(text).toMatch(/>p99 [\d.]+ ms<\/text>/);
    expect(text).not.toMatch(/<script|href=/);
    const xmllintBin = tool("xmllint", "XMLLINT", "apt-get install libxml2-utils");
    const lint = await exec([xmllintBin, "--noout", svg]);
    expect(lint.stderr).toBe("");
    expect(lint.code).toBe(0);

    const png = join(dir, "load.png");
    await chromium(svg, [`--screenshot=${png}`, "--window-size=760,900"]);
    const image = decodePng(new Uint8Array(readFileSync(png)));
    const seen = new Map<string, number>();
    for (let y = 0; y < image.height; y++) {
      for (let x = 0; x < image.width; x++) {
        const key = image.pixel(x, y).join(",");
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
    }
    expect(seen.get("59,130,246") ?? 0).toBeGreaterThan(100); // histogram bars, #3b82f6
    expect(seen.get("22,163,74") ?? 0).toBeGreaterThan(20); // throughput line, #16a34a
  });
});

describe("a task without a result", () => {
  test("is a JUnit <error>, a NO RESULT row and its own timeline row; exit 3", async () => {
    const dir = tempDir();
    const q = queue("rep_late");
    const file = writeConfig(
      dir,
      `
task_routing:
  quick: ${q}
  late: ${q}
tasks:
  quick: { kind: hello, message: done, duration: 0.05 }
  late: { kind: hello, message: never seen, duration: 30 }
test_scenario:
  tasks: [{ task: quick }, { task: late }]
`,
    );
    const worker = await startWorker(q, file, ["--concurrency", "2"]);
    const junit = join(dir, "junit.xml");
    const html = join(dir, "run.html");
    let result;
    try {
      result = await run([
        "dispatch",
        "--config",
        file,
        "--timeout",
        "0.5",
        "--junit",
        junit,
        "--html",
        html,
      ]);
    } finally {
      worker.child.kill("SIGKILL");
      await worker.exit();
    }

    expect((await xmllint(junit)).code).toBe(0);
    const xml = readFileSync(junit, "utf8");
    expect(xml).toContain('tests="2" failures="0" errors="1"');
    expect(xml).toMatch(
      /<error message="no result before the run ended \(last state PENDING; no result within 0.5 s for 1 task\(s\)\)" type="NoResult">/,
    );
    const page = readFileSync(html, "utf8");
    expect(page).toContain('data-worker="(no result)" data-tasks="1"');
    expect(page).toContain('<td class="status no_result">NO RESULT</td>');
    expect(result.code).toBe(3);
  });
});

describe("history and report diff", () => {
  const dir = tempDir();
  const history = join(dir, "history");
  const q = queue("rep_hist");
  let file: string;

  /** One dispatch into the history with the given sleep and exit code for the exec tasks. */
  async function dispatchWith(sleep: string, exitCode: number) {
    writeFileSync(join(dir, "sleep"), sleep);
    writeFileSync(join(dir, "code"), String(exitCode));
    return run(["dispatch", "--config", file, "--history", history]);
  }

  beforeAll(() => {
    file = writeConfig(
      dir,
      `
task_routing:
  steady: ${q}
  slows: ${q}
  breaks: ${q}
retry_config: { max_retries: 0 }
tasks:
  steady: { kind: hello, message: same, duration: 0.05 }
  slows: { kind: exec, command: ["sh", "-c", "sleep $(cat ${dir}/sleep)"] }
  breaks: { kind: exec, command: ["sh", "-c", "exit $(cat ${dir}/code)"] }
test_scenario:
  tasks: [{ task: steady }, { task: slows }, { task: breaks }]
`,
    );
  });

  test("a status change and a slower task between runs exit 1; identical runs exit 0", async () => {
    const worker = await startWorker(q, file, ["--concurrency", "3"]);
    try {
      expect((await dispatchWith("0.05", 0)).code).toBe(0);
      expect((await dispatchWith("0.6", 1)).code).toBe(1);
      expect((await dispatchWith("0.6", 1)).code).toBe(1);
    } finally {
      await stopAll([worker]);
    }

    const runs = readdirSync(history);
    expect(runs).toHaveLength(3);
    expect(
      runs.every((name) => /^run-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z\.json$/.test(name)),
    ).toBe(true);
    const [first, second] = [...runs].sort().map((name) => join(history, name));

    const changed = await run(["report", "diff", first!, second!]);
    expect(changed.stdout).toMatch(/breaks\s+PASS → FAIL\s+REGRESSION/);
    expect(changed.stdout).toMatch(/slows\s+0\.0\d\ds → 0\.6\d\ds \(\+\d+(\.\d)?%, \+\d+ ms\)/);
    expect(changed.stdout).not.toMatch(/steady/);
    expect(changed.stdout).toContain("Result: 1 status regression(s), 1 time regression(s)");
    expect(changed.code).toBe(1);

    const same = await run(["report", "diff", history]);
    expect(same.stdout).toContain("Status changes: none");
    expect(same.stdout).toContain("Result: no regressions");
    expect(same.code).toBe(0);

    const json = await run([
      "report",
      "diff",
      first!,
      second!,
      "--json",
      "--threshold",
      "50",
      "--min-ms",
      "100",
    ]);
    const diff = JSON.parse(json.stdout);
    expect(diff).toMatchObject({
      schema: "dtest.diff/1",
      threshold_percent: 50,
      min_ms: 100,
      status_regressions: 1,
      exit_code: 1,
    });
    expect(diff.status_changes).toEqual([
      { key: "breaks#1", label: "breaks", from: "pass", to: "fail", regression: true },
    ]);
    expect(diff.time_regressions.map((t: { key: string }) => t.key)).toEqual(["slows#1"]);
    expect(json.code).toBe(1);
  });

  test("new and removed tasks are listed; a new task that passes is not a regression", async () => {
    const [, , last] = readdirSync(history)
      .sort()
      .map((name) => join(history, name));
    const renamed = join(dir, "renamed.json");
    writeFileSync(renamed, readFileSync(last!, "utf8").replaceAll('"steady"', '"fresh"'));

    const result = await run(["report", "diff", last!, renamed]);
    expect(result.stdout).toMatch(/fresh\s+\(absent\) → PASS \(new\)\n/);
    expect(result.stdout).toMatch(/steady\s+PASS → \(absent\) \(removed\)\n/);
    expect(result.code).toBe(0);
  });

  test.each([
    [
      ["report", "diff", "/nonexistent/run.json", "/nonexistent/other.json"],
      "cannot read /nonexistent/run.json",
    ],
    [
      ["report", "diff", join(ROOT, "package.json"), join(ROOT, "package.json")],
      'is not a dtest run report: schema is undefined, expected "dtest.run/1"',
    ],
    [["report", "diff", join(ROOT, "package.json")], "one argument must be a history directory"],
    [["report", "diff", tempDir()], "holds 0 run(s); the comparison needs 2"],
    [["report", "diff", "a.json", "b.json", "--threshold=-5"], "--threshold must be a number ≥ 0"],
    [["dispatch", "--junit", ""], "--junit needs a path"],
  ])("usage problem %p exits 2 naming it", async (args, message) => {
    const result = await run(args);
    expect(result.stderr).toContain(message);
    expect(result.code).toBe(2);
  });
});
