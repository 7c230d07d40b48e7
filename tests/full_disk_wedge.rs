//! With the free-space reserve off, sled meets the full disk itself. What
//! it does then depends on which write fails first:
//! - a log write: sled keeps the error; the store is reopened once space is
//!   back (see `full_disk.rs`);
//! - a large value (a blob, over ~128 KiB) written to its own file: sled
//!   returns the error but leaves the log buffer it had reserved with a
//!   writer that never finishes, so that buffer is never written and every
//!   later flush waits forever - holding sled's process-wide
//!   `concurrency_control` lock, which then stops every write of every sled
//!   instance in the process. Nothing in the process can recover that; the
//!   reserve (`[store] min_free_mb`) exists so that it never happens.
//!
//! Either way requests keep being answered, the failure is reported, and a
//! graceful stop ends within a bound. Its own test binary, so its own
//! process: a wedged sled would stop the other tests' stores.

mod common;
#[path = "common/tmpfs.rs"]
mod tmpfs;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};
use tmpfs::Tmpfs;
use tollgate::clock::SystemClock;

#[test]
fn without_the_reserve_sled_meets_the_full_disk_and_the_stop_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(dir.path(), "12m") else {
        return;
    };
    let s = TestServer::start_on(
        dir,
        |c| {
            c.store.cache_mb = 4;
            c.store.flush_timeout_ms = 2_000;
            c.store.min_free_mb = 0;
        },
        Arc::new(SystemClock),
    );
    let key = s.tenant_with_key("filler", "enterprise");
    let batch: Vec<Value> = (0..2_000)
        .map(|i| json!({"endpoint": format!("/fill/{i}/{}", "x".repeat(200)), "userId": format!("user-{i}"), "metadata": {"pad": "y".repeat(200)}}))
        .collect();
    // Fill the disk; the failure shows as an error, or (a wedged sled) as a
    // store call in flight past the 2 s flush timeout.
    let mut degraded = false;
    let mut h = Value::Null;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < until {
        let r = s.tenant(
            &key,
            "POST",
            "/api/v1/usage",
            Some(Value::Array(batch.clone())),
        );
        // Taken, or refused whole once the store is known to fail.
        if r.status() != 202 {
            error_body(r, 503, "store_unavailable");
        }
        h = s.health();
        if h["status"] == "degraded" && h["storeFailing"] == true {
            degraded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(degraded, "the disk never filled: {h}");
    // Decisions still come from memory.
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
        200
    );
    // The failed batch is held for a retry, not counted as lost.
    let h: Value = s.health();
    assert_eq!(h["storeFailing"], true, "{h}");
    assert_eq!(h["unpersistedRecords"], 0, "{h}");
    // Space comes back. sled may stay wedged (a blob write that hit ENOSPC
    // left a log buffer that is never written, so every flush waits): then
    // requests are still answered and the health check keeps saying so. Or
    // it only kept the error, and the store is reopened.
    mount.remount("size=512m");
    for _ in 0..5 {
        let status = s
            .tenant(
                &key,
                "POST",
                "/api/v1/usage",
                Some(json!({"endpoint": "/after"})),
            )
            .status();
        assert!(
            status == 202 || status == 503,
            "ingestion answers at once: {status}"
        );
        assert_eq!(
            s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
            200
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let h: Value = s.health();
    eprintln!("health after the remount: {h}");
    if h["status"] != "ok" {
        assert_eq!(h["storeFailing"], true, "a stuck store is reported: {h}");
    }
    // The graceful stop ends within a bound even if sled's flush is stuck.
    let mut s = s;
    let started = std::time::Instant::now();
    let stopped = s.server.take().unwrap().stop();
    eprintln!(
        "stop after a full disk: {stopped:?} in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the stop hung"
    );
    // A wedged store's stop says the last writes may be lost; one that was
    // only failing may have been reopened by the stop's last flush.
    if let Err(e) = &stopped {
        assert!(e.to_string().contains("store"), "{e}");
    }
    // Unmounted before the server's directory is removed.
    drop(mount);
    drop(s);
}
