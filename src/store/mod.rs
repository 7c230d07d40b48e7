//! Persistence behind a small trait, so that another engine (redb, or Redis for
//! shared counters) can replace sled without touching the rest.
//!
//! Architecture Invariant: nothing on the request path calls a [`Store`]; only
//! start-up, admin writes (cold) and the flusher thread do.

#[cfg(test)]
mod contract;

/// Opens with `open` again while sled's file lock is still held: its
/// background threads let go of the files a moment after the last handle
/// is dropped, so a test that reopens at once waits for that (at most 10
/// s). A restart is a new process, where the lock went with the old one.
#[cfg(test)]
fn wait_for_lock<T>(open: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            // sled wraps the lock's WouldBlock in an error of kind Other.
            Err(StoreError::Sled(::sled::Error::Io(e)))
                if (e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock"))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
pub mod memory;
mod rollup_book;
pub mod sled;

pub use sled::{within, SledOptions, SledStore};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Cell, Grain};

/// Calls and tokens a tenant used in one period, as persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodTotals {
    pub calls: u64,
    pub tokens: u64,
}

/// Usage records of one tenant, written together by one flush.
#[derive(Clone, Debug, Default)]
pub struct UsageBlock {
    pub tenant: String,
    pub records: Vec<UsageRecord>,
    /// Set once the tenant is deleted: a store writes no block whose flag
    /// is set, checking it under the same lock as [`Store::purge_tenant`],
    /// so a record of a deleted tenant never outlives the purge.
    pub retired: Arc<AtomicBool>,
}

impl UsageBlock {
    /// A block of a live tenant (no `retired` flag shared with anyone).
    pub fn new(tenant: impl Into<String>, records: Vec<UsageRecord>) -> UsageBlock {
        UsageBlock {
            tenant: tenant.into(),
            records,
            retired: Arc::default(),
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
}

/// A threshold webhook that fired: at most one per (tenant, period, alert
/// URL, threshold), kept so that a restart neither fires it again nor loses
/// an undelivered one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertMark {
    pub tenant: String,
    pub period: Period,
    pub url: String,
    pub threshold: u32,
    /// The JSON body, exactly as (re)sent.
    pub body: String,
    pub delivered: bool,
}

impl AlertMark {
    /// The identity of the firing; the store keys marks by it.
    pub fn key(&self) -> String {
        alert_key(&self.tenant, self.period, &self.url, self.threshold)
    }
}

pub fn alert_key(tenant: &str, period: Period, url: &str, threshold: u32) -> String {
    format!("{tenant}\u{0}{}\u{0}{threshold}\u{0}{url}", period.0)
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] ::sled::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(
        "the data directory was written by a newer Tollgate (store format {found}); \
         this binary reads format {supported} - upgrade Tollgate or use another --data-dir"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store did not flush within {ms} ms (disk full or failing?)")]
    Stalled { ms: u64 },
    #[error(
        "the disk holding the store is nearly full ({free_mb} MiB free, \
         {min_mb} MiB kept free by [store] min_free_mb); nothing was written"
    )]
    DiskFull { free_mb: u64, min_mb: u64 },
}

impl StoreError {
    /// Whether the same write may succeed later (a full disk, a store being
    /// reopened, a stalled flush); a value that does not encode never will.
    pub fn retryable(&self) -> bool {
        !matches!(self, StoreError::Codec(_) | StoreError::NewerFormat { .. })
    }
}

pub trait Store: Send + Sync {
    fn plans(&self) -> Result<Vec<Plan>, StoreError>;
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError>;
    fn delete_plan(&self, id: &str) -> Result<(), StoreError>;

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError>;
    fn delete_tenant(&self, id: &str) -> Result<(), StoreError>;

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError>;
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Writes raw records (into their UTC day's tree) and adds their `calls`
    /// and tokens to the persisted period totals, in one atomic step: the
    /// persisted totals always equal the sum over the persisted records.
    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<(), StoreError>;

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

    /// The rollup cells of `tenant` (or the all-tenants cells, tenant `""`)
    /// at `grain` with `from <= bucket < to`, in bucket order, empty ones left out.
    fn rollups(
        &self,
        tenant: &str,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Cell)>, StoreError>;

    /// Writes the rollup cells changed since the last checkpoint.
    fn checkpoint(&self) -> Result<(), StoreError>;

    /// Retention: drops raw day-trees before `raw_day` and minute-rollup
    /// day-trees before `minute_day` (days since the epoch). Returns how many.
    fn drop_days_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError>;

    /// Makes every write so far durable (rollups included).
    fn flush(&self) -> Result<(), StoreError>;

    /// Every threshold webhook that fired (delivered or not).
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError>;
    /// Records (or updates) a firing; durable when it returns.
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError>;
    /// Forgets the marks of periods before `period`.
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError>;

    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}
