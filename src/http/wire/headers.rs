//! The rate-limit headers of SPEC §6 ([`crate::metering::headers`]) and
//! the request id, put on an HTTP response.

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::request_id::X_REQUEST_ID;
use crate::metering::headers::{Header, Values};
use crate::quota::Decision;

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// Each header's name, made once (a name made from a string is parsed
/// and checked each time).
fn name(h: Header) -> &'static HeaderName {
    match h {
        Header::Limit => &X_RATELIMIT_LIMIT,
        Header::Remaining => &X_RATELIMIT_REMAINING,
        Header::Reset => &X_RATELIMIT_RESET,
        Header::Policy => &RATELIMIT_POLICY,
        Header::RateLimit => &RATELIMIT,
        Header::RetryAfter => &RETRY_AFTER,
        Header::RequestId => &X_REQUEST_ID,
    }
}

/// Sets `name` to `value`, unless it is not a valid header value.
pub(crate) fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The rate-limit headers of `d` (when the request has a decision) and
/// the request id; `Retry-After` only on a refusal. One copy for all of
/// them, and no allocation but the map's: the values are written into
/// one buffer on the stack, copied once into the response arena
/// ([`super::arena`]) as a `Bytes` that every `HeaderValue` shares.
pub(crate) fn apply(
    headers: &mut HeaderMap,
    d: Option<&Decision>,
    views: &[crate::quota::scoped::View],
    success: bool,
    request_id: &str,
) {
    let mut values = match d {
        Some(d) => Values::with_limits(d, views, success),
        None => Values::empty(),
    };
    values.add(Header::RequestId, |w| {
        std::fmt::Write::write_str(w, request_id)
    });
    let all = super::arena::bytes_of(values.text());
    for &(h, start, end) in values.items() {
        if let Ok(v) = HeaderValue::from_maybe_shared(all.slice(start..end)) {
            headers.insert(name(h).clone(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::period::{Period, NANOS_PER_SEC};
    use crate::quota::{BurstStatus, Outcome};
    use chrono::{TimeZone, Utc};

    #[test]
    fn renders_every_policy() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let d = Decision {
            outcome: Outcome::QuotaExceeded,
            period: Period::containing(now),
            now: crate::clock::Nanos(now.timestamp() * NANOS_PER_SEC),
            calls_used: 100_000,
            calls_limit: Some(100_000),
            tokens_used: 5,
            tokens_limit: Some(10),
            burst: Some(BurstStatus {
                requests: 20,
                per_seconds: 1,
                remaining: 19,
                reset_ns: 50_000_000,
            }),
            retry_after_ns: 86_400 * NANOS_PER_SEC as u64,
            grant: None,
        };
        let mut h = HeaderMap::new();
        apply(&mut h, Some(&d), &[], false, "req-1");
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(get("x-ratelimit-limit"), "100000");
        assert_eq!(get("x-ratelimit-remaining"), "0");
        assert_eq!(get("x-ratelimit-reset"), "2026-12-01T00:00:00.000Z");
        assert_eq!(
            get("ratelimit-policy"),
            "\"month\";q=100000;w=2592000, \"tokens\";q=10;w=2592000, \"burst\";q=20;w=1"
        );
        assert_eq!(
            get("ratelimit"),
            "\"month\";r=0;t=86400, \"tokens\";r=5;t=86400, \"burst\";r=19;t=1"
        );
        assert_eq!(get("retry-after"), "86400");
        assert_eq!(get("x-request-id"), "req-1");
        assert_eq!(h.len(), 7);
    }

    /// Issue 39, item 7: every named limit the decision met is listed by
    /// name, and `X-RateLimit-*` show the one with the least left of it.
    #[test]
    fn named_limits_are_listed_and_the_tightest_shown() {
        use crate::model::{Measure, Scope, Window};
        use crate::quota::scoped::View;
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let d = Decision {
            outcome: Outcome::Allowed,
            period: Period::containing(now),
            now: crate::clock::Nanos(now.timestamp() * NANOS_PER_SEC),
            calls_used: 10,
            calls_limit: Some(1_000),
            tokens_used: 0,
            tokens_limit: None,
            burst: None,
            retry_after_ns: 0,
            grant: None,
        };
        let view = |name: &str, amount, used, window, reset_ms| View {
            name: name.into(),
            scope: Scope::User,
            measure: Measure::Calls,
            window,
            amount,
            used,
            window_secs: 86_400,
            reset_ms,
        };
        let views = [
            view("per-user", 10, 9, Window::Day, 3_600_000),
            view("in-flight-4", 4, 4, Window::None, 0),
        ];
        let mut h = HeaderMap::new();
        apply(&mut h, Some(&d), &views, true, "req-4");
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            get("x-ratelimit-limit"),
            "10",
            "the tightest windowed limit"
        );
        assert_eq!(get("x-ratelimit-remaining"), "1");
        assert_eq!(get("x-ratelimit-reset"), "2026-11-30T01:00:00.000Z");
        assert_eq!(
            get("ratelimit-policy"),
            "\"month\";q=1000;w=2592000, \"per-user\";q=10;w=86400, \"in-flight-4\";q=4;w=86400"
        );
        assert_eq!(
            get("ratelimit"),
            "\"month\";r=990;t=86400, \"per-user\";r=1;t=3600, \"in-flight-4\";r=0;t=0"
        );
    }

    #[test]
    fn unlimited_plans_send_no_quota_headers() {
        let d = Decision {
            outcome: Outcome::Allowed,
            period: Period(0),
            now: crate::clock::Nanos(0),
            calls_used: 3,
            calls_limit: None,
            tokens_used: 0,
            tokens_limit: None,
            burst: None,
            retry_after_ns: 0,
            grant: None,
        };
        let mut h = HeaderMap::new();
        apply(&mut h, Some(&d), &[], false, "req-2");
        assert_eq!(h.len(), 1, "the request id alone");
        let mut h = HeaderMap::new();
        apply(&mut h, None, &[], true, "req-3");
        assert_eq!(h.get("x-request-id").unwrap(), "req-3");
    }
}
