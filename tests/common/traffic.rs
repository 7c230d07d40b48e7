//! Traffic the process tests drive: a tenant with a key, load from four
//! threads (authorize and ingestion, each acknowledgement timed), and what
//! a server holds afterwards.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

use super::binary::Proc;

pub const ADMIN: &str = "crash-test-admin-token";

pub fn setup(s: &Proc) -> String {
    let c = Client::new();
    let a = |p: &str, b: Value| c.post(s.url(p)).bearer_auth(ADMIN).json(&b).send().unwrap();
    assert_eq!(
        a(
            "/api/admin/plans",
            json!({"id": "bulk", "name": "Bulk", "monthlyTokens": 1_000_000_000_000u64})
        )
        .status(),
        201
    );
    assert_eq!(
        a(
            "/api/admin/tenants",
            json!({"id": "crashy", "planId": "bulk"})
        )
        .status(),
        201
    );
    let r = a("/api/admin/tenants/crashy/keys", json!({}));
    r.json::<Value>().unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Acknowledged records, with when the acknowledgement arrived.
pub type Acks = Arc<Mutex<Vec<(Instant, u64)>>>;

/// Drives authorize and ingestion from four threads until `stop`.
pub fn load(
    base: &str,
    key: &str,
    stop: Arc<AtomicBool>,
    acks: Acks,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|t| {
            let (base, key, stop, acks) = (base.to_string(), key.to_string(), stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let c = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let batch: Vec<Value> = (0..50).map(|_| json!({"endpoint": "/load", "calls": 1, "promptTokens": 2, "completionTokens": 1})).collect();
                while !stop.load(Ordering::Relaxed) {
                    let (ok, n) = if t % 2 == 0 {
                        match c.post(format!("{base}/api/v1/authorize")).bearer_auth(&key).send() {
                            Ok(r) => (r.status() == 200, 1),
                            Err(_) => break,
                        }
                    } else {
                        match c.post(format!("{base}/api/v1/usage")).bearer_auth(&key).json(&batch).send() {
                            Ok(r) if r.status() == 202 => {
                                let v: Value = r.json().unwrap_or_default();
                                // A steady few thousand records a second: the
                                // flusher keeps up even in a debug build.
                                std::thread::sleep(Duration::from_millis(20));
                                (true, v["accepted"].as_u64().unwrap_or(0))
                            }
                            _ => break,
                        }
                    };
                    if ok {
                        acks.lock().unwrap().push((Instant::now(), n));
                    }
                }
            })
        })
        .collect()
}

/// What the restarted server holds: (calls, tokens) from the counters, and
/// (records, calls, tokens) summed over the persisted records.
pub fn persisted(s: &Proc, key: &str) -> ((u64, u64), (u64, u64, u64)) {
    let c = Client::new();
    let u: Value = c
        .get(s.url("/api/billing/usage"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let counters = (
        u["calls"]["used"].as_u64().unwrap(),
        u["tokens"]["used"].as_u64().unwrap(),
    );
    let text = c
        .get(s.url("/api/billing/api-usage/export?format=ndjson"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut sums = (0, 0, 0);
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        sums.0 += 1;
        sums.1 += r["calls"].as_u64().unwrap();
        sums.2 += r["tokensUsed"].as_u64().unwrap();
    }
    (counters, sums)
}

/// The tenant's requests in its rollups today (`/api/billing/api-usage`).
pub fn reported(s: &Proc, key: &str) -> u64 {
    let rep: Value = Client::new()
        .get(s.url("/api/billing/api-usage?range=day"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    rep["summary"]["totalRequests"].as_u64().unwrap()
}

/// Records acknowledged within `window` before `at` (what a kill at `at`
/// may lose: the last flush interval, plus the write in progress).
pub fn acked_within(acks: &[(Instant, u64)], at: Instant, window: Duration) -> u64 {
    acks.iter()
        .filter(|a| at.duration_since(a.0) <= window)
        .map(|a| a.1)
        .sum()
}
