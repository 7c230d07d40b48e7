//! The JSON of the usage analytics: the domain values of
//! [`analytics`](crate::analytics) rendered for the API (rounded figures,
//! RFC 3339 times, camelCase names). Nothing here computes usage.

use serde::Serialize;

use crate::analytics::anomaly::Anomaly;
use crate::analytics::forecast::{Forecast, Recommendation};
use crate::analytics::insights::Insight;
use crate::analytics::query::{self, Range, Usage};
use crate::clock::{fmt_ms, ms_to_utc};
use crate::http::wire::money::Money;
use crate::rollup::{Agg, Cell, Grain, KindAgg, PartyAgg};

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn time(ms: i64) -> String {
    fmt_ms(ms_to_utc(ms))
}

/// The name of a bucket size, in the API.
pub(crate) fn grain_name(g: Grain) -> &'static str {
    match g {
        Grain::Minute => "minute",
        Grain::Hour => "hour",
        Grain::Day => "day",
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_requests: u64,
    pub(crate) successful_requests: u64,
    pub(crate) failed_requests: u64,
    pub(crate) rejected_requests: u64,
    /// Percent of requests that succeeded; null when there were none.
    pub(crate) success_rate: Option<f64>,
    pub total_tokens: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub(crate) avg_response_time_ms: Option<f64>,
    pub(crate) p50_response_time_ms: Option<f64>,
    pub(crate) p95_response_time_ms: Option<f64>,
    pub(crate) p99_response_time_ms: Option<f64>,
    pub(crate) estimated_cost_usd: Money,
    pub(crate) requests_per_minute: f64,
    /// The prompt and completion tokens by kind.
    pub(crate) tokens_by_kind: TokensByKind,
    /// The cost by kind.
    pub(crate) cost_by_kind: CostByKind,
    /// The share of the prompt tokens read from the provider's cache (0 to
    /// 1); null with no prompt tokens.
    pub(crate) cache_hit_rate: Option<f64>,
}

/// Prompt and completion tokens by kind: `uncachedPrompt + cachedPrompt +
/// cacheWrite` is `promptTokens`; `reasoning` is part of `completion`.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokensByKind {
    pub(crate) uncached_prompt: u64,
    pub(crate) cached_prompt: u64,
    pub(crate) cache_write: u64,
    /// Of `cacheWrite`, those kept for an hour.
    pub(crate) cache_write1h: u64,
    pub(crate) completion: u64,
    /// Of `completion`, those spent reasoning.
    pub(crate) reasoning: u64,
}

impl TokensByKind {
    fn of(prompt: u64, completion: u64, k: &KindAgg) -> TokensByKind {
        TokensByKind {
            uncached_prompt: prompt.saturating_sub(k.cached_prompt_tokens + k.cache_write_tokens),
            cached_prompt: k.cached_prompt_tokens,
            cache_write: k.cache_write_tokens,
            cache_write1h: k.cache_write_1h_tokens,
            completion,
            reasoning: k.reasoning_tokens,
        }
    }
}

/// The cost by kind, in USD: the first four add up to the cost, with
/// `unsplit` for records priced before Tollgate split costs by kind;
/// `reasoning` is part of `completion`.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CostByKind {
    pub(crate) uncached_prompt: Money,
    pub(crate) cached_prompt: Money,
    pub(crate) cache_write: Money,
    pub(crate) completion: Money,
    pub(crate) reasoning: Money,
    pub(crate) unsplit: Money,
}

impl CostByKind {
    fn of(total: f64, k: &KindAgg) -> CostByKind {
        let split =
            k.uncached_prompt_usd + k.cached_prompt_usd + k.cache_write_usd + k.completion_usd;
        let usd = |v: f64| Money(round(v, 6));
        CostByKind {
            uncached_prompt: usd(k.uncached_prompt_usd),
            cached_prompt: usd(k.cached_prompt_usd),
            cache_write: usd(k.cache_write_usd),
            completion: usd(k.completion_usd),
            reasoning: usd(k.reasoning_usd),
            unsplit: usd((total - split).max(0.0)),
        }
    }
}

/// The share of `prompt` tokens read from the cache.
fn hit_rate(prompt: u64, k: &KindAgg) -> Option<f64> {
    (prompt > 0).then(|| round(k.cached_prompt_tokens as f64 / prompt as f64, 4))
}

impl Summary {
    pub fn of(c: &Cell, range: Range) -> Summary {
        let t = &c.total;
        let n = t.requests;
        let minutes = ((range.to_ms - range.from_ms) as f64 / 60_000.0).max(1.0);
        Summary {
            total_requests: n,
            successful_requests: t.successful(),
            failed_requests: t.errors,
            rejected_requests: t.rejected,
            success_rate: (n > 0).then(|| round(t.successful() as f64 * 100.0 / n as f64, 2)),
            total_tokens: t.tokens,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            avg_response_time_ms: (n > 0).then(|| round(t.latency_sum_ms / n as f64, 2)),
            p50_response_time_ms: c.latency.percentile(50.0).map(|v| round(v, 2)),
            p95_response_time_ms: c.latency.percentile(95.0).map(|v| round(v, 2)),
            p99_response_time_ms: c.latency.percentile(99.0).map(|v| round(v, 2)),
            estimated_cost_usd: Money(round(t.cost_usd, 6)),
            requests_per_minute: round(n as f64 / minutes, 3),
            tokens_by_kind: TokensByKind::of(t.prompt_tokens, t.completion_tokens, &c.ext6.kinds),
            cost_by_kind: CostByKind::of(t.cost_usd, &c.ext6.kinds),
            cache_hit_rate: hit_rate(t.prompt_tokens, &c.ext6.kinds),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub t: String,
    pub requests: u64,
    pub errors: u64,
    pub tokens: u64,
    pub cost_usd: Money,
    pub(crate) avg_response_time_ms: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    pub endpoint: String,
    pub method: String,
    pub requests: u64,
    pub errors: u64,
    pub(crate) avg_response_time_ms: Option<f64>,
    pub(crate) p95_response_time_ms: Option<f64>,
    pub tokens: u64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct StatusRow {
    pub status: u16,
    pub count: u64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRow {
    pub model: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: Money,
    pub(crate) tokens_by_kind: TokensByKind,
    pub(crate) cost_by_kind: CostByKind,
    /// The share of this model's prompt tokens read from the cache.
    pub(crate) cache_hit_rate: Option<f64>,
    /// Whether the price table has a price for it: an unpriced model's
    /// tokens cost 0 until it has one.
    pub(crate) priced: bool,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartyRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<String>,
    /// A key's name (keys only; filled where the report is answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    pub requests: u64,
    pub tokens: u64,
    pub cost_usd: Money,
}

#[derive(Clone, Copy)]
enum Party {
    User,
    Bot,
    Tenant,
    Key,
}

fn party_rows(rows: &[(String, PartyAgg)], kind: Party) -> Vec<PartyRow> {
    rows.iter()
        .map(|(name, p)| PartyRow {
            user_id: matches!(kind, Party::User).then(|| name.clone()),
            bot_id: matches!(kind, Party::Bot).then(|| name.clone()),
            tenant_id: matches!(kind, Party::Tenant).then(|| name.clone()),
            key_id: matches!(kind, Party::Key).then(|| name.clone()),
            name: None,
            requests: p.requests,
            tokens: p.tokens,
            cost_usd: Money(round(p.cost_usd, 6)),
        })
        .collect()
}

/// One API version, country or integration: exactly one of the three
/// names is present.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakdownRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integration: Option<String>,
    pub requests: u64,
    pub errors: u64,
    pub tokens: u64,
    pub cost_usd: Money,
    /// Integrations only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p95_response_time_ms: Option<f64>,
}

#[derive(Clone, Copy)]
enum Dimension {
    Version,
    Country,
    Integration,
}

fn breakdown<'a>(
    rows: impl Iterator<Item = (&'a String, &'a Agg, Option<f64>)>,
    kind: Dimension,
) -> Vec<BreakdownRow> {
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
    rows.into_iter()
        .map(|(name, a, p95)| BreakdownRow {
            api_version: matches!(kind, Dimension::Version).then(|| name.clone()),
            country: matches!(kind, Dimension::Country).then(|| name.clone()),
            integration: matches!(kind, Dimension::Integration).then(|| name.clone()),
            requests: a.requests,
            errors: a.errors,
            tokens: a.tokens,
            cost_usd: Money(round(a.cost_usd, 6)),
            p95_response_time_ms: p95.map(|v| round(v, 2)),
        })
        .collect()
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub(crate) struct HourRow {
    pub hour: u32,
    pub requests: u64,
}

/// What the usage answers share, tenant or all-tenants.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub range: RangeView,
    pub summary: Summary,
    pub series: Vec<Point>,
    /// The range's cost by model, a stacked bar a day (an hour for ranges
    /// of two days or less).
    pub(crate) cost_by_model: CostByModelView,
    pub endpoints: Vec<EndpointRow>,
    pub(crate) status_codes: Vec<StatusRow>,
    pub models: Vec<ModelRow>,
    pub(crate) top_users: Vec<PartyRow>,
    pub(crate) top_bots: Vec<PartyRow>,
    /// By the API key that made the requests (its `keyId`, and `name`).
    pub(crate) top_keys: Vec<PartyRow>,
    pub(crate) peak_hours: Vec<HourRow>,
    /// By API version (given, or the endpoint's first path segment), by requests.
    pub(crate) api_versions: Vec<BreakdownRow>,
    /// By the caller's country (given, or looked up in `[geoip] mmdb`).
    pub countries: Vec<BreakdownRow>,
    /// By `[[proxy]]` name (gateway requests).
    pub integrations: Vec<BreakdownRow>,
}

/// The range's cost by model, bucket by bucket.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CostByModel)]
pub(crate) struct CostByModelView {
    /// `day`, or `hour` for ranges of two days or less.
    #[schema(example = "day")]
    bucket: &'static str,
    /// The five costliest models of the range, the costliest first; then
    /// `other` (the rest, and records naming no model) when it cost anything.
    models: Vec<String>,
    points: Vec<CostPointView>,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CostPoint)]
pub(crate) struct CostPointView {
    /// The bucket's start.
    t: String,
    /// The range covers only part of the bucket, or the bucket is still filling.
    partial: bool,
    cost_usd: Money,
    /// Each model's cost, in the order of `models`.
    by_model: Vec<Money>,
}

impl CostByModelView {
    fn of(c: &query::CostByModel) -> CostByModelView {
        CostByModelView {
            bucket: grain_name(c.bucket),
            models: c.models.clone(),
            points: c
                .points
                .iter()
                .map(|p| CostPointView {
                    t: time(p.t),
                    partial: p.partial,
                    cost_usd: Money(round(p.cost_usd, 6)),
                    by_model: p.by_model.iter().map(|v| Money(round(*v, 6))).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeView {
    pub from: String,
    pub to: String,
    pub bucket: &'static str,
}

impl RangeView {
    pub fn of(range: Range, bucket: Grain) -> RangeView {
        RangeView {
            from: time(range.from_ms),
            to: time(range.to_ms),
            bucket: grain_name(bucket),
        }
    }
}

impl Report {
    /// `u` as answered; `prices` says which models have a price.
    pub fn of(u: &Usage, prices: &crate::pricing::PriceTable) -> Report {
        let whole = &u.whole;
        Report {
            range: RangeView::of(u.range, u.bucket),
            summary: Summary::of(whole, u.range),
            series: u
                .series
                .iter()
                .map(|(t, agg)| Point {
                    t: time(*t),
                    requests: agg.as_ref().map_or(0, |c| c.requests),
                    errors: agg.as_ref().map_or(0, |c| c.errors),
                    tokens: agg.as_ref().map_or(0, |c| c.tokens),
                    cost_usd: Money(round(agg.as_ref().map_or(0.0, |c| c.cost_usd), 6)),
                    avg_response_time_ms: agg
                        .as_ref()
                        .filter(|c| c.requests > 0)
                        .map(|c| round(c.latency_sum_ms / c.requests as f64, 2)),
                })
                .collect(),
            cost_by_model: CostByModelView::of(&u.cost_by_model),
            endpoints: u
                .endpoints
                .iter()
                .map(|(endpoint, method, e)| EndpointRow {
                    endpoint: endpoint.clone(),
                    method: method.clone(),
                    requests: e.agg.requests,
                    errors: e.agg.errors,
                    avg_response_time_ms: (e.agg.requests > 0)
                        .then(|| round(e.agg.latency_sum_ms / e.agg.requests as f64, 2)),
                    p95_response_time_ms: e.latency.percentile(95.0).map(|v| round(v, 2)),
                    tokens: e.agg.tokens,
                })
                .collect(),
            status_codes: whole
                .statuses
                .iter()
                .map(|(s, c)| StatusRow {
                    status: *s,
                    count: *c,
                })
                .collect(),
            models: u
                .models
                .iter()
                .map(|(m, a)| {
                    let none = KindAgg::default();
                    let k = whole.ext6.model_kinds.get(m).unwrap_or(&none);
                    ModelRow {
                        model: m.clone(),
                        requests: a.requests,
                        prompt_tokens: a.prompt_tokens,
                        completion_tokens: a.completion_tokens,
                        cost_usd: Money(round(a.cost_usd, 6)),
                        tokens_by_kind: TokensByKind::of(a.prompt_tokens, a.completion_tokens, k),
                        cost_by_kind: CostByKind::of(a.cost_usd, k),
                        cache_hit_rate: hit_rate(a.prompt_tokens, k),
                        priced: m == crate::rollup::OTHER || prices.price(m).is_some(),
                    }
                })
                .collect(),
            top_users: party_rows(&u.top_users, Party::User),
            top_bots: party_rows(&u.top_bots, Party::Bot),
            top_keys: party_rows(&u.top_keys, Party::Key),
            peak_hours: (0..24u32)
                .map(|h| HourRow {
                    hour: h,
                    requests: whole.by_hour.get(h as usize).copied().unwrap_or(0),
                })
                .collect(),
            api_versions: breakdown(
                whole.ext.api_versions.iter().map(|(k, a)| (k, a, None)),
                Dimension::Version,
            ),
            countries: breakdown(
                whole.ext.countries.iter().map(|(k, a)| (k, a, None)),
                Dimension::Country,
            ),
            integrations: breakdown(
                whole
                    .ext
                    .integrations
                    .iter()
                    .map(|(k, e)| (k, &e.agg, e.latency.percentile(95.0))),
                Dimension::Integration,
            ),
        }
    }
}

/// Tenants ranked three ways, for the operators' view.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopTenants {
    pub(crate) by_requests: Vec<PartyRow>,
    pub(crate) by_tokens: Vec<PartyRow>,
    pub(crate) by_cost: Vec<PartyRow>,
}

impl From<&query::TopTenants> for TopTenants {
    fn from(t: &query::TopTenants) -> TopTenants {
        TopTenants {
            by_requests: party_rows(&t.by_requests, Party::Tenant),
            by_tokens: party_rows(&t.by_tokens, Party::Tenant),
            by_cost: party_rows(&t.by_cost, Party::Tenant),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Forecast)]
pub struct ForecastView {
    pub(crate) period_end: String,
    pub(crate) daily_calls: f64,
    pub(crate) daily_tokens: f64,
    pub(crate) daily_cost_usd: Money,
    pub(crate) projected_calls: u64,
    pub(crate) projected_tokens: u64,
    pub(crate) projected_cost_usd: Money,
    /// When the call quota runs out at this rate (already, or before the
    /// period ends); null if it will not.
    pub(crate) quota_exhausted_at: Option<String>,
    pub(crate) token_quota_exhausted_at: Option<String>,
    /// `seasonal`: each remaining hour as the same hour of the week went
    /// over the last weeks (trend included), once there is a week of
    /// history; `average`: the period's average rate so far.
    #[schema(example = "seasonal")]
    pub method: &'static str,
}

impl From<&Forecast> for ForecastView {
    fn from(f: &Forecast) -> ForecastView {
        ForecastView {
            period_end: time(f.period_end_ms),
            daily_calls: f.daily_calls,
            daily_tokens: f.daily_tokens,
            daily_cost_usd: Money(f.daily_cost_usd),
            projected_calls: f.projected_calls,
            projected_tokens: f.projected_tokens,
            projected_cost_usd: Money(f.projected_cost_usd),
            quota_exhausted_at: f.quota_exhausted_at_ms.map(time),
            token_quota_exhausted_at: f.token_quota_exhausted_at_ms.map(time),
            method: f.method.name(),
        }
    }
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Recommendation)]
pub struct RecommendationView {
    pub plan_id: String,
    pub(crate) plan_name: String,
    pub price_usd_monthly: Money,
    pub reason: String,
}

impl From<Recommendation> for RecommendationView {
    fn from(r: Recommendation) -> RecommendationView {
        RecommendationView {
            plan_id: r.plan_id,
            plan_name: r.plan_name,
            price_usd_monthly: Money(r.price_usd_monthly),
            reason: r.reason,
        }
    }
}

/// An unusual hour: `metric` is `requests`, `tokens`, `errorRate` (a
/// fraction of the requests Tollgate let through) or `p95LatencyMs`;
/// `expected` is the median of the same hour of the week over the previous
/// four weeks, `score` how many spreads (robust, MAD-based) away.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Anomaly)]
pub struct AnomalyView {
    /// The hour's start.
    pub t: String,
    #[schema(example = "requests")]
    pub metric: &'static str,
    pub observed: f64,
    pub expected: f64,
    pub score: f64,
    /// `up` or `down` (error rate and latency are only flagged up).
    #[schema(example = "up")]
    pub direction: &'static str,
}

impl From<&Anomaly> for AnomalyView {
    fn from(a: &Anomaly) -> AnomalyView {
        let (observed, expected, score) = a.rounded();
        AnomalyView {
            t: time(a.t_ms()),
            metric: a.metric.name(),
            observed,
            expected,
            score,
            direction: a.direction.name(),
        }
    }
}

/// Where the last 30 days say money could be saved: `kind` is
/// `cheaperModel` or `promptHeavy`; `detail` states the figures and the
/// assumptions behind the estimate.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Insight)]
pub struct InsightView {
    #[schema(example = "cheaperModel")]
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
    pub(crate) estimated_monthly_savings_usd: Money,
}

impl From<&Insight> for InsightView {
    fn from(i: &Insight) -> InsightView {
        InsightView {
            kind: i.kind,
            title: i.title.clone(),
            detail: i.detail.clone(),
            estimated_monthly_savings_usd: Money(round(i.estimated_monthly_savings_usd, 2)),
        }
    }
}
