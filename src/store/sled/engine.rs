//! [`SledEngine`]: one open sled 0.34 database and its lifecycle - its own
//! I/O only; each storage trait it implements is a file beside this one (the [`Ledger`](crate::store::Ledger) numbers the
//! writes and keeps the rollup book). [`Reopening`](super::Reopening)
//! replaces it when it fails.
//!
//! Layout (see ARCHITECTURE.md for the whole picture; keys in `keys.rs`,
//! values are the rows of `rows.rs`):
//! - `meta`: `format_version` (u32 BE), `seq` (u64 BE, last usage-write
//!   number), `rollup_seq` (u64 BE, the last write the cells include)
//! - `plans`, `tenants`: id -> row; `keys`: key id -> [`KeyRow`]
//! - `counters`: period (i32 BE, sign bit flipped) ++ tenant id -> [`TotalsRow`]
//! - `raw/YYYY-MM-DD`: tenant id ++ 0x00 ++ seq (u64 BE) ++ chunk (u32 BE)
//!   -> records (data written before chunks: no chunk suffix)
//! - `journal`: seq (u64 BE) ++ chunk (u32 BE) -> `Vec<(day, tenant id)>`,
//!   the blocks a usage write added that the stored cells do not include yet
//! - `rollup/hour`, `rollup/day`, `rollup/minute/YYYY-MM-DD`: tenant id ++
//!   0x00 ++ bucket (i64 BE, sign bit flipped) -> [`CellRow`]; the empty id
//!   holds the all-tenants cells
//! - `alerts`: [`AlertMark::key`] -> [`MarkRow`], the threshold webhooks fired
//!
//! Raw records are stored in blocks (per tenant per day per write), which is
//! much faster and smaller than one key per record. A block and a journal
//! entry are split into chunks of at most [`VALUE_BUDGET`] bytes: sled 0.34.7
//! writes a page over ~128 KiB (a leaf holds up to 17 values) as a separate
//! blob file, and it never deletes the blob files of a dropped tree, so
//! retention would free no disk (seen: a fast-clock soak kept every day's
//! blobs; `examples/soak_fast_clock.rs`).

use std::path::Path;

use chrono::NaiveDate;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{decode, decode_with_tails, encode, encode_counted_chunks, encode_onto};
use super::rows::{ChunkExt6, KeyRow, RecordExt, RecordIn, RecordOut};
use super::{deadline::FlushWorker, keys::*};
use super::{upgrade, SledOptions};
use crate::model::UsageRecord;
use crate::quota::period::days_from_civil;
use crate::rollup::{Buckets, Grain, Owner};
use crate::store::{Engine, StoreError};

/// The most bytes a raw block's or a journal entry's value takes, so that a
/// full leaf page (17 values) stays under sled's blob threshold.
pub(super) const VALUE_BUDGET: usize = 4_000;

/// An encoded key and value about to be written.
pub(super) type KeyValue = (Vec<u8>, Vec<u8>);

pub struct SledEngine {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    pub(super) plans: sled::Tree,
    pub(super) tenants: sled::Tree,
    pub(super) keys: sled::Tree,
    pub(super) counters: sled::Tree,
    pub(super) journal: sled::Tree,
    pub(super) hours: sled::Tree,
    pub(super) days: sled::Tree,
    pub(super) alerts: sled::Tree,
    /// Claimed record ids: tenant ++ 0x00 ++ id -> when (i64 BE) ++ the
    /// batch's `Idempotency-Key` ([`crate::store::RecordIds`]).
    pub(super) claims: sled::Tree,
    /// When keys were last used: tenant ++ 0x00 ++ key id -> ms (i64 BE).
    pub(super) key_used: sled::Tree,
    /// Runs `Db::flush` with a deadline. Declared last: dropped after the
    /// trees, it joins its thread, which holds the last `Db` handle.
    pub(super) flusher: FlushWorker,
    /// What the store last knew it held on disk.
    pub(super) check: super::check::Check,
}

impl SledEngine {
    /// `owner`'s stored cells in `span`, each value read by `read`.
    pub(super) fn cell_values<T>(
        &self,
        owner: &Owner,
        span: Buckets,
        read: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<(i64, T)>, StoreError> {
        let Buckets { grain, from, to } = span;
        if from >= to {
            return Ok(Vec::new());
        }
        let trees = match grain {
            Grain::Minute => {
                let (first, last) = (from.div_euclid(1440), (to - 1).div_euclid(1440));
                self.minute_trees()
                    .into_iter()
                    .filter(|d| (first..=last).contains(d))
                    .map(|d| self.cell_tree(grain, d * 1440))
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => vec![self.cell_tree(grain, from)?],
        };
        let mut cells = Vec::new();
        for tree in trees {
            for kv in tree.range(cell_key(owner, from)..cell_key(owner, to)) {
                let (k, v) = kv?;
                cells.push((cell_bucket(&k), read(v.as_ref())?));
            }
        }
        Ok(cells)
    }

    /// Opens (or creates) the store in `dir`, upgrading an older format
    /// (`options.min_free_bytes` is the caller's to check).
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let (check, noted) = super::check::Check::before_open(dir, options.recover)?;
        let open = || {
            sled::Config::new()
                .path(dir)
                .flush_every_ms(Some(options.flush_every_ms.max(1)))
                .cache_capacity(options.cache_bytes)
                .open()
                .map_err(|e| match e {
                    e if super::is_lock_held(&e) => StoreError::InUse(format!(
                        "another Tollgate (or another program) uses the data directory {}: \
                         stop it, or give this one another --data-dir",
                        dir.parent().unwrap_or(dir).display()
                    )),
                    e => e.into(),
                })
        };
        let mut db = open()?;
        // An older format is upgraded in place, and an older binary then
        // refuses the store: a copy as it was is kept first, so that a
        // rollback is a stop, a rename and the old binary.
        if let Some(found) = upgrade::older(&db)? {
            db.flush()?;
            drop(db);
            let kept = upgrade::keep_before_upgrade(dir, found)?;
            tracing::warn!(
                from = found,
                to = upgrade::FORMAT_VERSION,
                kept = %kept.display(),
                "store: upgrading the data directory's format in place; the store as it was \
                 is kept (to roll back: stop, put it back as {}, start the older binary)",
                dir.display()
            );
            db = open()?;
        }
        upgrade::check(&db)?;
        let engine = SledEngine {
            meta: db.open_tree("meta")?,
            plans: db.open_tree("plans")?,
            tenants: db.open_tree("tenants")?,
            keys: db.open_tree("keys")?,
            counters: db.open_tree("counters")?,
            journal: db.open_tree("journal")?,
            hours: db.open_tree("rollup/hour")?,
            days: db.open_tree("rollup/day")?,
            alerts: db.open_tree("alerts")?,
            claims: db.open_tree("record_ids")?,
            key_used: db.open_tree("key_used")?,
            flusher: FlushWorker::start(db.clone(), options.flush_deadline).map_err(|e| {
                StoreError::Unavailable(format!("cannot start the flush thread: {e}"))
            })?,
            db,
            check,
        };
        engine
            .check
            .after_open(noted, engine.held()?, options.recover)?;
        Ok(engine)
    }

    /// What the store holds, as its check file notes it.
    pub(super) fn held(&self) -> Result<super::check::Held, StoreError> {
        Ok(super::check::Held {
            seq: read_u64(&self.meta, "seq")?,
            plans: self.plans.first()?.is_some(),
            tenants: self.tenants.first()?.is_some(),
        })
    }

    /// Wakes every flush waiting on a failed engine, so that its threads
    /// return and let go of the files: a second flush sees sled's global
    /// error and notifies the waiters that the failed write did not.
    /// Gives up after a second (a flush that is truly stuck stays so).
    pub(crate) fn wake(&self) {
        let db = self.db.clone();
        let _ = super::within(std::time::Duration::from_secs(1), move || db.flush());
    }

    pub(super) fn cell_tree(&self, grain: Grain, bucket: i64) -> Result<sled::Tree, StoreError> {
        Ok(match grain {
            Grain::Minute => self
                .db
                .open_tree(day_tree_name(MINUTE_PREFIX, bucket.div_euclid(1440)))?,
            Grain::Hour => self.hours.clone(),
            Grain::Day => self.days.clone(),
        })
    }

    /// The days (since the epoch) of the day-trees named `prefix` + date, oldest first.
    pub(super) fn days_of(&self, prefix: &str) -> Vec<i64> {
        let mut days: Vec<i64> = self
            .db
            .tree_names()
            .iter()
            .filter_map(|n| {
                std::str::from_utf8(n)
                    .ok()?
                    .strip_prefix(prefix)
                    .map(str::to_owned)
            })
            .filter_map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
            .map(|d| {
                use chrono::Datelike;
                days_from_civil(d.year() as i64, d.month(), d.day())
            })
            .collect();
        days.sort();
        days
    }

    /// Drops the day-trees named `prefix` of days before `day`.
    pub(super) fn drop_days(&self, prefix: &str, day: i64) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for d in self.days_of(prefix) {
            if d < day {
                self.db.drop_tree(day_tree_name(prefix, d))?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Days (since the epoch) that have a raw day-tree, oldest first.
    pub(crate) fn day_trees(&self) -> Vec<i64> {
        self.days_of(RAW_PREFIX)
    }

    /// Days that have a minute-rollup tree, oldest first.
    pub(crate) fn minute_trees(&self) -> Vec<i64> {
        self.days_of(MINUTE_PREFIX)
    }

    /// Writes `row` under `key`, durable when it returns.
    pub(super) fn put<R: serde::Serialize>(
        &self,
        tree: &sled::Tree,
        key: &str,
        row: R,
    ) -> Result<(), StoreError> {
        tree.insert(key, encode(&row)?)?;
        self.durable()
    }

    /// Every value of `tree`, decoded as a row `R` and converted.
    /// Every row of `tree`, each read as a `T`.
    pub(super) fn all<R: serde::de::DeserializeOwned, T: TryFrom<R, Error = StoreError>>(
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .values()
            .map(|v| T::try_from(decode::<R>(&v?)?))
            .collect()
    }

    pub(super) fn remove(&self, tree: &sled::Tree, key: &str) -> Result<(), StoreError> {
        tree.remove(key)?;
        self.durable()
    }
}

pub(super) fn read_u64(tree: &sled::Tree, key: &str) -> Result<u64, StoreError> {
    match tree.get(key)? {
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StoreError::Unavailable(format!("{key} is not 8 bytes"))
        })?)),
        None => Ok(0),
    }
}

pub(super) fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

/// Runs a transaction over `trees`, mapping its errors to the store's.
pub(super) fn transact(
    trees: &[sled::Tree],
    f: impl Fn(
        &[sled::transaction::TransactionalTree],
    ) -> Result<(), ConflictableTransactionError<String>>,
) -> Result<(), StoreError> {
    match trees.transaction(|tx| f(tx)) {
        Ok(()) => Ok(()),
        Err(TransactionError::Abort(msg)) => Err(StoreError::Unavailable(msg)),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

/// A chunk of a block: its records, then (format 4, when any record has
/// one) their [`RecordExt`]s in order, then (format 6, when any record has
/// a key or token kinds) their [`ChunkExt6`].
pub(super) fn decode_records(bytes: &[u8]) -> Result<Vec<UsageRecord>, StoreError> {
    let (records, exts, ext6): (Vec<RecordIn>, Vec<RecordExt>, ChunkExt6) =
        decode_with_tails(bytes)?;
    let mut records: Vec<UsageRecord> = records.into_iter().map(|r| r.0).collect();
    if exts.len() == records.len() {
        for (r, e) in records.iter_mut().zip(exts) {
            e.apply(r);
        }
    }
    ext6.apply(&mut records);
    Ok(records)
}

/// The records of one block and day as chunks [`decode_records`] reads.
pub(super) fn encode_records(records: &[RecordOut]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut at = 0;
    for (mut chunk, n) in encode_counted_chunks(records, VALUE_BUDGET)? {
        let part = &records[at..at + n];
        at += n;
        let has6 = ChunkExt6::needed(part);
        let exts = !part.iter().all(|r| RecordExt::is_empty_for(r.0));
        if has6 || exts {
            // A `Vec<RecordExt>`'s bytes, written item by item: when every
            // one is empty, four zero bytes each (three empty strings and
            // `false`).
            encode_onto(&(part.len() as u64), &mut chunk)?;
            if exts {
                for r in part {
                    encode_onto(&RecordExt::of(r.0), &mut chunk)?;
                }
            } else {
                chunk.resize(chunk.len() + 4 * part.len(), 0);
            }
        }
        if has6 {
            ChunkExt6::encode_onto(part, &mut chunk)?;
        }
        out.push(chunk);
    }
    Ok(out)
}

impl Engine for SledEngine {
    fn purge_tenant(&self, id: &str) -> Result<(), StoreError> {
        let prefix = tenant_prefix(id);
        let mut trees = vec![
            self.hours.clone(),
            self.days.clone(),
            self.alerts.clone(),
            self.claims.clone(),
            self.key_used.clone(),
        ];
        for day in self.day_trees() {
            trees.push(self.db.open_tree(day_tree_name(RAW_PREFIX, day))?);
        }
        for day in self.minute_trees() {
            trees.push(self.db.open_tree(day_tree_name(MINUTE_PREFIX, day))?);
        }
        for tree in trees {
            let mut batch = sled::Batch::default();
            for k in tree.scan_prefix(&prefix).keys() {
                batch.remove(k?);
            }
            tree.apply_batch(batch)?;
        }
        let mut batch = sled::Batch::default();
        for k in self.counters.iter().keys() {
            let k = k?;
            if counter_tenant(&k) == id.as_bytes() {
                batch.remove(k);
            }
        }
        self.counters.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for kv in self.keys.iter() {
            let (k, v) = kv?;
            if decode::<KeyRow>(&v)?.tenant_id == id {
                batch.remove(k);
            }
        }
        self.keys.apply_batch(batch)?;
        self.tenants.remove(id)?;
        self.durable()
    }

    /// Within the flush deadline; what was durable before it is noted
    /// (`check.rs`).
    fn durable(&self) -> Result<(), StoreError> {
        let held = self.held();
        self.flusher.flush()?;
        if let Ok(held) = held {
            self.check.note(held);
        }
        Ok(())
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::period::Period;
    use crate::store::ledger::Direct;
    use crate::store::sled::upgrade::{PlanV1, FORMAT_VERSION};
    use crate::store::{Catalog, PeriodTotals, UsageBlock, UsageReads};
    use crate::store::{Ledger, Store};
    use chrono::TimeZone;
    use std::sync::Arc;

    /// The ledger straight over one engine, whose trees the tests reach.
    type Over = Ledger<Direct<SledEngine>>;

    fn open(dir: &Path) -> Result<Over, StoreError> {
        crate::store::sled::wait_for_lock(|| {
            Ledger::new(Direct(Arc::new(SledEngine::open(
                dir,
                &SledOptions::new(100, 1 << 24),
            )?)))
        })
    }

    fn engine(s: &Over) -> &SledEngine {
        &s.access().0
    }

    fn rec(ts_ms: i64, calls: u64, tokens: u64) -> UsageRecord {
        UsageRecord {
            ts_ms,
            calls,
            tokens,
            endpoint: "/x".into(),
            ..Default::default()
        }
    }

    #[test]
    fn usage_and_totals_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let nov30 = days_from_civil(2026, 11, 30) * MS_PER_DAY + 1_000;
        let dec1 = days_from_civil(2026, 12, 1) * MS_PER_DAY + 1_000;
        {
            let s = open(dir.path()).unwrap();
            s.write_usage(&[
                UsageBlock {
                    tenant: "a".into(),
                    records: vec![rec(nov30, 1, 10), rec(nov30 + 5, 2, 0), rec(dec1, 1, 7)],
                    ..Default::default()
                },
                UsageBlock {
                    tenant: "ab".into(),
                    records: vec![rec(nov30, 5, 1)],
                    ..Default::default()
                },
            ])
            .unwrap();
            s.write_usage(&[UsageBlock {
                tenant: "a".into(),
                records: vec![rec(dec1 + 9, 1, 1)],
                ..Default::default()
            }])
            .unwrap();
        }
        let s = open(dir.path()).unwrap();
        let nov = Period::containing_secs(nov30 / 1000);
        let mut totals = s.period_totals(nov).unwrap();
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            totals,
            vec![
                (
                    "a".into(),
                    PeriodTotals {
                        calls: 3,
                        tokens: 10
                    }
                ),
                (
                    "ab".into(),
                    PeriodTotals {
                        calls: 5,
                        tokens: 1
                    }
                ),
            ]
        );
        assert_eq!(
            s.period_totals(nov.next()).unwrap(),
            vec![(
                "a".into(),
                PeriodTotals {
                    calls: 2,
                    tokens: 8
                }
            )]
        );
        // "a" must not see "ab"'s block although one id prefixes the other.
        let mut seen = vec![];
        s.scan_usage("a", 0, i64::MAX, &mut |r| {
            seen.push(r.ts_ms);
            true
        })
        .unwrap();
        assert_eq!(seen, vec![nov30, nov30 + 5, dec1, dec1 + 9]);
        assert_eq!(engine(&s).day_trees().len(), 2);
    }

    fn requests(s: &Over, owner: &Owner, grain: Grain) -> u64 {
        s.rollups(owner, Buckets::all(grain))
            .unwrap()
            .iter()
            .map(|(_, c)| c.total.requests)
            .sum()
    }

    #[test]
    fn a_half_done_checkpoint_is_not_counted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let t = days_from_civil(2026, 11, 30) * MS_PER_DAY;
        {
            let s = open(dir.path()).unwrap();
            s.write_usage(&[UsageBlock {
                tenant: "a".into(),
                records: vec![rec(t, 1, 1); 4],
                ..Default::default()
            }])
            .unwrap();
            let e = engine(&s);
            let entry = e.journal.iter().next().unwrap().unwrap();
            s.checkpoint().unwrap();
            // As if the cells were written but the watermark and journal were not.
            e.journal.insert(entry.0, entry.1).unwrap();
            e.meta.insert("rollup_seq", &0u64.to_be_bytes()).unwrap();
            e.db.flush().unwrap();
        }
        let s = open(dir.path()).unwrap();
        assert_eq!(requests(&s, &Owner::tenant("a"), Grain::Day), 4);
        assert_eq!(requests(&s, &Owner::tenant("a"), Grain::Minute), 4);
    }

    #[test]
    fn retention_drops_whole_day_trees_and_keeps_hour_and_day_rollups() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        let day = |d: u32| days_from_civil(2026, 11, d);
        for d in [1, 10, 20] {
            s.write_usage(&[UsageBlock {
                tenant: "a".into(),
                records: vec![rec(day(d) * MS_PER_DAY, 1, 1)],
                ..Default::default()
            }])
            .unwrap();
        }
        s.checkpoint().unwrap();
        assert_eq!(engine(&s).day_trees(), vec![day(1), day(10), day(20)]);
        // Now = Nov 25 with 20 days of raw records: Nov 1 goes; minute rollups keep 7 days.
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .unwrap();
        let dropped = crate::usage::retention::apply(&s, now, 20).unwrap();
        assert_eq!(engine(&s).day_trees(), vec![day(10), day(20)]);
        assert_eq!(engine(&s).minute_trees(), vec![day(20)]);
        assert_eq!(dropped, 1 + 2);
        assert_eq!(requests(&s, &Owner::tenant("a"), Grain::Minute), 1);
        assert_eq!(requests(&s, &Owner::tenant("a"), Grain::Hour), 3);
        assert_eq!(requests(&s, &Owner::tenant("a"), Grain::Day), 3);
        let mut seen = 0;
        s.scan_usage("a", 0, i64::MAX, &mut |_| {
            seen += 1;
            true
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    /// A format-1 store (plans without `ingest_rate`) opens, its plans read
    /// back unchanged, and it is marked with the current format (format 2's
    /// tenants and keys: `tests/store_fixture.rs`).
    #[test]
    fn a_format_1_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path()).unwrap();
            let old = PlanV1 {
                id: "old".into(),
                name: "Old".into(),
                monthly_calls: Some(7),
                monthly_tokens: None,
                rate_limit: Some(super::super::rows::RateRow {
                    count: 2,
                    per_seconds: 1,
                    burst: 3,
                }),
                price_usd_monthly: 9.5,
            };
            engine(&s)
                .plans
                .insert("old", encode(&old).unwrap())
                .unwrap();
            engine(&s)
                .meta
                .insert("format_version", &1u32.to_be_bytes())
                .unwrap();
            s.flush().unwrap();
        }
        let s = open(dir.path()).unwrap();
        let plans = s.plans().unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(
            (
                plans[0].monthly_calls,
                plans[0].ingest_rate,
                plans[0].price_usd_monthly
            ),
            (Some(7), None, 9.5)
        );
        assert_eq!(
            engine(&s)
                .meta
                .get("format_version")
                .unwrap()
                .unwrap()
                .as_ref(),
            &FORMAT_VERSION.to_be_bytes()
        );
        assert_eq!(plans[0].rate_limit.unwrap().burst, 3);
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path()).unwrap();
            engine(&s)
                .meta
                .insert("format_version", &(FORMAT_VERSION + 1).to_be_bytes())
                .unwrap();
            s.flush().unwrap();
        }
        let err = open(dir.path()).err().unwrap();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
        assert!(err.to_string().contains("newer Tollgate"));
    }

    #[test]
    fn large_writes_are_chunked_and_never_become_blob_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = days_from_civil(2026, 11, 30) * MS_PER_DAY;
        let records: Vec<UsageRecord> = (0..3_000)
            .map(|i| UsageRecord {
                endpoint: format!("/v1/{i}/{}", "x".repeat(200)).into(),
                ..rec(t + i, 1, 2)
            })
            .collect();
        let tenants: Vec<UsageBlock> = (0..300)
            .map(|i| UsageBlock {
                tenant: format!("tenant-with-a-long-name-{i:05}"),
                records: vec![rec(t, 1, 1)],
                ..Default::default()
            })
            .collect();
        {
            let s = open(dir.path()).unwrap();
            let mut blocks = tenants.clone();
            blocks.push(UsageBlock {
                tenant: "big".into(),
                records: records.clone(),
                ..Default::default()
            });
            s.write_usage(&blocks).unwrap();
            let e = engine(&s);
            for kv in
                e.db.open_tree(day_tree_name(RAW_PREFIX, day_of(t)))
                    .unwrap()
                    .iter()
            {
                assert!(kv.unwrap().1.len() <= VALUE_BUDGET);
            }
            assert!(e.journal.len() > 1, "the journal entry is chunked too");
            for kv in e.journal.iter() {
                assert!(kv.unwrap().1.len() <= VALUE_BUDGET);
            }
            // No checkpoint: the reopen replays the chunked journal.
        }
        let blobs = std::fs::read_dir(dir.path().join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(blobs, 0, "sled wrote blob files");
        let s = open(dir.path()).unwrap();
        let mut back = Vec::new();
        s.scan_usage("big", t, t + MS_PER_DAY, &mut |r| {
            back.push(r.clone());
            true
        })
        .unwrap();
        assert_eq!(back, records);
        assert_eq!(requests(&s, &Owner::tenant("big"), Grain::Day), 3_000);
        assert_eq!(
            requests(
                &s,
                &Owner::tenant("tenant-with-a-long-name-00299"),
                Grain::Hour
            ),
            1
        );
        assert_eq!(requests(&s, &Owner::Fleet, Grain::Minute), 3_300);
    }
}
