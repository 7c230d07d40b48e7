//! What only a shared engine promises, on a throw-away cluster
//! (`harness`): a write sent twice counts once, instances number their
//! writes apart and read each other's, catalog writes reach the others,
//! records keep every field, retention drops partitions, and a newer
//! schema is refused. The contract every engine keeps is `contract.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::{harness::cluster, open, PgOptions};
use crate::model::{Plan, RecordExtra, StoredKey, Tenant, TenantStatus, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Grain, Owner};
use crate::store::contract::scanned;
use crate::store::shared::{Changed, Shared};
use crate::store::{Catalog, Store, StoreError, UsageBlock, UsageLog, UsageReads};

pub(crate) fn options(url: &str, instance: &str) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        instance: instance.to_string(),
        pool_size: 4,
        call_timeout: Duration::from_secs(30),
        spool_dir: None,
        spool_max_bytes: 0,
    }
}

const T: i64 = 1_795_000_000_000; // 2026-11-18

fn rec(i: i64) -> UsageRecord {
    UsageRecord {
        ts_ms: T + i,
        endpoint: "/v1/chat".into(),
        method: "POST".into(),
        status: 200,
        calls: 1,
        tokens: 3,
        ..Default::default()
    }
}

fn requests(s: &dyn Store, owner: &Owner) -> u64 {
    s.rollups(owner, Buckets::all(Grain::Day))
        .unwrap()
        .iter()
        .map(|(_, c)| c.total.requests)
        .sum()
}

fn name(db_url: &str) -> &str {
    db_url.rsplit('/').next().unwrap()
}

#[test]
fn a_write_sent_twice_counts_once() {
    let url = cluster().fresh_database();
    let (store, engine) = open(&options(&url, "a")).unwrap();
    let block = UsageBlock::new("t", (0..10).map(rec).collect());
    engine.append(1, &[&block]).unwrap();
    // The same write again: its commit's answer was lost, say.
    engine.append(1, &[&block]).unwrap();
    let p = Period::containing_secs(T / 1000);
    assert_eq!(store.tenant_totals("t", p).unwrap().calls, 10);
    assert_eq!(scanned(&store, "t").len(), 10);
    assert_eq!(requests(&store, &Owner::tenant("t")), 10);
    assert_eq!(engine.last_seq().unwrap(), 1);
    // A new ledger numbers on from there.
    drop(store);
    let (store, _) = open(&options(&url, "a")).unwrap();
    assert_eq!(store.write_usage(&[block]).unwrap(), 2);
    assert_eq!(store.tenant_totals("t", p).unwrap().calls, 20);
}

#[test]
fn instances_number_their_writes_apart_and_read_each_others() {
    let url = cluster().fresh_database();
    let (a, _) = open(&options(&url, "a")).unwrap();
    let (b, _) = open(&options(&url, "b")).unwrap();
    assert_eq!(
        a.write_usage(&[UsageBlock::new("t", vec![rec(0), rec(1)])])
            .unwrap(),
        1
    );
    assert_eq!(
        b.write_usage(&[UsageBlock::new("t", vec![rec(2)])])
            .unwrap(),
        1
    );
    assert_eq!(
        b.write_usage(&[UsageBlock::new("u", vec![rec(3)])])
            .unwrap(),
        2
    );
    for s in [&a, &b] {
        assert_eq!(scanned(s, "t").len(), 3);
        assert_eq!(requests(s, &Owner::tenant("t")), 3);
        assert_eq!(requests(s, &Owner::Fleet), 4);
        let p = Period::containing_secs(T / 1000);
        assert_eq!(s.tenant_totals("t", p).unwrap().calls, 3);
    }
}

#[test]
fn records_keep_every_field() {
    let url = cluster().fresh_database();
    let (s, _) = open(&options(&url, "a")).unwrap();
    let r = UsageRecord {
        ts_ms: T + 123,
        key_id: "key_0123456789abcdef".into(),
        endpoint: "/v1/ünïcode \"quoted\"".into(),
        method: "PATCH".into(),
        status: 503,
        response_ms: 12.625,
        prompt_tokens: 7,
        completion_tokens: 9,
        tokens: 17,
        model: "gpt-4o".into(),
        calls: 2,
        cost_usd: 0.000_125,
        rejected: true,
        retried: true,
        extra: RecordExtra {
            user_id: "user\\1".into(),
            bot_id: "bot".into(),
            metadata: vec![("a".into(), "1".into()), ("plan\n".into(), "x\"y".into())],
            api_version: "v1beta".into(),
            country: "JP".into(),
            integration: "anthropic".into(),
            kinds: crate::model::TokenKinds {
                cached_prompt: 3,
                cache_write: 2,
                cache_write_1h: 1,
                reasoning: 4,
            },
            cost_split: crate::model::CostSplit {
                uncached_prompt: 0.000_01,
                cached_prompt: 0.000_002,
                cache_write: 0.000_003,
                completion: 0.000_11,
                reasoning: 0.000_05,
            },
        }
        .boxed(),
    };
    s.write_usage(&[UsageBlock::new("t", vec![r.clone()])])
        .unwrap();
    assert_eq!(scanned(&s, "t"), vec![r]);
    // A BI tool reads the metadata as an object.
    let got = cluster()
        .psql(name(&url), "SELECT metadata->>'a' FROM usage_records")
        .unwrap();
    assert_eq!(got, "1");
}

#[test]
fn retention_drops_whole_day_partitions() {
    let url = cluster().fresh_database();
    let (s, _) = open(&options(&url, "a")).unwrap();
    let day = 86_400_000;
    for d in 0..3 {
        s.write_usage(&[UsageBlock::new("t", vec![rec(d * day)])])
            .unwrap();
    }
    let partitions = || {
        cluster()
            .psql(
                name(&url),
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_records'::regclass",
            )
            .unwrap()
    };
    assert_eq!(partitions(), "3");
    let first = T.div_euclid(day);
    assert_eq!(s.expire_before(first + 2, i64::MIN / 2).unwrap(), 2);
    assert_eq!(partitions(), "1");
    assert_eq!(scanned(&s, "t").len(), 1);
    // The hour and day cells keep the history.
    assert_eq!(requests(&s, &Owner::tenant("t")), 3);
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let url = cluster().fresh_database();
    drop(open(&options(&url, "a")).unwrap());
    cluster()
        .psql(name(&url), "UPDATE tollgate_schema SET version = 999")
        .unwrap();
    match open(&options(&url, "a")) {
        Err(e @ StoreError::NewerSchema { found: 999, .. }) => {
            assert!(e.to_string().contains("newer Tollgate"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn catalog_writes_reach_the_other_instances() {
    let url = cluster().fresh_database();
    let (a, _) = open(&options(&url, "a")).unwrap();
    let (b, b_engine) = open(&options(&url, "b")).unwrap();
    let start = b_engine.catalog_version().unwrap();
    // B listens before A writes.
    assert!(!b_engine.wait_for_changes(Duration::from_millis(10)));
    a.put_plan(&Plan::unlimited("pro")).unwrap();
    let tenant = Tenant {
        id: "acme".into(),
        name: "Acme".into(),
        plan_id: "pro".into(),
        status: TenantStatus::Active,
        created_at: crate::clock::ms_to_utc(T),
        limits: vec![crate::model::Limit::new(
            "per-bot",
            crate::model::Scope::Bot,
            crate::model::Measure::Calls,
            crate::model::Window::Hour,
            Some(7),
        )],
        billing_day: Some(9),
    };
    a.put_tenant(&tenant).unwrap();
    let key = StoredKey {
        key: crate::model::ApiKey {
            id: "k1".into(),
            tenant_id: "acme".into(),
            name: "k".into(),
            prefix: "tg_12345".into(),
            created_at: crate::clock::ms_to_utc(T),
            revoked_at: None,
            expires_at: Some(crate::clock::ms_to_utc(T + 86_400_000)),
            last_used_at: None,
            limits: Vec::new(),
        },
        hash: [9; 32],
        previous: Some(crate::model::PreviousSecret {
            hash: [1; 32],
            until: crate::clock::ms_to_utc(T + 60_000),
        }),
    };
    a.put_key(&key).unwrap();
    assert!(
        b_engine.wait_for_changes(Duration::from_secs(5)),
        "notified"
    );
    // B's own writes are not handed back to it.
    b.put_plan(&Plan::unlimited("free")).unwrap();
    let (version, changes) = b_engine.catalog_changes(start, 100).unwrap();
    assert_eq!(version, start + 4);
    assert_eq!(
        changes,
        vec![
            Changed::Plan("pro".into(), Some(Plan::unlimited("pro"))),
            Changed::Tenant("acme".into(), Some(tenant)),
            Changed::Key("k1".into(), Some(key)),
        ]
    );
    a.delete_tenant("acme").unwrap();
    let (_, changes) = b_engine.catalog_changes(version, 100).unwrap();
    assert_eq!(changes, vec![Changed::Tenant("acme".into(), None)]);
    assert!(b.keys().unwrap().is_empty());
    assert_eq!(b_engine.heartbeat(Duration::from_secs(5)).unwrap(), 1);
    let _ = Arc::clone(&b_engine);
}

/// A rebuilt Redis hash learns from `shares` what each process's records
/// brought to the totals, read in one snapshot with them: only writes made
/// after `set_process` count under its name, and `mark_made` says a hash
/// existed (issue 36, items 1 and 2).
#[test]
fn shares_split_the_totals_by_process_and_say_whether_a_hash_was_made() {
    let url = cluster().fresh_database();
    let (store, engine) = open(&options(&url, "a")).unwrap();
    let period = Period::containing_secs(T / 1000);
    store
        .write_usage(&[UsageBlock::new("t", (0..2).map(rec).collect())])
        .unwrap();
    engine.set_process("a#1");
    store
        .write_usage(&[UsageBlock::new("t", (2..7).map(rec).collect())])
        .unwrap();
    let shares = engine.shares("t", period, "calls").unwrap();
    assert_eq!((shares.total.calls, shares.total.tokens), (7, 21));
    assert_eq!(shares.by_process.len(), 1);
    assert_eq!(shares.by_process[0].0, "a#1");
    assert_eq!(
        (shares.by_process[0].1.calls, shares.by_process[0].1.tokens),
        (5, 15)
    );
    assert_eq!(shares.made_ms_ago, None);
    engine.mark_made("t", period, "calls").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    engine.mark_made("t", period, "calls").unwrap();
    let ago = engine
        .shares("t", period, "calls")
        .unwrap()
        .made_ms_ago
        .unwrap();
    assert!(
        (50..10_000).contains(&ago),
        "the first mark counts: {ago} ms ago"
    );
    assert_eq!(
        engine.shares("u", period, "calls").unwrap().made_ms_ago,
        None
    );
}

/// The grants a process writes before spending them (issue 36, item 3):
/// each figure only rises, per measure, and `shares` returns them with the
/// totals, so a rebuilt hash counts a process that never joins it.
#[test]
fn grants_written_only_rise_and_come_back_with_the_shares() {
    let url = cluster().fresh_database();
    let (_store, engine) = open(&options(&url, "a")).unwrap();
    let period = Period::containing_secs(T / 1000);
    engine
        .write_grants(period, "calls", &[("t".into(), 10, 0)])
        .unwrap();
    engine.set_process("a#1");
    let rows = [("t".to_string(), 40, 5), ("u".to_string(), 7, 0)];
    engine.write_grants(period, "calls", &rows).unwrap();
    // Older figures (a late write) lower nothing.
    engine
        .write_grants(period, "calls", &[("t".into(), 30, 2)])
        .unwrap();
    engine
        .write_grants(period, "tokens", &[("t".into(), 900, 100)])
        .unwrap();
    let calls = engine.shares("t", period, "calls").unwrap();
    assert_eq!(
        calls.grants,
        vec![("a#1".to_string(), 40, 5)],
        "unnamed writes count nothing"
    );
    let tokens = engine.shares("t", period, "tokens").unwrap();
    assert_eq!(tokens.grants, vec![("a#1".to_string(), 900, 100)]);
    assert_eq!(engine.shares("u", period, "calls").unwrap().grants.len(), 1);
}

/// Issue 36, item 8: a data exception or an integrity violation is about
/// what was sent - the same call fails again - so it is `Rejected`, never
/// retried as it is; an unreachable database is not.
#[test]
fn data_errors_are_rejected_and_never_retried() {
    let url = cluster().fresh_database();
    let (_store, engine) = open(&options(&url, "a")).unwrap();
    for sql in [
        "SELECT 1 / 0",
        "SELECT 9223372036854775807::int8 + 1",
        "INSERT INTO usage_days (day) VALUES (1), (1)",
    ] {
        let e = engine.query(sql, Vec::new()).unwrap_err();
        assert!(e.rejects_data() && !e.retryable(), "{sql}: {e}");
    }
    let e = engine
        .query("SELECT * FROM no_such_table", Vec::new())
        .unwrap_err();
    assert!(!e.rejects_data(), "{e}");
    // The error says what the server said (issue 36, item 9: `/healthz`
    // said only "postgres: db error" during an outage).
    assert!(
        e.to_string().contains("42P01") && e.to_string().contains("no_such_table"),
        "{e}"
    );
}

/// The spool is delivered in transactions of many writes (issue 36, item
/// 9: one transaction a write delivered 1,300-1,600 records a second per
/// instance after an outage): every write once - one the database has
/// already (its answer lost) is skipped - with the totals and rollups of
/// all of them. Prints the rate of delivery: one instance alone, and three
/// delivering at once after the same outage (the case), on the
/// tests' cluster (`fsync=off`) and on one that commits to disk as a
/// served PostgreSQL does.
#[test]
fn a_spool_is_delivered_in_batches_each_write_once() {
    // Delivered one write a transaction (as before batching) and in
    // batches, alternately, each on a database of its own: the rates are
    // BENCHMARKS.md's ("Spool delivery").
    let durable = super::harness::own_durable_cluster();
    let batched = super::engine::DRAIN_WRITES;
    for (cluster, name) in [(cluster(), "fsync off"), (&durable, "fsync on")] {
        for instances in [1, 3] {
            let mut rates = Vec::new();
            for writes in [1, batched, 0, 1, batched, 0] {
                let url = cluster.fresh_database();
                rates.push((
                    writes,
                    match writes {
                        0 => copied_alone(url, instances, batched),
                        _ => spool_delivered_by(url, instances, writes),
                    },
                ));
            }
            let rate = |w: usize| -> Vec<u64> {
                rates
                    .iter()
                    .filter(|r| r.0 == w)
                    .map(|r| r.1 as u64)
                    .collect()
            };
            eprintln!(
                "spool delivery ({name}, {instances} instance(s)), records/s: \
                 one write a transaction {:?}, {batched} a transaction {:?}; \
                 their rows alone, COPYed {batched} writes a transaction {:?}",
                rate(1),
                rate(batched),
                rate(0)
            );
        }
    }
}

/// The spool's 300 writes of 50 records: the `n`th.
fn spooled_write(seq: u64) -> super::spool::Write {
    let per = 50i64;
    super::engine::write_of(
        seq,
        &[&UsageBlock::new(
            format!("t{}", seq % 7),
            (0..per).map(|i| rec(seq as i64 * per + i)).collect(),
        )],
    )
}

/// The floor under [`spool_delivered_by`]: the same writes' rows alone,
/// `writes` writes' `COPY` streams a transaction, into the same table (no
/// totals, rollups or duplicate check) - what PostgreSQL itself takes.
fn copied_alone(url: String, instances: usize, writes: usize) -> f64 {
    let count = 300u64;
    let fleet: Vec<_> = (0..instances)
        .map(|n| {
            let (_, engine) = open(&options(&url, &format!("i{n}"))).unwrap();
            let prepared: Vec<_> = (1..=count).map(spooled_write).collect();
            engine
                .ensure_days(prepared.iter().flat_map(|w| w.days.clone()))
                .unwrap();
            (engine, prepared)
        })
        .collect();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for (engine, prepared) in &fleet {
            s.spawn(move || {
                for batch in prepared.chunks(writes) {
                    let stream: bytes::Bytes =
                        super::records::join_copies(batch.iter().map(|w| w.copy.as_slice())).into();
                    engine
                        .transaction(move |tx| {
                            Box::pin(async move {
                                use futures_util::SinkExt;
                                let sink = tx.copy_in(super::records::COPY_RECORDS).await?;
                                futures_util::pin_mut!(sink);
                                sink.send(stream).await?;
                                sink.finish().await?;
                                Ok(())
                            })
                        })
                        .unwrap();
                }
            });
        }
    });
    let took = started.elapsed().as_secs_f64();
    (count * 50 * instances as u64) as f64 / took
}

/// Spools 300 writes of 50 records on each of `instances` instances of one
/// database at `url`, then delivers every spool at once, `writes` a
/// transaction; checks each write was written once: the records a second.
fn spool_delivered_by(url: String, instances: usize, writes: usize) -> f64 {
    let count = 300u64;
    let per = 50i64;
    let block = |seq: u64| {
        UsageBlock::new(
            format!("t{}", seq % 7),
            (0..per).map(|i| rec(seq as i64 * per + i)).collect(),
        )
    };
    let dirs: Vec<_> = (0..instances)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let fleet: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(n, dir)| {
            let mut opts = options(&url, &format!("i{n}"));
            opts.spool_dir = Some(dir.path().to_path_buf());
            opts.spool_max_bytes = u64::MAX;
            let (store, engine) = open(&opts).unwrap();
            // Write 1 reached the database before its answer was lost.
            engine.append(1, &[&block(1)]).unwrap();
            {
                let spool = engine.spool().unwrap();
                // The background delivery waits while this holds the drain's lock.
                let _one = engine.draining.lock();
                for seq in 1..=count {
                    spool
                        .push(&super::engine::write_of(seq, &[&block(seq)]))
                        .unwrap();
                }
            }
            (store, engine)
        })
        .collect();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for (_, engine) in &fleet {
            s.spawn(move || engine.drain_by(writes).unwrap());
        }
    });
    let took = started.elapsed().as_secs_f64();
    let store = &fleet[0].0;
    for (_, engine) in &fleet {
        assert_eq!(engine.backlog().waiting, 0);
    }
    let records = count * per as u64 * instances as u64;
    let period = Period::containing_secs(T / 1000);
    let calls: u64 = (0..7)
        .map(|t| store.tenant_totals(&format!("t{t}"), period).unwrap().calls)
        .sum();
    assert_eq!(calls, records, "every write once");
    let stored: u64 = (0..7)
        .map(|t| scanned(store, &format!("t{t}")).len() as u64)
        .sum();
    assert_eq!(stored, records);
    assert_eq!(requests(store, &Owner::Fleet), records, "rollups once");
    records as f64 / took
}
