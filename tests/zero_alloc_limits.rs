//! A decision against the limits of SPEC §12 allocates nothing once its
//! subjects are tracked (issue 39's performance clause): four applicable
//! limits - the plan's monthly calls, the tenant's monthly budget, the
//! key's calls per minute, the end user's tokens per day - checked, taken,
//! held and settled, under a counting global allocator. (Its own binary:
//! the counter is global.)

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{ALLOCATIONS, COUNTING};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use tollgate::auth::KeyHash;
use tollgate::model::{Limit, Measure, Plan, Scope, Tenant, TenantStatus, Window};
use tollgate::quota::scoped::{Ask, Hold};
use tollgate::registry::Registry;
use tollgate::store::{SledStore, Store};

#[test]
fn a_decision_with_four_limits_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 100, 1 << 24).unwrap());
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let plan = Plan {
        id: "p".into(),
        name: "P".into(),
        monthly_calls: Some(1_000_000),
        monthly_tokens: None,
        rate_limit: None,
        price_usd_monthly: 0.0,
        ingest_rate: None,
        reserve_tokens: None,
        reservation_ttl_seconds: None,
        reserve_usd: None,
        limits: vec![
            Limit::new(
                "budget",
                Scope::Tenant,
                Measure::SpendUsd,
                Window::Month,
                Some(1 << 40),
            ),
            Limit::new(
                "key-minute",
                Scope::Key,
                Measure::Calls,
                Window::Minute,
                Some(1 << 40),
            ),
            Limit::new(
                "user-day",
                Scope::User,
                Measure::Tokens,
                Window::Day,
                Some(1 << 40),
            ),
        ],
    };
    let registry = Registry::load(store, &[plan], now).unwrap();
    registry
        .create_tenant(
            Tenant {
                id: "t".into(),
                name: "T".into(),
                plan_id: "p".into(),
                status: TenantStatus::Active,
                created_at: now,
                limits: Vec::new(),
                billing_day: None,
            },
            now,
        )
        .unwrap();
    let (key, secret) = registry.create_key("t", "k", None, now).unwrap();
    let hash = KeyHash::of(&secret);
    let now_ns = tollgate::clock::Nanos(now.timestamp_nanos_opt().unwrap());
    let decide = |i: i64| {
        registry.with_key(&hash, |entry| {
            let entry = entry.unwrap();
            let at = now_ns + i;
            let d = entry.tenant.acquire(1, at);
            let scoped = entry.tenant.scoped().expect("the plan has limits");
            let ask = Ask {
                key_id: &key.id,
                user: "5f0c1c9e-7b7e-4d1e-9a57-0d2f3e4a5b6c", // past what a CompactString holds inline
                bot: "",
                model: "gpt-4o",
                calls: 1,
                tokens: 500,
                spend: 2_000,
            };
            let (views, ids) = scoped.take(&ask, at.millis().0).expect("room");
            assert_eq!(views.len(), 3);
            let hold = Hold::new(scoped, &ask, ids, at.millis().0);
            hold.settle(450, 1_800);
            d.allowed()
        })
    };
    // Warm up: the subjects (the key, the end user) enter the table.
    assert!(decide(0));
    COUNTING.with(|c| c.set(true));
    let allowed = (1..10_000).filter(|i| decide(*i)).count();
    COUNTING.with(|c| c.set(false));
    assert_eq!(allowed, 9_999);
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the decision allocated"
    );
    // And the counter can fail: a new end user is an allocation (the table grows).
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 16]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(ALLOCATIONS.load(Ordering::Relaxed) >= 1);
}
