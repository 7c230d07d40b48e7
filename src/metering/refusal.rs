//! Why a metered request is refused: [`Refusal`] names the reason,
//! [`Refused`] carries it with what the client is told.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::clock::{fmt_ms, nanos_to_utc, Nanos};
use crate::quota::{Decision, Outcome};

/// Why a metered request is refused: what each edge answers in its own
/// terms (an HTTP status and JSON error, a gRPC code, an Envoy status).
/// An edge matches on it without a catch-all arm, so that a new reason
/// cannot pass unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No key was sent.
    MissingKey,
    /// The credential is not a bearer key (`Authorization: Basic …`).
    MalformedCredentials,
    /// The key is unknown or revoked.
    UnknownKey,
    /// The key has expired (its `expiresAt`, or a rotation's overlap, is past).
    KeyExpired,
    /// No tenant has the id a rate-limit descriptor names.
    UnknownTenant,
    /// A rate-limit descriptor names a tenant by id, which `[grpc]
    /// tenant_id = false` turns off.
    TenantIdOff,
    /// The tenant is suspended.
    Suspended,
    /// The burst limit (requests per window).
    RateLimited,
    /// The monthly call quota is spent.
    QuotaExceeded,
    /// The monthly token quota is spent.
    TokenQuotaExceeded,
    /// The quota is shared through Redis, which cannot be reached, and
    /// this instance's lease is spent.
    ClusterUnavailable,
    /// The tenant has as many requests in flight as it may.
    TooManyInFlight,
}

impl Refusal {
    /// Every reason, for tables and tests that go through them all.
    pub const ALL: [Refusal; 12] = [
        Refusal::MissingKey,
        Refusal::MalformedCredentials,
        Refusal::UnknownKey,
        Refusal::KeyExpired,
        Refusal::UnknownTenant,
        Refusal::TenantIdOff,
        Refusal::Suspended,
        Refusal::RateLimited,
        Refusal::QuotaExceeded,
        Refusal::TokenQuotaExceeded,
        Refusal::ClusterUnavailable,
        Refusal::TooManyInFlight,
    ];

    /// The refusal a decision's outcome is, if it is one.
    pub fn of(outcome: Outcome) -> Option<Refusal> {
        match outcome {
            Outcome::Allowed => None,
            Outcome::Suspended => Some(Refusal::Suspended),
            Outcome::RateLimited => Some(Refusal::RateLimited),
            Outcome::QuotaExceeded => Some(Refusal::QuotaExceeded),
            Outcome::TokenQuotaExceeded => Some(Refusal::TokenQuotaExceeded),
            Outcome::ClusterUnavailable => Some(Refusal::ClusterUnavailable),
        }
    }

    /// The status SPEC §5 gives it: what the HTTP API answers, the JSON
    /// error's `status`, and what Envoy's services report it as (ext_authz's
    /// denied answer, the rate-limit service's `X-Tollgate-Status`).
    /// Whether the same request may pass within a client's retry backoff
    /// (seconds): a burst window refills, a lease comes back, a request in
    /// flight ends; a monthly quota does not, nor does a wrong key.
    pub fn passes_soon(self) -> bool {
        match self {
            Refusal::RateLimited | Refusal::ClusterUnavailable | Refusal::TooManyInFlight => true,
            Refusal::MissingKey
            | Refusal::MalformedCredentials
            | Refusal::UnknownKey
            | Refusal::KeyExpired
            | Refusal::UnknownTenant
            | Refusal::TenantIdOff
            | Refusal::Suspended
            | Refusal::QuotaExceeded
            | Refusal::TokenQuotaExceeded => false,
        }
    }

    /// The limit a refusal met, as SPEC §12 names limits: its name (the
    /// one `RateLimit-Policy` gives it), measure and window; every one of
    /// today's is the tenant's. `None` for a refusal that is no limit.
    pub fn limit(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Refusal::RateLimited => Some(("burst", "calls", "burst")),
            Refusal::QuotaExceeded => Some(("month", "calls", "month")),
            Refusal::TokenQuotaExceeded => Some(("tokens", "tokens", "month")),
            Refusal::TooManyInFlight => Some(("in-flight", "inFlight", "none")),
            Refusal::MissingKey
            | Refusal::MalformedCredentials
            | Refusal::UnknownKey
            | Refusal::KeyExpired
            | Refusal::UnknownTenant
            | Refusal::TenantIdOff
            | Refusal::Suspended
            | Refusal::ClusterUnavailable => None,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Refusal::MissingKey
            | Refusal::MalformedCredentials
            | Refusal::UnknownKey
            | Refusal::KeyExpired
            | Refusal::UnknownTenant
            | Refusal::TenantIdOff => 401,
            Refusal::Suspended => 403,
            Refusal::RateLimited
            | Refusal::QuotaExceeded
            | Refusal::TokenQuotaExceeded
            | Refusal::TooManyInFlight => 429,
            Refusal::ClusterUnavailable => 503,
        }
    }

    /// The error code every edge names it by (docs/API.md).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingKey => "missing_api_key",
            Refusal::MalformedCredentials => "invalid_credentials",
            Refusal::UnknownKey => "invalid_api_key",
            Refusal::KeyExpired => "key_expired",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::TenantIdOff => "tenant_id_refused",
            Refusal::Suspended => "tenant_suspended",
            Refusal::RateLimited => "rate_limited",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::TokenQuotaExceeded => "token_quota_exceeded",
            Refusal::ClusterUnavailable => "cluster_unavailable",
            Refusal::TooManyInFlight => "too_many_in_flight",
        }
    }
}

/// A refusal with what the client is told: a message and, when a
/// decision refused, the state of the limit it met. Edges render it (an
/// HTTP JSON error, an Envoy denied response, a gRPC status); every one
/// tells the same thing.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub refusal: Refusal,
    pub message: String,
    /// The plan of the refused tenant (when a decision refused).
    pub plan: Option<String>,
    /// The quota or burst limit met (not for an unreachable cluster).
    pub quota: Option<Quota>,
    /// Seconds to wait before retrying (every refusal but the key's and
    /// the suspension's).
    pub(crate) retry_after: Option<u64>,
}

/// The state of the limit a refused decision met.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// The limit (none for an unlimited measure).
    pub limit: Option<u64>,
    pub used: u64,
    /// When the limit lets requests pass again: the burst window's end
    /// for a rate limit, the period's end for a quota.
    pub(crate) reset_at: DateTime<Utc>,
}

impl Refused {
    pub fn new(refusal: Refusal, message: impl Into<String>) -> Refused {
        Refused {
            refusal,
            message: message.into(),
            plan: None,
            quota: None,
            retry_after: None,
        }
    }

    /// The refusal a decision `d` of a tenant on plan `plan` is, if it is one.
    pub fn of(d: &Decision, plan: &str) -> Option<Refused> {
        let refusal = Refusal::of(d.outcome)?;
        let (message, quota) = match refusal {
            Refusal::RateLimited => {
                let b = d.burst.map_or((0, 0), |b| (b.requests, b.per_seconds));
                let reset_at = nanos_to_utc(Nanos(d.now.0.saturating_add(d.retry_after_ns as i64)));
                (
                    format!("rate limit exceeded: {} requests per {} s", b.0, b.1),
                    Some(Quota {
                        limit: Some(b.0),
                        used: b.0,
                        reset_at,
                    }),
                )
            }
            Refusal::QuotaExceeded => (
                "monthly call quota exceeded".to_string(),
                Some(Quota {
                    limit: d.calls_limit,
                    used: d.calls_used,
                    reset_at: d.period.end(),
                }),
            ),
            Refusal::TokenQuotaExceeded => (
                "monthly token quota exceeded".to_string(),
                Some(Quota {
                    limit: d.tokens_limit,
                    used: d.tokens_used,
                    reset_at: d.period.end(),
                }),
            ),
            Refusal::ClusterUnavailable => (
                "this tenant's quota is shared through Redis, which cannot be reached, and this \
                 instance has spent its lease; retry shortly"
                    .to_string(),
                None,
            ),
            Refusal::Suspended => return Some(Refused::suspended()),
            // Refused before a decision is made: never a decision's outcome.
            Refusal::MissingKey
            | Refusal::MalformedCredentials
            | Refusal::UnknownKey
            | Refusal::KeyExpired
            | Refusal::UnknownTenant
            | Refusal::TenantIdOff
            | Refusal::TooManyInFlight => return None,
        };
        Some(Refused {
            refusal,
            message,
            plan: Some(plan.to_string()),
            quota,
            retry_after: Some(d.retry_after_secs()),
        })
    }

    /// A suspended tenant's refusal.
    pub fn suspended() -> Refused {
        Refused::new(Refusal::Suspended, "this tenant is suspended")
    }

    /// The fields the JSON error body carries past `error`, `code` and
    /// `status` (SPEC §5): `allowed`, the limit's state, `retryAfterSeconds`
    /// and `plan`, those that apply.
    pub fn fields(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if self.plan.is_some() {
            out.insert("allowed".into(), false.into());
        }
        if let Some(q) = &self.quota {
            out.insert("limit".into(), q.limit.into());
            out.insert("used".into(), q.used.into());
            out.insert(
                "remaining".into(),
                q.limit.map(|l| l.saturating_sub(q.used)).into(),
            );
            out.insert("resetAt".into(), fmt_ms(q.reset_at).into());
        }
        if let Some((name, measure, window)) = self.refusal.limit() {
            out.insert("limitName".into(), name.into());
            out.insert("scope".into(), "tenant".into());
            out.insert("measure".into(), measure.into());
            out.insert("window".into(), window.into());
        }
        if let Some(secs) = self.retry_after {
            out.insert("retryAfterSeconds".into(), secs.into());
        }
        if let Some(plan) = &self.plan {
            out.insert("plan".into(), plan.as_str().into());
        }
        out
    }

    /// The JSON error body (SPEC §5).
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), self.message.as_str().into());
        body.insert("code".into(), self.refusal.code().into());
        body.insert("status".into(), self.refusal.status().into());
        body.extend(self.fields());
        Value::Object(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusing_outcome_is_a_refusal_with_its_own_code() {
        assert_eq!(Refusal::of(Outcome::Allowed), None);
        let mut codes: Vec<&str> = Refusal::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Refusal::ALL.len());
        for o in [
            Outcome::Suspended,
            Outcome::RateLimited,
            Outcome::QuotaExceeded,
            Outcome::TokenQuotaExceeded,
            Outcome::ClusterUnavailable,
        ] {
            assert!(Refusal::of(o).is_some(), "{o:?}");
        }
    }
}
