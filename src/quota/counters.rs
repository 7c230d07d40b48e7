//! [`Counters`]: the seam under the quota engine. A tenant's monthly calls
//! and tokens live behind it, so that where they are counted can change
//! without touching the decision or `http/`: today in this process
//! ([`Counters::Local`], two packed [`PeriodCounter`]s); later, leases of a
//! quota shared by several instances can sit under the same calls.
//!
//! An enum rather than a trait object: the decision calls it on every
//! request, and a match on one variant costs nothing.

use super::counter::PeriodCounter;
use super::period::Period;

#[derive(Debug)]
pub enum Counters {
    /// Counted in this process alone.
    Local {
        /// Quota units consumed in the current period.
        calls: PeriodCounter,
        /// Tokens used in the current period.
        tokens: PeriodCounter,
    },
}

impl Counters {
    /// Counters of one process, starting at zero in `period`.
    pub fn local(period: Period) -> Counters {
        Counters::Local {
            calls: PeriodCounter::new(period, 0),
            tokens: PeriodCounter::new(period, 0),
        }
    }

    /// Takes `n` calls if `used + n <= limit` (`None` = unlimited): the
    /// count after, or the count that made it fail.
    #[inline]
    pub fn take_calls(&self, period: Period, n: u64, limit: Option<u64>) -> Result<u64, u64> {
        match self {
            Counters::Local { calls, .. } => calls.try_consume(period, n, limit),
        }
    }

    /// Gives back `n` calls taken in `period` (nothing once it has passed).
    pub fn give_back_calls(&self, period: Period, n: u64) {
        match self {
            Counters::Local { calls, .. } => calls.refund(period, n),
        }
    }

    #[inline]
    pub fn calls_used(&self, period: Period) -> u64 {
        match self {
            Counters::Local { calls, .. } => calls.used(period),
        }
    }

    #[inline]
    pub fn tokens_used(&self, period: Period) -> u64 {
        match self {
            Counters::Local { tokens, .. } => tokens.used(period),
        }
    }

    /// Counts usage that already happened, past any limit (saturating).
    pub fn add(&self, period: Period, n_calls: u64, n_tokens: u64) {
        match self {
            Counters::Local { calls, tokens } => {
                if n_calls > 0 {
                    calls.add(period, n_calls);
                }
                if n_tokens > 0 {
                    tokens.add(period, n_tokens);
                }
            }
        }
    }

    /// Sets `period`'s figures (from the persisted totals, at start-up).
    pub fn restore(&self, period: Period, n_calls: u64, n_tokens: u64) {
        match self {
            Counters::Local { calls, tokens } => {
                calls.set(period, n_calls);
                tokens.set(period, n_tokens);
            }
        }
    }
}
