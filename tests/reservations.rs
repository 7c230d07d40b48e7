//! Token reservations (issue 36, Deliver 2; SPEC §12): what a request may
//! use of a token quota is reserved before it runs, settled when its usage
//! is known, and given back on every other ending - through authorize and
//! a usage record, the gateway, and chat - in a real server.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use fake_http::FakeHttp;
use serde_json::{json, Value};
use tollgate::clock::{ManualClock, SystemClock};
use tollgate::config::ProxyConfig;

fn tokens_used(s: &TestServer, key: &str) -> u64 {
    let r = s.tenant(key, "GET", "/api/billing/usage", None);
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["tokens"]["used"]
        .as_u64()
        .unwrap()
}

fn token_plan(s: &TestServer, id: &str, tokens: u64, extra: Value) {
    let mut body = json!({"id": id, "name": id, "monthlyCalls": null, "monthlyTokens": tokens,
                          "rateLimit": null, "priceUsdMonthly": 1.0});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = s.admin("POST", "/api/admin/plans", Some(body));
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

#[test]
fn an_authorize_reserves_and_a_record_naming_it_settles() {
    let clock = Arc::new(ManualClock::at(chrono::Utc::now()));
    let s = TestServer::start_with(|_| {}, clock.clone());
    token_plan(&s, "tok", 1_000, json!({"reservationTtlSeconds": 60}));
    let key = s.tenant_with_key("acme", "tok");
    let other = s.tenant_with_key("rival", "tok");

    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"estimateTokens": 600})),
    );
    assert_eq!(r.status(), 200);
    let a: Value = r.json().unwrap();
    let id = a["reservationId"]
        .as_str()
        .expect("a reservation id")
        .to_string();
    assert_eq!(a["reservedTokens"], 600);
    assert_eq!(tokens_used(&s, &key), 600, "reserved tokens count as used");

    // 500 more do not fit; a check says so and takes nothing.
    let c: Value = s
        .tenant(
            &key,
            "POST",
            "/api/v1/check",
            Some(json!({"estimateTokens": 500})),
        )
        .json()
        .unwrap();
    assert_eq!(c["allowed"], false);
    assert_eq!(c["reason"], "token_quota_exceeded");
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"estimateTokens": 500})),
    );
    error_body(r, 429, "token_quota_exceeded");
    assert_eq!(tokens_used(&s, &key), 600);

    // Another tenant naming the id settles nothing of it.
    let r = s.tenant(
        &other,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/x", "calls": 0, "tokensUsed": 5, "reservationId": id})),
    );
    assert_eq!(r.status(), 202);
    assert_eq!(tokens_used(&s, &key), 600);

    // The record's tokens replace the reservation.
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(
            json!({"endpoint": "/x", "calls": 0, "promptTokens": 100, "completionTokens": 50,
                    "reservationId": id}),
        ),
    );
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    assert_eq!(tokens_used(&s, &key), 150);
    // Settled once: sent again, the record counts as plain usage.
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/x", "calls": 0, "tokensUsed": 10, "reservationId": id})),
    );
    assert_eq!(r.status(), 202);
    assert_eq!(tokens_used(&s, &key), 160);

    // A reservation never settled is given back after the plan's TTL.
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"estimateTokens": 800})),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(tokens_used(&s, &key), 960);
    clock.advance_ms(61_000);
    wait_until(|| tokens_used(&s, &key) == 160);

    // Bad input is a clear 422.
    for body in [
        json!({"estimateTokens": -1}),
        json!({"estimateTokens": 1u64 << 60}),
    ] {
        let r = s.tenant(&key, "POST", "/api/v1/authorize", Some(body.clone()));
        assert!(
            r.status() == 400 || r.status() == 422,
            "{body}: {}",
            r.status()
        );
    }
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/x", "reservationId": "r".repeat(65)})),
    );
    error_body(r, 422, "invalid_request");
}

#[test]
fn a_plan_reserve_applies_when_authorize_names_no_estimate() {
    let s = TestServer::start();
    token_plan(&s, "tok", 1_000, json!({"reserveTokens": 400}));
    let key = s.tenant_with_key("acme", "tok");
    let plan: Value = s.admin("GET", "/api/admin/plans/tok", None).json().unwrap();
    assert_eq!(plan["reserveTokens"], 400, "{plan}");
    for _ in 0..2 {
        let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().unwrap()["reservedTokens"], 400);
    }
    let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
    error_body(r, 429, "token_quota_exceeded");
    // A plan without a token quota reserves nothing and names no id.
    s.plan("calls-only", Some(10), None, None);
    let k2 = s.tenant_with_key("open", "calls-only");
    let a: Value = s
        .tenant(
            &k2,
            "POST",
            "/api/v1/authorize",
            Some(json!({"estimateTokens": 5})),
        )
        .json()
        .unwrap();
    assert!(a.get("reservationId").is_none(), "{a}");
    // Bad plan values are refused.
    for bad in [
        json!({"reserveTokens": -1}),
        json!({"reservationTtlSeconds": 0}),
    ] {
        let mut body = json!({"id": "bad", "name": "bad", "monthlyTokens": 10});
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s.admin("POST", "/api/admin/plans", Some(body));
        assert!(r.status() == 400 || r.status() == 422, "{bad}");
    }
}

fn gateway(upstream: &str) -> TestServer {
    let proxies = vec![ProxyConfig {
        prefix: "/v1".into(),
        upstream: upstream.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect: Default::default(),
        name: String::new(),
    }];
    TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock))
}

/// Streams that each use 250 tokens, with `max_tokens` 300: on a 1,000-token
/// quota, 12 at once allow 3 (each reserved its prompt and 300), and the
/// tokens counted never pass the quota - before reservations, every stream
/// in flight was allowed and counted only at its end.
#[test]
fn concurrent_gateway_streams_cannot_pass_a_token_quota() {
    let upstream = FakeHttp::start(move |_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        fake_http::chunk(
            conn,
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        );
        std::thread::sleep(Duration::from_millis(400));
        fake_http::chunk(
            conn,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":200,\"total_tokens\":250}}\n\n",
        );
        fake_http::chunk(conn, "data: [DONE]\n\n");
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url);
    token_plan(&s, "tok", 1_000, json!({}));
    let key = s.tenant_with_key("acme", "tok");
    let url = s.url("/v1/chat/completions");
    let start = Arc::new(Barrier::new(12));
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|_| {
                let (url, key, start) = (url.clone(), key.clone(), start.clone());
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    start.wait();
                    let r = client
                        .post(&url)
                        .bearer_auth(&key)
                        .json(
                            &json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 300,
                                      "messages": [{"role": "user", "content": "hello there"}]}),
                        )
                        .send()
                        .unwrap();
                    let status = r.status().as_u16();
                    let _ = r.text();
                    status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let allowed = answers.iter().filter(|&&s| s == 200).count();
    assert_eq!(allowed, 3, "{answers:?}");
    assert!(answers.iter().all(|&s| s == 200 || s == 429), "{answers:?}");
    wait_until(|| tokens_used(&s, &key) == 750);
}

/// Every ending that is not an answer with usage gives the reservation
/// back: an upstream that fails (502), one that stalls, a client gone.
#[test]
fn a_failed_or_abandoned_gateway_call_gives_its_reservation_back() {
    let upstream = FakeHttp::start(|n, _, conn| match n {
        // Refused outright: the connection is closed with no answer.
        0 => drop(conn.shutdown(std::net::Shutdown::Both)),
        _ => {
            fake_http::start_chunked(conn, 200, "text/event-stream");
            fake_http::chunk(
                conn,
                "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    let s = gateway(&upstream.url);
    token_plan(&s, "tok", 10_000, json!({}));
    let key = s.tenant_with_key("acme", "tok");
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 5_000,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = s.tenant(&key, "POST", "/v1/chat/completions", Some(body.clone()));
    assert_eq!(r.status(), 502);
    assert_eq!(tokens_used(&s, &key), 0, "a failed call keeps nothing");
    // A client that goes away mid-stream: what was seen is counted (the
    // estimate), the rest of the reservation given back.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let r = client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(tokens_used(&s, &key) >= 5_000, "reserved while it streams");
    drop(r.text());
    wait_until(|| tokens_used(&s, &key) < 100);
}

/// A JSON body that starts with whitespace or a byte order mark is still a
/// model call: it is reserved for, asked for its usage and counted
/// (issue 37, finding 1).
#[test]
fn a_body_with_leading_whitespace_is_still_metered() {
    let upstream = FakeHttp::start(|_, req, conn| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        assert!(body.contains("include_usage"), "{body}");
        fake_http::start_chunked(conn, 200, "text/event-stream");
        fake_http::chunk(
            conn,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":20,\"total_tokens\":30}}\n\n",
        );
        fake_http::chunk(conn, "data: [DONE]\n\n");
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url);
    token_plan(&s, "tok", 100_000, json!({}));
    let key = s.tenant_with_key("acme", "tok");
    let client = reqwest::blocking::Client::new();
    for (n, lead) in [" ", "\n", "\t", "\r\n", "\u{feff}"].iter().enumerate() {
        let body = format!(
            "{lead}{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"x\"}}]}}"
        );
        let r = client
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{lead:?}");
        let _ = r.text();
        wait_until(|| tokens_used(&s, &key) == 30 * (n as u64 + 1));
    }
}

#[test]
fn chat_reserves_its_message_and_the_plans_reply_allowance() {
    let s = TestServer::start();
    token_plan(&s, "tok", 100, json!({"reserveTokens": 60}));
    let key = s.tenant_with_key("acme", "tok");
    // The echo backend answers with the message again (about 2 + its tokens).
    let message = "one two three four five six seven eight nine ten";
    let r = s.tenant(
        &key,
        "POST",
        "/api/chat",
        Some(json!({"message": message, "botId": "b"})),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let used = tokens_used(&s, &key);
    assert!(used > 0 && used < 40, "settled to what was used: {used}");
    // 100 - used left: the message and the 60 for the reply must fit.
    let r = s.tenant(
        &key,
        "POST",
        "/api/chat",
        Some(json!({"message": message, "botId": "b"})),
    );
    error_body(r, 429, "token_quota_exceeded");
    assert_eq!(tokens_used(&s, &key), used, "a refusal takes nothing");
}
