//! SPEC §7.3 on a real file system: the data directory on a small tmpfs that
//! fills up. Requests keep being answered from memory, the failure is
//! reported, nothing panics, and persistence resumes when space returns.
//! Needs permission to mount a tmpfs; without it the test says so and does
//! nothing.
//!
//! KNOWN FAILURE, kept as evidence (run with `cargo test --test full_disk --
//! --ignored --nocapture`): with sled 0.34.7, once a write hits ENOSPC, a
//! later `Db::flush` never returns - the flusher thread waits forever in
//! `sled::pagecache::iobuf` (`Condvar::wait<StabilityIntervals>`) for an IO
//! buffer whose write failed. Requests keep being answered and writes after
//! the remount succeed (`/healthz` returns to `ok`), but the graceful stop
//! then hangs joining the flusher. Seen on 2026-11-28 (gdb: thread
//! "tollgate-flushe" parked in that wait; "tollgate-server" in
//! `UsageFlusher::shutdown` -> `JoinHandle::join`). This is the case for
//! moving the store to another engine behind the `Store` trait, or for
//! flushing with a timeout and refusing to start on a wedged store.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use tollgate::app::RunningServer;
use tollgate::clock::SystemClock;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Mount(dir.to_path_buf()))
}

#[test]
#[ignore = "sled 0.34.7 wedges on flush after ENOSPC; see the module comment"]
fn a_full_disk_degrades_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = mount_tmpfs(dir.path(), "12m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    let mut c = config(dir.path());
    c.store.cache_mb = 4;
    let server = RunningServer::start(c, ADMIN, Arc::new(SystemClock)).unwrap();
    let s = TestServer {
        server: Some(server),
        dir: tempfile::tempdir().unwrap(),
        http: reqwest::blocking::Client::new(),
    };
    let key = s.tenant_with_key("filler", "enterprise");
    let batch: Vec<Value> = (0..2_000)
        .map(|i| json!({"endpoint": format!("/fill/{i}/{}", "x".repeat(200)), "userId": format!("user-{i}"), "metadata": {"pad": "y".repeat(200)}}))
        .collect();
    let mut degraded = false;
    for _ in 0..200 {
        let r = s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(Value::Array(batch.clone())),
        );
        assert_eq!(r.status(), 202, "ingestion keeps answering");
        let h: Value = s.health();
        if h["status"] == "degraded" && h["storeFailing"] == true {
            degraded = true;
            break;
        }
    }
    assert!(degraded, "the disk never filled");
    // Decisions still come from memory.
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
        200
    );
    let h: Value = s.health();
    assert!(h["unpersistedRecords"].as_u64().unwrap() > 0, "{h}");
    // Space comes back: persistence resumes by itself.
    assert!(Command::new("mount")
        .args(["-o", "remount,size=512m"])
        .arg(&mount.0)
        .status()
        .unwrap()
        .success());
    s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/after"})),
    );
    wait_until(|| {
        let h: Value = s.health();
        h["status"] == "ok"
    });
    drop(s);
    drop(mount);
}
