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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::SinkExt;
use parking_lot::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use super::client::{unreachable, Conn, Pg};
use super::records::{self, day_of, COPY_LAYOUT, COPY_RECORDS, COPY_RECORDS_V1, RECORD_COLUMNS};
use super::spool::{CellId, Spool, Write};
use crate::model::{
    ApiKey, IngestRate, Plan, RateLimit, StoredKey, Tenant, TenantStatus, UsageRecord,
};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Cell, CellHead, Grain, Owner};
use crate::store::codec::{decode_cell as decode, decode_prefix, encode_cell};
use crate::store::ledger::book::RollupBook;
use crate::store::shared::Backlog;
use crate::store::{
    AlertMark, AlertMarks, Catalog, CellKey, Engine, MarkOf, PeriodTotals, RollupCells, StoreError,
    StoredCell, UsageBlock, UsageLog, UsageReads,
};

/// Held (for its transaction) by whoever changes rollup cells.
const ROLLUP_LOCK: i64 = 0x726f_6c6c_7570; // "rollup"
/// Held while a day's partition is made or dropped.
const PARTITION_LOCK: i64 = 0x7061_7274; // "part"
/// Held (for its transaction) by whoever writes the catalog.
const CATALOG_LOCK: i64 = 0x0063_6174_616c_6f67; // "catalog"
/// The times a scan asks for are clamped to these (milliseconds).
const MIN_MS: i64 = -100_000_000_000_000;
const MAX_MS: i64 = 8_000_000_000_000_000;
/// Records a scan reads per query.
const SCAN_PAGE: i64 = 10_000;

pub struct PgEngine {
    pub(super) pg: Arc<Pg>,
    /// This instance's name in `usage_batches`, `catalog_changes` and
    /// `instances`.
    pub(super) instance: String,
    /// Days whose partition is known to exist.
    days: Mutex<HashSet<i64>>,
    /// Notices of other instances' catalog writes (`shared.rs`).
    pub(super) listener: super::shared::Listener,
    /// Usage writes waiting for the database (none in tests without a
    /// data directory: failures then reach the flusher).
    spool: Option<Spool>,
    /// Something was spooled since the spool was last flushed.
    spooled: AtomicBool,
    /// Held while the spool is delivered.
    pub(super) draining: Mutex<()>,
    /// Why the last write could not reach the database; `None` once one did.
    down: Mutex<Option<String>>,
    /// Records of spooled writes the database refused as data (dropped).
    rejected: AtomicU64,
    /// The process whose writes these are, when enforcement is shared
    /// (`process_totals`); unset, writes count only in `period_totals`.
    pub(super) process: std::sync::OnceLock<String>,
}

fn grain_id(g: Grain) -> i16 {
    match g {
        Grain::Minute => 0,
        Grain::Hour => 1,
        Grain::Day => 2,
    }
}

/// The fleet's cells are kept under `''` (a tenant id is never empty).
fn owner_id(o: &Owner) -> &str {
    match o {
        Owner::Fleet => "",
        Owner::Tenant(id) => id,
    }
}

fn i64_of(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn u64_of(v: Option<i64>) -> Option<u64> {
    v.map(|v| v.max(0) as u64)
}

/// A plan from [`PLAN_COLUMNS`] starting at column `at`.
pub(super) fn plan_of(r: &Row, at: usize) -> Plan {
    let rate = |i: usize| -> Option<(u64, u64, u64)> {
        Some((
            u64_of(r.get(at + i))?,
            u64_of(r.get(at + i + 1))?,
            u64_of(r.get(at + i + 2))?,
        ))
    };
    Plan {
        id: r.get(at),
        name: r.get(at + 1),
        monthly_calls: u64_of(r.get(at + 2)),
        monthly_tokens: u64_of(r.get(at + 3)),
        rate_limit: rate(4).map(|(requests, per_seconds, burst)| RateLimit {
            requests,
            per_seconds,
            burst,
        }),
        price_usd_monthly: r.get(at + 7),
        ingest_rate: rate(8).map(|(records, per_seconds, burst)| IngestRate {
            records,
            per_seconds,
            burst,
        }),
        reserve_tokens: u64_of(r.get(at + 11)),
        reservation_ttl_seconds: u64_of(r.get(at + 12)),
    }
}

pub(super) const PLAN_COLUMNS: &str = "id, name, monthly_calls, monthly_tokens, rate_requests, \
     rate_per_seconds, rate_burst, price_usd_monthly, ingest_records, ingest_per_seconds, \
     ingest_burst, reserve_tokens, reservation_ttl_seconds";
pub(super) const TENANT_COLUMNS: &str = "id, name, plan_id, suspended, created_at";
pub(super) const KEY_COLUMNS: &str = "id, tenant_id, name, prefix, created_at, revoked_at, sha256";

/// A tenant from [`TENANT_COLUMNS`] starting at column `at`.
pub(super) fn tenant_of(r: &Row, at: usize) -> Tenant {
    Tenant {
        id: r.get(at),
        name: r.get(at + 1),
        plan_id: r.get(at + 2),
        status: if r.get(at + 3) {
            TenantStatus::Suspended
        } else {
            TenantStatus::Active
        },
        created_at: r.get(at + 4),
    }
}

/// A key from [`KEY_COLUMNS`] starting at column `at`.
pub(super) fn key_of(r: &Row, at: usize) -> Result<StoredKey, StoreError> {
    let hash: Vec<u8> = r.get(at + 6);
    Ok(StoredKey {
        key: ApiKey {
            id: r.get(at),
            tenant_id: r.get(at + 1),
            name: r.get(at + 2),
            prefix: r.get(at + 3),
            created_at: r.get(at + 4),
            revoked_at: r.get(at + 5),
        },
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Codec("a stored key hash is not 32 bytes".into()))?,
    })
}

/// Notes catalog writes for the other instances: one change row per id,
/// and a notice, both taking effect when the transaction commits.
async fn changed(
    c: &impl GenericClient,
    kind: &str,
    ids: &[&str],
    origin: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    // One catalog writer at a time across instances: versions then commit
    // in their order, so a follower reading past version v never misses
    // one below it.
    c.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK])
        .await?;
    c.execute(
        "INSERT INTO catalog_changes (kind, id, origin) SELECT $1, unnest($2::text[]), $3",
        &[&kind, &ids, &origin],
    )
    .await?;
    c.execute("SELECT pg_notify('tollgate_catalog', '')", &[])
        .await?;
    Ok(())
}

async fn upsert_tenants(c: &impl GenericClient, tenants: &[Tenant]) -> Result<(), StoreError> {
    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let plans: Vec<&str> = tenants.iter().map(|t| t.plan_id.as_str()).collect();
    let suspended: Vec<bool> = tenants
        .iter()
        .map(|t| t.status == TenantStatus::Suspended)
        .collect();
    let created: Vec<chrono::DateTime<chrono::Utc>> =
        tenants.iter().map(|t| t.created_at).collect();
    c.execute(
        "INSERT INTO tenants (id, name, plan_id, suspended, created_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, plan_id = EXCLUDED.plan_id, \
         suspended = EXCLUDED.suspended, created_at = EXCLUDED.created_at",
        &[&ids, &names, &plans, &suspended, &created],
    )
    .await?;
    Ok(())
}

async fn upsert_keys(c: &impl GenericClient, keys: &[StoredKey]) -> Result<(), StoreError> {
    let col = |f: fn(&StoredKey) -> &str| keys.iter().map(f).collect::<Vec<&str>>();
    let ids = col(|k| &k.key.id);
    let tenants = col(|k| &k.key.tenant_id);
    let names = col(|k| &k.key.name);
    let prefixes = col(|k| &k.key.prefix);
    let created: Vec<_> = keys.iter().map(|k| k.key.created_at).collect();
    let revoked: Vec<_> = keys.iter().map(|k| k.key.revoked_at).collect();
    let hashes: Vec<&[u8]> = keys.iter().map(|k| &k.hash[..]).collect();
    c.execute(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, created_at, revoked_at, sha256) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::timestamptz[], $6::timestamptz[], $7::bytea[]) \
         ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, \
         prefix = EXCLUDED.prefix, created_at = EXCLUDED.created_at, \
         revoked_at = EXCLUDED.revoked_at, sha256 = EXCLUDED.sha256",
        &[
            &ids, &tenants, &names, &prefixes, &created, &revoked, &hashes,
        ],
    )
    .await?;
    Ok(())
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
const ADD_PERIOD_TOTALS: &str = "INSERT INTO period_totals (period, tenant_id, calls, tokens) \
     SELECT * FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[]) \
     ON CONFLICT (period, tenant_id) DO UPDATE SET \
     calls = LEAST(period_totals.calls::numeric + EXCLUDED.calls, 9223372036854775807)::int8, \
     tokens = LEAST(period_totals.tokens::numeric + EXCLUDED.tokens, 9223372036854775807)::int8";

/// [`ADD_PERIOD_TOTALS`] for this process's part (`$5`: its name).
const ADD_PROCESS_TOTALS: &str = "INSERT INTO process_totals \
     (period, tenant_id, calls, tokens, process) \
     SELECT *, $5 FROM unnest($1::int4[], $2::text[], $3::int8[], $4::int8[]) \
     ON CONFLICT (period, tenant_id, process) DO UPDATE SET \
     calls = LEAST(process_totals.calls::numeric + EXCLUDED.calls, 9223372036854775807)::int8, \
     tokens = LEAST(process_totals.tokens::numeric + EXCLUDED.tokens, 9223372036854775807)::int8";

/// Spooled writes delivered in one transaction.
pub(super) const DRAIN_WRITES: usize = 64;

/// Adds one delivery's totals (and this process's part of them) and
/// merges its rollup cells.
async fn add_write(
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
fn added_up(writes: &[&Write]) -> (Vec<(i32, String, i64, i64)>, Vec<(CellId, Cell)>) {
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
async fn upsert_cells(
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
async fn merge_cells(c: &impl GenericClient, deltas: &[(CellId, Cell)]) -> Result<(), StoreError> {
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
    fn insert_mark(&self, mark: &AlertMark, on_conflict: &'static str) -> Result<u64, StoreError> {
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
            listener: super::shared::Listener::default(),
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
    fn transaction<T, F>(&self, f: F) -> Result<T, StoreError>
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
    fn ensure_days(&self, days: impl IntoIterator<Item = i64>) -> Result<(), StoreError> {
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
    fn deliver(&self, write: &Arc<Write>) -> Result<(), StoreError> {
        self.deliver_all(std::slice::from_ref(write))
    }

    /// Writes `writes` in one transaction, each unless `usage_batches` has
    /// it already (sent before, the answer to its commit lost): one `COPY`
    /// each, and their totals and rollup cells added up first, so that the
    /// spool is delivered in a few large transactions (each one's rollup
    /// merge takes a lock every instance shares) rather than one a write.
    fn deliver_all(&self, writes: &[Arc<Write>]) -> Result<(), StoreError> {
        self.ensure_days(writes.iter().flat_map(|w| w.days.iter().copied()))?;
        let instance = self.instance.clone();
        let process = self.process.get().cloned();
        let writes = writes.to_vec();
        let result = self.transaction(move |tx| {
            Box::pin(async move {
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
                for run in
                    fresh.chunk_by(|a, b| (a.layout < COPY_LAYOUT) == (b.layout < COPY_LAYOUT))
                {
                    let columns = if run[0].layout < COPY_LAYOUT {
                        COPY_RECORDS_V1
                    } else {
                        COPY_RECORDS
                    };
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
        result
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
    pub fn backlog(&self) -> Backlog {
        Backlog {
            waiting: self.spool.as_ref().map_or(0, |s| s.records()),
            down: self.down.lock().clone(),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

impl Catalog for PgEngine {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        let rows = self.query(
            format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY id"),
            Vec::new(),
        )?;
        Ok(rows.iter().map(|r| plan_of(r, 0)).collect())
    }

    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let p = plan.clone();
        let origin = self.instance.clone();
        self.transaction(move |tx| {
            Box::pin(async move {
                let rate = p.rate_limit.map(|r| (r.requests, r.per_seconds, r.burst));
                let ingest = p.ingest_rate.map(|r| (r.records, r.per_seconds, r.burst));
                let part = |r: Option<(u64, u64, u64)>, f: fn((u64, u64, u64)) -> u64| {
                    r.map(|r| i64_of(f(r)))
                };
                tx.execute(
                    &format!(
                        "INSERT INTO plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO UPDATE SET name = $2, \
                         monthly_calls = $3, monthly_tokens = $4, rate_requests = $5, \
                         rate_per_seconds = $6, rate_burst = $7, price_usd_monthly = $8, \
                         ingest_records = $9, ingest_per_seconds = $10, ingest_burst = $11, \
                         reserve_tokens = $12, reservation_ttl_seconds = $13"
                    ),
                    &[
                        &p.id,
                        &p.name,
                        &p.monthly_calls.map(i64_of),
                        &p.monthly_tokens.map(i64_of),
                        &part(rate, |r| r.0),
                        &part(rate, |r| r.1),
                        &part(rate, |r| r.2),
                        &p.price_usd_monthly,
                        &part(ingest, |r| r.0),
                        &part(ingest, |r| r.1),
                        &part(ingest, |r| r.2),
                        &p.reserve_tokens.map(i64_of),
                        &p.reservation_ttl_seconds.map(i64_of),
                    ],
                )
                .await?;
                changed(tx, "plan", &[&p.id], &origin).await
            })
        })
    }

    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        let (id, origin) = (id.to_string(), self.instance.clone());
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM plans WHERE id = $1", &[&id])
                    .await?;
                changed(tx, "plan", &[&id], &origin).await
            })
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self.query(
            format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"),
            Vec::new(),
        )?;
        Ok(rows.iter().map(|r| tenant_of(r, 0)).collect())
    }

    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let rows = self.query(
            format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"),
            vec![Box::new(id.to_string())],
        )?;
        Ok(rows.first().map(|r| tenant_of(r, 0)))
    }

    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.import(std::slice::from_ref(tenant), &[])
    }

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"),
            Vec::new(),
        )?;
        rows.iter().map(|r| key_of(r, 0)).collect()
    }

    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            vec![Box::new(id.to_string())],
        )?;
        rows.first().map(|r| key_of(r, 0)).transpose()
    }

    fn keys_of(&self, tenant_id: &str) -> Result<Vec<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id"),
            vec![Box::new(tenant_id.to_string())],
        )?;
        rows.iter().map(|r| key_of(r, 0)).collect()
    }

    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.import(&[], std::slice::from_ref(key))
    }

    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let (tenants, keys) = (tenants.to_vec(), keys.to_vec());
        let origin = self.instance.clone();
        self.transaction(move |tx| {
            Box::pin(async move {
                if !tenants.is_empty() {
                    upsert_tenants(tx, &tenants).await?;
                    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
                    changed(tx, "tenant", &ids, &origin).await?;
                }
                if !keys.is_empty() {
                    upsert_keys(tx, &keys).await?;
                    let ids: Vec<&str> = keys.iter().map(|k| k.key.id.as_str()).collect();
                    changed(tx, "key", &ids, &origin).await?;
                }
                Ok(())
            })
        })
    }
}

impl AlertMarks for PgEngine {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        let rows = self.query(
            "SELECT tenant_id, period, url, threshold, body, delivered FROM alert_marks \
             ORDER BY tenant_id, period, threshold, url",
            Vec::new(),
        )?;
        Ok(rows
            .iter()
            .map(|r| AlertMark {
                tenant: r.get(0),
                period: Period(r.get(1)),
                url: r.get(2),
                of: MarkOf::of_number(r.get::<_, i32>(3).max(0) as u32),
                body: r.get(4),
                delivered: r.get(5),
            })
            .collect())
    }

    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.insert_mark(mark, "DO UPDATE SET body = $5, delivered = $6")
            .map(|_| ())
    }

    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        Ok(self.insert_mark(mark, "DO NOTHING")? == 1)
    }

    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.pg.run(move |c| async move {
            c.execute("DELETE FROM alert_marks WHERE period < $1", &[&before.0])
                .await?;
            Ok(())
        })
    }
}

impl UsageReads for PgEngine {
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let rows = self.query(
            "SELECT tenant_id, calls, tokens FROM period_totals WHERE period = $1 \
             ORDER BY tenant_id",
            vec![Box::new(period.0)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), totals_of(r, 1))).collect())
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        let rows = self.query(
            "SELECT calls, tokens FROM period_totals WHERE period = $1 AND tenant_id = $2",
            vec![Box::new(period.0), Box::new(tenant.to_string())],
        )?;
        Ok(rows.first().map(|r| totals_of(r, 0)).unwrap_or_default())
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
        let clamp = |d: i64| d.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        // Within what a timestamptz holds (4713 BC to 294276 AD).
        let (from_ms, to_ms) = (from_ms.clamp(MIN_MS, MAX_MS), to_ms.clamp(MIN_MS, MAX_MS));
        let (first_day, last_day) = (clamp(day_of(from_ms)), clamp(day_of(to_ms - 1)));
        let mut after: (i32, i64) = (first_day, i64::MIN);
        loop {
            let rows = self.query(
                scan_page_sql(),
                vec![
                    Box::new(tenant.to_string()),
                    Box::new(after.0),
                    Box::new(after.1),
                    Box::new(last_day),
                    Box::new(from_ms),
                    Box::new(to_ms),
                    Box::new(SCAN_PAGE),
                ],
            )?;
            let n = rows.len() as i64;
            for row in &rows {
                let (at, record) = records::record(row);
                after = at;
                if !visit(&record) {
                    return Ok(());
                }
            }
            if n < SCAN_PAGE {
                return Ok(());
            }
        }
    }
}

/// One page of a tenant's records after `(day, id)`, in write order day by
/// day, within `[from_ms, to_ms)`.
fn scan_page_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM usage_records WHERE tenant_id = $1 \
         AND (day, id) > ($2, $3) AND day <= $4 \
         AND ts >= to_timestamp($5::int8 / 1000.0) AND ts < to_timestamp($6::int8 / 1000.0) \
         ORDER BY day, id LIMIT $7"
    )
}

fn totals_of(r: &Row, at: usize) -> PeriodTotals {
    PeriodTotals {
        calls: r.get::<_, i64>(at).max(0) as u64,
        tokens: r.get::<_, i64>(at + 1).max(0) as u64,
    }
}

impl UsageLog for PgEngine {
    /// Straight to the database; while it is unreachable (or writes wait
    /// in the spool already, which keeps their order), to the spool.
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let write = Arc::new(write_of(seq, blocks));
        let prepared = started.elapsed();
        let Some(spool) = &self.spool else {
            return self.deliver(&write);
        };
        if spool.is_empty() {
            match self.deliver(&write) {
                Ok(()) => {
                    tracing::debug!(
                        seq,
                        records = write.records,
                        cells = write.cells.len(),
                        prepare_us = prepared.as_micros() as u64,
                        database_us = (started.elapsed() - prepared).as_micros() as u64,
                        "usage write delivered"
                    );
                    return Ok(());
                }
                Err(e) if unreachable(&e) => {
                    tracing::warn!(error = %e, "PostgreSQL is unreachable: usage waits in the local spool");
                }
                Err(e) => return Err(e),
            }
        }
        spool.push(&write)?;
        self.spooled.store(true, Ordering::Release);
        Ok(())
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT coalesce(max(seq), 0) FROM usage_batches WHERE instance = $1",
            vec![Box::new(self.instance.clone())],
        )?;
        let stored = rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
        let waiting = match &self.spool {
            Some(s) => s.last_seq()?,
            None => 0,
        };
        Ok(stored.max(waiting))
    }

    /// Nothing: each write's cells are in its own transaction.
    fn written_since(
        &self,
        _after: u64,
        _visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError> {
        let day = day.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let dropped = self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                    .await?;
                let days: Vec<i32> = tx
                    .query("SELECT day FROM usage_days WHERE day < $1", &[&day])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for d in &days {
                    tx.batch_execute(&format!(
                        "DROP TABLE IF EXISTS {}",
                        records::partition(*d as i64)
                    ))
                    .await?;
                }
                tx.execute("DELETE FROM usage_days WHERE day < $1", &[&day])
                    .await?;
                // Housekeeping of the shared tables, with the hourly
                // retention rather than each heartbeat: instances gone for a
                // day, and catalog changes older than a week (a running
                // instance reads them within a second; one that starts
                // loads the whole catalog).
                tx.execute(
                    "DELETE FROM instances WHERE seen_at < now() - interval '1 day'",
                    &[],
                )
                .await?;
                tx.execute(
                    "DELETE FROM catalog_changes WHERE made_at < now() - interval '7 days'",
                    &[],
                )
                .await?;
                // Each instance's last write stays: it numbers the next.
                tx.execute(
                    "DELETE FROM usage_batches b WHERE written_at < to_timestamp($1::float8 * 86400) \
                     AND seq < (SELECT max(seq) FROM usage_batches l WHERE l.instance = b.instance)",
                    &[&(day as f64)],
                )
                .await?;
                Ok(days.len())
            })
        })?;
        self.days.lock().retain(|d| *d >= day as i64);
        Ok(dropped)
    }
}

impl RollupCells for PgEngine {
    fn rolls_up_on_append(&self) -> bool {
        true
    }

    fn cell(&self, key: &CellKey) -> Result<Option<StoredCell>, StoreError> {
        let (grain, owner, bucket) = key;
        let rows = self.query(
            "SELECT cell FROM rollup_cells WHERE grain = $1 AND owner = $2 AND bucket = $3",
            vec![
                Box::new(grain_id(*grain)),
                Box::new(owner_id(owner).to_string()),
                Box::new(*bucket),
            ],
        )?;
        rows.first()
            .map(|r| {
                Ok(StoredCell {
                    cell: decode(r.get::<_, &[u8]>(0))?,
                    seq: 0,
                })
            })
            .transpose()
    }

    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.cell_values(owner, span, |b| Ok(decode(b)?))
    }

    fn cell_heads(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, CellHead)>, StoreError> {
        // A stored cell begins with its head.
        self.cell_values(owner, span, |b| Ok(decode_prefix::<CellHead>(b)?))
    }

    /// Every write's cells are written with it.
    fn watermark(&self) -> Result<u64, StoreError> {
        self.last_seq()
    }

    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        _watermark: u64,
    ) -> Result<(), StoreError> {
        if cells.is_empty() {
            return Ok(());
        }
        let cells: Vec<(CellId, Cell)> = cells
            .into_iter()
            .map(|((g, o, b), c)| ((grain_id(g), owner_id(&o).to_string(), b), c.cell))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                    .await?;
                let mut bytes = Vec::with_capacity(cells.len());
                for (_, cell) in &cells {
                    bytes.push(encode_cell(cell)?);
                }
                let keys: Vec<&CellId> = cells.iter().map(|(k, _)| k).collect();
                upsert_cells(tx, &keys, &bytes).await
            })
        })
    }

    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError> {
        let before = day.saturating_mul(1440);
        let rows = self.query(
            "WITH gone AS (DELETE FROM rollup_cells WHERE grain = 0 AND bucket < $1 \
             RETURNING bucket) SELECT count(DISTINCT div(bucket, 1440)) FROM gone",
            vec![Box::new(before)],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as usize))
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
