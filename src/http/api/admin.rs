//! Admin routes (admin token): plans, tenants, keys, and a tenant's billing views.

use actix_web::{web, HttpResponse};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::catalog::{limits_of, KeyBody, PlanBody, TenantBody};
use super::tenant::{subscription_view, usage_view};
use super::types::{check_text, CreateKey, CreateTenant, CreatedKey, ListOf, PatchKey, RotateKey};
use crate::clock::fmt_ms;
use crate::http::wire::error::{blocking, ApiError};
use crate::http::wire::extract::{Admin, ApiJson, OptionalJson};
use crate::http::AppState;
use crate::model::{Plan, Tenant, TenantStatus};

/// A JSON merge of `patch` onto `current`: only existing fields, and the
/// `fixed` ones must keep their value.
fn merge_patch<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: Value,
    fixed: &[&str],
) -> Result<T, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid(
            "send a JSON object with the fields to change",
        ));
    };
    let mut value = serde_json::to_value(current).map_err(|e| ApiError::invalid(e.to_string()))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::invalid("not an object"));
    };
    for (k, v) in patch {
        match obj.get(&k) {
            None => return Err(ApiError::invalid(format!("unknown field `{k}`"))),
            Some(old) if fixed.contains(&k.as_str()) && *old != v => {
                return Err(ApiError::invalid(format!("`{k}` cannot change")))
            }
            _ => {
                obj.insert(k, v);
            }
        }
    }
    crate::http::wire::said::from_value(value).map_err(ApiError::invalid)
}

fn created<T: Serialize>(v: T) -> HttpResponse {
    HttpResponse::Created().json(v)
}

// ---- plans -----------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/admin/plans", tag = "admin", security(("adminToken" = [])), responses((status = 200, body = ListOf<PlanBody>))
)]
pub(crate) async fn list_plans(st: web::Data<AppState>, _: Admin) -> HttpResponse {
    HttpResponse::Ok().json(ListOf {
        data: st
            .metering
            .registry
            .plans()
            .iter()
            .map(PlanBody::from)
            .collect(),
    })
}

#[utoipa::path(
    post, path = "/api/admin/plans", tag = "admin", security(("adminToken" = [])), request_body = PlanBody,
    responses((status = 201, body = PlanBody), (status = 409, description = "id taken", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid plan", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn create_plan(
    st: web::Data<AppState>,
    _: Admin,
    body: ApiJson<Value>,
) -> Result<HttpResponse, ApiError> {
    let plan: PlanBody = crate::http::wire::said::from_value(body.0).map_err(ApiError::invalid)?;
    let plan = st.metering.registry.create_plan(
        plan.try_into().map_err(ApiError::invalid)?,
        st.metering.clock.now(),
    )?;
    Ok(created(PlanBody::from(&plan)))
}

#[utoipa::path(
    get, path = "/api/admin/plans/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, body = PlanBody), (status = 404, description = "no such plan", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn get_plan(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let plan = st
        .metering
        .registry
        .plan(&id)
        .ok_or_else(|| ApiError::not_found(format!("plan '{id}' not found")))?;
    Ok(HttpResponse::Ok().json(PlanBody::from(&plan)))
}

#[utoipa::path(
    patch, path = "/api/admin/plans/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396) of the plan; applies to running tenants at once"),
    responses((status = 200, body = PlanBody), (status = 404, description = "no such plan", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid result", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn patch_plan(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: ApiJson<Value>,
) -> Result<HttpResponse, ApiError> {
    let current = st
        .metering
        .registry
        .plan(&id)
        .ok_or_else(|| ApiError::not_found(format!("plan '{id}' not found")))?;
    let next: Plan = merge_patch(&PlanBody::from(&current), body.0, &["id"])?
        .try_into()
        .map_err(ApiError::invalid)?;
    let plan = st.metering.registry.update_plan(
        &id,
        |p| {
            *p = next;
            Ok(())
        },
        st.metering.clock.now(),
    )?;
    Ok(HttpResponse::Ok().json(PlanBody::from(&plan)))
}

#[utoipa::path(
    delete, path = "/api/admin/plans/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "no such plan", body = crate::http::wire::error::ErrorBody), (status = 409, description = "tenants still use it", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn delete_plan(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    st.metering
        .registry
        .delete_plan(&id, st.metering.clock.now())?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- tenants -----------------------------------------------------------------

#[utoipa::path(
    get, path = "/api/admin/tenants", tag = "admin", security(("adminToken" = [])), responses((status = 200, body = ListOf<TenantBody>))
)]
pub(crate) async fn list_tenants(
    st: web::Data<AppState>,
    _: Admin,
) -> Result<HttpResponse, ApiError> {
    let tenants = st.metering.registry.tenants()?;
    Ok(HttpResponse::Ok().json(ListOf {
        data: tenants.iter().map(TenantBody::from).collect(),
    }))
}

#[utoipa::path(
    post, path = "/api/admin/tenants", tag = "admin", security(("adminToken" = [])), request_body = CreateTenant,
    responses((status = 201, body = TenantBody), (status = 409, description = "id taken", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn create_tenant(
    st: web::Data<AppState>,
    _: Admin,
    body: ApiJson<CreateTenant>,
) -> Result<HttpResponse, ApiError> {
    let req = body.0;
    let id = req.id.ok_or_else(|| ApiError::invalid("id is required"))?;
    let plan_id = req
        .plan_id
        .ok_or_else(|| ApiError::invalid("planId is required"))?;
    let tenant = Tenant {
        name: req.name.unwrap_or_else(|| id.clone()),
        id,
        plan_id,
        status: req.status.map_or(TenantStatus::Active, Into::into),
        created_at: st.metering.clock.now(),
        limits: limits_of(&req.limits).map_err(ApiError::invalid)?,
        billing_day: req.billing_day,
    };
    let tenant = st
        .metering
        .registry
        .create_tenant(tenant, st.metering.clock.now())?;
    Ok(created(TenantBody::from(&tenant)))
}

fn tenant_or_404(st: &AppState, id: &str) -> Result<Tenant, ApiError> {
    st.metering
        .registry
        .tenant(id)?
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, body = TenantBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn get_tenant(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(TenantBody::from(&tenant_or_404(&st, &id)?)))
}

#[utoipa::path(
    patch, path = "/api/admin/tenants/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body(content = Object, description = "JSON merge patch (RFC 7396): name, planId, status"),
    responses((status = 200, body = TenantBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid result", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn patch_tenant(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: ApiJson<Value>,
) -> Result<HttpResponse, ApiError> {
    let current = tenant_or_404(&st, &id)?;
    let next: Tenant = merge_patch(&TenantBody::from(&current), body.0, &["id", "createdAt"])?
        .try_into()
        .map_err(ApiError::invalid)?;
    let tenant = st.metering.registry.update_tenant(
        &id,
        |t| {
            *t = next;
            Ok(())
        },
        st.metering.clock.now(),
    )?;
    Ok(HttpResponse::Ok().json(TenantBody::from(&tenant)))
}

#[utoipa::path(
    delete, path = "/api/admin/tenants/{id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "deleted; its keys, usage records, totals, rollups and alert marks are purged"), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody), (status = 503, description = "the store failed mid-purge; delete again", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn delete_tenant(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // The purge walks every day of records: off the worker thread.
    let registry = st.metering.registry.clone();
    let now = st.metering.clock.now();
    blocking(move || Ok(registry.delete_tenant(&id, now)?)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/usage", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, body = crate::http::api::types::BillingUsage), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn tenant_usage(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let state = st
        .metering
        .registry
        .tenant_state(&id)
        .ok_or_else(|| ApiError::not_found(format!("tenant '{id}' not found")))?;
    Ok(HttpResponse::Ok().json(usage_view(&st, &state).await))
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/subscription", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, body = crate::http::api::types::SubscriptionView), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn tenant_subscription(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(subscription_view(&st, &id)?))
}

// ---- keys ----------------------------------------------------------------------

#[utoipa::path(
    post, path = "/api/admin/tenants/{id}/keys", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    request_body(content = CreateKey, description = "optional"),
    responses((status = 201, description = "the secret is shown this once", body = CreatedKey), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn create_key(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    body: OptionalJson<CreateKey>,
) -> Result<HttpResponse, ApiError> {
    let name = body.0.name.unwrap_or_else(|| "default".into());
    if name.is_empty() {
        return Err(ApiError::invalid("name must not be empty"));
    }
    check_text("name", &name, 128).map_err(ApiError::invalid)?;
    let now = st.metering.clock.now();
    let expires_at = expiry(body.0.expires_at.as_deref(), now)?;
    let limits = limits_of(&body.0.limits).map_err(ApiError::invalid)?;
    let (key, secret) = st
        .metering
        .registry
        .create_key_with(&id, &name, expires_at, limits, now)?;
    Ok(created(CreatedKey {
        id: key.id,
        key: secret,
        prefix: key.prefix,
        name: key.name,
        created_at: fmt_ms(key.created_at),
        expires_at: key.expires_at.map(fmt_ms),
        previous_works_until: None,
    }))
}

/// An `expiresAt`: RFC 3339, and later than now.
fn expiry(
    v: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let t = chrono::DateTime::parse_from_rfc3339(v)
        .map_err(|_| ApiError::invalid(format!("expiresAt must be an RFC 3339 time, not {v:?}")))?
        .with_timezone(&chrono::Utc);
    if t <= now {
        return Err(ApiError::invalid("expiresAt must be in the future"));
    }
    Ok(Some(t))
}

/// A key of `tenant` that is not revoked (with when it was last used).
pub(super) fn live_key(
    st: &AppState,
    tenant: &str,
    key: &str,
) -> Result<crate::model::ApiKey, ApiError> {
    st.metering
        .registry
        .keys(tenant)?
        .into_iter()
        .find(|k| k.id == key && k.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found(format!("key '{key}' not found")))
}

/// The most a rotation's old secret may keep working: 30 days.
const MAX_OVERLAP_SECONDS: u64 = 30 * 86_400;

#[utoipa::path(
    patch, path = "/api/admin/tenants/{id}/keys/{key_id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path), ("key_id" = String, Path)),
    request_body = PatchKey,
    responses((status = 200, description = "the key", body = KeyBody), (status = 404, description = "no such key (or revoked)", body = crate::http::wire::error::ErrorBody), (status = 422, description = "a bad expiresAt", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn patch_key(
    st: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
    body: ApiJson<PatchKey>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    let now = st.metering.clock.now();
    let registry = &st.metering.registry;
    let PatchKey { expires_at, limits } = body.0;
    let expires_at = match expires_at {
        Some(expires) => Some(expiry(expires.as_deref(), now)?),
        None => None,
    };
    let limits = limits
        .map(|l| limits_of(&l))
        .transpose()
        .map_err(ApiError::invalid)?;
    let key = match (expires_at, limits) {
        (None, None) => live_key(&st, &tenant, &key)?,
        (expires_at, limits) => registry.update_key(
            &tenant,
            &key,
            |k| {
                if let Some(e) = expires_at {
                    k.expires_at = e;
                }
                if let Some(l) = limits {
                    k.limits = l;
                }
            },
            now,
        )?,
    };
    Ok(HttpResponse::Ok().json(KeyBody::from(&key)))
}

#[utoipa::path(
    post, path = "/api/admin/tenants/{id}/keys/{key_id}/rotate", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path), ("key_id" = String, Path)),
    request_body(content = RotateKey, description = "optional"),
    responses((status = 200, description = "the new secret, shown this once; the old one works until previousWorksUntil", body = CreatedKey), (status = 404, description = "no such key (or revoked)", body = crate::http::wire::error::ErrorBody), (status = 422, description = "overlapSeconds out of range", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn rotate_key(
    st: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
    body: OptionalJson<RotateKey>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    let overlap = body.0.overlap_seconds.unwrap_or(3_600);
    if overlap > MAX_OVERLAP_SECONDS {
        return Err(ApiError::invalid(format!(
            "overlapSeconds must be 0 to {MAX_OVERLAP_SECONDS} (30 days)"
        )));
    }
    let now = st.metering.clock.now();
    let until = now + chrono::Duration::seconds(overlap as i64);
    let (key, secret) = st.metering.registry.rotate_key(&tenant, &key, until, now)?;
    let until = key.expires_at.map_or(until, |e| e.min(until));
    Ok(HttpResponse::Ok().json(CreatedKey {
        id: key.id,
        key: secret,
        prefix: key.prefix,
        name: key.name,
        created_at: fmt_ms(key.created_at),
        expires_at: key.expires_at.map(fmt_ms),
        previous_works_until: Some(fmt_ms(until)),
    }))
}

#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/keys", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "keys without their secrets", body = ListOf<KeyBody>), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn list_keys(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ListOf {
        data: st
            .metering
            .registry
            .keys(&id)?
            .iter()
            .map(KeyBody::from)
            .collect(),
    }))
}

#[utoipa::path(
    delete, path = "/api/admin/tenants/{id}/keys/{key_id}", tag = "admin", security(("adminToken" = [])), params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, description = "the revoked key", body = KeyBody), (status = 404, description = "no such key", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn revoke_key(
    st: web::Data<AppState>,
    _: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, key) = path.into_inner();
    let key = st
        .metering
        .registry
        .revoke_key(&tenant, &key, st.metering.clock.now())?;
    Ok(HttpResponse::Ok().json(KeyBody::from(&key)))
}
