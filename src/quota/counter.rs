//! [`PeriodCounter`]: units used in the current period, one `AtomicU64`.
//!
//! The high 16 bits hold the period's tag, the low 48 bits the count. A value
//! whose tag is not the current period's reads as zero, so the counter resets
//! at the month boundary inside the same compare-and-swap that consumes: the
//! check and the update are one atomic step, whatever the concurrency.

use std::sync::atomic::{AtomicU64, Ordering};

use super::period::Period;

const COUNT_BITS: u32 = 48;
/// The largest count a period can hold (2^48 - 1, about 2.8e14); additions saturate here.
pub(crate) const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
// A plan may name no limit a counter cannot hold.
const _: () = assert!(crate::model::MAX_COUNT == MAX_COUNT);

#[inline]
fn pack(period: Period, count: u64) -> u64 {
    ((period.tag() as u64) << COUNT_BITS) | count.min(MAX_COUNT)
}

#[inline]
fn count_in(value: u64, period: Period) -> u64 {
    if (value >> COUNT_BITS) as u16 == period.tag() {
        value & MAX_COUNT
    } else {
        0
    }
}

#[derive(Debug)]
pub struct PeriodCounter(AtomicU64);

impl PeriodCounter {
    pub fn new(period: Period, count: u64) -> Self {
        PeriodCounter(AtomicU64::new(pack(period, count)))
    }

    /// Units used in `period` (zero if the counter still holds an older period).
    #[inline]
    pub fn used(&self, period: Period) -> u64 {
        count_in(self.0.load(Ordering::Acquire), period)
    }

    /// Consumes `n` units if `used + n <= limit` (`None` = unlimited).
    /// Returns the count after consuming, or the count that made it fail.
    #[inline]
    pub(crate) fn try_consume(
        &self,
        period: Period,
        n: u64,
        limit: Option<u64>,
    ) -> Result<u64, u64> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let used = count_in(cur, period);
            let after = used.saturating_add(n);
            if let Some(limit) = limit {
                if after > limit {
                    return Err(used);
                }
            }
            let after = after.min(MAX_COUNT);
            match self.0.compare_exchange_weak(
                cur,
                pack(period, after),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(after),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Adds `n` units without a limit (usage that already happened). Saturates.
    #[inline]
    pub fn add(&self, period: Period, n: u64) -> u64 {
        self.try_consume(period, n, None).unwrap_or(MAX_COUNT)
    }

    /// Gives back `n` units taken in `period` by [`try_consume`](Self::try_consume).
    /// Does nothing once the period has moved on.
    pub fn refund(&self, period: Period, n: u64) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            if (cur >> COUNT_BITS) as u16 != period.tag() {
                return;
            }
            let next = pack(period, count_in(cur, period).saturating_sub(n));
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes `n` of the units the counter holds (a lease's remaining
    /// units) if it holds at least `n` in `period`: what is left after, or
    /// what it held when that was too few.
    #[inline]
    pub(crate) fn try_take(&self, period: Period, n: u64) -> Result<u64, u64> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let held = count_in(cur, period);
            if held < n {
                return Err(held);
            }
            match self.0.compare_exchange_weak(
                cur,
                pack(period, held - n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(held - n),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Takes everything the counter holds in `period` (zero after).
    pub(crate) fn take_all(&self, period: Period) -> u64 {
        count_in(self.0.swap(pack(period, 0), Ordering::AcqRel), period)
    }

    /// Overwrites the counter (start-up rebuild).
    pub fn set(&self, period: Period, count: u64) {
        self.0.store(pack(period, count), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn rolls_over_at_the_period_boundary() {
        let c = PeriodCounter::new(Period(100), 7);
        assert_eq!(c.used(Period(100)), 7);
        assert_eq!(c.used(Period(101)), 0);
        assert_eq!(c.try_consume(Period(101), 3, Some(5)), Ok(3));
        assert_eq!(c.used(Period(100)), 0);
        c.refund(Period(100), 3); // stale period: ignored
        assert_eq!(c.used(Period(101)), 3);
    }

    #[test]
    fn never_exceeds_the_limit() {
        let c = PeriodCounter::new(Period(0), 0);
        assert_eq!(c.try_consume(Period(0), 4, Some(5)), Ok(4));
        assert_eq!(c.try_consume(Period(0), 2, Some(5)), Err(4));
        assert_eq!(c.try_consume(Period(0), 1, Some(5)), Ok(5));
        assert_eq!(c.try_consume(Period(0), 1, Some(5)), Err(5));
        assert_eq!(c.try_consume(Period(0), 0, Some(5)), Ok(5));
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let c = PeriodCounter::new(Period(3), MAX_COUNT - 1);
        assert_eq!(c.add(Period(3), u64::MAX), MAX_COUNT);
        assert_eq!(c.used(Period(3)), MAX_COUNT);
        assert_eq!(c.try_consume(Period(3), 1, Some(MAX_COUNT)), Err(MAX_COUNT));
    }

    #[test]
    fn concurrent_consumers_get_exactly_the_limit() {
        let c = Arc::new(PeriodCounter::new(Period(9), 0));
        let allowed: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || {
                        (0..10_000)
                            .filter(|_| c.try_consume(Period(9), 1, Some(12_345)).is_ok())
                            .count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(allowed, 12_345);
        assert_eq!(c.used(Period(9)), 12_345);
    }

    proptest! {
        // Any sequence of consume/refund/add keeps the count equal to a plain
        // model and never above the limit for consumes.
        #[test]
        fn matches_a_sequential_model(
            limit in 0u64..1_000,
            ops in proptest::collection::vec((0u8..3, 0u64..300), 0..200),
        ) {
            let c = PeriodCounter::new(Period(42), 0);
            let mut model = 0u64;
            for (op, n) in ops {
                match op {
                    0 => {
                        let r = c.try_consume(Period(42), n, Some(limit));
                        if model + n <= limit { model += n; prop_assert_eq!(r, Ok(model)); }
                        else { prop_assert_eq!(r, Err(model)); }
                    }
                    1 => { c.refund(Period(42), n); model = model.saturating_sub(n); }
                    _ => { c.add(Period(42), n); model += n; }
                }
                prop_assert_eq!(c.used(Period(42)), model);
            }
        }
    }
}
