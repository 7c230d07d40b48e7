//! Real Tollgate processes on one real PostgreSQL (a throw-away cluster,
//! `common/postgres.rs`): two instances behave as one for data - a key or
//! a revocation made on one works on the other within a second, each
//! one's records are in the other's reports and export, both say that
//! quotas are per instance - and `kill -9` of a writer loses at most its
//! last flush interval, counts nothing twice, and keeps the totals equal
//! to the records.

#[path = "common/binary.rs"]
mod binary;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/traffic.rs"]
mod traffic;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary::Proc;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use traffic::{acked_within, load, persisted, reported, setup, Acks, ADMIN};

const FLUSH_MS: u64 = 50;

fn start(dir: &Path, url: &str) -> Proc {
    let flush = FLUSH_MS.to_string();
    let env = [
        ("TOLLGATE_STORE_ENGINE", "postgres"),
        ("TOLLGATE_STORE_POSTGRES_URL", url),
        ("TOLLGATE_FLUSH_INTERVAL_MS", flush.as_str()),
        ("TOLLGATE_LOG", "warn"),
    ];
    binary::start(dir, &[], &env, Some(ADMIN))
}

fn admin(c: &Client, p: &Proc, method: &str, path: &str, body: Value) -> (u16, Value) {
    let req = match method {
        "POST" => c.post(p.url(path)),
        "DELETE" => c.delete(p.url(path)),
        _ => c.get(p.url(path)),
    };
    let r = req.bearer_auth(ADMIN).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Polls `f` until it is true; how long that took (panics after 10 s).
fn until(mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "never happened");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}

fn authorize(c: &Client, p: &Proc, key: &str) -> u16 {
    c.post(p.url("/api/v1/authorize"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn two_instances_on_one_database_behave_as_one_for_data() {
    let url = postgres::fresh_database();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(da.path(), &url);
    let b = start(db.path(), &url);
    let c = Client::new();

    // Both know there are two of them, and say what that means.
    let health = |p: &Proc| -> Value { c.get(p.url("/healthz")).send().unwrap().json().unwrap() };
    until(|| health(&a)["instances"] == 2 && health(&b)["instances"] == 2);
    let h = health(&a);
    assert_eq!(h["instances"], 2, "{h}");
    assert!(
        h["warning"].as_str().unwrap().contains("per instance"),
        "{h}"
    );

    // A tenant and key made on A work on B within a second.
    let (s, _) = admin(
        &c,
        &a,
        "POST",
        "/api/admin/plans",
        json!({"id": "team", "name": "Team", "monthlyCalls": 1000}),
    );
    assert_eq!(s, 201);
    let (s, _) = admin(
        &c,
        &a,
        "POST",
        "/api/admin/tenants",
        json!({"id": "acme", "planId": "team"}),
    );
    assert_eq!(s, 201);
    let (s, k) = admin(&c, &a, "POST", "/api/admin/tenants/acme/keys", json!({}));
    assert_eq!(s, 201);
    let key = k["key"].as_str().unwrap().to_string();
    let took = until(|| authorize(&c, &b, &key) == 200);
    assert!(
        took < Duration::from_secs(1),
        "the key reached B after {took:?}"
    );
    assert_eq!(authorize(&c, &a, &key), 200);

    // Records from both, in one report on either, and in the export.
    for p in [&a, &b] {
        let r = c
            .post(p.url("/api/v1/usage"))
            .bearer_auth(&key)
            .json(&json!([{"endpoint": "/v1/chat", "promptTokens": 3}, {"endpoint": "/v1/chat"}]))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // 2 authorizations on B (one 200 at least; the polls before the key
    // arrived were 401 and not metered), 1 on A, 2 records each.
    let total = |p: &Proc| -> u64 {
        let r: Value = c
            .get(p.url("/api/billing/api-usage?range=day"))
            .bearer_auth(&key)
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["summary"]["totalRequests"].as_u64().unwrap()
    };
    until(|| total(&a) == 6 && total(&b) == 6);
    let export = c
        .get(b.url("/api/billing/api-usage/export?format=ndjson"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(export.lines().count(), 6, "{export}");
    let (s, fleet) = admin(&c, &b, "GET", "/api/admin/api-usage?range=day", Value::Null);
    assert_eq!(s, 200);
    assert_eq!(fleet["summary"]["totalRequests"], 6, "{fleet}");

    // A revocation on B stops the key on A within a second.
    let key_id = k["id"].as_str().unwrap().to_string();
    let (s, _) = admin(
        &c,
        &b,
        "DELETE",
        &format!("/api/admin/tenants/acme/keys/{key_id}"),
        Value::Null,
    );
    assert_eq!(s, 200);
    let took = until(|| authorize(&c, &a, &key) == 401);
    assert!(
        took < Duration::from_secs(1),
        "the revocation reached A after {took:?}"
    );

    // A suspension and a deletion too.
    let (_, k2) = admin(&c, &a, "POST", "/api/admin/tenants/acme/keys", json!({}));
    let key2 = k2["key"].as_str().unwrap().to_string();
    until(|| authorize(&c, &b, &key2) == 200);
    let (s, _) = admin(&c, &a, "DELETE", "/api/admin/tenants/acme", Value::Null);
    assert!(s == 200 || s == 204, "{s}");
    until(|| authorize(&c, &b, &key2) == 401);
    let (s, _) = admin(&c, &b, "GET", "/api/admin/tenants/acme", Value::Null);
    assert_eq!(s, 404);
}

/// `tollgate_persist_lag_milliseconds`: every record queued longer ago is
/// in the store.
fn persist_lag_ms(c: &Client, base: &str) -> Option<u64> {
    let metrics = c.get(format!("{base}/metrics")).send().ok()?.text().ok()?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_persist_lag_milliseconds "))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `persist_lag_ms` until `stop`: the last reading, as (when the
/// request was sent, the lag).
fn watch_lag(p: &Proc, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<(Instant, u64)>> {
    let url = p.base.clone();
    std::thread::spawn(move || {
        let c = Client::new();
        let mut last = None;
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            if let Some(lag) = persist_lag_ms(&c, &url) {
                last = Some((sent, lag));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        last
    })
}

/// What a `kill -9` may lose, as README.md and docs/API.md state it: what
/// was queued after the moment the store is written through, which
/// `/metrics` reports as `tollgate_persist_lag_milliseconds` - normally
/// one flush interval and the write in flight, more while writes are slow
/// or failing. The bound at the kill is the last reading plus the time
/// since it was asked for. Issue 36, item 5: the test asserted the flush
/// interval alone (plus 150 ms) and failed whenever a write took longer,
/// 20 of 20 runs on a busy two-core machine.
#[test]
fn kill_9_of_a_writer_loses_at_most_its_last_flush_and_counts_nothing_twice() {
    let url = postgres::fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let mut key = None;
    for round in 0..2 {
        let mut s = start(dir.path(), &url);
        let key = key.get_or_insert_with(|| setup(&s)).clone();
        let (_, before) = persisted(&s, &key);
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Acks = Arc::default();
        let threads = load(&s.base, &key, stop.clone(), acks.clone());
        let watching = Arc::new(AtomicBool::new(false));
        let watcher = watch_lag(&s, watching.clone());
        std::thread::sleep(Duration::from_millis(1500 + round * 500));
        let killed_at = Instant::now();
        s.signal(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        watching.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        let (asked, lag) = watcher.join().unwrap().expect("the lag was read");
        // A record is acknowledged after it is queued; a few ms for the
        // answer to reach the client after the server queued it.
        let window = killed_at.duration_since(asked) + Duration::from_millis(lag + 20);
        drop(s);

        let s = start(dir.path(), &url);
        let (counters, after) = persisted(&s, &key);
        assert_eq!(
            counters,
            (after.1, after.2),
            "round {round}: the totals are not the sum of the records"
        );
        let acks = acks.lock().unwrap();
        let acked: u64 = acks.iter().map(|a| a.1).sum();
        let survived = after.0 - before.0;
        assert!(
            survived <= acked,
            "round {round}: {survived} records from {acked} acknowledged: some counted twice"
        );
        let at_risk = acked_within(&acks, killed_at, window);
        let lost = acked - survived;
        assert!(
            lost <= at_risk,
            "round {round}: lost {lost}, only {at_risk} arrived in the last {window:?}"
        );
        assert_eq!(
            reported(&s, &key),
            after.0,
            "round {round}: rollups drifted"
        );
        eprintln!(
            "round {round}: acknowledged {acked}, survived {survived}, lost {lost} \
             (at risk {at_risk} within {window:?}: lag {lag} ms)"
        );
    }
}
