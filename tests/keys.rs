//! API keys as first-class subjects (issue 39, item 6), through the real
//! server on real sled files: a key expires (`401 key_expired`) and its
//! expiry can be moved or lifted; a rotation hands out a new secret while
//! the old one works until the overlap ends; `lastUsedAt` follows use, at
//! most once a minute, off the request path, and survives a restart; every
//! record carries the id of the key that made it, so the report lists
//! usage per key (by name) and the export filters by key.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use common::{wait_until, TestServer};
use serde_json::{json, Value};
use tollgate::clock::{Clock, ManualClock};

fn authorize(s: &TestServer, secret: &str) -> (u16, Value) {
    let r = s.tenant(secret, "POST", "/api/v1/authorize", None);
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn new_key(s: &TestServer, tenant: &str, body: Value) -> Value {
    let r = s.admin(
        "POST",
        &format!("/api/admin/tenants/{tenant}/keys"),
        Some(body),
    );
    assert_eq!(r.status(), 201);
    r.json().unwrap()
}

fn key_of(s: &TestServer, tenant: &str, id: &str) -> Value {
    let keys: Value = s
        .admin("GET", &format!("/api/admin/tenants/{tenant}/keys"), None)
        .json()
        .unwrap();
    keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap()
}

#[test]
fn a_key_expires_and_its_expiry_can_move() {
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let s = TestServer::start_with(|_| {}, clock.clone());
    s.plan("open", None, None, None);
    s.tenant_with_key("acme", "open");
    let expires = Utc::now() + Duration::hours(1);
    let k = new_key(
        &s,
        "acme",
        json!({"name": "ci", "expiresAt": expires.to_rfc3339()}),
    );
    let (id, secret) = (k["id"].as_str().unwrap(), k["key"].as_str().unwrap());
    assert!(k["expiresAt"].as_str().is_some(), "{k}");
    assert_eq!(authorize(&s, secret).0, 200);
    clock.set(expires);
    let (status, body) = authorize(&s, secret);
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("key_expired")),
        "{body}"
    );
    // Listed with its expiry; moved later, it works again; lifted, for good.
    assert!(key_of(&s, "acme", id)["expiresAt"].is_string());
    let later = (expires + Duration::days(1)).to_rfc3339();
    let path = format!("/api/admin/tenants/acme/keys/{id}");
    let r = s.admin("PATCH", &path, Some(json!({"expiresAt": later})));
    assert_eq!(r.status(), 200);
    assert_eq!(authorize(&s, secret).0, 200);
    let r = s.admin("PATCH", &path, Some(json!({"expiresAt": null})));
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["expiresAt"], Value::Null);
    clock.set(expires + Duration::days(400));
    assert_eq!(authorize(&s, secret).0, 200);
    // Bad expiries are refused with the reason.
    for (bad, says) in [
        (json!({"expiresAt": "tomorrow"}), "RFC 3339"),
        (
            json!({"expiresAt": "2001-01-01T00:00:00Z"}),
            "in the future",
        ),
    ] {
        let r = s.admin("PATCH", &path, Some(bad.clone()));
        assert_eq!(r.status(), 422, "{bad}");
        assert!(r.text().unwrap().contains(says));
        let r = s.admin("POST", "/api/admin/tenants/acme/keys", Some(bad));
        assert_eq!(r.status(), 422);
    }
    // The gateway dialects say it in their own shapes too: see
    // tests/edges.rs (ExpiredKey on every edge).
}

#[test]
fn a_rotated_key_keeps_its_id_and_the_old_secret_works_until_the_overlap_ends() {
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let mut s = TestServer::start_with(|_| {}, clock.clone());
    s.plan("open", None, None, None);
    s.tenant_with_key("acme", "open");
    let k = new_key(&s, "acme", json!({"name": "backend"}));
    let (id, old) = (
        k["id"].as_str().unwrap().to_string(),
        k["key"].as_str().unwrap().to_string(),
    );
    let r = s.admin(
        "POST",
        &format!("/api/admin/tenants/acme/keys/{id}/rotate"),
        Some(json!({"overlapSeconds": 600})),
    );
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().unwrap();
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(rotated["id"], id.as_str());
    assert_ne!(new, old);
    assert!(rotated["previousWorksUntil"].is_string(), "{rotated}");
    assert_eq!(key_of(&s, "acme", &id)["prefix"], &new[..8]);
    // Both work during the overlap, as the same key.
    assert_eq!(authorize(&s, &old).0, 200);
    assert_eq!(authorize(&s, &new).0, 200);
    // A restart keeps the overlap.
    s.restart_with(|_| {}, clock.clone());
    assert_eq!(authorize(&s, &old).0, 200);
    clock.set(clock.now() + Duration::seconds(601));
    let (status, body) = authorize(&s, &old);
    assert_eq!((status, body["code"].as_str()), (401, Some("key_expired")));
    assert_eq!(authorize(&s, &new).0, 200);
    // Every record says which key made it: all of them this one.
    let path =
        format!("/api/billing/api-usage/export?format=ndjson&from=2000-01-01T00:00:00Z&keyId={id}");
    let mut export = String::new();
    wait_until(|| {
        export = s.tenant(&new, "GET", &path, None).text().unwrap();
        export.lines().count() >= 4
    });
    let ids: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["keyId"].clone())
        .collect();
    assert_eq!(ids.len(), 4, "{export}");
    assert!(ids.iter().all(|k| k == id.as_str()), "{export}");
    // Unknown keys and bad overlaps are refused.
    let r = s.admin("POST", "/api/admin/tenants/acme/keys/key_nope/rotate", None);
    assert_eq!(r.status(), 404);
    let r = s.admin(
        "POST",
        &format!("/api/admin/tenants/acme/keys/{id}/rotate"),
        Some(json!({"overlapSeconds": 99_999_999})),
    );
    assert_eq!(r.status(), 422);
    // A revoked key cannot be rotated back to life, and neither secret works.
    let r = s.admin(
        "DELETE",
        &format!("/api/admin/tenants/acme/keys/{id}"),
        None,
    );
    assert_eq!(r.status(), 200);
    let r = s.admin(
        "POST",
        &format!("/api/admin/tenants/acme/keys/{id}/rotate"),
        None,
    );
    assert_eq!(r.status(), 404);
    assert_eq!(authorize(&s, &new).0, 401);
}

#[test]
fn last_used_follows_use_once_a_minute_and_usage_is_shown_per_key() {
    let start = Utc::now();
    let clock = Arc::new(ManualClock::at(start));
    let mut s = TestServer::start_with(|_| {}, clock.clone());
    s.plan("open", None, None, None);
    s.tenant_with_key("acme", "open");
    let a = new_key(&s, "acme", json!({"name": "web"}));
    let b = new_key(&s, "acme", json!({"name": "batch"}));
    let (a_id, a_secret) = (a["id"].as_str().unwrap(), a["key"].as_str().unwrap());
    let (b_id, b_secret) = (b["id"].as_str().unwrap(), b["key"].as_str().unwrap());
    assert_eq!(key_of(&s, "acme", a_id)["lastUsedAt"], Value::Null);
    for _ in 0..3 {
        assert_eq!(authorize(&s, a_secret).0, 200);
    }
    // Reported usage is made by the key that reports it.
    let r = s.tenant(
        b_secret,
        "POST",
        "/api/v1/usage",
        Some(json!([{"endpoint": "/v1/chat", "promptTokens": 10, "completionTokens": 5}])),
    );
    assert_eq!(r.status(), 202);
    let used_at = |s: &TestServer, id: &str| {
        key_of(s, "acme", id)["lastUsedAt"]
            .as_str()
            .map(str::to_string)
    };
    wait_until(|| used_at(&s, a_id).is_some() && used_at(&s, b_id).is_some());
    let first = used_at(&s, a_id).unwrap();
    // Within the minute: not written again.
    clock.set(start + Duration::seconds(30));
    assert_eq!(authorize(&s, a_secret).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(used_at(&s, a_id).unwrap(), first);
    // A minute on: it moves.
    clock.set(start + Duration::seconds(90));
    assert_eq!(authorize(&s, a_secret).0, 200);
    wait_until(|| used_at(&s, a_id).unwrap() != first);
    let moved = used_at(&s, a_id).unwrap();
    assert!(moved > first, "{moved} after {first}");
    // Kept in the store: a restart reads it back.
    s.restart_with(|_| {}, clock.clone());
    assert_eq!(used_at(&s, a_id).unwrap(), moved);
    // The report lists usage per key, by name.
    let mut report = Value::Null;
    wait_until(|| {
        report = s
            .tenant(a_secret, "GET", "/api/billing/api-usage?range=day", None)
            .json()
            .unwrap();
        report["summary"]["totalRequests"] == 6
    });
    let keys = report["topKeys"].as_array().unwrap();
    let row = |id: &str| keys.iter().find(|k| k["keyId"] == id).unwrap().clone();
    assert_eq!(
        (row(a_id)["requests"].as_u64(), row(a_id)["name"].as_str()),
        (Some(5), Some("web"))
    );
    assert_eq!(
        (row(b_id)["requests"].as_u64(), row(b_id)["tokens"].as_u64()),
        (Some(1), Some(15))
    );
    // And the export filters by key.
    let csv = s
        .tenant(
            a_secret,
            "GET",
            &format!("/api/billing/api-usage/export?from=2000-01-01T00:00:00Z&keyId={b_id}"),
            None,
        )
        .text()
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].ends_with(",keyId"), "{}", lines[0]);
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].ends_with(&format!(",{b_id}")), "{csv}");
    // The report filters by key too: over a day (hour buckets) and a week
    // (day buckets), each key's own requests, tokens and series.
    for range in ["day", "week"] {
        let of = |id: &str| -> Value {
            s.tenant(
                a_secret,
                "GET",
                &format!("/api/billing/api-usage?range={range}&keyId={id}"),
                None,
            )
            .json()
            .unwrap()
        };
        let (ra, rb) = (of(a_id), of(b_id));
        assert_eq!(ra["summary"]["totalRequests"], 5, "{range}: {ra}");
        assert_eq!(rb["summary"]["totalRequests"], 1, "{range}: {rb}");
        assert_eq!(rb["summary"]["totalTokens"], 15, "{range}: {rb}");
        let keys = ra["topKeys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "{ra}");
        assert_eq!(keys[0]["keyId"], a_id);
        let series: u64 = ra["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(series, 5, "{range}: {ra}");
    }
    // The admin reads the same; every tenant together has no key filter.
    let r = s.admin(
        "GET",
        &format!("/api/admin/tenants/acme/api-usage?range=day&keyId={a_id}"),
        None,
    );
    assert_eq!(r.json::<Value>().unwrap()["summary"]["totalRequests"], 5);
    let r = s.admin("GET", &format!("/api/admin/api-usage?keyId={a_id}"), None);
    assert_eq!(r.status(), 422);
}
