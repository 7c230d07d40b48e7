//! Calendar-month quota periods in UTC.
//!
//! A [`Period`] is a month index (months since January 1970). The conversions
//! are pure integer arithmetic (Howard Hinnant's civil-date algorithms), so the
//! decision path can find the current period without touching chrono, and the
//! proptests compare them against chrono for any date.

use std::cell::Cell;

use chrono::{DateTime, TimeZone, Utc};

pub use crate::clock::Nanos;
pub(crate) use crate::clock::NANOS_PER_SEC;

const SECS_PER_DAY: i64 = 86_400;

/// A period with its bounds in nanoseconds: `[start_ns, end_ns)`.
#[derive(Clone, Copy)]
struct Window {
    start_ns: i64,
    end_ns: i64,
    period: Period,
}

impl Window {
    /// Holds no instant.
    const EMPTY: Window = Window {
        start_ns: 0,
        end_ns: 0,
        period: Period(0),
    };

    #[cold]
    fn of(ns: i64) -> Window {
        let period = Period::containing_secs(ns.div_euclid(NANOS_PER_SEC));
        let (start_ns, end_ns) = Window::bounds(period);
        Window {
            start_ns,
            end_ns,
            period,
        }
    }

    /// `period`'s bounds in nanoseconds, saturated at the ends of the i64
    /// clock: an instant past a bound that saturated is recomputed each
    /// time, never answered wrong.
    #[cold]
    fn bounds(period: Period) -> (i64, i64) {
        (
            period.start_secs().saturating_mul(NANOS_PER_SEC),
            period.end_secs().saturating_mul(NANOS_PER_SEC),
        )
    }
}

thread_local! {
    /// The last period this thread found, for [`Period::containing_nanos`]
    /// and [`Period::end_nanos`].
    static LAST: Cell<Window> = const { Cell::new(Window::EMPTY) };
}

/// A calendar month in UTC: `0` is January 1970, `-1` December 1969.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Period(pub i32);

impl Period {
    /// The period holding `secs` seconds since the Unix epoch.
    pub fn containing_secs(secs: i64) -> Period {
        let (y, m, _) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
        Period(((y - 1970) * 12 + (m as i64 - 1)) as i32)
    }

    /// The period holding `ns`. Every decision asks this, and the calendar
    /// arithmetic cost more than the rest of an in-cache decision, so each
    /// thread keeps the last period it found with its bounds in
    /// nanoseconds and answers from them while `ns` falls inside.
    #[inline]
    pub fn containing_nanos(ns: Nanos) -> Period {
        let ns = ns.0;
        LAST.with(|last| {
            let w = last.get();
            if w.start_ns <= ns && ns < w.end_ns {
                return w.period;
            }
            let w = Window::of(ns);
            last.set(w);
            w.period
        })
    }

    /// Nanoseconds since the epoch at the first instant of the next period
    /// (saturated at the i64 clock's end): from the thread's cached window
    /// when it is this period, as on every answer's reset headers.
    #[inline]
    pub(crate) fn end_nanos(self) -> Nanos {
        LAST.with(|last| {
            let w = last.get();
            Nanos(if w.period == self && w.end_ns > w.start_ns {
                w.end_ns
            } else {
                Window::bounds(self).1
            })
        })
    }

    pub fn containing(t: DateTime<Utc>) -> Period {
        Period::containing_secs(t.timestamp())
    }

    pub(crate) fn year_month(self) -> (i64, u32) {
        let y = 1970 + (self.0 as i64).div_euclid(12);
        let m = (self.0 as i64).rem_euclid(12) as u32 + 1;
        (y, m)
    }

    /// Seconds since the epoch at `YYYY-MM-01T00:00:00Z`.
    pub(crate) fn start_secs(self) -> i64 {
        let (y, m) = self.year_month();
        days_from_civil(y, m, 1) * SECS_PER_DAY
    }

    /// Seconds since the epoch at the first instant of the next period.
    pub(crate) fn end_secs(self) -> i64 {
        self.next().start_secs()
    }

    pub fn next(self) -> Period {
        Period(self.0 + 1)
    }

    pub fn start(self) -> DateTime<Utc> {
        secs_to_utc(self.start_secs())
    }

    pub fn end(self) -> DateTime<Utc> {
        secs_to_utc(self.end_secs())
    }

    /// Length of the period in seconds (28 to 31 days).
    pub(crate) fn length_secs(self) -> i64 {
        self.end_secs() - self.start_secs()
    }

    /// The 16-bit tag the packed counters store: the month index modulo 2^16.
    /// Two periods share a tag only 5,461 years apart.
    pub(crate) fn tag(self) -> u16 {
        self.0 as u16
    }
}

fn secs_to_utc(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate};
    use proptest::prelude::*;

    #[test]
    fn known_boundaries() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let p = Period::containing(t);
        assert_eq!(p.start().to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(p.end().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        // Leap February and the year rollover.
        let feb = Period::containing(Utc.with_ymd_and_hms(2028, 2, 29, 23, 59, 59).unwrap());
        assert_eq!(feb.length_secs(), 29 * 86_400);
        let dec = Period::containing(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap());
        assert_eq!(dec.next().start().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        // The last nanosecond of a month belongs to it; the next one does not.
        let end_ns = Nanos(p.end_secs() * NANOS_PER_SEC);
        assert_eq!(Period::containing_nanos(end_ns - 1), p);
        assert_eq!(Period::containing_nanos(end_ns), p.next());
    }

    #[test]
    fn before_the_epoch() {
        let t = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(Period::containing(t), Period(-1));
        assert_eq!(Period(-1).start().to_rfc3339(), "1969-12-01T00:00:00+00:00");
    }

    proptest! {
        // Any date from year -200,000 to 200,000 maps to the month chrono says,
        // and the period's bounds enclose it.
        #[test]
        fn period_matches_chrono(secs in -6_000_000_000_000i64..6_000_000_000_000i64) {
            let t = Utc.timestamp_opt(secs, 0).unwrap();
            let p = Period::containing_secs(secs);
            let (y, m) = p.year_month();
            prop_assert_eq!((y, m), (t.year() as i64, t.month()));
            prop_assert!(p.start_secs() <= secs && secs < p.end_secs());
            let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1).unwrap();
            prop_assert_eq!(p.start_secs(), first.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp());
            prop_assert!((28 * 86_400..=31 * 86_400).contains(&p.length_secs()));
        }

        // The per-thread cache answers as the arithmetic does, whatever
        // instant was asked before (the same month, another, an edge).
        #[test]
        fn cached_period_matches_arithmetic(
            a in any::<i64>(),
            b in any::<i64>(),
            near in -3_000_000_000_000_000i64..3_000_000_000_000_000i64,
        ) {
            let direct = |ns: i64| Period::containing_secs(ns.div_euclid(NANOS_PER_SEC));
            let end = |p: Period| Nanos(p.end_secs().saturating_mul(NANOS_PER_SEC));
            for ns in [a, b, a.saturating_add(near), i64::MAX, i64::MIN, b, a] {
                let p = Period::containing_nanos(Nanos(ns));
                prop_assert_eq!(p, direct(ns));
                prop_assert_eq!(p.end_nanos(), end(p));
                // Another period than the cached one.
                prop_assert_eq!(p.next().end_nanos(), end(p.next()));
            }
        }

        #[test]
        fn civil_round_trip(days in -100_000_000i64..100_000_000i64) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
