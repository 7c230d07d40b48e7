//! [`Gcra`]: the per-second burst limit as the Generic Cell Rate Algorithm.
//!
//! The whole state is one `AtomicU64`, the theoretical arrival time (TAT) in
//! nanoseconds since the Unix epoch, updated in a compare-and-swap loop. A
//! request of `n` units is allowed when `max(TAT, now) + n·T ≤ now + burst·T`,
//! where `T = perSeconds / requests` is the emission interval.

use std::sync::atomic::{AtomicU64, Ordering};

use super::period::{Nanos, NANOS_PER_SEC};
use crate::model::RateLimit;

/// A rate limit reduced to what the hot path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcraParams {
    /// Emission interval T in nanoseconds (at least 1).
    pub(crate) interval_ns: u64,
    /// How many units may arrive at once.
    pub burst: u64,
}

impl GcraParams {
    pub(crate) fn from_limit(limit: &RateLimit) -> GcraParams {
        let window = limit.per_seconds.max(1) as u128 * NANOS_PER_SEC as u128;
        let interval_ns = (window / limit.requests.max(1) as u128).max(1) as u64;
        GcraParams {
            interval_ns,
            burst: limit.burst.max(1),
        }
    }

    /// `limit` shared by `n` instances: each takes the rate and the burst
    /// divided by `n` (a burst of at least 1), so together they admit no
    /// more than the whole limit would.
    pub(crate) fn from_limit_share(limit: &RateLimit, n: u32) -> GcraParams {
        let whole = GcraParams::from_limit(limit);
        let n = n.max(1) as u64;
        GcraParams {
            interval_ns: whole.interval_ns.saturating_mul(n),
            burst: (whole.burst / n).max(1),
        }
    }

    fn capacity_ns(&self) -> u64 {
        self.burst.saturating_mul(self.interval_ns)
    }

    /// Units above the burst cannot ever pass, so a big request takes the whole bucket.
    pub(crate) fn cost_ns(&self, n: u64) -> u64 {
        n.min(self.burst).saturating_mul(self.interval_ns)
    }
}

/// What the limiter says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GcraOutcome {
    /// Allowed; `remaining` units could still pass right now, and the
    /// bucket is full again in `reset_ns` (both as this decision left it).
    Allowed { remaining: u64, reset_ns: u64 },
    /// Limited; retry after `retry_after_ns`; the bucket is full again in
    /// `reset_ns`.
    Limited { retry_after_ns: u64, reset_ns: u64 },
}

#[derive(Debug, Default)]
pub(crate) struct Gcra {
    tat: AtomicU64,
}

#[inline]
fn now_u64(now: Nanos) -> u64 {
    now.0.max(0) as u64
}

impl Gcra {
    pub(crate) fn new() -> Self {
        Gcra::default()
    }

    /// Takes `n` units if they fit; `consume = false` only asks.
    #[inline]
    pub(crate) fn acquire(&self, p: GcraParams, now: Nanos, n: u64, consume: bool) -> GcraOutcome {
        let now = now_u64(now);
        let limit = now.saturating_add(p.capacity_ns());
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let from = tat.max(now);
            let new_tat = from.saturating_add(p.cost_ns(n));
            if new_tat > limit {
                return GcraOutcome::Limited {
                    retry_after_ns: new_tat - limit,
                    reset_ns: from - now,
                };
            }
            let remaining = (limit - new_tat) / p.interval_ns;
            if !consume {
                return GcraOutcome::Allowed {
                    remaining,
                    reset_ns: from - now,
                };
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return GcraOutcome::Allowed {
                        remaining,
                        reset_ns: new_tat - now,
                    }
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back `n` units taken by [`acquire`](Self::acquire) (a request that a
    /// later check rejected consumes nothing).
    pub(crate) fn refund(&self, p: GcraParams, n: u64) {
        self.refund_ns(p.cost_ns(n));
    }

    /// Gives back `cost` nanoseconds of the bucket (what a grant took).
    pub(crate) fn refund_ns(&self, cost: u64) {
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(cost))
            });
    }

    /// Units that could pass now, and nanoseconds until the bucket is full again.
    pub(crate) fn state(&self, p: GcraParams, now: Nanos) -> (u64, u64) {
        let now = now_u64(now);
        let tat = self.tat.load(Ordering::Acquire).max(now);
        let used_ns = tat - now;
        let remaining = p.capacity_ns().saturating_sub(used_ns) / p.interval_ns;
        (remaining.min(p.burst), used_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(requests: u64, per_seconds: u64, burst: u64) -> GcraParams {
        GcraParams::from_limit(&RateLimit {
            requests,
            per_seconds,
            burst,
        })
    }

    #[test]
    fn allows_the_burst_then_the_rate() {
        let p = params(10, 1, 5); // T = 100 ms
        let g = Gcra::new();
        let t0 = Nanos(1_000 * NANOS_PER_SEC);
        for i in 0..5 {
            assert_eq!(
                g.acquire(p, t0, 1, true),
                GcraOutcome::Allowed {
                    remaining: 4 - i,
                    reset_ns: (i + 1) * 100_000_000,
                }
            );
        }
        assert_eq!(
            g.acquire(p, t0, 1, true),
            GcraOutcome::Limited {
                retry_after_ns: 100_000_000,
                reset_ns: 500_000_000,
            }
        );
        // What a decision reports is what the bucket's state says then.
        assert_eq!(g.state(p, t0), (0, 500_000_000));
        // 100 ms later exactly one more unit fits.
        let t1 = t0 + 100_000_000;
        assert!(matches!(
            g.acquire(p, t1, 1, true),
            GcraOutcome::Allowed { .. }
        ));
        assert!(matches!(
            g.acquire(p, t1, 1, true),
            GcraOutcome::Limited { .. }
        ));
    }

    #[test]
    fn dry_run_and_refund_leave_no_trace() {
        let p = params(1, 1, 1);
        let g = Gcra::new();
        let t = Nanos(5 * NANOS_PER_SEC);
        assert!(matches!(
            g.acquire(p, t, 1, false),
            GcraOutcome::Allowed { .. }
        ));
        assert!(matches!(
            g.acquire(p, t, 1, true),
            GcraOutcome::Allowed { .. }
        ));
        assert!(matches!(
            g.acquire(p, t, 1, true),
            GcraOutcome::Limited { .. }
        ));
        g.refund(p, 1);
        assert!(matches!(
            g.acquire(p, t, 1, true),
            GcraOutcome::Allowed { .. }
        ));
    }

    #[test]
    fn sustained_rate_over_a_window() {
        let p = params(20, 1, 20);
        let g = Gcra::new();
        let start = 10 * NANOS_PER_SEC;
        // One attempt per millisecond for 10 s: 20 burst + 20/s * 10 s.
        let allowed = (0..10_000)
            .filter(|ms| {
                let now = Nanos(start + ms * 1_000_000);
                matches!(g.acquire(p, now, 1, true), GcraOutcome::Allowed { .. })
            })
            .count();
        assert!((219..=221).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn state_reports_remaining_and_reset() {
        let p = params(2, 1, 4);
        let g = Gcra::new();
        let t = Nanos(NANOS_PER_SEC);
        assert_eq!(g.state(p, t), (4, 0));
        g.acquire(p, t, 3, true);
        assert_eq!(g.state(p, t), (1, 1_500_000_000));
    }
}
