//! The answers of `/api/billing/api-usage` and `/api/admin/api-usage`,
//! computed from rollup cells only.
//!
//! A range `[from, to)` is resolved to whole minutes and covered by the
//! fewest cells: day cells for whole UTC days, hour cells for whole hours,
//! minute cells for the rest (hour cells where minute cells are past their
//! retention).

use serde::Serialize;

use std::collections::BTreeMap;

use crate::clock::{fmt_ms, ms_to_utc};
use crate::rollup::{Cell, Grain, PartyAgg};
use crate::store::{Store, StoreError};
use crate::usage::retention::MINUTE_ROLLUP_DAYS;

/// The most series points one answer holds.
pub const MAX_POINTS: i64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

fn floor_to(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

fn ceil_to(ms: i64, step: i64) -> i64 {
    -floor_to(-ms, step)
}

impl Range {
    /// `[from, to)` resolved to whole minutes.
    pub fn minutes(from_ms: i64, to_ms: i64) -> Range {
        Range {
            from_ms: floor_to(from_ms, 60_000),
            to_ms: ceil_to(to_ms, 60_000),
        }
    }
}

/// Sums every record of `tenant` in `range` (minute-aligned) from the fewest cells.
pub fn aggregate(
    store: &dyn Store,
    tenant: &str,
    range: Range,
    now_ms: i64,
) -> Result<Cell, StoreError> {
    let mut out = Cell::default();
    if range.from_ms >= range.to_ms {
        return Ok(out);
    }
    let day = Grain::Day.ms();
    let (d0, d1) = (ceil_to(range.from_ms, day), floor_to(range.to_ms, day));
    let mut parts = Vec::new();
    if d0 < d1 {
        add_cells(&mut out, store, tenant, Grain::Day, d0, d1)?;
        parts.push((range.from_ms, d0));
        parts.push((d1, range.to_ms));
    } else {
        parts.push((range.from_ms, range.to_ms));
    }
    let minutes_kept_from = floor_to(now_ms, day) - MINUTE_ROLLUP_DAYS * day;
    let hour = Grain::Hour.ms();
    for (a, b) in parts {
        if a >= b {
            continue;
        }
        let (h0, h1) = (ceil_to(a, hour), floor_to(b, hour));
        let mut edges = Vec::new();
        if h0 < h1 {
            add_cells(&mut out, store, tenant, Grain::Hour, h0, h1)?;
            edges.push((a, h0));
            edges.push((h1, b));
        } else {
            edges.push((a, b));
        }
        for (x, y) in edges {
            if x >= y {
                continue;
            }
            if x >= minutes_kept_from {
                add_cells(&mut out, store, tenant, Grain::Minute, x, y)?;
            } else {
                add_cells(
                    &mut out,
                    store,
                    tenant,
                    Grain::Hour,
                    floor_to(x, hour),
                    ceil_to(y, hour),
                )?;
            }
        }
    }
    Ok(out)
}

fn add_cells(
    out: &mut Cell,
    store: &dyn Store,
    tenant: &str,
    grain: Grain,
    from_ms: i64,
    to_ms: i64,
) -> Result<(), StoreError> {
    let cells = store.rollups(tenant, grain, grain.bucket(from_ms), grain.bucket(to_ms))?;
    for (_, c) in &cells {
        out.merge(c);
    }
    Ok(())
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total_requests: u64,
    pub successful_requests: u64,
    pub failed_requests: u64,
    pub rejected_requests: u64,
    /// Percent of requests that succeeded; null when there were none.
    pub success_rate: Option<f64>,
    pub total_tokens: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub avg_response_time_ms: Option<f64>,
    pub p50_response_time_ms: Option<f64>,
    pub p95_response_time_ms: Option<f64>,
    pub p99_response_time_ms: Option<f64>,
    pub estimated_cost_usd: f64,
    pub requests_per_minute: f64,
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
            estimated_cost_usd: round(t.cost_usd, 6),
            requests_per_minute: round(n as f64 / minutes, 3),
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
    pub cost_usd: f64,
    pub avg_response_time_ms: Option<f64>,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    pub endpoint: String,
    pub method: String,
    pub requests: u64,
    pub errors: u64,
    pub avg_response_time_ms: Option<f64>,
    pub p95_response_time_ms: Option<f64>,
    pub tokens: u64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StatusRow {
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
    pub cost_usd: f64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartyRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub requests: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct HourRow {
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
    pub endpoints: Vec<EndpointRow>,
    pub status_codes: Vec<StatusRow>,
    pub models: Vec<ModelRow>,
    pub top_users: Vec<PartyRow>,
    pub top_bots: Vec<PartyRow>,
    pub peak_hours: Vec<HourRow>,
}

#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct RangeView {
    pub from: String,
    pub to: String,
    pub bucket: &'static str,
}

pub fn grain_name(g: Grain) -> &'static str {
    match g {
        Grain::Minute => "minute",
        Grain::Hour => "hour",
        Grain::Day => "day",
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Party {
    User,
    Bot,
    Tenant,
}

fn party_row(name: &str, p: &PartyAgg, kind: Party) -> PartyRow {
    PartyRow {
        user_id: matches!(kind, Party::User).then(|| name.to_string()),
        bot_id: matches!(kind, Party::Bot).then(|| name.to_string()),
        tenant_id: matches!(kind, Party::Tenant).then(|| name.to_string()),
        requests: p.requests,
        tokens: p.tokens,
        cost_usd: round(p.cost_usd, 6),
    }
}

/// The top `n` of `map` by `key` (descending, then by name).
fn ranked(
    map: &BTreeMap<String, PartyAgg>,
    n: usize,
    kind: Party,
    key: fn(&PartyAgg) -> f64,
) -> Vec<PartyRow> {
    let mut rows: Vec<(&String, &PartyAgg)> = map.iter().collect();
    rows.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(b.0)));
    rows.into_iter()
        .take(n)
        .map(|(name, p)| party_row(name, p, kind))
        .collect()
}

fn by_requests(p: &PartyAgg) -> f64 {
    p.requests as f64
}

/// The full report for `tenant` (or [`ALL_TENANTS`]) over `range`, series by `bucket`.
pub fn report(
    store: &dyn Store,
    tenant: &str,
    range: Range,
    bucket: Grain,
    top: usize,
    now_ms: i64,
) -> Result<(Report, Cell), StoreError> {
    let whole = aggregate(store, tenant, range, now_ms)?;
    let step = bucket.ms();
    let mut series = Vec::new();
    let mut t = floor_to(range.from_ms, step);
    // Whole buckets come from one read; partial ones at the edges are aggregated.
    let whole_cells: BTreeMap<i64, Cell> = store
        .rollups(
            tenant,
            bucket,
            bucket.bucket(ceil_to(range.from_ms, step)),
            bucket.bucket(floor_to(range.to_ms, step)),
        )?
        .into_iter()
        .collect();
    while t < range.to_ms {
        let piece = Range {
            from_ms: t.max(range.from_ms),
            to_ms: (t + step).min(range.to_ms),
        };
        let partial;
        let cell = if piece.from_ms == t && piece.to_ms == t + step {
            whole_cells.get(&bucket.bucket(t))
        } else {
            partial = aggregate(store, tenant, piece, now_ms)?;
            Some(&partial)
        };
        let c = cell.map(|c| &c.total);
        series.push(Point {
            t: fmt_ms(ms_to_utc(t)),
            requests: c.map_or(0, |c| c.requests),
            errors: c.map_or(0, |c| c.errors),
            tokens: c.map_or(0, |c| c.tokens),
            cost_usd: round(c.map_or(0.0, |c| c.cost_usd), 6),
            avg_response_time_ms: c
                .filter(|c| c.requests > 0)
                .map(|c| round(c.latency_sum_ms / c.requests as f64, 2)),
        });
        t += step;
    }
    let mut endpoints: Vec<EndpointRow> = whole
        .endpoints
        .iter()
        .flat_map(|(endpoint, methods)| {
            methods.iter().map(move |(method, e)| (endpoint, method, e))
        })
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
        .collect();
    endpoints.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then(a.endpoint.cmp(&b.endpoint))
            .then(a.method.cmp(&b.method))
    });
    endpoints.truncate(top);
    let mut models: Vec<ModelRow> = whole
        .models
        .iter()
        .map(|(m, a)| ModelRow {
            model: m.clone(),
            requests: a.requests,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            cost_usd: round(a.cost_usd, 6),
        })
        .collect();
    models.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.model.cmp(&b.model)));
    models.truncate(top);
    let peak_hours = (0..24u32)
        .map(|h| HourRow {
            hour: h,
            requests: whole.by_hour.get(h as usize).copied().unwrap_or(0),
        })
        .collect();
    let report = Report {
        range: RangeView {
            from: fmt_ms(ms_to_utc(range.from_ms)),
            to: fmt_ms(ms_to_utc(range.to_ms)),
            bucket: grain_name(bucket),
        },
        summary: Summary::of(&whole, range),
        series,
        endpoints,
        status_codes: whole
            .statuses
            .iter()
            .map(|(s, c)| StatusRow {
                status: *s,
                count: *c,
            })
            .collect(),
        models,
        top_users: ranked(&whole.users, top, Party::User, by_requests),
        top_bots: ranked(&whole.bots, top, Party::Bot, by_requests),
        peak_hours,
    };
    Ok((report, whole))
}

/// Tenants ranked three ways, for the operators' view.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopTenants {
    pub by_requests: Vec<PartyRow>,
    pub by_tokens: Vec<PartyRow>,
    pub by_cost: Vec<PartyRow>,
}

pub fn top_tenants(all: &Cell, n: usize) -> TopTenants {
    TopTenants {
        by_requests: ranked(&all.tenants, n, Party::Tenant, by_requests),
        by_tokens: ranked(&all.tenants, n, Party::Tenant, |p| p.tokens as f64),
        by_cost: ranked(&all.tenants, n, Party::Tenant, |p| p.cost_usd),
    }
}
