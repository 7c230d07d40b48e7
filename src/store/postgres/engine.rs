//! [`PgEngine`]: every storage concern on one PostgreSQL database, shared
//! by any number of instances.
//!
//! A usage write is one transaction: its `(instance, seq)` in
//! `usage_batches` (a write already there is skipped: sent again after a
//! lost connection or a crash, it counts once), the records by binary
//! `COPY`, the period totals and the rollup cells it changes - so the
//! persisted totals and cells always equal the persisted records, and any
//! instance's analytics read everyone's. The cells are pre-aggregated per
//! write and merged under one transaction-level advisory lock (every write
//! changes the fleet's cells anyway), so instances never deadlock on them.
//! Each catalog write adds a row to `catalog_changes` and notifies
//! `tollgate_catalog` in its transaction (`shared.rs` follows them).

use crate::store::Claims;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::SinkExt;
use parking_lot::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::changes::changed;
use super::client::{unreachable, Conn, Pg};
use super::records::{self, day_of, COPY_LAYOUT};
use super::spool::{CellId, Spool, Write};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Cell, Grain, Owner};
use crate::store::codec::{decode_cell as decode, encode_cell};
use crate::store::ledger::book::RollupBook;
use crate::store::shared::Backlog;
use crate::store::{AlertMark, Engine, StoreError, UsageBlock};

/// Held (for its transaction) by whoever changes rollup cells.
pub(super) const ROLLUP_LOCK: i64 = 0x726f_6c6c_7570; // "rollup"
/// Held while a day's partition is made or dropped.
pub(super) const PARTITION_LOCK: i64 = 0x7061_7274; // "part"
/// The times a scan asks for are clamped to these (milliseconds).
pub(super) const MIN_MS: i64 = -100_000_000_000_000;
pub(super) const MAX_MS: i64 = 8_000_000_000_000_000;
/// Records a scan reads per query.
pub(super) const SCAN_PAGE: i64 = 10_000;

pub struct PgEngine {
    pub(super) pg: Arc<Pg>,
    /// This instance's name in `usage_batches`, `catalog_changes` and
    /// `instances`.
    pub(super) instance: String,
    /// Days whose partition is known to exist.
    pub(super) days: Mutex<HashSet<i64>>,
    /// Notices of other instances' catalog writes (`shared.rs`).
    pub(super) listener: super::listener::Listener,
    /// Usage writes waiting for the database (none in tests without a
    /// data directory: failures then reach the flusher).
    pub(super) spool: Option<Spool>,
    /// Something was spooled since the spool was last flushed.
    pub(super) spooled: AtomicBool,
    /// Held while the spool is delivered.
    pub(super) draining: Mutex<()>,
    /// Why the last write could not reach the database; `None` once one did.
    pub(super) down: Mutex<Option<String>>,
    /// Records of spooled writes the database refused as data (dropped).
    pub(super) rejected: AtomicU64,
    /// The process whose writes these are, when enforcement is shared
    /// (`process_totals`); unset, writes count only in `period_totals`.
    pub(super) process: std::sync::OnceLock<String>,
}

pub(super) fn grain_id(g: Grain) -> i16 {
    match g {
        Grain::Minute => 0,
        Grain::Hour => 1,
        Grain::Day => 2,
    }
}

/// The fleet's cells are kept under `''` (a tenant id is never empty).
pub(super) fn owner_id(o: &Owner) -> &str {
    match o {
        Owner::Fleet => "",
        Owner::Tenant(id) => id,
    }
}

pub(super) fn i64_of(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

pub(super) fn u64_of(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// What one usage write adds, computed before its transaction (and kept
/// in the spool while the database is unreachable).
pub(super) fn write_of(seq: u64, blocks: &[&UsageBlock]) -> Write {
    let mut totals: BTreeMap<(i32, String), (i64, i64)> = BTreeMap::new();
    let mut book = RollupBook::default();
    let mut records = 0;
    let mut days: Vec<i64> = Vec::new();
    for block in blocks {
        records += block.records.len();
        for r in &block.records {
            let period = Period::containing_secs(r.ts_ms.div_euclid(1000)).0;
            let slot = totals.entry((period, block.tenant.clone())).or_default();
            slot.0 = slot.0.saturating_add(i64_of(r.calls));
            slot.1 = slot.1.saturating_add(i64_of(r.tokens));
            let day = day_of(r.ts_ms);
            if days.last() != Some(&day) {
                days.push(day);
            }
        }
        book.add(&block.tenant, &block.records);
    }
    days.sort_unstable();
    days.dedup();
    let mut cells: BTreeMap<CellId, Cell> = BTreeMap::new();
    book.for_each_target(|grain, owner, bucket, delta, tenant| {
        let slot = cells
            .entry((grain_id(grain), owner_id(owner).to_string(), bucket))
            .or_default();
        match owner {
            Owner::Fleet => slot.merge_for_all_tenants(delta, tenant),
            Owner::Tenant(_) => slot.merge(delta),
        }
    });
    Write {
        seq,
        records: records as u32,
        days,
        copy: records::encode_copy(blocks),
        totals: totals
            .into_iter()
            .map(|((p, t), (c, k))| (p, t, c, k))
            .collect(),
        cells: cells.into_iter().collect(),
        layout: COPY_LAYOUT,
    }
}

/// Adds a write's calls and tokens to the period totals. The sums
/// saturate at int8's largest value as the records' own sums do: one
/// tenant's huge (in-bounds) counts must not make every later write fail
/// with `numeric value out of range` (they once wedged every tenant's
/// writes behind a batch retried forever).
pub(super) const ADD_PERIOD_TOTALS: &str =
    "INSERT INTO period_totals (period, tenant_id, calls, tokens) \
     SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[]) \
     ON CONFLICT (period, tenant_id) DO UPDATE SET \
     calls = LEAST(period_totals.calls::numeric + EXCLUDED.calls, 9223372036854775807)::int8, \
     tokens = LEAST(period_totals.tokens::numeric + EXCLUDED.tokens, 9223372036854775807)::int8";

/// [`ADD_PERIOD_TOTALS`] for this process's part (`$5`: its name).
pub(super) const ADD_PROCESS_TOTALS: &str = "INSERT INTO process_totals \
     (period, tenant_id, calls, tokens, process) \
     SELECT *, $5 FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[]) \
     ON CONFLICT (period, tenant_id, process) DO UPDATE SET \
     calls = LEAST(process_totals.calls::numeric + EXCLUDED.calls, 9223372036854775807)::int8, \
     tokens = LEAST(process_totals.tokens::numeric + EXCLUDED.tokens, 9223372036854775807)::int8";

/// Spooled writes delivered in one transaction.
pub(super) const DRAIN_WRITES: usize = 64;

/// Rolls back a claimed write whose claim another instance holds.
const HELD: &str = "a claimed record id is held already";

/// Adds one delivery's totals (and this process's part of them) and
/// merges its rollup cells.
pub(super) async fn add_write(
    tx: &tokio_postgres::Transaction<'_>,
    totals: &[(i32, String, i64, i64)],
    cells: &[(CellId, Cell)],
    process: Option<&str>,
) -> Result<(), StoreError> {
    let periods: Vec<i32> = totals.iter().map(|t| t.0).collect();
    let tenants: Vec<&str> = totals.iter().map(|t| t.1.as_str()).collect();
    let calls: Vec<i64> = totals.iter().map(|t| t.2).collect();
    let tokens: Vec<i64> = totals.iter().map(|t| t.3).collect();
    tx.execute(ADD_PERIOD_TOTALS, &[&periods, &tenants, &calls, &tokens])
        .await?;
    if let Some(process) = process {
        tx.execute(
            ADD_PROCESS_TOTALS,
            &[&periods, &tenants, &calls, &tokens, &process],
        )
        .await?;
    }
    merge_cells(tx, cells).await
}

/// Several writes' totals and rollup cells added up, in key order.
#[allow(clippy::type_complexity)]
pub(super) fn added_up(writes: &[&Write]) -> (Vec<(i32, String, i64, i64)>, Vec<(CellId, Cell)>) {
    let mut totals: BTreeMap<(i32, String), (i64, i64)> = BTreeMap::new();
    let mut cells: BTreeMap<CellId, Cell> = BTreeMap::new();
    for w in writes {
        for (period, tenant, calls, tokens) in &w.totals {
            let slot = totals.entry((*period, tenant.clone())).or_default();
            slot.0 = slot.0.saturating_add(*calls);
            slot.1 = slot.1.saturating_add(*tokens);
        }
        for (id, cell) in &w.cells {
            match cells.get_mut(id) {
                Some(c) => c.merge(cell),
                None => {
                    cells.insert(id.clone(), cell.clone());
                }
            }
        }
    }
    (
        totals
            .into_iter()
            .map(|((p, t), (c, k))| (p, t, c, k))
            .collect(),
        cells.into_iter().collect(),
    )
}

/// Writes `cells` (`(grain, owner, bucket)` in key order, with their
/// bytes) over what is stored, under the rollup lock.
pub(super) async fn upsert_cells(
    c: &impl GenericClient,
    keys: &[&CellId],
    bytes: &[Vec<u8>],
) -> Result<(), StoreError> {
    let grains: Vec<i16> = keys.iter().map(|k| k.0).collect();
    let owners: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    let buckets: Vec<i64> = keys.iter().map(|k| k.2).collect();
    c.execute(
        "INSERT INTO rollup_cells (grain, owner, bucket, cell) \
         SELECT * FROM unnest($1::int2[], $2::text[], $3::int8[], $4::bytea[]) \
         ON CONFLICT (grain, owner, bucket) DO UPDATE SET cell = EXCLUDED.cell",
        &[&grains, &owners, &buckets, &bytes],
    )
    .await?;
    Ok(())
}

/// Merges one write's cell deltas (in key order, each key once) into the
/// stored cells, under the rollup lock.
pub(super) async fn merge_cells(
    c: &impl GenericClient,
    deltas: &[(CellId, Cell)],
) -> Result<(), StoreError> {
    if deltas.is_empty() {
        return Ok(());
    }
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
        .await?;
    let grains: Vec<i16> = deltas.iter().map(|(k, _)| k.0).collect();
    let owners: Vec<&str> = deltas.iter().map(|(k, _)| k.1.as_str()).collect();
    let buckets: Vec<i64> = deltas.iter().map(|(k, _)| k.2).collect();
    let rows = c
        .query(
            "SELECT c.grain, c.owner, c.bucket, c.cell FROM rollup_cells c \
             JOIN unnest($1::int2[], $2::text[], $3::int8[]) AS k(grain, owner, bucket) \
             USING (grain, owner, bucket)",
            &[&grains, &owners, &buckets],
        )
        .await?;
    let mut stored: HashMap<CellId, Cell> = HashMap::with_capacity(rows.len());
    for row in rows {
        stored.insert(
            (row.get(0), row.get(1), row.get(2)),
            decode(row.get::<_, &[u8]>(3))?,
        );
    }
    let mut bytes: Vec<Vec<u8>> = Vec::with_capacity(deltas.len());
    for (key, delta) in deltas {
        bytes.push(match stored.get_mut(key) {
            Some(cell) => {
                cell.merge(delta);
                encode_cell(cell)?
            }
            None => encode_cell(delta)?,
        });
    }
    let keys: Vec<&CellId> = deltas.iter().map(|(k, _)| k).collect();
    upsert_cells(c, &keys, &bytes).await
}

impl PgEngine {
    /// Inserts `mark`, doing `on_conflict` when its key is there; the rows
    /// written.
    pub(super) fn insert_mark(
        &self,
        mark: &AlertMark,
        on_conflict: &'static str,
    ) -> Result<u64, StoreError> {
        let m = mark.clone();
        self.pg.run(move |c| async move {
            let sql = format!(
                "INSERT INTO alert_marks (tenant_id, period, url, threshold, body, delivered) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, period, url, threshold) \
                 {on_conflict}"
            );
            Ok(c.execute(
                sql.as_str(),
                &[
                    &m.tenant,
                    &m.period.0,
                    &m.url,
                    &(m.of.number() as i32),
                    &m.body,
                    &m.delivered,
                ],
            )
            .await?)
        })
    }

    /// `owner`'s cells in `span`, each value's bytes read by `read`.
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
        let rows = self.query(
            "SELECT bucket, cell FROM rollup_cells WHERE grain = $1 AND owner = $2 \
             AND bucket >= $3 AND bucket < $4 ORDER BY bucket",
            vec![
                Box::new(grain_id(grain)),
                Box::new(owner_id(owner).to_string()),
                Box::new(from),
                Box::new(to),
            ],
        )?;
        rows.iter()
            .map(|r| Ok((r.get(0), read(r.get::<_, &[u8]>(1))?)))
            .collect()
    }

    pub fn new(pg: Arc<Pg>, instance: String, spool: Option<Spool>) -> PgEngine {
        PgEngine {
            pg,
            instance,
            days: Mutex::new(HashSet::new()),
            listener: super::listener::Listener::default(),
            spool,
            spooled: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            process: std::sync::OnceLock::new(),
            draining: Mutex::new(()),
            down: Mutex::new(None),
        }
    }

    /// The local spool (tests fill it directly).
    #[cfg(test)]
    pub(super) fn spool(&self) -> Option<&Spool> {
        self.spool.as_ref()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Runs `f` in one transaction on a pooled connection.
    pub(super) fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a tokio_postgres::Transaction<'a>,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>,
            > + Send
            + 'static,
    {
        self.pg.run(|mut c: Conn| async move {
            let tx = c.transaction().await?;
            let out = f(&tx).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// One statement's rows.
    pub(super) fn query(
        &self,
        sql: impl Into<String>,
        params: Vec<Box<dyn ToSql + Send + Sync>>,
    ) -> Result<Vec<Row>, StoreError> {
        let sql = sql.into();
        self.pg.run(move |c: Conn| async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            Ok(c.query(&sql, &refs).await?)
        })
    }

    /// Makes the partitions of `days` that are not known to exist.
    pub(super) fn ensure_days(
        &self,
        days: impl IntoIterator<Item = i64>,
    ) -> Result<(), StoreError> {
        let missing: Vec<i64> = {
            let known = self.days.lock();
            let mut m: Vec<i64> = days.into_iter().filter(|d| !known.contains(d)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let made = missing.clone();
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                    .await?;
                for day in made {
                    tx.batch_execute(&records::create_partition(day)).await?;
                    tx.execute(
                        "INSERT INTO usage_days (day) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&(day as i32)],
                    )
                    .await?;
                }
                Ok(())
            })
        })?;
        self.days.lock().extend(missing);
        Ok(())
    }

    /// Writes one usage write, unless `usage_batches` has it already.
    pub(super) fn deliver(&self, write: &Arc<Write>) -> Result<(), StoreError> {
        self.deliver_all(std::slice::from_ref(write))
    }

    /// Writes `writes` in one transaction, each unless `usage_batches` has
    /// it already (sent before, the answer to its commit lost): one `COPY`
    /// each, and their totals and rollup cells added up first, so that the
    /// spool is delivered in a few large transactions (each one's rollup
    /// merge takes a lock every instance shares) rather than one a write.
    pub(super) fn deliver_all(&self, writes: &[Arc<Write>]) -> Result<(), StoreError> {
        self.deliver_claimed(writes, None).map(|_| ())
    }

    /// [`deliver_all`](Self::deliver_all), with the claims of the one
    /// write's one block made first in the same transaction: false, and
    /// nothing written, when another instance holds one of them.
    pub(super) fn deliver_claimed(
        &self,
        writes: &[Arc<Write>],
        claims: Option<(String, Claims)>,
    ) -> Result<bool, StoreError> {
        self.ensure_days(writes.iter().flat_map(|w| w.days.iter().copied()))?;
        let instance = self.instance.clone();
        let process = self.process.get().cloned();
        let writes = writes.to_vec();
        let result = self.transaction(move |tx| {
            Box::pin(async move {
                if let Some((tenant, c)) = &claims {
                    let ids: Vec<String> = c.made();
                    let made = tx
                        .execute(
                            "INSERT INTO record_ids (tenant_id, id, batch_key, made_at) \
                             SELECT $1::text, i, $3::text, $4::int8 FROM unnest($2::text[]) AS u(i) \
                             ON CONFLICT DO NOTHING",
                            &[tenant, &ids, &c.key, &c.at_ms],
                        )
                        .await?;
                    if made < ids.len() as u64 {
                        // Rolled back: the transaction's error.
                        return Err(StoreError::Unavailable(HELD.into()));
                    }
                }
                let seqs: Vec<i64> = writes.iter().map(|w| w.seq as i64).collect();
                let counts: Vec<i32> = writes.iter().map(|w| w.records as i32).collect();
                let fresh: HashSet<i64> = tx
                    .query(
                        "INSERT INTO usage_batches (instance, seq, records) \
                         SELECT $1::text, s, r FROM unnest($2::int8[], $3::int4[]) AS u(s, r) \
                         ON CONFLICT DO NOTHING RETURNING seq",
                        &[&instance, &seqs, &counts],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let fresh: Vec<&Write> = writes
                    .iter()
                    .filter(|w| fresh.contains(&(w.seq as i64)))
                    .map(|w| w.as_ref())
                    .collect();
                // One `COPY` for each run of writes of one layout.
                for run in fresh.chunk_by(|a, b| {
                    records::copy_columns(a.layout) == records::copy_columns(b.layout)
                }) {
                    let columns = records::copy_columns(run[0].layout);
                    let stream = match run {
                        [w] => bytes::Bytes::copy_from_slice(&w.copy),
                        _ => records::join_copies(run.iter().map(|w| w.copy.as_slice())).into(),
                    };
                    let sink = tx.copy_in(columns).await?;
                    futures_util::pin_mut!(sink);
                    sink.send(stream).await?;
                    sink.finish().await?;
                }
                match fresh[..] {
                    [] => Ok(()),
                    [w] => add_write(tx, &w.totals, &w.cells, process.as_deref()).await,
                    _ => {
                        let (totals, cells) = added_up(&fresh);
                        add_write(tx, &totals, &cells, process.as_deref()).await
                    }
                }
            })
        });
        let result = match result {
            Err(StoreError::Unavailable(m)) if m == HELD => return Ok(false),
            other => other,
        };
        match &result {
            Ok(()) => *self.down.lock() = None,
            Err(e) => {
                // A partition dropped meanwhile (retention on another
                // instance): look again next time.
                self.days.lock().clear();
                if unreachable(e) {
                    *self.down.lock() = Some(e.to_string());
                }
            }
        }
        result.map(|()| true)
    }

    /// Delivers what the spool holds, oldest first, up to
    /// [`DRAIN_WRITES`] writes a transaction; stops at the first failure.
    /// Returns how many records went.
    pub fn drain(&self) -> Result<u64, StoreError> {
        self.drain_by(DRAIN_WRITES)
    }

    /// [`drain`](Self::drain), `writes` writes a transaction (1: as before
    /// batching, for the benchmark in the spool test).
    pub(super) fn drain_by(&self, writes: usize) -> Result<u64, StoreError> {
        let Some(spool) = &self.spool else {
            return Ok(0);
        };
        let _one = self.draining.lock();
        let mut sent = 0;
        loop {
            let batch: Vec<Arc<Write>> = spool
                .first_n(writes.max(1))?
                .into_iter()
                .map(Arc::new)
                .collect();
            if batch.is_empty() {
                break;
            }
            match self.deliver_all(&batch) {
                Ok(()) => {
                    for write in &batch {
                        spool.remove(write)?;
                        sent += write.records as u64;
                    }
                }
                // Refused as data: one at a time, to set apart the write
                // that is refused (it would be refused forever and hold
                // every later write behind it).
                Err(e) if e.rejects_data() => {
                    for write in &batch {
                        match self.deliver(write) {
                            Ok(()) => sent += write.records as u64,
                            Err(e) if e.rejects_data() => {
                                self.rejected
                                    .fetch_add(write.records as u64, Ordering::Relaxed);
                                tracing::error!(
                                    error = %e,
                                    write = write.seq,
                                    records = write.records,
                                    "PostgreSQL refused a spooled usage write as data; it is dropped from the spool"
                                );
                            }
                            Err(e) => return Err(e),
                        }
                        spool.remove(write)?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        spool.flush()?;
        Ok(sent)
    }

    /// Records waiting in the spool, why the database is unreachable, and
    /// the records of spooled writes it refused.
    pub(crate) fn backlog(&self) -> Backlog {
        Backlog {
            waiting: self.spool.as_ref().map_or(0, |s| s.records()),
            down: self.down.lock().clone(),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Engine for PgEngine {
    /// The spool is delivered first: none of the tenant's records may
    /// arrive after its purge.
    fn purge_tenant(&self, id: &str) -> Result<(), StoreError> {
        self.drain()?;
        let (id, origin) = (id.to_string(), self.instance.clone());
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                    .await?;
                for sql in [
                    "DELETE FROM usage_records WHERE tenant_id = $1",
                    "DELETE FROM period_totals WHERE tenant_id = $1",
                    "DELETE FROM process_totals WHERE tenant_id = $1",
                    "DELETE FROM shared_periods WHERE tenant_id = $1",
                    "DELETE FROM rollup_cells WHERE owner = $1",
                    "DELETE FROM alert_marks WHERE tenant_id = $1",
                    "DELETE FROM record_ids WHERE tenant_id = $1",
                    "DELETE FROM key_last_used WHERE tenant_id = $1",
                    "DELETE FROM api_keys WHERE tenant_id = $1",
                    "DELETE FROM tenants WHERE id = $1",
                ] {
                    tx.execute(sql, &[&id]).await?;
                }
                changed(tx, "tenant", &[&id], &origin).await
            })
        })
    }

    /// A committed transaction is durable; the spool is flushed.
    fn durable(&self) -> Result<(), StoreError> {
        match &self.spool {
            Some(s) if self.spooled.swap(false, Ordering::AcqRel) => s.flush(),
            _ => Ok(()),
        }
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        let rows = self.query("SELECT pg_database_size(current_database())", Vec::new())?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }
}
