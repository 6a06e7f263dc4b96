/**
 * Streaming statistics with memory that does not grow with the number of samples: a
 * log-bucketed latency histogram (percentiles within 1 %), a per-second throughput
 * timeline, and count/mean/max summaries.
 */

const MIN_MS = 0.01;
const MAX_MS = 3_600_000;
/** Each bucket is 2 % wider than the one before, so a percentile is off by at most 1 %. */
const GROWTH = 1.02;
const BUCKETS = Math.ceil(Math.log(MAX_MS / MIN_MS) / Math.log(GROWTH)) + 1;

export class Histogram {
  private readonly counts = new Uint32Array(BUCKETS);
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  record(ms: number): void {
    const value = Math.max(ms, 0);
    const index =
      value <= MIN_MS
        ? 0
        : Math.min(BUCKETS - 1, Math.floor(Math.log(value / MIN_MS) / Math.log(GROWTH)));
    this.counts[index]!++;
    this.count++;
    this.sum += value;
    this.min = Math.min(this.min, value);
    this.max = Math.max(this.max, value);
  }

  /**
   * The value below which `p` (0-100) percent of samples fall, within 1 %; the largest sample
   * itself for the top rank, and 0 when empty.
   */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    if (rank >= this.count) return this.max;
    let seen = 0;

    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const middle = MIN_MS * GROWTH ** (i + 0.5);
        return Math.min(this.max, Math.max(this.min, middle));
      }
    }
    return this.max;
  }

  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  /** Non-empty buckets merged into at most `bars` ranges, for a chart. */
  bars(bars = 40): { fromMs: number; toMs: number; count: number }[] {
    if (this.count === 0) return [];
    const low = Math.log(Math.max(this.min, MIN_MS));
    const high = Math.log(Math.max(this.max, MIN_MS * GROWTH));
    const width = (high - low) / bars || 1;
    const out = Array.from({ length: bars }, (_, i) => ({
      fromMs: Math.exp(low + i * width),
      toMs: Math.exp(low + (i + 1) * width),
      count: 0,
    }));

    for (let i = 0; i < BUCKETS; i++) {
      if (this.counts[i] === 0) continue;
      const middle = Math.log(MIN_MS * GROWTH ** (i + 0.5));
      const bar = Math.min(bars - 1, Math.max(0, Math.floor((middle - low) / width)));
      out[bar]!.count += this.counts[i]!;
    }
    return out;
  }
}

/** Completions per whole second since the start. */
export class Timeline {
  readonly perSecond: number[] = [];

  constructor(private readonly startMs: number) {}

  record(nowMs: number): void {
    const second = Math.max(0, Math.floor((nowMs - this.startMs) / 1000));
    while (this.perSecond.length <= second) this.perSecond.push(0);
    this.perSecond[second]!++;
  }
}

export class Summary {
  count = 0;
  sum = 0;
  max = 0;

  record(value: number): void {
    this.count++;
    this.sum += value;
    this.max = Math.max(this.max, value);
  }

  mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }
}

/** A growable set of small non-negative integers, one bit each. */
export class BitSet {
  private bits = new Uint8Array(1024);

  has(n: number): boolean {
    return n >> 3 < this.bits.length && (this.bits[n >> 3]! & (1 << (n & 7))) !== 0;
  }

  add(n: number): void {
    if (n >> 3 >= this.bits.length) {
      const grown = new Uint8Array(Math.max(this.bits.length * 2, (n >> 3) + 1));
      grown.set(this.bits);
      this.bits = grown;
    }
    this.bits[n >> 3]! |= 1 << (n & 7);
  }
}
