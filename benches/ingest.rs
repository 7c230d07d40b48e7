//! The parse stage of `POST /api/v1/usage`: a 1,000-record batch (the body
//! `scripts/ingest.sh` sends) turned into checked `UsageRecord`s, three ways,
//! same run:
//! - `value_then_records`: the earlier path, kept here as the baseline -
//!   the whole body into a `serde_json::Value`, then `from_value` per record;
//! - `one_pass_json`: [`tollgate::http::api::batch::json`], typed and borrowing;
//! - `one_pass_ndjson_lines`: the same records as NDJSON, line by line (the
//!   per-line work of [`tollgate::http::api::batch::ndjson`], without a socket);
//! - `count_only`: [`tollgate::http::api::batch::count`], the scan that refuses a
//!   batch near a full queue before its parse.
//!
//! Run: `cargo bench --bench ingest`.

use chrono::{TimeZone, Utc};
use criterion::{black_box, Criterion, Throughput};
use serde::Deserialize;
use serde_json::Value;
use tollgate::http::api::batch;
use tollgate::http::api::types::{usage_record, UsageInput};
use tollgate::model::UsageRecord;

fn records() -> Vec<Value> {
    (0..1000)
        .map(|i| {
            let model = ["gpt-4o-mini", "gpt-4o"][i % 2];
            serde_json::json!({"endpoint": "/api/chat", "method": "POST",
                "statusCode": if i % 50 == 0 { 500 } else { 200 }, "responseTime": 100 + i % 900,
                "promptTokens": i % 700, "completionTokens": i % 300,
                "model": model, "userId": format!("user-{}", i % 200),
                "botId": format!("bot-{}", i % 5), "calls": 0})
        })
        .collect()
}

fn main() {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    let recs = records();
    let json = serde_json::to_vec(&recs).unwrap();
    let ndjson: Vec<u8> = recs
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("ingest_parse_1000");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("value_then_records", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&json)).unwrap();
            let Value::Array(items) = v else { panic!() };
            let out: Vec<UsageRecord> = items
                .into_iter()
                .map(|v| {
                    let input = UsageInput::<'static>::deserialize(v).unwrap();
                    usage_record(input, now).unwrap()
                })
                .collect();
            out
        })
    });
    g.bench_function("one_pass_json", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            batch::json(black_box(&json), |_, input: UsageInput<'_>| {
                out.push(usage_record(input, now).unwrap());
                Ok(())
            })
            .unwrap();
            out
        })
    });
    g.bench_function("count_only", |b| b.iter(|| batch::count(black_box(&json))));
    g.bench_function("one_pass_ndjson_lines", |b| {
        b.iter(|| {
            let out: Vec<UsageRecord> = black_box(&ndjson)
                .split(|&b| b == b'\n')
                .map(|line| {
                    let input: UsageInput<'_> = serde_json::from_slice(line).unwrap();
                    usage_record(input, now).unwrap()
                })
                .collect();
            out
        })
    });
    g.finish();
    c.final_summary();
}
