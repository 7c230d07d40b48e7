//! The JSON of plans, tenants and keys (SPEC §2): what the admin API takes
//! and answers, apart from the domain types of [`model`](crate::model), so
//! that the API's shape and the domain change independently. Each body is
//! named in the OpenAPI document as the domain type it carries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{
    ApiKey, IngestRate, Limit, Measure, Plan, RateLimit, Tenant, TenantStatus, Window,
};

/// A limit of SPEC §12: `{name, scope, measure, window, amount}`, with
/// `perSeconds` and `burst` for the burst window. `amount` is a whole
/// number of calls, tokens or requests in flight, or US dollars for
/// `spendUsd` (kept to the micro-dollar); `null` is unlimited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Limit)]
pub struct LimitBody {
    pub name: String,
    /// `tenant`, `key`, `user`, `bot` or `model`.
    pub scope: String,
    /// `calls`, `tokens`, `spendUsd` or `inFlight`.
    pub measure: String,
    /// `burst`, `minute`, `hour`, `day`, `month`, `billingMonth` or `none`.
    pub window: String,
    pub amount: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl From<&Limit> for LimitBody {
    fn from(l: &Limit) -> LimitBody {
        let burst = l.window == Window::Burst;
        LimitBody {
            name: l.name.to_string(),
            scope: l.scope.as_str().into(),
            measure: l.measure.as_str().into(),
            window: l.window.as_str().into(),
            amount: l.amount.map(|a| match l.measure {
                Measure::SpendUsd => a as f64 / 1e6,
                _ => a as f64,
            }),
            per_seconds: burst.then_some(l.per_seconds),
            burst: burst.then_some(l.burst),
        }
    }
}

impl LimitBody {
    /// The limit, or what is wrong with it (the model checks the rest).
    pub fn limit(&self) -> Result<Limit, String> {
        crate::model::Limit::parse(
            &self.name,
            &self.scope,
            &self.measure,
            &self.window,
            self.amount,
            self.per_seconds,
            self.burst,
        )
    }
}

/// Each body's limit (the first error).
pub(crate) fn limits_of(bodies: &[LimitBody]) -> Result<Vec<Limit>, String> {
    bodies.iter().map(LimitBody::limit).collect()
}

pub(crate) fn bodies_of(limits: &[Limit]) -> Vec<LimitBody> {
    limits.iter().map(LimitBody::from).collect()
}

/// A short-window limit: `requests` per `perSeconds`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = RateLimit)]
pub struct RateLimitBody {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

/// How many usage records a tenant may report through `POST /api/v1/usage`:
/// `records` per `perSeconds`, up to `burst` at once (a batch of up to
/// 10,000 records must fit in `burst` to pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = IngestRate)]
pub struct IngestRateBody {
    pub records: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

impl From<RateLimit> for RateLimitBody {
    fn from(r: RateLimit) -> RateLimitBody {
        let RateLimit {
            requests,
            per_seconds,
            burst,
        } = r;
        RateLimitBody {
            requests,
            per_seconds,
            burst,
        }
    }
}

impl From<RateLimitBody> for RateLimit {
    fn from(r: RateLimitBody) -> RateLimit {
        let RateLimitBody {
            requests,
            per_seconds,
            burst,
        } = r;
        RateLimit {
            requests,
            per_seconds,
            burst,
        }
    }
}

impl From<IngestRate> for IngestRateBody {
    fn from(r: IngestRate) -> IngestRateBody {
        let IngestRate {
            records,
            per_seconds,
            burst,
        } = r;
        IngestRateBody {
            records,
            per_seconds,
            burst,
        }
    }
}

impl From<IngestRateBody> for IngestRate {
    fn from(r: IngestRateBody) -> IngestRate {
        let IngestRateBody {
            records,
            per_seconds,
            burst,
        } = r;
        IngestRate {
            records,
            per_seconds,
            burst,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Plan)]
pub struct PlanBody {
    pub id: String,
    pub name: String,
    /// `null` = unlimited.
    pub monthly_calls: Option<u64>,
    /// `null` = unlimited.
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateLimitBody>,
    #[serde(default)]
    pub price_usd_monthly: f64,
    /// Records per second `POST /api/v1/usage` takes; `null` = derived
    /// from `rateLimit` (1,000 records per request it allows).
    #[serde(default)]
    pub ingest_rate: Option<IngestRateBody>,
    /// Tokens `POST /api/v1/authorize` reserves of the token quota when
    /// it names no `estimateTokens`; `null` = none.
    #[serde(default)]
    pub reserve_tokens: Option<u64>,
    /// Seconds a reservation waits for the record that settles it
    /// (1 to 86,400); `null` = 300.
    #[serde(default)]
    pub reservation_ttl_seconds: Option<u64>,
    /// US dollars a call reserves of the tenant's spend limits when
    /// nothing estimates it (authorize without `estimateUsd`, a model
    /// without a price); `null` = none.
    #[serde(default)]
    pub reserve_usd: Option<f64>,
    /// Limits past the fields above (SPEC §12): defaults for the plan's
    /// tenants.
    #[serde(default)]
    pub limits: Vec<LimitBody>,
}

impl From<&Plan> for PlanBody {
    fn from(p: &Plan) -> PlanBody {
        PlanBody {
            id: p.id.clone(),
            name: p.name.clone(),
            monthly_calls: p.monthly_calls,
            monthly_tokens: p.monthly_tokens,
            rate_limit: p.rate_limit.map(RateLimitBody::from),
            price_usd_monthly: p.price_usd_monthly,
            ingest_rate: p.ingest_rate.map(IngestRateBody::from),
            reserve_tokens: p.reserve_tokens,
            reservation_ttl_seconds: p.reservation_ttl_seconds,
            reserve_usd: p.reserve_usd.map(|m| m as f64 / 1e6),
            limits: bodies_of(&p.limits),
        }
    }
}

impl TryFrom<PlanBody> for Plan {
    type Error = String;
    fn try_from(p: PlanBody) -> Result<Plan, String> {
        Ok(Plan {
            limits: limits_of(&p.limits)?,
            id: p.id,
            name: p.name,
            monthly_calls: p.monthly_calls,
            monthly_tokens: p.monthly_tokens,
            rate_limit: p.rate_limit.map(RateLimit::from),
            price_usd_monthly: p.price_usd_monthly,
            ingest_rate: p.ingest_rate.map(IngestRate::from),
            reserve_tokens: p.reserve_tokens,
            reservation_ttl_seconds: p.reservation_ttl_seconds,
            reserve_usd: match p.reserve_usd {
                Some(usd) if !usd.is_finite() || usd < 0.0 => {
                    return Err("reserveUsd must be a number of US dollars, 0 or more".into())
                }
                Some(usd) => Some((usd * 1e6).round() as u64),
                None => None,
            },
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = TenantStatus)]
pub enum StatusBody {
    Active,
    Suspended,
}

impl From<TenantStatus> for StatusBody {
    fn from(s: TenantStatus) -> StatusBody {
        match s {
            TenantStatus::Active => StatusBody::Active,
            TenantStatus::Suspended => StatusBody::Suspended,
        }
    }
}

impl From<StatusBody> for TenantStatus {
    fn from(s: StatusBody) -> TenantStatus {
        match s {
            StatusBody::Active => TenantStatus::Active,
            StatusBody::Suspended => TenantStatus::Suspended,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Tenant)]
pub struct TenantBody {
    pub id: String,
    pub name: String,
    pub plan_id: String,
    pub status: StatusBody,
    #[serde(with = "crate::clock::serde_ms")]
    pub created_at: DateTime<Utc>,
    /// The tenant's own limits, each replacing its plan's of the same name.
    #[serde(default)]
    pub limits: Vec<LimitBody>,
    /// The day of the month its billing month starts (1 to 28); null: the 1st.
    #[serde(default)]
    pub billing_day: Option<u8>,
}

impl From<&Tenant> for TenantBody {
    fn from(t: &Tenant) -> TenantBody {
        TenantBody {
            id: t.id.clone(),
            name: t.name.clone(),
            plan_id: t.plan_id.clone(),
            status: t.status.into(),
            created_at: t.created_at,
            limits: bodies_of(&t.limits),
            billing_day: t.billing_day,
        }
    }
}

impl TryFrom<TenantBody> for Tenant {
    type Error = String;
    fn try_from(t: TenantBody) -> Result<Tenant, String> {
        Ok(Tenant {
            limits: limits_of(&t.limits)?,
            billing_day: t.billing_day,
            id: t.id,
            name: t.name,
            plan_id: t.plan_id,
            status: t.status.into(),
            created_at: t.created_at,
        })
    }
}

/// An API key as lists show it: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ApiKey)]
pub(crate) struct KeyBody {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first 8 characters of the secret.
    pub prefix: String,
    #[serde(with = "crate::clock::serde_ms")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::clock::serde_ms::option")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// From then on the key is refused `key_expired`; null: never.
    #[serde(with = "crate::clock::serde_ms::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When a request last used it, to the minute; null: never (or not
    /// since this version).
    #[serde(with = "crate::clock::serde_ms::option")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key's own limits (scope `key`).
    pub limits: Vec<LimitBody>,
}

impl From<&ApiKey> for KeyBody {
    fn from(k: &ApiKey) -> KeyBody {
        KeyBody {
            id: k.id.clone(),
            tenant_id: k.tenant_id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            limits: bodies_of(&k.limits),
        }
    }
}
