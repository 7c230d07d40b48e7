//! The limits routes of SPEC §12: a plan's, a tenant's and a key's
//! limits, read and replaced whole.
//!
//! A plan's list includes its own fields as the limits they are -
//! `month` (`monthlyCalls`), `tokens` (`monthlyTokens`) and `burst`
//! (`rateLimit`) - so that one list says everything a plan limits; a PUT
//! that names them sets those fields (one left out is lifted). A tenant's
//! limit of one of those names, in that shape, replaces the field for it.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::catalog::{bodies_of, limits_of, LimitBody};
use crate::http::wire::error::ApiError;
use crate::http::wire::extract::{Admin, ApiJson};
use crate::http::AppState;
use crate::model::{Limit, Measure, Plan, RateLimit, Scope, Window};

/// A list of limits, as every limits route takes and answers it.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LimitsBody {
    pub limits: Vec<LimitBody>,
    /// A tenant's: the day of the month its billing month starts (1 to
    /// 28; null: the 1st). Left out of a PUT: unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_day: Option<u8>,
    /// In answers for a tenant or a key: every limit that applies, the
    /// plan's with the tenant's (and the key's) in place of those of the
    /// same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<Vec<LimitBody>>,
}

/// A plan's own fields as limits of SPEC §12.
fn built_in(p: &Plan) -> Vec<Limit> {
    let mut out = Vec::new();
    if let Some(n) = p.monthly_calls {
        out.push(Limit::new(
            "month",
            Scope::Tenant,
            Measure::Calls,
            Window::Month,
            Some(n),
        ));
    }
    if let Some(n) = p.monthly_tokens {
        out.push(Limit::new(
            "tokens",
            Scope::Tenant,
            Measure::Tokens,
            Window::Month,
            Some(n),
        ));
    }
    if let Some(r) = p.rate_limit {
        out.push(Limit {
            per_seconds: r.per_seconds,
            burst: r.burst,
            ..Limit::new(
                "burst",
                Scope::Tenant,
                Measure::Calls,
                Window::Burst,
                Some(r.requests),
            )
        });
    }
    out
}

/// Sets `p`'s fields and limits from `limits` (built-in names to fields).
fn set_plan_limits(p: &mut Plan, limits: Vec<Limit>) -> Result<(), String> {
    let (mut calls, mut tokens, mut rate) = (None, None, None);
    let mut rest = Vec::new();
    for l in limits {
        let shape = (l.scope, l.measure, l.window);
        match l.name.as_str() {
            "month" if shape == (Scope::Tenant, Measure::Calls, Window::Month) => calls = l.amount,
            "tokens" if shape == (Scope::Tenant, Measure::Tokens, Window::Month) => {
                tokens = l.amount
            }
            "burst" if shape == (Scope::Tenant, Measure::Calls, Window::Burst) => {
                rate = l.amount.map(|requests| RateLimit {
                    requests,
                    per_seconds: l.per_seconds,
                    burst: l.burst,
                })
            }
            "month" | "tokens" | "burst" => {
                return Err(format!(
                    "limit '{}' is the plan's own field: month is tenant calls per month, \
                     tokens tenant tokens per month, burst tenant calls in a burst window",
                    l.name
                ))
            }
            _ => rest.push(l),
        }
    }
    p.monthly_calls = calls;
    p.monthly_tokens = tokens;
    p.rate_limit = rate;
    p.limits = rest;
    Ok(())
}

fn plan_or_404(st: &AppState, id: &str) -> Result<Plan, ApiError> {
    st.metering
        .registry
        .plan(id)
        .ok_or_else(|| ApiError::not_found(format!("plan '{id}' not found")))
}

fn plan_answer(p: &Plan) -> HttpResponse {
    let mut all = built_in(p);
    all.extend(p.limits.iter().cloned());
    HttpResponse::Ok().json(LimitsBody {
        limits: bodies_of(&all),
        ..LimitsBody::default()
    })
}

#[utoipa::path(
    get, path = "/api/admin/plans/{id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "every limit of the plan, its own fields included", body = LimitsBody), (status = 404, description = "no such plan", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn get_plan_limits(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(plan_answer(&plan_or_404(&st, &id)?))
}

#[utoipa::path(
    put, path = "/api/admin/plans/{id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body = LimitsBody,
    responses((status = 200, description = "the plan's limits, in force at once for its tenants", body = LimitsBody), (status = 404, description = "no such plan", body = crate::http::wire::error::ErrorBody), (status = 422, description = "an invalid limit", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn put_plan_limits(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: ApiJson<LimitsBody>,
) -> Result<HttpResponse, ApiError> {
    if body.0.billing_day.is_some() {
        return Err(ApiError::invalid("billingDay is a tenant's, not a plan's"));
    }
    let limits = limits_of(&body.0.limits).map_err(ApiError::invalid)?;
    let mut next = plan_or_404(&st, &id)?;
    set_plan_limits(&mut next, limits).map_err(ApiError::invalid)?;
    let plan = st.metering.registry.update_plan(
        &id,
        |p| {
            *p = next;
            Ok(())
        },
        st.metering.clock.now(),
    )?;
    Ok(plan_answer(&plan))
}

fn tenant_answer(st: &AppState, t: &crate::model::Tenant) -> HttpResponse {
    // The plan's own fields and limits, each replaced by the tenant's of
    // the same name.
    let plan = st.metering.registry.plan(&t.plan_id);
    let mut of_plan = plan.as_ref().map(built_in).unwrap_or_default();
    of_plan.extend(plan.map(|p| p.limits).unwrap_or_default());
    let effective = crate::quota::scoped::merged(&of_plan, &t.limits);
    HttpResponse::Ok().json(LimitsBody {
        limits: bodies_of(&t.limits),
        billing_day: t.billing_day,
        effective: Some(bodies_of(&effective)),
    })
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "the tenant's own limits, and every one that applies", body = LimitsBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn get_tenant_limits(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = st
        .metering
        .registry
        .tenant(&id)?
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))?;
    Ok(tenant_answer(&st, &t))
}

#[utoipa::path(
    put, path = "/api/admin/tenants/{id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body = LimitsBody,
    responses((status = 200, description = "the tenant's limits, in force at once", body = LimitsBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody), (status = 422, description = "an invalid limit", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn put_tenant_limits(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: ApiJson<LimitsBody>,
) -> Result<HttpResponse, ApiError> {
    let limits = limits_of(&body.0.limits).map_err(ApiError::invalid)?;
    let day = body.0.billing_day;
    let t = st.metering.registry.update_tenant(
        &id,
        |t| {
            t.limits = limits;
            if day.is_some() {
                t.billing_day = day;
            }
            Ok(())
        },
        st.metering.clock.now(),
    )?;
    Ok(tenant_answer(&st, &t))
}

fn key_answer(st: &AppState, tenant: &str, k: &crate::model::ApiKey) -> HttpResponse {
    let t = st.metering.registry.tenant(tenant).ok().flatten();
    let plan = t
        .as_ref()
        .and_then(|t| st.metering.registry.plan(&t.plan_id));
    let plan_limits = plan.map(|p| p.limits).unwrap_or_default();
    let tenant_limits = t.map(|t| t.limits).unwrap_or_default();
    let key_scoped: Vec<Limit> = crate::quota::scoped::merged(&plan_limits, &tenant_limits)
        .into_iter()
        .filter(|l| l.scope == Scope::Key)
        .collect();
    HttpResponse::Ok().json(LimitsBody {
        limits: bodies_of(&k.limits),
        billing_day: None,
        effective: Some(bodies_of(&crate::quota::scoped::merged(
            &key_scoped,
            &k.limits,
        ))),
    })
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/keys/{key_id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, description = "the key's own limits, and every key limit that applies to it", body = LimitsBody), (status = 404, description = "no such key", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn get_key_limits(
    st: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    let k = super::admin::live_key(&st, &tenant, &key)?;
    Ok(key_answer(&st, &tenant, &k))
}

#[utoipa::path(
    put, path = "/api/admin/tenants/{id}/keys/{key_id}/limits", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path), ("key_id" = String, Path)),
    request_body = LimitsBody,
    responses((status = 200, description = "the key's limits, in force at once", body = LimitsBody), (status = 404, description = "no such key", body = crate::http::wire::error::ErrorBody), (status = 422, description = "an invalid limit (a key's are of scope key)", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn put_key_limits(
    st: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
    body: ApiJson<LimitsBody>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    if body.0.billing_day.is_some() {
        return Err(ApiError::invalid("billingDay is a tenant's, not a key's"));
    }
    let limits = limits_of(&body.0.limits).map_err(ApiError::invalid)?;
    let k = st.metering.registry.update_key(
        &tenant,
        &key,
        |k| k.limits = limits,
        st.metering.clock.now(),
    )?;
    Ok(key_answer(&st, &tenant, &k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_fields_are_limits_and_back() {
        let mut p = Plan::unlimited("p");
        p.monthly_calls = Some(5);
        p.rate_limit = Some(RateLimit {
            requests: 2,
            per_seconds: 1,
            burst: 4,
        });
        p.limits = vec![Limit::new(
            "u",
            Scope::User,
            Measure::Tokens,
            Window::Day,
            Some(9),
        )];
        let mut all = built_in(&p);
        all.extend(p.limits.clone());
        let mut q = Plan::unlimited("p");
        set_plan_limits(&mut q, all).unwrap();
        assert_eq!(q, p);
        let wrong = Limit::new("month", Scope::Key, Measure::Calls, Window::Month, Some(1));
        assert!(set_plan_limits(&mut q, vec![wrong]).is_err());
    }
}
