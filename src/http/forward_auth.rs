//! `/api/v1/forward-auth` (any method): Tollgate as the auth service of an
//! edge proxy - nginx `auth_request`, Caddy `forward_auth`, Traefik
//! `ForwardAuth`, HAProxy (a Lua action). The proxy sends the original
//! request's headers; the tenant key is in them, the original method and
//! URI in the conventional headers. The request is decided and recorded
//! like an authorize of that method and path, and answered 200 (go on: the
//! rate-limit headers, and the tenant and plan for the upstream) or
//! 401/403/429 with the JSON error and `Retry-After`.
//!
//! Every answer also says what it is in `X-Tollgate-Status` and
//! `X-Tollgate-Error` (the error code), for proxies that rewrite it. nginx's
//! `auth_request` passes on only 2xx, 401 and 403: with `?via=nginx` every
//! other refusal (429, 422, 503) is answered 403 (its `X-Tollgate-Status`
//! the real one), and the nginx recipe turns it back for the client
//! (docs/INTEGRATIONS.md).
//!
//! Header precedence (the recipes pin it): the original method and URI
//! are `X-Forwarded-Method`/`X-Forwarded-Uri` (Caddy and Traefik set them
//! themselves; the nginx and HAProxy recipes set them, overwriting any
//! copy the client sent), else `X-Original-Method`/`X-Original-URI` (for
//! older nginx setups), else this request's own. Every recipe clears the
//! client's `X-Original-*`, `X-Tollgate-Cost`, `Forwarded` and
//! `X-Real-IP` for the sub-request and sets `X-Forwarded-For` to the
//! address it saw: a client cannot choose what is recorded or charged.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use super::AppState;
use crate::http::wire::error::ApiError;
use crate::http::wire::extract::TenantAuth;
use crate::metering::request::{check_method, cost_of, record_path};
use crate::model::{RecordExtra, UsageRecord};

/// The original method: Traefik and Caddy send `X-Forwarded-Method`; the
/// nginx and HAProxy recipes send `X-Original-Method`.
const METHOD_HEADERS: [&str; 2] = ["x-forwarded-method", "x-original-method"];
/// The original path and query: `X-Forwarded-Uri` (Traefik, Caddy, the
/// HAProxy recipe), `X-Original-URI` (nginx).
const URI_HEADERS: [&str; 2] = ["x-forwarded-uri", "x-original-uri"];
/// Calls the request costs (default 1).
const COST_HEADER: &str = "x-tollgate-cost";

fn first_header<'a>(req: &'a HttpRequest, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| req.headers().get(*n).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn put(res: &mut HttpResponse, name: &'static str, value: &str) {
    crate::http::wire::headers::put(res.headers_mut(), name, value);
}

/// The refusal as the proxy gets it.
fn refused(e: ApiError, via_nginx: bool) -> HttpResponse {
    let mut res = e.error_response();
    put(&mut res, "x-tollgate-status", e.status.as_str());
    put(&mut res, "x-tollgate-error", e.code);
    put(&mut res, "x-tollgate-message", &e.message);
    // nginx's auth_request passes on only 2xx, 401 and 403 (anything else
    // becomes a 500): every other refusal is a 403 there, its real status
    // in X-Tollgate-Status for the recipe to restore.
    if via_nginx && e.status != StatusCode::UNAUTHORIZED {
        *res.status_mut() = StatusCode::FORBIDDEN;
    }
    res
}

#[derive(serde::Deserialize)]
pub(crate) struct Via {
    via: Option<String>,
}

/// `/api/v1/forward-auth`.
#[utoipa::path(
    get, path = "/api/v1/forward-auth", tag = "enforcement", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    params(
        ("via" = Option<String>, Query, description = "`nginx`: answer every refusal but a 401 as 403 (nginx's auth_request passes on only 2xx, 401 and 403); `X-Tollgate-Status` says the real status"),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "the original path and query (Traefik, Caddy); `X-Original-URI` (nginx) too"),
        ("X-Forwarded-Method" = Option<String>, Header, description = "the original method (Traefik, Caddy); `X-Original-Method` too; default: this request's"),
        ("X-Tollgate-Cost" = Option<u64>, Header, description = "calls the request costs (default 1)"),
    ),
    responses(
        (status = 200, description = "allowed (recorded like an authorize of the original method and path); the rate-limit headers, `X-Tollgate-Tenant` and `X-Tollgate-Plan` are for the upstream", headers(("X-RateLimit-Limit" = u64), ("X-RateLimit-Remaining" = u64), ("X-RateLimit-Reset" = String), ("RateLimit" = String), ("RateLimit-Policy" = String), ("X-Tollgate-Tenant" = String), ("X-Tollgate-Plan" = String), ("X-Tollgate-Status" = u16))),
        (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody, headers(("X-Tollgate-Status" = u16), ("X-Tollgate-Error" = String))),
        (status = 403, description = "tenant suspended (or, with `via=nginx`, any refusal nginx must see as 403: see `X-Tollgate-Status`)", body = crate::http::wire::error::ErrorBody, headers(("X-Tollgate-Status" = u16), ("X-Tollgate-Error" = String))),
        (status = 429, description = "rate_limited, quota_exceeded or token_quota_exceeded; Retry-After set", body = crate::http::wire::error::ErrorBody, headers(("X-Tollgate-Status" = u16), ("X-Tollgate-Error" = String), ("Retry-After" = u64))),
    )
)]
pub(crate) async fn forward_auth(
    req: HttpRequest,
    via: web::Query<Via>,
    auth: Result<TenantAuth, ApiError>,
) -> HttpResponse {
    let started = Instant::now();
    let via_nginx = via.via.as_deref() == Some("nginx");
    let auth = match auth {
        Ok(a) => a,
        Err(e) => return refused(e, via_nginx),
    };
    // Borrowed from the request, as `authorize` borrows it.
    let st: &AppState = match crate::http::wire::extract::state(&req) {
        Ok(st) => st,
        Err(e) => return refused(e, via_nginx),
    };
    let cost = match req.headers().get(COST_HEADER) {
        None => 1,
        Some(v) => {
            match cost_of(v.to_str().unwrap_or(""), "X-Tollgate-Cost").map_err(ApiError::invalid) {
                Ok(n) => n,
                Err(e) => return refused(e, via_nginx),
            }
        }
    };
    let method = first_header(&req, &METHOD_HEADERS)
        .and_then(|m| check_method(m).ok())
        .unwrap_or_else(|| req.method().as_str().into());
    let record = UsageRecord {
        endpoint: record_path(first_header(&req, &URI_HEADERS).unwrap_or("/")),
        method,
        extra: RecordExtra {
            country: st.country_of(&req),
            ..Default::default()
        }
        .boxed(),
        ..Default::default()
    };
    let meter = match auth
        .meter(&*st.metering, cost, 0, record, started)
        .await
        .allowed()
    {
        Ok(m) => m,
        Err(e) => return refused(e.into(), via_nginx),
    };
    meter.served(200, None);
    let plan = auth.tenant().plan_now();
    let mut res = HttpResponse::Ok().finish();
    put(&mut res, "x-tollgate-status", "200");
    put(&mut res, "x-tollgate-tenant", &auth.tenant().id);
    put(&mut res, "x-tollgate-plan", &plan.plan.id);
    res
}
