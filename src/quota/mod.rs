//! The enforcement engine: per-tenant atomics and the decision.
//!
//! Architecture Invariant: [`TenantState::decide`] takes no lock, does no I/O
//! and allocates nothing. Its state is three `AtomicU64`s (period calls,
//! period tokens, GCRA arrival time), an `AtomicBool` and an `ArcSwap` plan
//! pointer that is read without a lock.

pub mod counter;
pub mod gcra;
pub mod period;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use self::counter::PeriodCounter;
use self::gcra::{Gcra, GcraOutcome, GcraParams};
use self::period::{Nanos, Period, NANOS_PER_SEC};
use crate::model::Plan;

/// A plan as the decision reads it, shared by every tenant on the plan.
#[derive(Debug)]
pub struct ActivePlan {
    pub plan: Plan,
    pub gcra: Option<GcraParams>,
    /// The records-per-second limit of `POST /api/v1/usage`.
    pub ingest: Option<GcraParams>,
}

impl ActivePlan {
    pub fn new(plan: Plan) -> Arc<ActivePlan> {
        let gcra = plan.rate_limit.as_ref().map(GcraParams::from_limit);
        let ingest = plan
            .effective_ingest_rate()
            .map(|r| GcraParams::from_limit(&r.as_limit()));
        Arc::new(ActivePlan { plan, gcra, ingest })
    }
}

/// Why a request was or was not allowed, in the order SPEC §3 checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Suspended,
    RateLimited,
    QuotaExceeded,
    TokenQuotaExceeded,
}

/// The burst limit's state after a decision (for the `RateLimit` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstStatus {
    pub requests: u64,
    pub per_seconds: u64,
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_ns: u64,
}

/// Everything a response needs to describe a decision. `Copy`, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub period: Period,
    pub now: Nanos,
    pub calls_used: u64,
    pub calls_limit: Option<u64>,
    pub tokens_used: u64,
    pub tokens_limit: Option<u64>,
    pub burst: Option<BurstStatus>,
    /// For a rejection: nanoseconds until retrying can succeed.
    pub retry_after_ns: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    pub fn calls_remaining(&self) -> Option<u64> {
        self.calls_limit.map(|l| l.saturating_sub(self.calls_used))
    }

    pub fn tokens_remaining(&self) -> Option<u64> {
        self.tokens_limit
            .map(|l| l.saturating_sub(self.tokens_used))
    }

    /// Seconds until the period resets (ceiling).
    pub fn period_reset_secs(&self) -> u64 {
        let end = self.period.end_secs().saturating_mul(NANOS_PER_SEC);
        (end.saturating_sub(self.now).max(0) as u64).div_ceil(NANOS_PER_SEC as u64)
    }

    /// Whole seconds to wait before retrying (at least 1 on a rejection).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ns.div_ceil(NANOS_PER_SEC as u64).max(1)
    }
}

/// One tenant's live enforcement state.
#[derive(Debug)]
pub struct TenantState {
    pub id: Arc<str>,
    plan: ArcSwap<ActivePlan>,
    suspended: AtomicBool,
    /// Quota units consumed in the current period.
    pub calls: PeriodCounter,
    /// Tokens used in the current period.
    pub tokens: PeriodCounter,
    burst: Gcra,
    /// Records reported through `POST /api/v1/usage` (its own limit).
    ingest: Gcra,
    /// Requests of this tenant being served (bodies read, gateway
    /// responses streamed): a slow client cannot hold more than the cap.
    in_flight: AtomicU32,
    /// Set when the tenant is deleted: a store writes no record of a
    /// retired tenant (checked under the same lock as the purge), so a
    /// tenant re-created with the same id never sees the old one's data.
    retired: Arc<AtomicBool>,
}

/// One request's place among its tenant's requests in flight; given back
/// when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<TenantState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl TenantState {
    pub fn new(id: &str, plan: Arc<ActivePlan>, suspended: bool, period: Period) -> Self {
        TenantState {
            id: Arc::from(id),
            plan: ArcSwap::new(plan),
            suspended: AtomicBool::new(suspended),
            calls: PeriodCounter::new(period, 0),
            tokens: PeriodCounter::new(period, 0),
            burst: Gcra::new(),
            ingest: Gcra::new(),
            in_flight: AtomicU32::new(0),
            retired: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Takes one of at most `max` places for a request in flight, or
    /// `None` when the tenant already has `max`.
    #[inline]
    pub fn enter(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::Acquire);
        let slot = InFlight(self.clone());
        (before < max).then_some(slot)
    }

    /// Requests of this tenant in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes `n` records from the ingest limit, or says how many
    /// nanoseconds to wait. A plan without one takes everything.
    pub fn admit_records(&self, n: u64, now: Nanos) -> Result<(), u64> {
        let Some(g) = self.plan.load().ingest else {
            return Ok(());
        };
        match self.ingest.acquire(g, now, n, true) {
            GcraOutcome::Allowed { .. } => Ok(()),
            GcraOutcome::Limited { retry_after_ns } => Err(retry_after_ns),
        }
    }

    /// Gives back `n` records [`admit_records`](Self::admit_records) took
    /// (a batch the queue then refused).
    pub fn refund_records(&self, n: u64) {
        if let Some(g) = self.plan.load().ingest {
            self.ingest.refund(g, n);
        }
    }

    /// Marks the tenant deleted (see the `retired` field).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// The flag a usage block carries to the store.
    pub fn retired_flag(&self) -> Arc<AtomicBool> {
        self.retired.clone()
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    pub fn plan(&self) -> Arc<ActivePlan> {
        self.plan.load_full()
    }

    /// Takes effect on the next decision.
    pub fn set_plan(&self, plan: Arc<ActivePlan>) {
        self.plan.store(plan);
    }

    pub fn set_suspended(&self, suspended: bool) {
        self.suspended.store(suspended, Ordering::Release);
    }

    /// Decides a request of `cost` units at `now`. With `consume` it takes
    /// the units atomically when allowed; without, it only answers.
    /// A rejected request consumes nothing.
    #[inline]
    pub fn decide(&self, cost: u64, now: Nanos, consume: bool) -> Decision {
        let plan = self.plan.load();
        let period = Period::containing_nanos(now);
        let mut d = Decision {
            outcome: Outcome::Allowed,
            period,
            now,
            calls_used: 0,
            calls_limit: plan.plan.monthly_calls,
            tokens_used: self.tokens.used(period),
            tokens_limit: plan.plan.monthly_tokens,
            burst: None,
            retry_after_ns: 0,
        };
        if self.suspended.load(Ordering::Acquire) {
            d.outcome = Outcome::Suspended;
            d.calls_used = self.calls.used(period);
            return d;
        }
        let mut took_burst = false;
        if let Some(g) = plan.gcra {
            let (requests, per_seconds) = plan
                .plan
                .rate_limit
                .map_or((0, 0), |r| (r.requests, r.per_seconds));
            match self.burst.acquire(g, now, cost, consume) {
                GcraOutcome::Allowed { remaining } => {
                    took_burst = consume;
                    d.burst = Some(BurstStatus {
                        requests,
                        per_seconds,
                        remaining,
                        reset_ns: self.burst.state(g, now).1,
                    });
                }
                GcraOutcome::Limited { retry_after_ns } => {
                    d.outcome = Outcome::RateLimited;
                    d.retry_after_ns = retry_after_ns;
                    d.calls_used = self.calls.used(period);
                    d.burst = Some(BurstStatus {
                        requests,
                        per_seconds,
                        remaining: 0,
                        reset_ns: self.burst.state(g, now).1,
                    });
                    return d;
                }
            }
        }
        let tokens_over = d.tokens_limit.is_some_and(|l| d.tokens_used >= l);
        let calls = if consume && !tokens_over {
            self.calls.try_consume(period, cost, d.calls_limit)
        } else {
            let used = self.calls.used(period);
            match d.calls_limit {
                Some(l) if used.saturating_add(cost) > l => Err(used),
                _ => Ok(used),
            }
        };
        match calls {
            Ok(used) if !tokens_over => d.calls_used = used,
            Ok(used) | Err(used) => {
                d.calls_used = used;
                d.outcome = if calls.is_err() {
                    Outcome::QuotaExceeded
                } else {
                    Outcome::TokenQuotaExceeded
                };
                d.retry_after_ns =
                    (period.end_secs().saturating_mul(NANOS_PER_SEC) - now).max(0) as u64;
                if took_burst {
                    if let Some(g) = plan.gcra {
                        self.burst.refund(g, cost);
                        if let Some(b) = d.burst.as_mut() {
                            let (remaining, reset_ns) = self.burst.state(g, now);
                            b.remaining = remaining;
                            b.reset_ns = reset_ns;
                        }
                    }
                }
            }
        }
        d
    }

    /// The current state without deciding anything (headers on read routes).
    pub fn snapshot(&self, now: Nanos) -> Decision {
        let plan = self.plan.load();
        let period = Period::containing_nanos(now);
        Decision {
            outcome: Outcome::Allowed,
            period,
            now,
            calls_used: self.calls.used(period),
            calls_limit: plan.plan.monthly_calls,
            tokens_used: self.tokens.used(period),
            tokens_limit: plan.plan.monthly_tokens,
            burst: plan.gcra.map(|g| {
                let (remaining, reset_ns) = self.burst.state(g, now);
                let r = plan.plan.rate_limit.unwrap_or(crate::model::RateLimit {
                    requests: 0,
                    per_seconds: 0,
                    burst: 0,
                });
                BurstStatus {
                    requests: r.requests,
                    per_seconds: r.per_seconds,
                    remaining,
                    reset_ns,
                }
            }),
            retry_after_ns: 0,
        }
    }

    /// Counts usage that already happened (reported records, tokens known
    /// after a response). Only the current period lives in memory; records of
    /// other periods count in the store alone.
    pub fn add_usage(&self, now: Nanos, record_ms: i64, calls: u64, tokens: u64) {
        let period = Period::containing_nanos(now);
        if Period::containing_secs(record_ms.div_euclid(1000)) != period {
            return;
        }
        if calls > 0 {
            self.calls.add(period, calls);
        }
        if tokens > 0 {
            self.tokens.add(period, tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateLimit;

    fn plan(calls: Option<u64>, tokens: Option<u64>, rate: Option<RateLimit>) -> Arc<ActivePlan> {
        ActivePlan::new(Plan {
            id: "p".into(),
            name: "P".into(),
            monthly_calls: calls,
            monthly_tokens: tokens,
            rate_limit: rate,
            price_usd_monthly: 0.0,
            ingest_rate: None,
        })
    }

    const NOW: Nanos = 1_795_000_000 * NANOS_PER_SEC; // 2026-11-18

    #[test]
    fn order_of_checks_and_no_consumption_on_reject() {
        let t = TenantState::new("t", plan(Some(3), Some(100), None), false, Period(0));
        assert_eq!(t.decide(2, NOW, true).outcome, Outcome::Allowed);
        let d = t.decide(2, NOW, true);
        assert_eq!((d.outcome, d.calls_used), (Outcome::QuotaExceeded, 2));
        assert_eq!(t.decide(1, NOW, true).calls_used, 3);
        t.add_usage(NOW, NOW / 1_000_000, 0, 100);
        t.calls.set(Period::containing_nanos(NOW), 0);
        let d = t.decide(1, NOW, true);
        assert_eq!((d.outcome, d.calls_used), (Outcome::TokenQuotaExceeded, 0));
        t.set_suspended(true);
        assert_eq!(t.decide(1, NOW, true).outcome, Outcome::Suspended);
    }

    #[test]
    fn rate_limit_comes_before_quota_and_is_refunded() {
        let rate = Some(RateLimit {
            requests: 1,
            per_seconds: 10,
            burst: 2,
        });
        let t = TenantState::new("t", plan(Some(1), None, rate), false, Period(0));
        assert!(t.decide(1, NOW, true).allowed());
        // Quota is now full: the rejection must give the burst unit back.
        assert_eq!(t.decide(1, NOW, true).outcome, Outcome::QuotaExceeded);
        assert_eq!(t.snapshot(NOW).burst.unwrap().remaining, 1);
        t.set_plan(plan(None, None, rate));
        assert!(t.decide(1, NOW, true).allowed());
        let d = t.decide(1, NOW, true);
        assert_eq!(d.outcome, Outcome::RateLimited);
        assert_eq!(d.retry_after_secs(), 10);
    }

    #[test]
    fn in_flight_places_are_capped_and_given_back() {
        let t = Arc::new(TenantState::new(
            "t",
            plan(None, None, None),
            false,
            Period(0),
        ));
        let a = t.enter(2).unwrap();
        let b = t.enter(2).unwrap();
        assert!(t.enter(2).is_none());
        assert_eq!(t.in_flight(), 2, "a refused place is given back at once");
        drop(a);
        assert!(t.enter(2).is_some());
        drop(b);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn ingestion_has_its_own_records_per_second_limit() {
        let rate = Some(RateLimit {
            requests: 5,
            per_seconds: 1,
            burst: 10,
        });
        let t = TenantState::new("t", plan(None, None, rate), false, Period(0));
        // 5,000 records/s, a burst of 10,000: two batches of 5,000 pass at once.
        assert!(t.admit_records(5_000, NOW).is_ok());
        assert!(t.admit_records(5_000, NOW).is_ok());
        let wait = t.admit_records(500, NOW).unwrap_err();
        assert_eq!(wait, 100_000_000, "500 records at 5,000/s");
        assert!(t.admit_records(500, NOW + wait as i64).is_ok());
        // The burst limit of the calls is untouched.
        assert_eq!(t.snapshot(NOW).burst.unwrap().remaining, 10);
        let unlimited = TenantState::new("u", plan(None, None, None), false, Period(0));
        assert!(unlimited.admit_records(1_000_000, NOW).is_ok());
    }

    #[test]
    fn dry_run_consumes_nothing() {
        let t = TenantState::new("t", plan(Some(1), None, None), false, Period(0));
        assert!(t.decide(1, NOW, false).allowed());
        assert!(t.decide(1, NOW, false).allowed());
        assert!(!t.decide(2, NOW, false).allowed());
        assert_eq!(t.calls.used(Period::containing_nanos(NOW)), 0);
    }

    #[test]
    fn many_tenants_many_threads_exactly_their_limits() {
        // 64 tenants with different limits (and a burst limit in the way for
        // half of them); 8 threads hammer all of them with more demand than
        // any limit. Each tenant gets exactly its limit, whatever the interleaving.
        let tenants: Vec<_> = (0..64u64)
            .map(|i| {
                let rate = (i % 2 == 0).then_some(RateLimit {
                    requests: 1_000_000,
                    per_seconds: 1,
                    burst: 1_000_000,
                });
                Arc::new(TenantState::new(
                    &format!("t{i}"),
                    plan(Some(100 + i * 37), None, rate),
                    false,
                    Period(0),
                ))
            })
            .collect();
        let allowed: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u64)
                .map(|t| {
                    let tenants = &tenants;
                    s.spawn(move || {
                        let mut mine = vec![0u64; tenants.len()];
                        for round in 0..400u64 {
                            for i in 0..tenants.len() as u64 {
                                let j = (i * 7 + t * 13 + round) as usize % tenants.len();
                                if tenants[j].decide(1, NOW, true).allowed() {
                                    mine[j] += 1;
                                }
                            }
                        }
                        mine
                    })
                })
                .collect();
            let per_thread: Vec<Vec<u64>> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            (0..tenants.len())
                .map(|j| per_thread.iter().map(|v| v[j]).sum())
                .collect()
        });
        let p = Period::containing_nanos(NOW);
        for (i, t) in tenants.iter().enumerate() {
            let limit = 100 + i as u64 * 37;
            assert_eq!(allowed[i], limit, "tenant {i}");
            assert_eq!(t.calls.used(p), limit);
        }
    }

    #[test]
    fn the_month_boundary_resets_usage() {
        let t = TenantState::new("t", plan(Some(1), None, None), false, Period(0));
        let p = Period::containing_nanos(NOW);
        let last_ns = p.end_secs() * NANOS_PER_SEC - 1;
        assert!(t.decide(1, last_ns, true).allowed());
        assert_eq!(t.decide(1, last_ns, true).outcome, Outcome::QuotaExceeded);
        let d = t.decide(1, last_ns + 1, true);
        assert!(d.allowed());
        assert_eq!(d.period, p.next());
        // A record of the old period does not leak into the new one.
        t.add_usage(last_ns + 2, (last_ns / 1_000_000) - 5, 7, 7);
        assert_eq!(t.calls.used(p.next()), 1);
    }
}
