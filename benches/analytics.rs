//! The month query (`/api/billing/api-usage?range=month`'s server work) on
//! one tenant holding 10,000,000 records over 30 days (SPEC §9: ≤ 50 ms).
//!
//! Run: `cargo bench --bench analytics`. The store is built once into
//! `target/bench-data/` (a few minutes) and reused; `TOLLGATE_BENCH_RECORDS`
//! changes the size. Under `cargo test` it runs on 20,000 records.

use std::path::PathBuf;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use criterion::{black_box, Criterion};
use tollgate::analytics::insights::insights;
use tollgate::analytics::query::{aggregate, usage, Range};
use tollgate::analytics::rhythm::Rhythm;
use tollgate::http::api::analytics::HourWindow;
use tollgate::http::api::report::Report;
use tollgate::model::{RecordExtra, UsageRecord};
use tollgate::pricing::PriceTable;
use tollgate::rollup::{Grain, Owner};
use tollgate::store::{SledStore, Store, UsageBlock};

const TENANT: &str = "bench-tenant";

fn records_wanted() -> u64 {
    let full = std::env::args().any(|a| a == "--bench");
    std::env::var("TOLLGATE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 20_000 })
}

/// Deterministic records spread over the 30 days before `end_ms`.
fn build(store: &SledStore, n: u64, end_ms: i64) {
    let endpoints = [
        "/api/chat",
        "/api/conversations",
        "/api/embeddings",
        "/api/bots",
        "/api/files",
    ];
    let models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-3.5-turbo"];
    let span = 30 * 86_400_000i64;
    let step = span as f64 / n as f64;
    let mut x: u64 = 42;
    let chunk = 200_000;
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let records: Vec<UsageRecord> = (i..(i + chunk).min(n))
            .map(|j| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = x >> 33;
                UsageRecord {
                    ts_ms: end_ms - span + (j as f64 * step) as i64,
                    endpoint: endpoints[(r % 5) as usize].into(),
                    method: "POST".into(),
                    status: if r % 50 == 0 { 500 } else { 200 },
                    response_ms: 20.0 + (r % 2000) as f64,
                    prompt_tokens: r % 1000,
                    completion_tokens: r % 300,
                    tokens: r % 1000 + r % 300,
                    model: models[(r % 4) as usize].into(),
                    extra: RecordExtra {
                        user_id: format!("user-{}", r % 500).into(),
                        bot_id: format!("bot-{}", r % 8).into(),
                        ..Default::default()
                    }
                    .boxed(),
                    calls: 1,
                    cost_usd: (r % 1000) as f64 * 1e-6,
                    ..Default::default()
                }
            })
            .collect();
        i += records.len() as u64;
        store
            .write_usage(&[UsageBlock {
                tenant: TENANT.into(),
                records,
                ..Default::default()
            }])
            .unwrap();
        store.checkpoint().unwrap();
    }
    store.flush().unwrap();
    eprintln!(
        "built {n} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let n = records_wanted();
    let end = Utc
        .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
        .unwrap()
        .timestamp_millis();
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/bench-data/analytics-{n}"));
    let fresh = !dir.join("built").exists();
    if fresh {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let store = SledStore::open(&dir, 100, 256 << 20).unwrap();
    if fresh {
        build(&store, n, end);
        std::fs::write(dir.join("built"), b"ok").unwrap();
    }
    let month = Range::minutes(
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis(),
        end,
    );
    let owner = Owner::tenant(TENANT);
    let prices = PriceTable::builtin();
    let rep = Report::of(
        &usage(&store, &owner, month, Grain::Day, 10, end).unwrap(),
        &prices,
    );
    assert_eq!(
        rep.summary.total_requests, n,
        "the month holds every record"
    );

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group(format!("analytics_{n}_records"));
    g.bench_function("month_query_day_buckets", |b| {
        b.iter(|| {
            Report::of(
                &usage(black_box(&store), &owner, month, Grain::Day, 10, end).unwrap(),
                &prices,
            )
        })
    });
    let day = Range::minutes(end - 86_400_000, end);
    g.bench_function("day_query_hour_buckets", |b| {
        b.iter(|| {
            Report::of(
                &usage(black_box(&store), &owner, day, Grain::Hour, 10, end).unwrap(),
                &prices,
            )
        })
    });
    let ragged = Range::minutes(end - 10 * 86_400_000 - 17 * 60_000, end - 3 * 60_000);
    g.bench_function("ragged_10_day_query", |b| {
        b.iter(|| {
            Report::of(
                &usage(black_box(&store), &owner, ragged, Grain::Day, 10, end).unwrap(),
                &prices,
            )
        })
    });
    // What the answer adds beyond the query (issue 16): the hours its
    // anomalies and forecast read (the judged week and four weeks before:
    // 840 hour cells), judging them, learning the rhythm, and the insights'
    // 30 days.
    let week = Range::minutes(end - 7 * 86_400_000, end);
    let window = HourWindow::of(week, end);
    g.bench_function("anomalies_and_rhythm_week", |b| {
        b.iter(|| {
            let hours = window.read(black_box(&store), &owner).unwrap();
            (window.anomalies(&hours), Rhythm::learn(&hours, window.now))
        })
    });
    let prices = PriceTable::builtin();
    let thirty = Range::minutes(end - 30 * 86_400_000, end);
    g.bench_function("insights_30_days", |b| {
        b.iter(|| {
            insights(
                &aggregate(black_box(&store), &owner, thirty, end).unwrap(),
                &prices,
            )
        })
    });
    g.finish();
    c.final_summary();
}
