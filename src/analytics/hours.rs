//! An owner's usage hour by hour: the few figures per hour that the
//! anomaly detector and the seasonal forecast learn from, read from the
//! hour cells a week at a time, and only their heads (totals and latencies:
//! a cell's maps of endpoints, models and users are most of its bytes).

use crate::rollup::{Buckets, CellHead, Grain, Owner};
use crate::store::{Store, StoreError};

pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Hours in a week: the rhythm both learn.
pub(crate) const WEEK_HOURS: i64 = 168;

/// One hour's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HourPoint {
    pub requests: u64,
    /// Requests Tollgate refused (its own 429s and 403s).
    pub rejected: u64,
    /// Answered with a status of 400 or more, rejections excluded.
    pub errors: u64,
    pub calls: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub(crate) p95_ms: Option<f64>,
}

impl HourPoint {
    pub fn of(c: &CellHead) -> HourPoint {
        HourPoint {
            requests: c.total.requests,
            rejected: c.total.rejected,
            errors: c.total.errors,
            calls: c.total.calls,
            tokens: c.total.tokens,
            cost_usd: c.total.cost_usd,
            p95_ms: c.latency.percentile(95.0),
        }
    }

    /// Requests Tollgate let through, which an error rate is out of.
    pub fn served(&self) -> u64 {
        self.requests - self.rejected
    }
}

/// Consecutive hours from `first` (hours since the epoch); an hour
/// without records is all zeros.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hours {
    pub first: i64,
    pub points: Vec<HourPoint>,
}

impl Hours {
    /// The hours `[from, to)` (hours since the epoch) of `owner`.
    pub fn read(store: &dyn Store, owner: &Owner, from: i64, to: i64) -> Result<Hours, StoreError> {
        let mut points = vec![HourPoint::default(); (to - from).max(0) as usize];
        let mut a = from;
        while a < to {
            let b = (a + WEEK_HOURS).min(to);
            for (bucket, cell) in store.rollup_heads(owner, Buckets::new(Grain::Hour, a, b))? {
                if let Some(p) = points.get_mut((bucket - from) as usize) {
                    *p = HourPoint::of(&cell);
                }
            }
            a = b;
        }
        Ok(Hours {
            first: from,
            points,
        })
    }

    /// The point of hour `h`, if this span holds it.
    pub fn at(&self, h: i64) -> Option<&HourPoint> {
        usize::try_from(h - self.first)
            .ok()
            .and_then(|i| self.points.get(i))
    }

    /// The end of the span (exclusive).
    pub fn end(&self) -> i64 {
        self.first + self.points.len() as i64
    }

    /// The first hour with any request: before it, the owner had no
    /// history, and its zeros say nothing.
    pub(crate) fn first_active(&self) -> Option<i64> {
        self.points
            .iter()
            .position(|p| p.requests > 0)
            .map(|i| self.first + i as i64)
    }
}
