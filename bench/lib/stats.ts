/** Small statistics over samples: medians for repeated timings, percentiles for latencies. */

/** The value below which `p` percent of the samples fall (nearest rank); NaN when empty. */
export function percentile(samples: ArrayLike<number>, p: number): number {
  if (samples.length === 0) return Number.NaN;

  const sorted = Float64Array.from(samples).sort();
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))]!;
}

/** The middle sample (the mean of the two middle ones for an even count); NaN when empty. */
export function median(samples: ArrayLike<number>): number {
  if (samples.length === 0) return Number.NaN;

  const sorted = Float64Array.from(samples).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function mean(samples: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i]!;
  return samples.length === 0 ? Number.NaN : sum / samples.length;
}

export function max(samples: ArrayLike<number>): number {
  let top = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < samples.length; i++) top = Math.max(top, samples[i]!);
  return samples.length === 0 ? Number.NaN : top;
}

export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

/** p50/p95/p99/max/mean of latencies in ms, the shape dtest's load-test JSON uses. */
export function latencySummary(samples: ArrayLike<number>): LatencySummary {
  return {
    p50: percentile(samples, 50),
    p95: percentile(samples, 95),
    p99: percentile(samples, 99),
    max: max(samples),
    mean: mean(samples),
  };
}
