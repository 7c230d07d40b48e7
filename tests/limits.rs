//! Limits of SPEC §12 (issue 39) through the real server on real sled
//! files: for each scope and measure, racing requests get exactly the
//! limit; a decision takes from every applicable limit or from none; a
//! dollar budget holds under 64 concurrent requests (LiteLLM #34732);
//! requests in flight are given back when settled; a refusal names its
//! limit; the table of end users is bounded and never hands out a second
//! allowance.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;

use chrono::Utc;
use common::{header, TestServer};
use serde_json::{json, Value};
use tollgate::clock::{ManualClock, SystemClock};
use tollgate::config::ProxyConfig;

fn put_limits(s: &TestServer, path: &str, limits: Value) -> Value {
    let r = s.admin("PUT", path, Some(json!({ "limits": limits })));
    let status = r.status().as_u16();
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
    body
}

/// A tenant on the open plan with `limits` of its own, and its key.
fn tenant(s: &TestServer, id: &str, limits: Value) -> String {
    let key = s.tenant_with_key(id, "open");
    put_limits(s, &format!("/api/admin/tenants/{id}/limits"), limits);
    key
}

fn authorize(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let r = s.tenant(key, "POST", "/api/v1/authorize", Some(body));
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// `n` authorizations of `body`, 8 at a time: how many were allowed, and
/// the answers.
fn race(s: &TestServer, key: &str, n: usize, body: &Value) -> (usize, Vec<Value>) {
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                scope.spawn(move || {
                    (0..n)
                        .filter(|i| i % 8 == t)
                        .map(|_| authorize(s, key, body.clone()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 429, "{status} {body}");
    }
    let allowed = answers.iter().filter(|(s, _)| *s == 200).count();
    (allowed, answers.into_iter().map(|(_, b)| b).collect())
}

/// A server whose clock stands still five seconds into today (UTC): a
/// race never straddles the end of a window.
fn server() -> TestServer {
    let day = Utc::now().timestamp().div_euclid(86_400) * 86_400;
    let start = chrono::DateTime::from_timestamp(day + 5, 0).unwrap();
    let s = TestServer::start_with(|_| {}, Arc::new(ManualClock::at(start)));
    s.plan("open", None, None, None);
    s
}

#[test]
fn each_scope_and_measure_passes_exactly_its_limit() {
    let s = server();
    let limit = |name: &str, scope: &str, measure: &str, window: &str, amount: Value| json!([{"name": name, "scope": scope, "measure": measure, "window": window, "amount": amount}]);
    // The tenant's calls per minute.
    let k = tenant(
        &s,
        "t-calls",
        limit("per-minute", "tenant", "calls", "minute", json!(25)),
    );
    assert_eq!(race(&s, &k, 60, &json!({})).0, 25);
    // Each end user's calls per day: two users, each exactly its own.
    let k = tenant(
        &s,
        "t-user",
        limit("per-user", "user", "calls", "day", json!(7)),
    );
    assert_eq!(race(&s, &k, 40, &json!({"userId": "ana"})).0, 7);
    assert_eq!(race(&s, &k, 40, &json!({"userId": "bo"})).0, 7);
    // Each bot's calls per hour.
    let k = tenant(
        &s,
        "t-bot",
        limit("per-bot", "bot", "calls", "hour", json!(11)),
    );
    assert_eq!(race(&s, &k, 40, &json!({"botId": "helper"})).0, 11);
    // Each model's tokens per minute, 100 reserved a call.
    let k = tenant(
        &s,
        "t-model",
        limit("gpt4o-tpm", "model", "tokens", "minute", json!(1000)),
    );
    let body = json!({"model": "gpt-4o", "estimateTokens": 100});
    assert_eq!(race(&s, &k, 40, &body).0, 10);
    let other = json!({"model": "gpt-4o-mini", "estimateTokens": 100});
    assert_eq!(race(&s, &k, 40, &other).0, 10, "another model has its own");
    // Each key's calls in a burst window (5 at once, 5 a minute).
    let burst = json!([{"name": "key-burst", "scope": "key", "measure": "calls",
                        "window": "burst", "amount": 5, "perSeconds": 60, "burst": 5}]);
    let k = tenant(&s, "t-key", burst);
    assert_eq!(race(&s, &k, 40, &json!({})).0, 5);
    let k2 = s.key("t-key");
    assert_eq!(race(&s, &k2, 40, &json!({})).0, 5, "each key has its own");
    // A key's own limit: tokens per day, 100 reserved a call.
    let k = s.tenant_with_key("t-own", "open");
    let keys: Value = s
        .admin("GET", "/api/admin/tenants/t-own/keys", None)
        .json()
        .unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    put_limits(
        &s,
        &format!("/api/admin/tenants/t-own/keys/{key_id}/limits"),
        limit("key-tokens", "key", "tokens", "day", json!(500)),
    );
    assert_eq!(race(&s, &k, 40, &json!({"estimateTokens": 100})).0, 5);
    // A tenant's spend per month: $1.00, $0.05 reserved a call.
    let k = tenant(
        &s,
        "t-spend",
        limit("budget", "tenant", "spendUsd", "month", json!(1.0)),
    );
    assert_eq!(race(&s, &k, 64, &json!({"estimateUsd": 0.05})).0, 20);
    // A tenant's requests in flight: an authorization holds its place
    // until the record naming its reservation settles it.
    let k = tenant(
        &s,
        "t-flight",
        limit("in-flight-4", "tenant", "inFlight", "none", json!(4)),
    );
    let (allowed, answers) = race(&s, &k, 40, &json!({}));
    assert_eq!(allowed, 4);
    let id = answers
        .iter()
        .find_map(|a| a["reservationId"].as_str())
        .expect("an allowed authorization holds a reservation")
        .to_string();
    assert_eq!(authorize(&s, &k, json!({})).0, 429);
    let r = s.tenant(
        &k,
        "POST",
        "/api/v1/usage",
        Some(json!([{"endpoint": "/v1/chat", "calls": 0, "reservationId": id}])),
    );
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    common::wait_until(|| authorize(&s, &k, json!({})).0 == 200);
}

#[test]
fn a_refused_request_takes_nothing_from_the_other_limits() {
    let s = server();
    let k = tenant(
        &s,
        "acme",
        json!([
            {"name": "per-user", "scope": "user", "measure": "calls", "window": "day", "amount": 3},
            {"name": "tenant-minute", "scope": "tenant", "measure": "calls", "window": "minute", "amount": 10}
        ]),
    );
    let allowed = (0..5)
        .filter(|_| authorize(&s, &k, json!({"userId": "ana"})).0 == 200)
        .count();
    assert_eq!(allowed, 3);
    // Two refusals took nothing of the tenant's minute: 3 used, then this one.
    let r = s.tenant(
        &k,
        "POST",
        "/api/v1/authorize",
        Some(json!({"userId": "bo"})),
    );
    assert_eq!(r.status(), 200);
    let state = header(&r, "ratelimit").unwrap();
    assert!(state.contains("\"tenant-minute\";r=6;"), "{state}");
    let policy = header(&r, "ratelimit-policy").unwrap();
    assert!(policy.contains("\"tenant-minute\";q=10;w=60"), "{policy}");
    assert!(policy.contains("\"per-user\";q=3;w=86400"), "{policy}");
    // The monthly quota of the plan was not touched by the refusals either.
    let usage: Value = s
        .tenant(&k, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 4, "{usage}");
}

#[test]
fn a_refusal_names_its_limit_and_subject() {
    let s = server();
    let k = tenant(
        &s,
        "acme",
        json!([{"name": "per-user", "scope": "user", "measure": "calls", "window": "day", "amount": 1}]),
    );
    assert_eq!(authorize(&s, &k, json!({"userId": "ana"})).0, 200);
    let r = s.tenant(
        &k,
        "POST",
        "/api/v1/authorize",
        Some(json!({"userId": "ana"})),
    );
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "quota_exceeded");
    assert_eq!(body["limitName"], "per-user");
    assert_eq!(body["scope"], "user");
    assert_eq!(body["measure"], "calls");
    assert_eq!(body["window"], "day");
    assert_eq!(body["subject"], "ana");
    assert_eq!(
        (body["limit"].as_u64(), body["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(
        body["error"].as_str().unwrap().contains("per-user"),
        "{body}"
    );
}

/// LiteLLM #34732: concurrent requests overshot a budget by a multiple
/// of the concurrency. 64 at once against $1.00, each of known price
/// ($0.05: 20,000 prompt tokens of gpt-4o): exactly 20 pass, and once
/// each settles at its real cost the budget is spent to the cent and
/// refuses the next.
#[test]
fn a_dollar_budget_holds_under_64_concurrent_requests() {
    let s = server();
    let k = tenant(
        &s,
        "acme",
        json!([{"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "month", "amount": 1.0}]),
    );
    let body = json!({"model": "gpt-4o", "estimateUsd": 0.05});
    let (allowed, answers) = race(&s, &k, 64, &body);
    assert_eq!(allowed, 20, "never more than the budget holds");
    let refused = answers.iter().find(|a| a["code"].is_string()).unwrap();
    assert_eq!(refused["code"], "budget_exceeded");
    assert_eq!(refused["measure"], "spendUsd");
    assert_eq!(refused["limit"].as_f64(), Some(1.0));
    let ids: Vec<&str> = answers
        .iter()
        .filter_map(|a| a["reservationId"].as_str())
        .collect();
    assert_eq!(ids.len(), 20);
    for a in answers.iter().filter(|a| a["allowed"] == true) {
        assert_eq!(a["reservedUsd"].as_f64(), Some(0.05), "{a}");
    }
    // Each settles at its real price: 20,000 prompt tokens of gpt-4o.
    let records: Vec<Value> = ids
        .iter()
        .map(|id| json!({"endpoint": "/v1/chat", "calls": 0, "model": "gpt-4o", "promptTokens": 20000, "reservationId": id}))
        .collect();
    let r = s.tenant(&k, "POST", "/api/v1/usage", Some(json!(records)));
    assert_eq!(r.status(), 202);
    let (status, refused) = authorize(&s, &k, json!({"estimateUsd": 0.01}));
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["used"].as_f64(), Some(1.0), "{refused}");
    // Without an estimate a spent budget refuses too (nothing is left).
    assert_eq!(authorize(&s, &k, json!({})).0, 429);
}

/// A settlement below the estimate gives the rest back; reported usage
/// without a reservation debits directly.
#[test]
fn spend_settles_to_what_was_used_and_reports_debit() {
    let s = server();
    let k = tenant(
        &s,
        "acme",
        json!([{"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "day", "amount": 0.1}]),
    );
    let (status, a) = authorize(&s, &k, json!({"estimateUsd": 0.08}));
    assert_eq!(status, 200, "{a}");
    assert_eq!(authorize(&s, &k, json!({"estimateUsd": 0.05})).0, 429);
    // It used $0.01 (4,000 prompt tokens of gpt-4o): $0.09 left.
    let id = a["reservationId"].as_str().unwrap();
    let settle = json!([{"endpoint": "/v1/chat", "calls": 0, "model": "gpt-4o", "promptTokens": 4000, "reservationId": id}]);
    assert_eq!(
        s.tenant(&k, "POST", "/api/v1/usage", Some(settle)).status(),
        202
    );
    assert_eq!(authorize(&s, &k, json!({"estimateUsd": 0.05})).0, 200);
    // A reported record costing $0.03 debits directly: $0.01 left.
    let report = json!([{"endpoint": "/v1/chat", "model": "gpt-4o", "promptTokens": 12000}]);
    assert_eq!(
        s.tenant(&k, "POST", "/api/v1/usage", Some(report)).status(),
        202
    );
    let (status, refused) = authorize(&s, &k, json!({"estimateUsd": 0.02}));
    assert_eq!(status, 429, "{refused}");
    assert_eq!(authorize(&s, &k, json!({"estimateUsd": 0.01})).0, 200);
}

/// `[limits] max_subjects_per_tenant`: a full table refuses a new end
/// user (never resetting one that has counts), and takes it once the
/// others' windows have passed.
#[test]
fn the_table_of_end_users_is_bounded_and_never_resets_a_count() {
    // Five seconds into a minute: the test's steps stay inside it.
    let minute = Utc::now().timestamp().div_euclid(60) * 60;
    let start = chrono::DateTime::from_timestamp(minute + 5, 0).unwrap();
    let clock = Arc::new(ManualClock::at(start));
    let s = TestServer::start_with(|c| c.limits.max_subjects_per_tenant = 3, clock.clone());
    s.plan("open", None, None, None);
    let k = tenant(
        &s,
        "acme",
        json!([{"name": "per-user", "scope": "user", "measure": "calls", "window": "minute", "amount": 2}]),
    );
    for u in ["a", "b", "c"] {
        assert_eq!(authorize(&s, &k, json!({"userId": u})).0, 200);
    }
    assert_eq!(authorize(&s, &k, json!({"userId": "a"})).0, 200);
    assert_eq!(
        authorize(&s, &k, json!({"userId": "a"})).0,
        429,
        "a is at its limit"
    );
    let (status, body) = authorize(&s, &k, json!({"userId": "d"}));
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cannot track another"),
        "{body}"
    );
    // Still within the minute, after a sweep: nothing was reset.
    clock.advance_ms(2_000);
    assert_eq!(authorize(&s, &k, json!({"userId": "d"})).0, 429);
    assert_eq!(
        authorize(&s, &k, json!({"userId": "a"})).0,
        429,
        "no second allowance"
    );
    // The minute has passed: idle entries go, the new user is taken.
    clock.advance_ms(61_000);
    assert_eq!(authorize(&s, &k, json!({"userId": "d"})).0, 200);
}

#[test]
fn limits_are_set_where_they_belong_and_checked() {
    let s = server();
    // A plan's list holds its own fields too; a PUT sets them.
    let body = put_limits(
        &s,
        "/api/admin/plans/open/limits",
        json!([
            {"name": "month", "scope": "tenant", "measure": "calls", "window": "month", "amount": 1000},
            {"name": "per-user", "scope": "user", "measure": "tokens", "window": "day", "amount": 5000}
        ]),
    );
    assert_eq!(body["limits"].as_array().unwrap().len(), 2, "{body}");
    let plan: Value = s
        .admin("GET", "/api/admin/plans/open", None)
        .json()
        .unwrap();
    assert_eq!(plan["monthlyCalls"], 1000);
    assert_eq!(plan["limits"][0]["name"], "per-user");
    // A tenant overrides by name; its effective list shows both.
    s.tenant_with_key("acme", "open");
    let t = put_limits(
        &s,
        "/api/admin/tenants/acme/limits",
        json!([{"name": "per-user", "scope": "user", "measure": "tokens", "window": "day", "amount": 9000}]),
    );
    let effective = t["effective"].as_array().unwrap();
    assert!(
        effective
            .iter()
            .any(|l| l["name"] == "per-user" && l["amount"] == 9000.0),
        "{t}"
    );
    assert!(!effective.iter().any(|l| l["amount"] == 5000.0), "{t}");
    // Bad limits are 422s, with what is wrong.
    for (path, bad, says) in [
        (
            "/api/admin/tenants/acme/limits",
            json!([{"name": "x", "scope": "galaxy", "measure": "calls", "window": "day", "amount": 1}]),
            "scope",
        ),
        (
            "/api/admin/tenants/acme/limits",
            json!([{"name": "x", "scope": "user", "measure": "inFlight", "window": "day", "amount": 1}]),
            "none",
        ),
        (
            "/api/admin/tenants/acme/limits",
            json!([{"name": "x", "scope": "user", "measure": "calls", "window": "day", "amount": 1.5}]),
            "whole",
        ),
        (
            "/api/admin/tenants/acme/limits",
            json!([{"name": "month", "scope": "user", "measure": "calls", "window": "day", "amount": 1}]),
            "own fields",
        ),
        (
            "/api/admin/plans/open/limits",
            json!([{"name": "month", "scope": "user", "measure": "calls", "window": "day", "amount": 1}]),
            "plan's own field",
        ),
    ] {
        let r = s.admin("PUT", path, Some(json!({ "limits": bad })));
        assert_eq!(r.status(), 422);
        let e: Value = r.json().unwrap();
        assert!(e["error"].as_str().unwrap().contains(says), "{e}");
    }
    let keys: Value = s
        .admin("GET", "/api/admin/tenants/acme/keys", None)
        .json()
        .unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    let r = s.admin(
        "PUT",
        &format!("/api/admin/tenants/acme/keys/{key_id}/limits"),
        Some(json!({"limits": [{"name": "u", "scope": "user", "measure": "calls", "window": "day", "amount": 1}]})),
    );
    assert_eq!(r.status(), 422, "a key's own limits are of scope key");
}

/// The limits and their counts survive a restart: the counts of the
/// current windows are rebuilt from the stored records, so a restart hands
/// out no second allowance.
#[test]
fn limits_and_their_counts_survive_a_restart() {
    let mut s = server();
    let k = tenant(
        &s,
        "acme",
        json!([
            {"name": "per-user", "scope": "user", "measure": "calls", "window": "day", "amount": 3},
            {"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "month", "amount": 0.1}
        ]),
    );
    assert_eq!(race(&s, &k, 2, &json!({"userId": "ana"})).0, 2);
    let spend = json!([{"endpoint": "/v1/chat", "model": "gpt-4o", "promptTokens": 32000}]);
    assert_eq!(
        s.tenant(&k, "POST", "/api/v1/usage", Some(spend)).status(),
        202
    );
    s.restart_with(|_| {}, Arc::new(tollgate::clock::SystemClock));
    let t: Value = s
        .admin("GET", "/api/admin/tenants/acme/limits", None)
        .json()
        .unwrap();
    assert_eq!(t["limits"][0]["name"], "per-user", "{t}");
    assert_eq!(race(&s, &k, 10, &json!({"userId": "ana"})).0, 1);
    // $0.08 of the $0.10 was spent before the restart.
    assert_eq!(authorize(&s, &k, json!({"estimateUsd": 0.03})).0, 429);
    assert_eq!(authorize(&s, &k, json!({"estimateUsd": 0.02})).0, 200);
}

/// The gateway reserves what a call may cost - its prompt and its
/// `max_tokens` at the model's price - before it runs, and settles it at
/// what the answer reported: against a $0.05 budget, calls that each cost
/// $0.010025 (10 prompt and 1,000 completion tokens of gpt-4o) pass four
/// times, however many race, and the fifth is refused `budget_exceeded`.
#[test]
fn the_gateway_reserves_and_settles_spend() {
    let upstream = fake_http::FakeHttp::start(|_, _, conn| {
        let body = json!({
            "id": "x", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1000, "total_tokens": 1010}
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        fake_http::reply(conn, 200, "application/json", &body.to_string());
    });
    let proxies = vec![ProxyConfig {
        prefix: "/v1".into(),
        upstream: upstream.url.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect: Default::default(),
        name: String::new(),
    }];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("open", None, None, None);
    let k = tenant(
        &s,
        "acme",
        json!([{"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "day", "amount": 0.05}]),
    );
    let call = json!({"model": "gpt-4o", "max_tokens": 1000,
                      "messages": [{"role": "user", "content": "hi"}]});
    let mut passed = 0;
    for _round in 0..3 {
        let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..6)
                .map(|_| {
                    scope.spawn(|| {
                        let r = s.tenant(&k, "POST", "/v1/chat/completions", Some(call.clone()));
                        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, body) in &statuses {
            match status {
                200 => passed += 1,
                429 => assert_eq!(body["code"], "budget_exceeded", "{body}"),
                other => panic!("{other} {body}"),
            }
        }
    }
    assert_eq!(passed, 4, "never past $0.05");
}

/// When several limits refuse, the 429 names the one that holds the
/// request longest, and `Retry-After` is the earliest moment it could pass.
#[test]
fn retry_after_is_the_earliest_moment_every_limit_allows() {
    let s = server();
    let k = tenant(
        &s,
        "acme",
        json!([
            {"name": "per-minute", "scope": "tenant", "measure": "calls", "window": "minute", "amount": 1},
            {"name": "per-day", "scope": "tenant", "measure": "calls", "window": "day", "amount": 1}
        ]),
    );
    assert_eq!(authorize(&s, &k, json!({})).0, 200);
    let r = s.tenant(&k, "POST", "/api/v1/authorize", Some(json!({})));
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    let body: Value = r.json().unwrap();
    assert_eq!(body["limitName"], "per-day", "{body}");
    // The clock stands five seconds into the day.
    assert_eq!(retry, 86_400 - 5, "{body}");
}

/// A plan's `reserveUsd`: what an authorize without `estimateUsd` reserves
/// of spend limits - so racing requests cannot pass a budget together.
#[test]
fn a_plans_reserve_usd_holds_a_budget_without_estimates() {
    let s = server();
    let r = s.admin(
        "POST",
        "/api/admin/plans",
        Some(
            json!({"id": "reserving", "name": "Reserving", "monthlyCalls": null,
                    "monthlyTokens": null, "rateLimit": null, "reserveUsd": 0.25}),
        ),
    );
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    let plan: Value = r.json().unwrap();
    assert_eq!(plan["reserveUsd"].as_f64(), Some(0.25));
    let k = s.tenant_with_key("acme", "reserving");
    put_limits(
        &s,
        "/api/admin/tenants/acme/limits",
        json!([{"name": "budget", "scope": "tenant", "measure": "spendUsd", "window": "month", "amount": 1.0}]),
    );
    let (allowed, answers) = race(&s, &k, 16, &json!({}));
    assert_eq!(allowed, 4, "$0.25 reserved each against $1.00");
    assert!(answers
        .iter()
        .filter(|a| a["allowed"] == true)
        .all(|a| a["reservedUsd"].as_f64() == Some(0.25)));
    let bad = s.admin(
        "PATCH",
        "/api/admin/plans/reserving",
        Some(json!({"reserveUsd": -1})),
    );
    assert_eq!(bad.status(), 422);
}

/// A tenant replaces its plan's own fields by name: its `month` is its
/// monthly quota (kept when the plan changes), `null` lifts it.
#[test]
fn a_tenant_replaces_its_plans_own_fields_by_name() {
    let s = server();
    s.plan("five", Some(5), None, None);
    let k = s.tenant_with_key("acme", "five");
    let month = |amount: Value| json!([{"name": "month", "scope": "tenant", "measure": "calls", "window": "month", "amount": amount}]);
    let t = put_limits(&s, "/api/admin/tenants/acme/limits", month(json!(2)));
    let effective = t["effective"].as_array().unwrap();
    assert_eq!(effective.len(), 1, "{t}");
    assert_eq!(effective[0]["amount"], 2.0, "{t}");
    assert_eq!(race(&s, &k, 10, &json!({})).0, 2);
    let r = s.tenant(&k, "GET", "/api/billing/usage", None);
    assert_eq!(r.json::<Value>().unwrap()["calls"]["limit"], 2);
    // The plan changes; the tenant keeps its own quota.
    let r = s.admin(
        "PATCH",
        "/api/admin/plans/five",
        Some(json!({"monthlyCalls": 50})),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(authorize(&s, &k, json!({})).0, 429);
    // Lifted: unlimited for this tenant.
    put_limits(&s, "/api/admin/tenants/acme/limits", month(Value::Null));
    assert_eq!(race(&s, &k, 10, &json!({})).0, 10);
    // Dropped: the plan's 50 again (12 used).
    put_limits(&s, "/api/admin/tenants/acme/limits", json!([]));
    let r = s.tenant(&k, "POST", "/api/v1/authorize", None);
    assert_eq!(r.status(), 200);
    assert_eq!(
        crate::common::header(&r, "x-ratelimit-limit").as_deref(),
        Some("50")
    );
}

/// Waits until today's allowed requests are stored, `n` of them (the
/// flusher writes them shortly; refused ones are recorded too).
fn stored_today(s: &TestServer, key: &str, n: u64) {
    common::wait_until(|| {
        let r: Value = s
            .tenant(key, "GET", "/api/billing/api-usage?range=day", None)
            .json()
            .unwrap();
        let sum = &r["summary"];
        sum["totalRequests"].as_u64().unwrap_or(0) - sum["rejectedRequests"].as_u64().unwrap_or(0)
            == n
    });
}

/// A limit set while its window runs counts what the window already holds
/// (from the stored records), on the tenant, its plan and a key - never a
/// fresh allowance at noon; one whose shape changes is counted again in its
/// new shape; one whose amount changes keeps its count.
#[test]
fn a_limit_set_mid_window_counts_the_window_so_far() {
    let s = server();
    let k = s.tenant_with_key("acme", "open");
    for _ in 0..30 {
        assert_eq!(authorize(&s, &k, json!({"userId": "ana"})).0, 200);
    }
    stored_today(&s, &k, 30);
    // The tenant's: 40 a day, 30 used already.
    put_limits(
        &s,
        "/api/admin/tenants/acme/limits",
        json!([{"name": "per-day", "scope": "tenant", "measure": "calls", "window": "day", "amount": 40}]),
    );
    assert_eq!(race(&s, &k, 20, &json!({})).0, 10);
    // Its amount raised: the count stays (40 used, 5 more).
    put_limits(
        &s,
        "/api/admin/tenants/acme/limits",
        json!([{"name": "per-day", "scope": "tenant", "measure": "calls", "window": "day", "amount": 45}]),
    );
    assert_eq!(race(&s, &k, 20, &json!({})).0, 5);
    // Reshaped to each end user's day: ana has 30 of today's calls stored.
    stored_today(&s, &k, 45);
    put_limits(
        &s,
        "/api/admin/tenants/acme/limits",
        json!([{"name": "per-day", "scope": "user", "measure": "calls", "window": "day", "amount": 32}]),
    );
    assert_eq!(race(&s, &k, 10, &json!({"userId": "ana"})).0, 2);
    assert_eq!(
        race(&s, &k, 10, &json!({"userId": "bo"})).0,
        10,
        "bo had none"
    );
    // The plan's, for every tenant on it.
    let k2 = s.tenant_with_key("beta", "open");
    for _ in 0..8 {
        assert_eq!(authorize(&s, &k2, json!({})).0, 200);
    }
    stored_today(&s, &k2, 8);
    let r = s.admin(
        "PUT",
        "/api/admin/plans/open/limits",
        Some(json!({"limits": [{"name": "plan-day", "scope": "tenant", "measure": "calls", "window": "day", "amount": 10}]})),
    );
    assert_eq!(r.status(), 200, "{:?}", r.text());
    assert_eq!(race(&s, &k2, 10, &json!({})).0, 2);
    // A key's own: 8 of its calls today.
    let keys: Value = s
        .admin("GET", "/api/admin/tenants/beta/keys", None)
        .json()
        .unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    put_limits(
        &s,
        &format!("/api/admin/tenants/beta/keys/{key_id}/limits"),
        json!([{"name": "key-day", "scope": "key", "measure": "calls", "window": "day", "amount": 12}]),
    );
    assert_eq!(
        race(&s, &k2, 10, &json!({})).0,
        0,
        "the plan's day is spent"
    );
}
