//! Plans: their limits (calls, tokens, the burst and ingest rates,
//! reservations) and what a valid one is.

use super::{valid_id, ModelError, MAX_COUNT};

/// A short-window limit: `requests` per `perSeconds`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

/// How many usage records a tenant may report through `POST /api/v1/usage`:
/// `records` per `perSeconds`, up to `burst` at once (a batch of up to
/// 10,000 records must fit in `burst` to pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestRate {
    pub records: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

/// The largest batch `POST /api/v1/usage` takes.
pub(crate) const MAX_BATCH_RECORDS: u64 = 10_000;

impl IngestRate {
    /// A plan without an explicit ingest rate: 1,000 records per request its
    /// burst limit allows, and a burst of at least one whole batch; `None`
    /// (unlimited) when the plan has no burst limit either.
    pub fn derived(rate: Option<&RateLimit>) -> Option<IngestRate> {
        rate.map(|r| IngestRate {
            records: r.requests.saturating_mul(1_000),
            per_seconds: r.per_seconds,
            burst: r.burst.saturating_mul(1_000).max(MAX_BATCH_RECORDS),
        })
    }

    /// As a limit the GCRA reads (`requests` = records).
    pub(crate) fn as_limit(&self) -> RateLimit {
        RateLimit {
            requests: self.records,
            per_seconds: self.per_seconds,
            burst: self.burst,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// `None` = unlimited.
    pub monthly_calls: Option<u64>,
    /// `None` = unlimited.
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateLimit>,
    pub price_usd_monthly: f64,
    /// Records per second `POST /api/v1/usage` takes; `None` = derived from
    /// `rate_limit` ([`IngestRate::derived`]).
    pub ingest_rate: Option<IngestRate>,
    /// Tokens `POST /api/v1/authorize` reserves of the token quota when
    /// the request names no `estimateTokens` (`None`: none reserved).
    pub reserve_tokens: Option<u64>,
    /// How long an authorize's reservation waits for the record that
    /// settles it (`None`: [`DEFAULT_RESERVATION_TTL_S`]).
    pub reservation_ttl_seconds: Option<u64>,
    /// Micro-dollars a call reserves of the tenant's spend limits when
    /// nothing estimates it (no `estimateUsd`, a model without a price;
    /// `None`: nothing reserved).
    pub reserve_usd: Option<u64>,
    /// Limits of SPEC §12 past the fields above: defaults for the plan's
    /// tenants (a `key`, `user`, `bot` or `model` limit for each one).
    pub limits: Vec<super::Limit>,
}

/// How long a reservation waits to be settled unless its plan says.
pub(crate) const DEFAULT_RESERVATION_TTL_S: u64 = 300;
/// The longest a plan may hold a reservation (a day).
pub(crate) const MAX_RESERVATION_TTL_S: u64 = 86_400;

impl Plan {
    /// How long an authorize's reservation waits to be settled (seconds).
    pub(crate) fn reservation_ttl_s(&self) -> u64 {
        self.reservation_ttl_seconds
            .unwrap_or(DEFAULT_RESERVATION_TTL_S)
    }

    /// A plan without any limit, for tests.
    #[cfg(test)]
    pub fn unlimited(id: &str) -> Plan {
        Plan {
            id: id.into(),
            name: id.into(),
            monthly_calls: None,
            monthly_tokens: None,
            rate_limit: None,
            price_usd_monthly: 0.0,
            ingest_rate: None,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            reserve_usd: None,
            limits: Vec::new(),
        }
    }

    /// The ingest limit in force: the explicit one, else the derived one.
    pub(crate) fn effective_ingest_rate(&self) -> Option<IngestRate> {
        self.ingest_rate
            .or_else(|| IngestRate::derived(self.rate_limit.as_ref()))
    }
}

impl Plan {
    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        if !valid_id(&self.id) {
            return Err(ModelError::BadId("plan id"));
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ModelError::Invalid("name must be 1 to 128 bytes".into()));
        }
        if self.name.chars().any(char::is_control) {
            return Err(ModelError::Invalid(
                "name must not contain control characters (CR, LF, NUL, ESC, ...)".into(),
            ));
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
            check_rate("rateLimit", "requests", r)?;
        }
        if let Some(r) = &self.ingest_rate {
            check_rate("ingestRate", "records", &r.as_limit())?;
            if r.burst < MAX_BATCH_RECORDS.min(r.records) {
                return Err(ModelError::Invalid(format!(
                    "ingestRate.burst must be at least {MAX_BATCH_RECORDS} (one whole batch) \
                     or at least ingestRate.records"
                )));
            }
        }
        if !self.price_usd_monthly.is_finite() || self.price_usd_monthly < 0.0 {
            return Err(ModelError::Invalid(
                "priceUsdMonthly must be a finite number >= 0".into(),
            ));
        }
        if self.reserve_tokens.is_some_and(|v| v > MAX_COUNT) {
            return Err(ModelError::Invalid(format!(
                "reserveTokens must be at most {MAX_COUNT} (or null for none)"
            )));
        }
        if self
            .reservation_ttl_seconds
            .is_some_and(|v| v == 0 || v > MAX_RESERVATION_TTL_S)
        {
            return Err(ModelError::Invalid(format!(
                "reservationTtlSeconds must be 1 to {MAX_RESERVATION_TTL_S} (or null for {DEFAULT_RESERVATION_TTL_S})"
            )));
        }
        if self.reserve_usd.is_some_and(|v| v > MAX_COUNT) {
            return Err(ModelError::Invalid(
                "reserveUsd must be at most 281474976.710655 (or null for none)".into(),
            ));
        }
        super::check_limits(&self.limits, &super::Scope::ALL)
    }
}

/// The longest window a burst bucket may span: the GCRA keeps it in
/// nanoseconds on a `u64` beside the current time, so it must stay far from
/// overflowing (2^62 ns is about 146 years).
const MAX_BUCKET_NS: u128 = 1 << 62;

/// A short-window limit the GCRA can represent exactly.
pub(super) fn check_rate(field: &str, unit: &str, r: &RateLimit) -> Result<(), ModelError> {
    if r.requests == 0 || r.per_seconds == 0 || r.burst == 0 {
        return Err(ModelError::Invalid(format!(
            "{field}.{unit}, perSeconds and burst must be at least 1"
        )));
    }
    if r.requests > 1_000_000_000_000 || r.per_seconds > 86_400 * 31 || r.burst > 1_000_000_000_000
    {
        return Err(ModelError::Invalid(format!("{field} is out of range")));
    }
    let interval_ns = (r.per_seconds as u128 * 1_000_000_000) / r.requests as u128;
    if interval_ns == 0 {
        return Err(ModelError::Invalid(format!(
            "{field}: more than one {unit} per nanosecond cannot be limited"
        )));
    }
    if interval_ns * r.burst as u128 > MAX_BUCKET_NS {
        return Err(ModelError::Invalid(format!(
            "{field}: burst x (perSeconds / {unit}) spans over 146 years; \
             lower burst or perSeconds"
        )));
    }
    Ok(())
}
