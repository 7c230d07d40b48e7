//! The rate-limit headers of SPEC §6, rendered from a [`Decision`].
//!
//! - `X-RateLimit-Limit/Remaining/Reset`: the monthly call quota (left out
//!   when unlimited), Reset as an RFC 3339 instant.
//! - `RateLimit-Policy` / `RateLimit` (draft-ietf-httpapi-ratelimit-headers):
//!   one item per active limit: `"month"` (calls), `"tokens"`, `"burst"`.
//! - `Retry-After` (seconds) on every 429 (never on a 2xx).

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::fmt_ms;
use crate::quota::{Decision, Outcome};

/// Sets `name` to `value`, unless it is not a valid header value.
pub(crate) fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The rate-limit headers of `d`; `Retry-After` only on a refusal (not on
/// a 2xx, such as `POST /api/v1/check` saying a request would be refused).
pub fn apply(headers: &mut HeaderMap, d: &Decision, success: bool) {
    render(d, success, |name, value| put(headers, name, value));
}

/// The rate-limit headers of `d`, each handed to `out` as a name and a
/// value (for an edge with headers of its own kind: Envoy's).
pub fn render(d: &Decision, success: bool, mut out: impl FnMut(&'static str, String)) {
    let reset_secs = d.period_reset_secs();
    let window = d.period.length_secs();
    let mut policies = Vec::with_capacity(3);
    let mut states = Vec::with_capacity(3);
    if let (Some(limit), Some(remaining)) = (d.calls_limit, d.calls_remaining()) {
        out("x-ratelimit-limit", limit.to_string());
        out("x-ratelimit-remaining", remaining.to_string());
        out("x-ratelimit-reset", fmt_ms(d.period.end()));
        policies.push(format!("\"month\";q={limit};w={window}"));
        states.push(format!("\"month\";r={remaining};t={reset_secs}"));
    }
    if let (Some(limit), Some(remaining)) = (d.tokens_limit, d.tokens_remaining()) {
        policies.push(format!("\"tokens\";q={limit};w={window}"));
        states.push(format!("\"tokens\";r={remaining};t={reset_secs}"));
    }
    if let Some(b) = d.burst {
        policies.push(format!("\"burst\";q={};w={}", b.requests, b.per_seconds));
        states.push(format!(
            "\"burst\";r={};t={}",
            b.remaining,
            b.reset_ns.div_ceil(1_000_000_000)
        ));
    }
    if !policies.is_empty() {
        out("ratelimit-policy", policies.join(", "));
        out("ratelimit", states.join(", "));
    }
    if !success
        && matches!(
            d.outcome,
            Outcome::RateLimited
                | Outcome::QuotaExceeded
                | Outcome::TokenQuotaExceeded
                | Outcome::ClusterUnavailable
        )
    {
        out("retry-after", d.retry_after_secs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::period::{Period, NANOS_PER_SEC};
    use crate::quota::BurstStatus;
    use chrono::{TimeZone, Utc};

    #[test]
    fn renders_every_policy() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
        let d = Decision {
            outcome: Outcome::QuotaExceeded,
            period: Period::containing(now),
            now: now.timestamp() * NANOS_PER_SEC,
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
        apply(&mut h, &d, false);
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
    }

    #[test]
    fn unlimited_plans_send_no_quota_headers() {
        let d = Decision {
            outcome: Outcome::Allowed,
            period: Period(0),
            now: 0,
            calls_used: 3,
            calls_limit: None,
            tokens_used: 0,
            tokens_limit: None,
            burst: None,
            retry_after_ns: 0,
            grant: None,
        };
        let mut h = HeaderMap::new();
        apply(&mut h, &d, false);
        assert!(h.is_empty());
    }
}
