//! `/api/billing/api-usage`, the admin views and the export, checked against
//! figures computed independently from a known synthetic data set.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use serde_json::{json, Value};
use tollgate::clock::ManualClock;
use tollgate::pricing::PriceTable;

#[derive(Clone, Debug)]
struct Rec {
    ts: DateTime<Utc>,
    endpoint: &'static str,
    method: &'static str,
    status: u16,
    latency: f64,
    prompt: u64,
    completion: u64,
    model: &'static str,
    user: String,
    bot: &'static str,
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 12, 34, 56).unwrap()
}

/// 1,500 records from 2026-11-27 to just before now, across the month boundary.
fn dataset() -> Vec<Rec> {
    let mut x: u64 = 0x5eed;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let start = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 0).unwrap();
    let span = (now() - start).num_milliseconds() as u64;
    let endpoints = [
        ("/api/chat", "POST"),
        ("/api/files", "GET"),
        ("/api/bots", "PATCH"),
    ];
    let models = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", ""];
    let statuses = [200, 200, 200, 201, 404, 500];
    let bots = ["support", "sales", ""];
    (0..1500)
        .map(|_| {
            let (endpoint, method) = endpoints[next(3) as usize];
            let model = models[next(4) as usize];
            Rec {
                ts: start + Duration::milliseconds(next(span) as i64),
                endpoint,
                method,
                status: statuses[next(6) as usize],
                latency: 5.0 + next(200_000) as f64 / 100.0,
                prompt: if model.is_empty() { 0 } else { next(2_000) },
                completion: if model.is_empty() { 0 } else { next(800) },
                model,
                user: format!("user-{}", next(7)),
                bot: bots[next(3) as usize],
            }
        })
        .collect()
}

fn body(r: &Rec) -> Value {
    json!({"timestamp": r.ts.to_rfc3339(), "endpoint": r.endpoint, "method": r.method, "statusCode": r.status,
           "responseTime": r.latency, "promptTokens": r.prompt, "completionTokens": r.completion,
           "model": r.model, "userId": r.user, "botId": r.bot, "calls": 1})
}

fn cost(r: &Rec) -> f64 {
    PriceTable::builtin()
        .cost(
            r.model,
            &tollgate::model::TokenCounts::from_upstream(r.prompt, r.completion, 0),
            r.ts.timestamp_millis(),
        )
        .usd()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        "{what}: got {a}, want {b}"
    );
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

/// Checks every figure of a report against `recs` (the records in its range).
fn check_report(rep: &Value, recs: &[&Rec]) {
    let s = &rep["summary"];
    let n = recs.len() as u64;
    let ok = recs.iter().filter(|r| r.status < 400).count() as u64;
    assert_eq!(s["totalRequests"], n);
    assert_eq!(s["successfulRequests"], ok);
    assert_eq!(s["failedRequests"], n - ok);
    assert_eq!(s["rejectedRequests"], 0);
    let prompt: u64 = recs.iter().map(|r| r.prompt).sum();
    let completion: u64 = recs.iter().map(|r| r.completion).sum();
    assert_eq!(
        (s["promptTokens"].as_u64(), s["completionTokens"].as_u64()),
        (Some(prompt), Some(completion))
    );
    assert_eq!(s["totalTokens"], prompt + completion);
    close(
        s["estimatedCostUsd"].as_f64().unwrap(),
        recs.iter().map(|r| cost(r)).sum(),
        "cost",
    );
    close(
        s["successRate"].as_f64().unwrap(),
        (ok as f64 * 10000.0 / n as f64).round() / 100.0,
        "successRate",
    );
    let avg = recs.iter().map(|r| r.latency).sum::<f64>() / n as f64;
    close(
        s["avgResponseTimeMs"].as_f64().unwrap(),
        (avg * 100.0).round() / 100.0,
        "avg",
    );
    let mut lat: Vec<f64> = recs.iter().map(|r| r.latency).collect();
    lat.sort_by(f64::total_cmp);
    for (field, p) in [
        ("p50ResponseTimeMs", 50.0),
        ("p95ResponseTimeMs", 95.0),
        ("p99ResponseTimeMs", 99.0),
    ] {
        let (got, want) = (s[field].as_f64().unwrap(), pct(&lat, p));
        assert!(
            (got - want).abs() / want <= 0.02,
            "{field}: got {got}, want {want}"
        );
    }
    // Series add up to the totals.
    let series = rep["series"].as_array().unwrap();
    assert_eq!(
        series
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>(),
        n
    );
    assert_eq!(
        series
            .iter()
            .map(|p| p["tokens"].as_u64().unwrap())
            .sum::<u64>(),
        prompt + completion
    );
    // Endpoints.
    let mut by_ep: BTreeMap<(&str, &str), (u64, u64, u64)> = BTreeMap::new();
    for r in recs {
        let e = by_ep.entry((r.endpoint, r.method)).or_default();
        e.0 += 1;
        e.1 += (r.status >= 400) as u64;
        e.2 += r.prompt + r.completion;
    }
    for row in rep["endpoints"].as_array().unwrap() {
        let key = (
            row["endpoint"].as_str().unwrap(),
            row["method"].as_str().unwrap(),
        );
        let e = by_ep[&key];
        assert_eq!(
            (
                row["requests"].as_u64(),
                row["errors"].as_u64(),
                row["tokens"].as_u64()
            ),
            (Some(e.0), Some(e.1), Some(e.2)),
            "{key:?}"
        );
    }
    assert_eq!(rep["endpoints"].as_array().unwrap().len(), by_ep.len());
    // Status codes.
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    recs.iter()
        .for_each(|r| *statuses.entry(r.status).or_default() += 1);
    let got: BTreeMap<u16, u64> = rep["statusCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap() as u16,
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, statuses);
    // Models (records without a model are left out).
    let mut models: BTreeMap<&str, (u64, u64, u64, f64)> = BTreeMap::new();
    for r in recs.iter().filter(|r| !r.model.is_empty()) {
        let m = models.entry(r.model).or_default();
        m.0 += 1;
        m.1 += r.prompt;
        m.2 += r.completion;
        m.3 += cost(r);
    }
    assert_eq!(rep["models"].as_array().unwrap().len(), models.len());
    for row in rep["models"].as_array().unwrap() {
        let m = models[row["model"].as_str().unwrap()];
        assert_eq!(
            (
                row["requests"].as_u64(),
                row["promptTokens"].as_u64(),
                row["completionTokens"].as_u64()
            ),
            (Some(m.0), Some(m.1), Some(m.2))
        );
        close(row["costUsd"].as_f64().unwrap(), m.3, "model cost");
    }
    // Users and bots, ranked by requests.
    for (field, id, key) in [("topUsers", "userId", 0), ("topBots", "botId", 1)] {
        let mut parties: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in recs {
            let name = if key == 0 {
                r.user.clone()
            } else {
                r.bot.to_string()
            };
            if !name.is_empty() {
                let p = parties.entry(name).or_default();
                p.0 += 1;
                p.1 += r.prompt + r.completion;
            }
        }
        let rows = rep[field].as_array().unwrap();
        assert_eq!(rows.len(), parties.len().min(10));
        for w in rows.windows(2) {
            assert!(w[0]["requests"].as_u64() >= w[1]["requests"].as_u64());
        }
        for row in rows {
            let p = parties[row[id].as_str().unwrap()];
            assert_eq!(
                (row["requests"].as_u64(), row["tokens"].as_u64()),
                (Some(p.0), Some(p.1))
            );
        }
    }
    // Peak hours.
    let mut hours = [0u64; 24];
    recs.iter()
        .for_each(|r| hours[r.ts.format("%H").to_string().parse::<usize>().unwrap()] += 1);
    let got: Vec<u64> = rep["peakHours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(got, hours.to_vec());
}

/// The report's `costByModel` against the records: each bucket's cost by
/// model, the costliest model first, partial buckets at the range's ends.
fn check_cost_by_model(rep: &Value, recs: &[&Rec], bucket: &str, from: &str, to: &str) {
    let c = &rep["costByModel"];
    assert_eq!(c["bucket"], bucket, "{c}");
    let step = if bucket == "day" {
        86_400_000
    } else {
        3_600_000
    };
    let models: Vec<&str> = c["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let total = |m: &str| -> f64 { recs.iter().filter(|r| r.model == m).map(|r| cost(r)).sum() };
    let mut want: Vec<&str> = vec!["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo"];
    want.retain(|m| total(m) > 0.0);
    want.sort_by(|a, b| total(b).total_cmp(&total(a)));
    assert_eq!(models, want, "the costliest first, no 'other'");
    let (f, t) = (
        DateTime::parse_from_rfc3339(from)
            .unwrap()
            .timestamp_millis(),
        DateTime::parse_from_rfc3339(to).unwrap().timestamp_millis(),
    );
    let points = c["points"].as_array().unwrap();
    let first = f - f.rem_euclid(step);
    assert_eq!(points.len() as i64, (t - first + step - 1) / step);
    for (i, p) in points.iter().enumerate() {
        let start = first + i as i64 * step;
        assert_eq!(
            DateTime::parse_from_rfc3339(p["t"].as_str().unwrap())
                .unwrap()
                .timestamp_millis(),
            start
        );
        assert_eq!(
            p["partial"],
            start < f || start + step > t,
            "bucket {i} of {}",
            points.len()
        );
        let here: Vec<&&Rec> = recs
            .iter()
            .filter(|r| (start..start + step).contains(&r.ts.timestamp_millis()))
            .collect();
        close(
            p["costUsd"].as_f64().unwrap(),
            here.iter().map(|r| cost(r)).sum(),
            "a bucket's cost",
        );
        for (m, v) in models.iter().zip(p["byModel"].as_array().unwrap()) {
            close(
                v.as_f64().unwrap(),
                here.iter().filter(|r| r.model == *m).map(|r| cost(r)).sum(),
                &format!("{m} in bucket {i}"),
            );
        }
    }
}

struct Setup {
    s: TestServer,
    key: String,
    recs: Vec<Rec>,
    clock: Arc<ManualClock>,
}

fn setup() -> Setup {
    let clock = Arc::new(ManualClock::at(now()));
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock.clone());
    let key = s.tenant_with_key("acme", "professional");
    let recs = dataset();
    for chunk in recs.chunks(500) {
        let r = s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(Value::Array(chunk.iter().map(body).collect())),
        );
        assert_eq!(r.status(), 202);
    }
    // Records reach the analytics within a flush interval.
    let q = "/api/billing/api-usage?range=custom&from=2026-11-20T00:00:00Z";
    wait_until(|| {
        s.tenant(&key, "GET", q, None).json::<Value>().unwrap()["summary"]["totalRequests"]
            == recs.len()
    });
    Setup {
        s,
        key,
        recs,
        clock,
    }
}

fn get(s: &TestServer, key: &str, q: &str) -> Value {
    let r = s.tenant(key, "GET", &format!("/api/billing/api-usage{q}"), None);
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn within<'a>(recs: &'a [Rec], from: &str, to: &str) -> Vec<&'a Rec> {
    let (f, t) = (
        DateTime::parse_from_rfc3339(from).unwrap(),
        DateTime::parse_from_rfc3339(to).unwrap(),
    );
    recs.iter().filter(|r| r.ts >= f && r.ts < t).collect()
}

#[test]
fn every_figure_matches_an_independent_computation() {
    let Setup { s, key, recs, .. } = setup();
    // Immediately (from the in-memory part) and after a checkpoint (stored cells).
    for _ in 0..2 {
        let rep = get(
            &s,
            &key,
            "?range=custom&from=2026-11-27T00:00:00Z&to=2026-12-04T00:00:00Z&bucket=day",
        );
        check_report(&rep, &recs.iter().collect::<Vec<_>>());
        assert_eq!(rep["series"].as_array().unwrap().len(), 7);
        let day1: u64 = recs
            .iter()
            .filter(|r| r.ts.format("%d").to_string() == "27")
            .count() as u64;
        assert_eq!(rep["series"][0]["requests"], day1);
        assert_eq!(rep["series"][0]["t"], "2026-11-27T00:00:00.000Z");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Ragged edges: minute cells at both ends, hours and days in between.
    let (from, to) = ("2026-11-28T10:17:00Z", "2026-12-02T03:05:00Z");
    let rep = get(
        &s,
        &key,
        &format!("?from={from}&to={to}&bucket=hour&limit=100"),
    );
    check_report(&rep, &within(&recs, from, to));
    assert_eq!(rep["range"]["bucket"], "hour");
    // The cost chart's stacked bars: by day here, partial at both ends.
    check_cost_by_model(&rep, &within(&recs, from, to), "day", from, to);
    let (from, to) = ("2026-11-29T10:17:00Z", "2026-11-30T03:05:00Z");
    let rep = get(&s, &key, &format!("?from={from}&to={to}"));
    check_cost_by_model(&rep, &within(&recs, from, to), "hour", from, to);
    // The month is the current period: December only.
    let rep = get(&s, &key, "?range=month");
    let december = within(&recs, "2026-12-01T00:00:00Z", "2026-12-03T12:35:00Z");
    check_report(&rep, &december);
    assert_eq!(rep["range"]["from"], "2026-12-01T00:00:00.000Z");
    // Forecast from the period's rate: 2.524 days elapsed of 31.
    let f = &rep["forecast"];
    let elapsed = (now() - Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()).num_milliseconds()
        as f64
        / 86_400_000.0;
    let expected = december.len() as f64 / elapsed * 31.0;
    assert!(
        (f["projectedCalls"].as_f64().unwrap() - expected).abs() <= 1.0,
        "{f}"
    );
    let spent: f64 = december.iter().map(|r| cost(r)).sum();
    close(
        f["projectedCostUsd"].as_f64().unwrap(),
        ((spent / elapsed * 31.0) * 1e6).round() / 1e6,
        "projected cost",
    );
    assert_eq!(f["quotaExhaustedAt"], Value::Null);
    // Professional is far more than this needs, but 2.5 days are too
    // little history to advise a cheaper plan (a week is needed; the unit
    // tests of analytics::forecast cover the advice itself).
    assert_eq!(
        rep["recommendation"],
        Value::Null,
        "{}",
        rep["recommendation"]
    );
}

#[test]
fn empty_ranges_bad_parameters_and_isolation() {
    let Setup { s, key, recs, .. } = setup();
    let rep = get(
        &s,
        &key,
        "?from=2026-11-26T00:00:00Z&to=2026-11-26T06:00:00Z",
    );
    assert_eq!(rep["summary"]["totalRequests"], 0);
    assert_eq!(rep["summary"]["successRate"], Value::Null);
    assert_eq!(rep["summary"]["p95ResponseTimeMs"], Value::Null);
    assert_eq!(rep["series"].as_array().unwrap().len(), 6);
    assert!(rep["endpoints"].as_array().unwrap().is_empty());
    for q in [
        "?range=year",
        "?bucket=week",
        "?range=custom",
        "?from=yesterday",
        "?limit=0",
        "?limit=101",
        "?from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z",
        "?range=month&bucket=minute",
        "?nonsense=1",
    ] {
        let r = s.tenant(&key, "GET", &format!("/api/billing/api-usage{q}"), None);
        error_body(r, 422, "invalid_request");
    }
    // Another tenant sees none of it; the operator sees both.
    let other = s.tenant_with_key("other", "free");
    s.tenant(
        &other,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/mine", "timestamp": now().to_rfc3339()})),
    );
    wait_until(|| get(&s, &other, "?range=week")["summary"]["totalRequests"] == 1);
    let theirs = get(&s, &other, "?range=week");
    assert_eq!(theirs["summary"]["totalRequests"], 1);
    assert_eq!(theirs["endpoints"][0]["endpoint"], "/mine");
    let mine = get(&s, &key, "?range=custom&from=2026-11-20T00:00:00Z");
    assert_eq!(mine["summary"]["totalRequests"], recs.len());
    let as_admin: Value = s
        .admin("GET", "/api/admin/tenants/other/api-usage?range=week", None)
        .json()
        .unwrap();
    assert_eq!(as_admin["summary"], theirs["summary"]);
    let all: Value = s
        .admin(
            "GET",
            "/api/admin/api-usage?range=custom&from=2026-11-20T00:00:00Z&limit=5",
            None,
        )
        .json()
        .unwrap();
    assert_eq!(all["summary"]["totalRequests"], recs.len() + 1);
    assert_eq!(all["tenants"], 2);
    assert_eq!(all["topTenants"]["byRequests"][0]["tenantId"], "acme");
    assert_eq!(all["topTenants"]["byRequests"][1]["tenantId"], "other");
    let tokens: u64 = recs.iter().map(|r| r.prompt + r.completion).sum();
    assert_eq!(all["topTenants"]["byTokens"][0]["tokens"], tokens);
    error_body(
        s.tenant(&key, "GET", "/api/admin/api-usage", None),
        403,
        "admin_only",
    );
}

#[test]
fn export_streams_every_record_in_range() {
    let Setup { s, key, recs, .. } = setup();
    let (from, to) = ("2026-11-29T00:00:00Z", "2026-12-02T00:00:00Z");
    let want = within(&recs, from, to).len();
    let r = s.tenant(
        &key,
        "GET",
        &format!("/api/billing/api-usage/export?from={from}&to={to}&format=csv"),
        None,
    );
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").unwrap().starts_with("text/csv"));
    let text = r.text().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("timestamp,tenantId,endpoint,method,statusCode"));
    assert_eq!(lines.len() - 1, want);
    let r = s.tenant(
        &key,
        "GET",
        &format!("/api/billing/api-usage/export?from={from}&to={to}&format=ndjson"),
        None,
    );
    let rows: Vec<Value> = r
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), want);
    assert!(rows
        .iter()
        .all(|r| r["tenantId"] == "acme" && r["timestamp"].as_str().unwrap() >= "2026-11-29"));
    let total_tokens: u64 = rows.iter().map(|r| r["tokensUsed"].as_u64().unwrap()).sum();
    assert_eq!(
        total_tokens,
        within(&recs, from, to)
            .iter()
            .map(|r| r.prompt + r.completion)
            .sum::<u64>()
    );
    // Default: the current period.
    let r = s.tenant(
        &key,
        "GET",
        "/api/billing/api-usage/export?format=ndjson",
        None,
    );
    assert_eq!(
        r.text().unwrap().lines().count(),
        within(&recs, "2026-12-01T00:00:00Z", "2026-12-04T00:00:00Z").len()
    );
    error_body(
        s.tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=xml",
            None,
        ),
        422,
        "invalid_request",
    );
    // The operator's export of the tenant is the same bytes.
    let mine = s
        .tenant(
            &key,
            "GET",
            &format!("/api/billing/api-usage/export?from={from}&to={to}"),
            None,
        )
        .text()
        .unwrap();
    let r = s.admin(
        "GET",
        &format!("/api/admin/tenants/acme/api-usage/export?from={from}&to={to}"),
        None,
    );
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-disposition")
        .unwrap()
        .contains("usage-acme-2026-11-29.csv"));
    assert_eq!(r.text().unwrap(), mine);
    error_body(
        s.admin("GET", "/api/admin/tenants/nobody/api-usage/export", None),
        404,
        "not_found",
    );
    error_body(
        s.tenant(
            &key,
            "GET",
            "/api/admin/tenants/acme/api-usage/export",
            None,
        ),
        403,
        "admin_only",
    );
    let other = s.tenant_with_key("nosy", "free");
    let r = s.tenant(
        &other,
        "GET",
        &format!("/api/billing/api-usage/export?from={from}&to={to}"),
        None,
    );
    assert_eq!(
        r.text().unwrap().lines().count(),
        1,
        "only the header: another tenant's rows never leak"
    );
}

#[test]
fn rollups_survive_a_restart() {
    let Setup {
        mut s,
        key,
        recs,
        clock,
    } = setup();
    let q = "?range=custom&from=2026-11-27T00:00:00Z&to=2026-12-04T00:00:00Z&bucket=day";
    let before = get(&s, &key, q);
    let dir = s.dir.path().to_path_buf();
    s.stop();
    let server = tollgate::app::RunningServer::start(config(&dir), ADMIN, clock).unwrap();
    s.server = Some(server);
    let after = get(&s, &key, q);
    assert_eq!(after["summary"], before["summary"]);
    assert_eq!(after["series"], before["series"]);
    assert_eq!(after["summary"]["totalRequests"], recs.len());
}

/// Retention runs on the clock's time: when the clock passes a day, the raw
/// records of days past `retention.raw_days` go (the export no longer has
/// them), while the hour rollups keep counting them.
#[test]
fn retention_drops_old_raw_days_as_the_clock_moves_and_keeps_the_rollups() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0).unwrap();
    let clock = Arc::new(ManualClock::at(t0));
    let s = TestServer::start_with(
        |c| {
            c.retention.raw_days = 1;
            c.flush.checkpoint_ms = 50;
        },
        clock.clone(),
    );
    let key = s.tenant_with_key("acme", "professional");
    let post = |endpoint: &str| {
        let r = s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(json!({"endpoint": endpoint, "calls": 0})),
        );
        assert_eq!(r.status(), 202);
    };
    let exported = || -> Vec<String> {
        let q = "/api/billing/api-usage/export?from=2026-11-19T00:00:00Z&to=2026-11-25T00:00:00Z&format=ndjson";
        let r = s.tenant(&key, "GET", q, None);
        assert_eq!(r.status(), 200);
        r.text()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["endpoint"].to_string())
            .collect()
    };
    for _ in 0..3 {
        post("/day-one");
    }
    wait_until(|| exported().len() == 3);
    clock.set(t0 + Duration::days(3));
    post("/day-four");
    wait_until(|| exported() == ["\"/day-four\""]);
    let hours =
        "/api/billing/api-usage?range=custom&from=2026-11-20T11:00:00Z&to=2026-11-20T13:00:00Z";
    let summary = &s.tenant(&key, "GET", hours, None).json::<Value>().unwrap()["summary"];
    assert_eq!(summary["totalRequests"], 3, "{summary}");
}

/// Five weeks of a weekly rhythm, one hour five times as busy and one with
/// half its requests failing: `anomalies` names exactly those hours, in the
/// tenant's report and in the fleet's, and the forecast follows the rhythm.
#[test]
fn anomalies_and_the_weekly_forecast_from_five_weeks_of_history() {
    use chrono::Timelike;
    use common::history::{report_hours, usual};
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 30, 0).unwrap();
    let clock = Arc::new(ManualClock::at(now));
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock.clone());
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("rhythmic", "roomy");
    let spike = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
    let burst = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let from = Utc.with_ymd_and_hms(2026, 10, 29, 12, 0, 0).unwrap();
    let n = report_hours(&s, &key, &clock, from, now, |t| {
        let usual = usual(t);
        if t == spike {
            (usual * 5, 0)
        } else if t == burst {
            (usual, usual / 2)
        } else {
            (usual, 0)
        }
    });
    wait_until(|| common::history::requests_on_record(&s, &key) == n);

    let week = get(&s, &key, "?range=week");
    let anomalies = week["anomalies"].as_array().unwrap();
    let found: Vec<(&str, &str, &str)> = anomalies
        .iter()
        .map(|a| {
            (
                a["t"].as_str().unwrap(),
                a["metric"].as_str().unwrap(),
                a["direction"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("2026-12-01T10:00:00.000Z", "errorRate", "up"),
            ("2026-12-02T14:00:00.000Z", "requests", "up"),
        ],
        "{anomalies:?}"
    );
    let s0 = &anomalies[1];
    assert_eq!(s0["observed"], 300.0);
    assert_eq!(s0["expected"], 60.0);
    assert!(s0["score"].as_f64().unwrap() >= 5.0, "{s0}");
    assert_eq!(anomalies[0]["observed"], 0.5);
    assert_eq!(anomalies[0]["expected"], 0.0);
    // A range before them has none; the fleet sees the same hours.
    let before = get(
        &s,
        &key,
        "?range=custom&from=2026-11-20T00:00:00Z&to=2026-11-30T00:00:00Z",
    );
    assert_eq!(before["anomalies"], json!([]));
    let fleet: Value = s
        .admin("GET", "/api/admin/api-usage?range=week", None)
        .json()
        .unwrap();
    assert_eq!(fleet["anomalies"], week["anomalies"]);
    // The operators' list across tenants: newest first, the fleet's (null) first.
    let all: Value = s.admin("GET", "/api/admin/anomalies", None).json().unwrap();
    assert_eq!(all["tenantsChecked"], 1);
    assert_eq!(all["tenantsSkipped"], 0);
    let rows: Vec<(Value, Value, Value)> = all["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["tenantId"].clone(), a["t"].clone(), a["metric"].clone()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                json!(null),
                json!("2026-12-02T14:00:00.000Z"),
                json!("requests")
            ),
            (
                json!("rhythmic"),
                json!("2026-12-02T14:00:00.000Z"),
                json!("requests")
            ),
            (
                json!(null),
                json!("2026-12-01T10:00:00.000Z"),
                json!("errorRate")
            ),
            (
                json!("rhythmic"),
                json!("2026-12-01T10:00:00.000Z"),
                json!("errorRate")
            ),
        ]
    );
    let bad = s.admin("GET", "/api/admin/anomalies?tenants=0", None);
    error_body(bad, 422, "invalid_request");

    // The forecast walks the rest of December by the weekly rhythm: what
    // the same hours of the last weeks had, hour by hour.
    let month = get(&s, &key, "");
    assert_eq!(month["forecast"]["method"], "seasonal");
    let so_far = month["summary"]["totalRequests"].as_u64().unwrap();
    let end = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let mut rest = 0.0;
    let mut t = now;
    while t < end {
        let next = (t + Duration::hours(1)).with_minute(0).unwrap();
        rest += usual(t.with_minute(0).unwrap()) as f64 * (next - t).num_seconds() as f64 / 3600.0;
        t = next;
    }
    let projected = month["forecast"]["projectedCalls"].as_f64().unwrap();
    let expected = so_far as f64 + rest;
    assert!(
        (projected - expected).abs() / expected < 0.03,
        "projected {projected}, the rhythm says {expected}"
    );
}

/// A thousand short answers from gpt-4o in the last 30 days: the report
/// suggests gpt-4o-mini with the savings at its prices; the fleet's too.
#[test]
fn insights_price_a_cheaper_sibling_for_short_answers() {
    let clock = Arc::new(ManualClock::at(now()));
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock);
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("chatty", "roomy");
    let records: Vec<Value> = (0..1000)
        .map(|i| {
            json!({"timestamp": (now() - Duration::minutes(i)).to_rfc3339(), "endpoint": "/api/chat",
                   "model": "gpt-4o", "promptTokens": 500, "completionTokens": 80})
        })
        .collect();
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(records)))
            .status(),
        202
    );
    wait_until(|| get(&s, &key, "?range=week")["summary"]["totalRequests"] == 1000);
    let r = get(&s, &key, "?range=day");
    let insights = r["insights"].as_array().unwrap();
    assert_eq!(insights.len(), 1, "{insights:?}");
    let i = &insights[0];
    assert_eq!(i["kind"], "cheaperModel");
    // 1,000 × (500 × ($2.50 - $0.15) + 80 × ($10 - $0.60)) per million = $1.927.
    assert_eq!(i["estimatedMonthlySavingsUsd"], 1.93);
    assert!(i["title"].as_str().unwrap().contains("gpt-4o-mini"), "{i}");
    assert!(
        i["detail"].as_str().unwrap().contains("1,000 requests"),
        "{i}"
    );
    let fleet: Value = s
        .admin("GET", "/api/admin/api-usage?range=day", None)
        .json()
        .unwrap();
    assert_eq!(fleet["insights"], r["insights"]);
}

/// API versions (given, or the endpoint's first segment), countries and
/// retries on reported and authorized requests: in the breakdowns, in the
/// export, and refused clearly when malformed.
#[test]
fn versions_countries_and_retries_are_recorded_and_broken_down() {
    let clock = Arc::new(ManualClock::at(now()));
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock);
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("versioned", "roomy");
    let at = (now() - Duration::hours(1)).to_rfc3339();
    let records = json!([
        {"timestamp": at, "endpoint": "/v1/chat", "country": "de"},
        {"timestamp": at, "endpoint": "/v1/chat", "country": "DE", "statusCode": 500, "retryAttempt": 0},
        {"timestamp": at, "endpoint": "/v2/chat", "country": "FR", "retryAttempt": 2},
        {"timestamp": at, "endpoint": "/messages", "apiVersion": "2023-06-01"},
        {"timestamp": at, "endpoint": "/plain"},
    ]);
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/usage", Some(records))
            .status(),
        202
    );
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"endpoint": "/v2/files", "country": "us"})),
    );
    assert_eq!(r.status(), 200);
    wait_until(|| get(&s, &key, "?range=day")["summary"]["totalRequests"] == 6);
    let rep = get(&s, &key, "?range=day");
    let rows = |field: &str, key: &str| -> Vec<(String, u64)> {
        rep[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[key].as_str().unwrap().to_string(),
                    r["requests"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        rows("apiVersions", "apiVersion"),
        [("v1".into(), 2), ("v2".into(), 2), ("2023-06-01".into(), 1)]
    );
    assert_eq!(
        rows("countries", "country"),
        [("DE".into(), 2), ("FR".into(), 1), ("US".into(), 1)]
    );
    assert_eq!(rep["apiVersions"][0]["errors"], 1);
    assert_eq!(rep["integrations"], json!([]));
    // The export carries them, the version derived where none was given.
    let csv = s
        .tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=csv",
            None,
        )
        .text()
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].contains(",apiVersion,country,integration,retried,"),
        "{}",
        lines[0]
    );
    assert!(lines.iter().any(|l| l.contains(",v2,FR,,true,")), "{csv}");
    assert!(
        lines.iter().any(|l| l.contains(",2023-06-01,,,false,")),
        "{csv}"
    );
    let nd = s
        .tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson",
            None,
        )
        .text()
        .unwrap();
    let plain: Value = nd
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["endpoint"] == "/plain")
        .unwrap();
    assert_eq!(
        (&plain["apiVersion"], &plain["country"]),
        (&json!(""), &json!(""))
    );
    // Malformed ones are refused with the field named.
    for (body, field) in [
        (json!([{"endpoint": "/e", "country": "Germany"}]), "country"),
        (json!([{"endpoint": "/e", "apiVersion": ""}]), "apiVersion"),
        (
            json!([{"endpoint": "/e", "apiVersion": "x".repeat(65)}]),
            "apiVersion",
        ),
    ] {
        let r = s.tenant(&key, "POST", "/api/v1/usage", Some(body));
        let e = error_body(r, 422, "invalid_request");
        assert!(e["error"].as_str().unwrap().contains(field), "{e}");
    }
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/authorize",
        Some(json!({"country": "12"})),
    );
    error_body(r, 422, "invalid_request");
}

/// `[geoip]`: the country of the client (the peer, or behind a trusted
/// proxy the X-Forwarded-For hop), of a record's `clientIp`, or as given;
/// the address itself is stored nowhere.
#[test]
fn countries_come_from_the_clients_address_through_the_mmdb() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.mmdb");
    std::fs::write(
        &db,
        common::mmdb::country_db(&[
            ("203.0.113.0", 24, "DE"),
            ("198.51.100.0", 24, "FR"),
            ("2001:db8::", 32, "JP"),
        ]),
    )
    .unwrap();
    let path = db.display().to_string();
    let clock = Arc::new(ManualClock::at(now()));
    let s = TestServer::start_with(
        |c| {
            c.flush.checkpoint_ms = 50;
            c.geoip.mmdb = path.clone();
            c.geoip.trusted_proxies = "127.0.0.1, 10.0.0.0/8".into();
        },
        clock.clone(),
    );
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("worldwide", "roomy");
    let authorize = |xff: &str, body: Value| {
        let r = s
            .http
            .post(s.url("/api/v1/authorize"))
            .bearer_auth(&key)
            .header("X-Forwarded-For", xff)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    // Behind the trusted 127.0.0.1 and 10.0.0.1: the hop before them.
    authorize("203.0.113.9, 10.0.0.1", json!({}));
    authorize("198.51.100.1", json!({}));
    // Given explicitly, the country wins; a clientIp is looked up.
    authorize("198.51.100.1", json!({"country": "it"}));
    authorize("192.0.2.1", json!({"clientIp": "2001:db8::5"}));
    let at = (now() - Duration::minutes(5)).to_rfc3339();
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(
            json!([{"timestamp": at, "endpoint": "/e", "clientIp": "203.0.113.200"},
                    {"timestamp": at, "endpoint": "/e", "clientIp": "192.0.2.1"}]),
        ),
    );
    assert_eq!(r.status(), 202);
    let bad = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!([{"endpoint": "/e", "clientIp": "not-an-ip"}])),
    );
    error_body(bad, 422, "invalid_request");
    wait_until(|| get(&s, &key, "?range=day")["summary"]["totalRequests"] == 6);
    let rep = get(&s, &key, "?range=day");
    let countries: Vec<(String, u64)> = rep["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["country"].as_str().unwrap().into(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        countries,
        [
            ("DE".into(), 2),
            ("FR".into(), 1),
            ("IT".into(), 1),
            ("JP".into(), 1)
        ]
    );
    let export = s
        .tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson",
            None,
        )
        .text()
        .unwrap();
    for ip in ["203.0.113", "198.51.100", "2001:db8", "192.0.2"] {
        assert!(!export.contains(ip), "an address was stored: {export}");
    }
    drop(s);
    // Without the peer among the trusted proxies, X-Forwarded-For is ignored:
    // the peer (127.0.0.1) has no country.
    let s = TestServer::start_with(
        |c| {
            c.flush.checkpoint_ms = 50;
            c.geoip.mmdb = path.clone();
            c.geoip.trusted_proxies = "10.0.0.0/8".into();
        },
        clock,
    );
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("spoofer", "roomy");
    let r = s
        .http
        .post(s.url("/api/v1/authorize"))
        .bearer_auth(&key)
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(|| get(&s, &key, "?range=day")["summary"]["totalRequests"] == 1);
    assert_eq!(get(&s, &key, "?range=day")["countries"], json!([]));
}
