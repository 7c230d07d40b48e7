//! The edge contract suite (issue 38): one table of scenarios - allowed,
//! an unknown key, a suspended tenant, the burst limit, the monthly call
//! quota, the token quota, the cluster unreachable, the queue to the store
//! full - run against every edge a metered request comes through:
//! authorize, check, forward-auth, the gateway in each dialect (Tollgate's,
//! OpenAI's and Anthropic's), Envoy's ext_authz and its rate-limit service. Each cell
//! is that edge's documented answer (docs/API.md); the store's
//! `contract_suite!` idea, applied to the edges. One real server on
//! 127.0.0.1 serves every edge; Redis is real and is frozen for the
//! cluster's scenario; the store is made to fail for the queue's.

// tonic's `Status` (176 bytes) is what its clients answer with.
#![allow(clippy::result_large_err)]

mod common;
#[path = "common/envoy.rs"]
mod envoy;
#[path = "common/fake_http.rs"]
mod fake_http;
#[path = "common/flaky.rs"]
mod flaky;
#[path = "common/redis.rs"]
mod redis;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use envoy::{check_request, descriptor, find, find_option, request, Envoy};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use fake_http::FakeHttp;
use serde_json::{json, Value};
use tollgate::config::{Dialect, ProxyConfig};
use tollgate::metering::Refusal;

/// What a client of an edge sees: the HTTP status (the one Envoy answers
/// with, for the gRPC services) and the error code, or the gRPC status of
/// a call that got no answer of Tollgate's.
#[derive(Clone, PartialEq, Eq)]
enum Answer {
    /// Passed (2xx); `check` says in its body whether a request would be.
    Passed(Option<String>),
    /// Refused with this HTTP status and code.
    Refused(u16, String),
    /// A gRPC call answered with this status and no decision.
    Grpc(tonic::Code),
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Passed(None) => write!(f, "passed"),
            Answer::Passed(Some(why)) => write!(f, "passed, would be refused: {why}"),
            Answer::Refused(status, code) => write!(f, "{status} {code}"),
            Answer::Grpc(code) => write!(f, "gRPC {code:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Allowed,
    UnknownKey,
    /// A secret rotated away (no overlap): expired.
    ExpiredKey,
    Suspended,
    Burst,
    MonthlyQuota,
    TokenQuota,
    /// A dollar budget of SPEC §12 (a tenant's `spendUsd` limit) spent.
    Budget,
    /// A named limit of SPEC §12: the tenant's calls per day, spent.
    DailyCalls,
    ClusterUnavailable,
    QueueFull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    Authorize,
    Check,
    ForwardAuth,
    Gateway,
    GatewayOpenai,
    GatewayAnthropic,
    ExtAuthz,
    RateLimitService,
}

const EDGES: [Edge; 8] = [
    Edge::Authorize,
    Edge::Check,
    Edge::ForwardAuth,
    Edge::Gateway,
    Edge::GatewayOpenai,
    Edge::GatewayAnthropic,
    Edge::ExtAuthz,
    Edge::RateLimitService,
];

/// The refusal each refusing scenario is.
fn refusal(s: Scenario) -> Option<Refusal> {
    match s {
        Scenario::Allowed | Scenario::QueueFull => None,
        Scenario::UnknownKey => Some(Refusal::UnknownKey),
        Scenario::ExpiredKey => Some(Refusal::KeyExpired),
        Scenario::Suspended => Some(Refusal::Suspended),
        Scenario::Burst => Some(Refusal::RateLimited),
        Scenario::MonthlyQuota => Some(Refusal::QuotaExceeded),
        Scenario::TokenQuota => Some(Refusal::TokenQuotaExceeded),
        Scenario::Budget => Some(Refusal::BudgetExceeded),
        Scenario::DailyCalls => Some(Refusal::QuotaExceeded),
        Scenario::ClusterUnavailable => Some(Refusal::ClusterUnavailable),
    }
}

/// The HTTP status docs/API.md gives each refusal.
fn status(r: Refusal) -> u16 {
    match r {
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::KeyExpired
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => 401,
        Refusal::Suspended => 403,
        Refusal::RateLimited
        | Refusal::QuotaExceeded
        | Refusal::TokenQuotaExceeded
        | Refusal::TooManyInFlight
        | Refusal::BudgetExceeded => 429,
        Refusal::ClusterUnavailable => 503,
    }
}

/// OpenAI's error code for each refusal (the gateway's `openai` dialect).
fn openai_code(r: Refusal) -> &'static str {
    match r {
        Refusal::QuotaExceeded | Refusal::TokenQuotaExceeded | Refusal::BudgetExceeded => {
            "insufficient_quota"
        }
        Refusal::RateLimited | Refusal::TooManyInFlight => "rate_limit_exceeded",
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::KeyExpired
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => "invalid_api_key",
        Refusal::Suspended | Refusal::ClusterUnavailable => r.code(),
    }
}

/// Anthropic's error type for each refusal (the gateway's `anthropic`
/// dialect).
fn anthropic_type(r: Refusal) -> &'static str {
    match r {
        Refusal::MissingKey
        | Refusal::MalformedCredentials
        | Refusal::UnknownKey
        | Refusal::KeyExpired
        | Refusal::UnknownTenant
        | Refusal::TenantIdOff => "authentication_error",
        Refusal::Suspended => "permission_error",
        Refusal::RateLimited
        | Refusal::QuotaExceeded
        | Refusal::TokenQuotaExceeded
        | Refusal::TooManyInFlight
        | Refusal::BudgetExceeded => "rate_limit_error",
        Refusal::ClusterUnavailable => "api_error",
    }
}

/// Each edge's documented answer to each scenario.
fn expected(s: Scenario, e: Edge) -> Answer {
    if s == Scenario::QueueFull {
        // HTTP answers stand and the record is dropped (counted); Envoy's
        // services give the decision back and answer UNAVAILABLE, so that
        // Envoy's failure mode applies.
        return match e {
            Edge::ExtAuthz | Edge::RateLimitService => Answer::Grpc(tonic::Code::Unavailable),
            _ => Answer::Passed(None),
        };
    }
    let Some(r) = refusal(s) else {
        return Answer::Passed(None);
    };
    match e {
        // A dry run answers whether the request would pass; only a key it
        // cannot use is refused.
        Edge::Check if status(r) != 401 => Answer::Passed(Some(r.code().into())),
        Edge::GatewayOpenai => Answer::Refused(status(r), openai_code(r).into()),
        Edge::GatewayAnthropic => Answer::Refused(status(r), anthropic_type(r).into()),
        _ => Answer::Refused(status(r), r.code().into()),
    }
}

struct World {
    s: TestServer,
    envoy: Envoy,
    redis: redis::Redis,
    store: Arc<tollgate::store::Ledger<flaky::Flaky>>,
    _upstream: FakeHttp,
}

/// One server with every edge: the HTTP API, forward-auth, two gateway
/// routes in front of a fake chat-completions upstream, and the gRPC
/// services; quotas shared through a real Redis; a store that can be made
/// to fail.
fn world() -> World {
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::reply(
            conn,
            200,
            "application/json",
            r#"{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#,
        );
    });
    let redis = redis::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.grpc.bind = "127.0.0.1:0".into();
    c.flush.queue_capacity = 64;
    c.cluster.redis_url = redis.url();
    c.cluster.instance_id = "edges".into();
    let route = |prefix: &str, dialect| ProxyConfig {
        prefix: prefix.into(),
        upstream: upstream.url.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect,
        name: String::new(),
    };
    c.proxy = vec![
        route("/gw", Dialect::Tollgate),
        route("/oai", Dialect::Openai),
        route("/ant", Dialect::Anthropic),
    ];
    let (s, store) = flaky::server(c, dir);
    let envoy = Envoy::connect(s.server.as_ref().unwrap().grpc_addr.unwrap());
    World {
        s,
        envoy,
        redis,
        store,
        _upstream: upstream,
    }
}

impl World {
    /// What `edge` answers a request with `key`.
    fn ask(&mut self, edge: Edge, key: &str) -> Answer {
        let http = |r: reqwest::blocking::Response, code: &dyn Fn(&Value) -> Value| {
            let status = r.status().as_u16();
            let error = header(&r, "x-tollgate-error");
            let body: Value = r.json().unwrap_or(Value::Null);
            match status {
                200..=299 => Answer::Passed(None),
                _ => Answer::Refused(
                    status,
                    code(&body)
                        .as_str()
                        .map(String::from)
                        .or(error)
                        .unwrap_or_else(|| format!("no code in {body}")),
                ),
            }
        };
        let own = |b: &Value| b["code"].clone();
        let c = &self.s.http;
        match edge {
            Edge::Authorize => http(
                c.post(self.s.url("/api/v1/authorize"))
                    .bearer_auth(key)
                    .send()
                    .unwrap(),
                &own,
            ),
            Edge::Check => {
                let r = c
                    .post(self.s.url("/api/v1/check"))
                    .bearer_auth(key)
                    .send()
                    .unwrap();
                if r.status() != 200 {
                    return http(r, &own);
                }
                let body: Value = r.json().unwrap();
                Answer::Passed(body["reason"].as_str().map(String::from))
            }
            Edge::ForwardAuth => {
                let r = c
                    .get(self.s.url("/api/v1/forward-auth"))
                    .bearer_auth(key)
                    .header("x-forwarded-uri", "/v1/items")
                    .send()
                    .unwrap();
                match r.status().as_u16() {
                    200 => Answer::Passed(None),
                    status => {
                        Answer::Refused(status, header(&r, "x-tollgate-error").unwrap_or_default())
                    }
                }
            }
            Edge::GatewayAnthropic => {
                // As the Anthropic SDKs send the key: X-API-Key.
                let r = c
                    .post(self.s.url("/ant/v1/messages"))
                    .header("x-api-key", key)
                    .header("anthropic-version", "2023-06-01")
                    .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .unwrap();
                http(r, &|b: &Value| b["error"]["type"].clone())
            }
            Edge::Gateway | Edge::GatewayOpenai => {
                let prefix = if edge == Edge::Gateway { "/gw" } else { "/oai" };
                let r = c
                    .post(self.s.url(&format!("{prefix}/chat/completions")))
                    .bearer_auth(key)
                    .json(&json!({"model": "gpt-4o-mini", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .unwrap();
                if edge == Edge::Gateway {
                    http(r, &own)
                } else {
                    http(r, &|b: &Value| b["error"]["code"].clone())
                }
            }
            Edge::ExtAuthz => {
                let bearer = format!("Bearer {key}");
                let r = match self.envoy.check(check_request(
                    "GET",
                    "/v1/items",
                    &[("authorization", &bearer)],
                    None,
                )) {
                    Ok(r) => r,
                    Err(e) => return Answer::Grpc(e.code()),
                };
                let grpc = r.status.as_ref().map_or(0, |s| s.code);
                match r.http_response {
                    Some(HttpResponse::OkResponse(_)) if grpc == 0 => Answer::Passed(None),
                    Some(HttpResponse::DeniedResponse(d)) => {
                        let status = d.status.map_or(0, |s| s.code as u16);
                        let code = find_option(&d.headers, "x-tollgate-error").unwrap_or_default();
                        // The gRPC code is ext_authz's own mapping of the
                        // same refusal: checked against the HTTP status.
                        let want = match status {
                            401 => tonic::Code::Unauthenticated,
                            403 => tonic::Code::PermissionDenied,
                            429 => tonic::Code::ResourceExhausted,
                            503 => tonic::Code::Unavailable,
                            _ => tonic::Code::Unknown,
                        };
                        assert_eq!(grpc, want as i32, "ext_authz's gRPC code for {status}");
                        Answer::Refused(status, code)
                    }
                    other => panic!("ext_authz answered {other:?} with gRPC code {grpc}"),
                }
            }
            Edge::RateLimitService => {
                let r = match self
                    .envoy
                    .limit(request(vec![descriptor(&[("api_key", key)], None)], 1))
                {
                    Ok(r) => r,
                    Err(e) => return Answer::Grpc(e.code()),
                };
                if r.overall_code == Code::Ok as i32 {
                    return Answer::Passed(None);
                }
                let h = &r.response_headers_to_add;
                let status = find(h, "x-tollgate-status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                Answer::Refused(status, find(h, "x-tollgate-error").unwrap_or_default())
            }
        }
    }

    /// A tenant in `scenario`'s state, and the key the edges are asked with.
    fn prepare(&mut self, scenario: Scenario) -> String {
        let id = format!("{scenario:?}").to_lowercase();
        let s = &self.s;
        let key = match scenario {
            Scenario::Allowed | Scenario::QueueFull | Scenario::ClusterUnavailable => {
                s.plan(&id, Some(1_000_000), None, None);
                s.tenant_with_key(&id, &id)
            }
            Scenario::UnknownKey => return "tg_live_this_key_was_never_issued_0000".into(),
            Scenario::ExpiredKey => {
                s.plan(&id, Some(1_000_000), None, None);
                let old = s.tenant_with_key(&id, &id);
                let keys: serde_json::Value = s
                    .admin("GET", &format!("/api/admin/tenants/{id}/keys"), None)
                    .json()
                    .unwrap();
                let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
                let r = s.admin(
                    "POST",
                    &format!("/api/admin/tenants/{id}/keys/{key_id}/rotate"),
                    Some(json!({"overlapSeconds": 0})),
                );
                assert_eq!(r.status(), 200);
                return old;
            }
            Scenario::Suspended => {
                s.plan(&id, Some(1_000_000), None, None);
                let key = s.tenant_with_key(&id, &id);
                let r = s.admin(
                    "PATCH",
                    &format!("/api/admin/tenants/{id}"),
                    Some(json!({"status": "suspended"})),
                );
                assert_eq!(r.status(), 200);
                key
            }
            Scenario::Burst => {
                s.plan(
                    &id,
                    Some(1_000_000),
                    None,
                    Some(json!({"requests": 1, "perSeconds": 3600, "burst": 1})),
                );
                s.tenant_with_key(&id, &id)
            }
            Scenario::MonthlyQuota => {
                s.plan(&id, Some(1), None, None);
                s.tenant_with_key(&id, &id)
            }
            Scenario::TokenQuota => {
                s.plan(&id, None, Some(100), None);
                let key = s.tenant_with_key(&id, &id);
                let r = s.tenant(
                    &key,
                    "POST",
                    "/api/v1/usage",
                    Some(json!({"endpoint": "/v1/chat", "promptTokens": 60,
                                "completionTokens": 40, "model": "gpt-4o-mini"})),
                );
                assert_eq!(r.status(), 202, "{}", r.text().unwrap());
                key
            }
            Scenario::Budget | Scenario::DailyCalls => {
                s.plan(&id, Some(1_000_000), None, None);
                let key = s.tenant_with_key(&id, &id);
                let limit = if scenario == Scenario::Budget {
                    json!({"name": "budget", "scope": "tenant", "measure": "spendUsd",
                           "window": "month", "amount": 0.01})
                } else {
                    json!({"name": "daily", "scope": "tenant", "measure": "calls",
                           "window": "day", "amount": 1})
                };
                let r = s.admin(
                    "PUT",
                    &format!("/api/admin/tenants/{id}/limits"),
                    Some(json!({ "limits": [limit] })),
                );
                assert_eq!(r.status(), 200, "{}", r.text().unwrap());
                if scenario == Scenario::Budget {
                    // $0.03 reported: the budget of $0.01 is spent.
                    let r = s.tenant(
                        &key,
                        "POST",
                        "/api/v1/usage",
                        Some(json!({"endpoint": "/v1/chat", "promptTokens": 12000,
                                    "model": "gpt-4o"})),
                    );
                    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
                }
                key
            }
        };
        match scenario {
            Scenario::Burst | Scenario::MonthlyQuota | Scenario::DailyCalls => {
                // The one call the limit allows is spent.
                assert_eq!(
                    self.ask(Edge::Authorize, &key),
                    Answer::Passed(None),
                    "{scenario:?}"
                );
            }
            Scenario::TokenQuota => wait_until(|| {
                let r = s.tenant(&key, "POST", "/api/v1/check", None);
                r.json::<Value>().unwrap()["reason"] == "token_quota_exceeded"
            }),
            Scenario::ClusterUnavailable => {
                // Redis frozen: what this instance's lease holds is spent,
                // then the tenant is refused.
                self.redis.pause();
                let mut spent = 0;
                while self.ask(Edge::Authorize, &key) == Answer::Passed(None) {
                    spent += 1;
                    assert!(spent < 1_000_000, "the lease was never spent");
                }
            }
            Scenario::QueueFull => {
                // The store fails; Envoy's services are answered OK until
                // the queue is full.
                self.store.access().failing.store(true, Ordering::SeqCst);
                let mut calls = 0;
                while self.ask(Edge::RateLimitService, &key) == Answer::Passed(None) {
                    calls += 1;
                    assert!(calls < 10_000, "the queue never filled");
                }
            }
            _ => {}
        }
        key
    }

    /// Puts back what `scenario` broke.
    fn restore(&mut self, scenario: Scenario) {
        match scenario {
            Scenario::ClusterUnavailable => self.redis.resume(),
            Scenario::QueueFull => self.store.access().failing.store(false, Ordering::SeqCst),
            _ => {}
        }
    }
}

/// Every scenario against every edge, each answer as documented. A
/// mismatch is reported with the whole table's mismatches, not the first.
#[test]
fn every_edge_answers_every_scenario_as_documented() {
    let mut w = world();
    let mut wrong = Vec::new();
    for scenario in [
        Scenario::Allowed,
        Scenario::UnknownKey,
        Scenario::ExpiredKey,
        Scenario::Suspended,
        Scenario::Burst,
        Scenario::MonthlyQuota,
        Scenario::TokenQuota,
        Scenario::Budget,
        Scenario::DailyCalls,
        Scenario::ClusterUnavailable,
        Scenario::QueueFull,
    ] {
        let key = w.prepare(scenario);
        for edge in EDGES {
            let got = w.ask(edge, &key);
            let want = expected(scenario, edge);
            if got != want {
                wrong.push(format!(
                    "{scenario:?} on {edge:?}: {got:?}, documented {want:?}"
                ));
            }
        }
        w.restore(scenario);
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
