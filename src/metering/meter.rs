//! [`Meter`]: the one path a metered request takes - decide, record,
//! enqueue, and give back what the decision took when Tollgate could not
//! serve the request - for `/api/v1/authorize`, `/api/chat` and the
//! gateway alike, so that they cannot drift apart.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use super::{Metering, Refused};
use crate::cluster::TopUp;
use crate::model::{TokenCounts, UsageRecord};
use crate::quota::lease::Measure;
use crate::quota::reservation::Reservation;
use crate::quota::scoped::{micro_usd, Ask, Breach, Hold, Views};
use crate::quota::{Decision, Outcome, TenantState};
use crate::usage::Queued;

/// One metered request, from its decision to its record in the queue.
/// `S` is how [`Metering`] is held: a borrow in a handler, or its `Arc`
/// when the record outlives the handler (a streaming gateway response).
///
/// An edge whose answer describes the limits (HTTP's rate-limit headers)
/// shows [`decision`](Self::decision), then the tenant's state once the
/// answer has changed it.
pub struct Meter<S: Deref<Target = Metering>> {
    st: S,
    tenant: Arc<TenantState>,
    decision: Decision,
    /// The tokens the decision reserved: settled when the answer says
    /// what was used, given back on every other path (it is dropped).
    reservation: Option<Reservation>,
    /// Tokens charged while the answer streamed, past its reservation.
    charged: u64,
    /// The tenant's other limits (SPEC §12) the decision met, for the
    /// headers; and the one that refused it.
    views: Views,
    breach: Option<Breach>,
    record: UsageRecord,
    started: Instant,
}

impl<S: Deref<Target = Metering>> Meter<S> {
    /// Decides `cost` calls of `tenant` now, taking them (and reserving
    /// `tokens` of a token quota) when the limits allow
    /// ([`TenantState::acquire`]), counts the outcome for `/metrics`, and
    /// starts the request's record from `record` (what the edge knows:
    /// endpoint, method, model, user, bot). A shared quota (`[cluster]`)
    /// whose lease is spent asks Redis for the request's units before
    /// refusing.
    pub async fn decide(
        st: S,
        tenant: &Arc<TenantState>,
        cost: u64,
        tokens: u64,
        record: UsageRecord,
        started: Instant,
    ) -> Self {
        Self::decide_spending(st, tenant, cost, tokens, 0, record, started).await
    }

    /// [`decide`](Self::decide), reserving `spend` micro-dollars of the
    /// tenant's spend limits (SPEC §12) too. Every limit of the tenant,
    /// its key, end user, bot and model is checked; the request takes
    /// from all of them or from none.
    pub async fn decide_spending(
        st: S,
        tenant: &Arc<TenantState>,
        cost: u64,
        tokens: u64,
        spend: u64,
        mut record: UsageRecord,
        started: Instant,
    ) -> Self {
        let mut now = st.clock.now_nanos();
        let mut decision = tenant.acquire_reserving(cost, tokens, now);
        // A shared quota whose lease is spent asks Redis for the request's
        // units - calls, then the tokens it reserves - before refusing.
        if let (Some(cluster), Some(_)) = (st.cluster.as_deref(), tenant.shared()) {
            for _ in 0..2 {
                let (m, n) = match decision.outcome {
                    Outcome::QuotaExceeded => (Measure::Calls, cost),
                    Outcome::TokenQuotaExceeded if tokens > 0 => (Measure::Tokens, tokens),
                    _ => break,
                };
                match cluster.top_up(tenant, m, n).await {
                    TopUp::Granted => {
                        now = st.clock.now_nanos();
                        decision = tenant.acquire_reserving(cost, tokens, now);
                    }
                    TopUp::Dry => break,
                    TopUp::Down => {
                        decision.outcome = Outcome::ClusterUnavailable;
                        decision.retry_after_ns = super::CLUSTER_RETRY_NS;
                        break;
                    }
                }
            }
        }
        let (mut hold, mut views, mut breach) = (None, Views::new(), None);
        if let (true, Some(scoped)) = (decision.allowed(), tenant.scoped()) {
            let ask = Ask {
                calls: cost,
                tokens,
                spend,
                ..Ask::of(&record)
            };
            let now_ms = now.millis().0;
            let taken = match scoped.take(&ask, now_ms) {
                Ok((v, ids)) => {
                    let shared = scoped.shared();
                    let h = Hold::new(scoped, &ask, ids, now_ms);
                    match st.cluster.as_deref().filter(|_| shared) {
                        None => Ok((v, h)),
                        Some(cluster) => fleet_take(cluster, &ask, now_ms, v, h).await,
                    }
                }
                Err(b) => Err(Some(b)),
            };
            match taken {
                Ok((v, h)) => {
                    views = v;
                    hold = Some(h);
                }
                Err(b) => {
                    // Refused by one of them: nothing is kept of the others.
                    if let Some(g) = decision.grant.take() {
                        tenant.refund(&g);
                        tenant.release_tokens(g.period, g.tokens);
                    }
                    match b {
                        Some(b) => {
                            decision.outcome = b.outcome();
                            decision.retry_after_ns =
                                (b.retry_ms.max(1) as u64).saturating_mul(1_000_000);
                            breach = Some(b);
                        }
                        None => {
                            decision.outcome = Outcome::ClusterUnavailable;
                            decision.retry_after_ns = super::CLUSTER_RETRY_NS;
                        }
                    }
                }
            }
        }
        st.metrics.decision(decision.outcome);
        record.ts_ms = now.millis().0;
        record.status = status_of(&decision);
        record.calls = if decision.allowed() { cost } else { 0 };
        record.rejected = !decision.allowed();
        let reservation = decision
            .grant
            .and_then(|g| Reservation::new(tenant.clone(), g.period, g.tokens, hold));
        Meter {
            st,
            tenant: tenant.clone(),
            decision,
            reservation,
            charged: 0,
            views,
            breach,
            record,
            started,
        }
    }

    /// The answer has used about `estimate` tokens so far (it streams):
    /// what passes the reservation is charged now, not at the end, so a
    /// spent token quota shows at once. True when this request has passed
    /// its reservation and the tenant's token quota is spent: the caller
    /// ends the stream.
    pub(crate) fn charge_so_far(&mut self, estimate: u64) -> bool {
        let reserved = self.reservation.as_ref().map_or(0, Reservation::tokens);
        let beyond = estimate
            .saturating_sub(reserved)
            .saturating_sub(self.charged);
        if beyond == 0 {
            return false;
        }
        let now = self.st.clock.now_nanos();
        self.tenant.add_usage(now, self.record.ts_ms, 0, beyond);
        self.charged += beyond;
        let limit = self.tenant.plan_now().plan.monthly_tokens;
        let period = crate::quota::period::Period::containing_nanos(now);
        limit.is_some_and(|l| self.tenant.used(period).1 >= l)
    }

    /// The tokens reserved, to be kept past the request (authorize's
    /// `reservationId`): the meter no longer settles them.
    pub(crate) fn take_reservation(&mut self) -> Option<Reservation> {
        self.reservation.take()
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The tenant's other limits (SPEC §12) the decision met, as it left them.
    pub fn views(&self) -> &Views {
        &self.views
    }

    /// The request, when the decision allowed it; otherwise the refusal
    /// is recorded and returned (with the limit's state).
    pub fn allowed(self) -> Result<Self, Refused> {
        if self.decision.allowed() {
            // The plan is read for a refusal only: an allowed request
            // counts no `Arc` every worker shares up and down.
            return Ok(self);
        }
        let Some(mut refused) = Refused::of(&self.decision, &self.tenant.plan_now().plan.id) else {
            return Ok(self);
        };
        if let Some(b) = &self.breach {
            refused.breached(b, self.decision.now);
        }
        self.finish();
        Err(refused)
    }

    /// The record, for what only the handler learns (metadata, say).
    pub(crate) fn record_mut(&mut self) -> &mut UsageRecord {
        &mut self.record
    }

    /// Served with `status`: the tokens the answer reported (if any, with
    /// the model it named) count against the token quota and are priced.
    /// Returns the cost.
    pub fn served(mut self, status: u16, tokens: Option<(TokenCounts, Option<String>)>) -> f64 {
        self.record.status = status;
        if let Some((counts, model)) = tokens {
            if let Some(m) = model {
                self.record.model = m.into();
            }
            self.record.set_tokens(&counts);
            let priced = self
                .st
                .price(&self.record.model, &counts, self.record.ts_ms);
            self.record.set_cost(priced);
            let now = self.st.clock.now_nanos();
            // What was charged as it streamed is part of the total.
            let charged = std::mem::take(&mut self.charged);
            let rest = counts.total.saturating_sub(charged);
            match self.reservation.take() {
                Some(r) => r.settle_apart(now, rest, counts.total, micro_usd(self.record.cost_usd)),
                None => self.tenant.add_usage(now, self.record.ts_ms, 0, rest),
            }
            if charged > counts.total {
                self.tenant
                    .uncount_tokens(now, self.record.ts_ms, charged - counts.total);
            }
        }
        if self.charged > 0 {
            // No usage after all: what was charged as it streamed goes.
            let now = self.st.clock.now_nanos();
            self.tenant
                .uncount_tokens(now, self.record.ts_ms, std::mem::take(&mut self.charged));
        }
        let cost = self.record.cost_usd;
        self.finish();
        cost
    }

    /// Served, for an edge that answers only once the record is queued
    /// (Envoy's services): false when the queue could not take it - the
    /// store has failed for longer than the queue holds, or more traffic
    /// arrives than it can write - and then what the decision took is
    /// given back (the record stays counted as dropped).
    pub fn recorded(mut self) -> bool {
        self.record.status = 200;
        let grant = self.decision.grant;
        let mut reservation = self.reservation.take();
        match self.queue() {
            Ok(()) => true,
            Err(back) => {
                if let Some(grant) = &grant {
                    back.tenant.refund(grant);
                }
                if let Some(r) = reservation.as_mut() {
                    r.refund_calls();
                }
                false
            }
        }
    }

    /// Tollgate could not get an answer (`status` 502, 504): everything the
    /// decision took is given back, and the request is recorded with no
    /// calls.
    pub fn failed(mut self, status: u16) {
        self.give_back();
        self.record.status = status;
        self.finish();
    }

    /// Allowed, then refused whole with the rest of its request (another of
    /// an Envoy request's descriptors was over its limit): what the
    /// decision took is given back and the request recorded as refused.
    pub(crate) fn withdrawn(mut self) {
        self.give_back();
        self.record.status = 429;
        self.record.rejected = true;
        self.finish();
    }

    /// Gives back everything the decision took; the record charges no calls.
    fn give_back(&mut self) {
        if let Some(grant) = self.decision.grant.take() {
            self.tenant.refund(&grant);
        }
        if let Some(r) = self.reservation.as_mut() {
            r.refund_calls();
        }
        self.record.calls = 0;
    }

    /// Hands the record, with its latency, to the flusher (the tenant's
    /// `Arc` moves along: no second count on its shared cache line). The
    /// decision stands whatever the queue says: a record it cannot take is
    /// dropped from the analytics, its calls and tokens kept for the
    /// store's totals.
    fn finish(self) {
        let (st, queued) = self.queued();
        st.queue.enqueue(queued);
    }

    /// [`finish`](Self::finish) for an edge that takes the decision back
    /// when the queue cannot take the record.
    fn queue(self) -> Result<(), Box<Queued>> {
        let (st, queued) = self.queued();
        st.queue.try_enqueue(queued)
    }

    fn queued(self) -> (S, Queued) {
        let Meter {
            st,
            tenant,
            mut record,
            started,
            ..
        } = self;
        record.response_ms = started.elapsed().as_secs_f64() * 1e3;
        (st, Queued { tenant, record })
    }
}

/// Decides in Redis the limits a request that this instance allowed
/// meets (a fleet shares them): the fleet's views and the hold, now taken
/// by the fleet too; or the limit that refused (`None`: Redis could not
/// answer). The hold, dropped on a refusal, gives back what this instance
/// took.
async fn fleet_take(
    cluster: &crate::cluster::Cluster,
    ask: &Ask<'_>,
    now_ms: i64,
    local: Views,
    mut hold: Hold,
) -> Result<(Views, Hold), Option<Breach>> {
    let asked = hold.scoped().counted(ask, now_ms);
    if asked.items.is_empty() {
        return Ok((local, hold));
    }
    let judged = match cluster.decide_limits(&asked, true).await {
        Some(a) => {
            crate::quota::scoped::judge(&asked, &a.counts, &a.refused, ask, now_ms).map_err(Some)
        }
        None => Err(None),
    };
    match judged {
        Ok(views) => {
            hold.taken_by_fleet();
            Ok((views, hold))
        }
        Err(refused) => {
            // What this instance took goes back, its calls too.
            hold.refund_calls();
            Err(refused)
        }
    }
}

fn status_of(d: &Decision) -> u16 {
    match d.outcome {
        Outcome::Allowed => 200,
        Outcome::Suspended => 403,
        Outcome::ClusterUnavailable => 503,
        _ => 429,
    }
}
