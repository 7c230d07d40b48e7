//! Domain types: plans, tenants, API keys, usage records.
//!
//! They serialize with camelCase names (the JSON of SPEC §2) and are also what
//! the store encodes; request/response shapes that exist only at the HTTP edge
//! live in `http::types`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::quota::counter::MAX_COUNT;

/// A short-window limit: `requests` per `perSeconds`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// `None` = unlimited.
    pub monthly_calls: Option<u64>,
    /// `None` = unlimited.
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub price_usd_monthly: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan_id: String,
    pub status: TenantStatus,
    #[serde(with = "crate::clock::serde_ms")]
    pub created_at: DateTime<Utc>,
}

/// An API key as lists show it: never the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first 8 characters of the secret.
    pub prefix: String,
    #[serde(with = "crate::clock::serde_ms")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::clock::serde_ms::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What the store keeps of a key: its public fields and the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub key: ApiKey,
    pub hash: [u8; 32],
}

/// One metered request as stored: compact, without the tenant (blocks are per tenant).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub endpoint: String,
    pub method: String,
    pub status: u16,
    pub response_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Total tokens (at least prompt + completion).
    pub tokens: u64,
    pub model: String,
    pub user_id: String,
    pub bot_id: String,
    pub metadata: Vec<(String, String)>,
    /// Quota units this record consumed.
    pub calls: u64,
    pub cost_usd: f64,
    /// Refused by Tollgate itself (rate limit, quota, suspension).
    pub rejected: bool,
}

/// Why a plan or tenant definition is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("{0} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")]
    BadId(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Tenant and plan ids: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

impl Plan {
    pub fn validate(&self) -> Result<(), ModelError> {
        if !valid_id(&self.id) {
            return Err(ModelError::BadId("plan id"));
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ModelError::Invalid("name must be 1 to 128 bytes".into()));
        }
        for (field, v) in [
            ("monthlyCalls", self.monthly_calls),
            ("monthlyTokens", self.monthly_tokens),
        ] {
            if v.is_some_and(|v| v > MAX_COUNT) {
                return Err(ModelError::Invalid(format!(
                    "{field} must be at most {MAX_COUNT} (or null for unlimited)"
                )));
            }
        }
        if let Some(r) = &self.rate_limit {
            if r.requests == 0 || r.per_seconds == 0 || r.burst == 0 {
                return Err(ModelError::Invalid(
                    "rateLimit.requests, perSeconds and burst must be at least 1".into(),
                ));
            }
            if r.requests > 1_000_000_000 || r.per_seconds > 86_400 * 31 || r.burst > 1_000_000_000
            {
                return Err(ModelError::Invalid("rateLimit is out of range".into()));
            }
        }
        if !self.price_usd_monthly.is_finite() || self.price_usd_monthly < 0.0 {
            return Err(ModelError::Invalid(
                "priceUsdMonthly must be a finite number >= 0".into(),
            ));
        }
        Ok(())
    }
}

impl Tenant {
    pub fn validate(&self) -> Result<(), ModelError> {
        if !valid_id(&self.id) {
            return Err(ModelError::BadId("tenant id"));
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ModelError::Invalid("name must be 1 to 128 bytes".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "acme", "0-x_y", &"a".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
