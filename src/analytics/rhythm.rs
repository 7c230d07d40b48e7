//! The weekly rhythm of an owner's usage, learnt from its hours: the
//! average calls, tokens and cost of each hour of the week over the last
//! [`WEEKS`] weeks, and the trend: how the last week compares with that
//! average, as a growth per week (multiplicative, like Holt's linear trend,
//! within [`GROWTH`]). The forecast walks the rest of the period hour by
//! hour with it, instead of assuming every hour is the period's average
//! hour.

use super::hours::{Hours, WEEK_HOURS};

/// Weeks the rhythm averages.
pub(crate) const WEEKS: i64 = 4;
/// The growth per week is taken within these bounds, and the factor it
/// puts on any hour within [`FACTOR`], so a week that started from nothing
/// does not multiply the rest of the month.
const GROWTH: (f64, f64) = (0.7, 1.4);
const FACTOR: (f64, f64) = (0.25, 4.0);
const WEEK_MS: f64 = 7.0 * 86_400_000.0;

/// Calls, tokens and cost, as one triple.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Amounts {
    pub calls: f64,
    pub tokens: f64,
    pub cost_usd: f64,
}

impl Amounts {
    fn add(&mut self, o: Amounts, k: f64) {
        self.calls += o.calls * k;
        self.tokens += o.tokens * k;
        self.cost_usd += o.cost_usd * k;
    }
}

/// Expected usage per hour of the week, and its trend.
#[derive(Clone, Debug, PartialEq)]
pub struct Rhythm {
    /// The average week, by `hour.rem_euclid(168)`.
    slots: Vec<Amounts>,
    /// Growth per week of each figure.
    growth: Amounts,
    /// The middle of the weeks averaged (ms): where the average week lies.
    center_ms: f64,
}

impl Rhythm {
    /// The rhythm of the whole weeks of `h` before hour `now` (hours since
    /// the epoch), or `None` with less than one week since the owner's
    /// first request.
    pub fn learn(h: &Hours, now: i64) -> Option<Rhythm> {
        let since = h.first_active()?;
        let weeks = ((now - since) / WEEK_HOURS).min(WEEKS);
        if weeks < 1 {
            return None;
        }
        let from = now - weeks * WEEK_HOURS;
        let mut slots = vec![Amounts::default(); WEEK_HOURS as usize];
        let mut last_week = vec![Amounts::default(); WEEK_HOURS as usize];
        for hour in from..now {
            let Some(p) = h.at(hour) else { continue };
            let a = Amounts {
                calls: p.calls as f64,
                tokens: p.tokens as f64,
                cost_usd: p.cost_usd,
            };
            slots[hour.rem_euclid(WEEK_HOURS) as usize].add(a, 1.0 / weeks as f64);
            if hour >= now - WEEK_HOURS {
                last_week[hour.rem_euclid(WEEK_HOURS) as usize] = a;
            }
        }
        // The average week lies in the middle of the weeks averaged, the
        // last one half a week before now: the growth per week between them,
        // from the median of the hours' ratios (so one unusual hour of the
        // last week does not tilt the rest of the month), or of the weeks'
        // totals with fewer than a day of hours to compare.
        let apart = (weeks - 1) as f64 / 2.0;
        let growth = |pick: fn(&Amounts) -> f64| {
            if apart <= 0.0 {
                return 1.0;
            }
            let mut ratios: Vec<f64> = slots
                .iter()
                .zip(&last_week)
                .filter(|(avg, _)| pick(avg) > 0.0)
                .map(|(avg, last)| pick(last) / pick(avg))
                .collect();
            let ratio = if ratios.len() >= 24 {
                ratios.sort_by(f64::total_cmp);
                ratios[ratios.len() / 2]
            } else {
                let avg: f64 = slots.iter().map(pick).sum();
                if avg <= 0.0 {
                    return 1.0;
                }
                last_week.iter().map(pick).sum::<f64>() / avg
            };
            ratio.max(0.0).powf(1.0 / apart).clamp(GROWTH.0, GROWTH.1)
        };
        let growth = Amounts {
            calls: growth(|a| a.calls),
            tokens: growth(|a| a.tokens),
            cost_usd: growth(|a| a.cost_usd),
        };
        Some(Rhythm {
            slots,
            growth,
            center_ms: (now - weeks * WEEK_HOURS / 2) as f64 * 3_600_000.0,
        })
    }

    /// The usage expected in `[from_ms, to_ms)`, parts of hours in proportion.
    pub fn between(&self, from_ms: i64, to_ms: i64) -> Amounts {
        let mut out = Amounts::default();
        self.walk(from_ms, to_ms, |_, _, a| {
            out.add(a, 1.0);
            false
        });
        out
    }

    /// Calls `f(start_ms, end_ms, usage)` for each hour (or part of one)
    /// from `from_ms` to `to_ms`, until it answers true.
    pub(crate) fn walk(
        &self,
        from_ms: i64,
        to_ms: i64,
        mut f: impl FnMut(i64, i64, Amounts) -> bool,
    ) {
        const H: i64 = 3_600_000;
        let mut t = from_ms;
        while t < to_ms {
            let end = ((t.div_euclid(H) + 1) * H).min(to_ms);
            let slot = self.slots[t.div_euclid(H).rem_euclid(WEEK_HOURS) as usize];
            let weeks = ((t + end) as f64 / 2.0 - self.center_ms) / WEEK_MS;
            let k = |g: f64| g.powf(weeks).clamp(FACTOR.0, FACTOR.1) * (end - t) as f64 / H as f64;
            let a = Amounts {
                calls: slot.calls * k(self.growth.calls),
                tokens: slot.tokens * k(self.growth.tokens),
                cost_usd: slot.cost_usd * k(self.growth.cost_usd),
            };
            if f(t, end, a) {
                return;
            }
            t = end;
        }
    }

    /// When `used` reaches `limit` going by this rhythm from `now_ms`, if
    /// before `end_ms` (to the minute, within the hour it happens in).
    pub fn reaches(
        &self,
        used: f64,
        limit: f64,
        pick: fn(&Amounts) -> f64,
        now_ms: i64,
        end_ms: i64,
    ) -> Option<i64> {
        let mut total = used;
        let mut at = None;
        self.walk(now_ms, end_ms, |start, end, a| {
            let add = pick(&a);
            if total + add >= limit && add > 0.0 {
                // Where in this stretch the limit falls, in proportion.
                let share = (limit - total) / add;
                at = Some(start + ((end - start) as f64 * share).ceil() as i64);
                return true;
            }
            total += add;
            false
        });
        at
    }
}
