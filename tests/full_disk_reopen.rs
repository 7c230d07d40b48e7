//! sled meets a real full disk (the reserve off): a write to its log fails,
//! and sled keeps that error for good. `SledStore` sets the engine aside and
//! opens the database again once space is back. Its own test binary (so its
//! own process): if a test elsewhere wedged sled, sled's process-wide lock
//! would stop this one too.

#[path = "common/tmpfs.rs"]
mod tmpfs;

use tmpfs::Tmpfs;
use tollgate::model::UsageRecord;
use tollgate::quota::period::Period;
use tollgate::store::{SledOptions, SledStore, Store, UsageBlock, UsageReads};

/// sled meets a real full disk (the reserve off) with small values, which
/// it writes to its log: it keeps the error for good. The store sets that
/// engine aside and opens the database again once space is back; what was
/// reported written is all there, and the totals equal the records.
#[test]
fn the_store_is_reopened_after_sled_meets_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(dir.path(), "6m") else {
        return;
    };
    let store = SledStore::open_with(
        &dir.path().join("db"),
        SledOptions {
            flush_every_ms: 20,
            cache_bytes: 4 << 20,
            flush_deadline: std::time::Duration::from_secs(2),
            min_free_bytes: 0,
            recover: false,
        },
    )
    .unwrap();
    let ts = 1_795_867_200_000; // 2026-11-28T12:00:00Z
    let write = |i: i64| {
        let blocks: Vec<UsageBlock> = (0..10)
            .map(|t| UsageBlock {
                tenant: format!("t{t}"),
                records: (0..5)
                    .map(|j| UsageRecord {
                        ts_ms: ts + i,
                        endpoint: format!("/v1/{j}").into(),
                        calls: 1,
                        tokens: 7,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        store.write_usage(&blocks)
    };
    let mut written = 0;
    let error = loop {
        match write(written) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1_000_000, "the disk never filled");
    };
    eprintln!("{written} writes, then: {error}");
    assert!(write(written).is_err(), "a full disk keeps failing");
    mount.remount("size=512m");
    let started = std::time::Instant::now();
    while let Err(e) = write(written) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never reopened: {e}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("writable again after {:?}", started.elapsed());
    written += 1;
    let period = Period::containing_secs(ts / 1000);
    for t in ["t0", "t9"] {
        let (mut calls, mut tokens) = (0, 0);
        store
            .scan_usage(t, ts, ts + 10_000_000, &mut |r| {
                calls += r.calls;
                tokens += r.tokens;
                true
            })
            .unwrap();
        assert!(
            calls >= written as u64 * 5,
            "{t}: {calls} records, {written} writes reported done"
        );
        let totals = store.tenant_totals(t, period).unwrap();
        assert_eq!((totals.calls, totals.tokens), (calls, tokens), "{t}");
    }
    store.flush().unwrap();
    drop(store);
    drop(mount);
}
