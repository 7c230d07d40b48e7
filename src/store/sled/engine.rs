//! [`SledEngine`]: every storage concern on one open sled 0.34 database -
//! its own I/O only (the [`Ledger`](crate::store::Ledger) numbers the
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::codec::{
    decode, decode_prefix, decode_with_tail, encode, encode_chunks, encode_counted_chunks,
    encode_onto,
};
use super::deadline::FlushWorker;
use super::keys::*;
use super::rows::{
    CellRow, KeyRow, MarkRow, PlanRow, RecordExt, RecordIn, RecordOut, TenantRow, TotalsRow,
};
use super::{upgrade, SledOptions};
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::{days_from_civil, Period};
use crate::rollup::{Buckets, Cell, CellHead, Grain, Owner};
use crate::store::{
    AlertMark, AlertMarks, Catalog, CellKey, Engine, PeriodTotals, RollupCells, StoreError,
    StoredCell, UsageBlock, UsageLog, UsageReads,
};

/// The most bytes a raw block's or a journal entry's value takes, so that a
/// full leaf page (17 values) stays under sled's blob threshold.
pub const VALUE_BUDGET: usize = 4_000;

/// An encoded key and value about to be written.
type KeyValue = (Vec<u8>, Vec<u8>);

pub struct SledEngine {
    db: sled::Db,
    meta: sled::Tree,
    plans: sled::Tree,
    tenants: sled::Tree,
    keys: sled::Tree,
    counters: sled::Tree,
    journal: sled::Tree,
    hours: sled::Tree,
    days: sled::Tree,
    alerts: sled::Tree,
    /// Runs `Db::flush` with a deadline. Declared last: dropped after the
    /// trees, it joins its thread, which holds the last `Db` handle.
    flusher: FlushWorker,
    /// What the store last knew it held on disk.
    check: super::check::Check,
}

impl SledEngine {
    /// `owner`'s stored cells in `span`, each value read by `read`.
    fn cell_values<T>(
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
        let db = sled::Config::new()
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
            })?;
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
    fn held(&self) -> Result<super::check::Held, StoreError> {
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
    pub fn wake(&self) {
        let db = self.db.clone();
        let _ = super::within(std::time::Duration::from_secs(1), move || db.flush());
    }

    fn cell_tree(&self, grain: Grain, bucket: i64) -> Result<sled::Tree, StoreError> {
        Ok(match grain {
            Grain::Minute => self
                .db
                .open_tree(day_tree_name(MINUTE_PREFIX, bucket.div_euclid(1440)))?,
            Grain::Hour => self.hours.clone(),
            Grain::Day => self.days.clone(),
        })
    }

    /// The days (since the epoch) of the day-trees named `prefix` + date, oldest first.
    fn days_of(&self, prefix: &str) -> Vec<i64> {
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
    fn drop_days(&self, prefix: &str, day: i64) -> Result<usize, StoreError> {
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
    pub fn day_trees(&self) -> Vec<i64> {
        self.days_of(RAW_PREFIX)
    }

    /// Days that have a minute-rollup tree, oldest first.
    pub fn minute_trees(&self) -> Vec<i64> {
        self.days_of(MINUTE_PREFIX)
    }

    /// Writes `row` under `key`, durable when it returns.
    fn put<R: serde::Serialize>(
        &self,
        tree: &sled::Tree,
        key: &str,
        row: R,
    ) -> Result<(), StoreError> {
        tree.insert(key, encode(&row)?)?;
        self.durable()
    }

    /// Every value of `tree`, decoded as a row `R` and converted.
    fn all<R: serde::de::DeserializeOwned, T: From<R>>(
        tree: &sled::Tree,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .values()
            .map(|v| Ok(T::from(decode::<R>(&v?)?)))
            .collect()
    }

    fn remove(&self, tree: &sled::Tree, key: &str) -> Result<(), StoreError> {
        tree.remove(key)?;
        self.durable()
    }
}

fn read_u64(tree: &sled::Tree, key: &str) -> Result<u64, StoreError> {
    match tree.get(key)? {
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StoreError::Unavailable(format!("{key} is not 8 bytes"))
        })?)),
        None => Ok(0),
    }
}

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

/// Runs a transaction over `trees`, mapping its errors to the store's.
fn transact(
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
/// one) their [`RecordExt`]s in order.
fn decode_records(bytes: &[u8]) -> Result<Vec<UsageRecord>, StoreError> {
    let (records, exts): (Vec<RecordIn>, Vec<RecordExt>) = decode_with_tail(bytes)?;
    let mut records: Vec<UsageRecord> = records.into_iter().map(|r| r.0).collect();
    if exts.len() == records.len() {
        for (r, e) in records.iter_mut().zip(exts) {
            e.apply(r);
        }
    }
    Ok(records)
}

/// The records of one block and day as chunks [`decode_records`] reads.
fn encode_records(records: &[RecordOut]) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut at = 0;
    for (mut chunk, n) in encode_counted_chunks(records, VALUE_BUDGET)? {
        let part = &records[at..at + n];
        at += n;
        if !part.iter().all(|r| RecordExt::is_empty_for(r.0)) {
            let exts: Vec<RecordExt<&str>> = part.iter().map(|r| RecordExt::of(r.0)).collect();
            encode_onto(&exts, &mut chunk)?;
        }
        out.push(chunk);
    }
    Ok(out)
}

impl Catalog for SledEngine {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        Self::all::<PlanRow, _>(&self.plans)
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.put(&self.plans, &plan.id, PlanRow::from(plan))
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.remove(&self.plans, id)
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Self::all::<TenantRow, _>(&self.tenants)
    }
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(match self.tenants.get(id)? {
            Some(v) => Some(decode::<TenantRow>(&v)?.into()),
            None => None,
        })
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.put(&self.tenants, &tenant.id, TenantRow::from(tenant))
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Self::all::<KeyRow, _>(&self.keys)
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(match self.keys.get(id)? {
            Some(v) => Some(decode::<KeyRow>(&v)?.into()),
            None => None,
        })
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.put(&self.keys, &key.key.id, KeyRow::from(key))
    }
    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for t in tenants {
            batch.insert(t.id.as_bytes(), encode(&TenantRow::from(t))?);
        }
        self.tenants.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.insert(k.key.id.as_bytes(), encode(&KeyRow::from(k))?);
        }
        self.keys.apply_batch(batch)?;
        self.durable()
    }
}

impl AlertMarks for SledEngine {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        Self::all::<MarkRow, _>(&self.alerts)
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.put(&self.alerts, &mark.key(), MarkRow::from(mark))
    }
    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        let value = encode(&MarkRow::from(mark))?;
        let claimed = self
            .alerts
            .compare_and_swap(mark.key(), None as Option<&[u8]>, Some(value))?
            .is_ok();
        self.durable()?;
        Ok(claimed)
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        for mark in self.alert_marks()? {
            if mark.period < before {
                self.alerts.remove(mark.key())?;
            }
        }
        self.durable()
    }
}

impl UsageLog for SledEngine {
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        // Split by UTC day and sum the period totals this write adds. Two
        // blocks of one tenant (and day) continue one chunk count, so that
        // their keys never collide.
        let mut by_day: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
        let mut chunks: HashMap<(i64, &str), usize> = HashMap::new();
        let mut deltas: HashMap<(Period, &str), PeriodTotals> = HashMap::new();
        for block in blocks {
            let mut per_day: BTreeMap<i64, Vec<RecordOut>> = BTreeMap::new();
            // A block's records are mostly of one day: its period is
            // worked out once per run of a day, not once per record.
            let mut last: Option<(i64, Period)> = None;
            for r in &block.records {
                let day = day_of(r.ts_ms);
                per_day.entry(day).or_default().push(RecordOut(r));
                let period = match last {
                    Some((d, p)) if d == day => p,
                    _ => {
                        let p = Period::containing_secs(r.ts_ms.div_euclid(1000));
                        last = Some((day, p));
                        p
                    }
                };
                deltas
                    .entry((period, block.tenant.as_str()))
                    .or_default()
                    .add(r.calls, r.tokens);
            }
            for (day, records) in per_day {
                let values = by_day.entry(day).or_default();
                let next = chunks.entry((day, block.tenant.as_str())).or_default();
                for chunk in encode_records(&records)? {
                    values.push((chunk_key(block_key(&block.tenant, seq), *next), chunk));
                    *next += 1;
                }
            }
        }
        if by_day.is_empty() {
            return Ok(());
        }
        let deltas: Vec<(Vec<u8>, PeriodTotals)> = deltas
            .into_iter()
            .map(|((period, tenant), d)| (counter_key(period, tenant), d))
            .collect();
        // The (day, tenant) blocks of the write, each once.
        let journal: BTreeSet<(i64, &str)> = chunks.keys().copied().collect();
        let journal: Vec<(i64, &str)> = journal.into_iter().collect();
        let journal = encode_chunks(&journal, VALUE_BUDGET)?;

        // One transaction over counters, meta, the journal and every day-tree touched.
        let mut trees = vec![
            self.counters.clone(),
            self.meta.clone(),
            self.journal.clone(),
        ];
        for day in by_day.keys() {
            trees.push(self.db.open_tree(day_tree_name(RAW_PREFIX, *day))?);
        }
        transact(&trees, |tx| {
            for (key, delta) in &deltas {
                let mut totals: PeriodTotals = match tx[0].get(key)? {
                    Some(v) => decode::<TotalsRow>(v.as_ref()).map_err(abort)?.into(),
                    None => PeriodTotals::default(),
                };
                totals.add(delta.calls, delta.tokens);
                let row = encode(&TotalsRow::from(totals)).map_err(abort)?;
                tx[0].insert(key.as_slice(), row)?;
            }
            tx[1].insert("seq", &seq.to_be_bytes())?;
            for (i, chunk) in journal.iter().enumerate() {
                tx[2].insert(chunk_key(seq.to_be_bytes().to_vec(), i), chunk.as_slice())?;
            }
            for (i, values) in by_day.values().enumerate() {
                for (key, value) in values {
                    tx[i + 3].insert(key.as_slice(), value.as_slice())?;
                }
            }
            Ok(())
        })
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        read_u64(&self.meta, "seq")
    }

    fn written_since(
        &self,
        after: u64,
        visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError> {
        for kv in self.journal.range((after + 1).to_be_bytes()..) {
            let (k, v) = kv?;
            let seq = key_seq(&k);
            for (day, tenant) in decode::<Vec<(i64, String)>>(&v)? {
                let tree = self.db.open_tree(day_tree_name(RAW_PREFIX, day))?;
                for chunk in tree.scan_prefix(block_key(&tenant, seq)) {
                    visit(seq, &tenant, decode_records(&chunk?.1)?);
                }
            }
        }
        Ok(())
    }

    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError> {
        self.drop_days(RAW_PREFIX, day)
    }
}

impl RollupCells for SledEngine {
    fn cell(&self, (grain, owner, bucket): &CellKey) -> Result<Option<StoredCell>, StoreError> {
        match self
            .cell_tree(*grain, *bucket)?
            .get(cell_key(owner, *bucket))?
        {
            Some(v) => Ok(Some(CellRow::decode(&v)?.into())),
            None => Ok(None),
        }
    }

    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.cell_values(owner, span, |v| Ok(CellRow::decode(v)?.cell))
    }

    fn cell_heads(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, CellHead)>, StoreError> {
        // A stored cell begins with its head.
        self.cell_values(owner, span, |v| Ok(decode_prefix::<CellHead>(v)?))
    }

    fn watermark(&self) -> Result<u64, StoreError> {
        read_u64(&self.meta, "rollup_seq")
    }

    /// Cell writes are idempotent (each carries its seq), so they need no
    /// transaction across trees.
    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        watermark: u64,
    ) -> Result<(), StoreError> {
        let mut batches: HashMap<Vec<u8>, (sled::Tree, sled::Batch)> = HashMap::new();
        for ((grain, owner, bucket), cell) in cells {
            let tree = self.cell_tree(grain, bucket)?;
            let (_, batch) = batches
                .entry(tree.name().to_vec())
                .or_insert_with(|| (tree, sled::Batch::default()));
            batch.insert(cell_key(&owner, bucket), CellRow::from(cell).encode()?);
        }
        for (_, (tree, batch)) in batches {
            tree.apply_batch(batch)?;
        }
        self.durable()?;
        self.meta.insert("rollup_seq", &watermark.to_be_bytes())?;
        let mut done = sled::Batch::default();
        for k in self.journal.range(..(watermark + 1).to_be_bytes()).keys() {
            done.remove(k?);
        }
        self.journal.apply_batch(done)?;
        self.durable()
    }

    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError> {
        self.drop_days(MINUTE_PREFIX, day)
    }
}

impl Engine for SledEngine {
    fn purge_tenant(&self, id: &str) -> Result<(), StoreError> {
        let prefix = tenant_prefix(id);
        let mut trees = vec![self.hours.clone(), self.days.clone(), self.alerts.clone()];
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

impl UsageReads for SledEngine {
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let prefix = counter_key(period, "");
        self.counters
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let tenant = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((tenant, decode::<TotalsRow>(&v)?.into()))
            })
            .collect()
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        match self.counters.get(counter_key(period, tenant))? {
            Some(v) => Ok(decode::<TotalsRow>(&v)?.into()),
            None => Ok(PeriodTotals::default()),
        }
    }

    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError> {
        if from_ms >= to_ms {
            return Ok(());
        }
        let (first, last) = (day_of(from_ms), day_of(to_ms - 1));
        let prefix = tenant_prefix(tenant);
        for day in self.day_trees() {
            if day < first || day > last {
                continue;
            }
            let tree = self.db.open_tree(day_tree_name(RAW_PREFIX, day))?;
            for kv in tree.scan_prefix(&prefix) {
                let (_, v) = kv?;
                for r in decode_records(&v)? {
                    if r.ts_ms >= from_ms && r.ts_ms < to_ms && !visit(&r) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ledger::Direct;
    use crate::store::sled::upgrade::{PlanV1, FORMAT_VERSION};
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
