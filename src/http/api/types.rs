//! Request and response bodies that exist only at the HTTP edge (camelCase JSON),
//! and the checks of SPEC §5's field bounds.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::catalog::{PlanBody, StatusBody};
use crate::clock::{fmt_ms, MsText};
use crate::metering::request::check_method;
use crate::model::{CompactString, CostSplit, Plan, RecordExtra, TokenKinds, UsageRecord};
use crate::quota::Decision;
use crate::stack_text::StackText;

pub(crate) const MAX_SAFE: u64 = 1 << 53;
/// The longest `responseTime` a record may report: one day, in ms (1e308
/// turned averages into null and p99 into 162,768,518 ms).
pub(crate) const MAX_RESPONSE_MS: f64 = 86_400_000.0;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AuthorizeRequest {
    pub cost: Option<u64>,
    // The fields a record keeps are read as it keeps them (inline up to
    // 24 bytes, so a usual request allocates nothing for them).
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<CompactString>,
    pub method: Option<String>,
    #[schema(value_type = Option<String>)]
    pub user_id: Option<CompactString>,
    #[schema(value_type = Option<String>)]
    pub bot_id: Option<CompactString>,
    #[serde(default)]
    pub(crate) dry_run: bool,
    /// The API version the request uses; by default the endpoint's first
    /// path segment when it names one (`/v1/...`, `/2024-06-01/...`).
    #[schema(value_type = Option<String>)]
    pub(crate) api_version: Option<CompactString>,
    /// The caller's ISO 3166-1 alpha-2 country, when the application knows it.
    pub country: Option<String>,
    /// The caller's address, to find its country in `[geoip] mmdb` when
    /// `country` is not given; looked up, never stored.
    pub(crate) client_ip: Option<String>,
    /// Tokens the call may use, reserved of the token quota until a usage
    /// record with the answer's `reservationId` settles them (default:
    /// the plan's `reserveTokens`).
    pub(crate) estimate_tokens: Option<u64>,
    /// US dollars the call may cost, reserved of the tenant's spend limits
    /// (SPEC §12) until the record naming `reservationId` settles them.
    pub(crate) estimate_usd: Option<f64>,
    /// The model the call uses (its `model` limits apply; the record keeps it).
    #[schema(value_type = Option<String>)]
    pub(crate) model: Option<CompactString>,
}

/// An optional `clientIp`, or a 422's message.
pub(crate) fn opt_ip(ip: Option<&str>) -> Result<Option<std::net::IpAddr>, String> {
    ip.map(|ip| {
        ip.trim()
            .parse()
            .map_err(|_| "clientIp must be an IPv4 or IPv6 address".to_string())
    })
    .transpose()
}

/// An optional `apiVersion` as recorded, or a 422's message.
pub(crate) fn opt_version(v: Option<CompactString>) -> Result<CompactString, String> {
    match v {
        Some(v) if !crate::model::recordable_version(&v) => {
            Err("apiVersion must be 1 to 64 bytes without control characters".into())
        }
        v => Ok(v.unwrap_or_default()),
    }
}

/// An optional `country` as recorded (upper case), or a 422's message.
pub(crate) fn opt_country(c: Option<&str>) -> Result<CompactString, String> {
    match c {
        None | Some("") => Ok(CompactString::default()),
        Some(c) => crate::model::country_code(c)
            .ok_or_else(|| "country must be an ISO 3166-1 alpha-2 code such as DE".into()),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthorizeResponse<'a> {
    pub allowed: bool,
    pub limit: Option<u64>,
    pub used: u64,
    pub remaining: Option<u64>,
    #[schema(value_type = String)]
    pub(crate) reset_at: MsText,
    pub plan: &'a str,
    /// When tokens were reserved: the id a usage record names to settle them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reservation_id: Option<&'a str>,
    /// The tokens reserved (with `reservationId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reserved_tokens: Option<u64>,
    /// The US dollars reserved of spend limits (with `reservationId`).
    #[serde(skip_serializing_if = "no_spend", serialize_with = "usd_of_micro")]
    #[schema(value_type = Option<f64>)]
    pub(crate) reserved_usd: Option<u64>,
}

fn no_spend(micro: &Option<u64>) -> bool {
    micro.is_none_or(|m| m == 0)
}

/// Micro-dollars as US dollars (a JSON number).
fn usd_of_micro<S: serde::Serializer>(micro: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(micro.unwrap_or(0) as f64 / 1e6)
}

impl crate::http::wire::json::WriteJson for AuthorizeResponse<'_> {
    fn write_json<const N: usize>(&self, w: &mut StackText<N>) -> fmt::Result {
        w.bytes(br#"{"allowed":"#)?;
        w.json_bool(self.allowed)?;
        let state = (self.limit, self.used, self.remaining, &self.reset_at);
        write_quota_state(w, state, self.plan)?;
        if let (Some(id), Some(n)) = (self.reservation_id, self.reserved_tokens) {
            w.bytes(br#","reservationId":"#)?;
            w.json_str(id)?;
            w.bytes(br#","reservedTokens":"#)?;
            w.num(n)?;
        }
        if let Some(micro) = self.reserved_usd.filter(|&m| m > 0) {
            w.bytes(br#","reservedUsd":"#)?;
            w.num(micro / 1_000_000)?;
            w.bytes(b".")?;
            let frac = micro % 1_000_000;
            let mut digits = [b'0'; 6];
            let mut f = frac;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (f % 10) as u8;
                f /= 10;
            }
            w.bytes(&digits)?;
        }
        w.bytes(b"}")
    }
}

/// `,"limit":..,"used":..,"remaining":..,"resetAt":..,"plan":..`, the
/// fields the authorize and check answers share, in their order.
fn write_quota_state<const N: usize>(
    w: &mut StackText<N>,
    (limit, used, remaining, reset_at): (Option<u64>, u64, Option<u64>, &MsText),
    plan: &str,
) -> fmt::Result {
    w.bytes(br#","limit":"#)?;
    w.json_opt_num(limit)?;
    w.bytes(br#","used":"#)?;
    w.num(used)?;
    w.bytes(br#","remaining":"#)?;
    w.json_opt_num(remaining)?;
    w.bytes(br#","resetAt":"#)?;
    w.json_str(reset_at.as_str())?;
    w.bytes(br#","plan":"#)?;
    w.json_str(plan)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse<'a> {
    /// The seed's name for `allowed`, kept for its clients.
    pub(crate) is_allowed: bool,
    /// As `POST /api/v1/authorize` names it.
    pub allowed: bool,
    pub limit: Option<u64>,
    pub used: u64,
    pub remaining: Option<u64>,
    #[schema(value_type = String)]
    pub(crate) reset_at: MsText,
    pub plan: &'a str,
    /// Why not, when `isAllowed` is false (the code a 429 would carry).
    pub reason: Option<&'static str>,
}

impl crate::http::wire::json::WriteJson for CheckResponse<'_> {
    fn write_json<const N: usize>(&self, w: &mut StackText<N>) -> fmt::Result {
        w.bytes(br#"{"isAllowed":"#)?;
        w.json_bool(self.is_allowed)?;
        w.bytes(br#","allowed":"#)?;
        w.json_bool(self.allowed)?;
        let state = (self.limit, self.used, self.remaining, &self.reset_at);
        write_quota_state(w, state, self.plan)?;
        w.bytes(br#","reason":"#)?;
        match self.reason {
            Some(r) => w.json_str(r)?,
            None => w.bytes(b"null")?,
        }
        w.bytes(b"}")
    }
}

/// A string field of a request body, borrowed from the body when it has
/// no escapes (serde's own `Cow` always copies inside an `Option`): the
/// fields only checked (`timestamp`, `method`, `clientIp`, ...) cost no
/// allocation, the kept ones one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }

    /// As a record keeps it: up to 24 bytes inline, with no allocation.
    pub(crate) fn compact(self) -> CompactString {
        match self.0 {
            Cow::Borrowed(s) => CompactString::new(s),
            Cow::Owned(s) => CompactString::from(s),
        }
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(Cow::Owned(s))
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One usage record as a client reports it (`POST /api/v1/usage`),
/// borrowing its strings from the body where it can.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageInput<'a> {
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub timestamp: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub method: Option<Text<'a>>,
    pub(crate) status_code: Option<u64>,
    pub(crate) response_time: Option<f64>,
    /// The whole prompt, cached and cache-written tokens included (for
    /// Anthropic: `input_tokens + cache_read_input_tokens +
    /// cache_creation_input_tokens`).
    pub prompt_tokens: Option<u64>,
    /// The whole completion, reasoning tokens included.
    pub completion_tokens: Option<u64>,
    pub tokens_used: Option<u64>,
    /// Of `promptTokens`, those read from the provider's cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's
    /// `cache_read_input_tokens`).
    pub(crate) cached_prompt_tokens: Option<u64>,
    /// Of `promptTokens`, those written to the cache (Anthropic's
    /// `cache_creation_input_tokens`).
    pub(crate) cache_write_tokens: Option<u64>,
    /// How long the cache writes are kept: `5m` (the default) or `1h`.
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub(crate) cache_write_ttl: Option<Text<'a>>,
    /// Of `cacheWriteTokens`, those kept for an hour, when a record mixes
    /// both tiers (instead of `cacheWriteTtl`).
    pub(crate) cache_write1h_tokens: Option<u64>,
    /// Of `completionTokens`, those spent reasoning (OpenAI's
    /// `completion_tokens_details.reasoning_tokens`).
    pub(crate) reasoning_tokens: Option<u64>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub model: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub user_id: Option<Text<'a>>,
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub bot_id: Option<Text<'a>>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub calls: Option<u64>,
    /// Accepted and ignored: cost is always computed from the price table.
    pub cost_usd: Option<f64>,
    /// The API version the request used (1-64 bytes); by default the
    /// endpoint's first path segment when it looks like one (`v1`, `2024-06-01`).
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub(crate) api_version: Option<Text<'a>>,
    /// ISO 3166-1 alpha-2 country of the caller.
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub country: Option<Text<'a>>,
    /// 0 for a first attempt; above 0 for a retry.
    pub(crate) retry_attempt: Option<u64>,
    /// The `reservationId` of the authorize this record reports on: its
    /// tokens replace the tokens reserved (send `calls: 0`).
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub(crate) reservation_id: Option<Text<'a>>,
    /// The caller's address, to find its country in `[geoip] mmdb` when
    /// `country` is not given; looked up, never stored.
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub(crate) client_ip: Option<Text<'a>>,
    /// The record's own id (1-255 bytes, no control characters): a record
    /// whose id the tenant sent within 35 days is not counted again, and
    /// is counted in the answer's `duplicates`.
    #[serde(borrow)]
    #[schema(value_type = Option<String>)]
    pub(crate) id: Option<Text<'a>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    pub used: u64,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Percent of the limit used, two decimals; null when unlimited.
    pub percent: Option<f64>,
}

impl Meter {
    pub fn new(used: u64, limit: Option<u64>) -> Meter {
        Meter {
            used,
            limit,
            remaining: limit.map(|l| l.saturating_sub(used)),
            percent: limit.map(|l| {
                if l == 0 {
                    100.0
                } else {
                    (used as f64 * 10_000.0 / l as f64).round() / 100.0
                }
            }),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct PeriodView {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BillingUsage {
    pub period: PeriodView,
    pub plan: PlanBody,
    pub calls: Meter,
    pub tokens: Meter,
    pub(crate) reset_at: String,
    /// Every limit (SPEC §12) with its use now: the plan's own fields,
    /// the tenant's limits, and each tracked key, end user, bot and model
    /// against its own (those nearest their limit first, at most 100).
    pub(crate) limits: Vec<LimitStanding>,
}

/// One limit's use now, as `GET /api/billing/usage` lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LimitStanding {
    pub name: String,
    pub scope: &'static str,
    pub measure: &'static str,
    pub window: &'static str,
    /// The key id, end user, bot or model it counts (absent for the tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// In the measure's unit (US dollars for `spendUsd`).
    pub used: f64,
    pub amount: f64,
    pub remaining: f64,
    pub reset_at: Option<String>,
}

/// The most subjects `GET /api/billing/usage` lists.
const MAX_STANDING: usize = 100;

impl LimitStanding {
    /// `view` of `subject` at `now_ms`.
    pub(crate) fn of(subject: &str, v: &crate::quota::scoped::View, now_ms: i64) -> LimitStanding {
        let unit = |n: u64| match v.measure {
            crate::model::Measure::SpendUsd => n as f64 / 1e6,
            _ => n as f64,
        };
        LimitStanding {
            name: v.name.to_string(),
            scope: v.scope.as_str(),
            measure: v.measure.as_str(),
            window: v.window.as_str(),
            subject: (!subject.is_empty()).then(|| subject.to_string()),
            used: unit(v.used),
            amount: unit(v.amount),
            remaining: unit(v.remaining()),
            reset_at: (v.window != crate::model::Window::None)
                .then(|| fmt_ms(crate::clock::ms_to_utc(now_ms.saturating_add(v.reset_ms)))),
        }
    }

    /// The tenant's scoped limits as they stand (`Scoped::standing`, or
    /// the fleet's figures of them): the tenant's own first, then the
    /// subjects nearest their limit, [`MAX_STANDING`] at most.
    pub(crate) fn all(mut all: Standing, now_ms: i64) -> Vec<LimitStanding> {
        LimitStanding::nearest(&mut all);
        all.iter()
            .map(|(subject, v)| LimitStanding::of(subject, v, now_ms))
            .collect()
    }

    /// Sorts `all` as [`all`](Self::all) shows it and keeps what it shows.
    pub(crate) fn nearest(all: &mut Standing) {
        let share = |v: &crate::quota::scoped::View| v.used as f64 / v.amount.max(1) as f64;
        all.sort_by(|(a_subject, a), (b_subject, b)| {
            (!a_subject.is_empty())
                .cmp(&!b_subject.is_empty())
                .then(share(b).total_cmp(&share(a)))
        });
        all.truncate(MAX_STANDING);
    }
}

/// Subjects and the views of their limits.
pub(crate) type Standing = Vec<(crate::model::CompactString, crate::quota::scoped::View)>;

/// The plan's own fields as limits with their use.
fn built_in_standing(plan: &Plan, d: &Decision) -> Vec<LimitStanding> {
    let reset = fmt_ms(d.period.end());
    let month = |name: &str, measure: &'static str, used: u64, limit: Option<u64>| {
        limit.map(|l| LimitStanding {
            name: name.into(),
            scope: "tenant",
            measure,
            window: "month",
            subject: None,
            used: used as f64,
            amount: l as f64,
            remaining: l.saturating_sub(used) as f64,
            reset_at: Some(reset.clone()),
        })
    };
    let cap = plan.rate_limit.map_or(0, |r| r.burst);
    let burst = d.burst.map(|b| LimitStanding {
        name: "burst".into(),
        scope: "tenant",
        measure: "calls",
        window: "burst",
        subject: None,
        used: cap.saturating_sub(b.remaining) as f64,
        amount: cap as f64,
        remaining: b.remaining as f64,
        reset_at: Some(fmt_ms(crate::clock::nanos_to_utc(crate::clock::Nanos(
            d.now.0.saturating_add(b.reset_ns as i64),
        )))),
    });
    [
        month("month", "calls", d.calls_used, plan.monthly_calls),
        month("tokens", "tokens", d.tokens_used, plan.monthly_tokens),
        burst,
    ]
    .into_iter()
    .flatten()
    .collect()
}

impl BillingUsage {
    pub(crate) fn new(plan: Plan, d: &Decision) -> BillingUsage {
        BillingUsage {
            period: PeriodView {
                start: fmt_ms(d.period.start()),
                end: fmt_ms(d.period.end()),
            },
            calls: Meter::new(d.calls_used, plan.monthly_calls),
            tokens: Meter::new(d.tokens_used, plan.monthly_tokens),
            limits: built_in_standing(&plan, d),
            plan: PlanBody::from(&plan),
            reset_at: fmt_ms(d.period.end()),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionView {
    pub tenant_id: String,
    pub(crate) tenant_name: String,
    /// When the tenant was created (the dashboard offers earlier months
    /// from then on).
    pub(crate) tenant_created_at: String,
    pub plan: PlanBody,
    pub status: StatusBody,
    pub(crate) current_period_start: String,
    pub(crate) current_period_end: String,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ChatRequest {
    pub message: Option<String>,
    pub bot_id: Option<String>,
    pub user_id: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChatResponse {
    pub reply: String,
    pub model: String,
    pub usage: ChatUsage,
    pub cost_usd: crate::http::wire::money::Money,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateTenant {
    pub id: Option<String>,
    pub name: Option<String>,
    pub plan_id: Option<String>,
    pub status: Option<StatusBody>,
    /// The tenant's own limits (SPEC §12).
    #[serde(default)]
    pub limits: Vec<super::catalog::LimitBody>,
    /// 1 to 28: the day its billing month starts.
    pub billing_day: Option<u8>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateKey {
    pub name: Option<String>,
    /// RFC 3339; from then on the key is refused `key_expired`. Omitted: never.
    pub expires_at: Option<String>,
    /// The key's own limits (scope `key`, SPEC §12).
    #[serde(default)]
    pub limits: Vec<super::catalog::LimitBody>,
}

/// `PATCH /api/admin/tenants/{id}/keys/{keyId}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PatchKey {
    /// RFC 3339, or null to lift the expiry; omitted: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    /// The key's own limits, replacing them all; omitted: unchanged.
    pub limits: Option<Vec<super::catalog::LimitBody>>,
}

/// `POST /api/admin/tenants/{id}/keys/{keyId}/rotate`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RotateKey {
    /// How long the old secret keeps working, 0 to 2,592,000 (30 days);
    /// default 3,600.
    pub overlap_seconds: Option<u64>,
}

/// A field that is there - `null` included - as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedKey {
    pub id: String,
    /// The secret: shown this once.
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// After a rotation: until when the old secret still works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_works_until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ListOf<T> {
    pub data: Vec<T>,
}

// ---- field bounds (SPEC §5) ----------------------------------------------------

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("{field} must be at most {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

pub(crate) fn check_count(field: &str, value: u64) -> Result<u64, String> {
    if value > MAX_SAFE {
        return Err(format!("{field} must be at most 2^53"));
    }
    Ok(value)
}

fn metadata(map: serde_json::Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    if map.len() > 16 {
        return Err("metadata may hold at most 16 entries".into());
    }
    map.into_iter()
        .map(|(k, v)| {
            check_text("a metadata key", &k, 64)?;
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("metadata.{k} must be a string, number or boolean")),
            };
            check_text(&format!("metadata.{k}"), &v, 256)?;
            Ok((k, v))
        })
        .collect()
}

/// Turns a reported record into a stored one (without its cost), checking
/// every bound. `now` bounds the timestamp: at most 7 days old, 5 minutes ahead.
pub fn usage_record(input: UsageInput<'_>, now: DateTime<Utc>) -> Result<UsageRecord, String> {
    let ts = match input.timestamp.as_deref() {
        None => now,
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    "timestamp must be RFC 3339, e.g. 2026-11-28T12:00:00.000Z".to_string()
                })?
                .with_timezone(&Utc);
            if t < now - Duration::days(7) {
                return Err("timestamp must be at most 7 days old".into());
            }
            if t > now + Duration::minutes(5) {
                return Err("timestamp must be at most 5 minutes ahead".into());
            }
            t
        }
    };
    let endpoint = input.endpoint.ok_or("endpoint is required")?.compact();
    if endpoint.is_empty() {
        return Err("endpoint must not be empty".into());
    }
    check_text("endpoint", &endpoint, 256)?;
    let method = check_method(input.method.as_deref().unwrap_or("POST"))?;
    let status = input.status_code.unwrap_or(200);
    if !(100..=599).contains(&status) {
        return Err("statusCode must be 100 to 599".into());
    }
    let response_ms = input.response_time.unwrap_or(0.0);
    if !response_ms.is_finite() || !(0.0..=MAX_RESPONSE_MS).contains(&response_ms) {
        return Err(
            "responseTime must be a number of milliseconds from 0 to 86400000 (one day)".into(),
        );
    }
    let prompt = check_count("promptTokens", input.prompt_tokens.unwrap_or(0))?;
    let completion = check_count("completionTokens", input.completion_tokens.unwrap_or(0))?;
    let split = prompt + completion;
    let tokens = match input.tokens_used {
        Some(t) => {
            let t = check_count("tokensUsed", t)?;
            if t < split {
                return Err("tokensUsed must be at least promptTokens + completionTokens".into());
            }
            t
        }
        None => split,
    };
    let kinds = token_kinds(
        [
            input.cached_prompt_tokens,
            input.cache_write_tokens,
            input.reasoning_tokens,
            input.cache_write1h_tokens,
        ],
        input.cache_write_ttl.as_deref(),
        prompt,
        completion,
    )?;
    let calls = check_count("calls", input.calls.unwrap_or(1))?;
    let model = input.model.unwrap_or_default().compact();
    check_text("model", &model, 128)?;
    let user_id = input.user_id.unwrap_or_default().compact();
    check_text("userId", &user_id, 128)?;
    let bot_id = input.bot_id.unwrap_or_default().compact();
    check_text("botId", &bot_id, 128)?;
    if let Some(c) = input.cost_usd {
        if !c.is_finite() {
            return Err("costUsd must be a finite number".into());
        }
    }
    let api_version = opt_version(input.api_version.map(Text::compact))?;
    let country = opt_country(input.country.as_deref())?;
    opt_ip(input.client_ip.as_deref())?;
    Ok(UsageRecord {
        ts_ms: ts.timestamp_millis(),
        key_id: CompactString::default(),
        endpoint,
        method,
        status: status as u16,
        response_ms,
        // A total without a split is priced as prompt tokens.
        prompt_tokens: if split == 0 { tokens } else { prompt },
        completion_tokens: completion,
        tokens,
        model,
        calls,
        cost_usd: 0.0,
        rejected: false,
        retried: input.retry_attempt.unwrap_or(0) > 0,
        extra: RecordExtra {
            user_id,
            bot_id,
            metadata: metadata(input.metadata.unwrap_or_default())?,
            api_version,
            country,
            integration: CompactString::default(),
            kinds,
            cost_split: CostSplit::NONE,
        }
        .boxed(),
    })
}

/// A record's token kinds, each checked against the figure it is part of.
fn token_kinds(
    [cached, writes, reasoning, writes_1h]: [Option<u64>; 4],
    ttl: Option<&str>,
    prompt: u64,
    completion: u64,
) -> Result<TokenKinds, String> {
    let count = |name: &'static str, v: Option<u64>| check_count(name, v.unwrap_or(0));
    let cached_prompt = count("cachedPromptTokens", cached)?;
    let cache_write = count("cacheWriteTokens", writes)?;
    let reasoning = count("reasoningTokens", reasoning)?;
    if cached_prompt + cache_write > prompt {
        return Err(
            "cachedPromptTokens + cacheWriteTokens must be at most promptTokens (the whole prompt)"
                .into(),
        );
    }
    if reasoning > completion {
        return Err("reasoningTokens must be at most completionTokens (reasoning is part of the completion)".into());
    }
    let cache_write_1h = match (ttl, writes_1h) {
        (Some(_), Some(_)) => {
            return Err("give cacheWriteTtl or cacheWrite1hTokens, not both".into());
        }
        (None | Some("5m"), None) => 0,
        (Some("1h"), None) => cache_write,
        (Some(_), None) => return Err("cacheWriteTtl must be \"5m\" or \"1h\"".into()),
        (None, Some(n)) => {
            let n = check_count("cacheWrite1hTokens", n)?;
            if n > cache_write {
                return Err("cacheWrite1hTokens must be at most cacheWriteTokens".into());
            }
            n
        }
    };
    Ok(TokenKinds {
        cached_prompt,
        cache_write,
        cache_write_1h,
        reasoning,
    })
}

/// `POST /api/v1/usage`'s answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// Records taken (a repeat of a batch: the records its first sending took).
    pub accepted: u64,
    /// Always 0: a batch is taken whole or refused whole.
    pub dropped: u64,
    /// Records left out because their id (or their place in a batch with
    /// the same `Idempotency-Key`) was seen before: counted once.
    pub duplicates: u64,
}

/// One usage record, or an array of them (documentation only).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub(crate) enum UsageBody<'a> {
    One(#[serde(borrow)] Box<UsageInput<'a>>),
    Many(#[serde(borrow)] Vec<UsageInput<'a>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn input(f: impl FnOnce(&mut UsageInput<'static>)) -> Result<UsageRecord, String> {
        let mut i = UsageInput {
            endpoint: Some("/api/chat".into()),
            ..Default::default()
        };
        f(&mut i);
        usage_record(i, now())
    }

    #[test]
    fn defaults_and_totals() {
        let r = input(|i| {
            i.prompt_tokens = Some(10);
            i.completion_tokens = Some(5);
        })
        .unwrap();
        assert_eq!(
            (r.tokens, r.calls, r.status, r.method.as_str()),
            (15, 1, 200, "POST")
        );
        assert_eq!(r.ts_ms, now().timestamp_millis());
        let r = input(|i| i.tokens_used = Some(40)).unwrap();
        assert_eq!((r.prompt_tokens, r.tokens), (40, 40));
    }

    #[test]
    fn bounds() {
        type Case = Box<dyn FnOnce(&mut UsageInput<'static>)>;
        let cases: Vec<Case> = vec![
            Box::new(|i| i.endpoint = None),
            Box::new(|i| i.endpoint = Some("x".repeat(257).into())),
            Box::new(|i| i.method = Some("GE T".into())),
            Box::new(|i| i.method = Some("X".repeat(17).into())),
            Box::new(|i| i.status_code = Some(99)),
            Box::new(|i| i.status_code = Some(600)),
            Box::new(|i| i.response_time = Some(-1.0)),
            Box::new(|i| i.response_time = Some(1e308)),
            Box::new(|i| i.response_time = Some(MAX_RESPONSE_MS + 1.0)),
            Box::new(|i| i.prompt_tokens = Some(MAX_SAFE + 1)),
            Box::new(|i| i.calls = Some(MAX_SAFE + 1)),
            Box::new(|i| i.model = Some("m".repeat(129).into())),
            Box::new(|i| i.user_id = Some("u".repeat(129).into())),
            Box::new(|i| i.timestamp = Some("yesterday".into())),
            Box::new(|i| i.timestamp = Some("2026-11-20T11:59:59Z".into())),
            Box::new(|i| i.timestamp = Some("2026-11-28T12:06:00Z".into())),
            Box::new(|i| {
                i.prompt_tokens = Some(5);
                i.tokens_used = Some(4);
            }),
            Box::new(|i| {
                let mut m = serde_json::Map::new();
                for k in 0..17 {
                    m.insert(format!("k{k}"), Value::from(1));
                }
                i.metadata = Some(m);
            }),
            Box::new(|i| {
                let mut m = serde_json::Map::new();
                m.insert("k".into(), Value::from("v".repeat(257)));
                i.metadata = Some(m);
            }),
            Box::new(|i| {
                let mut m = serde_json::Map::new();
                m.insert("k".into(), serde_json::json!({"nested": true}));
                i.metadata = Some(m);
            }),
            Box::new(|i| i.endpoint = Some("/a\r\nb".into())),
        ];
        for (n, case) in cases.into_iter().enumerate() {
            assert!(input(case).is_err(), "case {n} should fail");
        }
        assert!(input(|i| i.calls = Some(MAX_SAFE)).is_ok());
        assert!(input(|i| i.timestamp = Some("2026-11-21T12:00:01Z".into())).is_ok());
    }

    #[test]
    fn meter_percent() {
        let m = Meter::new(1, Some(3));
        assert_eq!((m.percent, m.remaining), (Some(33.33), Some(2)));
        assert_eq!(Meter::new(5, None).percent, None);
    }
}
