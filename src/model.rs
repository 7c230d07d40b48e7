//! Domain types: plans, tenants, API keys, usage records.
//!
//! No JSON and no stored form here: the API's bodies are `http::catalog`
//! and `http::types`, each engine has rows of its own (sled's in
//! `store/sled/rows.rs`), so the API, the domain and the stored format
//! change independently.

use chrono::{DateTime, Utc};
pub use compact_str::CompactString;

/// The largest limit or count a plan may name (2^48 - 1): what a period
/// counter holds (`quota::counter` checks that the two agree).
pub const MAX_COUNT: u64 = (1 << 48) - 1;

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
pub const MAX_BATCH_RECORDS: u64 = 10_000;

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
    pub fn as_limit(&self) -> RateLimit {
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
}

/// How long a reservation waits to be settled unless its plan says.
pub const DEFAULT_RESERVATION_TTL_S: u64 = 300;
/// The longest a plan may hold a reservation (a day).
pub const MAX_RESERVATION_TTL_S: u64 = 86_400;

impl Plan {
    /// How long an authorize's reservation waits to be settled (seconds).
    pub fn reservation_ttl_s(&self) -> u64 {
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
        }
    }

    /// The ingest limit in force: the explicit one, else the derived one.
    pub fn effective_ingest_rate(&self) -> Option<IngestRate> {
        self.ingest_rate
            .or_else(|| IngestRate::derived(self.rate_limit.as_ref()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub plan_id: String,
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
}

/// An API key as lists show it: never the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first 8 characters of the secret.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What the store keeps of a key: its public fields and the SHA-256 of the secret.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredKey {
    pub key: ApiKey,
    pub hash: [u8; 32],
}

/// One metered request: compact, without the tenant (blocks are per tenant).
///
/// The fields most records leave empty live in [`RecordExtra`], boxed and
/// absent when all are empty, so a record waiting in a request lane is 144
/// bytes instead of 280 (the lanes preallocate every slot). Its strings
/// are [`CompactString`]s: up to 24 bytes (an endpoint, a method, a model,
/// a user or bot id) they are held inline, with no allocation to make a
/// record or free it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub endpoint: CompactString,
    pub method: CompactString,
    pub status: u16,
    pub response_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Total tokens (at least prompt + completion).
    pub tokens: u64,
    pub model: CompactString,
    /// Quota units this record consumed.
    pub calls: u64,
    pub cost_usd: f64,
    /// Refused by Tollgate itself (rate limit, quota, suspension).
    pub rejected: bool,
    /// A retry of an earlier attempt (an SDK's `x-stainless-retry-count`
    /// above 0, a report's `retryAttempt` above 0).
    pub retried: bool,
    /// Read through [`UsageRecord::extra`]; set with [`RecordExtra::boxed`]
    /// or [`UsageRecord::extra_mut`].
    pub extra: Extras,
}

/// A record's [`RecordExtra`] as it holds it: boxed, or nothing when every
/// field is empty. Compared by what it reads, so boxed-but-empty extras
/// equal none.
#[derive(Clone, Debug, Default)]
pub struct Extras(Option<Box<RecordExtra>>);

impl PartialEq for Extras {
    fn eq(&self, o: &Self) -> bool {
        self.get() == o.get()
    }
}

impl Extras {
    fn get(&self) -> &RecordExtra {
        self.0.as_deref().unwrap_or(&NO_EXTRA)
    }
}

/// A [`UsageRecord`]'s rarely set fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordExtra {
    pub user_id: CompactString,
    pub bot_id: CompactString,
    pub metadata: Vec<(String, String)>,
    /// The API version, when given (a report's `apiVersion`, a gateway
    /// request's `API-Version` header); else [`UsageRecord::version`]
    /// derives it from the endpoint.
    pub api_version: CompactString,
    /// ISO 3166-1 alpha-2 (upper case), when known; never the address.
    pub country: CompactString,
    /// The `[[proxy]]` (by name) a gateway request went to.
    pub integration: CompactString,
}

/// What a record without extras reads.
static NO_EXTRA: RecordExtra = RecordExtra {
    user_id: CompactString::const_new(""),
    bot_id: CompactString::const_new(""),
    metadata: Vec::new(),
    api_version: CompactString::const_new(""),
    country: CompactString::const_new(""),
    integration: CompactString::const_new(""),
};

impl RecordExtra {
    pub fn is_empty(&self) -> bool {
        *self == NO_EXTRA
    }

    /// As a record holds it: nothing when every field is empty, so a record
    /// without extras allocates nothing for them.
    pub fn boxed(self) -> Extras {
        Extras((!self.is_empty()).then(|| Box::new(self)))
    }
}

impl UsageRecord {
    /// The rarely set fields, empty ones when the record has none.
    pub fn extra(&self) -> &RecordExtra {
        self.extra.get()
    }

    /// The rarely set fields to change (boxed on first use).
    pub fn extra_mut(&mut self) -> &mut RecordExtra {
        self.extra.0.get_or_insert_with(Box::default)
    }

    /// The API version: as given, else the endpoint's first path segment
    /// when it looks like one ([`version_segment`]); empty when neither.
    pub fn version(&self) -> &str {
        let given = &self.extra().api_version;
        if given.is_empty() {
            version_segment(&self.endpoint)
        } else {
            given
        }
    }
}

/// The first segment of `path` when it names a version: `v1`, `v2`,
/// `v1.1`, `v1beta`, `v2alpha1`, or a date such as `2024-06-01`; else "".
pub fn version_segment(path: &str) -> &str {
    let seg = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let b = seg.as_bytes();
    let dated = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    let versioned = b.len() >= 2 && b.len() <= 16 && (b[0] == b'v' || b[0] == b'V') && {
        let rest = &b[1..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let tail = &rest[digits..];
        let tail = match tail.first() {
            Some(b'.') => {
                let d = tail[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if d == 0 {
                    return "";
                }
                &tail[1 + d..]
            }
            _ => tail,
        };
        digits > 0
            && tail.iter().all(|c| c.is_ascii_alphanumeric())
            && tail.first().is_none_or(|c| c.is_ascii_lowercase())
    };
    if dated || versioned {
        seg
    } else {
        ""
    }
}

/// `code` as a country: two ASCII letters, upper-cased; else `None`.
pub fn country_code(code: &str) -> Option<CompactString> {
    let b = code.as_bytes();
    (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic)).then(|| {
        let mut c = CompactString::new(code);
        c.make_ascii_uppercase();
        c
    })
}

/// Whether an API version given explicitly can be recorded: 1 to 64
/// printable bytes.
pub fn recordable_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control)
}

/// The most tokens one upstream answer may count, per figure: far above any
/// model's context, far below what would pin a period counter (2^48) or
/// bill a fortune. Larger counts are capped, and the record says so.
pub const MAX_UPSTREAM_TOKENS: u64 = 10_000_000;

/// Whether a model name an upstream answered can be recorded as it is:
/// within the record's 128 bytes, and printable (it reaches logs, exports
/// and `/metrics` labels).
pub fn recordable_model(name: &str) -> bool {
    name.len() <= 128 && !name.chars().any(char::is_control)
}

/// Token counts an upstream reported, made safe to count and price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// A figure was over [`MAX_UPSTREAM_TOKENS`] and was capped.
    pub capped: bool,
}

impl TokenCounts {
    /// Each figure capped, the total at least prompt + completion (no
    /// overflow), and a total without a split priced as prompt tokens (so
    /// an answer with only `total_tokens` is not free).
    pub fn from_upstream(prompt: u64, completion: u64, total: u64) -> TokenCounts {
        let cap = |n: u64| n.min(MAX_UPSTREAM_TOKENS);
        let capped = [prompt, completion, total]
            .iter()
            .any(|&n| n > MAX_UPSTREAM_TOKENS);
        let (prompt, completion) = (cap(prompt), cap(completion));
        let total = cap(total).max(prompt + completion);
        TokenCounts {
            prompt: if prompt == 0 && completion == 0 {
                total
            } else {
                prompt
            },
            completion,
            total,
            capped,
        }
    }
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
        Ok(())
    }
}

/// The longest window a burst bucket may span: the GCRA keeps it in
/// nanoseconds on a `u64` beside the current time, so it must stay far from
/// overflowing (2^62 ns is about 146 years).
const MAX_BUCKET_NS: u128 = 1 << 62;

/// A short-window limit the GCRA can represent exactly.
fn check_rate(field: &str, unit: &str, r: &RateLimit) -> Result<(), ModelError> {
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

impl Tenant {
    pub fn validate(&self) -> Result<(), ModelError> {
        if !valid_id(&self.id) {
            return Err(ModelError::BadId("tenant id"));
        }
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(ModelError::Invalid("name must be 1 to 128 bytes".into()));
        }
        if self.name.chars().any(char::is_control) {
            return Err(ModelError::Invalid(
                "name must not contain control characters (CR, LF, NUL, ESC, ...)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: Option<RateLimit>, ingest: Option<IngestRate>) -> Plan {
        Plan {
            id: "p".into(),
            name: "P".into(),
            monthly_calls: None,
            monthly_tokens: None,
            rate_limit: rate,
            price_usd_monthly: 0.0,
            ingest_rate: ingest,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
        }
    }

    /// Regression (hostile tenant): `{requests: 1, perSeconds: 2678400,
    /// burst: 10000}` overflowed the GCRA's capacity (a saturated u64), which
    /// disabled the burst limit; validation accepted it.
    #[test]
    fn rate_limits_the_gcra_cannot_represent_are_refused() {
        let rate = |requests, per_seconds, burst| {
            plan(
                Some(RateLimit {
                    requests,
                    per_seconds,
                    burst,
                }),
                None,
            )
            .validate()
        };
        assert!(rate(1, 2_678_400, 10_000).is_err());
        assert!(rate(1, 2_678_400, 1_000).is_ok());
        assert!(rate(5, 1, 10).is_ok());
        assert!(rate(0, 1, 10).is_err());
        let ingest = |records, burst| {
            plan(
                None,
                Some(IngestRate {
                    records,
                    per_seconds: 1,
                    burst,
                }),
            )
            .validate()
        };
        assert!(ingest(5_000, 10_000).is_ok());
        assert!(ingest(5_000, 100).is_err(), "a batch could never pass");
        assert!(ingest(10, 10).is_ok());
    }

    #[test]
    fn the_ingest_rate_is_derived_from_the_burst_limit() {
        let p = plan(
            Some(RateLimit {
                requests: 5,
                per_seconds: 1,
                burst: 10,
            }),
            None,
        );
        assert_eq!(
            p.effective_ingest_rate(),
            Some(IngestRate {
                records: 5_000,
                per_seconds: 1,
                burst: 10_000
            })
        );
        assert_eq!(plan(None, None).effective_ingest_rate(), None);
    }

    /// Regression (hostile tenant, finding 7): `prompt + completion` was
    /// added unchecked (2^63 + 2^63 gave 0 tokens and a 1.15e14 bill),
    /// u64::MAX pinned the month's counter, and a total alone cost $0.
    #[test]
    fn upstream_token_counts_are_capped_and_never_overflow() {
        let t = TokenCounts::from_upstream(1 << 63, 1 << 63, 0);
        assert_eq!(
            (t.prompt, t.completion, t.total, t.capped),
            (
                MAX_UPSTREAM_TOKENS,
                MAX_UPSTREAM_TOKENS,
                2 * MAX_UPSTREAM_TOKENS,
                true
            )
        );
        let t = TokenCounts::from_upstream(0, 0, u64::MAX);
        assert_eq!(
            (t.prompt, t.total),
            (MAX_UPSTREAM_TOKENS, MAX_UPSTREAM_TOKENS)
        );
        let t = TokenCounts::from_upstream(0, 0, 120);
        assert_eq!(
            (t.prompt, t.completion, t.total, t.capped),
            (120, 0, 120, false)
        );
        let t = TokenCounts::from_upstream(3, 5, 0);
        assert_eq!((t.prompt, t.completion, t.total), (3, 5, 8));
    }

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

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn versions_come_from_the_first_segment() {
        for (path, v) in [
            ("/v1/chat/completions", "v1"),
            ("v2/x", "v2"),
            ("/v1.1/items?x=1", "v1.1"),
            ("/v1beta/models", "v1beta"),
            ("/v2alpha1", "v2alpha1"),
            ("/2024-06-01/messages", "2024-06-01"),
            ("/api/chat", ""),
            ("/v/x", ""),
            ("/video/x", ""),
            ("/v1./x", ""),
            ("/V1X/x", ""),
            ("/2024-6-01/x", ""),
            ("", ""),
        ] {
            assert_eq!(version_segment(path), v, "{path}");
        }
        let mut r = UsageRecord {
            endpoint: "/v3/x".into(),
            ..Default::default()
        };
        assert_eq!(r.version(), "v3");
        r.extra_mut().api_version = "2025-01-01".into();
        assert_eq!(r.version(), "2025-01-01");
        // Boxed-but-empty extras read, and compare, as none.
        let mut boxed = UsageRecord::default();
        boxed.extra_mut();
        assert_eq!(boxed, UsageRecord::default());
        assert!(RecordExtra::default().boxed().0.is_none());
        assert_ne!(
            r,
            UsageRecord {
                endpoint: "/v3/x".into(),
                ..Default::default()
            }
        );
        // The request lanes preallocate a slot per record: keep it small.
        assert!(std::mem::size_of::<UsageRecord>() <= 144);
        assert_eq!(country_code("de").as_deref(), Some("DE"));
        assert_eq!(country_code("DEU"), None);
        assert_eq!(country_code("1a"), None);
    }
}
