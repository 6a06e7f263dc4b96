import { describe, expect, test } from "bun:test";

import { BitSet, Histogram, Summary, Timeline } from "./stats.ts";

/** The exact percentile of a sorted array, by the same nearest-rank rule the histogram uses. */
function exact(sorted: number[], p: number): number {
  return sorted[Math.max(1, Math.ceil((p / 100) * sorted.length)) - 1]!;
}

/** A repeatable stream of numbers in [0, 1). */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2 ** 31;
    return state / 2 ** 31;
  };
}

/** A standard normal draw, by the Box–Muller transform. */
function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

const distributions: [string, (next: () => number) => number][] = [
  ["uniform 1–1000 ms", (next) => 1 + 999 * next()],
  ["exponential, mean 2 ms", (next) => -2 * Math.log(1 - next())],
  ["log-normal around 5 ms", (next) => 5 * Math.exp(gaussian(next))],
  ["two modes, 0.4 ms and 120 ms", (next) => (next() < 0.9 ? 0.4 : 120) * (1 + 0.05 * next())],
];

describe("Histogram", () => {
  test.each(distributions)("%s: p50, p95, p99 are within 1 %% of the exact values", (_, draw) => {
    const next = random(42);
    const samples = Array.from({ length: 50_000 }, () => draw(next));
    const histogram = new Histogram();
    for (const ms of samples) histogram.record(ms);
    samples.sort((a, b) => a - b);

    for (const p of [50, 95, 99]) {
      const want = exact(samples, p);
      expect(Math.abs(histogram.percentile(p) - want) / want).toBeLessThanOrEqual(0.01);
    }
    expect(histogram.percentile(100)).toBe(samples.at(-1)!);
    expect(histogram.max).toBe(samples.at(-1)!);
    expect(histogram.min).toBe(samples[0]!);
    expect(histogram.count).toBe(samples.length);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    expect(histogram.mean()).toBeCloseTo(mean, 6);
  });

  test("a single value is every percentile, exactly", () => {
    const histogram = new Histogram();
    for (let i = 0; i < 10; i++) histogram.record(3.7);
    expect([50, 99, 100].map((p) => histogram.percentile(p))).toEqual([3.7, 3.7, 3.7]);
  });

  test("an empty histogram reports 0 and no bars", () => {
    const histogram = new Histogram();
    expect(histogram.percentile(99)).toBe(0);
    expect(histogram.mean()).toBe(0);
    expect(histogram.bars()).toEqual([]);
  });

  test("values outside its range are clamped, not lost", () => {
    const histogram = new Histogram();
    histogram.record(-5);
    histogram.record(0);
    histogram.record(1e9);
    expect(histogram.count).toBe(3);
    expect(histogram.percentile(100)).toBe(1e9);
    expect(histogram.bars(10).reduce((n, b) => n + b.count, 0)).toBe(3);
  });

  test("bars cover min to max on a log scale and hold every sample", () => {
    const histogram = new Histogram();
    for (let ms = 1; ms <= 1000; ms++) histogram.record(ms);
    const bars = histogram.bars(30);
    expect(bars).toHaveLength(30);
    expect(bars[0]!.fromMs).toBeCloseTo(1, 6);
    expect(bars.at(-1)!.toMs).toBeCloseTo(1000, 6);
    expect(bars.reduce((n, b) => n + b.count, 0)).toBe(1000);
    const ratios = bars.map((b) => b.toMs / b.fromMs);
    for (const r of ratios) expect(r).toBeCloseTo(ratios[0]!, 6);
  });
});

describe("Timeline", () => {
  test("counts completions in whole seconds since the start, with empty seconds kept", () => {
    const timeline = new Timeline(10_000);
    for (const at of [10_000, 10_999, 11_000, 13_500, 9_000]) timeline.record(at);
    expect(timeline.perSecond).toEqual([3, 1, 0, 1]);
  });
});

describe("Summary", () => {
  test("keeps count, mean and max", () => {
    const summary = new Summary();
    for (const v of [0.1, 0.2, 0.6]) summary.record(v);
    expect(summary.count).toBe(3);
    expect(summary.mean()).toBeCloseTo(0.3, 9);
    expect(summary.max).toBe(0.6);
  });
});

describe("BitSet", () => {
  test("remembers members beyond its first allocation and nothing else", () => {
    const set = new BitSet();
    const members = [0, 7, 8, 8191, 8192, 123_456, 1_000_003];
    for (const n of members) set.add(n);
    for (const n of members) expect(set.has(n)).toBe(true);
    for (const n of [1, 6, 9, 8190, 8193, 123_455, 1_000_002, 5_000_000]) {
      expect(set.has(n)).toBe(false);
    }
  });
});
