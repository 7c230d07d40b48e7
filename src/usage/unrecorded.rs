//! [`Unrecorded`]: what the decisions whose records a full queue could not
//! take consumed. The request was answered and its decision stands, so its
//! calls and tokens must reach the store's period totals even though its
//! record is dropped from the analytics: billing, a restart's counters and
//! a rebuild of the shared allocation read those totals (issue 36, I2).
//! They are added up here per tenant and period - bounded by the tenants,
//! not the traffic - and the flusher writes each sum as one record of the
//! endpoint [`UNRECORDED`] at its next drain.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Queued;
use crate::model::UsageRecord;
use crate::quota::period::Period;

/// The endpoint of the records that carry what dropped records consumed.
pub(crate) const UNRECORDED: &str = "(unrecorded)";

#[derive(Default)]
pub(crate) struct Unrecorded {
    /// By tenant (its state's address) and period.
    kept: Mutex<HashMap<(usize, i32), Queued>>,
}

impl Unrecorded {
    /// Adds what `q`'s decision consumed (nothing for a record that
    /// consumed nothing).
    pub(crate) fn keep(&self, q: Queued) {
        let r = &q.record;
        if r.calls == 0 && r.tokens == 0 {
            return;
        }
        let period = Period::containing_secs(r.ts_ms.div_euclid(1000)).0;
        let key = (Arc::as_ptr(&q.tenant) as usize, period);
        let mut kept = self.kept.lock();
        let sum = kept.entry(key).or_insert_with(|| Queued {
            tenant: q.tenant.clone(),
            record: UsageRecord {
                ts_ms: r.ts_ms,
                endpoint: UNRECORDED.into(),
                status: 200,
                ..Default::default()
            },
        });
        let s = &mut sum.record;
        s.ts_ms = s.ts_ms.max(r.ts_ms);
        s.calls = s.calls.saturating_add(r.calls);
        s.tokens = s.tokens.saturating_add(r.tokens);
        s.prompt_tokens = s.prompt_tokens.saturating_add(r.prompt_tokens);
        s.completion_tokens = s.completion_tokens.saturating_add(r.completion_tokens);
        s.cost_usd += r.cost_usd;
    }

    /// The sums kept since the last call, as records, into `out`.
    pub(crate) fn take(&self, out: &mut Vec<Queued>) -> usize {
        let mut kept = self.kept.lock();
        let n = kept.len();
        out.extend(kept.drain().map(|(_, q)| q));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;
    use crate::quota::{ActivePlan, TenantState};

    #[test]
    fn dropped_records_are_kept_as_one_sum_per_tenant_and_period() {
        let plan = ActivePlan::new(Plan::unlimited("p"));
        let a = Arc::new(TenantState::new("a", plan.clone(), false, Period(0)));
        let b = Arc::new(TenantState::new("b", plan, false, Period(0)));
        let u = Unrecorded::default();
        let q = |t: &Arc<TenantState>, ts_ms: i64, calls: u64, tokens: u64| Queued {
            tenant: t.clone(),
            record: UsageRecord {
                ts_ms,
                calls,
                tokens,
                ..Default::default()
            },
        };
        u.keep(q(&a, 1_000, 1, 10));
        u.keep(q(&a, 2_000, 2, 0));
        u.keep(q(&a, 3_000, 0, 0));
        u.keep(q(&b, 1_500, 1, 0));
        // Another month of `a`'s.
        u.keep(q(&a, 40 * 86_400_000, 5, 0));
        let mut out = Vec::new();
        assert_eq!(u.take(&mut out), 3);
        out.sort_by_key(|q| (q.tenant.id.to_string(), q.record.ts_ms));
        let got: Vec<_> = out
            .iter()
            .map(|q| {
                (
                    q.tenant.id.to_string(),
                    q.record.ts_ms,
                    q.record.calls,
                    q.record.tokens,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a".into(), 2_000, 3, 10),
                ("a".into(), 40 * 86_400_000, 5, 0),
                ("b".into(), 1_500, 1, 0)
            ]
        );
        assert!(out.iter().all(|q| q.record.endpoint == UNRECORDED));
        assert_eq!(u.take(&mut out), 0, "taken once");
    }
}
