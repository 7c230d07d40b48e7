//! Where the period is heading: projected calls, tokens and cost at the
//! period's end, when a quota runs out, and the plan that fits the
//! projection. With a week of history the projection follows the owner's
//! weekly rhythm ([`Rhythm`]); before that, the period's average rate.

use super::rhythm::Rhythm;
use super::words::{count, usd};
use crate::model::Plan;
use crate::quota::period::Period;

/// How a projection was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Each remaining hour as the same hour of the week has gone lately.
    Seasonal,
    /// Each remaining hour as the period's average hour so far.
    Average,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Seasonal => "seasonal",
            Method::Average => "average",
        }
    }
}

/// The period's usage so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SoFar {
    pub calls: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, PartialEq)]
pub struct Forecast {
    /// Milliseconds since the epoch, as are the times below.
    pub(crate) period_end_ms: i64,
    /// How much of the period the projection has seen (ms).
    pub(crate) elapsed_ms: i64,
    pub(crate) daily_calls: f64,
    pub(crate) daily_tokens: f64,
    pub(crate) daily_cost_usd: f64,
    pub(crate) projected_calls: u64,
    pub(crate) projected_tokens: u64,
    pub(crate) projected_cost_usd: f64,
    /// When the call quota runs out at this rate (already, or before the
    /// period ends); null if it will not.
    pub(crate) quota_exhausted_at_ms: Option<i64>,
    pub(crate) token_quota_exhausted_at_ms: Option<i64>,
    pub method: Method,
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

/// The projection of `so_far` to the end of `period`, by `rhythm` when
/// there is one.
pub(crate) fn forecast(
    plan: &Plan,
    period: Period,
    now_ms: i64,
    so_far: SoFar,
    rhythm: Option<&Rhythm>,
) -> Forecast {
    let (start_ms, end_ms) = (period.start_secs() * 1000, period.end_secs() * 1000);
    let elapsed = ((now_ms - start_ms) as f64).max(MIN_ELAPSED_MS);
    let per_ms = |v: f64| v / elapsed;
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    let remaining = (end_ms - now_ms).max(0) as f64;
    let (rest, method) = match rhythm {
        Some(r) => (r.between(now_ms, end_ms), Method::Seasonal),
        None => (
            super::rhythm::Amounts {
                calls: per_ms(so_far.calls as f64) * remaining,
                tokens: per_ms(so_far.tokens as f64) * remaining,
                cost_usd: per_ms(so_far.cost_usd) * remaining,
            },
            Method::Average,
        ),
    };
    let exhausted = |used: u64, limit: Option<u64>, pick: fn(&super::rhythm::Amounts) -> f64| {
        let limit = limit?;
        if used >= limit {
            return Some(now_ms);
        }
        match rhythm {
            Some(r) => r.reaches(used as f64, limit as f64, pick, now_ms, end_ms),
            None => exhausted_at(used, Some(limit), per_ms(used as f64), now_ms, end_ms),
        }
    };
    Forecast {
        period_end_ms: end_ms,
        elapsed_ms: (now_ms - start_ms).max(0),
        daily_calls: round(per_ms(so_far.calls as f64) * DAY_MS, 2),
        daily_tokens: round(per_ms(so_far.tokens as f64) * DAY_MS, 2),
        daily_cost_usd: round(per_ms(so_far.cost_usd) * DAY_MS, 6),
        projected_calls: (so_far.calls as f64 + rest.calls).round() as u64,
        projected_tokens: (so_far.tokens as f64 + rest.tokens).round() as u64,
        projected_cost_usd: round(so_far.cost_usd + rest.cost_usd, 6),
        quota_exhausted_at_ms: exhausted(so_far.calls, plan.monthly_calls, |a| a.calls),
        token_quota_exhausted_at_ms: exhausted(so_far.tokens, plan.monthly_tokens, |a| a.tokens),
        method,
    }
}

#[derive(Debug, PartialEq)]
pub struct Recommendation {
    pub plan_id: String,
    pub(crate) plan_name: String,
    pub price_usd_monthly: f64,
    pub reason: String,
}

fn fits(p: &Plan, calls: u64, tokens: u64) -> bool {
    p.monthly_calls.is_none_or(|l| l >= calls) && p.monthly_tokens.is_none_or(|l| l >= tokens)
}

/// History a projection needs before it suggests a bigger plan (a day),
/// and a cheaper one (a week: one whole weekly rhythm).
const UPGRADE_AFTER_MS: i64 = 86_400_000;
const DOWNGRADE_AFTER_MS: i64 = 7 * 86_400_000;

/// Whether `cheaper` serves a tenant on `current` as well for its use: the
/// projection fits with a quarter to spare, and its burst limit is no
/// tighter (the projection cannot tell a tenant's peaks).
fn serves_as_well(cheaper: &Plan, current: &Plan, calls: u64, tokens: u64) -> bool {
    let spare = |n: u64| n.saturating_add(n / 4);
    let burst_ok = match (cheaper.rate_limit, current.rate_limit) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => {
            a.burst >= b.burst
                && (a.requests as u128) * (b.per_seconds as u128)
                    >= (b.requests as u128) * (a.per_seconds as u128)
        }
    };
    burst_ok && fits(cheaper, spare(calls), spare(tokens))
}

/// The cheapest plan that fits the projection, when it is not the current
/// one: a bigger plan once a day of the period has been seen, a cheaper
/// one only after a week and only if it serves the tenant as well
/// ([`serves_as_well`]). A period without usage yet suggests nothing.
pub(crate) fn recommend(current: &Plan, plans: &[Plan], f: &Forecast) -> Option<Recommendation> {
    let (calls, tokens) = (f.projected_calls, f.projected_tokens);
    if calls == 0 && tokens == 0 {
        return None;
    }
    let cheapest = |ok: &dyn Fn(&Plan) -> bool| {
        plans.iter().filter(|p| ok(p)).min_by(|a, b| {
            a.price_usd_monthly
                .total_cmp(&b.price_usd_monthly)
                .then(a.id.cmp(&b.id))
        })
    };
    let best = if fits(current, calls, tokens) {
        if f.elapsed_ms < DOWNGRADE_AFTER_MS {
            return None;
        }
        cheapest(&|p| serves_as_well(p, current, calls, tokens))
            .filter(|p| p.price_usd_monthly < current.price_usd_monthly)?
    } else {
        if f.elapsed_ms < UPGRADE_AFTER_MS {
            return None;
        }
        cheapest(&|p| fits(p, calls, tokens))?
    };
    if best.id == current.id {
        return None;
    }
    let reason = if fits(current, calls, tokens) {
        format!(
            "The projected {} calls and {} tokens this period fit the {} plan, which costs {}/month instead of {}.",
            count(calls),
            count(tokens),
            best.name,
            usd(best.price_usd_monthly),
            usd(current.price_usd_monthly)
        )
    } else {
        let what = match (current.monthly_calls, current.monthly_tokens) {
            (Some(l), _) if calls > l => {
                format!(
                    "{} calls exceed the {} plan's {}",
                    count(calls),
                    current.name,
                    count(l)
                )
            }
            (_, Some(l)) => format!(
                "{} tokens exceed the {} plan's {}",
                count(tokens),
                current.name,
                count(l)
            ),
            _ => "usage exceeds the current plan".to_string(),
        };
        format!(
            "At the current rate, the projected {what}; the {} plan ({}/month) covers it.",
            best.name,
            usd(best.price_usd_monthly)
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
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            reserve_usd: None,
            limits: Vec::new(),
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
            None,
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
                .contains("12,000 calls exceed the free plan's 10,000"),
            "{}",
            r.reason
        );
        assert_eq!(
            recommend(&plans[1], &plans, &f),
            None,
            "starter already fits"
        );
    }

    /// A projection from a few hours suggests nothing (it moved the demo's
    /// Enterprise tenant to Professional eight hours into a month), and a
    /// cheaper plan that fits only barely, or bursts less, is no advice.
    #[test]
    fn no_advice_from_little_history_or_to_a_worse_plan() {
        let hours = |h: u32| Utc.with_ymd_and_hms(2026, 11, 1, h, 0, 0).unwrap();
        let p = Period::containing(hours(8));
        let limited = |id: &str, calls, price, burst| Plan {
            rate_limit: Some(crate::model::RateLimit {
                requests: burst,
                per_seconds: 1,
                burst,
            }),
            ..plan(id, calls, price)
        };
        let ent = limited("ent", None, 499.0, 100);
        let pro = limited("pro", Some(1_000_000), 99.0, 100);
        let plans = vec![ent.clone(), pro.clone()];
        let so_far = SoFar {
            calls: 100,
            tokens: 0,
            cost_usd: 0.0,
        };
        let early = forecast(&ent, p, hours(8).timestamp_millis(), so_far, None);
        assert_eq!(recommend(&ent, &plans, &early), None, "8 hours in");
        let later = Utc.with_ymd_and_hms(2026, 11, 9, 0, 0, 0).unwrap();
        let f = forecast(&ent, p, later.timestamp_millis(), so_far, None);
        assert_eq!(recommend(&ent, &plans, &f).unwrap().plan_id, "pro");
        // A cheaper plan with a tighter burst limit is not as good.
        let tight = limited("tight", Some(1_000_000), 9.0, 10);
        let plans = vec![ent.clone(), tight];
        assert_eq!(recommend(&ent, &plans, &f), None, "bursts less");
        // Fitting with less than a quarter to spare is not enough.
        let busy = SoFar {
            calls: 250_000,
            ..so_far
        };
        let f = forecast(&ent, p, later.timestamp_millis(), busy, None);
        assert!(f.projected_calls > 800_000, "{}", f.projected_calls);
        let plans = vec![ent.clone(), pro];
        assert_eq!(recommend(&ent, &plans, &f), None, "too close to the limit");
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
            None,
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
            None,
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
            None,
        );
        assert_eq!(over.quota_exhausted_at_ms, Some(now.timestamp_millis()));
    }

    /// The backtest of the seasonal projection against the average one:
    /// five months of a business rhythm (busy weekday afternoons, quiet
    /// nights and weekends), flat and growing 1 % a day, a projection every
    /// six hours of three months from each one's second day, each against
    /// what the month really came to. Run with `--nocapture` to see the
    /// errors.
    #[test]
    fn the_weekly_rhythm_projects_better_than_the_average() {
        use crate::analytics::anomaly::tests::rhythm_from;
        use crate::analytics::hours::HOUR_MS;
        let start = Utc.with_ymd_and_hms(2026, 7, 1, 0, 0, 0).unwrap();
        let first = start.timestamp_millis() / HOUR_MS;
        let flat_series = rhythm_from(first, 160);
        let mut growing = flat_series.clone();
        for (i, p) in growing.points.iter_mut().enumerate() {
            p.calls = (p.calls as f64 * 1.01f64.powf(i as f64 / 24.0)).round() as u64;
        }
        let unlimited = plan("p", None, 0.0);
        for (name, h, bound) in [
            ("flat", &flat_series, 2.0),
            ("growing 1 %/day", &growing, 2.0),
        ] {
            let calls = |from: i64, to: i64| -> u64 {
                (from..to).map(|t| h.at(t).map_or(0, |p| p.calls)).sum()
            };
            let (mut flat, mut seasonal, mut n) = (0.0, 0.0, 0);
            for month in [9, 10, 11] {
                let p = Period::containing(Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap());
                let (a, z) = (
                    p.start_secs() * 1000 / HOUR_MS,
                    p.end_secs() * 1000 / HOUR_MS,
                );
                let truth = calls(a, z) as f64;
                for now in (a + 24..z - 24).step_by(6) {
                    let so_far = SoFar {
                        calls: calls(a, now),
                        tokens: 0,
                        cost_usd: 0.0,
                    };
                    let ms = now * HOUR_MS;
                    let avg = forecast(&unlimited, p, ms, so_far, None);
                    let r = Rhythm::learn(h, now).expect("weeks of history");
                    let by_week = forecast(&unlimited, p, ms, so_far, Some(&r));
                    assert_eq!(by_week.method, Method::Seasonal);
                    flat += (avg.projected_calls as f64 - truth).abs() / truth;
                    seasonal += (by_week.projected_calls as f64 - truth).abs() / truth;
                    n += 1;
                }
            }
            let (flat, seasonal) = (flat / n as f64 * 100.0, seasonal / n as f64 * 100.0);
            println!(
                "backtest, {name}, {n} projections: mean absolute error {flat:.2} % at the average rate, {seasonal:.2} % by the weekly rhythm"
            );
            assert!(seasonal < bound, "{name}: {seasonal}");
            assert!(seasonal * 2.0 < flat, "{name}: {seasonal} vs {flat}");
        }
    }

    #[test]
    fn the_rhythm_finds_when_a_quota_runs_out() {
        use crate::analytics::anomaly::tests::rhythm_from;
        use crate::analytics::hours::HOUR_MS;
        let now = Utc.with_ymd_and_hms(2026, 11, 10, 0, 0, 0).unwrap();
        let p = Period::containing(now);
        let first = now.timestamp_millis() / HOUR_MS - 60 * 24;
        let h = rhythm_from(first, 90);
        let now_h = now.timestamp_millis() / HOUR_MS;
        let start_h = p.start_secs() * 1000 / HOUR_MS;
        let used: u64 = (start_h..now_h).map(|t| h.at(t).unwrap().calls).sum();
        // A quota the rhythm reaches on some later day: find the hour it is
        // really reached in, and check the forecast names that hour.
        let limit = used * 2;
        let mut total = used;
        let mut real = None;
        for t in now_h.. {
            total += h.at(t).unwrap().calls;
            if total >= limit {
                real = Some(t);
                break;
            }
        }
        let r = Rhythm::learn(&h, now_h).unwrap();
        let f = forecast(
            &plan("p", Some(limit), 0.0),
            p,
            now.timestamp_millis(),
            SoFar {
                calls: used,
                tokens: 0,
                cost_usd: 0.0,
            },
            Some(&r),
        );
        let at = f.quota_exhausted_at_ms.expect("runs out this period") / HOUR_MS;
        assert!((at - real.unwrap()).abs() <= 6, "{at} vs {real:?}");
    }
}
