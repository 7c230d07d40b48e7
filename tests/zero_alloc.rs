//! The decision path - key lookup, decide, enqueue - allocates nothing
//! (SPEC §1), proven with a counting global allocator.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{ALLOCATIONS, COUNTING};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use tollgate::auth::KeyHash;
use tollgate::model::{Plan, RateLimit, Tenant, TenantStatus, UsageRecord};
use tollgate::registry::Registry;
use tollgate::store::{SledStore, Store};
use tollgate::telemetry::stats::Stats;
use tollgate::usage::queue::usage_queue;
use tollgate::usage::Queued;

#[test]
fn lookup_decide_and_enqueue_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 100, 1 << 24).unwrap());
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let plan = Plan {
        id: "p".into(),
        name: "P".into(),
        monthly_calls: Some(1_000_000),
        monthly_tokens: Some(1_000_000),
        rate_limit: Some(RateLimit {
            requests: 1_000,
            per_seconds: 1,
            burst: 1_000_000,
        }),
        price_usd_monthly: 0.0,
        ingest_rate: None,
        reserve_tokens: None,
        reservation_ttl_seconds: None,
        reserve_usd: None,
        limits: Vec::new(),
    };
    let registry = Registry::load(store, &[plan], now).unwrap();
    let mut hashes = Vec::new();
    for i in 0..100 {
        let id = format!("t{i}");
        let t = Tenant {
            id: id.clone(),
            name: id.clone(),
            plan_id: "p".into(),
            status: TenantStatus::Active,
            created_at: now,
            limits: Vec::new(),
            billing_day: None,
        };
        registry.create_tenant(t, now).unwrap();
        hashes.push(KeyHash::of(
            &registry.create_key(&id, "k", None, now).unwrap().1,
        ));
    }
    let (queue, rx) = usage_queue(100_000, Arc::new(Stats::default()));
    let now_ns = tollgate::clock::Nanos(now.timestamp_nanos_opt().unwrap());
    let decide = |i: usize| {
        registry.with_key(&hashes[i % hashes.len()], |entry| {
            let entry = entry.unwrap();
            let d = entry.tenant.acquire(1, now_ns + i as i64);
            queue.enqueue(Queued {
                tenant: entry.tenant.clone(),
                record: UsageRecord {
                    ts_ms: now_ns.millis().0,
                    status: 200,
                    calls: 1,
                    ..Default::default()
                },
            });
            d.allowed()
        })
    };
    // Warm up: the first use on a thread registers it with arc-swap and picks a lane.
    assert!(decide(0));
    COUNTING.with(|c| c.set(true));
    let allowed = (1..50_000).filter(|i| decide(*i)).count();
    COUNTING.with(|c| c.set(false));
    assert_eq!(allowed, 49_999);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the decision path allocated"
    );
    let mut drained = Vec::new();
    assert_eq!(rx.drain_into(&mut drained, usize::MAX), 50_000);

    // And the counter can fail: the same harness sees an allocation.
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 16]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 1);
}
