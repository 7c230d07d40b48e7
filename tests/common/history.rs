//! Weeks of hourly history a test reports through `POST /api/v1/usage`: a
//! business rhythm (busier on weekday working hours) with the hours a test
//! changes, so the anomaly detector and the seasonal forecast have
//! something to learn from.
#![allow(dead_code)]

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde_json::{json, Value};

use tollgate::clock::ManualClock;

use super::TestServer;

/// Requests in the hour starting at `t`: 60 on weekdays 09:00-17:59, else 30.
pub fn usual(t: DateTime<Utc>) -> u64 {
    if t.weekday().num_days_from_monday() < 5 && (9..18).contains(&t.hour()) {
        60
    } else {
        30
    }
}

/// `n` records spread over the hour starting at `hour`, the first `errors`
/// of them answered 500, none at or after `until`.
pub fn hour_records(hour: DateTime<Utc>, n: u64, errors: u64, until: DateTime<Utc>) -> Vec<Value> {
    hour_records_with(hour, n, errors, until, &json!({}))
}

/// [`hour_records`], each with the fields of `extra` (an object) as well.
pub fn hour_records_with(
    hour: DateTime<Utc>,
    n: u64,
    errors: u64,
    until: DateTime<Utc>,
    extra: &Value,
) -> Vec<Value> {
    (0..n)
        .map(|i| hour + Duration::milliseconds((3_600_000 * i / n.max(1)) as i64))
        .enumerate()
        .filter(|(_, ts)| *ts < until)
        .map(|(i, ts)| {
            let mut r = json!({"timestamp": ts.to_rfc3339(), "endpoint": "/api/chat", "method": "POST",
                   "statusCode": if (i as u64) < errors { 500 } else { 200 },
                   "responseTime": 50.0, "calls": 1});
            if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(extra.clone());
            }
            r
        })
        .collect()
}

/// Reports the hours from `from` to `now` (the records before `now`) with
/// `shape(hour)` = (requests, failures) each, a day at a time with the
/// clock at the day's end (a record may be at most 7 days old), and leaves
/// the clock at `now`; returns how many records.
pub fn report_hours(
    s: &TestServer,
    key: &str,
    clock: &ManualClock,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    shape: impl Fn(DateTime<Utc>) -> (u64, u64),
) -> usize {
    report_hours_with(s, key, clock, from, now, shape, &json!({}))
}

/// [`report_hours`], each record with the fields of `extra` as well.
pub fn report_hours_with(
    s: &TestServer,
    key: &str,
    clock: &ManualClock,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    shape: impl Fn(DateTime<Utc>) -> (u64, u64),
    extra: &Value,
) -> usize {
    assert_eq!(from.timestamp() % 3600, 0, "history starts on the hour");
    let mut total = 0;
    let mut day = from;
    while day < now {
        let end = (day + Duration::days(1)).min(now);
        clock.set(end);
        let mut records = Vec::new();
        let mut t = day;
        while t < end {
            let (n, errors) = shape(t);
            records.extend(hour_records_with(t, n, errors, now, extra));
            t += Duration::hours(1);
        }
        total += records.len();
        for chunk in records.chunks(5_000) {
            let r = s.tenant(
                key,
                "POST",
                "/api/v1/usage",
                Some(Value::Array(chunk.to_vec())),
            );
            assert_eq!(r.status(), 202, "{}", r.text().unwrap());
        }
        day = end;
    }
    clock.set(now);
    total
}

/// The requests the tenant of `key` has on record since 2026-10-01, before
/// any history these tests report.
pub fn requests_on_record(s: &TestServer, key: &str) -> usize {
    s.tenant(
        key,
        "GET",
        "/api/billing/api-usage?range=custom&from=2026-10-01T00:00:00Z",
        None,
    )
    .json::<Value>()
    .unwrap()["summary"]["totalRequests"]
        .as_u64()
        .unwrap() as usize
}
