//! Persistence, split by concept so that an engine writes only its own I/O.
//!
//! An engine (sled in `sled/`, the in-memory reference in `memory.rs`)
//! implements the small traits below, one per concern: the [`Catalog`] of
//! plans, tenants and key hashes, the [`AlertMarks`], the [`UsageLog`]
//! (records with their period totals, each write numbered), and the
//! [`RollupCells`]. The [`Ledger`] (`ledger/`, engine-neutral) puts them
//! together into the [`Store`] the rest of Tollgate uses: it numbers the
//! usage writes, keeps the rollup book of what the stored cells do not
//! include yet, checkpoints it, and replays the engine's journal after a
//! crash or a replaced engine. Errors are a [`StoreError`], the engine's
//! own error boxed inside.
//!
//! Architecture Invariant: nothing on the enforcement path (authorize,
//! check, the gateway's and gRPC's decisions) calls a [`Store`]; start-up,
//! admin writes (cold), the flusher thread, and reported usage that claims
//! record ids ([`Store::write_claimed`], on the blocking pool) do.

pub(crate) mod codec;
#[cfg(test)]
mod contract;
mod error;
pub(crate) mod ledger;
pub(crate) mod limit_rows;
pub(crate) mod memory;
pub mod postgres;
pub(crate) mod shared;
pub mod sled;
mod values;

pub use error::{Failure, StoreError};
pub use ledger::{Access, Ledger};
pub use sled::{within, SledOptions, SledStore};
pub use values::{
    alert_key, AlertMark, CellKey, Claims, HeldBy, MarkOf, PeriodTotals, Retirement, StoredCell,
    UsageBlock, CLAIM_DAYS,
};

use std::collections::HashMap;

use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Cell, CellHead, Owner};

/// Plans, tenants and key hashes (never a key in clear). Each write is
/// durable when it returns.
pub trait Catalog: Send + Sync {
    fn plans(&self) -> Result<Vec<Plan>, StoreError>;
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError>;
    fn delete_plan(&self, id: &str) -> Result<(), StoreError>;

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError>;
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError>;
    /// The keys of one tenant (revoked ones included). By default a scan
    /// of [`keys`](Self::keys); an engine with an index answers from it.
    fn keys_of(&self, tenant_id: &str) -> Result<Vec<StoredKey>, StoreError> {
        let mut all = self.keys()?;
        all.retain(|k| k.key.tenant_id == tenant_id);
        Ok(all)
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Writes many tenants and keys at once (bulk import).
    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError>;

    /// Keeps when keys were used: each use later than the one kept
    /// replaces it (instances sharing the store each report theirs). Not a
    /// catalog change: nothing follows it.
    fn touch_keys(&self, used: &[KeyUse]) -> Result<(), StoreError>;
    /// When each key of `tenant_id` was last used (ms), by key id.
    fn keys_last_used(&self, tenant_id: &str) -> Result<HashMap<String, i64>, StoreError>;
}

/// A key's use: its tenant and id, and when (ms since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUse {
    pub tenant: String,
    pub key_id: String,
    pub at_ms: i64,
}

/// The threshold webhooks that fired. Each write is durable when it returns.
pub trait AlertMarks: Send + Sync {
    /// Every threshold webhook that fired (delivered or not).
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError>;
    /// Records (or updates) a firing.
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError>;
    /// Records a firing unless one with its key is recorded: true when this
    /// call recorded it. Instances sharing a store fire each once this way.
    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError>;
    /// Forgets the marks of periods before `before`.
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError>;
}

/// Reported records' ids, each claimed once per tenant ([`Claims`]): an
/// engine makes the claims in the same atomic step as the records they
/// come with ([`UsageLog::append_claimed`]), so an id is held exactly when
/// its record is stored.
pub trait RecordIds: Send + Sync {
    /// For each of `ids` of `tenant`: who holds it, or `None` when free.
    fn claimed(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<HeldBy>>, StoreError>;

    /// Retention: forgets the claims made before `before_ms`; how many.
    fn drop_claims_before(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Reading usage records and period totals: what an engine's [`UsageLog`]
/// and the [`Store`] both answer.
pub trait UsageReads: Send + Sync {
    /// Every tenant's persisted totals for `period`.
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError>;

    /// One tenant's persisted totals for `period` (zero if none).
    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError>;

    /// Visits one tenant's records with `from_ms <= ts_ms < to_ms`, day by day
    /// (within a day in write order); stops early when `visit` returns false.
    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError>;
}

/// An engine's usage records and period totals. Writes are numbered by the
/// [`Ledger`], which serialises them.
pub trait UsageLog: UsageReads {
    /// Writes the blocks' records and adds their `calls` and tokens to the
    /// period totals, and journals the write as number `seq`, in one atomic
    /// step: the persisted totals always equal the sum over the persisted
    /// records, and [`written_since`](Self::written_since) gives the write
    /// back until [`RollupCells::commit_cells`] covers it. Durable only after
    /// [`Engine::durable`].
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError>;

    /// [`append`](Self::append) of one block whose records claim ids, the
    /// claims made in the same atomic step; `Ok(false)`, and nothing
    /// written, when one of the ids is held already (claimed by another
    /// instance since [`RecordIds::claimed`] was asked). Never spooled: an
    /// engine that cannot reach its database says so.
    fn append_claimed(
        &self,
        seq: u64,
        block: &UsageBlock,
        claims: &Claims,
    ) -> Result<bool, StoreError>;

    /// The number of the last write appended (0 for none).
    fn last_seq(&self) -> Result<u64, StoreError>;

    /// Visits the records of every journaled write after `after`, in write
    /// order: `(seq, tenant, records)`, possibly several calls per write.
    fn written_since(
        &self,
        after: u64,
        visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError>;

    /// Retention: drops the records of UTC days (since the epoch) before
    /// `day`. Returns how many days it dropped.
    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError>;
}

/// An engine's stored rollup cells and the watermark: the last usage write
/// they all include.
pub trait RollupCells: Send + Sync {
    /// Whether [`UsageLog::append`] writes the rollup cells of its records
    /// itself, in the same transaction (a shared engine: every instance
    /// then reads everyone's cells), so the ledger keeps no book.
    fn rolls_up_on_append(&self) -> bool {
        false
    }

    fn cell(&self, key: &CellKey) -> Result<Option<StoredCell>, StoreError>;

    /// `owner`'s cells in `span`, in bucket order.
    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError>;

    /// [`Self::cells`], totals and latencies only; an engine that can read
    /// them without decoding whole cells does.
    fn cell_heads(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, CellHead)>, StoreError> {
        Ok(self
            .cells(owner, span)?
            .iter()
            .map(|(b, c)| (*b, CellHead::of(c)))
            .collect())
    }

    fn watermark(&self) -> Result<u64, StoreError>;

    /// Writes `cells`, then moves the watermark to `watermark` and forgets
    /// the journal up to it; durable when it returns. The cells need not be
    /// written atomically: each carries the write it includes.
    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        watermark: u64,
    ) -> Result<(), StoreError>;

    /// Retention: drops the minute cells of UTC days before `day`. Returns
    /// how many days it dropped.
    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError>;
}

/// A storage engine: every concern, plus what spans them.
pub trait Engine: Catalog + AlertMarks + UsageLog + RollupCells + RecordIds {
    /// Removes everything under the tenant's id: records, totals, its own
    /// rollup cells (the all-tenants cells keep its share), alert marks,
    /// keys and the tenant itself; durable when it returns.
    fn purge_tenant(&self, id: &str) -> Result<(), StoreError>;

    /// Makes every write so far durable.
    fn durable(&self) -> Result<(), StoreError>;

    /// Bytes the engine's data takes.
    fn size_bytes(&self) -> Result<u64, StoreError>;
}

/// The store the rest of Tollgate uses (a [`Ledger`] over an engine).
pub trait Store: Catalog + AlertMarks + UsageReads + RecordIds {
    /// Purges the tenant (see [`Engine::purge_tenant`]); a usage write is
    /// wholly before the purge (and purged) or after it (and skips the
    /// tenant's blocks, retired by then: [`UsageBlock::is_retired`]).
    fn delete_tenant(&self, id: &str) -> Result<(), StoreError>;

    /// Writes the blocks (see [`UsageLog::append`]) and makes them durable;
    /// returns the write's number. Retired blocks
    /// ([`UsageBlock::is_retired`]) are left out. [`StoreError::NotDurable`]
    /// when the write was made but making it durable failed: retry with [`written`](Self::written)
    /// first, never by writing the blocks again blindly.
    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<u64, StoreError>;

    /// Whether write `seq` is in the store and durable (after a replaced
    /// engine: whether it reached the disk before the old one failed).
    /// Numbers of writes that were lost are given again, so ask before any
    /// other usage write.
    fn written(&self, seq: u64) -> Result<bool, StoreError>;

    /// Writes the records of `block` whose ids ([`Claims`]) are free, with
    /// their claims, in one write, durable with the engine's next flush
    /// (as the flusher's acknowledged records are); the others are left
    /// out. Returns, for each record, who held its id when it was left out
    /// (`None`: written). Exactly once across every instance sharing the
    /// engine: a claim and its record commit together. The block's ids
    /// must be distinct: a repeat within it is its caller's to set apart
    /// (a duplicate of the first, whatever key the batch has).
    fn write_claimed(
        &self,
        block: UsageBlock,
        claims: Claims,
    ) -> Result<Vec<Option<HeldBy>>, StoreError>;

    /// `owner`'s rollup cells in `span`, in bucket order: every persisted
    /// record counted once.
    fn rollups(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError>;

    /// [`Self::rollups`], totals and latencies only (much cheaper to read).
    fn rollup_heads(
        &self,
        owner: &Owner,
        span: Buckets,
    ) -> Result<Vec<(i64, CellHead)>, StoreError> {
        Ok(self
            .rollups(owner, span)?
            .iter()
            .map(|(b, c)| (*b, CellHead::of(c)))
            .collect())
    }

    /// Folds the rollup book into the stored cells.
    fn checkpoint(&self) -> Result<(), StoreError>;

    /// Retention: drops raw records of days before `raw_day` and minute
    /// cells of days before `minute_day` (days since the epoch). Returns
    /// how many days were dropped.
    fn expire_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError>;

    /// Makes every write so far durable, rollups included.
    fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store's data takes.
    fn size_bytes(&self) -> Result<u64, StoreError>;

    /// A consistent copy of the store, written into `to` while it serves
    /// (writes wait meanwhile; reads go on): the bytes copied. A store
    /// backed up with its engine's own tools refuses.
    fn backup(&self, to: &std::path::Path) -> Result<u64, StoreError> {
        let _ = to;
        Err(ledger::not_backed_up())
    }
}
