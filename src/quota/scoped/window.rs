//! Where a fixed window starts and ends: minutes, hours and days are
//! multiples of their length since the epoch; a calendar month and a
//! billing month (from the tenant's billing day, 00:00 UTC) are numbered
//! `year * 12 + month`. Pure integer arithmetic on civil dates.

use crate::model::Window;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// The civil date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date.
fn days_of(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The number of the window of kind `w` holding `ms` (`billing_day`: 1
/// to 28, for [`Window::BillingMonth`]). Burst and none have no number.
pub(crate) fn index(w: Window, billing_day: u8, ms: i64) -> i64 {
    match w {
        Window::Minute => ms.div_euclid(MINUTE),
        Window::Hour => ms.div_euclid(HOUR),
        Window::Day => ms.div_euclid(DAY),
        Window::Month | Window::BillingMonth => {
            let (y, m, d) = civil(ms.div_euclid(DAY));
            let n = y * 12 + i64::from(m) - 1;
            if w == Window::BillingMonth && d < u32::from(billing_day.max(1)) {
                n - 1
            } else {
                n
            }
        }
        Window::Burst | Window::None => 0,
    }
}

/// When window `n` of kind `w` ends (milliseconds since the epoch).
pub(crate) fn end_ms(w: Window, billing_day: u8, n: i64) -> i64 {
    match w {
        Window::Minute => (n + 1) * MINUTE,
        Window::Hour => (n + 1) * HOUR,
        Window::Day => (n + 1) * DAY,
        Window::Month | Window::BillingMonth => {
            let next = n + 1;
            let (y, m) = (next.div_euclid(12), next.rem_euclid(12) as u32 + 1);
            let d = if w == Window::BillingMonth {
                u32::from(billing_day.max(1))
            } else {
                1
            };
            days_of(y, m, d) * DAY
        }
        Window::Burst | Window::None => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn ms(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn months_and_billing_months_match_the_calendar() {
        for days in -800_000..800_000i64 {
            if days % 997 != 0 {
                continue;
            }
            let (y, m, d) = civil(days);
            assert_eq!(days_of(y, m, d), days);
        }
        let t = ms(2026, 12, 7, 15);
        let n = index(Window::Month, 1, t);
        assert_eq!(end_ms(Window::Month, 1, n), ms(2027, 1, 1, 0));
        // Billing day 15: the 7th of December is in the month from
        // 15 November to 15 December.
        let b = index(Window::BillingMonth, 15, t);
        assert_eq!(end_ms(Window::BillingMonth, 15, b), ms(2026, 12, 15, 0));
        assert_eq!(index(Window::BillingMonth, 15, ms(2026, 12, 15, 0)), b + 1);
        assert_eq!(index(Window::BillingMonth, 15, ms(2026, 12, 15, 0) - 1), b);
        assert_eq!(
            end_ms(Window::Day, 1, index(Window::Day, 1, t)),
            ms(2026, 12, 8, 0)
        );
        assert_eq!(
            end_ms(Window::Hour, 1, index(Window::Hour, 1, t + 1)),
            ms(2026, 12, 7, 16)
        );
    }
}
