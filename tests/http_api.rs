//! The HTTP API through a real server on 127.0.0.1:0 (SPEC §4-§6).

mod common;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::*;
use serde_json::{json, Value};
use tollgate::clock::ManualClock;

#[test]
fn healthz_and_json_errors_for_unknown_routes_and_methods() {
    let s = TestServer::start();
    let r = s.http.get(s.url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["status"], "ok");
    error_body(
        s.http.get(s.url("/api/nothing")).send().unwrap(),
        404,
        "not_found",
    );
    error_body(
        s.http.get(s.url("/elsewhere")).send().unwrap(),
        404,
        "not_found",
    );
    error_body(
        s.http.put(s.url("/api/v1/authorize")).send().unwrap(),
        405,
        "method_not_allowed",
    );
    error_body(
        s.http.delete(s.url("/api/admin/plans")).send().unwrap(),
        405,
        "method_not_allowed",
    );
}

#[test]
fn plan_crud() {
    let s = TestServer::start();
    let list: Value = s.admin("GET", "/api/admin/plans", None).json().unwrap();
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![
            json!("enterprise"),
            json!("free"),
            json!("professional"),
            json!("starter")
        ]
    );

    s.plan(
        "tiny",
        Some(5),
        None,
        Some(json!({"requests": 2, "perSeconds": 1, "burst": 4})),
    );
    error_body(
        s.admin(
            "POST",
            "/api/admin/plans",
            Some(json!({"id": "tiny", "name": "again"})),
        ),
        409,
        "conflict",
    );
    let got: Value = s
        .admin("GET", "/api/admin/plans/tiny", None)
        .json()
        .unwrap();
    assert_eq!(got["monthlyCalls"], 5);
    assert_eq!(got["rateLimit"]["burst"], 4);

    let r = s.admin(
        "PATCH",
        "/api/admin/plans/tiny",
        Some(json!({"monthlyCalls": null, "name": "Tiny"})),
    );
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().unwrap();
    assert_eq!(
        (patched["monthlyCalls"].clone(), patched["name"].clone()),
        (Value::Null, json!("Tiny"))
    );
    error_body(
        s.admin(
            "PATCH",
            "/api/admin/plans/tiny",
            Some(json!({"id": "other"})),
        ),
        422,
        "invalid_request",
    );
    error_body(
        s.admin("PATCH", "/api/admin/plans/tiny", Some(json!({"bogus": 1}))),
        422,
        "invalid_request",
    );
    error_body(
        s.admin(
            "PATCH",
            "/api/admin/plans/tiny",
            Some(json!({"rateLimit": {"requests": 0, "perSeconds": 1, "burst": 1}})),
        ),
        422,
        "invalid_request",
    );
    error_body(
        s.admin(
            "POST",
            "/api/admin/plans",
            Some(json!({"id": "Bad Id", "name": "x"})),
        ),
        422,
        "invalid_request",
    );

    s.tenant_with_key("user-of-tiny", "tiny");
    error_body(
        s.admin("DELETE", "/api/admin/plans/tiny", None),
        409,
        "conflict",
    );
    assert_eq!(
        s.admin("DELETE", "/api/admin/tenants/user-of-tiny", None)
            .status(),
        204
    );
    assert_eq!(
        s.admin("DELETE", "/api/admin/plans/tiny", None).status(),
        204
    );
    error_body(
        s.admin("GET", "/api/admin/plans/tiny", None),
        404,
        "not_found",
    );
}

#[test]
fn tenant_and_key_lifecycle() {
    let s = TestServer::start();
    error_body(
        s.admin(
            "POST",
            "/api/admin/tenants",
            Some(json!({"id": "acme", "planId": "nope"})),
        ),
        422,
        "invalid_request",
    );
    let key = s.tenant_with_key("acme", "starter");
    assert!(key.starts_with("tg_") && key.len() == 35, "{key}");
    let t: Value = s
        .admin("GET", "/api/admin/tenants/acme", None)
        .json()
        .unwrap();
    assert_eq!(
        (t["planId"].clone(), t["status"].clone()),
        (json!("starter"), json!("active"))
    );
    assert!(t["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        t["createdAt"].as_str().unwrap().len(),
        24,
        "RFC 3339 with milliseconds"
    );

    let keys: Value = s
        .admin("GET", "/api/admin/tenants/acme/keys", None)
        .json()
        .unwrap();
    let k = &keys["data"][0];
    assert_eq!(k["prefix"], &key[..8]);
    assert!(
        k.get("key").is_none() && !keys.to_string().contains(&key),
        "the secret is never listed"
    );
    let key_id = k["id"].as_str().unwrap().to_string();

    assert_eq!(
        s.tenant(&key, "GET", "/api/billing/usage", None).status(),
        200
    );
    let r = s.admin(
        "DELETE",
        &format!("/api/admin/tenants/acme/keys/{key_id}"),
        None,
    );
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().unwrap()["revokedAt"].is_string());
    error_body(
        s.tenant(&key, "GET", "/api/billing/usage", None),
        401,
        "invalid_api_key",
    );
    error_body(
        s.admin("DELETE", "/api/admin/tenants/acme/keys/key_nope", None),
        404,
        "not_found",
    );

    let key2 = s.key("acme");
    let r = s.admin(
        "PATCH",
        "/api/admin/tenants/acme",
        Some(json!({"status": "suspended"})),
    );
    assert_eq!(r.status(), 200);
    error_body(
        s.tenant(&key2, "POST", "/api/v1/authorize", None),
        403,
        "tenant_suspended",
    );
    error_body(
        s.admin(
            "PATCH",
            "/api/admin/tenants/acme",
            Some(json!({"planId": "nope"})),
        ),
        422,
        "invalid_request",
    );
    error_body(
        s.admin(
            "PATCH",
            "/api/admin/tenants/acme",
            Some(json!({"status": "gone"})),
        ),
        422,
        "invalid_request",
    );

    let list: Value = s.admin("GET", "/api/admin/tenants", None).json().unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.admin("DELETE", "/api/admin/tenants/acme", None).status(),
        204
    );
    error_body(
        s.tenant(&key2, "GET", "/api/billing/usage", None),
        401,
        "invalid_api_key",
    );
    error_body(
        s.admin("GET", "/api/admin/tenants/acme", None),
        404,
        "not_found",
    );
}

#[test]
fn authorize_check_headers_and_429() {
    let s = TestServer::start();
    s.plan("five", Some(5), None, None);
    let key = s.tenant_with_key("t1", "five");

    // check and dryRun consume nothing.
    let r = s.tenant(&key, "POST", "/api/v1/check", None);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (
            body["isAllowed"].clone(),
            body["used"].clone(),
            body["remaining"].clone()
        ),
        (json!(true), json!(0), json!(5))
    );
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"dryRun": true, "cost": 5})),
    );
    assert_eq!(r.json::<Value>().unwrap()["used"], 0);

    for i in 1..=5u64 {
        // X-API-Key works like Bearer.
        let r = s
            .http
            .post(s.url("/api/v1/authorize"))
            .header("X-API-Key", &key)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(
            header(&r, "x-ratelimit-remaining"),
            Some((5 - i).to_string())
        );
        let reset = header(&r, "x-ratelimit-reset").unwrap();
        assert!(reset.ends_with("-01T00:00:00.000Z"), "{reset}");
        assert!(header(&r, "ratelimit-policy")
            .unwrap()
            .starts_with("\"month\";q=5;w="));
        assert!(header(&r, "ratelimit")
            .unwrap()
            .starts_with(&format!("\"month\";r={};t=", 5 - i)));
        let body: Value = r.json().unwrap();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["used"], i);
        assert_eq!(body["plan"], "five");
        assert_eq!(body["resetAt"], reset);
    }
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"endpoint": "/v1/things", "method": "get"})),
    );
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!(retry > 0);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    let body = error_body(r, 429, "quota_exceeded");
    assert_eq!(
        (
            body["limit"].clone(),
            body["remaining"].clone(),
            body["used"].clone()
        ),
        (json!(5), json!(0), json!(5))
    );
    // The body names the limit met (SPEC §12), as RateLimit-Policy does.
    assert_eq!(
        (
            &body["limitName"],
            &body["scope"],
            &body["measure"],
            &body["window"]
        ),
        (
            &json!("month"),
            &json!("tenant"),
            &json!("calls"),
            &json!("month")
        )
    );
    assert_eq!(body["retryAfterSeconds"], retry);
    assert!(body["resetAt"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000Z"));

    let r = s.tenant(&key, "POST", "/api/v1/check", Some(json!({})));
    assert_eq!(r.status(), 200);
    // A 200 is no refusal: no Retry-After (the answer says when, in
    // resetAt and the RateLimit headers).
    assert!(
        r.headers().get("retry-after").is_none(),
        "{:?}",
        r.headers()
    );
    assert!(r.headers().get("ratelimit").is_some());
    let body: Value = r.json().unwrap();
    assert_eq!(
        (
            body["isAllowed"].clone(),
            body["allowed"].clone(),
            body["reason"].clone()
        ),
        (json!(false), json!(false), json!("quota_exceeded"))
    );

    // A cost bigger than what is left is refused whole.
    s.admin(
        "PATCH",
        "/api/admin/plans/five",
        Some(json!({"monthlyCalls": 7})),
    );
    error_body(
        s.tenant(&key, "POST", "/api/v1/authorize", Some(json!({"cost": 3}))),
        429,
        "quota_exceeded",
    );
    let r = s.tenant(&key, "POST", "/api/v1/authorize", Some(json!({"cost": 2})));
    assert_eq!(
        r.status(),
        200,
        "a plan change takes effect on the next request"
    );
    error_body(
        s.tenant(&key, "POST", "/api/v1/authorize", Some(json!({"cost": 0}))),
        422,
        "invalid_request",
    );
}

#[test]
fn burst_limit_is_enforced_before_the_quota() {
    let s = TestServer::start();
    s.plan(
        "bursty",
        Some(1000),
        None,
        Some(json!({"requests": 1, "perSeconds": 60, "burst": 3})),
    );
    let key = s.tenant_with_key("b", "bursty");
    for _ in 0..3 {
        let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
        assert_eq!(r.status(), 200);
        assert!(header(&r, "ratelimit-policy")
            .unwrap()
            .contains("\"burst\";q=1;w=60"));
    }
    let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(header(&r, "ratelimit").unwrap().contains("\"burst\";r=0;"));
    let body = error_body(r, 429, "rate_limited");
    assert_eq!(body["retryAfterSeconds"], retry);
    assert_eq!(
        (&body["limitName"], &body["measure"], &body["window"]),
        (&json!("burst"), &json!("calls"), &json!("burst"))
    );
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(
        usage["calls"]["used"], 3,
        "a rate-limited request consumes no quota"
    );
}

#[test]
fn token_quota_and_chat_with_the_echo_bot() {
    let s = TestServer::start();
    s.plan("tok", Some(100), Some(20), None);
    let key = s.tenant_with_key("c", "tok");
    let r = s.tenant(&key, "POST", "/api/chat", Some(json!({"message": "Hello there, bot!", "botId": "b1", "userId": "u1", "model": "gpt-4o"})));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("99"));
    let body: Value = r.json().unwrap();
    assert_eq!(body["reply"], "Echo: Hello there, bot!");
    assert_eq!(body["model"], "gpt-4o");
    let (p, c) = (
        body["usage"]["promptTokens"].as_u64().unwrap(),
        body["usage"]["completionTokens"].as_u64().unwrap(),
    );
    assert_eq!(body["usage"]["totalTokens"].as_u64().unwrap(), p + c);
    let expected_cost = p as f64 * 2.5e-6 + c as f64 * 1e-5;
    assert!((body["costUsd"].as_f64().unwrap() - expected_cost).abs() < 1e-12);
    assert!(header(
        &s.tenant(&key, "GET", "/api/billing/usage", None),
        "ratelimit-policy"
    )
    .unwrap()
    .contains("\"tokens\";q=20"));

    // Report enough tokens to reach the token quota: the next call is refused.
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/x", "tokensUsed": 20, "calls": 0})),
    );
    assert_eq!(r.status(), 202);
    let body = error_body(
        s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": "again", "botId": "b1"})),
        ),
        429,
        "token_quota_exceeded",
    );
    assert_eq!(body["limit"], 20);
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 1);
    assert_eq!(usage["tokens"]["used"].as_u64().unwrap(), p + c + 20);
    error_body(
        s.tenant(&key, "POST", "/api/chat", Some(json!({"botId": "b1"}))),
        422,
        "invalid_request",
    );
    error_body(
        s.tenant(&key, "POST", "/api/chat", Some(json!({"message": "hi"}))),
        422,
        "invalid_request",
    );
    let long = "x".repeat(32 * 1024 + 1);
    error_body(
        s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": long, "botId": "b"})),
        ),
        422,
        "invalid_request",
    );
}

#[test]
fn usage_ingestion_counts_and_validates_whole_batches() {
    let s = TestServer::start();
    s.plan("ing", Some(10), None, None);
    let key = s.tenant_with_key("ing", "ing");
    let batch: Vec<Value> = (0..4)
        .map(|i| json!({"endpoint": "/api/chat", "method": "POST", "statusCode": 200, "responseTime": 12.5,
                        "promptTokens": 100, "completionTokens": 50, "model": "gpt-4o-mini",
                        "userId": format!("u{i}"), "botId": "bot", "metadata": {"messageLength": 50, "k": "v"}}))
        .collect();
    let r = s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(batch)));
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().unwrap()["accepted"], 4);
    // A bad record anywhere refuses the whole batch, naming it.
    let bad = json!([{"endpoint": "/a"}, {"endpoint": "/b", "statusCode": 700}]);
    let body = error_body(
        s.tenant(&key, "POST", "/api/v1/usage", Some(bad)),
        422,
        "invalid_request",
    );
    assert!(
        body["error"].as_str().unwrap().starts_with("records[1]"),
        "{body}"
    );
    error_body(
        s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(json!({"endpoint": "/a", "tenantId": "someone-else"})),
        ),
        403,
        "tenant_mismatch",
    );
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({"endpoint": "/a"})).collect();
    error_body(
        s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(too_many))),
        422,
        "invalid_request",
    );
    error_body(
        s.tenant(&key, "POST", "/api/v1/usage", Some(json!(5))),
        422,
        "invalid_request",
    );

    // Usage past the quota is still stored and counted.
    let over: Vec<Value> = (0..8)
        .map(|_| json!({"endpoint": "/a", "calls": 1}))
        .collect();
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(over)))
            .status(),
        202
    );
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 12);
    assert_eq!(usage["calls"]["remaining"], 0);
    assert_eq!(usage["calls"]["percent"], 120.0);
    assert_eq!(usage["tokens"]["used"], 600);
    assert_eq!(usage["tokens"]["limit"], Value::Null);
    assert_eq!(usage["plan"]["id"], "ing");
    let start = usage["period"]["start"].as_str().unwrap();
    assert!(start.ends_with("-01T00:00:00.000Z"), "{start}");
    assert_eq!(usage["resetAt"], usage["period"]["end"]);
}

/// NDJSON (`application/x-ndjson`): a record per line, blank lines and
/// CRLF allowed, parsed as the body arrives (a chunked body whose chunks
/// split records mid-string), errors naming the record and its line, and
/// a refused body taking nothing.
#[test]
fn usage_ingestion_takes_ndjson_line_by_line() {
    let s = TestServer::start();
    let key = s.tenant_with_key("nd", "professional");
    let post = |body: &str, ct: &str| {
        reqwest::blocking::Client::new()
            .post(s.url("/api/v1/usage"))
            .bearer_auth(&key)
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let used = || -> u64 {
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<Value>()
            .unwrap()["calls"]["used"]
            .as_u64()
            .unwrap()
    };
    let body = "{\"endpoint\":\"/api/chat\",\"userId\":\"ann\",\"promptTokens\":10}\r\n\n  \n{\"endpoint\":\"/api/chat\",\"userId\":\"b\\u00e9a\"}\n{\"endpoint\":\"/v1/x\",\"calls\":3}";
    let r = post(body, "application/x-ndjson");
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().unwrap()["accepted"], 3);
    assert_eq!(used(), 5);
    // Chunks that cut a record mid-string and fall on a newline.
    let lines: String = (0..50)
        .map(|i| format!("{{\"endpoint\":\"/api/chat\",\"userId\":\"streamed-{i}\"}}\n"))
        .collect();
    let mut chunked = format!(
        "POST /api/v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/jsonl\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let first_newline = lines.find('\n').unwrap() + 1;
    for piece in [
        &lines[..17],
        &lines[17..first_newline],
        &lines[first_newline..],
    ] {
        chunked.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = common::raw_http(&s.url("/"), &chunked);
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("\"accepted\":50"), "{text}");
    assert_eq!(used(), 55);
    // A record of the wrong shape: named with its line; nothing taken.
    let bad = "{\"endpoint\":\"/a\"}\n\n{\"endpoint\":\"/b\",\"statusCode\":700}\n";
    let e = error_body(post(bad, "application/x-ndjson"), 422, "invalid_request");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("records[1] (line 3): statusCode"),
        "{e}"
    );
    let e = error_body(
        post(
            "{\"endpoint\":\"/a\"}\n{\"nope\":1}\n",
            "application/x-ndjson",
        ),
        422,
        "invalid_request",
    );
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("records[1] (line 2): unknown field `nope`"),
        "{e}"
    );
    let e = error_body(
        post(
            "{\"endpoint\":\"/a\"}\n{\"endpoint\":\n",
            "application/x-ndjson",
        ),
        400,
        "invalid_json",
    );
    assert!(e["error"].as_str().unwrap().contains("line 2"), "{e}");
    let many = "{\"endpoint\":\"/a\"}\n".repeat(10_001);
    let e = error_body(post(&many, "application/x-ndjson"), 422, "invalid_request");
    assert!(e["error"].as_str().unwrap().contains("10,000"), "{e}");
    error_body(
        post("{\"endpoint\":\"/a\"}", "text/plain"),
        415,
        "unsupported_media_type",
    );
    assert_eq!(used(), 55, "a refused body takes nothing");
}

#[test]
fn subscription_views_for_tenant_and_admin() {
    let s = TestServer::start();
    let key = s.tenant_with_key("sub", "professional");
    let mine: Value = s
        .tenant(&key, "GET", "/api/billing/subscription", None)
        .json()
        .unwrap();
    assert_eq!(mine["tenantId"], "sub");
    assert_eq!(mine["tenantName"], "Tenant sub");
    assert_eq!(mine["plan"]["monthlyCalls"], 1_000_000);
    assert_eq!(mine["status"], "active");
    assert!(
        mine["currentPeriodStart"].as_str().unwrap() < mine["currentPeriodEnd"].as_str().unwrap()
    );
    let admin: Value = s
        .admin("GET", "/api/admin/tenants/sub/subscription", None)
        .json()
        .unwrap();
    assert_eq!(admin, mine);
    s.tenant(&key, "POST", "/api/v1/authorize", None);
    let usage: Value = s
        .admin("GET", "/api/admin/tenants/sub/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 1);
    error_body(
        s.admin("GET", "/api/admin/tenants/ghost/usage", None),
        404,
        "not_found",
    );
}

#[test]
fn isolation_between_tenants_and_admin() {
    let s = TestServer::start();
    let a = s.tenant_with_key("tenant-a", "starter");
    let b = s.tenant_with_key("tenant-b", "starter");
    for _ in 0..3 {
        s.tenant(&a, "POST", "/api/v1/authorize", None);
    }
    let ua: Value = s
        .tenant(&a, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    let ub: Value = s
        .tenant(&b, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(
        (ua["calls"]["used"].clone(), ub["calls"]["used"].clone()),
        (json!(3), json!(0))
    );
    let sb: Value = s
        .tenant(&b, "GET", "/api/billing/subscription", None)
        .json()
        .unwrap();
    assert_eq!(sb["tenantId"], "tenant-b");
    // Tenant keys never open admin routes; the admin token is not a tenant key.
    for (m, p) in [
        ("GET", "/api/admin/tenants"),
        ("GET", "/api/admin/tenants/tenant-b"),
        ("POST", "/api/admin/tenants/tenant-b/keys"),
        ("GET", "/api/admin/plans"),
    ] {
        error_body(s.tenant(&a, m, p, None), 403, "admin_only");
    }
    error_body(
        s.tenant(ADMIN, "GET", "/api/billing/usage", None),
        401,
        "invalid_api_key",
    );
    error_body(
        s.http.get(s.url("/api/admin/tenants")).send().unwrap(),
        401,
        "missing_admin_token",
    );
    error_body(
        s.tenant("wrong", "GET", "/api/admin/tenants", None),
        401,
        "invalid_admin_token",
    );
    error_body(
        s.http.get(s.url("/api/billing/usage")).send().unwrap(),
        401,
        "missing_api_key",
    );
    let r = s
        .http
        .get(s.url("/api/billing/usage"))
        .header("Authorization", "Basic abc")
        .send()
        .unwrap();
    error_body(r, 401, "invalid_credentials");
    // A 401 carries no rate-limit headers (nothing was authenticated).
    let r = s.tenant(
        "tg_00000000000000000000000000000000",
        "POST",
        "/api/v1/authorize",
        None,
    );
    assert!(header(&r, "x-ratelimit-limit").is_none());
    error_body(r, 401, "invalid_api_key");
}

#[test]
fn sixty_four_concurrent_clients_get_exactly_the_limit() {
    let s = TestServer::start();
    s.plan("race", Some(200), None, None);
    let key = s.tenant_with_key("racer", "race");
    let url = s.url("/api/v1/authorize");
    let (allowed, rejected): (u64, u64) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let (url, key) = (url.clone(), key.clone());
                scope.spawn(move || {
                    let client = reqwest::blocking::Client::new();
                    let (mut ok, mut no) = (0, 0);
                    for _ in 0..5 {
                        let r = client.post(&url).bearer_auth(&key).send().unwrap();
                        match r.status().as_u16() {
                            200 => ok += 1,
                            429 => no += 1,
                            other => panic!("unexpected status {other}"),
                        }
                    }
                    (ok, no)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(allowed + rejected, 320);
    assert_eq!(allowed, 200, "exactly the limit is allowed");
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 200);
}

#[test]
fn the_month_boundary_resets_the_quota() {
    let last_ms = Utc.with_ymd_and_hms(2027, 2, 28, 23, 59, 59).unwrap()
        + chrono::Duration::milliseconds(999);
    let clock = Arc::new(ManualClock::at(last_ms));
    let s = TestServer::start_with(|_| {}, clock.clone());
    s.plan("two", Some(2), None, None);
    let key = s.tenant_with_key("feb", "two");
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", Some(json!({"cost": 2})))
            .status(),
        200
    );
    let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        header(&r, "x-ratelimit-reset").as_deref(),
        Some("2027-03-01T00:00:00.000Z")
    );
    error_body(r, 429, "quota_exceeded");
    clock.advance_ms(1);
    let r = s.tenant(&key, "POST", "/api/v1/authorize", None);
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-ratelimit-reset").as_deref(),
        Some("2027-04-01T00:00:00.000Z")
    );
    assert_eq!(r.json::<Value>().unwrap()["used"], 1);
}

/// A first visit lands on the page: `/` and `/dashboard` redirect to it
/// (they were JSON 404s).
#[test]
fn the_root_and_dashboard_lead_to_the_page() {
    let s = TestServer::start();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/dashboard"] {
        let r = http.get(s.url(path)).send().unwrap();
        assert_eq!(r.status(), 302, "{path}");
        assert_eq!(r.headers()["location"], "/dashboard/api-usage", "{path}");
    }
    let r = s.http.get(s.url("/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("<html"));
}

/// Money is a plain decimal everywhere it is written: the CSV wrote
/// `0.0032949999999999998` and the JSON `3.45e-6`.
#[test]
fn amounts_are_plain_decimals_in_csv_and_json() {
    let s = TestServer::start();
    s.plan("open", None, None, None);
    let key = s.tenant_with_key("spender", "open");
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        // gpt-4.1-mini: $0.40 per million prompt tokens.
        Some(json!([
            {"endpoint": "/a", "model": "gpt-4.1-mini", "promptTokens": 1},
            {"endpoint": "/b", "model": "gpt-4.1-mini", "promptTokens": 3}
        ])),
    );
    assert_eq!(r.status(), 202);
    wait_until(|| {
        s.tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson",
            None,
        )
        .text()
        .unwrap()
        .lines()
        .count()
            == 2
    });
    let export = |format: &str| {
        let path = format!("/api/billing/api-usage/export?format={format}");
        s.tenant(&key, "GET", &path, None).text().unwrap()
    };
    let csv = export("csv");
    assert!(csv.contains(",0.0000004,"), "{csv}");
    assert!(csv.contains(",0.0000012,"), "{csv}");
    assert!(!csv.contains("e-"), "{csv}");
    let ndjson = export("ndjson");
    assert!(ndjson.contains("\"costUsd\":0.0000004,"), "{ndjson}");
    assert!(ndjson.contains("\"costUsd\":0.0000012,"), "{ndjson}");
    let report = s
        .tenant(&key, "GET", "/api/billing/api-usage?bucket=day", None)
        .text()
        .unwrap();
    assert!(!report.contains("e-"), "an exponent in {report}");
    let v: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(v["summary"]["estimatedCostUsd"], json!(0.000002));
}

/// `/api/v1/forward-auth` (any method): decides and records the original
/// request the proxy names, says what it answered in `X-Tollgate-*`, takes
/// the cost from `X-Tollgate-Cost`, and with `?via=nginx` answers a 429 as
/// 403 (nginx's auth_request passes on only 2xx, 401 and 403).
#[test]
fn forward_auth_decides_the_original_request() {
    let s = TestServer::start();
    s.plan("three", Some(3), None, None);
    let key = s.tenant_with_key("fa", "three");
    let ask = |method: reqwest::Method, extra: &[(&str, &str)], query: &str| {
        let mut r = s
            .http
            .request(method, s.url(&format!("/api/v1/forward-auth{query}")))
            .bearer_auth(&key);
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.send().unwrap()
    };
    let r = ask(
        reqwest::Method::GET,
        &[
            ("X-Forwarded-Uri", "/v1/items?x=1"),
            ("X-Forwarded-Method", "delete"),
        ],
        "",
    );
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-tollgate-tenant").as_deref(), Some("fa"));
    assert_eq!(header(&r, "x-tollgate-plan").as_deref(), Some("three"));
    assert_eq!(header(&r, "x-tollgate-status").as_deref(), Some("200"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("2"));
    // A cost, from any method; a bad one is refused before anything is taken.
    let r = ask(reqwest::Method::PATCH, &[("X-Tollgate-Cost", "0")], "");
    error_body(r, 422, "invalid_request");
    let r = ask(
        reqwest::Method::PATCH,
        &[("X-Tollgate-Cost", "2"), ("X-Original-URI", "/v2/x")],
        "",
    );
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    // Over the quota: 429 - or 403 for nginx, which still learns it was 429.
    let r = ask(reqwest::Method::GET, &[], "");
    assert_eq!(header(&r, "x-tollgate-status").as_deref(), Some("429"));
    assert!(header(&r, "retry-after").is_some());
    error_body(r, 429, "quota_exceeded");
    let r = ask(reqwest::Method::GET, &[], "?via=nginx");
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "x-tollgate-status").as_deref(), Some("429"));
    assert_eq!(
        header(&r, "x-tollgate-error").as_deref(),
        Some("quota_exceeded")
    );
    // An unknown key: 401, said in the headers too.
    let r = s
        .http
        .get(s.url("/api/v1/forward-auth"))
        .bearer_auth("tg_nope")
        .send()
        .unwrap();
    assert_eq!(
        header(&r, "x-tollgate-error").as_deref(),
        Some("invalid_api_key")
    );
    error_body(r, 401, "invalid_api_key");
    // The original requests are in the analytics.
    wait_until(|| s.report("fa")["summary"]["totalRequests"] == 4);
    let endpoints = s.report("fa")["endpoints"].to_string();
    assert!(
        endpoints.contains("/v1/items") && endpoints.contains("DELETE"),
        "{endpoints}"
    );
    assert!(
        endpoints.contains("/v2/x") && endpoints.contains("PATCH"),
        "{endpoints}"
    );

    // What the proxy says of the original request is bounded: a huge path
    // is kept as its first 256 bytes, and an invalid method falls back to
    // this request's own.
    let big = s.tenant_with_key("fa-big", "three");
    let long = format!("/v1/{}", "x".repeat(10_000));
    let r = s
        .http
        .put(s.url("/api/v1/forward-auth"))
        .bearer_auth(&big)
        .header("X-Forwarded-Uri", &long)
        .header("X-Forwarded-Method", "NOT A METHOD")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(|| s.report("fa-big")["summary"]["totalRequests"] == 1);
    let endpoints = s.report("fa-big")["endpoints"].to_string();
    assert!(
        endpoints.contains(&long[..256]) && !endpoints.contains(&long[..257]),
        "{endpoints}"
    );
    assert!(endpoints.contains("PUT"), "{endpoints}");
}

/// Issue 41, item 7: a body of the wrong shape is answered in our words,
/// naming the field - on the enforcement routes, usage ingest (JSON and
/// NDJSON, with the record) and the admin API - not in serde's ("invalid
/// type: string \"x\", expected u64 at line 1 column 11").
#[test]
fn type_errors_name_the_field_in_plain_words() {
    let s = TestServer::start();
    s.plan("words", Some(100), None, None);
    let key = s.tenant_with_key("wordy", "words");
    let said = |r: reqwest::blocking::Response| {
        error_body(r, 422, "invalid_request")["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        said(s.tenant(
            &key,
            "POST",
            "/api/v1/authorize",
            Some(json!({"cost": "x"}))
        )),
        "cost must be a whole number (0 or more), not the text \"x\""
    );
    assert_eq!(
        said(s.tenant(&key, "POST", "/api/v1/check", Some(json!({"cost": -2})))),
        "cost must be a whole number (0 or more), not -2"
    );
    assert_eq!(
        said(s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(json!([{"endpoint": "/a"}, {"endpoint": "/b", "promptTokens": "many"}]))
        )),
        "records[1]: promptTokens must be a whole number (0 or more), not the text \"many\""
    );
    assert_eq!(
        said(s.tenant(&key, "POST", "/api/v1/usage", Some(json!({"endpoint": 5})))),
        "endpoint must be text, not 5"
    );
    let ndjson = s
        .http
        .post(s.url("/api/v1/usage"))
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .body("{\"endpoint\":\"/a\"}\n{\"endpoint\":\"/a\",\"statusCode\":true}\n")
        .send()
        .unwrap();
    assert_eq!(
        said(ndjson),
        "records[1] (line 2): statusCode must be a whole number (0 or more), not true"
    );
    assert_eq!(
        said(s.admin(
            "POST",
            "/api/admin/plans",
            Some(json!({"id": "p2", "name": "P", "monthlyCalls": "lots"}))
        )),
        "monthlyCalls must be a whole number (0 or more), not the text \"lots\""
    );
    assert_eq!(
        said(s.admin(
            "POST",
            "/api/admin/plans",
            Some(json!({"id": "p3", "name": "P", "rateLimit": {"requests": 5, "perSeconds": "1"}}))
        )),
        "rateLimit.perSeconds must be a whole number (0 or more), not the text \"1\""
    );
    // Nothing was taken by any of them.
    assert_eq!(
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<Value>()
            .unwrap()["calls"]["used"],
        0
    );
}
