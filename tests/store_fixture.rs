//! A data directory written by an older release opens with this one and
//! answers the same figures: counters, raw records and rollups
//! (`tests/fixtures/README.md` says how it was written).

mod common;

use std::sync::Arc;

use chrono::TimeZone;
use common::*;
use serde_json::Value;
use tollgate::clock::ManualClock;

/// The keys `scripts/make-store-fixture.sh` printed for the fixture.
const FIXTURE_CO: &str = "tg_C8q9GcAG1V5Wk59zCwOwfgmWImlUxNB7";
const OTHER_CO: &str = "tg_Vs23o0abuq6LjT61qkpoRPKoYrMTgGYf";

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_format_1_data_dir_opens_and_answers_the_same_figures() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1"),
        dir.path(),
    );
    // The clock the fixture was written on: nothing has expired, and
    // December 2026 is the current period.
    let noon = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    let mut s = TestServer::start_on(dir, |_| {}, Arc::new(ManualClock::at(noon)));
    let check = |s: &TestServer| {
        let plan: Value = s
            .admin("GET", "/api/admin/plans/fixture", None)
            .json()
            .unwrap();
        assert_eq!(plan["monthlyCalls"], 1000, "{plan}");
        assert_eq!(plan["rateLimit"]["burst"], 100, "{plan}");
        assert_eq!(plan["priceUsdMonthly"], 12.5, "{plan}");
        assert_eq!(plan["ingestRate"], Value::Null, "{plan}");
        // Counters, from the persisted period totals.
        let usage: Value = s
            .tenant(FIXTURE_CO, "GET", "/api/billing/usage", None)
            .json()
            .unwrap();
        assert_eq!(usage["calls"]["used"], 50, "{usage}");
        assert_eq!(usage["tokens"]["used"], 750, "{usage}");
        let other: Value = s
            .tenant(OTHER_CO, "GET", "/api/billing/usage", None)
            .json()
            .unwrap();
        assert_eq!(
            (
                other["calls"]["used"].clone(),
                other["tokens"]["used"].clone()
            ),
            (2.into(), 14.into())
        );
        // Raw records.
        let export = s
            .tenant(
                FIXTURE_CO,
                "GET",
                "/api/billing/api-usage/export?format=ndjson&from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z",
                None,
            )
            .text()
            .unwrap();
        let records: Vec<Value> = export
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 50);
        assert_eq!(records[0]["timestamp"], "2026-12-01T08:00:00.000Z");
        assert_eq!(records[0]["metadata"]["run"], "fixture");
        assert_eq!(records[49]["responseTime"], 149.0);
        // Rollups.
        let report: Value = s
            .tenant(
                FIXTURE_CO,
                "GET",
                "/api/billing/api-usage?from=2026-12-01T00:00:00Z&to=2026-12-01T12:00:00Z",
                None,
            )
            .json()
            .unwrap();
        let summary = &report["summary"];
        assert_eq!(summary["totalRequests"], 50, "{report}");
        assert_eq!(summary["failedRequests"], 5, "{report}");
        assert_eq!(summary["totalTokens"], 750, "{report}");
        assert_eq!(report["models"][0]["model"], "gpt-4o", "{report}");
        assert_eq!(report["models"][0]["requests"], 50, "{report}");
        assert_eq!(report["topUsers"].as_array().unwrap().len(), 5, "{report}");
        assert_eq!(report["topUsers"][0]["requests"], 10, "{report}");
        let all: Value = s
            .admin(
                "GET",
                "/api/admin/api-usage?from=2026-12-01T00:00:00Z&to=2026-12-01T12:00:00Z",
                None,
            )
            .json()
            .unwrap();
        assert_eq!(all["summary"]["totalRequests"], 52, "{all}");
        assert_eq!(all["tenants"], 2, "{all}");
    };
    check(&s);
    // Written again by this release (format 2), it still reads the same.
    s.restart_with(|_| {}, Arc::new(ManualClock::at(noon)));
    check(&s);
}
