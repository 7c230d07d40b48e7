//! Envoy's External Authorization (`envoy.service.auth.v3.Authorization/
//! Check`), as Envoy's `envoy.filters.http.ext_authz` calls it with
//! `transport_api_version: V3`.
//!
//! The tenant key is read from the client request's `Authorization: Bearer`
//! or `X-API-Key` header; the request is decided and recorded like an
//! authorize of its method and path. Its cost is the route's
//! `context_extensions: { cost: "N" }` (set by the operator in Envoy's
//! per-route config, never by the client; default 1).
//!
//! - Allowed: gRPC `OK` with the SPEC §6 headers for the upstream and the
//!   client, `X-Tollgate-Tenant` and `X-Tollgate-Plan` for the upstream,
//!   and the header that carried the key removed.
//! - Refused: `UNAUTHENTICATED` / `PERMISSION_DENIED` / `RESOURCE_EXHAUSTED`
//!   with a denied response of 401 / 403 / 429, the JSON error body,
//!   `Retry-After` and the rate-limit headers.
//! - A decision that cannot be recorded: `UNAVAILABLE` (see [`super`];
//!   Envoy's `failure_mode_allow` decides).

use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpStatusCode,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use tonic::{Code, Request, Response, Status};

use super::{limit_headers, unrecorded, Edge};
use crate::metering::request::{check_method, cost_of, record_path};
use crate::metering::{Meter, Metering, Refusal, Refused};
use crate::model::{CompactString, RecordExtra, UsageRecord};
use crate::quota::Decision;

/// The route `/metrics` times these calls under.
const ROUTE: &str = "/envoy.service.auth.v3.Authorization/Check";

pub(crate) struct Authz {
    edge: Arc<Edge>,
}

impl Authz {
    pub(crate) fn new(edge: Arc<Edge>) -> Authz {
        Authz { edge }
    }
}

#[tonic::async_trait]
impl Authorization for Authz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        super::peer_allowed(&self.edge, &request)?;
        let m = &self.edge.metering;
        let answer = check(m, request.get_ref(), started).await;
        m.metrics.request(ROUTE, started.elapsed().as_secs_f64());
        answer.map(Response::new)
    }
}

/// A client request header: from the `headers` map, or (Envoy's
/// `encode_raw_headers`) from `header_map`.
fn header<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(v) = http.headers.get(name) {
        return Some(v);
    }
    let h = http
        .header_map
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    if h.value.is_empty() {
        std::str::from_utf8(&h.raw_value).ok()
    } else {
        Some(&h.value)
    }
}

/// The country of the downstream client Envoy names (`attributes.source`,
/// the address Envoy saw or took from its own trusted `X-Forwarded-For`),
/// when `[geoip]` is configured.
fn source_country(m: &Metering, req: &CheckRequest) -> CompactString {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    if m.geo.is_none() {
        return CompactString::default();
    }
    let ip = req
        .attributes
        .as_ref()
        .and_then(|a| a.source.as_ref())
        .and_then(|p| p.address.as_ref())
        .and_then(|a| match &a.address {
            Some(Address::SocketAddress(s)) => s.address.parse().ok(),
            _ => None,
        });
    ip.map_or_else(CompactString::default, |ip| m.country_of_ip(ip))
}

async fn check(
    m: &Metering,
    req: &CheckRequest,
    started: Instant,
) -> Result<CheckResponse, Status> {
    let attributes = req.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or_else(|| Status::invalid_argument("the check request has no HTTP request"))?;
    let cost = match attributes.and_then(|a| a.context_extensions.get("cost")) {
        None => 1,
        Some(v) => cost_of(v, "context_extensions.cost").map_err(Status::invalid_argument)?,
    };
    let authorization = header(http, "authorization");
    let api_key = header(http, "x-api-key");
    let (tenant, key_id) = match m.tenant_of(authorization, api_key) {
        Ok(t) => t,
        Err(e) => return Ok(denied(e, None)),
    };
    let record = UsageRecord {
        key_id,
        endpoint: record_path(if http.path.is_empty() {
            "/"
        } else {
            &http.path
        }),
        method: check_method(&http.method).unwrap_or_else(|_| "GET".into()),
        extra: RecordExtra {
            country: source_country(m, req),
            ..Default::default()
        }
        .boxed(),
        ..Default::default()
    };
    let meter = Meter::decide(m, &tenant, cost, 0, record, started).await;
    let d = *meter.decision();
    let views = meter.views().clone();
    let meter = match meter.allowed() {
        Ok(m) => m,
        Err(e) => return Ok(denied(e, Some(&d))),
    };
    if !meter.recorded() {
        return Err(unrecorded());
    }
    let mut ok = OkHttpResponseBuilder::new();
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    for (k, v) in limit_headers(&d, &views, true) {
        ok.add_header(k, v.clone(), overwrite, false);
        ok.add_response_header(k, v, overwrite, false);
    }
    ok.add_header("x-tollgate-tenant", tenant.id.to_string(), overwrite, false);
    ok.add_header(
        "x-tollgate-plan",
        tenant.plan().plan.id.clone(),
        overwrite,
        false,
    );
    // The tenant's key is Tollgate's, not the upstream's: both headers
    // that may carry it go (a key sent in both would otherwise reach the
    // upstream in the one not read).
    ok.remove_header("authorization");
    ok.remove_header("x-api-key");
    let mut res = CheckResponse::with_status(Status::ok("allowed"));
    res.set_http_response(ok);
    Ok(res)
}

/// ext_authz's gRPC status for each refusal (the HTTP status Envoy sends
/// the client is the HTTP API's, [`Refusal::status`]).
fn wire(r: Refusal) -> Code {
    match r {
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::KeyExpired
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => Code::Unauthenticated,
        Refusal::Suspended => Code::PermissionDenied,
        Refusal::RateLimited
        | Refusal::QuotaExceeded
        | Refusal::TokenQuotaExceeded
        | Refusal::TooManyInFlight
        | Refusal::BudgetExceeded => Code::ResourceExhausted,
        Refusal::ClusterUnavailable => Code::Unavailable,
    }
}

/// The denied answer of `e` (with the rate-limit headers of `d`, when a
/// decision was made).
fn denied(e: Refused, d: Option<&Decision>) -> CheckResponse {
    let grpc = wire(e.refusal);
    // Envoy's enum numbers each status by itself.
    let http = HttpStatusCode::try_from(i32::from(e.refusal.status()))
        .unwrap_or(HttpStatusCode::Forbidden);
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(http);
    let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
    if let Some(d) = d {
        for (k, v) in limit_headers(d, &[], false) {
            denied.add_header(k, v, overwrite, false);
        }
    }
    denied.add_header("content-type", "application/json", overwrite, false);
    denied.add_header("x-tollgate-error", e.refusal.code(), overwrite, false);
    denied.set_body(e.body().to_string());
    let mut res = CheckResponse::with_status(Status::new(grpc, e.message));
    res.set_http_response(denied);
    res
}
