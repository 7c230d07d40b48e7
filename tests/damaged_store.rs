//! Issue 37, finding 6: a truncated or missing sled file started silently
//! with data gone (a tenant that had used 520 of 1,000 calls read 0; with
//! `db/db` empty or deleted, an empty store where every key was a 401).
//! Now the binary refuses such a store with what is wrong and what to do,
//! and `--recover` starts on what is left, logging the loss.

#[path = "common/binary.rs"]
mod binary;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{json, Value};

const ADMIN: &str = "damaged-store-admin-token-0123456789";

/// A data directory whose tenant used 520 of 1,000 calls, stopped
/// gracefully: the tenant's key.
fn used_store(dir: &Path) -> String {
    let mut p = binary::start(
        dir,
        &[],
        &[("TOLLGATE_FLUSH_INTERVAL_MS", "50")],
        Some(ADMIN),
    );
    let c = Client::new();
    let admin = |path: &str, body: Value| {
        let r = c
            .post(p.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {:?}", r.text());
        r.json::<Value>().unwrap()
    };
    admin(
        "/api/admin/plans",
        json!({"id": "k", "name": "K", "monthlyCalls": 1000}),
    );
    admin(
        "/api/admin/tenants",
        json!({"id": "t", "name": "T", "planId": "k"}),
    );
    let key = admin("/api/admin/tenants/t/keys", json!({}))["key"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..52 {
        let r = c
            .post(p.url("/api/v1/authorize"))
            .bearer_auth(&key)
            .json(&json!({"cost": 10}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        // Spread over more than a second: the store notes what it holds
        // at most once a second.
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(p.signal(libc::SIGTERM).success());
    key
}

/// `serve` on `dir` (with `args`): whether it started, its stderr so far,
/// and the process when it did.
fn try_serve(dir: &Path, args: &[&str]) -> (bool, String, Option<binary::Proc>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (logs, reader) = binary::collect_stderr(&mut child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.strip_prefix("Tollgate listening on ")
            .map(|a| a.trim().to_string())
    });
    std::thread::spawn(move || for _ in lines {});
    match base {
        Some(base) => {
            std::thread::sleep(Duration::from_millis(200));
            let text = logs.lock().unwrap().clone();
            let p = binary::Proc {
                child,
                base,
                stdout: Vec::new(),
                logs,
            };
            (true, text, Some(p))
        }
        None => {
            let _ = child.wait();
            let _ = reader.join();
            let text = logs.lock().unwrap().clone();
            (false, text, None)
        }
    }
}

fn used(p: &binary::Proc, key: &str) -> u64 {
    let r = Client::new()
        .get(p.url("/api/billing/usage"))
        .bearer_auth(key)
        .send()
        .unwrap();
    if r.status() != 200 {
        return 0;
    }
    r.json::<Value>().unwrap()["calls"]["used"]
        .as_u64()
        .unwrap_or(0)
}

fn damage(dir: &Path, how: &str) {
    let main = dir.join("db").join("db");
    match how {
        "truncate-90" | "truncate-50" | "truncate-10" => {
            let len = std::fs::metadata(&main).unwrap().len();
            let keep = match how {
                "truncate-90" => len * 9 / 10,
                "truncate-50" => len / 2,
                _ => len / 10,
            };
            std::fs::OpenOptions::new()
                .write(true)
                .open(&main)
                .unwrap()
                .set_len(keep)
                .unwrap();
        }
        "empty" => std::fs::write(&main, b"").unwrap(),
        "delete" => std::fs::remove_file(&main).unwrap(),
        _ => unreachable!(),
    }
}

#[test]
fn a_damaged_store_refuses_to_start_and_recover_starts_on_what_is_left() {
    for how in [
        "truncate-90",
        "truncate-50",
        "truncate-10",
        "empty",
        "delete",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let key = used_store(dir.path());
        // Undamaged, it starts and reads 520.
        let (started, _, p) = try_serve(dir.path(), &[]);
        assert!(started);
        let mut p = p.unwrap();
        assert_eq!(used(&p, &key), 520, "{how}: before the damage");
        assert!(p.signal(libc::SIGTERM).success());
        drop(p);

        damage(dir.path(), how);
        let (started, stderr, p) = try_serve(dir.path(), &[]);
        if started {
            // Only a store that still holds everything may start (sled's
            // file has room past its data: a cut there loses nothing).
            let mut p = p.unwrap();
            let n = used(&p, &key);
            assert_eq!(
                n, 520,
                "{how}: a damaged store started, reading {n} of 520: {stderr}"
            );
            eprintln!("{how}: nothing lost, started");
            assert!(p.signal(libc::SIGTERM).success());
            continue;
        }
        assert!(
            stderr.contains("damaged") || stderr.contains("orrupt"),
            "{how}: the refusal says what is wrong: {stderr}"
        );
        assert!(
            stderr.contains("backup") || stderr.contains("orrupt"),
            "{how}: and what to do: {stderr}"
        );
        eprintln!("{how}: refused: {}", stderr.lines().last().unwrap_or(""));

        // --recover starts on what is left, and says what was lost.
        let (started, logs, p) = try_serve(dir.path(), &["--recover"]);
        if started {
            let mut p = p.unwrap();
            assert!(
                logs.contains("--recover"),
                "{how}: the loss is logged: {logs}"
            );
            eprintln!("{how}: recovered, reading {} of 520", used(&p, &key));
            assert!(p.signal(libc::SIGTERM).success());
        } else {
            panic!("{how}: --recover did not start: {logs}");
        }
    }
}
