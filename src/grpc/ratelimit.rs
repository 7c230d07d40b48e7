//! Envoy's Rate Limit Service (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`), as Envoy's `envoy.filters.http.ratelimit` calls it.
//!
//! Each descriptor that names a tenant - an `api_key` entry (the tenant's
//! key, bare or as `Bearer <key>`) or a `tenant_id` entry (Envoy has authenticated the caller) - is one
//! decision of `hits` calls against that tenant's limits, recorded like an
//! authorize of its `endpoint` and `method` entries (`/` and `GET` when
//! absent). `hits` is the descriptor's `hits_addend`, else the request's;
//! 0 means 1. A descriptor naming no tenant is not Tollgate's: it is
//! answered `OK` with no limit. As Envoy's contract says, the request is
//! over the limit when any descriptor is: the calls the others took are then
//! given back (and their records say refused), so a refused request spends
//! nothing.
//!
//! The answer has one status per descriptor (the limit nearest to refusing:
//! `month`, `burst` or `tokens`, its remaining units and time to reset),
//! the overall code, the SPEC §6 headers for the client in
//! `response_headers_to_add` (of the first refused descriptor, else the
//! first decided one), `X-Tollgate-Tenant` and `X-Tollgate-Plan` for the
//! upstream, and on a refusal the JSON error in `raw_body` with
//! `X-Tollgate-Error`. An unknown key or tenant is over the limit (Envoy's
//! rate-limit filter can only answer 429; put the ext_authz service in front
//! for a 401). No descriptor naming a tenant is `INVALID_ARGUMENT`; a
//! decision that cannot be recorded `UNAVAILABLE` (see [`super`]).

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit as Limit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use tonic::{Request, Response, Status};

use super::{limit_headers, unrecorded, Edge};
use crate::metering::request::{check_method, record_path, MAX_COST};
use crate::metering::{Meter, Metering, Refusal, Refused};
use crate::model::{CompactString, RecordExtra, UsageRecord};
use crate::quota::period::NANOS_PER_SEC;
use crate::quota::{Decision, Outcome, TenantState};

/// The route `/metrics` times these calls under.
const ROUTE: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// The most descriptors one request may carry (each naming a tenant is a
/// decision).
const MAX_DESCRIPTORS: usize = 64;

pub(crate) struct RateLimit {
    edge: Arc<Edge>,
}

impl RateLimit {
    pub(crate) fn new(edge: Arc<Edge>) -> RateLimit {
        RateLimit { edge }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimit {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let started = Instant::now();
        super::peer_allowed(&self.edge, &request)?;
        let answer = decide(&self.edge, request.get_ref(), started).await;
        self.edge
            .metering
            .metrics
            .request(ROUTE, started.elapsed().as_secs_f64());
        answer.map(Response::new)
    }
}

/// What one descriptor asks of Tollgate.
enum Ask {
    /// It names no tenant.
    NotOurs,
    /// It names a key or tenant Tollgate does not know.
    Unknown(Refused),
    Decide {
        tenant: Arc<TenantState>,
        cost: u64,
        record: Box<UsageRecord>,
    },
}

fn ask(edge: &Edge, d: &RateLimitDescriptor, request_hits: u32) -> Result<Ask, Status> {
    let m = &edge.metering;
    let entry = |key: &str| {
        d.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let tenant = match (entry("api_key"), entry("tenant_id")) {
        // The key itself, or an `Authorization` value copied by a
        // `request_headers` action (`Bearer <key>`).
        (Some(key), _) if key.starts_with("Bearer ") || key.starts_with("bearer ") => {
            m.tenant_of(Some(key), None)
        }
        (Some(key), _) => m.tenant_of(None, Some(key)),
        (None, Some(_)) if !edge.tenant_id => Err(m.unauthorized(
            Refusal::TenantIdOff,
            "tenant_id descriptors are turned off ([grpc] tenant_id = false): send the key as api_key",
        )),
        (None, Some(id)) => m
            .registry
            .tenant_state(id)
            .map(|t| (t, CompactString::default()))
            .ok_or_else(|| m.unauthorized(Refusal::UnknownTenant, "no tenant has this tenant_id")),
        (None, None) => return Ok(Ask::NotOurs),
    };
    let hits = d
        .hits_addend
        .as_ref()
        .map_or(u64::from(request_hits), |h| h.value);
    if hits > MAX_COST {
        return Err(Status::invalid_argument(format!(
            "hits_addend must be at most {MAX_COST}"
        )));
    }
    let (tenant, key_id) = match tenant {
        Ok(t) => t,
        Err(e) => return Ok(Ask::Unknown(e)),
    };
    Ok(Ask::Decide {
        tenant,
        cost: hits.max(1),
        record: Box::new(UsageRecord {
            key_id,
            endpoint: record_path(entry("endpoint").unwrap_or("/")),
            method: entry("method")
                .and_then(|m| check_method(m).ok())
                .unwrap_or_else(|| "GET".into()),
            // Envoy's `remote_address` action puts the client's address here.
            extra: RecordExtra {
                country: entry("remote_address")
                    .and_then(|a| a.parse().ok())
                    .map_or_else(CompactString::default, |ip| m.country_of_ip(ip)),
                ..Default::default()
            }
            .boxed(),
            ..Default::default()
        }),
    })
}

/// A descriptor's answer, and what the response as a whole needs of it.
struct Decided<'a> {
    status: DescriptorStatus,
    /// The allowed decision's meter, to record (or give back) at the end.
    meter: Option<Meter<&'a Metering>>,
    decision: Option<Decision>,
    /// The named limits (SPEC §12) the decision met.
    views: crate::quota::scoped::Views,
    refusal: Option<Refused>,
    tenant: Option<Arc<TenantState>>,
}

impl Decided<'_> {
    /// A descriptor answered without a decision: not Tollgate's (`OK`), or
    /// naming no known tenant (`OVER_LIMIT`, with why).
    fn undecided(code: Code, refusal: Option<Refused>) -> Self {
        Decided {
            status: DescriptorStatus {
                code: code as i32,
                ..Default::default()
            },
            meter: None,
            decision: None,
            views: Default::default(),
            refusal,
            tenant: None,
        }
    }
}

async fn decide(
    edge: &Edge,
    req: &RateLimitRequest,
    started: Instant,
) -> Result<RateLimitResponse, Status> {
    if req.descriptors.is_empty() || req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "a rate-limit request needs 1 to {MAX_DESCRIPTORS} descriptors"
        )));
    }
    let asks = req
        .descriptors
        .iter()
        .map(|d| ask(edge, d, req.hits_addend))
        .collect::<Result<Vec<_>, _>>()?;
    if asks.iter().all(|a| matches!(a, Ask::NotOurs)) {
        return Err(Status::invalid_argument(
            "no descriptor names a tenant: give an `api_key` or a `tenant_id` entry",
        ));
    }
    let mut decided: Vec<Decided> = Vec::with_capacity(asks.len());
    for a in asks {
        decided.push(match a {
            Ask::NotOurs => Decided::undecided(Code::Ok, None),
            Ask::Unknown(e) => Decided::undecided(Code::OverLimit, Some(e)),
            Ask::Decide {
                tenant,
                cost,
                record,
            } => {
                let meter =
                    Meter::decide(&*edge.metering, &tenant, cost, 0, *record, started).await;
                let d = *meter.decision();
                let views = meter.views().clone();
                let (meter, refusal) = match meter.allowed() {
                    Ok(m) => (Some(m), None),
                    Err(e) => (None, Some(e)),
                };
                Decided {
                    status: status_of(&d),
                    meter,
                    decision: Some(d),
                    views,
                    refusal,
                    tenant: Some(tenant),
                }
            }
        });
    }
    let refused = decided.iter().position(|d| d.refusal.is_some());
    let shown = refused.or_else(|| decided.iter().position(|d| d.decision.is_some()));
    let mut res = RateLimitResponse {
        overall_code: if refused.is_some() {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        ..Default::default()
    };
    if let Some(shown) = shown.map(|i| &decided[i]) {
        if let Some(d) = &shown.decision {
            for (k, v) in limit_headers(d, &shown.views, refused.is_none()) {
                res.response_headers_to_add.push(header(k, v));
            }
        }
        if let Some(t) = &shown.tenant {
            let plan = t.plan();
            res.request_headers_to_add
                .push(header("x-tollgate-tenant", t.id.to_string()));
            res.request_headers_to_add
                .push(header("x-tollgate-plan", plan.plan.id.clone()));
        }
        if let Some(e) = &shown.refusal {
            let h = &mut res.response_headers_to_add;
            h.push(header("content-type", "application/json".into()));
            h.push(header("x-tollgate-error", e.refusal.code().into()));
            h.push(header("x-tollgate-status", e.refusal.status().to_string()));
            res.raw_body = e.body().to_string().into_bytes();
        }
    }
    let mut all_recorded = true;
    for d in decided {
        res.statuses.push(d.status);
        if let Some(meter) = d.meter {
            if refused.is_some() {
                meter.withdrawn();
            } else {
                all_recorded &= meter.recorded();
            }
        }
    }
    if !all_recorded {
        return Err(unrecorded());
    }
    Ok(res)
}

fn header(key: impl Into<String>, value: String) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        value,
        raw_value: Vec::new(),
    }
}

/// One limit as Envoy describes it.
struct Binding {
    name: &'static str,
    limit: u64,
    remaining: u64,
    unit: Unit,
    reset_ns: u64,
}

/// The limit that refused `d`, or, when it was allowed, the one nearest to
/// refusing: the monthly calls or the burst, whichever has fewer left.
fn binding(d: &Decision) -> Option<Binding> {
    let month = d.calls_limit.map(|limit| Binding {
        name: "month",
        limit,
        remaining: limit.saturating_sub(d.calls_used),
        unit: Unit::Month,
        reset_ns: d.period_reset_ns(),
    });
    let tokens = d.tokens_limit.map(|limit| Binding {
        name: "tokens",
        limit,
        remaining: limit.saturating_sub(d.tokens_used),
        unit: Unit::Month,
        reset_ns: d.period_reset_ns(),
    });
    let burst = d.burst.map(|b| {
        let (unit, divisor) = unit_of(b.per_seconds);
        Binding {
            name: "burst",
            limit: (b.requests / divisor).max(1),
            remaining: b.remaining,
            unit,
            reset_ns: b.reset_ns,
        }
    });
    match d.outcome {
        Outcome::RateLimited => burst,
        Outcome::QuotaExceeded => month,
        Outcome::TokenQuotaExceeded => tokens,
        Outcome::Suspended
        | Outcome::ClusterUnavailable
        | Outcome::BudgetExceeded
        | Outcome::InFlightFull => None,
        Outcome::Allowed => match (month, burst) {
            (Some(m), Some(b)) => Some(if b.remaining < m.remaining { b } else { m }),
            (m, b) => m.or(b),
        },
    }
}

/// Envoy's unit for a window of `secs` seconds and what to divide the
/// window's requests by: 1 when Envoy has the unit, else the window's
/// length (told per `SECOND`).
fn unit_of(secs: u64) -> (Unit, u64) {
    match secs {
        1 => (Unit::Second, 1),
        60 => (Unit::Minute, 1),
        3_600 => (Unit::Hour, 1),
        86_400 => (Unit::Day, 1),
        604_800 => (Unit::Week, 1),
        n => (Unit::Second, n),
    }
}

fn status_of(d: &Decision) -> DescriptorStatus {
    let code = if d.allowed() {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let Some(b) = binding(d) else {
        return DescriptorStatus {
            code: code as i32,
            ..Default::default()
        };
    };
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(Limit {
            name: b.name.into(),
            requests_per_unit: b.limit.min(u64::from(u32::MAX)) as u32,
            unit: b.unit as i32,
        }),
        limit_remaining: b.remaining.min(u64::from(u32::MAX)) as u32,
        duration_until_reset: Some(Duration {
            seconds: (b.reset_ns / NANOS_PER_SEC as u64) as i64,
            nanos: (b.reset_ns % NANOS_PER_SEC as u64) as i32,
        }),
        quota: None,
    }
}
