//! [`LatencyHistogram`]: response times in log-scale buckets, HDR-style.
//!
//! Bucket `i >= 1` covers `[MIN·G^(i-1), MIN·G^i)` with `G = 1.04`; a value is
//! reported as its bucket's midpoint, at most `(G-1)/(G+1) = 1.96 %` from the
//! true value. Bucket 0 holds everything below `MIN` (10 µs). Stored sparse.

use serde::{Deserialize, Serialize};

const MIN_MS: f64 = 0.01;
const GROWTH: f64 = 1.04;
/// Enough buckets to reach about 24 days in milliseconds.
const MAX_BUCKET: u16 = 600;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    /// (bucket, count), sorted by bucket, no zero counts.
    buckets: Vec<(u16, u64)>,
}

/// The bucket a latency of `ms` is counted in.
pub(crate) fn bucket_of(ms: f64) -> u16 {
    // NaN and values below the first bucket land in bucket 0.
    if ms.is_nan() || ms < MIN_MS {
        return 0;
    }
    let i = 1.0 + ((ms / MIN_MS).ln() / GROWTH.ln()).floor();
    (i as u64).min(MAX_BUCKET as u64) as u16
}

fn midpoint(bucket: u16) -> f64 {
    if bucket == 0 {
        return 0.0;
    }
    let lower = MIN_MS * GROWTH.powi(bucket as i32 - 1);
    lower * (1.0 + GROWTH) / 2.0
}

impl LatencyHistogram {
    pub fn record(&mut self, ms: f64, count: u64) {
        self.record_in(bucket_of(ms), count);
    }

    /// [`record`](Self::record) with the bucket already found.
    pub(crate) fn record_in(&mut self, b: u16, count: u64) {
        match self.buckets.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => self.buckets[i].1 += count,
            Err(i) => self.buckets.insert(i, (b, count)),
        }
    }

    pub(crate) fn merge(&mut self, other: &LatencyHistogram) {
        // In place: after the first few merges a cell's histogram already
        // has most buckets, so this rarely moves or allocates.
        let mut from = 0;
        for &(b, c) in &other.buckets {
            match self.buckets[from..].binary_search_by_key(&b, |e| e.0) {
                Ok(i) => {
                    self.buckets[from + i].1 += c;
                    from += i + 1;
                }
                Err(i) => {
                    self.buckets.insert(from + i, (b, c));
                    from += i + 1;
                }
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    /// The nearest-rank percentile (`p` in 0..=100), within 2 % of the exact one.
    pub(crate) fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                return Some(midpoint(*b));
            }
        }
        self.buckets.last().map(|b| midpoint(b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[f64], p: f64) -> f64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        sorted[rank - 1]
    }

    #[test]
    fn empty_and_merge() {
        let mut a = LatencyHistogram::default();
        assert_eq!(a.percentile(50.0), None);
        a.record(10.0, 2);
        let mut b = LatencyHistogram::default();
        b.record(1000.0, 2);
        b.record(10.0, 1);
        a.merge(&b);
        assert_eq!(a.count(), 5);
        let p50 = a.percentile(50.0).unwrap();
        assert!((p50 - 10.0).abs() / 10.0 < 0.02, "{p50}");
    }

    proptest! {
        // Every percentile is within 2 % of the exact nearest-rank value
        // (1.96 % by construction, plus floating-point error at bucket edges).
        #[test]
        fn percentiles_within_two_percent(
            values in proptest::collection::vec(0.02f64..600_000.0, 1..400),
            p in prop_oneof![Just(50.0), Just(95.0), Just(99.0), 1.0f64..100.0],
        ) {
            let mut h = LatencyHistogram::default();
            for v in &values { h.record(*v, 1); }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let want = exact(&sorted, p);
            let got = h.percentile(p).unwrap();
            prop_assert!((got - want).abs() / want <= 0.02, "p{} got {} want {}", p, got, want);
        }
    }
}
