//! The rate-limit headers of SPEC §6, rendered from a [`Decision`].
//!
//! - `X-RateLimit-Limit/Remaining/Reset`: the monthly call quota (left out
//!   when unlimited), Reset as an RFC 3339 instant.
//! - `RateLimit-Policy` / `RateLimit` (draft-ietf-httpapi-ratelimit-headers):
//!   one item per active limit: `"month"` (calls), `"tokens"`, `"burst"`.
//! - `Retry-After` (seconds) on every 429 (never on a 2xx).

use std::fmt::Write;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use super::request_id::X_REQUEST_ID;
use crate::clock::MsText;
use crate::quota::{Decision, Outcome};

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

/// Sets `name` to `value`, unless it is not a valid header value.
pub(crate) fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The rate-limit headers of `d` (when the request has a decision) and
/// the request id; `Retry-After` only on a refusal (not on a 2xx, such as
/// `POST /api/v1/check` saying a request would be refused). One
/// copy for all of them, and no allocation but the map's: the values are
/// written into one buffer on the stack, copied once into the response
/// arena ([`super::arena`]) as a `Bytes` that every `HeaderValue` shares.
pub fn apply(headers: &mut HeaderMap, d: Option<&Decision>, success: bool, request_id: &str) {
    let mut values = match d {
        Some(d) => Values::of(d, success),
        None => Values::empty(),
    };
    values.add(&X_REQUEST_ID, |w| w.write_str(request_id));
    let all = super::arena::bytes_of(values.buf.text());
    for &(name, start, end) in &values.items[..values.count] {
        if let Ok(v) = HeaderValue::from_maybe_shared(all.slice(start..end)) {
            // The names are made once (a name made from a string is
            // parsed and checked each time).
            headers.insert(name.clone(), v);
        }
    }
}

/// The rate-limit headers of `d`, each handed to `out` as a name and a
/// value (for an edge with headers of its own kind: Envoy's).
pub fn render(d: &Decision, success: bool, mut out: impl FnMut(&'static str, &str)) {
    let values = Values::of(d, success);
    let text = values.buf.text();
    for &(name, start, end) in &values.items[..values.count] {
        // The buffer holds only what `Values::of` put there: ASCII.
        out(
            name.as_str(),
            std::str::from_utf8(&text[start..end]).unwrap_or(""),
        );
    }
}

/// Room for the longest set of values (three policies of 20-digit
/// numbers fit with room to spare).
const ROOM: usize = 640;

type StackText = super::stack_text::StackText<ROOM>;

/// The items of `RateLimit-Policy` or `RateLimit`, those present joined
/// by `, `: each `"name";k=v;k=v` with `keys` as its two parameters.
fn items(
    w: &mut StackText,
    keys: (&str, &str),
    items: [Option<(&str, u64, u64)>; 3],
) -> std::fmt::Result {
    let mut sep = "";
    for (name, a, b) in items.into_iter().flatten() {
        for part in [sep, "\"", name, "\";", keys.0, "="] {
            w.write_str(part)?;
        }
        w.num(a)?;
        for part in [";", keys.1, "="] {
            w.write_str(part)?;
        }
        w.num(b)?;
        sep = ", ";
    }
    Ok(())
}

/// Every header value of a response, in one buffer: name, start, end.
struct Values {
    buf: StackText,
    items: [(&'static HeaderName, usize, usize); 7],
    count: usize,
}

impl Values {
    fn empty() -> Values {
        Values {
            buf: StackText::new(),
            items: [(&X_REQUEST_ID, 0, 0); 7],
            count: 0,
        }
    }

    fn of(d: &Decision, success: bool) -> Values {
        let mut v = Values::empty();
        let reset_secs = d.period_reset_secs();
        let window = d.period.length_secs().unsigned_abs(); // a period is never negative
        let month = d.calls_limit.zip(d.calls_remaining());
        let tokens = d.tokens_limit.zip(d.tokens_remaining());
        if let Some((limit, remaining)) = month {
            v.add(&X_RATELIMIT_LIMIT, |w| w.num(limit));
            v.add(&X_RATELIMIT_REMAINING, |w| w.num(remaining));
            let end = MsText::of(d.period.end());
            v.add(&X_RATELIMIT_RESET, |w| w.write_str(end.as_str()));
        }
        let policies = [
            month.map(|(limit, _)| ("month", limit, window)),
            tokens.map(|(limit, _)| ("tokens", limit, window)),
            d.burst.map(|b| ("burst", b.requests, b.per_seconds)),
        ];
        let states = [
            month.map(|(_, remaining)| ("month", remaining, reset_secs)),
            tokens.map(|(_, remaining)| ("tokens", remaining, reset_secs)),
            d.burst
                .map(|b| ("burst", b.remaining, b.reset_ns.div_ceil(1_000_000_000))),
        ];
        if policies.iter().any(Option::is_some) {
            v.add(&RATELIMIT_POLICY, |w| items(w, ("q", "w"), policies));
            v.add(&RATELIMIT, |w| items(w, ("r", "t"), states));
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
            let secs = d.retry_after_secs();
            v.add(&RETRY_AFTER, |w| w.num(secs));
        }
        v
    }

    /// Writes one value; a value that does not fit is left out whole.
    fn add(
        &mut self,
        name: &'static HeaderName,
        value: impl FnOnce(&mut StackText) -> std::fmt::Result,
    ) {
        let start = self.buf.len();
        if value(&mut self.buf).is_ok() && self.count < self.items.len() {
            self.items[self.count] = (name, start, self.buf.len());
            self.count += 1;
        } else {
            self.buf.truncate(start);
        }
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
        apply(&mut h, Some(&d), false, "req-1");
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
        apply(&mut h, Some(&d), false, "req-2");
        assert_eq!(h.len(), 1, "the request id alone");
        let mut h = HeaderMap::new();
        apply(&mut h, None, true, "req-3");
        assert_eq!(h.get("x-request-id").unwrap(), "req-3");
    }
}
