//! Unusual hours: each hour's requests, tokens, error rate and p95 latency
//! against a robust seasonal baseline, the same hour of the week over the
//! previous [`BASELINE_WEEKS`] weeks.
//!
//! The baseline is the median of those hours and its spread their median
//! absolute deviation (MAD, scaled by 1.4826 to read as a standard
//! deviation), so one odd week neither moves the baseline nor hides the
//! next one. The spread has a floor per metric (a share of the median and
//! the counting noise `sqrt(median)`; for tokens also the noise of the
//! requests' sizes, `1.5 / sqrt(requests)` of the median), so a perfectly
//! regular series does not call every wobble an anomaly. An hour is
//! flagged when it is [`THRESHOLD`] spreads or more away, and only with
//! volume: at least [`MIN_REQUESTS`] requests in the hour or in its
//! baseline, so quiet tenants do not flap. Error rate and latency are
//! flagged only when they rise.

use super::hours::{HourPoint, Hours, HOUR_MS, WEEK_HOURS};

/// Weeks of the same hour the baseline looks back on.
pub(crate) const BASELINE_WEEKS: i64 = 4;
/// Of which at least this many must lie after the owner's first request.
pub(crate) const MIN_WEEKS: usize = 2;
/// The volume below which an hour is never flagged.
pub(crate) const MIN_REQUESTS: u64 = 20;
/// How many spreads from the baseline an anomaly is.
pub(crate) const THRESHOLD: f64 = 5.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Metric {
    Requests,
    Tokens,
    ErrorRate,
    P95Latency,
}

impl Metric {
    pub(crate) const ALL: [Metric; 4] = [
        Metric::Requests,
        Metric::Tokens,
        Metric::ErrorRate,
        Metric::P95Latency,
    ];

    /// Its name in the API.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Tokens => "tokens",
            Metric::ErrorRate => "errorRate",
            Metric::P95Latency => "p95LatencyMs",
        }
    }

    /// Words for a message.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Metric::Requests => "requests per hour",
            Metric::Tokens => "tokens per hour",
            Metric::ErrorRate => "error rate",
            Metric::P95Latency => "p95 latency (ms)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Direction {
    Up,
    Down,
}

impl Direction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// One unusual hour of one metric.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Anomaly {
    /// Hours since the epoch.
    pub hour: i64,
    pub metric: Metric,
    pub observed: f64,
    /// The baseline's median.
    pub expected: f64,
    /// Spreads from the baseline, signed.
    pub score: f64,
    pub direction: Direction,
}

impl Anomaly {
    pub(crate) fn t_ms(&self) -> i64 {
        self.hour * HOUR_MS
    }

    /// Observed, expected and score as shown (reports, alerts): the error
    /// rate to 4 decimals, the rest and the score to 2.
    pub(crate) fn rounded(&self) -> (f64, f64, f64) {
        let round = |x: f64, decimals: i32| {
            let f = 10f64.powi(decimals);
            (x * f).round() / f
        };
        let d = if self.metric == Metric::ErrorRate {
            4
        } else {
            2
        };
        (
            round(self.observed, d),
            round(self.expected, d),
            round(self.score, 2),
        )
    }
}

/// Hours of history before the first hour judged that a baseline reads.
pub(crate) const HISTORY_HOURS: i64 = BASELINE_WEEKS * WEEK_HOURS;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How one metric is read from an hour, and judged.
struct Rule {
    metric: Metric,
    /// The hour's value, or `None` when the hour has too little volume to
    /// say anything about this metric.
    value: fn(&HourPoint) -> Option<f64>,
    /// What the baseline hours lead one to expect, from their values (of
    /// those that have one) and the hours: the values' median, or as the
    /// rule says.
    expected: fn(&mut [f64], &[HourPoint]) -> f64,
    /// The spread's floor for the expected value, the observed hour and the
    /// baseline's hours.
    floor: fn(f64, &HourPoint, &[HourPoint]) -> f64,
    /// Whether the hour and its baseline together have the volume to judge.
    enough: fn(&HourPoint, &[HourPoint]) -> bool,
    falls_too: bool,
}

fn counts_floor(m: f64, _: &HourPoint, _: &[HourPoint]) -> f64 {
    (0.15 * m).max(m.sqrt()).max(1.0)
}

/// Tokens per hour vary with the requests' sizes as well as their number:
/// a relative noise of about 2 / sqrt(requests) (sizes with a coefficient
/// of variation above 1: long-tailed prompts, and the requests that carry
/// no tokens at all - a chatbot's mix of chats, embeddings and plain API
/// calls is about 1.3), taken at the baseline's volume.
fn tokens_floor(m: f64, p: &HourPoint, base: &[HourPoint]) -> f64 {
    let n = median_requests(base).max(1.0);
    counts_floor(m, p, base).max(2.0 * m / n.sqrt())
}

/// The baseline hours' median of requests.
fn median_requests(base: &[HourPoint]) -> f64 {
    let mut reqs: Vec<f64> = base.iter().map(|b| b.requests as f64).collect();
    median(&mut reqs)
}

fn busy(p: &HourPoint, base: &[HourPoint]) -> bool {
    p.requests >= MIN_REQUESTS || median_requests(base) >= MIN_REQUESTS as f64
}

fn served_enough(p: &HourPoint) -> bool {
    p.served() >= MIN_REQUESTS
}

const RULES: [Rule; 4] = [
    Rule {
        metric: Metric::Requests,
        value: |p| Some(p.requests as f64),
        expected: |values, _| median(values),
        floor: counts_floor,
        enough: busy,
        falls_too: true,
    },
    Rule {
        metric: Metric::Tokens,
        value: |p| Some(p.tokens as f64),
        expected: |values, _| median(values),
        floor: tokens_floor,
        enough: busy,
        falls_too: true,
    },
    Rule {
        metric: Metric::ErrorRate,
        value: |p| served_enough(p).then(|| p.errors as f64 / p.served() as f64),
        // The baseline's errors out of its requests: an hour's median is
        // 0 errors in many quiet weeks where 3 in 100 is usual.
        expected: |_, base| {
            let (errors, served) = base
                .iter()
                .filter(|b| served_enough(b))
                .fold((0, 0), |(e, s), b| (e + b.errors, s + b.served()));
            errors as f64 / served.max(1) as f64
        },
        // Two points of error rate, one error of this hour's, or the
        // binomial noise of this many requests at the baseline's rate: a
        // quiet hour needs five errors more than usual to be unusual, not
        // three in twenty.
        floor: |m, p, _| {
            let m = m.clamp(0.01, 0.99);
            let n = p.served().max(1) as f64;
            (m * (1.0 - m) / n).sqrt().max(0.02).max(1.0 / n)
        },
        enough: |p, _| served_enough(p),
        falls_too: false,
    },
    Rule {
        metric: Metric::P95Latency,
        value: |p| p.p95_ms.filter(|_| served_enough(p)),
        expected: |values, _| median(values),
        floor: |m, _, _| (0.25 * m).max(5.0),
        enough: |p, _| served_enough(p),
        falls_too: false,
    },
];

/// The unusual hours among `[from, to)` (hours since the epoch) of `h`,
/// which should hold [`HISTORY_HOURS`] before `from` for a baseline; in
/// hour order, then by metric.
pub(crate) fn detect(h: &Hours, from: i64, to: i64) -> Vec<Anomaly> {
    let Some(since) = h.first_active() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for hour in from.max(h.first)..to.min(h.end()) {
        for rule in &RULES {
            if let Some(a) = judge(h, hour, since, rule) {
                out.push(a);
            }
        }
    }
    out
}

fn judge(h: &Hours, hour: i64, since: i64, rule: &Rule) -> Option<Anomaly> {
    let p = h.at(hour)?;
    let observed = (rule.value)(p)?;
    let base: Vec<HourPoint> = (1..=BASELINE_WEEKS)
        .map(|k| hour - k * WEEK_HOURS)
        .filter(|&t| t >= since)
        .filter_map(|t| h.at(t).copied())
        .collect();
    let mut samples: Vec<f64> = base.iter().filter_map(|b| (rule.value)(b)).collect();
    if samples.len() < MIN_WEEKS || !(rule.enough)(p, &base) {
        return None;
    }
    let expected = (rule.expected)(&mut samples, &base);
    let mut deviations: Vec<f64> = samples.iter().map(|v| (v - expected).abs()).collect();
    let spread = (1.4826 * median(&mut deviations)).max((rule.floor)(expected, p, &base));
    let score = (observed - expected) / spread;
    let direction = if score >= THRESHOLD {
        Direction::Up
    } else if score <= -THRESHOLD && rule.falls_too {
        Direction::Down
    } else {
        return None;
    };
    Some(Anomaly {
        hour,
        metric: rule.metric,
        observed,
        expected,
        score,
        direction,
    })
}

/// Hours flagged for the same metric the same way belong to one episode
/// while no more than this many hours lie between them (a tenant quiet at
/// night is not judged at night, and its outage is one episode).
pub(crate) const EPISODE_GAP_HOURS: i64 = 24;
/// How far back [`episode_start`] looks.
pub(crate) const EPISODE_WALK_HOURS: i64 = 7 * 24;

/// The first hour of the episode `a` belongs to: the earliest hour flagged
/// for the same metric the same way, going back through gaps of at most
/// [`EPISODE_GAP_HOURS`], a week at most (`h` should hold that week and
/// its baseline).
pub(crate) fn episode_start(h: &Hours, a: &Anomaly) -> i64 {
    let Some(since) = h.first_active() else {
        return a.hour;
    };
    let rule = RULES
        .iter()
        .find(|r| r.metric == a.metric)
        .expect("a rule per metric");
    let mut start = a.hour;
    for x in (a.hour - EPISODE_WALK_HOURS..a.hour).rev() {
        if start - x > EPISODE_GAP_HOURS {
            break;
        }
        if judge(h, x, since, rule).is_some_and(|b| b.direction == a.direction) {
            start = x;
        }
    }
    start
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `days` of a business rhythm, deterministic: busy weekday
    /// afternoons, quiet nights and weekends, a few percent of noise, 1 %
    /// errors, 120 ms p95.
    pub(crate) fn rhythm(days: i64) -> Hours {
        rhythm_from(20_000 * 24, days)
    }

    /// The same from hour `first` (hours since the epoch, which began on a Thursday).
    pub(crate) fn rhythm_from(first: i64, days: i64) -> Hours {
        let mut seed = 7u64;
        let mut noise = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5 // -0.5..0.5
        };
        let points = (0..days * 24)
            .map(|i| {
                let at = first + i;
                let (hour, weekday) = (at % 24, (at / 24 + 3) % 7 < 5);
                let level = match hour {
                    9..=17 => 400.0,
                    7 | 8 | 18..=21 => 150.0,
                    _ => 40.0,
                } * if weekday { 1.0 } else { 0.35 };
                let requests = (level * (1.0 + 0.12 * noise())).round() as u64;
                HourPoint {
                    requests,
                    rejected: 0,
                    errors: requests / 100,
                    calls: requests,
                    tokens: requests * 300,
                    cost_usd: requests as f64 * 0.002,
                    p95_ms: Some(120.0 * (1.0 + 0.1 * noise())),
                }
            })
            .collect();
        Hours { first, points }
    }

    fn last_week(h: &Hours) -> (i64, i64) {
        (h.end() - WEEK_HOURS * 2, h.end())
    }

    #[test]
    fn a_regular_month_has_no_anomaly() {
        let h = rhythm(30);
        assert_eq!(detect(&h, h.first, h.end()), vec![]);
    }

    #[test]
    fn a_spike_a_drop_to_zero_and_an_error_burst_are_found_at_their_hour() {
        let mut h = rhythm(30);
        let at = |day: i64, hour: i64| (day * 24 + hour) as usize;
        // Day 22 (a weekday) at 14:00: five times the traffic.
        let spike = at(22, 14);
        h.points[spike].requests *= 5;
        h.points[spike].tokens *= 5;
        // Day 24 at 10:00 and 11:00: nothing at all (an outage).
        let drop = at(24, 10);
        for i in drop..drop + 2 {
            h.points[i] = HourPoint::default();
        }
        // Day 28 at 16:00: a third of the requests fail, and slowly.
        let burst = at(28, 16);
        h.points[burst].errors = h.points[burst].requests / 3;
        h.points[burst].p95_ms = Some(900.0);
        let found = detect(&h, h.first, h.end());
        let hour = |i: usize| h.first + i as i64;
        let of = |i: usize| -> Vec<(Metric, Direction)> {
            found
                .iter()
                .filter(|a| a.hour == hour(i))
                .map(|a| (a.metric, a.direction))
                .collect()
        };
        assert_eq!(
            of(spike),
            vec![
                (Metric::Requests, Direction::Up),
                (Metric::Tokens, Direction::Up)
            ]
        );
        for i in [drop, drop + 1] {
            assert_eq!(
                of(i),
                vec![
                    (Metric::Requests, Direction::Down),
                    (Metric::Tokens, Direction::Down)
                ]
            );
        }
        assert_eq!(
            of(burst),
            vec![
                (Metric::ErrorRate, Direction::Up),
                (Metric::P95Latency, Direction::Up)
            ]
        );
        assert_eq!(found.len(), 8, "nothing else: {found:?}");
        let s = found.iter().find(|a| a.hour == hour(spike)).unwrap();
        assert!(
            s.observed > 4.0 * s.expected && s.score >= THRESHOLD,
            "{s:?}"
        );
        // The outage is one episode, starting at its first hour.
        let second = found
            .iter()
            .find(|a| a.hour == hour(drop + 1) && a.metric == Metric::Requests)
            .unwrap();
        assert_eq!(episode_start(&h, second), hour(drop));
        assert_eq!(episode_start(&h, s), hour(spike));
        // An hour flagged again within a day belongs to the same episode.
        let mut again = h.clone();
        let later = drop + 20;
        again.points[later] = HourPoint::default();
        let found = detect(&again, hour(later), hour(later) + 1);
        let a = found
            .iter()
            .find(|a| a.metric == Metric::Requests)
            .expect("an empty early morning is flagged");
        assert_eq!(episode_start(&again, a), hour(drop));
    }

    #[test]
    fn quiet_tenants_and_short_histories_are_not_judged() {
        // A tenant with a handful of requests an hour: a tenfold hour is
        // still below the volume floor.
        let mut h = rhythm(30);
        for p in &mut h.points {
            p.requests = (p.requests / 100).max(1);
            p.tokens = p.requests * 10;
        }
        let (from, to) = last_week(&h);
        let i = (from - h.first + 30) as usize;
        h.points[i].requests = 15;
        assert_eq!(detect(&h, from, to), vec![]);
        // A tenant one week old has one week of baseline: nothing yet.
        let mut young = rhythm(30);
        young.points[..(22 * 24) as usize].fill(HourPoint::default());
        let late = young.points.len() - 20;
        young.points[late].requests *= 10;
        assert_eq!(detect(&young, young.first, young.end()), vec![]);
    }
}
