//! The contract every [`Store`] engine keeps, written once and run against
//! each engine (`contract_suite!` below: sled, PostgreSQL (on a throw-away
//! cluster) and the in-memory reference; an engine added later adds one
//! line). A bug found in one engine becomes
//! a case here for all of them.

use std::sync::Arc;

use chrono::TimeZone;

use super::{AlertMark, MarkOf, PeriodTotals, Store, UsageBlock};
use crate::model::{
    Limit, Measure, Plan, RecordExtra, Scope, StoredKey, Tenant, TenantStatus, UsageRecord, Window,
};
use crate::quota::period::{days_from_civil, Period};
use crate::rollup::{Buckets, Grain, Owner};

const DAY: i64 = 86_400_000;

/// Opens the engine's store again on the same data, as a restart does
/// (the store handed in is dropped first; the in-memory engine outlives
/// its ledger).
type Reopen = Box<dyn Fn(Arc<dyn Store>) -> Arc<dyn Store>>;

/// A store of the engine under test, what must live as long as it, and
/// how to open it again.
pub(super) struct Engine {
    pub store: Arc<dyn Store>,
    pub reopen: Reopen,
    pub _dir: Option<tempfile::TempDir>,
}

fn day(y: i64, m: u32, d: u32) -> i64 {
    days_from_civil(y, m, d) * DAY
}

fn rec(ts_ms: i64, calls: u64, tokens: u64, user: &str) -> UsageRecord {
    UsageRecord {
        ts_ms,
        endpoint: "/v1/chat".into(),
        method: "POST".into(),
        status: 200,
        response_ms: 12.0,
        prompt_tokens: tokens,
        tokens,
        model: "gpt-4o".into(),
        extra: RecordExtra {
            user_id: user.into(),
            ..Default::default()
        }
        .boxed(),
        calls,
        ..Default::default()
    }
}

pub(crate) fn scanned(s: &dyn Store, tenant: &str) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    s.scan_usage(tenant, i64::MIN, i64::MAX, &mut |r| {
        out.push(r.clone());
        true
    })
    .unwrap();
    out
}

fn cell_requests(s: &dyn Store, owner: &Owner, grain: Grain) -> u64 {
    s.rollups(owner, Buckets::all(grain))
        .unwrap()
        .iter()
        .map(|(_, c)| c.total.requests)
        .sum()
}

/// `tenant`'s persisted totals in the period of `t`, and its requests in
/// the cells of every grain.
fn assert_tenant(s: &dyn Store, tenant: &str, t: i64, totals: PeriodTotals, requests: u64) {
    let p = Period::containing_secs(t / 1000);
    assert_eq!(s.tenant_totals(tenant, p).unwrap(), totals, "{tenant}");
    for grain in Grain::ALL {
        let n = cell_requests(s, &Owner::tenant(tenant), grain);
        assert_eq!(n, requests, "{tenant} {grain:?}");
    }
}

/// Persisted totals equal the sum over the persisted records, after every
/// write, in every period (SPEC §7.2); rollups count every record once.
pub(super) fn totals_equal_the_records_after_every_write(e: Engine) {
    let s = e.store.as_ref();
    let (nov, dec) = (day(2026, 11, 30), day(2026, 12, 1));
    let writes: Vec<Vec<UsageBlock>> = vec![
        vec![UsageBlock::new(
            "a",
            vec![rec(nov, 1, 10, "u1"), rec(dec, 2, 5, "u2")],
        )],
        vec![
            UsageBlock::new("a", vec![rec(dec + 1, 0, 7, "u1")]),
            UsageBlock::new("ab", vec![rec(dec + 2, 3, 1, "u3")]),
        ],
        vec![UsageBlock::new(
            "b",
            (0..500).map(|i| rec(dec + i, 1, 1, "u")).collect(),
        )],
    ];
    for blocks in &writes {
        s.write_usage(blocks).unwrap();
        for tenant in ["a", "ab", "b"] {
            let records = scanned(s, tenant);
            for period in [
                Period::containing_secs(nov / 1000),
                Period::containing_secs(dec / 1000),
            ] {
                let mut sum = PeriodTotals::default();
                for r in records
                    .iter()
                    .filter(|r| Period::containing_secs(r.ts_ms / 1000) == period)
                {
                    sum.calls += r.calls;
                    sum.tokens += r.tokens;
                }
                assert_eq!(s.tenant_totals(tenant, period).unwrap(), sum, "{tenant}");
                let listed = s
                    .period_totals(period)
                    .unwrap()
                    .into_iter()
                    .find(|(t, _)| t == tenant)
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                assert_eq!(listed, sum, "{tenant} in period_totals");
            }
        }
    }
    s.checkpoint().unwrap();
    // "a" must not see "ab"'s records although one id prefixes the other.
    assert_eq!(scanned(s, "a").len(), 3);
    for grain in Grain::ALL {
        assert_eq!(cell_requests(s, &Owner::tenant("a"), grain), 3, "{grain:?}");
        assert_eq!(
            cell_requests(s, &Owner::tenant("b"), grain),
            500,
            "{grain:?}"
        );
        assert_eq!(cell_requests(s, &Owner::Fleet, grain), 504, "{grain:?}");
    }
    // Scans come day by day, in write order within a day.
    let a: Vec<i64> = scanned(s, "a").iter().map(|r| r.ts_ms).collect();
    assert_eq!(a, [nov, dec, dec + 1]);
}

/// Retention drops raw records and minute cells by day, and keeps hour and
/// day cells.
pub(super) fn retention_drops_raw_days_and_keeps_hour_and_day_cells(e: Engine) {
    let s = e.store.as_ref();
    for d in [1, 10, 20] {
        s.write_usage(&[UsageBlock::new("a", vec![rec(day(2026, 11, d), 1, 1, "u")])])
            .unwrap();
    }
    s.checkpoint().unwrap();
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .unwrap();
    assert!(crate::usage::retention::apply(s, now, 20).unwrap() > 0);
    assert_eq!(scanned(s, "a").len(), 2, "Nov 1 is past 20 days");
    assert_eq!(
        cell_requests(s, &Owner::tenant("a"), Grain::Minute),
        1,
        "minute cells keep 7 days"
    );
    assert_eq!(cell_requests(s, &Owner::tenant("a"), Grain::Hour), 3);
    assert_eq!(cell_requests(s, &Owner::tenant("a"), Grain::Day), 3);
}

/// Deleting a tenant purges everything under its id, touches no other
/// tenant, keeps the fleet's history, and a block of a retired tenant is
/// never written (hostile tenant, finding 6).
pub(super) fn deleting_a_tenant_purges_it_and_skips_its_retired_blocks(e: Engine) {
    let s = e.store.as_ref();
    let t = day(2026, 11, 20);
    let key = |id: &str, tenant: &str| StoredKey {
        key: crate::model::ApiKey {
            id: id.into(),
            tenant_id: tenant.into(),
            name: "k".into(),
            prefix: "tg_x".into(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
            limits: Vec::new(),
        },
        hash: [7; 32],
        previous: None,
    };
    for tenant in ["gone", "gone-not"] {
        s.put_tenant(&Tenant {
            id: tenant.into(),
            name: tenant.into(),
            plan_id: "p".into(),
            status: TenantStatus::Active,
            created_at: chrono::Utc::now(),
            limits: Vec::new(),
            billing_day: None,
        })
        .unwrap();
        s.put_key(&key(&format!("k-{tenant}"), tenant)).unwrap();
        s.write_usage(&[UsageBlock::new(tenant, vec![rec(t, 2, 3, "u")])])
            .unwrap();
    }
    s.checkpoint().unwrap();
    s.write_usage(&[UsageBlock::new("gone", vec![rec(t + 1, 1, 1, "u")])])
        .unwrap();
    s.put_alert_mark(&AlertMark {
        tenant: "gone".into(),
        period: Period::containing_secs(t / 1000),
        url: "http://x".into(),
        of: MarkOf::Threshold(80),
        body: "{}".into(),
        delivered: false,
    })
    .unwrap();
    s.delete_tenant("gone").unwrap();
    let period = Period::containing_secs(t / 1000);
    assert_eq!(
        s.tenant_totals("gone", period).unwrap(),
        PeriodTotals::default()
    );
    assert!(scanned(s, "gone").is_empty());
    for grain in Grain::ALL {
        assert_eq!(cell_requests(s, &Owner::tenant("gone"), grain), 0);
        assert_eq!(cell_requests(s, &Owner::tenant("gone-not"), grain), 1);
    }
    assert_eq!(
        cell_requests(s, &Owner::Fleet, Grain::Day),
        3,
        "the fleet keeps its history"
    );
    assert_eq!(s.tenants().unwrap().len(), 1);
    assert_eq!(s.keys().unwrap().len(), 1);
    assert!(s.alert_marks().unwrap().is_empty());
    let late = UsageBlock {
        retired: Some(Arc::new(std::sync::atomic::AtomicBool::new(true))),
        ..UsageBlock::new("gone", vec![rec(t, 9, 9, "u")])
    };
    s.write_usage(&[late]).unwrap();
    assert_eq!(
        s.tenant_totals("gone", period).unwrap(),
        PeriodTotals::default()
    );
    assert!(scanned(s, "gone").is_empty());
}

/// A store opened again answers the same: totals, records and rollups,
/// with records written after the last checkpoint counted once (a replayed
/// journal never double counts), in every grain and the fleet's cells.
pub(super) fn a_reopened_store_counts_every_record_once(e: Engine) {
    let reopen = e.reopen;
    let t = day(2026, 11, 20);
    e.store
        .write_usage(&[UsageBlock::new("a", vec![rec(t, 1, 2, "u")])])
        .unwrap();
    e.store.checkpoint().unwrap();
    e.store
        .write_usage(&[UsageBlock::new("a", vec![rec(t + 60_000, 1, 2, "u")])])
        .unwrap();
    let mut s = e.store;
    for _ in 0..2 {
        s = reopen(s);
        assert_eq!(scanned(s.as_ref(), "a").len(), 2);
        let totals = PeriodTotals {
            calls: 2,
            tokens: 4,
        };
        assert_tenant(s.as_ref(), "a", t, totals, 2);
        for grain in Grain::ALL {
            assert_eq!(
                cell_requests(s.as_ref(), &Owner::Fleet, grain),
                2,
                "{grain:?}"
            );
        }
    }
}

/// Without any checkpoint (a crash), the rollups come back from the
/// journal on the next open, then checkpointed.
pub(super) fn rollups_come_back_from_the_journal_after_a_crash(e: Engine) {
    let t = day(2026, 11, 30) + 5_000;
    e.store
        .write_usage(&[UsageBlock::new("a", vec![rec(t, 1, 1, "u"); 3])])
        .unwrap();
    e.store.checkpoint().unwrap();
    e.store
        .write_usage(&[UsageBlock::new("a", vec![rec(t + 60_000, 1, 1, "u"); 2])])
        .unwrap();
    // Seen before any checkpoint, from the book.
    assert_eq!(
        cell_requests(e.store.as_ref(), &Owner::tenant("a"), Grain::Hour),
        5
    );
    let s = (e.reopen)(e.store);
    for grain in Grain::ALL {
        assert_eq!(
            cell_requests(s.as_ref(), &Owner::tenant("a"), grain),
            5,
            "{grain:?}"
        );
        assert_eq!(
            cell_requests(s.as_ref(), &Owner::Fleet, grain),
            5,
            "{grain:?}"
        );
    }
    // The replay checkpointed: one more reopen counts the same.
    let s = (e.reopen)(s);
    assert_eq!(
        cell_requests(s.as_ref(), &Owner::tenant("a"), Grain::Minute),
        5
    );
}

/// A purge is not undone by the journal: records written since the last
/// checkpoint are purged too, and a reopen replays nothing of them.
pub(super) fn a_purge_is_not_undone_by_a_journal_replay(e: Engine) {
    let t = day(2026, 11, 20);
    e.store
        .write_usage(&[UsageBlock::new("gone", vec![rec(t, 1, 1, "u")])])
        .unwrap();
    e.store.checkpoint().unwrap();
    e.store
        .write_usage(&[UsageBlock::new("gone", vec![rec(t, 5, 5, "u")])])
        .unwrap();
    e.store.delete_tenant("gone").unwrap();
    let s = (e.reopen)(e.store);
    for grain in Grain::ALL {
        assert_eq!(
            cell_requests(s.as_ref(), &Owner::tenant("gone"), grain),
            0,
            "{grain:?}"
        );
    }
    assert_eq!(
        cell_requests(s.as_ref(), &Owner::Fleet, Grain::Day),
        2,
        "the fleet keeps its history"
    );
}

/// Two blocks of one tenant in one write (a tenant deleted and created
/// again within a flush interval) are both kept, each counted once, also
/// after a replay (the data-loss bug of issue 13: their keys collided).
pub(super) fn two_blocks_of_one_tenant_in_one_write_are_both_kept(e: Engine) {
    let t = day(2026, 11, 20);
    let first: Vec<UsageRecord> = (0..300).map(|i| rec(t + i, 1, 1, "first")).collect();
    let second: Vec<UsageRecord> = (0..300).map(|i| rec(t + i, 1, 2, "second")).collect();
    e.store
        .write_usage(&[
            UsageBlock::new("a", first.clone()),
            UsageBlock::new("a", second.clone()),
        ])
        .unwrap();
    let s = (e.reopen)(e.store);
    let back = scanned(s.as_ref(), "a");
    assert_eq!(back.len(), 600);
    let mut all = first;
    all.extend(second);
    assert_eq!(back, all);
    let totals = PeriodTotals {
        calls: 600,
        tokens: 900,
    };
    assert_tenant(s.as_ref(), "a", t, totals, 600);
}

/// What format 4 added to a record (its API version, country, integration
/// and retry flag) is stored with it, beside records without them, and
/// summed into every grain's cells, the fleet's too; a store opened again
/// reads both kinds back.
pub(super) fn records_keep_their_version_country_integration_and_retry(e: Engine) {
    let t = day(2026, 11, 20);
    let plain: Vec<UsageRecord> = (0..5).map(|i| rec(t + i, 1, 1, "u")).collect();
    let tagged: Vec<UsageRecord> = (0..5)
        .map(|i| UsageRecord {
            extra: RecordExtra {
                user_id: "u".into(),
                api_version: "2024-06-01".into(),
                country: "DE".into(),
                integration: "openai".into(),
                ..Default::default()
            }
            .boxed(),
            retried: i % 2 == 0,
            status: if i == 0 { 500 } else { 200 },
            cost_usd: 0.5,
            ..rec(t + 10 + i, 1, 1, "u")
        })
        .collect();
    e.store
        .write_usage(&[UsageBlock::new("a", plain.clone())])
        .unwrap();
    e.store
        .write_usage(&[UsageBlock::new("a", tagged.clone())])
        .unwrap();
    let s = (e.reopen)(e.store);
    let mut all = plain;
    all.extend(tagged);
    assert_eq!(scanned(s.as_ref(), "a"), all);
    s.checkpoint().unwrap();
    for owner in [Owner::tenant("a"), Owner::Fleet] {
        for grain in Grain::ALL {
            let cells = s.rollups(&owner, Buckets::all(grain)).unwrap();
            let mut c = crate::rollup::Cell::default();
            cells.iter().for_each(|(_, x)| c.merge(x));
            let x = &c.ext;
            assert_eq!(x.api_versions["v1"].requests, 5, "{owner:?} {grain:?}");
            assert_eq!(x.api_versions["2024-06-01"].requests, 5);
            assert_eq!(x.countries["DE"].requests, 5);
            assert_eq!(x.integrations["openai"].agg.requests, 5);
            assert_eq!(x.integrations["openai"].latency.count(), 5);
            assert_eq!((x.retries, x.retry_cost_usd), (3, 1.5));
            assert_eq!((x.failed_billed, x.failed_cost_usd), (1, 0.5));
        }
    }
}

/// What format 6 added to a record (its token kinds, where its cost
/// went, the key that made it) is stored with it, beside records without them (and those with
/// only format 4's fields), summed by kind into every grain's cells, in
/// all and by model, the fleet's too; a store opened again reads all back.
pub(super) fn records_keep_their_token_kinds_and_cost_split(e: Engine) {
    use crate::model::{CostSplit, TokenKinds};
    let t = day(2026, 11, 21);
    let plain: Vec<UsageRecord> = (0..3).map(|i| rec(t + i, 1, 1, "u")).collect();
    let versioned = UsageRecord {
        extra: RecordExtra {
            api_version: "v2".into(),
            ..Default::default()
        }
        .boxed(),
        ..rec(t + 5, 1, 1, "")
    };
    let kinded: Vec<UsageRecord> = (0..4)
        .map(|i| UsageRecord {
            model: "claude".into(),
            prompt_tokens: 100,
            completion_tokens: 50,
            tokens: 150,
            cost_usd: 1.0,
            extra: RecordExtra {
                kinds: TokenKinds {
                    cached_prompt: 60,
                    cache_write: 20,
                    cache_write_1h: 10 * (i % 2),
                    reasoning: 30,
                },
                cost_split: CostSplit {
                    uncached_prompt: 0.25,
                    cached_prompt: 0.125,
                    cache_write: 0.125,
                    completion: 0.5,
                    reasoning: 0.25,
                },
                ..Default::default()
            }
            .boxed(),
            key_id: if i < 3 { "key_one" } else { "key_two" }.into(),
            ..rec(t + 10 + i as i64, 1, 1, "u")
        })
        .collect();
    let mut all = plain.clone();
    all.push(versioned.clone());
    all.extend(kinded.clone());
    e.store
        .write_usage(&[
            UsageBlock::new("a", plain),
            UsageBlock::new("a", vec![versioned]),
        ])
        .unwrap();
    e.store
        .write_usage(&[UsageBlock::new("a", kinded)])
        .unwrap();
    let s = (e.reopen)(e.store);
    assert_eq!(scanned(s.as_ref(), "a"), all);
    s.checkpoint().unwrap();
    for owner in [Owner::tenant("a"), Owner::Fleet] {
        for grain in Grain::ALL {
            let cells = s.rollups(&owner, Buckets::all(grain)).unwrap();
            let mut c = crate::rollup::Cell::default();
            cells.iter().for_each(|(_, x)| c.merge(x));
            let k = &c.ext6;
            for agg in [&k.kinds, &k.model_kinds["claude"]] {
                assert_eq!(
                    (
                        agg.cached_prompt_tokens,
                        agg.cache_write_tokens,
                        agg.cache_write_1h_tokens,
                        agg.reasoning_tokens
                    ),
                    (240, 80, 20, 120),
                    "{owner:?} {grain:?}"
                );
                assert_eq!(
                    (
                        agg.uncached_prompt_usd,
                        agg.cached_prompt_usd,
                        agg.cache_write_usd,
                        agg.completion_usd,
                        agg.reasoning_usd
                    ),
                    (1.0, 0.5, 0.5, 2.0, 1.0)
                );
            }
            assert_eq!(c.total.requests, 8);
            // By key: the records that name one (the fleet's cells leave
            // them to each tenant's, as users and bots).
            if owner != Owner::Fleet {
                assert_eq!(
                    (
                        k.keys["key_one"].requests,
                        k.keys["key_two"].requests,
                        k.keys.len()
                    ),
                    (3, 1, 2)
                );
            }
        }
    }
}

/// The heads of the cells (totals and latencies, read without the rest)
/// equal the heads of the whole cells, before a checkpoint (the book) and
/// after it (the stored cells), for a tenant and the fleet, at every grain.
pub(super) fn cell_heads_are_the_cells_totals(e: Engine) {
    let t = day(2026, 11, 20);
    let records: Vec<UsageRecord> = (0..200)
        .map(|i| UsageRecord {
            response_ms: 5.0 + i as f64,
            status: if i % 9 == 0 { 500 } else { 200 },
            ..rec(t + i * 97_000, 1, 3, &format!("u{}", i % 13))
        })
        .collect();
    e.store
        .write_usage(&[UsageBlock::new("a", records)])
        .unwrap();
    let check = |s: &dyn Store| {
        for owner in [Owner::tenant("a"), Owner::Fleet] {
            for grain in Grain::ALL {
                let span = Buckets::all(grain);
                let whole: Vec<(i64, crate::rollup::CellHead)> = s
                    .rollups(&owner, span)
                    .unwrap()
                    .iter()
                    .map(|(b, c)| (*b, crate::rollup::CellHead::of(c)))
                    .collect();
                assert!(!whole.is_empty());
                assert_eq!(
                    s.rollup_heads(&owner, span).unwrap(),
                    whole,
                    "{owner:?} {grain:?}"
                );
            }
        }
    };
    check(e.store.as_ref());
    e.store.checkpoint().unwrap();
    check(e.store.as_ref());
    let s = (e.reopen)(e.store);
    check(s.as_ref());
}

/// A firing is claimed once: the second claim of its key (by this
/// instance, or another sharing the store) records nothing and says so;
/// a claimed mark is updated (delivered) with `put` and survives a reopen.
pub(super) fn an_alert_mark_is_claimed_once(e: Engine) {
    let mark = AlertMark {
        tenant: "acme".into(),
        period: Period(683),
        url: "mailto:ops@example.com".into(),
        of: MarkOf::Episode(17),
        body: "{\"event\":\"usage.anomaly\"}".into(),
        delivered: false,
    };
    assert!(e.store.claim_alert_mark(&mark).unwrap());
    let again = AlertMark {
        body: "other".into(),
        ..mark.clone()
    };
    assert!(!e.store.claim_alert_mark(&again).unwrap());
    assert_eq!(e.store.alert_marks().unwrap(), vec![mark.clone()]);
    let delivered = AlertMark {
        delivered: true,
        ..mark.clone()
    };
    e.store.put_alert_mark(&delivered).unwrap();
    let s = (e.reopen)(e.store);
    assert_eq!(s.alert_marks().unwrap(), vec![delivered]);
    assert!(!s.claim_alert_mark(&mark).unwrap());
    let other_period = AlertMark {
        period: Period(684),
        ..mark
    };
    assert!(s.claim_alert_mark(&other_period).unwrap());
}

/// Plans, tenants, keys and alert marks come back as they were put.
pub(super) fn the_catalog_and_alert_marks_round_trip(e: Engine) {
    let s = e.store.as_ref();
    let mut plan = Plan::unlimited("pro");
    plan.monthly_calls = Some(9);
    let spend = Limit::new(
        "budget",
        Scope::Tenant,
        Measure::SpendUsd,
        Window::BillingMonth,
        Some(1_500_000),
    );
    let burst = Limit {
        per_seconds: 60,
        burst: 5,
        ..Limit::new(
            "key-burst",
            Scope::Key,
            Measure::Calls,
            Window::Burst,
            Some(5),
        )
    };
    plan.limits = vec![spend.clone(), burst.clone()];
    plan.reserve_usd = Some(250_000);
    s.put_plan(&plan).unwrap();
    s.put_plan(&Plan::unlimited("free")).unwrap();
    s.delete_plan("free").unwrap();
    assert_eq!(s.plans().unwrap(), vec![plan]);
    let mut k = StoredKey {
        key: crate::model::ApiKey {
            id: "k1".into(),
            tenant_id: "t".into(),
            name: "k".into(),
            prefix: "tg_abcde".into(),
            created_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            revoked_at: None,
            expires_at: Some(chrono::Utc.with_ymd_and_hms(2027, 1, 2, 3, 4, 5).unwrap()),
            last_used_at: None,
            limits: vec![burst.clone()],
        },
        hash: [3; 32],
        previous: Some(crate::model::PreviousSecret {
            hash: [4; 32],
            until: chrono::Utc.with_ymd_and_hms(2026, 1, 3, 3, 4, 5).unwrap(),
        }),
    };
    s.put_key(&k).unwrap();
    assert_eq!(s.key("k1").unwrap(), Some(k.clone()));
    k.key.revoked_at = Some(chrono::Utc.with_ymd_and_hms(2026, 2, 2, 3, 4, 5).unwrap());
    k.key.expires_at = None;
    k.previous = None;
    s.put_key(&k).unwrap();
    assert_eq!(s.key("k1").unwrap(), Some(k.clone()));
    // When keys were used: the latest use is kept, per tenant.
    let used = |key: &str, tenant: &str, at_ms| crate::store::KeyUse {
        tenant: tenant.into(),
        key_id: key.into(),
        at_ms,
    };
    s.touch_keys(&[used("k1", "t", 50), used("k9", "u", 7)])
        .unwrap();
    s.touch_keys(&[used("k1", "t", 40)]).unwrap();
    assert_eq!(
        s.keys_last_used("t").unwrap(),
        std::collections::HashMap::from([("k1".to_string(), 50)])
    );
    assert_eq!(s.keys_last_used("u").unwrap()["k9"], 7);
    assert_eq!(s.key("nope").unwrap(), None);
    let mut other = k.clone();
    other.key.id = "k2".into();
    other.key.tenant_id = "u".into();
    s.put_key(&other).unwrap();
    assert_eq!(s.keys_of("t").unwrap(), vec![k.clone()]);
    assert_eq!(s.keys_of("u").unwrap(), vec![other]);
    assert!(s.keys_of("nobody").unwrap().is_empty());
    let mut tenant = Tenant {
        id: "t".into(),
        name: "T".into(),
        plan_id: "pro".into(),
        status: TenantStatus::Active,
        created_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        limits: vec![
            spend,
            Limit::new(
                "in-flight-9",
                Scope::Model,
                Measure::InFlight,
                Window::None,
                None,
            ),
        ],
        billing_day: Some(15),
    };
    s.put_tenant(&tenant).unwrap();
    tenant.status = TenantStatus::Suspended;
    tenant.name = "T again".into();
    s.put_tenant(&tenant).unwrap();
    assert_eq!(s.tenant("t").unwrap(), Some(tenant));
    assert_eq!(s.tenant("nope").unwrap(), None);
    let mark = |period: i32, threshold| AlertMark {
        tenant: "t".into(),
        period: Period(period),
        url: "http://x".into(),
        of: MarkOf::Threshold(threshold),
        body: "{}".into(),
        delivered: false,
    };
    s.put_alert_mark(&mark(10, 80)).unwrap();
    s.put_alert_mark(&mark(11, 80)).unwrap();
    s.put_alert_mark(&mark(11, 100)).unwrap();
    s.prune_alert_marks(Period(11)).unwrap();
    let mut left: Vec<u32> = s
        .alert_marks()
        .unwrap()
        .iter()
        .map(|m| m.of.number())
        .collect();
    left.sort();
    assert_eq!(left, [80, 100]);
}

/// Record ids are claimed with their records (issue 40, item 5): a record
/// whose id is held is left out and named with its holder; the claims
/// survive a reopen, go with a purged tenant, and are forgotten by age.
fn a_claimed_id_is_written_once_and_forgotten_after_retention(e: Engine) {
    use super::Claims;
    let t = day(2026, 11, 3);
    let block =
        |n: usize| UsageBlock::new("a", (0..n).map(|i| rec(t + i as i64, 1, 10, "")).collect());
    let claims = |key: &str, ids: &[&str], at_ms: i64| Claims {
        key: key.into(),
        at_ms,
        ids: ids.iter().map(|s| s.to_string()).collect(),
        key_held: false,
    };
    let Engine {
        store: s,
        reopen,
        _dir,
    } = e;
    let held = s
        .write_claimed(block(3), claims("k1", &["x", "", "y"], t))
        .unwrap();
    assert_eq!(held, [None, None, None], "all new: all written");
    // The same batch again: nothing written; the holders named.
    let held = s
        .write_claimed(block(3), claims("k1", &["x", "", "y"], t))
        .unwrap();
    assert_eq!(
        held,
        [Some("k1".into()), Some("k1".into()), Some("k1".into())],
        "the key stands for the record without an id"
    );
    // The key reused for another batch: its own new ids are written, its
    // records without one are the key's.
    let held = s
        .write_claimed(block(2), claims("k1", &["", "v"], t))
        .unwrap();
    assert_eq!(held, [Some("k1".into()), None]);
    // Another batch reusing one id.
    let held = s
        .write_claimed(block(2), claims("", &["y", "z"], t))
        .unwrap();
    assert_eq!(held, [Some("k1".into()), None]);
    let p = Period::containing_secs(t / 1000);
    // x, the one without an id, y, v, z.
    assert_eq!(
        s.tenant_totals("a", p).unwrap(),
        PeriodTotals {
            calls: 5,
            tokens: 50
        }
    );
    assert_eq!(scanned(s.as_ref(), "a").len(), 5);
    let s = reopen(s);
    assert_eq!(
        s.claimed("a", &["x", "z", "w"]).unwrap(),
        [Some("k1".into()), Some(String::new()), None],
        "claims survive a reopen"
    );
    assert_eq!(s.claimed("b", &["x"]).unwrap(), [None], "per tenant");
    // Another tenant's claims, made later, outlive the retention cut.
    let other = UsageBlock::new("b", vec![rec(t, 1, 1, "")]);
    assert_eq!(
        s.write_claimed(other, claims("", &["x"], t + DAY)).unwrap(),
        [None]
    );
    assert_eq!(
        s.drop_claims_before(t + 1).unwrap(),
        5,
        "x, y, z, v and the key"
    );
    assert_eq!(
        s.claimed("a", &["x", "y", "z"]).unwrap(),
        [None, None, None]
    );
    assert_eq!(s.claimed("b", &["x"]).unwrap(), [Some(String::new())]);
    s.delete_tenant("b").unwrap();
    assert_eq!(
        s.claimed("b", &["x"]).unwrap(),
        [None],
        "purged with its tenant"
    );
}

macro_rules! contract_suite {
    ($($engine:ident => $make:expr;)*) => {
        $(
            mod $engine {
                use super::*;

                contract_suite!(@cases $make;
                    totals_equal_the_records_after_every_write,
                    retention_drops_raw_days_and_keeps_hour_and_day_cells,
                    deleting_a_tenant_purges_it_and_skips_its_retired_blocks,
                    a_reopened_store_counts_every_record_once,
                    rollups_come_back_from_the_journal_after_a_crash,
                    a_purge_is_not_undone_by_a_journal_replay,
                    two_blocks_of_one_tenant_in_one_write_are_both_kept,
                    the_catalog_and_alert_marks_round_trip,
                    records_keep_their_version_country_integration_and_retry,
                    records_keep_their_token_kinds_and_cost_split,
                    an_alert_mark_is_claimed_once,
                    cell_heads_are_the_cells_totals,
                    a_claimed_id_is_written_once_and_forgotten_after_retention,
                );
            }
        )*
    };
    (@cases $make:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                super::$case($make);
            }
        )*
    };
}

fn sled() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &std::path::Path| -> Arc<dyn Store> {
        let store = super::sled::wait_for_lock(|| {
            super::SledStore::open_with(
                path,
                super::SledOptions {
                    flush_every_ms: 100,
                    cache_bytes: 1 << 24,
                    flush_deadline: std::time::Duration::from_secs(10),
                    min_free_bytes: 0,
                    recover: false,
                },
            )
        });
        Arc::new(store.unwrap())
    };
    let path = dir.path().to_path_buf();
    Engine {
        store: open(&path),
        reopen: Box::new(move |old| {
            // Like a restart: the last handle goes, sled lets go of the files.
            drop(old);
            open(&path)
        }),
        _dir: Some(dir),
    }
}

fn memory() -> Engine {
    let engine = Arc::new(super::memory::MemoryEngine::default());
    Engine {
        store: Arc::new(super::memory::MemoryStore::over(engine.clone())),
        // A new ledger over the same engine: what it kept, and its journal.
        reopen: Box::new(move |old| {
            drop(old);
            Arc::new(super::memory::MemoryStore::over(engine.clone()))
        }),
        _dir: None,
    }
}

fn postgres() -> Engine {
    let url = super::postgres::harness::fresh_database();
    let open = move || -> Arc<dyn Store> {
        Arc::new(
            super::postgres::open(&super::postgres::tests::options(&url, "one"))
                .unwrap()
                .0,
        )
    };
    Engine {
        store: open(),
        reopen: Box::new(move |old| {
            drop(old);
            open()
        }),
        _dir: None,
    }
}

contract_suite! {
    sled_engine => sled();
    memory_engine => memory();
    postgres_engine => postgres();
}
