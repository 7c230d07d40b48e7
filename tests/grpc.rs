//! Envoy's Rate Limit Service and External Authorization through a real
//! gRPC client (tonic, over loopback HTTP/2) against a real server with
//! `[grpc] bind`: descriptors, `hits_addend`, statuses, the headers Envoy
//! adds, the denied responses, the records in the analytics, and
//! `UNAVAILABLE` for a decision that could not be recorded.

// tonic's `Status` (176 bytes) is what its clients answer with.
#![allow(clippy::result_large_err)]

mod common;
#[path = "common/envoy.rs"]
mod envoy;
#[path = "common/flaky.rs"]
mod flaky;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use envoy::{check_request, denied, descriptor, find, find_option, request, Envoy};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use serde_json::{json, Value};
use tollgate::clock::SystemClock;

fn grpc_server() -> (TestServer, Envoy) {
    let s = TestServer::start_with(
        |c| c.grpc.bind = "127.0.0.1:0".into(),
        Arc::new(SystemClock),
    );
    let addr = s.server.as_ref().unwrap().grpc_addr.unwrap();
    (s, Envoy::connect(addr))
}

#[test]
fn rate_limit_service_decides_each_descriptor_and_records_it() {
    let (s, mut envoy) = grpc_server();
    s.plan("five", Some(5), None, None);
    let key = s.tenant_with_key("acme", "five");
    let id_plan = s.plan(
        "burst",
        None,
        None,
        Some(json!({"requests": 1, "perSeconds": 60, "burst": 2})),
    );
    s.tenant_with_key("bravo", &id_plan);
    let chat = |hits| {
        descriptor(
            &[
                ("api_key", &key),
                ("endpoint", "/v1/chat?x=1"),
                ("method", "post"),
            ],
            hits,
        )
    };

    // hits_addend 0 means 1; the status names the monthly quota.
    let r = envoy.limit(request(vec![chat(None)], 0)).unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    let st = &r.statuses[0];
    assert_eq!(st.code, Code::Ok as i32);
    let limit = st.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit, limit.unit),
        ("month", 5, Unit::Month as i32)
    );
    assert_eq!(st.limit_remaining, 4);
    assert!(st.duration_until_reset.as_ref().unwrap().seconds > 0);
    let h = &r.response_headers_to_add;
    assert_eq!(find(h, "x-ratelimit-limit").as_deref(), Some("5"));
    assert_eq!(find(h, "x-ratelimit-remaining").as_deref(), Some("4"));
    assert!(find(h, "ratelimit-policy")
        .unwrap()
        .starts_with("\"month\";q=5;w="));
    assert!(find(h, "ratelimit")
        .unwrap()
        .starts_with("\"month\";r=4;t="));
    assert_eq!(find(h, "retry-after"), None);
    let up = &r.request_headers_to_add;
    assert_eq!(find(up, "x-tollgate-tenant").as_deref(), Some("acme"));
    assert_eq!(find(up, "x-tollgate-plan").as_deref(), Some("five"));

    // The request's hits_addend is the cost; a descriptor's own overrides
    // it. The key may come as an Authorization value.
    let bearer = format!("Bearer {key}");
    let r = envoy
        .limit(request(vec![descriptor(&[("api_key", &bearer)], None)], 3))
        .unwrap();
    assert_eq!(r.statuses[0].limit_remaining, 1);
    let r = envoy.limit(request(vec![chat(Some(2))], 1)).unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 1);
    let h = &r.response_headers_to_add;
    assert!(find(h, "retry-after").is_some());
    assert_eq!(
        find(h, "x-tollgate-error").as_deref(),
        Some("quota_exceeded")
    );
    assert_eq!(find(h, "x-tollgate-status").as_deref(), Some("429"));
    let body: Value = serde_json::from_slice(&r.raw_body).unwrap();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(body["remaining"], 1, "{body}");

    // A tenant named by id; its burst limit is the nearest, in minutes.
    let by_id = || descriptor(&[("tenant_id", "bravo")], None);
    let r = envoy.limit(request(vec![by_id()], 1)).unwrap();
    let limit = r.statuses[0].current_limit.clone().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit, limit.unit),
        ("burst", 1, Unit::Minute as i32)
    );
    assert_eq!(r.statuses[0].limit_remaining, 1);
    // Over limit as a whole when any descriptor is: bravo's allowed call
    // is given back (its remaining burst is still 1 after).
    let r = envoy
        .limit(request(vec![by_id(), chat(Some(2))], 1))
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
    let r = envoy.limit(request(vec![by_id()], 1)).unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let r = envoy.limit(request(vec![by_id()], 1)).unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "burst");
    assert_eq!(
        find(&r.response_headers_to_add, "x-tollgate-error").as_deref(),
        Some("rate_limited")
    );

    // Unknown keys and tenants are over the limit, and say why.
    let r = envoy
        .limit(request(
            vec![descriptor(&[("api_key", "tg_nope")], None)],
            1,
        ))
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(
        find(&r.response_headers_to_add, "x-tollgate-error").as_deref(),
        Some("invalid_api_key")
    );
    let body: Value = serde_json::from_slice(&r.raw_body).unwrap();
    assert_eq!(body["status"], 401, "{body}");
    let r = envoy
        .limit(request(
            vec![descriptor(&[("tenant_id", "nobody")], None)],
            1,
        ))
        .unwrap();
    assert_eq!(
        find(&r.response_headers_to_add, "x-tollgate-error").as_deref(),
        Some("unknown_tenant")
    );
    // A descriptor that names no tenant is not Tollgate's; a request with
    // none of Tollgate's, an absurd cost or too many descriptors is an
    // invalid argument, and so is a message over the body cap.
    let other = || descriptor(&[("remote_address", "10.0.0.1")], None);
    let r = envoy.limit(request(vec![other(), chat(None)], 1)).unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert!(r.statuses[0].current_limit.is_none());
    for bad in [
        request(vec![other()], 1),
        request(vec![], 1),
        request(vec![chat(Some(1_000_001))], 1),
        request(vec![other(); 65], 1),
    ] {
        let e = envoy.limit(bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    let huge = descriptor(
        &[("api_key", &key), ("endpoint", &"x".repeat(2 << 20))],
        None,
    );
    let e = envoy.limit(request(vec![huge], 1)).unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");

    // Every decision is recorded like an authorize, refusals too.
    wait_until(|| s.report("acme")["summary"]["totalRequests"] == 5);
    let report = s.report("acme");
    assert_eq!(report["summary"]["rejectedRequests"], 2, "{report}");
    let endpoints = report["endpoints"].to_string();
    assert!(
        endpoints.contains("/v1/chat") && !endpoints.contains("x=1") && endpoints.contains("POST"),
        "{endpoints}"
    );
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 5, "{usage}");
    // bravo: two allowed, one given back (recorded as refused), one refused.
    wait_until(|| s.report("bravo")["summary"]["totalRequests"] == 4);
    let metrics = s.metrics();
    assert!(
        metrics.contains("RateLimitService/ShouldRateLimit"),
        "{metrics}"
    );
}

#[test]
fn ext_authz_authenticates_decides_and_tells_envoy_what_to_add() {
    let (s, mut envoy) = grpc_server();
    s.plan("three", Some(3), None, None);
    let key = s.tenant_with_key("acme", "three");
    let bearer = format!("Bearer {key}");

    // Allowed, at the route's cost: headers for the upstream and the client,
    // and the key stripped before the upstream.
    let r = envoy
        .check(check_request(
            "POST",
            "/v1/items?page=2",
            &[("authorization", &bearer)],
            Some("2"),
        ))
        .unwrap();
    assert_eq!(r.status.as_ref().unwrap().code, 0, "{r:?}");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not ok: {r:?}");
    };
    assert_eq!(
        find_option(&ok.headers, "x-tollgate-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        find_option(&ok.headers, "x-tollgate-plan").as_deref(),
        Some("three")
    );
    assert_eq!(
        find_option(&ok.headers, "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
    assert_eq!(
        find_option(&ok.response_headers_to_add, "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
    assert!(find_option(&ok.response_headers_to_add, "ratelimit")
        .unwrap()
        .starts_with("\"month\";r=1;"));
    // Both headers a key may travel in go (issue 37, 8d: a key sent in
    // both reached the upstream in the other).
    assert_eq!(ok.headers_to_remove, ["authorization", "x-api-key"]);

    // X-API-Key, given raw (Envoy's encode_raw_headers): that header goes.
    let mut raw = check_request("get", "/v1/items", &[], None);
    if let Some(http) = raw
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.header_map = Some(HeaderMap {
            headers: vec![HeaderValue {
                key: "x-api-key".into(),
                value: String::new(),
                raw_value: key.clone().into_bytes(),
            }],
        });
    }
    let r = envoy.check(raw).unwrap();
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("not ok: {r:?}");
    };
    assert_eq!(ok.headers_to_remove, ["authorization", "x-api-key"]);

    // Over the quota: 429 with Retry-After, the JSON error and the headers.
    let r = envoy
        .check(check_request(
            "GET",
            "/v1/items",
            &[("authorization", &bearer)],
            None,
        ))
        .unwrap();
    let (grpc, http, headers, body) = denied(&r);
    assert_eq!((grpc, http), (tonic::Code::ResourceExhausted as i32, 429));
    assert!(find_option(&headers, "retry-after").is_some());
    assert_eq!(
        find_option(&headers, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(
        find_option(&headers, "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(body["code"], "quota_exceeded", "{body}");

    // No key, an unknown key: 401; a suspended tenant: 403.
    let r = envoy.check(check_request("GET", "/", &[], None)).unwrap();
    let (grpc, http, _, body) = denied(&r);
    assert_eq!((grpc, http), (tonic::Code::Unauthenticated as i32, 401));
    assert_eq!(body["code"], "missing_api_key");
    let r = envoy
        .check(check_request("GET", "/", &[("x-api-key", "tg_nope")], None))
        .unwrap();
    assert_eq!(denied(&r).3["code"], "invalid_api_key");
    let other = s.tenant_with_key("held", "three");
    s.admin(
        "PATCH",
        "/api/admin/tenants/held",
        Some(json!({"status": "suspended"})),
    );
    let r = envoy
        .check(check_request("GET", "/", &[("x-api-key", &other)], None))
        .unwrap();
    let (grpc, http, _, body) = denied(&r);
    assert_eq!((grpc, http), (tonic::Code::PermissionDenied as i32, 403));
    assert_eq!(body["code"], "tenant_suspended");
    // A cost that is not one is an invalid argument, and takes nothing.
    let e = envoy
        .check(check_request(
            "GET",
            "/",
            &[("x-api-key", &other)],
            Some("0"),
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    // Recorded like authorizes of the original method and path.
    wait_until(|| s.report("acme")["summary"]["totalRequests"] == 3);
    let endpoints = s.report("acme")["endpoints"].to_string();
    assert!(
        endpoints.contains("/v1/items") && !endpoints.contains("page=2"),
        "{endpoints}"
    );
    assert!(
        endpoints.contains("POST") && endpoints.contains("GET"),
        "{endpoints}"
    );
    assert!(s.metrics().contains("Authorization/Check"));
}

/// An allowed decision that cannot be recorded - the store has failed for
/// longer than the queue holds - is given back and answered UNAVAILABLE, so
/// that Envoy's failure mode applies; once the store is back, every call
/// answered OK was recorded and nothing else was spent.
#[test]
fn a_decision_that_cannot_be_recorded_is_unavailable_and_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.grpc.bind = "127.0.0.1:0".into();
    c.flush.queue_capacity = 2;
    let (s, store) = flaky::server(c, dir);
    let mut envoy = Envoy::connect(s.server.as_ref().unwrap().grpc_addr.unwrap());
    s.plan("big", Some(1_000_000), None, None);
    let key = s.tenant_with_key("acme", "big");
    store.access().failing.store(true, Ordering::SeqCst);
    // Each service is answered OK until the queue is full, then UNAVAILABLE
    // (the flusher may take a few more into the batch it retries, so each
    // is driven to it).
    let mut ok = 0u64;
    let mut drive = |call: &mut dyn FnMut(&mut Envoy) -> Result<bool, tonic::Status>| {
        for _ in 0..5_000 {
            match call(&mut envoy) {
                Ok(allowed) => {
                    assert!(allowed);
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
                    return;
                }
            }
        }
        panic!("the queue never filled");
    };
    drive(&mut |e| {
        e.limit(request(vec![descriptor(&[("api_key", &key)], None)], 1))
            .map(|r| r.overall_code == Code::Ok as i32)
    });
    drive(&mut |e| {
        e.check(check_request("GET", "/", &[("x-api-key", &key)], None))
            .map(|r| r.status.is_some_and(|s| s.code == 0))
    });
    store.access().failing.store(false, Ordering::SeqCst);
    wait_until(|| {
        let usage: Value = s
            .tenant(&key, "GET", "/api/billing/usage", None)
            .json()
            .unwrap();
        usage["calls"]["used"] == ok
    });
    // And every call answered OK is persisted once the store is back.
    wait_until(|| s.report("acme")["summary"]["totalRequests"] == ok);
}

/// Envoy keeps its connections open; a stop tells them the server is going
/// away and, past the grace (10 s), closes what is still open instead of
/// waiting forever - with every answered call's record kept.
#[test]
fn a_stop_does_not_wait_forever_for_a_client_that_keeps_its_connection() {
    let (mut s, mut envoy) = grpc_server();
    s.plan("ten", Some(10), None, None);
    let key = s.tenant_with_key("acme", "ten");
    let r = envoy
        .limit(request(vec![descriptor(&[("api_key", &key)], None)], 1))
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    // The client's runtime is not polled from here on: its connection
    // stays open, as an idle Envoy's does.
    let started = std::time::Instant::now();
    s.stop();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(20),
        "the stop took {took:?}"
    );
    s.restart_with(|_| {}, Arc::new(SystemClock));
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 1, "{usage}");
    drop(envoy);
}

/// With `[geoip]`, the country of the client Envoy names: the Check's
/// `attributes.source` address, and a descriptor's `remote_address` (what
/// Envoy's `remote_address` rate-limit action sends).
#[test]
fn envoys_client_addresses_give_countries() {
    use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.mmdb");
    std::fs::write(
        &db,
        common::mmdb::country_db(&[("203.0.113.0", 24, "DE"), ("198.51.100.0", 24, "FR")]),
    )
    .unwrap();
    let path = db.display().to_string();
    let s = TestServer::start_with(
        |c| {
            c.grpc.bind = "127.0.0.1:0".into();
            c.geoip.mmdb = path;
        },
        Arc::new(SystemClock),
    );
    let mut envoy = Envoy::connect(s.server.as_ref().unwrap().grpc_addr.unwrap());
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("enveloped", "roomy");
    let mut req = check_request("GET", "/x", &[("x-api-key", &key)], None);
    req.attributes.as_mut().unwrap().source = Some(Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "203.0.113.9".into(),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    envoy.check(req).unwrap();
    let r = envoy
        .limit(request(
            vec![descriptor(
                &[("api_key", &key), ("remote_address", "198.51.100.7")],
                None,
            )],
            1,
        ))
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32);
    wait_until(|| s.report("enveloped")["summary"]["totalRequests"] == 2);
    let countries: Vec<String> = s.report("enveloped")["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["country"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(countries, ["DE", "FR"]);
}

/// Issue 37, 8e: an RLS `tenant_id` descriptor spent any tenant's quota
/// without a credential, and nothing on the listener could refuse it. Now
/// `[grpc] tenant_id = false` refuses such descriptors, and `[grpc] peers`
/// lets only the listed addresses call at all.
#[test]
fn tenant_id_descriptors_and_peers_can_be_refused() {
    let s = TestServer::start_with(
        |c| {
            c.grpc.bind = "127.0.0.1:0".into();
            c.grpc.tenant_id = false;
        },
        Arc::new(SystemClock),
    );
    s.plan("p", Some(5), None, None);
    let key = s.tenant_with_key("victim", "p");
    let mut envoy = Envoy::connect(s.server.as_ref().unwrap().grpc_addr.unwrap());
    let r = envoy
        .limit(request(
            vec![descriptor(&[("tenant_id", "victim")], None)],
            1,
        ))
        .unwrap();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(
        find(&r.response_headers_to_add, "x-tollgate-error").as_deref(),
        Some("tenant_id_refused")
    );
    let r = envoy
        .limit(request(vec![descriptor(&[("api_key", &key)], None)], 1))
        .unwrap();
    assert_eq!(r.overall_code, Code::Ok as i32, "a key still works");

    let s = TestServer::start_with(
        |c| {
            c.grpc.bind = "127.0.0.1:0".into();
            c.grpc.peers = vec!["10.9.8.7".parse().unwrap()];
        },
        Arc::new(SystemClock),
    );
    let mut envoy = Envoy::connect(s.server.as_ref().unwrap().grpc_addr.unwrap());
    let e = envoy
        .limit(request(
            vec![descriptor(&[("tenant_id", "anyone")], None)],
            1,
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = envoy
        .check(check_request("GET", "/", &[("x-api-key", "tg_x")], None))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}
