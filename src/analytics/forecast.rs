//! Where the period is heading: projected calls, tokens and cost at the
//! period's end from its daily rate so far, when a quota runs out, and the
//! plan that fits the projection.

use crate::model::Plan;
use crate::quota::period::Period;

/// The period's usage so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoFar {
    pub calls: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, PartialEq)]
pub struct Forecast {
    /// Milliseconds since the epoch, as are the times below.
    pub period_end_ms: i64,
    pub daily_calls: f64,
    pub daily_tokens: f64,
    pub daily_cost_usd: f64,
    pub projected_calls: u64,
    pub projected_tokens: u64,
    pub projected_cost_usd: f64,
    /// When the call quota runs out at this rate (already, or before the
    /// period ends); null if it will not.
    pub quota_exhausted_at_ms: Option<i64>,
    pub token_quota_exhausted_at_ms: Option<i64>,
}

const DAY_MS: f64 = 86_400_000.0;
/// The rate is taken over at least an hour, so a period's first minutes do
/// not project wildly.
const MIN_ELAPSED_MS: f64 = 3_600_000.0;

fn exhausted_at(
    used: u64,
    limit: Option<u64>,
    per_ms: f64,
    now_ms: i64,
    end_ms: i64,
) -> Option<i64> {
    let limit = limit?;
    if used >= limit {
        return Some(now_ms);
    }
    if per_ms <= 0.0 {
        return None;
    }
    let at = now_ms as f64 + (limit - used) as f64 / per_ms;
    (at < end_ms as f64).then(|| at.ceil() as i64)
}

pub fn forecast(plan: &Plan, period: Period, now_ms: i64, so_far: SoFar) -> Forecast {
    let (start_ms, end_ms) = (period.start_secs() * 1000, period.end_secs() * 1000);
    let elapsed = ((now_ms - start_ms) as f64).max(MIN_ELAPSED_MS);
    let per_ms = |v: f64| v / elapsed;
    let project = |v: f64| v + per_ms(v) * ((end_ms - now_ms).max(0) as f64);
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    Forecast {
        period_end_ms: end_ms,
        daily_calls: round(per_ms(so_far.calls as f64) * DAY_MS, 2),
        daily_tokens: round(per_ms(so_far.tokens as f64) * DAY_MS, 2),
        daily_cost_usd: round(per_ms(so_far.cost_usd) * DAY_MS, 6),
        projected_calls: project(so_far.calls as f64).round() as u64,
        projected_tokens: project(so_far.tokens as f64).round() as u64,
        projected_cost_usd: round(project(so_far.cost_usd), 6),
        quota_exhausted_at_ms: exhausted_at(
            so_far.calls,
            plan.monthly_calls,
            per_ms(so_far.calls as f64),
            now_ms,
            end_ms,
        ),
        token_quota_exhausted_at_ms: exhausted_at(
            so_far.tokens,
            plan.monthly_tokens,
            per_ms(so_far.tokens as f64),
            now_ms,
            end_ms,
        ),
    }
}

#[derive(Debug, PartialEq)]
pub struct Recommendation {
    pub plan_id: String,
    pub plan_name: String,
    pub price_usd_monthly: f64,
    pub reason: String,
}

fn fits(p: &Plan, calls: u64, tokens: u64) -> bool {
    p.monthly_calls.is_none_or(|l| l >= calls) && p.monthly_tokens.is_none_or(|l| l >= tokens)
}

/// The cheapest plan that fits the projection, when it is not the current
/// one. A period without usage yet projects nothing, so it suggests nothing.
pub fn recommend(current: &Plan, plans: &[Plan], f: &Forecast) -> Option<Recommendation> {
    let (calls, tokens) = (f.projected_calls, f.projected_tokens);
    if calls == 0 && tokens == 0 {
        return None;
    }
    let best = plans
        .iter()
        .filter(|p| fits(p, calls, tokens))
        .min_by(|a, b| {
            a.price_usd_monthly
                .total_cmp(&b.price_usd_monthly)
                .then(a.id.cmp(&b.id))
        })?;
    if best.id == current.id
        || (fits(current, calls, tokens) && best.price_usd_monthly >= current.price_usd_monthly)
    {
        return None;
    }
    let reason = if fits(current, calls, tokens) {
        format!(
            "The projected {calls} calls and {tokens} tokens this period fit the {} plan, which costs ${:.2}/month instead of ${:.2}.",
            best.name, best.price_usd_monthly, current.price_usd_monthly
        )
    } else {
        let what = match (current.monthly_calls, current.monthly_tokens) {
            (Some(l), _) if calls > l => {
                format!("{calls} calls exceed the {} plan's {l}", current.name)
            }
            (_, Some(l)) => format!("{tokens} tokens exceed the {} plan's {l}", current.name),
            _ => "usage exceeds the current plan".to_string(),
        };
        format!(
            "At the current rate, the projected {what}; the {} plan (${:.2}/month) covers it.",
            best.name, best.price_usd_monthly
        )
    };
    Some(Recommendation {
        plan_id: best.id.clone(),
        plan_name: best.name.clone(),
        price_usd_monthly: best.price_usd_monthly,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn plan(id: &str, calls: Option<u64>, price: f64) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            monthly_calls: calls,
            monthly_tokens: None,
            rate_limit: None,
            price_usd_monthly: price,
            ingest_rate: None,
        }
    }

    #[test]
    fn projects_linearly_and_finds_the_exhaustion_date() {
        // 10 days into a 30-day November, 4,000 calls: 400/day, 12,000 at the end.
        let now = Utc.with_ymd_and_hms(2026, 11, 11, 0, 0, 0).unwrap();
        let p = Period::containing(now);
        let free = plan("free", Some(10_000), 0.0);
        let f = forecast(
            &free,
            p,
            now.timestamp_millis(),
            SoFar {
                calls: 4_000,
                tokens: 0,
                cost_usd: 2.0,
            },
        );
        assert_eq!(f.projected_calls, 12_000);
        assert_eq!(f.daily_calls, 400.0);
        assert_eq!(f.projected_cost_usd, 6.0);
        // 6,000 more at 400/day: 15 days later.
        assert_eq!(
            f.quota_exhausted_at_ms,
            Some(
                Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0)
                    .unwrap()
                    .timestamp_millis()
            )
        );
        assert_eq!(f.token_quota_exhausted_at_ms, None);

        let plans = vec![
            free.clone(),
            plan("starter", Some(100_000), 29.0),
            plan("ent", None, 499.0),
        ];
        let r = recommend(&free, &plans, &f).unwrap();
        assert_eq!(r.plan_id, "starter");
        assert!(
            r.reason
                .contains("12000 calls exceed the free plan's 10000"),
            "{}",
            r.reason
        );
        assert_eq!(
            recommend(&plans[1], &plans, &f),
            None,
            "starter already fits"
        );
    }

    #[test]
    fn downgrade_and_no_change() {
        let now = Utc.with_ymd_and_hms(2026, 11, 16, 0, 0, 0).unwrap();
        let p = Period::containing(now);
        let starter = plan("starter", Some(100_000), 29.0);
        let plans = vec![plan("free", Some(10_000), 0.0), starter.clone()];
        let quiet = forecast(
            &starter,
            p,
            now.timestamp_millis(),
            SoFar {
                calls: 100,
                tokens: 0,
                cost_usd: 0.0,
            },
        );
        assert_eq!(recommend(&starter, &plans, &quiet).unwrap().plan_id, "free");
        let busy = forecast(
            &starter,
            p,
            now.timestamp_millis(),
            SoFar {
                calls: 20_000,
                tokens: 0,
                cost_usd: 0.0,
            },
        );
        assert_eq!(recommend(&starter, &plans, &busy), None);
        let over = forecast(
            &plans[0],
            p,
            now.timestamp_millis(),
            SoFar {
                calls: 10_000,
                tokens: 0,
                cost_usd: 0.0,
            },
        );
        assert_eq!(over.quota_exhausted_at_ms, Some(now.timestamp_millis()));
    }
}
