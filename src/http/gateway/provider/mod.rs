//! What the gateway knows of each provider's API, behind one trait
//! ([`Provider`]), one file per provider: the shape of Tollgate's own
//! refusals on the route, how the operator's credential is sent, the
//! request headers that would steer the operator's account, whether a
//! model call is rewritten to report its usage, and how an answer's
//! `usage` reads. A route's `dialect` (`[[proxy]]`) picks it:
//!
//! - `tollgate` ([`generic`]): any HTTP API; Tollgate's own error JSON;
//!   OpenAI-style model calls recognised by their shape.
//! - `openai` ([`openai`]): OpenAI's error shape, so that every OpenAI SDK
//!   shows the reason.
//! - `anthropic` ([`anthropic`]): Anthropic's error shape and credential
//!   header; streams are never rewritten (they report usage unasked).
//!
//! The upstream's own answers pass through untouched: only a response
//! that carries [`Said`] (every [`ApiError`](crate::http::wire::error::ApiError)
//! does) is rewritten. Status and headers (`Retry-After`, the rate-limit
//! headers) stay as they are.

pub(crate) mod anthropic;
pub(crate) mod generic;
pub(crate) mod openai;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::{Map, Value};

pub(crate) use crate::config::Dialect;
use crate::http::wire::error::Said;
use crate::model::TokenCounts;

/// One provider's API, as the gateway needs to know it.
pub(crate) trait Provider: Send + Sync {
    /// One of Tollgate's own refusals (`said`, answered with `status`) in
    /// the provider's error shape; `None` keeps Tollgate's own JSON.
    fn refusal(&self, status: u16, said: &Said) -> Option<Value>;

    /// The upstream request with the operator's credential on it
    /// (`Authorization: Bearer`, unless the provider says otherwise).
    fn credential(
        &self,
        upstream: reqwest::RequestBuilder,
        secret: &str,
    ) -> reqwest::RequestBuilder {
        upstream.bearer_auth(secret)
    }

    /// Request headers that would steer the operator's account (an
    /// organisation, a project): never forwarded.
    fn steering(&self) -> &'static [&'static str];

    /// Rewrites a model call to `path` (its JSON object) so that its
    /// answer reports its usage, when the provider's API needs asking;
    /// true when it did. A stream whose tokens go unreported could pass a
    /// token quota.
    fn ask_for_usage(&self, path: &str, call: &mut Map<String, Value>) -> bool;

    /// The token counts of an answer's `usage` object (a body's, or an
    /// event's): either spelling, unless the provider says otherwise.
    fn usage_of(&self, u: &Value) -> Option<TokenCounts> {
        super::usage::usage_of(u)
    }
}

/// The provider a route's dialect names.
pub(crate) fn of(dialect: Dialect) -> &'static dyn Provider {
    match dialect {
        Dialect::Tollgate => &generic::Generic,
        Dialect::Openai => &openai::OpenAi,
        Dialect::Anthropic => &anthropic::Anthropic,
    }
}

/// Rewrites a refusal's body in the route's provider's shape (the route's
/// middleware).
pub(crate) fn speak<B: MessageBody + 'static>(
    provider: &dyn Provider,
    res: ServiceResponse<B>,
) -> ServiceResponse<BoxBody> {
    let said = res.response().extensions().get::<Said>().cloned();
    let soon = said
        .as_ref()
        .and_then(|s| s.refusal)
        .is_none_or(|r| r.passes_soon());
    let Some(body) = said.and_then(|s| provider.refusal(res.status().as_u16(), &s)) else {
        return res.map_into_boxed_body();
    };
    let body = body.to_string();
    let mut res = res.map_body(|_, _| BoxBody::new(body));
    let headers = res.headers_mut();
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The providers' SDKs retry a 429 on their own (twice by default) unless
    // told not to: a spent monthly quota will not pass in their backoff.
    if !soon {
        headers.insert(
            HeaderName::from_static("x-should-retry"),
            HeaderValue::from_static("false"),
        );
    }
    res
}
