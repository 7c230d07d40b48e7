//! The gateway's refusals in its clients' dialect. With `dialect =
//! "openai"` every refusal Tollgate itself makes on the route (401, 403,
//! 413, 429, 502, 504, ...) is answered in OpenAI's error shape,
//! `{"error": {"message", "type", "param", "code"}}`, with OpenAI's own
//! codes for a spent quota (`insufficient_quota`) and the burst limit
//! (`rate_limit_exceeded`), so that every OpenAI SDK shows the reason. The
//! upstream's own answers pass through untouched: only a response that
//! carries [`Said`] (every [`ApiError`](crate::http::wire::error::ApiError)
//! does) is rewritten. Status and headers (`Retry-After`, the rate-limit
//! headers) stay as they are.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::json;

pub use crate::config::Dialect;
use crate::http::wire::error::Said;
use crate::metering::Refusal;

/// OpenAI's `type` and `code` for a Tollgate refusal.
fn openai_kind(status: u16, refused: &Said) -> (&'static str, &'static str) {
    let Some(r) = refused.refusal else {
        return match status {
            500.. => ("server_error", refused.code),
            _ => ("invalid_request_error", refused.code),
        };
    };
    match r {
        Refusal::QuotaExceeded | Refusal::TokenQuotaExceeded => {
            ("insufficient_quota", "insufficient_quota")
        }
        Refusal::RateLimited | Refusal::TooManyInFlight => ("requests", "rate_limit_exceeded"),
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => ("invalid_request_error", "invalid_api_key"),
        Refusal::Suspended => ("invalid_request_error", r.code()),
        Refusal::ClusterUnavailable => ("server_error", r.code()),
    }
}

/// The OpenAI-shaped body of a refusal.
pub fn openai_body(status: u16, refused: &Said) -> serde_json::Value {
    let (kind, code) = openai_kind(status, refused);
    json!({"error": {"message": refused.message, "type": kind, "param": null, "code": code}})
}

/// Rewrites a refusal's body in `dialect` (the route's middleware).
pub fn speak<B: MessageBody + 'static>(
    dialect: Dialect,
    res: ServiceResponse<B>,
) -> ServiceResponse<BoxBody> {
    let refused = res.response().extensions().get::<Said>().cloned();
    match (dialect, refused) {
        (Dialect::Openai, Some(refused)) => {
            let status = res.status().as_u16();
            let body = openai_body(status, &refused).to_string();
            let mut res = res.map_body(|_, _| BoxBody::new(body));
            let headers = res.headers_mut();
            headers.remove(CONTENT_LENGTH);
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        _ => res.map_into_boxed_body(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_openai_codes() {
        let r = |code| Said {
            code,
            message: "m".into(),
            refusal: Refusal::ALL.into_iter().find(|r| r.code() == code),
        };
        let b = openai_body(429, &r("quota_exceeded"));
        assert_eq!(b["error"]["code"], "insufficient_quota");
        assert_eq!(b["error"]["type"], "insufficient_quota");
        assert_eq!(b["error"]["message"], "m");
        assert!(b["error"]["param"].is_null());
        assert_eq!(
            openai_body(429, &r("rate_limited"))["error"]["code"],
            "rate_limit_exceeded"
        );
        assert_eq!(
            openai_body(401, &r("invalid_api_key"))["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(
            openai_body(502, &r("upstream_unavailable"))["error"]["type"],
            "server_error"
        );
        assert_eq!(
            openai_body(413, &r("payload_too_large"))["error"]["code"],
            "payload_too_large"
        );
    }
}
