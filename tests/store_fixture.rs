//! A data directory written by an older release opens with this one and
//! answers the same figures: counters, raw records and rollups
//! (`tests/fixtures/README.md` says how it was written).

mod common;

use std::sync::Arc;

use chrono::TimeZone;
use common::*;
use serde_json::Value;
use tollgate::clock::ManualClock;

/// The keys `scripts/make-store-fixture.sh` printed for each fixture:
/// (fixture-co, other-co).
const FORMAT1_KEYS: (&str, &str) = (
    "tg_C8q9GcAG1V5Wk59zCwOwfgmWImlUxNB7",
    "tg_Vs23o0abuq6LjT61qkpoRPKoYrMTgGYf",
);
const FORMAT2_KEYS: (&str, &str) = (
    "tg_9mkdjSjnIOW1xdgypOo0ctrDUJ3UXrWs",
    "tg_QMOP9p6q84umE41NpCMkwCNZxmwd0BQF",
);

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
    opens_and_answers_the_same_figures("format1", FORMAT1_KEYS, 2, |_| {});
}

/// Format 2 (the last before the store's own rows) also wrote a suspended
/// tenant and a revoked key: the upgrade keeps both.
#[test]
fn a_format_2_data_dir_opens_and_answers_the_same_figures() {
    opens_and_answers_the_same_figures("format2", FORMAT2_KEYS, 3, |s| {
        let paused: Value = s
            .admin("GET", "/api/admin/tenants/paused-co", None)
            .json()
            .unwrap();
        assert_eq!(paused["status"], "suspended", "{paused}");
        assert_eq!(paused["name"], "Paused Co", "{paused}");
        assert!(
            paused["createdAt"]
                .as_str()
                .unwrap()
                .starts_with("2026-12-01T"),
            "{paused}"
        );
        let keys: Value = s
            .admin("GET", "/api/admin/tenants/other-co/keys", None)
            .json()
            .unwrap();
        let keys = keys["data"].as_array().expect("a list of keys");
        assert_eq!(keys.len(), 2, "{keys:?}");
        let old = keys.iter().find(|k| k["name"] == "old").unwrap();
        assert!(old["revokedAt"].is_string(), "{old}");
        let main = keys.iter().find(|k| k["name"] == "main").unwrap();
        assert!(main["revokedAt"].is_null(), "{main}");
        assert_eq!(
            s.tenant(FORMAT2_KEYS.1, "GET", "/api/billing/usage", None)
                .status(),
            200,
            "the unrevoked key still authenticates"
        );
    });
}

fn opens_and_answers_the_same_figures(
    fixture: &str,
    (fixture_co, other_co): (&str, &str),
    tenants: usize,
    more: impl Fn(&TestServer),
) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture),
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
            .tenant(fixture_co, "GET", "/api/billing/usage", None)
            .json()
            .unwrap();
        assert_eq!(usage["calls"]["used"], 50, "{usage}");
        assert_eq!(usage["tokens"]["used"], 750, "{usage}");
        let other: Value = s
            .tenant(other_co, "GET", "/api/billing/usage", None)
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
                fixture_co,
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
                fixture_co,
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
        assert_eq!(all["tenants"], tenants, "{all}");
        more(s);
    };
    check(&s);
    // Written again by this release (format 3), it still reads the same.
    s.restart_with(|_| {}, Arc::new(ManualClock::at(noon)));
    check(&s);
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// Every tree of the sled store in `dir` (a copy, opened), with its
/// keys and values.
fn contents(dir: &std::path::Path) -> Vec<(Vec<u8>, Vec<Pair>)> {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let db = sled::open(copy.path()).unwrap();
    let mut names = db.tree_names();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = db.open_tree(&n).unwrap();
            let kv = t
                .iter()
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (n.to_vec(), kv)
        })
        .collect()
}

/// An upgrade in place keeps the store as it was beside it
/// (`db.pre-upgrade-format-2`: every tree, key and value of the format-2
/// store, which the older binary opens), so
/// a rollback is a stop, a rename and the older binary; a second start of
/// the upgraded store keeps nothing more.
#[test]
fn an_upgrade_keeps_the_store_as_it_was_for_a_rollback() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format2");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let path = dir.path().to_path_buf();
    let noon = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    let mut s = TestServer::start_on(dir, |_| {}, Arc::new(ManualClock::at(noon)));
    let kept = path.join("db.pre-upgrade-format-2");
    assert!(kept.is_dir(), "the store before the upgrade is kept");
    let before = contents(&fixture.join("db"));
    assert!(!before.is_empty());
    assert!(
        contents(&kept) == before,
        "the kept store holds exactly the format-2 store's trees, keys and values"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        s.tenant(FORMAT2_KEYS.0, "GET", "/api/billing/usage", None)
            .status(),
        200,
        "and the upgraded store serves"
    );
    s.restart_with(|_| {}, Arc::new(ManualClock::at(noon)));
    let copies = std::fs::read_dir(&path)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("pre-upgrade")
        })
        .count();
    assert_eq!(copies, 1, "an upgraded store is not copied again");
}
