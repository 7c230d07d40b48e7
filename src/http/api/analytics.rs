//! Usage analytics routes: `/api/billing/api-usage` (a tenant's own),
//! `/api/admin/tenants/{id}/api-usage`, `/api/admin/api-usage` (all tenants).
//! Store reads run on the blocking pool, never on a worker's event loop.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::report::{
    grain_name, AnomalyView, ForecastView, InsightView, RecommendationView, Report, TopTenants,
};
use crate::analytics::anomaly::{detect, HISTORY_HOURS};
use crate::analytics::forecast::{forecast, recommend, SoFar};
use crate::analytics::hours::{Hours, HOUR_MS};
use crate::analytics::insights::{insights, WINDOW_DAYS};
use crate::analytics::query::{top_tenants, usage, Range, MAX_POINTS};
use crate::analytics::rhythm::Rhythm;
use crate::http::wire::error::{blocking, ApiError};
use crate::http::wire::extract::{Admin, TenantAuth};
use crate::http::AppState;
use crate::quota::period::Period;
use crate::quota::TenantState;
use crate::rollup::{Grain, Owner};
use crate::store::Store;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub bucket: Option<String>,
    pub limit: Option<String>,
    /// One tenant's report only: the usage of this API key alone (its
    /// `report`; the forecast, anomalies and insights stay the tenant's).
    #[serde(rename = "keyId")]
    #[param(rename = "keyId")]
    pub key_id: Option<String>,
}

/// Query parameters, or a JSON 422 naming what is wrong in our words
/// (not the framework's "Query deserialize error").
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| {
            let said = match e {
                actix_web::error::QueryPayloadError::Deserialize(inner) => inner.to_string(),
                other => other.to_string(),
            };
            ApiError::invalid(format!(
                "query string: {}",
                said.replace("unknown field", "unknown parameter")
                    .replace("missing field", "missing parameter")
            ))
        })
}

pub(crate) fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(format!(
                "{field} must be RFC 3339, e.g. 2026-11-01T00:00:00Z"
            ))
        })
}

/// The resolved request: range, series bucket, top-N size.
pub(crate) struct Resolved {
    pub range: Range,
    pub bucket: Grain,
    pub top: usize,
}

pub(crate) fn resolve(p: &UsageParams, now_ms: i64) -> Result<Resolved, ApiError> {
    const DAY: i64 = 86_400_000;
    let kind = p
        .range
        .as_deref()
        .unwrap_or(if p.from.is_some() || p.to.is_some() {
            "custom"
        } else {
            "month"
        });
    let (from, to) = match kind {
        "day" => (now_ms - DAY, now_ms),
        "week" => (now_ms - 7 * DAY, now_ms),
        "month" => (
            Period::containing_secs(now_ms.div_euclid(1000)).start_secs() * 1000,
            now_ms,
        ),
        "custom" => {
            let from = p
                .from
                .as_deref()
                .ok_or_else(|| ApiError::invalid("range=custom needs from"))?;
            let to =
                p.to.as_deref()
                    .map_or(Ok(now_ms), |t| parse_time("to", t))?;
            (parse_time("from", from)?, to)
        }
        other => {
            return Err(ApiError::invalid(format!(
                "range must be day, week, month or custom, not {other:?}"
            )))
        }
    };
    if kind != "custom" && (p.from.is_some() || p.to.is_some()) {
        return Err(ApiError::invalid("from and to go with range=custom"));
    }
    if from >= to {
        return Err(ApiError::invalid("from must be before to"));
    }
    if to - from > 400 * DAY {
        return Err(ApiError::invalid("a range spans at most 400 days"));
    }
    let range = Range::minutes(from, to);
    let span = range.to_ms - range.from_ms;
    let bucket = match p.bucket.as_deref() {
        None if span <= 8 * DAY => Grain::Hour,
        None => Grain::Day,
        Some("minute") => Grain::Minute,
        Some("hour") => Grain::Hour,
        Some("day") => Grain::Day,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "bucket must be minute, hour or day, not {other:?}"
            )))
        }
    };
    if span / bucket.ms() > MAX_POINTS {
        return Err(ApiError::invalid(format!(
            "that range has more than {MAX_POINTS} {} buckets; choose a larger bucket",
            grain_name(bucket)
        )));
    }
    let top = match p.limit.as_deref() {
        None => 10,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("limit must be 1 to 100"))?,
    };
    Ok(Resolved { range, bucket, top })
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub tenant_id: String,
    #[serde(flatten)]
    pub report: Report,
    pub forecast: ForecastView,
    pub recommendation: Option<RecommendationView>,
    /// Unusual hours in the range (its last 31 days at most), by hour.
    pub anomalies: Vec<AnomalyView>,
    /// Where the last 30 days say money could be saved, the most first.
    pub insights: Vec<InsightView>,
}

/// The insights of `owner`'s last [`WINDOW_DAYS`] days.
fn insight_views(
    store: &dyn Store,
    owner: &Owner,
    prices: &crate::pricing::PriceTable,
    now_ms: i64,
) -> Result<Vec<InsightView>, crate::store::StoreError> {
    let from = now_ms - WINDOW_DAYS * 86_400_000;
    let window =
        crate::analytics::query::aggregate(store, owner, Range::minutes(from, now_ms), now_ms)?;
    Ok(insights(&window, prices)
        .iter()
        .map(InsightView::from)
        .collect())
}

/// The most days of a range the anomalies are looked for in.
pub(crate) const ANOMALY_DAYS: i64 = 31;

/// The hours an answer about `range` reads: the range's complete hours
/// (its last [`ANOMALY_DAYS`]) judged against the weeks before them, and
/// the weeks before now the forecast learns from.
pub struct HourWindow {
    /// Hours since the epoch: judged `[from, to)`, read from `read_from`.
    pub(crate) read_from: i64,
    pub from: i64,
    pub to: i64,
    pub now: i64,
}

impl HourWindow {
    pub fn of(range: Range, now_ms: i64) -> HourWindow {
        let now = now_ms.div_euclid(HOUR_MS);
        // Only complete hours are judged: the one still filling is not yet low.
        let to = range.to_ms.div_euclid(HOUR_MS).min(now);
        let from = (range.from_ms + HOUR_MS - 1)
            .div_euclid(HOUR_MS)
            .max(to - ANOMALY_DAYS * 24);
        HourWindow {
            read_from: (from - HISTORY_HOURS).min(now - HISTORY_HOURS),
            from,
            to,
            now,
        }
    }

    pub fn read(
        &self,
        store: &dyn Store,
        owner: &Owner,
    ) -> Result<Hours, crate::store::StoreError> {
        Hours::read(store, owner, self.read_from, self.to.max(self.now))
    }

    pub fn anomalies(&self, hours: &Hours) -> Vec<AnomalyView> {
        detect(hours, self.from, self.to)
            .iter()
            .map(AnomalyView::from)
            .collect()
    }
}

async fn tenant_report(
    st: &AppState,
    tenant: Arc<TenantState>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: UsageParams = query(req)?;
    let now_ns = st.metering.clock.now_nanos();
    let now_ms = now_ns.millis().0;
    let r = resolve(&params, now_ms)?;
    let plan = tenant.plan().plan.clone();
    let plans = st.metering.registry.plans();
    let snapshot = tenant.snapshot(now_ns);
    let store = st.metering.registry.store().clone();
    let prices = st.metering.prices.clone();
    let id = tenant.id.to_string();
    let key_id = params.key_id.clone();
    if let Some(k) = &key_id {
        crate::http::api::types::check_text("keyId", k, 64).map_err(ApiError::invalid)?;
    }
    let body = blocking(move || -> Result<TenantReport, ApiError> {
        let owner = Owner::tenant(&id);
        let used = match &key_id {
            None => usage(store.as_ref(), &owner, r.range, r.bucket, r.top, now_ms)?,
            Some(k) => {
                use crate::analytics::key_cells::{KeyCells, KeyCellsError, MAX_RECORDS};
                let cells = KeyCells::read(store.as_ref(), &id, k, r.range, r.bucket).map_err(
                    |e| match e {
                        KeyCellsError::Store(e) => ApiError::from(e),
                        KeyCellsError::TooMany => ApiError::invalid(format!(
                            "keyId: this key has more than {MAX_RECORDS} records in the range; narrow the range"
                        )),
                    },
                )?;
                usage(&cells, &owner, r.range, r.bucket, r.top, now_ms)?
            }
        };
        let period = snapshot.period;
        let period_range = Range::minutes(period.start_secs() * 1000, now_ms);
        let period_cost = if period_range == r.range {
            used.whole.total.cost_usd
        } else {
            crate::analytics::query::aggregate(store.as_ref(), &owner, period_range, now_ms)?
                .total
                .cost_usd
        };
        let window = HourWindow::of(r.range, now_ms);
        let hours = window.read(store.as_ref(), &owner)?;
        let rhythm = Rhythm::learn(&hours, window.now);
        let f = forecast(
            &plan,
            period,
            now_ms,
            SoFar {
                calls: snapshot.calls_used,
                tokens: snapshot.tokens_used,
                cost_usd: period_cost,
            },
            rhythm.as_ref(),
        );
        let recommendation = recommend(&plan, &plans, &f).map(RecommendationView::from);
        let mut report = Report::of(&used, &prices);
        // Each key by its name as well (the store has the names).
        if !report.top_keys.is_empty() {
            let names: std::collections::HashMap<String, String> = store
                .keys_of(&id)?
                .into_iter()
                .map(|k| (k.key.id, k.key.name))
                .collect();
            for row in &mut report.top_keys {
                row.name = row.key_id.as_ref().and_then(|k| names.get(k)).cloned();
            }
        }
        Ok(TenantReport {
            tenant_id: id,
            report,
            forecast: ForecastView::from(&f),
            recommendation,
            anomalies: window.anomalies(&hours),
            insights: insight_views(store.as_ref(), &owner, &prices, now_ms)?,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/billing/api-usage`.
#[utoipa::path(
    get, path = "/api/billing/api-usage", tag = "analytics", security(("tenantKey" = []), ("tenantKeyHeader" = [])), params(UsageParams),
    responses((status = 200, description = "usage analytics of the caller's tenant", body = TenantReport), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody), (status = 422, description = "bad range", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn billing_api_usage(
    st: web::Data<AppState>,
    auth: TenantAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // A tenant's reports compute a few at a time (`[limits]
    // reports_per_tenant`): one key cannot fill the blocking pool.
    let _slot = st.reports.take(&auth.tenant().id)?;
    tenant_report(&st, auth.tenant().clone(), &req).await
}

/// The tenant an admin route names, or a 404.
pub(crate) fn tenant_named(st: &AppState, id: &str) -> Result<Arc<TenantState>, ApiError> {
    st.metering
        .registry
        .tenant_state(id)
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))
}

/// `GET /api/admin/tenants/{id}/api-usage`.
#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/api-usage", tag = "analytics", security(("adminToken" = [])), params(("id" = String, Path, description = "tenant id"), UsageParams),
    responses((status = 200, body = TenantReport), (status = 401, description = "no or wrong admin token", body = crate::http::wire::error::ErrorBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn admin_tenant_api_usage(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    tenant_report(&st, tenant_named(&st, &id)?, &req).await
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AllTenantsReport {
    pub tenants: usize,
    #[serde(flatten)]
    pub report: Report,
    pub(crate) top_tenants: TopTenants,
    /// Unusual hours of every tenant together.
    pub anomalies: Vec<AnomalyView>,
    /// The insights of every tenant's usage together.
    pub insights: Vec<InsightView>,
}

/// `GET /api/admin/api-usage`: every tenant together, and the top tenants.
#[utoipa::path(
    get, path = "/api/admin/api-usage", tag = "analytics", security(("adminToken" = [])), params(UsageParams),
    responses((status = 200, description = "all tenants together, and the top tenants", body = AllTenantsReport), (status = 401, description = "no or wrong admin token", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn admin_api_usage(
    st: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: UsageParams = query(&req)?;
    if params.key_id.is_some() {
        return Err(ApiError::invalid(
            "keyId filters one tenant's report: use /api/admin/tenants/{id}/api-usage?keyId=",
        ));
    }
    let now_ms = st.metering.clock.now_nanos().millis().0;
    let r = resolve(&params, now_ms)?;
    let store: Arc<dyn Store> = st.metering.registry.store().clone();
    let prices = st.metering.prices.clone();
    let tenants = st.metering.registry.tenant_count();
    let body = blocking(move || -> Result<AllTenantsReport, ApiError> {
        let used = usage(
            store.as_ref(),
            &Owner::Fleet,
            r.range,
            r.bucket,
            r.top,
            now_ms,
        )?;
        let window = HourWindow::of(r.range, now_ms);
        let hours = window.read(store.as_ref(), &Owner::Fleet)?;
        Ok(AllTenantsReport {
            tenants,
            report: Report::of(&used, &prices),
            top_tenants: TopTenants::from(&top_tenants(&used.whole, r.top)),
            anomalies: window.anomalies(&hours),
            insights: insight_views(store.as_ref(), &Owner::Fleet, &prices, now_ms)?,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AnomalyParams {
    /// `day`, `week` (the default), `month` or `custom` (with `from`, `to`).
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// How many tenants to look at, the busiest first (1 to 1000, default 200).
    pub tenants: Option<String>,
}

/// One unusual hour of one tenant, or (`tenantId` null) of every tenant together.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantAnomaly {
    pub tenant_id: Option<String>,
    #[serde(flatten)]
    pub anomaly: AnomalyView,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnomaliesReport {
    pub range: super::report::RangeView,
    /// Tenants looked at: those with requests in the range or its baseline
    /// weeks, the busiest first, up to `tenants`.
    pub(crate) tenants_checked: usize,
    /// Tenants with requests then that were not looked at.
    pub(crate) tenants_skipped: usize,
    /// Newest first, then by tenant.
    pub anomalies: Vec<TenantAnomaly>,
}

/// `GET /api/admin/anomalies`: the unusual hours of every tenant.
#[utoipa::path(
    get, path = "/api/admin/anomalies", tag = "analytics", security(("adminToken" = [])), params(AnomalyParams),
    responses((status = 200, description = "the unusual hours of every tenant (and of all together) in the range's last 31 days", body = AnomaliesReport), (status = 401, description = "no or wrong admin token", body = crate::http::wire::error::ErrorBody), (status = 422, description = "bad range or tenants", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn admin_anomalies(
    st: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p: AnomalyParams = query(&req)?;
    let now_ms = st.metering.clock.now_nanos().millis().0;
    let r = resolve(
        &UsageParams {
            range: Some(p.range.clone().unwrap_or_else(|| {
                if p.from.is_some() || p.to.is_some() {
                    "custom"
                } else {
                    "week"
                }
                .into()
            })),
            from: p.from,
            to: p.to,
            bucket: Some("day".into()),
            limit: None,
            key_id: None,
        },
        now_ms,
    )?;
    let most = match p.tenants.as_deref() {
        None => 200,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid("tenants must be 1 to 1000"))?,
    };
    let store: Arc<dyn Store> = st.metering.registry.store().clone();
    let body = blocking(move || -> Result<AnomaliesReport, ApiError> {
        let window = HourWindow::of(r.range, now_ms);
        // The tenants with requests in the judged hours or their baseline.
        let seen = crate::analytics::query::aggregate(
            store.as_ref(),
            &Owner::Fleet,
            Range::minutes(window.read_from * HOUR_MS, window.to * HOUR_MS),
            now_ms,
        )?;
        let mut busiest: Vec<(&String, u64)> = seen
            .tenants
            .iter()
            .filter(|(id, _)| id.as_str() != crate::rollup::OTHER)
            .map(|(id, p)| (id, p.requests))
            .collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let skipped = busiest.len().saturating_sub(most);
        busiest.truncate(most);
        let mut anomalies = Vec::new();
        let owners = std::iter::once(None).chain(busiest.iter().map(|(id, _)| Some(*id)));
        for id in owners {
            let owner = id.map_or(Owner::Fleet, |id| Owner::tenant(id));
            let hours = window.read(store.as_ref(), &owner)?;
            anomalies.extend(detect(&hours, window.from, window.to).iter().map(|a| {
                (
                    a.hour,
                    TenantAnomaly {
                        tenant_id: id.cloned(),
                        anomaly: AnomalyView::from(a),
                    },
                )
            }));
        }
        anomalies.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.tenant_id.cmp(&b.1.tenant_id)));
        Ok(AnomaliesReport {
            range: super::report::RangeView::of(r.range, Grain::Hour),
            tenants_checked: busiest.len(),
            tenants_skipped: skipped,
            anomalies: anomalies.into_iter().map(|(_, a)| a).collect(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
