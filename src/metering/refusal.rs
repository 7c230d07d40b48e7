//! Why a metered request is refused: [`Refusal`] names the reason,
//! [`Refused`] carries it with what the client is told.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::clock::{fmt_ms, nanos_to_utc, Nanos};
use crate::model::Measure;
use crate::quota::scoped::Breach;
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
    /// A spend limit (a dollar budget) has no room for the request.
    BudgetExceeded,
}

impl Refusal {
    /// Every reason, for tables and tests that go through them all.
    pub const ALL: [Refusal; 13] = [
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
        Refusal::BudgetExceeded,
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
            Outcome::BudgetExceeded => Some(Refusal::BudgetExceeded),
            Outcome::InFlightFull => Some(Refusal::TooManyInFlight),
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
            | Refusal::TokenQuotaExceeded
            | Refusal::BudgetExceeded => false,
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
            Refusal::BudgetExceeded => Some(("budget", "spendUsd", "month")),
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
            | Refusal::TooManyInFlight
            | Refusal::BudgetExceeded => 429,
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
            Refusal::BudgetExceeded => "budget_exceeded",
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
    /// The limit of SPEC §12 that refused, when it is not one of the
    /// plan's own fields.
    pub(crate) named: Option<Box<Named>>,
}

/// A limit of SPEC §12 as a refusal names it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Named {
    pub name: String,
    pub scope: &'static str,
    pub measure: Measure,
    pub window: &'static str,
    /// The key id, end user, bot or model it counts (none for the tenant).
    pub subject: String,
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
            named: None,
        }
    }

    /// Names the limit `b` that refused (and its state) instead of the
    /// plan's field the refusal stands for.
    pub fn breached(&mut self, b: &Breach, now: Nanos) {
        let v = &b.view;
        let subject = if b.subject.is_empty() {
            "this tenant".to_string()
        } else {
            format!("{} '{}'", v.scope.as_str(), b.subject)
        };
        let amount = |n: u64| match v.measure {
            Measure::SpendUsd => format!("${:.6}", n as f64 / 1e6),
            _ => n.to_string(),
        };
        self.message = if b.table_full {
            format!(
                "limit '{}' cannot track another {}: this tenant tracks as many as it may; \
                 retry once others are idle",
                v.name,
                v.scope.as_str()
            )
        } else {
            format!(
                "limit '{}' reached for {subject}: {} of {} {} per {}",
                v.name,
                amount(v.used),
                amount(v.amount),
                v.measure.as_str(),
                v.window.as_str()
            )
        };
        self.quota = Some(Quota {
            limit: Some(v.amount),
            used: v.used,
            reset_at: nanos_to_utc(Nanos(
                now.0
                    .saturating_add(b.view.reset_ms.max(b.retry_ms).saturating_mul(1_000_000)),
            )),
        });
        self.retry_after = Some((b.retry_ms.max(1) as u64).div_ceil(1_000));
        self.named = Some(Box::new(Named {
            name: v.name.to_string(),
            scope: v.scope.as_str(),
            measure: v.measure,
            window: v.window.as_str(),
            subject: b.subject.to_string(),
        }));
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
                "this tenant's limits are shared through Redis, which cannot be reached: this \
                 instance has spent its lease of the quota, or the request meets a limit only \
                 Redis can decide; retry shortly"
                    .to_string(),
                None,
            ),
            Refusal::BudgetExceeded => ("spend limit reached".to_string(), None),
            Refusal::Suspended => return Some(Refused::suspended()),
            // Refused before a decision is made: never a decision's outcome.
            Refusal::MissingKey
            | Refusal::MalformedCredentials
            | Refusal::UnknownKey
            | Refusal::KeyExpired
            | Refusal::UnknownTenant
            | Refusal::TenantIdOff => return None,
            Refusal::TooManyInFlight => ("too many requests in flight".to_string(), None),
        };
        Some(Refused {
            refusal,
            message,
            plan: Some(plan.to_string()),
            quota,
            retry_after: Some(d.retry_after_secs()),
            named: None,
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
            let usd = self
                .named
                .as_ref()
                .is_some_and(|n| n.measure == Measure::SpendUsd);
            let amount = |n: u64| -> Value {
                if usd {
                    (n as f64 / 1e6).into()
                } else {
                    n.into()
                }
            };
            out.insert("limit".into(), q.limit.map(amount).into());
            out.insert("used".into(), amount(q.used));
            out.insert(
                "remaining".into(),
                q.limit.map(|l| amount(l.saturating_sub(q.used))).into(),
            );
            out.insert("resetAt".into(), fmt_ms(q.reset_at).into());
        }
        if let Some(n) = &self.named {
            out.insert("limitName".into(), n.name.as_str().into());
            out.insert("scope".into(), n.scope.into());
            out.insert("measure".into(), n.measure.as_str().into());
            out.insert("window".into(), n.window.into());
            if !n.subject.is_empty() {
                out.insert("subject".into(), n.subject.as_str().into());
            }
        } else if let Some((name, measure, window)) = self.refusal.limit() {
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
