//! [`SledEngine`]: the [`Store`] on one open sled 0.34 database. The public
//! [`SledStore`](super::SledStore) holds one and replaces it when it fails
//! (`reopen.rs`).
//!
//! Layout (see ARCHITECTURE.md for the whole picture):
//! - `meta`: `format_version` (u32 BE), `seq` (u64 BE, last usage-write number)
//! - `plans`, `tenants`: id -> bincode value; `keys`: key id -> [`StoredKey`]
//! - `counters`: period (i32 BE, sign bit flipped) ++ tenant id -> [`PeriodTotals`]
//! - `raw/YYYY-MM-DD`: tenant id ++ 0x00 ++ seq (u64 BE) ++ chunk (u32 BE)
//!   -> `Vec<UsageRecord>` (data written before chunks: no chunk suffix)
//! - `journal`: seq (u64 BE) ++ chunk (u32 BE) -> `Vec<(day, tenant id)>`,
//!   the blocks a usage write added that the persisted rollups do not cover
//!   yet
//! - `rollup/hour`, `rollup/day`, `rollup/minute/YYYY-MM-DD`: tenant id ++
//!   0x00 ++ bucket (i64 BE, sign bit flipped) -> [`Cell`]; tenant `""` holds
//!   the all-tenants cells. `meta` `rollup_seq` is the last seq they cover.
//! - `alerts`: [`AlertMark::key`] -> [`AlertMark`], the threshold webhooks fired
//!
//! Raw records are stored in blocks (per tenant per day per flush), which is
//! much faster and smaller than one key per record. A block and a journal
//! entry are split into chunks of at most [`VALUE_BUDGET`] bytes: sled 0.34.7
//! writes a page over ~128 KiB (a leaf holds up to 17 values) as a separate
//! blob file, and it never deletes the blob files of a dropped tree, so
//! retention would free no disk (seen: a fast-clock soak kept every day's
//! blobs; `examples/soak_fast_clock.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use parking_lot::Mutex;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::deadline::FlushWorker;
use super::SledOptions;
use crate::codec::{decode, encode, encode_chunks};
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::{civil_from_days, days_from_civil, Period};
use crate::rollup::{Cell, Grain, ALL_TENANTS};
use crate::store::rollup_book::RollupBook;
use crate::store::{AlertMark, PeriodTotals, Store, StoreError, UsageBlock};

/// Bump when the on-disk layout changes; older binaries refuse newer data.
/// 2: plans carry `ingest_rate` (a format-1 store is upgraded on open).
pub const FORMAT_VERSION: u32 = 2;
const RAW_PREFIX: &str = "raw/";
const MINUTE_PREFIX: &str = "rollup/minute/";
const MS_PER_DAY: i64 = 86_400_000;
/// The most bytes a raw block's or a journal entry's value takes, so that a
/// full leaf page (17 values) stays under sled's blob threshold.
pub const VALUE_BUDGET: usize = 4_000;

/// Stored cells loaded for a checkpoint, by (grain, owner, bucket).
type CellCache = HashMap<(Grain, String, i64), Cell>;

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
    /// Serialises usage writes and checkpoints, and holds the last write number.
    seq: Mutex<u64>,
    /// Records since the last checkpoint, not in the stored cells yet.
    /// Locked after `seq`.
    book: Mutex<RollupBook>,
    /// A checkpoint failed: the next one replays the journal instead.
    needs_replay: std::sync::atomic::AtomicBool,
    /// Runs `Db::flush` with a deadline. Declared last: dropped after the
    /// trees, it joins its thread, which holds the last `Db` handle.
    flusher: FlushWorker,
}

impl SledEngine {
    /// Opens (or creates) the store in `dir` (`options.min_free_bytes` is
    /// the caller's to check).
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(options.flush_every_ms.max(1)))
            .cache_capacity(options.cache_bytes)
            .open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("format_version")? {
            Some(v) => {
                let found = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                    StoreError::Unavailable("format_version is not 4 bytes".into())
                })?);
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found < FORMAT_VERSION {
                    upgrade_plans(&db.open_tree("plans")?)?;
                    meta.insert("format_version", &FORMAT_VERSION.to_be_bytes())?;
                    db.flush()?;
                    tracing::info!(from = found, to = FORMAT_VERSION, "store format upgraded");
                }
            }
            None => {
                meta.insert("format_version", &FORMAT_VERSION.to_be_bytes())?;
            }
        }
        let seq = read_u64(&meta, "seq")?;
        let store = SledEngine {
            plans: db.open_tree("plans")?,
            tenants: db.open_tree("tenants")?,
            keys: db.open_tree("keys")?,
            counters: db.open_tree("counters")?,
            journal: db.open_tree("journal")?,
            hours: db.open_tree("rollup/hour")?,
            days: db.open_tree("rollup/day")?,
            alerts: db.open_tree("alerts")?,
            meta,
            flusher: FlushWorker::start(db.clone(), options.flush_deadline).map_err(|e| {
                StoreError::Unavailable(format!("cannot start the flush thread: {e}"))
            })?,
            db,
            seq: Mutex::new(seq),
            book: Mutex::new(RollupBook::default()),
            needs_replay: std::sync::atomic::AtomicBool::new(false),
        };
        store.replay_journal()?;
        Ok(store)
    }

    /// Wakes every flush waiting on a failed engine, so that its threads
    /// return and let go of the files: a second flush sees sled's global
    /// error and notifies the waiters that the failed write did not.
    /// Gives up after a second (a flush that is truly stuck stays so).
    pub fn wake(&self) {
        let db = self.db.clone();
        let _ = super::within(std::time::Duration::from_secs(1), move || db.flush());
    }

    /// Makes every write so far durable, within the flush deadline (unlike
    /// [`Store::flush`], without writing a rollup checkpoint first).
    pub fn durable(&self) -> Result<(), StoreError> {
        self.flusher.flush()
    }

    /// Brings the stored rollup cells up to the last usage write from the
    /// journal, after a crash or a failed checkpoint. Each cell records the
    /// last write it includes, so an entry is never counted twice, even when
    /// a checkpoint had written only some cells.
    fn replay_journal(&self) -> Result<(), StoreError> {
        let seq = self.seq.lock();
        let mut book = self.book.lock();
        book.clear();
        let covered = read_u64(&self.meta, "rollup_seq")?;
        let mut cells = HashMap::new();
        let mut replayed = 0;
        // One entry per write, in chunks: a write's chunks are absorbed together
        // (a cell takes a write number once).
        let mut entry: Option<(u64, RollupBook)> = None;
        for kv in self.journal.range((covered + 1).to_be_bytes()..) {
            let (k, v) = kv?;
            let entry_seq = key_seq(&k);
            if entry.as_ref().is_some_and(|(seq, _)| *seq != entry_seq) {
                if let Some((seq, book)) = entry.take() {
                    self.absorb(&book, seq, &mut cells)?;
                }
            }
            let (_, book) = entry.get_or_insert_with(|| (entry_seq, RollupBook::default()));
            for (day, tenant) in decode::<Vec<(i64, String)>>(&v)? {
                let tree = self.db.open_tree(day_tree_name(RAW_PREFIX, day))?;
                for chunk in tree.scan_prefix(block_key(&tenant, entry_seq)) {
                    let records: Vec<UsageRecord> = decode(&chunk?.1)?;
                    replayed += records.len();
                    book.add(&tenant, &records);
                }
            }
        }
        if let Some((seq, book)) = entry {
            self.absorb(&book, seq, &mut cells)?;
        }
        self.write_cells(cells, *seq)?;
        self.needs_replay
            .store(false, std::sync::atomic::Ordering::Release);
        if replayed > 0 {
            tracing::info!(records = replayed, "rollups caught up from the journal");
        }
        Ok(())
    }

    /// Merges the book's deltas, which end at usage write `seq`, into the
    /// stored cells (loaded into `cells` once) that do not include `seq` yet.
    fn absorb(&self, book: &RollupBook, seq: u64, cells: &mut CellCache) -> Result<(), StoreError> {
        let mut result = Ok(());
        // Cells already at `seq` (a half-done checkpoint) take nothing.
        let mut behind: HashMap<(Grain, String, i64), bool> = HashMap::new();
        book.for_each_target(|grain, owner, bucket, delta, tenant| {
            if result.is_err() {
                return;
            }
            let key = (grain, owner.to_string(), bucket);
            let cell = match cells.entry(key.clone()) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    match self.load_cell(grain, owner, bucket) {
                        Ok(c) => v.insert(c.unwrap_or_default()),
                        Err(e) => {
                            result = Err(e);
                            return;
                        }
                    }
                }
            };
            if !*behind.entry(key).or_insert(cell.seq < seq) {
                return;
            }
            if owner == ALL_TENANTS {
                cell.merge_for_all_tenants(delta, tenant);
            } else {
                cell.merge(delta);
            }
            cell.seq = seq;
        });
        result
    }

    /// Writes `cells`, then moves the watermark to `seq` and drops the
    /// journal up to it. Cell writes are idempotent (each carries its seq),
    /// so they need no transaction across trees.
    fn write_cells(
        &self,
        cells: HashMap<(Grain, String, i64), Cell>,
        seq: u64,
    ) -> Result<(), StoreError> {
        let mut batches: HashMap<Vec<u8>, (sled::Tree, sled::Batch)> = HashMap::new();
        for ((grain, owner, bucket), cell) in cells {
            let tree = self.cell_tree(grain, bucket)?;
            let (_, batch) = batches
                .entry(tree.name().to_vec())
                .or_insert_with(|| (tree, sled::Batch::default()));
            batch.insert(cell_key(&owner, bucket), encode(&cell)?);
        }
        for (_, (tree, batch)) in batches {
            tree.apply_batch(batch)?;
        }
        self.durable()?;
        self.meta.insert("rollup_seq", &seq.to_be_bytes())?;
        let mut done = sled::Batch::default();
        for k in self.journal.range(..(seq + 1).to_be_bytes()).keys() {
            done.remove(k?);
        }
        self.journal.apply_batch(done)?;
        self.durable()?;
        Ok(())
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

    fn load_cell(
        &self,
        grain: Grain,
        tenant: &str,
        bucket: i64,
    ) -> Result<Option<Cell>, StoreError> {
        match self
            .cell_tree(grain, bucket)?
            .get(cell_key(tenant, bucket))?
        {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
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

    /// Days (since the epoch) that have a raw day-tree, oldest first.
    pub fn day_trees(&self) -> Vec<i64> {
        self.days_of(RAW_PREFIX)
    }

    /// Days that have a minute-rollup tree, oldest first.
    pub fn minute_trees(&self) -> Vec<i64> {
        self.days_of(MINUTE_PREFIX)
    }

    /// Writes many tenants and keys at once (bulk import), with one flush.
    pub fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for t in tenants {
            batch.insert(t.id.as_bytes(), encode(t)?);
        }
        self.tenants.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.insert(k.key.id.as_bytes(), encode(k)?);
        }
        self.keys.apply_batch(batch)?;
        self.durable()?;
        Ok(())
    }

    fn put<T: serde::Serialize>(
        &self,
        tree: &sled::Tree,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        tree.insert(key, encode(value)?)?;
        self.durable()
    }

    fn all<T: serde::de::DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter().values().map(|v| Ok(decode(&v?)?)).collect()
    }

    fn remove(&self, tree: &sled::Tree, key: &str) -> Result<(), StoreError> {
        tree.remove(key)?;
        self.durable()
    }
}

/// A plan as format 1 stored it (before `ingest_rate`).
#[derive(serde::Serialize, serde::Deserialize)]
struct PlanV1 {
    id: String,
    name: String,
    monthly_calls: Option<u64>,
    monthly_tokens: Option<u64>,
    rate_limit: Option<crate::model::RateLimit>,
    price_usd_monthly: f64,
}

/// Rewrites format-1 plans in the current shape, in one batch.
fn upgrade_plans(plans: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for kv in plans.iter() {
        let (k, v) = kv?;
        let old: PlanV1 = decode(&v)?;
        let plan = Plan {
            id: old.id,
            name: old.name,
            monthly_calls: old.monthly_calls,
            monthly_tokens: old.monthly_tokens,
            rate_limit: old.rate_limit,
            price_usd_monthly: old.price_usd_monthly,
            ingest_rate: None,
        };
        batch.insert(k, encode(&plan)?);
    }
    plans.apply_batch(batch)?;
    Ok(())
}

fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_DAY)
}

fn day_tree_name(prefix: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{prefix}{y:04}-{m:02}-{d:02}")
}

fn read_u64(tree: &sled::Tree, key: &str) -> Result<u64, StoreError> {
    match tree.get(key)? {
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StoreError::Unavailable(format!("{key} is not 8 bytes"))
        })?)),
        None => Ok(0),
    }
}

fn cell_key(tenant: &str, bucket: i64) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(&((bucket as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn cell_bucket(key: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[key.len() - 8..]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
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

fn counter_key(period: Period, tenant: &str) -> Vec<u8> {
    let mut k = ((period.0 as u32) ^ 0x8000_0000).to_be_bytes().to_vec();
    k.extend_from_slice(tenant.as_bytes());
    k
}

/// `key` followed by the chunk number.
fn chunk_key(mut key: Vec<u8>, chunk: usize) -> Vec<u8> {
    key.extend_from_slice(&(chunk as u32).to_be_bytes());
    key
}

/// The write number a journal key starts with.
fn key_seq(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if let Some(head) = key.get(..8) {
        b.copy_from_slice(head);
    }
    u64::from_be_bytes(b)
}

/// The prefix of a raw block's chunks.
fn block_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 9);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

impl Store for SledEngine {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        Self::all(&self.plans)
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.put(&self.plans, &plan.id, plan)
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.remove(&self.plans, id)
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Self::all(&self.tenants)
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.put(&self.tenants, &tenant.id, tenant)
    }
    /// Purges the tenant: its records, totals, rollup cells, alert marks,
    /// keys and the tenant itself, so that nothing of it is seen by a
    /// tenant later created with the same id (the all-tenants cells keep
    /// its share of the fleet's history). Under the write lock: a usage
    /// write is wholly before the purge (and purged) or after it (and skips
    /// the tenant's blocks, whose `retired` flag is set by then).
    fn delete_tenant(&self, id: &str) -> Result<(), StoreError> {
        let seq = self.seq.lock();
        {
            // Fold the book into the stored cells first, so that the
            // all-tenants cells keep the tenant's share and its own
            // deltas are gone; after a failed checkpoint, just forget them
            // (the journal's entries then find no records to replay).
            let mut book = self.book.lock();
            if self.needs_replay.load(std::sync::atomic::Ordering::Acquire) {
                book.forget(id);
            } else if !book.is_empty() {
                let mut cells = HashMap::new();
                self.absorb(&book, *seq, &mut cells)?;
                self.write_cells(cells, *seq)?;
                book.clear();
            }
        }
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
            if k.get(4..) == Some(id.as_bytes()) {
                batch.remove(k);
            }
        }
        self.counters.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for kv in self.keys.iter() {
            let (k, v) = kv?;
            if decode::<StoredKey>(&v)?.key.tenant_id == id {
                batch.remove(k);
            }
        }
        self.keys.apply_batch(batch)?;
        self.tenants.remove(id)?;
        drop(seq);
        self.durable()
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Self::all(&self.keys)
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(match self.keys.get(id)? {
            Some(v) => Some(decode(&v)?),
            None => None,
        })
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.put(&self.keys, &key.key.id, key)
    }

    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<(), StoreError> {
        let mut seq_guard = self.seq.lock();
        let seq = *seq_guard + 1;
        // A tenant deleted since the batch was grouped: its records went
        // with it (checked under the lock the purge holds).
        let blocks: Vec<&UsageBlock> = blocks.iter().filter(|b| !b.is_retired()).collect();

        // Split by UTC day and sum the period totals this write adds.
        let mut by_day: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
        let mut deltas: HashMap<Vec<u8>, PeriodTotals> = HashMap::new();
        for block in &blocks {
            let mut per_day: BTreeMap<i64, Vec<&UsageRecord>> = BTreeMap::new();
            for r in &block.records {
                per_day.entry(day_of(r.ts_ms)).or_default().push(r);
                let d = deltas
                    .entry(counter_key(
                        Period::containing_secs(r.ts_ms.div_euclid(1000)),
                        &block.tenant,
                    ))
                    .or_default();
                d.calls = d.calls.saturating_add(r.calls);
                d.tokens = d.tokens.saturating_add(r.tokens);
            }
            for (day, records) in per_day {
                let values = by_day.entry(day).or_default();
                for (i, chunk) in encode_chunks(&records, VALUE_BUDGET)?
                    .into_iter()
                    .enumerate()
                {
                    values.push((chunk_key(block_key(&block.tenant, seq), i), chunk));
                }
            }
        }
        if by_day.is_empty() {
            return Ok(());
        }

        let journal: Vec<(i64, String)> = blocks
            .iter()
            .flat_map(|b| {
                let mut days: Vec<i64> = b.records.iter().map(|r| day_of(r.ts_ms)).collect();
                days.sort_unstable();
                days.dedup();
                days.into_iter().map(|d| (d, b.tenant.clone()))
            })
            .collect();
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
                let mut totals = match tx[0].get(key)? {
                    Some(v) => decode::<PeriodTotals>(v.as_ref()).map_err(abort)?,
                    None => PeriodTotals::default(),
                };
                totals.calls = totals.calls.saturating_add(delta.calls);
                totals.tokens = totals.tokens.saturating_add(delta.tokens);
                tx[0].insert(key.as_slice(), encode(&totals).map_err(abort)?)?;
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
        })?;
        *seq_guard = seq;
        // The records are in the trees now, durable or not: the rollups must
        // count them either way, or they would disagree with the counters.
        let durable = self.durable();
        let mut book = self.book.lock();
        for block in blocks {
            book.add(&block.tenant, &block.records);
        }
        durable
    }

    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let prefix = counter_key(period, "");
        self.counters
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let tenant = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((tenant, decode(&v)?))
            })
            .collect()
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        match self.counters.get(counter_key(period, tenant))? {
            Some(v) => Ok(decode(&v)?),
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
                for r in decode::<Vec<UsageRecord>>(&v)? {
                    if r.ts_ms >= from_ms && r.ts_ms < to_ms && !visit(&r) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn rollups(
        &self,
        tenant: &str,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Cell)>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        // The book is locked first: a checkpoint (which holds it) is then
        // either wholly before this read or wholly after it.
        let book = self.book.lock();
        let mut cells: BTreeMap<i64, Cell> = BTreeMap::new();
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
        for tree in trees {
            for kv in tree.range(cell_key(tenant, from)..cell_key(tenant, to)) {
                let (k, v) = kv?;
                cells.insert(cell_bucket(&k), decode(v.as_ref())?);
            }
        }
        // Records since the last checkpoint are not in the stored cells yet.
        for (bucket, delta) in book.overlay(grain, tenant, from, to) {
            cells.entry(bucket).or_default().merge(&delta);
        }
        Ok(cells.into_iter().collect())
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        if self.needs_replay.load(std::sync::atomic::Ordering::Acquire) {
            return self.replay_journal();
        }
        let seq = self.seq.lock();
        let mut book = self.book.lock();
        if book.is_empty() && read_u64(&self.meta, "rollup_seq")? == *seq {
            return Ok(());
        }
        let mut cells = HashMap::new();
        let result = self
            .absorb(&book, *seq, &mut cells)
            .and_then(|()| self.write_cells(cells, *seq));
        // Either way the book is done: on failure the journal rebuilds it.
        book.clear();
        if result.is_err() {
            self.needs_replay
                .store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }

    fn drop_days_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError> {
        let _writer = self.seq.lock();
        let mut dropped = 0;
        for (prefix, cutoff) in [(RAW_PREFIX, raw_day), (MINUTE_PREFIX, minute_day)] {
            for day in self.days_of(prefix) {
                if day < cutoff {
                    self.db.drop_tree(day_tree_name(prefix, day))?;
                    dropped += 1;
                }
            }
        }
        Ok(dropped)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.checkpoint()?;
        self.durable()?;
        Ok(())
    }

    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        Self::all(&self.alerts)
    }

    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.put(&self.alerts, &mark.key(), mark)
    }

    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        for mark in self.alert_marks()? {
            if mark.period < before {
                self.alerts.remove(mark.key())?;
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn open(dir: &Path) -> Result<SledEngine, StoreError> {
        crate::store::wait_for_lock(|| {
            SledEngine::open(
                dir,
                &SledOptions {
                    flush_every_ms: 100,
                    cache_bytes: 1 << 24,
                    flush_deadline: std::time::Duration::from_secs(30),
                    min_free_bytes: 0,
                },
            )
        })
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

    /// A purge is not undone by the journal: records written since the
    /// last checkpoint are purged too, and a reopen replays nothing of them
    /// (the rest of the purge is the contract suite's, for every engine).
    #[test]
    fn a_purge_is_not_undone_by_a_journal_replay() {
        let dir = tempfile::tempdir().unwrap();
        let t = days_from_civil(2026, 11, 20) * MS_PER_DAY;
        {
            let s = open(dir.path()).unwrap();
            s.write_usage(&[UsageBlock::new("gone", vec![rec(t, 1, 1)])])
                .unwrap();
            s.checkpoint().unwrap();
            s.write_usage(&[UsageBlock::new("gone", vec![rec(t, 5, 5)])])
                .unwrap();
            s.delete_tenant("gone").unwrap();
        }
        let s = open(dir.path()).unwrap();
        for grain in Grain::ALL {
            assert_eq!(requests(&s, "gone", grain), 0, "{grain:?}");
        }
        assert_eq!(
            requests(&s, ALL_TENANTS, Grain::Day),
            2,
            "the fleet keeps its history"
        );
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
        assert_eq!(s.day_trees().len(), 2);
    }

    fn requests(s: &SledEngine, tenant: &str, grain: Grain) -> u64 {
        s.rollups(tenant, grain, i64::MIN / 2, i64::MAX / 2)
            .unwrap()
            .iter()
            .map(|(_, c)| c.total.requests)
            .sum()
    }

    #[test]
    fn rollups_come_back_from_the_journal_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let t = days_from_civil(2026, 11, 30) * MS_PER_DAY + 5_000;
        {
            let s = open(dir.path()).unwrap();
            s.write_usage(&[UsageBlock {
                tenant: "a".into(),
                records: vec![rec(t, 1, 1); 3],
                ..Default::default()
            }])
            .unwrap();
            s.checkpoint().unwrap();
            s.write_usage(&[UsageBlock {
                tenant: "a".into(),
                records: vec![rec(t + 60_000, 1, 1); 2],
                ..Default::default()
            }])
            .unwrap();
            // Seen before any checkpoint, from memory.
            assert_eq!(requests(&s, "a", Grain::Hour), 5);
            // Dropped without a checkpoint: a crash as far as rollups go.
        }
        let s = open(dir.path()).unwrap();
        for g in Grain::ALL {
            assert_eq!(requests(&s, "a", g), 5, "{g:?}");
            assert_eq!(requests(&s, "", g), 5, "all tenants, {g:?}");
        }
        assert!(s.journal.is_empty(), "the replay checkpointed");
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
            let entry = s.journal.iter().next().unwrap().unwrap();
            s.checkpoint().unwrap();
            // As if the cells were written but the watermark and journal were not.
            s.journal.insert(entry.0, entry.1).unwrap();
            s.meta.insert("rollup_seq", &0u64.to_be_bytes()).unwrap();
            s.db.flush().unwrap();
        }
        let s = open(dir.path()).unwrap();
        assert_eq!(requests(&s, "a", Grain::Day), 4);
        assert_eq!(requests(&s, "a", Grain::Minute), 4);
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
        assert_eq!(s.day_trees(), vec![day(1), day(10), day(20)]);
        // Now = Nov 25 with 20 days of raw records: Nov 1 goes; minute rollups keep 7 days.
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
            .unwrap();
        let dropped = crate::usage::retention::apply(&s, now, 20).unwrap();
        assert_eq!(s.day_trees(), vec![day(10), day(20)]);
        assert_eq!(s.minute_trees(), vec![day(20)]);
        assert_eq!(dropped, 1 + 2);
        assert_eq!(requests(&s, "a", Grain::Minute), 1);
        assert_eq!(requests(&s, "a", Grain::Hour), 3);
        assert_eq!(requests(&s, "a", Grain::Day), 3);
        let mut seen = 0;
        s.scan_usage("a", 0, i64::MAX, &mut |_| {
            seen += 1;
            true
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    /// A format-1 store (plans without `ingest_rate`) opens, its plans read
    /// back unchanged, and it is marked format 2.
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
                rate_limit: Some(crate::model::RateLimit {
                    requests: 2,
                    per_seconds: 1,
                    burst: 3,
                }),
                price_usd_monthly: 9.5,
            };
            s.plans.insert("old", encode(&old).unwrap()).unwrap();
            s.meta
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
            s.meta.get("format_version").unwrap().unwrap().as_ref(),
            &FORMAT_VERSION.to_be_bytes()
        );
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path()).unwrap();
            s.meta
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
                endpoint: format!("/v1/{i}/{}", "x".repeat(200)),
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
            for kv in
                s.db.open_tree(day_tree_name(RAW_PREFIX, day_of(t)))
                    .unwrap()
                    .iter()
            {
                assert!(kv.unwrap().1.len() <= VALUE_BUDGET);
            }
            assert!(s.journal.len() > 1, "the journal entry is chunked too");
            for kv in s.journal.iter() {
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
        assert_eq!(requests(&s, "big", Grain::Day), 3_000);
        assert_eq!(
            requests(&s, "tenant-with-a-long-name-00299", Grain::Hour),
            1
        );
        assert_eq!(requests(&s, ALL_TENANTS, Grain::Minute), 3_300);
    }
}
