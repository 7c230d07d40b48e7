//! `tollgate backup` while the server ingests, and `tollgate restore` into
//! another data directory: the restored store serves, and its totals,
//! rollups and raw records agree (one consistent state, not a copy torn
//! between writes). A restore refuses a served data directory and keeps
//! the store it replaces.

#[path = "common/binary.rs"]
mod binary;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use reqwest::blocking::Client;
use serde_json::{json, Value};

const ADMIN: &str = "backup-admin-token";

fn tollgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_backup_taken_while_ingesting_restores_to_one_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = binary::start(dir.path(), &[], &[], Some(ADMIN));
    let base = server.base.clone();
    let c = Client::new();
    let admin = |method: &str, path: &str, body: Value| {
        c.request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap()
    };
    assert_eq!(
        admin("POST", "/api/admin/plans", json!({"id": "p", "name": "P"})).status(),
        201
    );
    assert_eq!(
        admin(
            "POST",
            "/api/admin/tenants",
            json!({"id": "acme", "planId": "p"})
        )
        .status(),
        201
    );
    let key: Value = admin("POST", "/api/admin/tenants/acme/keys", json!({}))
        .json()
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();

    // Usage keeps arriving while three backups are taken.
    let stop = AtomicBool::new(false);
    let accepted = AtomicU64::new(0);
    let backups: Vec<String> = std::thread::scope(|s| {
        s.spawn(|| {
            let c = Client::new();
            let batch: Vec<Value> = (0..20)
                .map(|_| json!({"endpoint": "/v1/chat", "promptTokens": 3}))
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(format!("{base}/api/v1/usage"))
                    .bearer_auth(&key)
                    .json(&batch)
                    .send()
                    .unwrap();
                if r.status() == 202 {
                    accepted.fetch_add(20, Ordering::Relaxed);
                }
            }
        });
        let mut paths = Vec::new();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let (ok, out, err) = tollgate(&["backup", "--url", &base]);
            assert!(ok, "{err}");
            let answer: Value = serde_json::from_str(&out).unwrap();
            assert!(answer["bytes"].as_u64().unwrap() > 0, "{answer}");
            paths.push(answer["path"].as_str().unwrap().to_string());
        }
        stop.store(true, Ordering::Relaxed);
        paths
    });
    assert!(accepted.load(Ordering::Relaxed) > 0);
    assert_eq!(server.signal(libc::SIGTERM).code(), Some(0));
    for p in &backups {
        assert!(
            p.starts_with(dir.path().join("backups").to_str().unwrap()),
            "{p}"
        );
    }

    // Restored elsewhere: it serves, and every view of the usage agrees.
    let other = tempfile::tempdir().unwrap();
    let last = backups.last().unwrap();
    let (ok, out, err) = tollgate(&[
        "restore",
        last,
        "--data-dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("restored"), "{out}");
    let restored = binary::start(other.path(), &[], &[], Some(ADMIN));
    let rb = restored.base.clone();
    let usage: Value = c
        .get(format!("{rb}/api/billing/usage"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let calls = usage["calls"]["used"].as_u64().unwrap();
    let export = c
        .get(format!(
            "{rb}/api/billing/api-usage/export?from=2000-01-01T00:00:00Z&format=ndjson"
        ))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let records = export.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let report: Value = c
        .get(format!("{rb}/api/billing/api-usage?range=day"))
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(records > 0 && records <= accepted.load(Ordering::Relaxed));
    assert_eq!(records % 20, 0, "whole batches: {records}");
    assert_eq!(
        calls, records,
        "the period's total agrees with the raw records"
    );
    assert_eq!(
        report["summary"]["totalRequests"].as_u64(),
        Some(records),
        "and the rollups"
    );

    // A served data directory is refused; a stopped one keeps what it had.
    let (ok, _, err) = tollgate(&[
        "restore",
        &backups[0],
        "--data-dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("stop it"), "{err}");
    drop(restored);
    let (ok, out, err) = tollgate(&[
        "restore",
        &backups[0],
        "--data-dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("db.before-restore-"), "{out}");
    let aside = std::fs::read_dir(other.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("db.before-restore-")
        })
        .count();
    assert_eq!(aside, 1);
    let (ok, _, err) = tollgate(&[
        "restore",
        other.path().join("nothing").to_str().unwrap(),
        "--data-dir",
        other.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("holds no backup"), "{err}");
}
