//! History import (issue 40, item 6): a tenant's export imported into a
//! fresh tenant gives the same analytics; records count toward their own
//! month; the same file again (or its other format) counts once; a bad
//! line is named by its number and nothing is written; `tollgate import`
//! does the same against a data directory. Real server, real sled files,
//! the real binary.

mod common;

use std::process::Command;
use std::sync::Arc;

use chrono::{Datelike, Duration, Utc};
use common::{wait_until, TestServer, ADMIN};
use serde_json::{json, Value};
use tollgate::clock::{ManualClock, SystemClock};

fn export(s: &TestServer, tenant: &str, format: &str) -> String {
    s.http
        .get(s.url(&format!(
            "/api/admin/tenants/{tenant}/api-usage/export?format={format}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
        )))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn import(s: &TestServer, tenant: &str, mime: &str, body: String) -> (u16, Value) {
    let r = s
        .http
        .post(s.url(&format!("/api/admin/tenants/{tenant}/import")))
        .bearer_auth(ADMIN)
        .header("Content-Type", mime)
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// A tenant's analytics over `span` days back, without what names it.
fn analytics(s: &TestServer, tenant: &str, days: i64) -> Value {
    let now = Utc::now();
    let from = (now - Duration::days(days)).format("%Y-%m-%dT00:00:00Z");
    let to = (now + Duration::days(1)).format("%Y-%m-%dT00:00:00Z");
    let mut v: Value = s
        .admin(
            "GET",
            &format!(
                "/api/admin/tenants/{tenant}/api-usage?range=custom&from={from}&to={to}&bucket=day"
            ),
            None,
        )
        .json()
        .unwrap();
    // (The forecast moves with the clock between two reads.)
    for field in ["tenantId", "generatedAt", "plan", "forecast"] {
        if let Some(o) = v.as_object_mut() {
            o.remove(field);
        }
    }
    // Imported records keep the ids of the keys that made them; their
    // names are the source tenant's keys', which the copy does not have.
    if let Some(keys) = v["topKeys"].as_array_mut() {
        assert!(!keys.is_empty(), "the records name their keys");
        for k in keys {
            k.as_object_mut().unwrap().remove("name");
        }
    }
    v
}

/// A used month's calls of `tenant` as billing counts them now.
fn billed(s: &TestServer, tenant: &str) -> u64 {
    s.admin("GET", &format!("/api/admin/tenants/{tenant}/usage"), None)
        .json::<Value>()
        .unwrap()["calls"]["used"]
        .as_u64()
        .unwrap()
}

/// Reported usage of `tenant`: this month and, when the month is young,
/// the last one, in several shapes (metadata with a comma, a quote, a
/// formula-looking user id).
fn seed(s: &TestServer, key: &str, clock: &ManualClock) -> u64 {
    let now = Utc::now();
    let earlier = now - Duration::days(35);
    // The API takes records up to 7 days old: the earlier ones are sent
    // while the server's clock says it is then.
    for old in [true, false] {
        clock.set(if old { earlier } else { now });
        let r = s.tenant(
            key,
            "POST",
            "/api/v1/usage",
            Some(Value::Array(records(old, now, earlier))),
        );
        assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    }
    40
}

fn records(old: bool, now: chrono::DateTime<Utc>, earlier: chrono::DateTime<Utc>) -> Vec<Value> {
    let mut records = Vec::new();
    for i in (0..40u64).filter(|i| (i % 4 == 0) == old) {
        let at = if i % 4 == 0 {
            earlier
        } else {
            now - Duration::minutes(i as i64)
        };
        let model = ["gpt-4o", "gpt-4o-mini"][i as usize % 2];
        records.push(json!({
            "timestamp": at.to_rfc3339(),
            "endpoint": format!("/v1/chat/{}", i % 3),
            "method": if i % 2 == 0 { "POST" } else { "GET" },
            "statusCode": if i % 10 == 0 { 500 } else { 200 },
            "responseTime": 10.5 + i as f64,
            "promptTokens": i * 7,
            "completionTokens": i * 3,
            "model": model,
            "userId": if i == 5 { "=cmd|' /C calc'!A0".to_string() } else { format!("user-{}", i % 5) },
            "botId": "bot-1",
            "metadata": {"note": "a, \"quoted\" value", "n": format!("{i}")},
            "calls": 1 + i % 2,
            "country": "DE",
            // Token kinds on some (each part of its figure).
            "cachedPromptTokens": if i % 3 == 0 { i * 2 } else { 0 },
            "cacheWriteTokens": if i % 5 == 0 { i } else { 0 },
            "cacheWriteTtl": if i % 2 == 0 { "1h" } else { "5m" },
            "reasoningTokens": i,
        }));
    }
    records
}

#[test]
fn an_export_imported_into_a_fresh_tenant_reads_the_same_and_counts_once() {
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let s = TestServer::start_with(|_| {}, clock.clone());
    let key = s.tenant_with_key("source", "enterprise");
    let n = seed(&s, &key, &clock);
    wait_until(|| export(&s, "source", "ndjson").lines().count() as u64 == n);
    let ndjson = export(&s, "source", "ndjson");
    let csv = export(&s, "source", "csv");
    s.tenant_with_key("copy", "enterprise");
    let (status, body) = import(&s, "copy", "application/x-ndjson", ndjson.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"imported": n, "duplicates": 0, "errors": []}));
    // The same analytics, over the whole span and this month's billing.
    assert_eq!(analytics(&s, "copy", 40), analytics(&s, "source", 40));
    assert_eq!(billed(&s, "copy"), billed(&s, "source"));
    let this_month = Utc::now().month();
    let older = (Utc::now() - Duration::days(35)).month() != this_month;
    assert!(
        older,
        "the seed puts a quarter of the records in an earlier month"
    );
    assert!(
        billed(&s, "copy") < 60,
        "the earlier month's records count there, not now"
    );
    // The same file again, or the CSV of the same records: counted once.
    let (_, body) = import(&s, "copy", "application/x-ndjson", ndjson);
    assert_eq!(body, json!({"imported": 0, "duplicates": n, "errors": []}));
    let (status, body) = import(&s, "copy", "text/csv", csv.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"imported": 0, "duplicates": n, "errors": []}));
    assert_eq!(export(&s, "copy", "ndjson").lines().count() as u64, n);
    // The CSV into another fresh tenant reads the same too (the formula
    // user id the export defused comes back as it was).
    s.tenant_with_key("from-csv", "enterprise");
    let (status, body) = import(&s, "from-csv", "text/csv", csv);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["imported"], n);
    assert_eq!(analytics(&s, "from-csv", 40), analytics(&s, "source", 40));
    let mut a: Vec<String> = export(&s, "from-csv", "csv")
        .lines()
        .map(|l| l.replace("from-csv", "T"))
        .collect();
    let mut b: Vec<String> = export(&s, "source", "csv")
        .lines()
        .map(|l| l.replace("source", "T"))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "record for record");
}

#[test]
fn bad_lines_are_named_and_nothing_is_written() {
    let s = TestServer::start();
    s.tenant_with_key("t", "enterprise");
    let now = Utc::now().to_rfc3339();
    let old = (Utc::now() - Duration::days(400)).to_rfc3339();
    let good = json!({"timestamp": now, "endpoint": "/a", "calls": 1}).to_string();
    let file = [
        good.clone(),
        "{not json".into(),
        good.clone(),
        json!({"timestamp": old, "endpoint": "/a"}).to_string(),
        json!({"timestamp": now, "endpoint": "/a", "calls": "many"}).to_string(),
    ]
    .join("\n");
    let (status, body) = import(&s, "t", "application/x-ndjson", file);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["imported"], 0);
    let lines: Vec<u64> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 4, 5], "{body}");
    assert!(body["errors"][1]["error"]
        .as_str()
        .unwrap()
        .contains("retention"));
    assert_eq!(
        export(&s, "t", "ndjson").lines().count(),
        0,
        "nothing partial"
    );
    assert_eq!(billed(&s, "t"), 0);
    // Wrong tenant, wrong type, a token that is not the admin's.
    assert_eq!(
        import(&s, "nobody", "application/x-ndjson", good.clone()).0,
        404
    );
    assert_eq!(import(&s, "t", "application/json", good.clone()).0, 415);
    let r = s
        .http
        .post(s.url("/api/admin/tenants/t/import"))
        .bearer_auth("not-the-token")
        .header("Content-Type", "application/x-ndjson")
        .body(good)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn tollgate_import_writes_into_a_data_directory() {
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let mut s = TestServer::start_with(|_| {}, clock.clone());
    let key = s.tenant_with_key("source", "enterprise");
    let n = seed(&s, &key, &clock);
    wait_until(|| export(&s, "source", "ndjson").lines().count() as u64 == n);
    let file = s.dir.path().join("usage.csv");
    std::fs::write(&file, export(&s, "source", "csv")).unwrap();
    s.tenant_with_key("copy", "enterprise");
    let want = analytics(&s, "source", 40);
    s.stop();
    let bin = env!("CARGO_BIN_EXE_tollgate");
    let run = || {
        Command::new(bin)
            .args(["import", "--tenant", "copy", "--data-dir"])
            .arg(s.dir.path())
            .arg(&file)
            .env("TOLLGATE_LOG", "warn")
            .env_remove("TOLLGATE_CONFIG")
            .output()
            .unwrap()
    };
    let out = run();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "imported {n} record(s) into copy; 0 imported before"
        )),
        "{said}"
    );
    let again = run();
    assert!(String::from_utf8_lossy(&again.stdout).contains(&format!(
        "imported 0 record(s) into copy; {n} imported before"
    )));
    // A bad file: the line named, nothing written, a failing exit.
    let bad = s.dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"timestamp\":\"2026-11-03T10:00:00Z\",\"endpoint\":\"/a\"}\nnope\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["import", "--tenant", "copy", "--data-dir"])
        .arg(s.dir.path())
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.ndjson:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.restart_with(|_| {}, Arc::new(SystemClock));
    assert_eq!(analytics(&s, "copy", 40), want);
    assert_eq!(billed(&s, "copy"), billed(&s, "source"));
}
