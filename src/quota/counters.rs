//! [`Counters`]: the seam under the quota engine. A tenant's monthly calls
//! and tokens live behind it, so that where they are counted can change
//! without touching the decision or `http/`: today in this process
//! ([`Counters::Local`], two packed [`PeriodCounter`]s), or shared by
//! several instances ([`Counters::Shared`]: a lease of calls from Redis,
//! `lease.rs`).
//!
//! An enum rather than a trait object: the decision calls it on every
//! request, and a match on one variant costs nothing.

use std::sync::Arc;

use super::counter::PeriodCounter;
use super::lease::{LeaseHub, Shared};
use super::period::Period;

/// How a registry counts its tenants' quotas.
#[derive(Clone, Debug, Default)]
pub enum Counting {
    /// In this process alone (one instance).
    #[default]
    Local,
    /// Shared with other instances through the cluster's sync loop; the
    /// limits of SPEC §12 through `fleet`.
    Shared(Arc<LeaseHub>, Option<Arc<dyn super::scoped::Fleet>>),
}

impl Counting {
    /// The fleet that shares the limits of SPEC §12, if any.
    pub fn fleet(&self) -> Option<&Arc<dyn super::scoped::Fleet>> {
        match self {
            Counting::Local => None,
            Counting::Shared(_, fleet) => fleet.as_ref(),
        }
    }

    /// Counters for tenant `id`, starting at zero in `period`.
    pub fn counters(&self, id: &Arc<str>, period: Period) -> Counters {
        match self {
            Counting::Local => Counters::local(period),
            Counting::Shared(hub, _) => {
                Counters::Shared(Box::new(Shared::new(id.clone(), hub.clone(), period)))
            }
        }
    }
}

#[derive(Debug)]
pub enum Counters {
    /// Counted in this process alone.
    Local {
        /// Quota units consumed in the current period.
        calls: PeriodCounter,
        /// Tokens used in the current period.
        tokens: PeriodCounter,
    },
    /// Shared with other instances (boxed: most deployments have none).
    Shared(Box<Shared>),
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
    pub(crate) fn take_calls(
        &self,
        period: Period,
        n: u64,
        limit: Option<u64>,
    ) -> Result<u64, u64> {
        match self {
            Counters::Local { calls, .. } => calls.try_consume(period, n, limit),
            Counters::Shared(s) => s.take_calls(period, n, limit),
        }
    }

    /// Gives back `n` calls taken in `period` under `limit` (nothing once
    /// the period has passed).
    pub(crate) fn give_back_calls(&self, period: Period, n: u64, limit: Option<u64>) {
        match self {
            Counters::Local { calls, .. } => calls.refund(period, n),
            Counters::Shared(s) => s.give_back_calls(period, n, limit),
        }
    }

    /// Reserves `n` tokens if `used + n <= limit`: the count after, or
    /// the count that made it fail.
    #[inline]
    pub(crate) fn take_tokens(
        &self,
        period: Period,
        n: u64,
        limit: Option<u64>,
    ) -> Result<u64, u64> {
        match self {
            Counters::Local { tokens, .. } => tokens.try_consume(period, n, limit),
            Counters::Shared(s) => s.take_tokens(period, n, limit),
        }
    }

    /// Gives back `n` tokens reserved in `period` (nothing once it passed).
    pub(crate) fn give_back_tokens(&self, period: Period, n: u64) {
        match self {
            Counters::Local { tokens, .. } => tokens.refund(period, n),
            Counters::Shared(s) => s.give_back_tokens(period, n),
        }
    }

    /// Takes back `n` tokens counted as usage that happened (`add`).
    pub(crate) fn uncount_tokens(&self, period: Period, n: u64) {
        match self {
            Counters::Local { tokens, .. } => tokens.refund(period, n),
            Counters::Shared(s) => s.tokens.uncount(period, n),
        }
    }

    #[inline]
    pub(crate) fn calls_used(&self, period: Period) -> u64 {
        match self {
            Counters::Local { calls, .. } => calls.used(period),
            Counters::Shared(s) => s.calls.used(period),
        }
    }

    #[inline]
    pub fn tokens_used(&self, period: Period) -> u64 {
        match self {
            Counters::Local { tokens, .. } => tokens.used(period),
            Counters::Shared(s) => s.tokens_used(period),
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
            Counters::Shared(s) => s.add(period, n_calls, n_tokens),
        }
    }

    /// Sets `period`'s figures (from the persisted totals, at start-up).
    pub fn restore(&self, period: Period, n_calls: u64, n_tokens: u64) {
        match self {
            Counters::Local { calls, tokens } => {
                calls.set(period, n_calls);
                tokens.set(period, n_tokens);
            }
            Counters::Shared(s) => s.restore(period, n_calls, n_tokens),
        }
    }

    /// The shared counters, when the quota is shared.
    pub fn shared(&self) -> Option<&Shared> {
        match self {
            Counters::Local { .. } => None,
            Counters::Shared(s) => Some(s),
        }
    }
}
