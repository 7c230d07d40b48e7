//! `dialect = "anthropic"`: Anthropic's Messages API. Tollgate's refusals
//! in Anthropic's error shape, `{"type": "error", "error": {"type",
//! "message"}}`, so that the Anthropic SDKs raise the matching error with
//! Tollgate's reason; the operator's credential as `x-api-key` (the
//! client's `anthropic-version` and `anthropic-beta` pass on). Streams
//! report their usage unasked (`message_start`, `message_delta`): nothing
//! is rewritten. Tokens read from the cache count as prompt tokens.

use serde_json::{json, Map, Value};

use super::Provider;
use crate::http::gateway::usage;
use crate::http::wire::error::Said;
use crate::metering::Refusal;
use crate::model::TokenCounts;

pub(crate) struct Anthropic;

impl Provider for Anthropic {
    fn refusal(&self, status: u16, said: &Said) -> Option<Value> {
        Some(
            json!({"type": "error", "error": {"type": kind(status, said), "message": said.message}}),
        )
    }

    fn credential(
        &self,
        upstream: reqwest::RequestBuilder,
        secret: &str,
    ) -> reqwest::RequestBuilder {
        upstream.header("x-api-key", secret)
    }

    fn steering(&self) -> &'static [&'static str] {
        &[]
    }

    fn ask_for_usage(&self, _: &str, _: &mut Map<String, Value>) -> bool {
        false
    }

    /// `input_tokens` counts only what the cache did not serve: the cache's
    /// reads and writes are prompt tokens too.
    fn usage_of(&self, u: &Value) -> Option<TokenCounts> {
        usage::anthropic_usage_of(u)
    }
}

/// Anthropic's error `type` for a Tollgate refusal.
fn kind(status: u16, said: &Said) -> &'static str {
    let Some(r) = said.refusal else {
        return match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        };
    };
    match r {
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::KeyExpired
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => "authentication_error",
        Refusal::Suspended => "permission_error",
        Refusal::RateLimited
        | Refusal::QuotaExceeded
        | Refusal::TokenQuotaExceeded
        | Refusal::TooManyInFlight
        | Refusal::BudgetExceeded => "rate_limit_error",
        Refusal::ClusterUnavailable => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_cached_tokens_in_anthropics_terms() {
        let said = |code, refusal| Said {
            code,
            message: "monthly call quota exceeded".into(),
            refusal,
        };
        let b = Anthropic
            .refusal(429, &said("quota_exceeded", Some(Refusal::QuotaExceeded)))
            .unwrap();
        assert_eq!(b["type"], "error");
        assert_eq!(b["error"]["type"], "rate_limit_error");
        assert_eq!(b["error"]["message"], "monthly call quota exceeded");
        let kind = |status, code, r| {
            Anthropic.refusal(status, &said(code, r)).unwrap()["error"]["type"].clone()
        };
        assert_eq!(
            kind(401, "invalid_api_key", Some(Refusal::UnknownKey)),
            "authentication_error"
        );
        assert_eq!(
            kind(403, "tenant_suspended", Some(Refusal::Suspended)),
            "permission_error"
        );
        assert_eq!(kind(413, "payload_too_large", None), "request_too_large");
        assert_eq!(kind(502, "upstream_unavailable", None), "api_error");
        let u = json!({"input_tokens": 10, "cache_read_input_tokens": 90,
                       "cache_creation_input_tokens": 5, "output_tokens": 7});
        let c = Anthropic.usage_of(&u).unwrap();
        assert_eq!((c.prompt, c.completion, c.total), (105, 7, 112));
        assert_eq!((c.kinds.cached_prompt, c.kinds.cache_write), (90, 5));
        let plain = Anthropic
            .usage_of(&json!({"input_tokens": 3, "output_tokens": 4}))
            .unwrap();
        assert_eq!(plain.total, 7);
    }
}
