//! Issue 36, item 8: one tenant's in-bounds counts must never block another
//! tenant's writes. The API allows up to 2^53 calls and tokens per record;
//! 1,024 such records sum past PostgreSQL's int8, and the upsert of the
//! period totals failed with `numeric value out of range` (SQLSTATE 22003).
//! The error counted as retryable, so the flusher held that batch and
//! retried it forever: every other tenant's records queued behind it, were
//! never stored, and were lost at the stop. Now the sums saturate in the
//! engine (SQL included) and a data error is never retried as a whole
//! batch. Run against a real server on PostgreSQL and on sled.

#[path = "common/admin.rs"]
mod admin;
#[path = "common/binary.rs"]
mod binary;
#[path = "common/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use binary::Proc;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const ADMIN: &str = "huge-counts-admin";
const TOP: u64 = 1 << 53;

fn start(dir: &std::path::Path, engine: &[(&str, &str)]) -> Proc {
    let mut env = vec![
        ("TOLLGATE_FLUSH_INTERVAL_MS", "50"),
        ("TOLLGATE_LOG", "warn"),
    ];
    env.extend_from_slice(engine);
    binary::start(dir, &[], &env, Some(ADMIN))
}

fn tenant_key(c: &Client, p: &Proc, tenant: &str) -> String {
    admin::add_tenant(c, &p.base, ADMIN, "open", tenant)
}

/// The records the store has of `key`'s tenant today (read from its rollups).
fn stored_requests(c: &Client, p: &Proc, key: &str) -> u64 {
    c.get(p.url("/api/billing/api-usage?range=day"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["summary"]["totalRequests"]
        .as_u64()
        .unwrap_or(0)
}

fn billed_calls(c: &Client, p: &Proc, key: &str) -> u64 {
    c.get(p.url("/api/billing/usage"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["calls"]["used"]
        .as_u64()
        .unwrap()
}

fn huge_counts_never_block_another_tenant(engine: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let c = Client::new();
    let p = start(dir.path(), engine);
    let r = c
        .post(p.url("/api/admin/plans"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "open", "name": "Open"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let huge = tenant_key(&c, &p, "huge");
    let victim = tenant_key(&c, &p, "victim");
    // Two batches of 1,100 records of 2^53 each: each write's sum, and the
    // stored total after the first, are past int8.
    let batch: Vec<Value> = (0..1100)
        .map(|_| json!({"endpoint": "/big", "calls": TOP, "promptTokens": TOP}))
        .collect();
    for _ in 0..2 {
        let r = c
            .post(p.url("/api/v1/usage"))
            .bearer_auth(&huge)
            .json(&batch)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let small: Vec<Value> = (0..20)
        .map(|_| json!({"endpoint": "/small", "calls": 1}))
        .collect();
    let r = c
        .post(p.url("/api/v1/usage"))
        .bearer_auth(&victim)
        .json(&small)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_requests(&c, &p, &victim) < 20 {
        assert!(
            Instant::now() < deadline,
            "the other tenant's records never reached the store: {}",
            p.logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stored_requests(&c, &p, &huge),
        2200,
        "every huge record is stored"
    );
    let metrics = c.get(p.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("tollgate_records_unpersisted_total{reason=\"store_error\"} 0"),
        "{metrics}"
    );
    let health: Value = c.get(p.url("/healthz")).send().unwrap().json().unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    // A restart reads the stored totals back: the victim's are its own,
    // the huge tenant's saturated (not wrapped, not lost; the in-memory
    // counter has its own, lower, ceiling).
    drop(p);
    let p = start(dir.path(), engine);
    assert_eq!(billed_calls(&c, &p, &victim), 20);
    let big = billed_calls(&c, &p, &huge);
    assert!(big >= (1 << 48) - 1, "saturated, not wrapped: {big}");
}

#[test]
fn on_postgres_huge_counts_saturate_and_never_block_another_tenant() {
    let url = postgres::fresh_database();
    huge_counts_never_block_another_tenant(&[
        ("TOLLGATE_STORE_ENGINE", "postgres"),
        ("TOLLGATE_STORE_POSTGRES_URL", url.as_str()),
    ]);
}

#[test]
fn on_sled_huge_counts_saturate_and_never_block_another_tenant() {
    huge_counts_never_block_another_tenant(&[]);
}
