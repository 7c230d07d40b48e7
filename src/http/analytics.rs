//! Usage analytics routes: `/api/billing/api-usage` (a tenant's own),
//! `/api/admin/tenants/{id}/api-usage`, `/api/admin/api-usage` (all tenants).
//! Store reads run on the blocking pool, never on a worker's event loop.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::error::{blocking, ApiError};
use super::extract::{Admin, TenantAuth};
use super::report::{grain_name, ForecastView, RecommendationView, Report, TopTenants};
use super::AppState;
use crate::analytics::forecast::{forecast, recommend, SoFar};
use crate::analytics::query::{top_tenants, usage, Range, MAX_POINTS};
use crate::quota::period::Period;
use crate::quota::TenantState;
use crate::rollup::{Grain, Owner};
use crate::store::Store;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    pub range: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub bucket: Option<String>,
    pub limit: Option<String>,
}

/// Query parameters, or a JSON 422 naming what is wrong.
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::invalid(format!("query string: {e}")))
}

pub fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::invalid(format!(
                "{field} must be RFC 3339, e.g. 2026-11-01T00:00:00Z"
            ))
        })
}

/// The resolved request: range, series bucket, top-N size.
pub struct Resolved {
    pub range: Range,
    pub bucket: Grain,
    pub top: usize,
}

pub fn resolve(p: &UsageParams, now_ms: i64) -> Result<Resolved, ApiError> {
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
}

async fn tenant_report(
    st: &AppState,
    tenant: Arc<TenantState>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: UsageParams = query(req)?;
    let now_ns = st.clock.now_nanos();
    let now_ms = now_ns.div_euclid(1_000_000);
    let r = resolve(&params, now_ms)?;
    let (_, plan) = st
        .registry
        .tenant_with_plan(&tenant.id)
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    let plans = st.registry.plans();
    let snapshot = tenant.snapshot(now_ns);
    let store = st.registry.store().clone();
    let id = tenant.id.to_string();
    let body = blocking(move || -> Result<TenantReport, ApiError> {
        let owner = Owner::tenant(&id);
        let used = usage(store.as_ref(), &owner, r.range, r.bucket, r.top, now_ms)?;
        let period = snapshot.period;
        let period_range = Range::minutes(period.start_secs() * 1000, now_ms);
        let period_cost = if period_range == r.range {
            used.whole.total.cost_usd
        } else {
            crate::analytics::query::aggregate(store.as_ref(), &owner, period_range, now_ms)?
                .total
                .cost_usd
        };
        let f = forecast(
            &plan,
            period,
            now_ms,
            SoFar {
                calls: snapshot.calls_used,
                tokens: snapshot.tokens_used,
                cost_usd: period_cost,
            },
        );
        let recommendation = recommend(&plan, &plans, &f).map(RecommendationView::from);
        Ok(TenantReport {
            tenant_id: id,
            report: Report::from(&used),
            forecast: ForecastView::from(&f),
            recommendation,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/billing/api-usage`.
#[utoipa::path(
    get, path = "/api/billing/api-usage", tag = "analytics", security(("tenantKey" = []), ("tenantKeyHeader" = [])), params(UsageParams),
    responses((status = 200, description = "usage analytics of the caller's tenant", body = TenantReport), (status = 401, description = "no or unknown key", body = crate::http::openapi::ErrorBody), (status = 422, description = "bad range", body = crate::http::openapi::ErrorBody))
)]
pub async fn billing_api_usage(
    st: web::Data<AppState>,
    auth: TenantAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    tenant_report(&st, auth.tenant.clone(), &req).await
}

/// `GET /api/admin/tenants/{id}/api-usage`.
#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/api-usage", tag = "analytics", security(("adminToken" = [])), params(("id" = String, Path, description = "tenant id"), UsageParams),
    responses((status = 200, body = TenantReport), (status = 401, description = "no or wrong admin token", body = crate::http::openapi::ErrorBody), (status = 404, description = "no such tenant", body = crate::http::openapi::ErrorBody))
)]
pub async fn admin_tenant_api_usage(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let tenant = st
        .registry
        .tenant_state(&id)
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))?;
    tenant_report(&st, tenant, &req).await
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllTenantsReport {
    pub tenants: usize,
    #[serde(flatten)]
    pub report: Report,
    pub top_tenants: TopTenants,
}

/// `GET /api/admin/api-usage`: every tenant together, and the top tenants.
#[utoipa::path(
    get, path = "/api/admin/api-usage", tag = "analytics", security(("adminToken" = [])), params(UsageParams),
    responses((status = 200, description = "all tenants together, and the top tenants", body = AllTenantsReport), (status = 401, description = "no or wrong admin token", body = crate::http::openapi::ErrorBody))
)]
pub async fn admin_api_usage(
    st: web::Data<AppState>,
    _: Admin,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: UsageParams = query(&req)?;
    let now_ms = st.clock.now_nanos().div_euclid(1_000_000);
    let r = resolve(&params, now_ms)?;
    let store: Arc<dyn Store> = st.registry.store().clone();
    let tenants = st.registry.tenant_count();
    let body = blocking(move || -> Result<AllTenantsReport, ApiError> {
        let used = usage(
            store.as_ref(),
            &Owner::Fleet,
            r.range,
            r.bucket,
            r.top,
            now_ms,
        )?;
        Ok(AllTenantsReport {
            tenants,
            report: Report::from(&used),
            top_tenants: TopTenants::from(&top_tenants(&used.whole, r.top)),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
