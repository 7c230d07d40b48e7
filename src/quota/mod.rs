//! The enforcement engine: per-tenant atomics and the decision.
//!
//! Architecture Invariant: [`TenantState::acquire`] and
//! [`TenantState::check`] take no lock, do no I/O and allocate nothing. The
//! state they read is the [`Counters`] (today two `AtomicU64`s: period calls
//! and tokens), the GCRA arrival time, an `AtomicBool` and an `ArcSwap` plan
//! pointer that is read without a lock. A decision is data: an allowed
//! `acquire` carries the [`Grant`] of what it took, and
//! [`TenantState::refund`] gives all of it back.

pub(crate) mod counter;
pub mod counters;
pub(crate) mod gcra;
pub mod lease;
pub mod period;
pub(crate) mod reservation;
pub mod scoped;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use self::counters::{Counters, Counting};
use self::gcra::{Gcra, GcraOutcome, GcraParams};
use self::period::{Nanos, Period, NANOS_PER_SEC};
use crate::model::Plan;

/// A plan as the decision reads it, shared by every tenant on the plan.
#[derive(Debug)]
pub struct ActivePlan {
    pub plan: Plan,
    pub(crate) gcra: Option<GcraParams>,
    /// The records-per-second limit of `POST /api/v1/usage`.
    pub ingest: Option<GcraParams>,
    /// The plan's limits of SPEC §12, shared by every tenant on it that
    /// has none of its own (one copy for the cache, not one per tenant).
    pub limits: Arc<[crate::model::Limit]>,
    /// How many instances share its burst limit.
    share: u32,
    /// For a tenant whose own limits replace some of the plan's fields:
    /// the plan it was derived from.
    base: Option<Arc<ActivePlan>>,
}

impl ActivePlan {
    pub fn new(plan: Plan) -> Arc<ActivePlan> {
        ActivePlan::shared_by(plan, 1)
    }

    /// The plan as one of `n` instances enforces it: the burst limit's
    /// rate and burst divided among them (`[cluster]`), the rest whole.
    pub(crate) fn shared_by(plan: Plan, n: u32) -> Arc<ActivePlan> {
        let gcra = plan
            .rate_limit
            .as_ref()
            .map(|r| GcraParams::from_limit_share(r, n));
        let ingest = plan
            .effective_ingest_rate()
            .map(|r| GcraParams::from_limit(&r.as_limit()));
        let limits = Arc::from(plan.limits.clone());
        Arc::new(ActivePlan {
            plan,
            gcra,
            ingest,
            limits,
            share: n,
            base: None,
        })
    }

    /// The plan `base` with the fields the tenant's limits `own` replace
    /// (`month`, `tokens`, `burst`; `None`: no such limit, `base` itself).
    pub(crate) fn overridden(
        base: &Arc<ActivePlan>,
        own: &[crate::model::Limit],
    ) -> Arc<ActivePlan> {
        let base = base.base.clone().unwrap_or_else(|| base.clone());
        if own.iter().all(|l| l.plan_field().is_none()) {
            return base;
        }
        let mut plan = base.plan.clone();
        for l in own {
            match l.plan_field() {
                Some("month") => plan.monthly_calls = l.amount,
                Some("tokens") => plan.monthly_tokens = l.amount,
                Some("burst") => {
                    plan.rate_limit = l.amount.map(|requests| crate::model::RateLimit {
                        requests,
                        per_seconds: l.per_seconds,
                        burst: l.burst,
                    })
                }
                _ => {}
            }
        }
        let derived = ActivePlan::shared_by(plan, base.share);
        Arc::new(ActivePlan {
            plan: derived.plan.clone(),
            gcra: derived.gcra,
            ingest: derived.ingest,
            limits: base.limits.clone(),
            share: base.share,
            base: Some(base),
        })
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
    /// The quota is shared (`[cluster]`), this instance's lease is spent
    /// and Redis cannot be reached (`on_redis_down = "deny"`).
    ClusterUnavailable,
    /// A `spendUsd` limit (SPEC §12) has no room for the request.
    BudgetExceeded,
    /// An `inFlight` limit (SPEC §12) is full.
    InFlightFull,
}

/// The burst limit's state after a decision (for the `RateLimit` headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstStatus {
    pub requests: u64,
    pub per_seconds: u64,
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub(crate) reset_ns: u64,
}

/// Everything a response needs to describe a decision. `Copy`, no heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub period: Period,
    pub now: Nanos,
    pub(crate) calls_used: u64,
    pub(crate) calls_limit: Option<u64>,
    pub tokens_used: u64,
    pub(crate) tokens_limit: Option<u64>,
    pub burst: Option<BurstStatus>,
    /// For a rejection: nanoseconds until retrying can succeed.
    pub(crate) retry_after_ns: u64,
    /// What an allowed [`TenantState::acquire`] took; `None` for a
    /// rejection, a [`check`](TenantState::check) or a snapshot.
    pub grant: Option<Grant>,
}

/// What the burst limit said of a request.
enum BurstStep {
    /// It fits (or there is no burst limit): on to the quota, with the
    /// nanoseconds of the bucket taken.
    Pass {
        decision: Decision,
        burst_ns: u64,
    },
    Limited(Decision),
}

/// What a decision took: give it back with [`TenantState::refund`] (an
/// upstream that failed, say), burst unit included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub period: Period,
    pub calls: u64,
    /// Tokens reserved for the request (given back or settled by the
    /// [`reservation::Reservation`] made of them, never by `refund`).
    pub tokens: u64,
    /// Nanoseconds of the burst bucket taken (0 without a burst limit).
    burst_ns: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allowed
    }

    pub(crate) fn calls_remaining(&self) -> Option<u64> {
        self.calls_limit.map(|l| l.saturating_sub(self.calls_used))
    }

    pub(crate) fn tokens_remaining(&self) -> Option<u64> {
        self.tokens_limit
            .map(|l| l.saturating_sub(self.tokens_used))
    }

    /// Nanoseconds until the period resets.
    pub(crate) fn period_reset_ns(&self) -> u64 {
        self.period.end_nanos().0.saturating_sub(self.now.0).max(0) as u64
    }

    /// Seconds until the period resets (ceiling).
    pub(crate) fn period_reset_secs(&self) -> u64 {
        self.period_reset_ns().div_ceil(NANOS_PER_SEC as u64)
    }

    /// Whole seconds to wait before retrying (at least 1 on a rejection).
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.retry_after_ns.div_ceil(NANOS_PER_SEC as u64).max(1)
    }
}

/// One tenant's live enforcement state.
///
/// Laid out in this order (`repr(C)`): what every decision reads or
/// writes first - the plan, the burst bucket, the period's counters, the
/// flags and the places in flight - so that, behind the `Arc`'s two
/// counts (which the queued record's clone also touches), they fill the
/// allocation's first 64 bytes; the id and the ingest limit, read off
/// the decision, come after. A decision on a tenant the cache has lost
/// then waits for fewer cache lines (`benches/enforcement.rs`): one or
/// two (the allocator aligns to 16 bytes, not 64), not two or three.
#[derive(Debug)]
#[repr(C)]
pub struct TenantState {
    plan: ArcSwap<ActivePlan>,
    burst: Gcra,
    /// The period's calls and tokens, behind the counter seam.
    counters: Counters,
    suspended: AtomicBool,
    /// Set when the tenant is deleted: a store writes no record of a
    /// retired tenant (checked under the same lock as the purge; a usage
    /// block holds the state itself as its [`Retirement`]), so a tenant
    /// re-created with the same id never sees the old one's data.
    retired: AtomicBool,
    /// Requests of this tenant being served (bodies read, gateway
    /// responses streamed): a slow client cannot hold more than the cap.
    in_flight: AtomicU32,
    pub id: Arc<str>,
    /// Records reported through `POST /api/v1/usage` (its own limit).
    ingest: Gcra,
    /// The limits of SPEC §12 past the plan's fields, when the tenant, its
    /// plan or one of its keys has any (`None`: the decision never looks).
    scoped: arc_swap::ArcSwapOption<scoped::Scoped>,
}

impl TenantState {
    pub fn new(id: &str, plan: Arc<ActivePlan>, suspended: bool, period: Period) -> Self {
        TenantState::counted(id, plan, suspended, period, &Counting::Local)
    }

    /// A tenant whose quota is counted as `counting` says.
    pub fn counted(
        id: &str,
        plan: Arc<ActivePlan>,
        suspended: bool,
        period: Period,
        counting: &Counting,
    ) -> Self {
        let id: Arc<str> = Arc::from(id);
        TenantState {
            counters: counting.counters(&id, period),
            id,
            plan: ArcSwap::new(plan),
            suspended: AtomicBool::new(suspended),
            burst: Gcra::new(),
            ingest: Gcra::new(),
            in_flight: AtomicU32::new(0),
            retired: AtomicBool::new(false),
            scoped: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The tenant's limits of SPEC §12, when it has any.
    #[inline]
    pub fn scoped(&self) -> Option<Arc<scoped::Scoped>> {
        let s = self.scoped.load();
        s.as_ref().map(Arc::clone)
    }

    /// Puts the tenant on `plan` with its limits: the plan's and (unless
    /// `None`, a plan change) its own with its billing day, which may
    /// replace the plan's own fields ([`set_plan`](Self::set_plan));
    /// `setup`: how its limits' state is made (the bound of its table of
    /// end users, bots, models and keys; the fleet that shares it).
    /// Returns the limits whose counts are to be rebuilt from the records
    /// (added, or reshaped: [`scoped::Scoped::configure`]).
    pub(crate) fn configure(
        &self,
        plan: Arc<ActivePlan>,
        own: Option<(&[crate::model::Limit], Option<u8>)>,
        setup: &scoped::Setup,
    ) -> Vec<crate::model::CompactString> {
        let changed = match self.scoped() {
            Some(s) => s.configure(&plan.limits, own),
            None => {
                let nothing = own.is_none_or(|(l, day)| l.is_empty() && day.is_none());
                if !(plan.limits.is_empty() && nothing) {
                    let s = scoped::Scoped::made(setup, &self.id);
                    let changed = s.configure(&plan.limits, own);
                    self.scoped.store(Some(Arc::new(s)));
                    changed
                } else {
                    Vec::new()
                }
            }
        };
        self.set_plan(plan);
        changed
    }

    /// Sets one key's own limits: those to rebuild, as
    /// [`configure`](Self::configure).
    pub(crate) fn set_key_limits(
        &self,
        key_id: &str,
        limits: &[crate::model::Limit],
        setup: &scoped::Setup,
    ) -> Vec<crate::model::CompactString> {
        match self.scoped() {
            Some(s) => s.set_key(key_id, limits),
            None if limits.is_empty() => Vec::new(),
            None => {
                let s = scoped::Scoped::made(setup, &self.id);
                let changed = s.set_key(key_id, limits);
                self.scoped.store(Some(Arc::new(s)));
                changed
            }
        }
    }

    /// Takes one of at most `max` places for a request in flight: true
    /// when taken (give it back with [`leave`](Self::leave)), false when
    /// the tenant already has `max` (nothing to give back).
    #[inline]
    pub(crate) fn enter(&self, max: u32) -> bool {
        let before = self.in_flight.fetch_add(1, Ordering::Acquire);
        if before >= max {
            self.leave();
        }
        before < max
    }

    /// Gives back a place [`enter`](Self::enter) took.
    #[inline]
    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    #[cfg(test)]
    /// Requests of this tenant in flight now.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes `n` records from the ingest limit, or says how many
    /// nanoseconds to wait. A plan without one takes everything.
    pub(crate) fn admit_records(&self, n: u64, now: Nanos) -> Result<(), u64> {
        let Some(g) = self.plan.load().ingest else {
            return Ok(());
        };
        match self.ingest.acquire(g, now, n, true) {
            GcraOutcome::Allowed { .. } => Ok(()),
            GcraOutcome::Limited { retry_after_ns, .. } => Err(retry_after_ns),
        }
    }

    /// Gives back `n` records [`admit_records`](Self::admit_records) took
    /// (a batch the queue then refused).
    pub(crate) fn refund_records(&self, n: u64) {
        if let Some(g) = self.plan.load().ingest {
            self.ingest.refund(g, n);
        }
    }

    /// Marks the tenant deleted (see the `retired` field).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    pub fn plan(&self) -> Arc<ActivePlan> {
        self.plan.load_full()
    }

    /// The plan as it is now, for a moment (not to hold across an
    /// `.await`): read without counting its `Arc` up and down.
    pub(crate) fn plan_now(&self) -> arc_swap::Guard<Arc<ActivePlan>> {
        self.plan.load()
    }

    /// Takes effect on the next decision.
    /// Its own limits that replace the plan's fields (a tenant's `month`,
    /// `tokens` or `burst`) are applied over `plan`.
    pub(crate) fn set_plan(&self, plan: Arc<ActivePlan>) {
        let plan = match self.scoped() {
            Some(s) => ActivePlan::overridden(&plan, &s.own_limits()),
            None => plan,
        };
        self.plan.store(plan);
    }

    pub(crate) fn set_suspended(&self, suspended: bool) {
        self.suspended.store(suspended, Ordering::Release);
    }

    /// Takes `cost` calls at `now` if every limit allows, in SPEC §3's
    /// order: suspended, burst, monthly calls, monthly tokens. An allowed
    /// decision carries the [`Grant`] of what it took; a rejected one took
    /// nothing (burst units taken before a quota rejection are given back).
    #[inline]
    pub fn acquire(&self, cost: u64, now: Nanos) -> Decision {
        self.evaluate(cost, 0, now, true)
    }

    /// [`acquire`](Self::acquire) that also reserves `tokens` of the token
    /// quota (when the plan has one): allowed only if they fit whole
    /// (`used + tokens <= limit`), so requests in flight cannot together
    /// pass the quota. The grant says how many were reserved; make a
    /// [`reservation::Reservation`] of them, which settles them against
    /// what the request used or gives them back.
    #[inline]
    pub(crate) fn acquire_reserving(&self, cost: u64, tokens: u64, now: Nanos) -> Decision {
        self.evaluate(cost, tokens, now, true)
    }

    /// Would a request of `cost` (reserving `tokens`) pass now? Takes nothing.
    #[inline]
    pub fn check(&self, cost: u64, tokens: u64, now: Nanos) -> Decision {
        self.evaluate(cost, tokens, now, false)
    }

    /// Gives back `tokens` reserved in `period` (nothing once it has passed).
    pub(crate) fn release_tokens(&self, period: Period, tokens: u64) {
        self.counters.give_back_tokens(period, tokens);
    }

    /// Settles `reserved` tokens of `period` against the `used` ones the
    /// answer reported: the rest given back, or what passed the
    /// reservation counted past the quota (it happened). Nothing once the
    /// period has passed: the record counts in the store's totals.
    pub(crate) fn settle_tokens(&self, now: Nanos, period: Period, reserved: u64, used: u64) {
        if Period::containing_nanos(now) != period {
            return;
        }
        if used >= reserved {
            self.counters.add(period, 0, used - reserved);
        } else {
            self.counters.give_back_tokens(period, reserved - used);
        }
    }

    /// Gives back everything `grant` took: its calls (while its period
    /// lasts) and its burst units (its reserved tokens are its
    /// reservation's to give back).
    pub fn refund(&self, grant: &Grant) {
        let limit = self.plan.load().plan.monthly_calls;
        self.counters
            .give_back_calls(grant.period, grant.calls, limit);
        if grant.burst_ns > 0 {
            self.burst.refund_ns(grant.burst_ns);
        }
    }

    #[inline]
    fn evaluate(&self, cost: u64, tokens: u64, now: Nanos, take: bool) -> Decision {
        let plan = self.plan.load();
        let period = Period::containing_nanos(now);
        let d = Decision {
            outcome: Outcome::Allowed,
            period,
            now,
            calls_used: 0,
            calls_limit: plan.plan.monthly_calls,
            tokens_used: self.counters.tokens_used(period),
            tokens_limit: plan.plan.monthly_tokens,
            burst: None,
            retry_after_ns: 0,
            grant: None,
        };
        if self.suspended.load(Ordering::Acquire) {
            return self.denied(d, Outcome::Suspended, 0);
        }
        match self.burst_step(&plan, d, cost, take) {
            BurstStep::Pass { decision, burst_ns } => {
                self.quota_step(&plan, decision, cost, tokens, take, burst_ns)
            }
            BurstStep::Limited(limited) => limited,
        }
    }

    /// A rejection: the period's count, and when a retry can pass.
    fn denied(&self, mut d: Decision, outcome: Outcome, retry_after_ns: u64) -> Decision {
        d.outcome = outcome;
        d.calls_used = self.counters.calls_used(d.period);
        d.retry_after_ns = retry_after_ns;
        d
    }

    /// The burst limit: the decision with the bucket's state and the
    /// nanoseconds taken, or the rejection.
    #[inline]
    fn burst_step(&self, plan: &ActivePlan, mut d: Decision, cost: u64, take: bool) -> BurstStep {
        let Some(g) = plan.gcra else {
            return BurstStep::Pass {
                decision: d,
                burst_ns: 0,
            };
        };
        let (requests, per_seconds) = plan
            .plan
            .rate_limit
            .map_or((0, 0), |r| (r.requests, r.per_seconds));
        let status = |remaining, reset_ns| BurstStatus {
            requests,
            per_seconds,
            remaining,
            reset_ns,
        };
        match self.burst.acquire(g, d.now, cost, take) {
            GcraOutcome::Allowed {
                remaining,
                reset_ns,
            } => {
                d.burst = Some(status(remaining, reset_ns));
                BurstStep::Pass {
                    decision: d,
                    burst_ns: if take { g.cost_ns(cost) } else { 0 },
                }
            }
            GcraOutcome::Limited {
                retry_after_ns,
                reset_ns,
            } => {
                d.burst = Some(status(0, reset_ns));
                BurstStep::Limited(self.denied(d, Outcome::RateLimited, retry_after_ns))
            }
        }
    }

    /// The monthly calls and tokens (reserving `tokens` when the plan has
    /// a token quota), after the burst limit took `burst_ns`.
    #[inline]
    fn quota_step(
        &self,
        plan: &ActivePlan,
        mut d: Decision,
        cost: u64,
        tokens: u64,
        take: bool,
        burst_ns: u64,
    ) -> Decision {
        let reserve = if d.tokens_limit.is_some() { tokens } else { 0 };
        // Calls are checked before tokens (SPEC §3), so with both spent
        // the answer is quota_exceeded. Without a reservation the quota
        // is open while anything of it is left; with one, while it fits.
        let tokens_over = d.tokens_limit.is_some_and(|l| {
            if reserve == 0 {
                d.tokens_used >= l
            } else {
                d.tokens_used.saturating_add(reserve) > l
            }
        });
        let calls = if take && !tokens_over {
            self.counters.take_calls(d.period, cost, d.calls_limit)
        } else {
            let used = self.counters.calls_used(d.period);
            match d.calls_limit {
                Some(l) if used.saturating_add(cost) > l => Err(used),
                _ => Ok(used),
            }
        };
        let outcome = match calls {
            Ok(used) if !tokens_over => {
                if take && reserve > 0 {
                    match self.counters.take_tokens(d.period, reserve, d.tokens_limit) {
                        Ok(after) => d.tokens_used = after,
                        Err(at) => {
                            // Another request reserved them first.
                            self.counters.give_back_calls(d.period, cost, d.calls_limit);
                            d.tokens_used = at;
                            self.give_back_burst(plan, &mut d, burst_ns);
                            let until_reset = d.period_reset_ns();
                            return self.denied(d, Outcome::TokenQuotaExceeded, until_reset);
                        }
                    }
                }
                d.calls_used = used;
                d.grant = take.then_some(Grant {
                    period: d.period,
                    calls: cost,
                    tokens: reserve,
                    burst_ns,
                });
                return d;
            }
            Ok(_) => Outcome::TokenQuotaExceeded,
            Err(_) => Outcome::QuotaExceeded,
        };
        self.give_back_burst(plan, &mut d, burst_ns);
        let until_reset = d.period_reset_ns();
        self.denied(d, outcome, until_reset)
    }

    /// A quota rejection consumes nothing: the burst units go back, and the
    /// headers show the bucket as it is then.
    fn give_back_burst(&self, plan: &ActivePlan, d: &mut Decision, burst_ns: u64) {
        if burst_ns == 0 {
            return;
        }
        self.burst.refund_ns(burst_ns);
        if let (Some(g), Some(b)) = (plan.gcra, d.burst.as_mut()) {
            let (remaining, reset_ns) = self.burst.state(g, d.now);
            b.remaining = remaining;
            b.reset_ns = reset_ns;
        }
    }

    /// The current state without deciding anything (headers on read routes).
    pub(crate) fn snapshot(&self, now: Nanos) -> Decision {
        let plan = self.plan.load();
        let period = Period::containing_nanos(now);
        Decision {
            outcome: Outcome::Allowed,
            period,
            now,
            calls_used: self.counters.calls_used(period),
            calls_limit: plan.plan.monthly_calls,
            tokens_used: self.counters.tokens_used(period),
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
            grant: None,
        }
    }

    /// Counts usage that already happened (reported records, tokens known
    /// after a response). Only the current period lives in memory; records of
    /// other periods count in the store alone.
    pub(crate) fn add_usage(&self, now: Nanos, record_ms: i64, calls: u64, tokens: u64) {
        if let Some(period) = live_period(now, record_ms) {
            self.counters.add(period, calls, tokens);
        }
    }

    /// Counts a reported record: its calls and tokens, and - when it
    /// names the reservation of the decision it reports on - settles it
    /// (its tokens and cost replace what was reserved); otherwise its
    /// calls, tokens and cost count against the tenant's other limits.
    pub(crate) fn count_record(
        &self,
        now: Nanos,
        r: &crate::model::UsageRecord,
        reserved: Option<reservation::Reservation>,
    ) {
        match reserved {
            Some(res) => {
                self.add_usage(now, r.ts_ms, r.calls, 0);
                res.settle(now, r.tokens, scoped::micro_usd(r.cost_usd));
            }
            None => {
                self.add_usage(now, r.ts_ms, r.calls, r.tokens);
                if let Some(s) = self.scoped() {
                    let ask = scoped::Ask::of(r);
                    s.debit(&ask, r.ts_ms, now.millis().0);
                    s.debit_fleet(&ask, r.ts_ms);
                }
            }
        }
    }

    /// Takes back `tokens` counted by [`add_usage`](Self::add_usage) (an
    /// estimate charged while an answer streamed, above what it used).
    pub(crate) fn uncount_tokens(&self, now: Nanos, record_ms: i64, tokens: u64) {
        if let Some(period) = live_period(now, record_ms) {
            self.counters.uncount_tokens(period, tokens);
        }
    }

    /// Sets `period`'s calls and tokens (the persisted totals, at start-up
    /// or when a tenant is created).
    pub fn restore(&self, period: Period, calls: u64, tokens: u64) {
        self.counters.restore(period, calls, tokens);
    }

    /// The shared counters, when several instances share the quota.
    pub fn shared(&self) -> Option<&lease::Shared> {
        self.counters.shared()
    }

    /// Calls and tokens used in `period`.
    pub fn used(&self, period: Period) -> (u64, u64) {
        (
            self.counters.calls_used(period),
            self.counters.tokens_used(period),
        )
    }
}

/// The period at `now`, if a record made at `record_ms` falls in it: only
/// the current period lives in memory.
fn live_period(now: Nanos, record_ms: i64) -> Option<Period> {
    let period = Period::containing_nanos(now);
    (Period::containing_secs(record_ms.div_euclid(1000)) == period).then_some(period)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateLimit;

    /// What a decision touches ends before the id: with the `Arc`'s two
    /// counts, the allocation's first 64 bytes (one cache line where the
    /// allocation starts on one, two at most otherwise).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_decision_fields_fill_the_first_cache_line() {
        assert_eq!(std::mem::offset_of!(TenantState, id), 48);
    }

    fn plan(calls: Option<u64>, tokens: Option<u64>, rate: Option<RateLimit>) -> Arc<ActivePlan> {
        ActivePlan::new(Plan {
            id: "p".into(),
            name: "P".into(),
            monthly_calls: calls,
            monthly_tokens: tokens,
            rate_limit: rate,
            price_usd_monthly: 0.0,
            ingest_rate: None,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            reserve_usd: None,
            limits: Vec::new(),
        })
    }

    const NOW: Nanos = Nanos(1_795_000_000 * NANOS_PER_SEC); // 2026-11-18

    #[test]
    fn order_of_checks_and_no_consumption_on_reject() {
        let t = TenantState::new("t", plan(Some(3), Some(100), None), false, Period(0));
        assert_eq!(t.acquire(2, NOW).outcome, Outcome::Allowed);
        let d = t.acquire(2, NOW);
        assert_eq!((d.outcome, d.calls_used), (Outcome::QuotaExceeded, 2));
        assert_eq!(t.acquire(1, NOW).calls_used, 3);
        t.add_usage(NOW, NOW.millis().0, 0, 100);
        t.restore(Period::containing_nanos(NOW), 0, 100);
        let d = t.acquire(1, NOW);
        assert_eq!((d.outcome, d.calls_used), (Outcome::TokenQuotaExceeded, 0));
        t.set_suspended(true);
        assert_eq!(t.acquire(1, NOW).outcome, Outcome::Suspended);
    }

    #[test]
    fn rate_limit_comes_before_quota_and_is_refunded() {
        let rate = Some(RateLimit {
            requests: 1,
            per_seconds: 10,
            burst: 2,
        });
        let t = TenantState::new("t", plan(Some(1), None, rate), false, Period(0));
        assert!(t.acquire(1, NOW).allowed());
        // Quota is now full: the rejection must give the burst unit back.
        assert_eq!(t.acquire(1, NOW).outcome, Outcome::QuotaExceeded);
        assert_eq!(t.snapshot(NOW).burst.unwrap().remaining, 1);
        t.set_plan(plan(None, None, rate));
        assert!(t.acquire(1, NOW).allowed());
        let d = t.acquire(1, NOW);
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
        assert!(t.enter(2));
        assert!(t.enter(2));
        assert!(!t.enter(2));
        assert_eq!(t.in_flight(), 2, "a refused place is given back at once");
        t.leave();
        assert!(t.enter(2));
        t.leave();
        t.leave();
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

    /// Regression (seams review): handlers gave back a failed upstream call
    /// with `calls.refund`, which returned the monthly call but kept the
    /// burst unit. A grant's refund gives back both.
    #[test]
    fn a_refund_gives_back_everything_the_grant_took() {
        let rate = Some(RateLimit {
            requests: 1,
            per_seconds: 10,
            burst: 1,
        });
        let t = TenantState::new("t", plan(Some(5), None, rate), false, Period(0));
        let d = t.acquire(1, NOW);
        let grant = d.grant.expect("an allowed acquire carries its grant");
        assert_eq!((grant.calls, grant.period), (1, d.period));
        assert_eq!(t.acquire(1, NOW).outcome, Outcome::RateLimited);
        t.refund(&grant);
        assert_eq!(t.used(d.period).0, 0);
        let again = t.acquire(1, NOW);
        assert!(again.allowed(), "the burst unit came back too");
        assert!(t.check(1, 0, NOW).grant.is_none(), "a check takes nothing");
        assert!(
            t.acquire(1, NOW).grant.is_none(),
            "a rejection took nothing"
        );
    }

    #[test]
    fn calls_are_checked_before_tokens() {
        let t = TenantState::new("t", plan(Some(1), Some(10), None), false, Period(0));
        assert!(t.acquire(1, NOW).allowed());
        t.add_usage(NOW, NOW.millis().0, 0, 10);
        assert_eq!(t.acquire(1, NOW).outcome, Outcome::QuotaExceeded);
        t.restore(Period::containing_nanos(NOW), 0, 10);
        assert_eq!(t.acquire(1, NOW).outcome, Outcome::TokenQuotaExceeded);
    }

    #[test]
    fn dry_run_consumes_nothing() {
        let t = TenantState::new("t", plan(Some(1), None, None), false, Period(0));
        assert!(t.check(1, 0, NOW).allowed());
        assert!(t.check(1, 0, NOW).allowed());
        assert!(!t.check(2, 0, NOW).allowed());
        assert_eq!(t.used(Period::containing_nanos(NOW)).0, 0);
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
                                if tenants[j].acquire(1, NOW).allowed() {
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
            assert_eq!(t.used(p).0, limit);
        }
    }

    #[test]
    fn the_month_boundary_resets_usage() {
        let t = TenantState::new("t", plan(Some(1), None, None), false, Period(0));
        let p = Period::containing_nanos(NOW);
        let last_ns = Nanos(p.end_secs() * NANOS_PER_SEC - 1);
        assert!(t.acquire(1, last_ns).allowed());
        assert_eq!(t.acquire(1, last_ns).outcome, Outcome::QuotaExceeded);
        let d = t.acquire(1, last_ns + 1);
        assert!(d.allowed());
        assert_eq!(d.period, p.next());
        // A record of the old period does not leak into the new one.
        t.add_usage(last_ns + 2, last_ns.millis().0 - 5, 7, 7);
        assert_eq!(t.used(p.next()).0, 1);
    }
}
