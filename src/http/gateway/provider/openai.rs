//! `dialect = "openai"`: OpenAI's API. Every refusal Tollgate itself makes
//! on the route (401, 403, 413, 429, 502, 504, ...) is answered in
//! OpenAI's error shape, `{"error": {"message", "type", "param",
//! "code"}}`, with OpenAI's own codes for a spent quota
//! (`insufficient_quota`) and the burst limit (`rate_limit_exceeded`), so
//! that every OpenAI SDK shows the reason. A chat-completions stream that
//! does not ask for its usage is made to (`stream_options.include_usage`);
//! the usage event that provokes is kept from the client
//! ([`unasked`](super::super::unasked)).

use serde_json::{json, Map, Value};

use super::Provider;
use crate::http::wire::error::Said;
use crate::metering::Refusal;

/// Headers that choose the operator's organisation or project.
pub(crate) const STEERING: &[&str] = &["openai-organization", "openai-project"];

pub(crate) struct OpenAi;

impl Provider for OpenAi {
    fn refusal(&self, status: u16, said: &Said) -> Option<Value> {
        let (kind, code) = kind(status, said);
        Some(json!({"error": {"message": said.message, "type": kind, "param": null, "code": code}}))
    }

    fn steering(&self) -> &'static [&'static str] {
        STEERING
    }

    fn ask_for_usage(&self, _: &str, call: &mut Map<String, Value>) -> bool {
        ask_for_usage(call)
    }
}

/// OpenAI's `type` and `code` for a Tollgate refusal.
fn kind(status: u16, said: &Said) -> (&'static str, &'static str) {
    let Some(r) = said.refusal else {
        return match status {
            500.. => ("server_error", said.code),
            _ => ("invalid_request_error", said.code),
        };
    };
    match r {
        Refusal::QuotaExceeded | Refusal::TokenQuotaExceeded | Refusal::BudgetExceeded => {
            ("insufficient_quota", "insufficient_quota")
        }
        Refusal::RateLimited | Refusal::TooManyInFlight => ("requests", "rate_limit_exceeded"),
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => ("invalid_request_error", "invalid_api_key"),
        // OpenAI's own code for a key that no longer works.
        Refusal::KeyExpired => ("invalid_request_error", "invalid_api_key"),
        Refusal::Suspended => ("invalid_request_error", r.code()),
        Refusal::ClusterUnavailable => ("server_error", r.code()),
    }
}

/// A streaming chat-completions call (`messages` or `prompt`; legacy
/// completions take `stream_options` too) that does not ask for its usage
/// is made to; Responses (`input`) report theirs unasked. True when the
/// call was changed.
pub(crate) fn ask_for_usage(call: &mut Map<String, Value>) -> bool {
    let chat_completions = ["messages", "prompt", "stream_options"]
        .iter()
        .any(|k| call.contains_key(*k));
    if call.get("stream") != Some(&Value::Bool(true)) || !chat_completions {
        return false;
    }
    let asks = call
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    if asks {
        return false;
    }
    let options = call
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()));
    if !options.is_object() {
        *options = Value::Object(Default::default());
    }
    if let Some(o) = options.as_object_mut() {
        o.insert("include_usage".into(), Value::Bool(true));
    }
    true
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
        let b = OpenAi.refusal(429, &r("quota_exceeded")).unwrap();
        assert_eq!(b["error"]["code"], "insufficient_quota");
        assert_eq!(b["error"]["type"], "insufficient_quota");
        assert_eq!(b["error"]["message"], "m");
        assert!(b["error"]["param"].is_null());
        let code = |status, c| OpenAi.refusal(status, &r(c)).unwrap()["error"]["code"].clone();
        assert_eq!(code(429, "rate_limited"), "rate_limit_exceeded");
        assert_eq!(code(413, "payload_too_large"), "payload_too_large");
        let kind = |status, c| OpenAi.refusal(status, &r(c)).unwrap()["error"]["type"].clone();
        assert_eq!(kind(401, "invalid_api_key"), "invalid_request_error");
        assert_eq!(kind(502, "upstream_unavailable"), "server_error");
    }
}
