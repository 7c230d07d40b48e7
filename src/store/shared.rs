//! [`Shared`]: what an engine that several instances share tells each of
//! them about the others - the catalog writes they made, and who is live.
//! The registry follows the first (`registry/follow.rs`); `/healthz` and the
//! start-up log say the second.

use std::time::Duration;

use super::{PeriodTotals, StoreError};
use crate::model::{Plan, StoredKey, Tenant};
use crate::quota::period::Period;

/// A catalog entry another instance wrote, as it stands now (`None`: gone).
#[derive(Clone, Debug, PartialEq)]
pub enum Changed {
    Plan(String, Option<Plan>),
    Tenant(String, Option<Tenant>),
    Key(String, Option<StoredKey>),
}

pub trait Shared: Send + Sync {
    /// The number of the latest catalog write (0 for none).
    fn catalog_version(&self) -> Result<u64, StoreError>;

    /// The catalog writes other instances made after version `after`, in
    /// order, and the version they reach (at most `limit` of them).
    fn catalog_changes(&self, after: u64, limit: usize) -> Result<(u64, Vec<Changed>), StoreError>;

    /// Waits at most `timeout` for notice of a catalog write; whether one
    /// came. (A notice can be missed: callers also poll.)
    fn wait_for_changes(&self, timeout: Duration) -> bool;

    /// Says this instance is live; returns how many are (seen within `live`).
    fn heartbeat(&self, live: Duration) -> Result<usize, StoreError>;

    /// Says this instance has stopped.
    fn leave(&self) -> Result<(), StoreError>;

    /// Names the process whose usage writes follow (the cluster's member
    /// name: the instance and a number of this process): the calls and
    /// tokens they add are also counted under that name, in the same
    /// transaction ([`Shares::by_process`]). Unnamed, they are not.
    fn set_process(&self, process: &str);

    /// One tenant's persisted totals of `period`, each process's part of
    /// them, and whether a shared allocation of `measure` (`calls`,
    /// `tokens`) was ever made for it - read together, as of one moment.
    fn shares(&self, tenant: &str, period: Period, measure: &str) -> Result<Shares, StoreError>;

    /// The persisted totals of `period` of each of `tenants` that has any.
    fn persisted(
        &self,
        period: Period,
        tenants: &[String],
    ) -> Result<Vec<(String, PeriodTotals)>, StoreError>;

    /// Writes ahead, for this process (`set_process`), the most each of
    /// `rows`' tenants may have been granted of `measure` in `period` and
    /// what it has given back: `(tenant, granted, given)`, each only ever
    /// raised. Written before the units are asked for, so that a rebuild
    /// after Redis lost its data counts a process that never joins it (it
    /// was killed) by what it could have spent ([`Shares::grants`]).
    fn write_grants(
        &self,
        period: Period,
        measure: &str,
        rows: &[(String, u64, u64)],
    ) -> Result<(), StoreError>;

    /// Records that a shared allocation of `measure` of `tenant`'s `period`
    /// is being made (before anything of it is granted): a later rebuild
    /// knows that one existed, so Redis lost it.
    fn mark_made(&self, tenant: &str, period: Period, measure: &str) -> Result<(), StoreError>;

    /// Usage records waiting locally for the shared engine, why it cannot
    /// be reached (`None` while it can), and the records of waiting writes
    /// it refused as data (set apart so that the rest could go).
    fn backlog(&self) -> Backlog;
}

/// What waits locally for the shared engine ([`Shared::backlog`]).
#[derive(Clone, Debug, Default)]
pub struct Backlog {
    pub waiting: u64,
    pub down: Option<String>,
    pub rejected: u64,
}

/// What the shared engine holds of one tenant's period ([`Shared::shares`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shares {
    pub total: PeriodTotals,
    /// The part of `total` each named process wrote.
    pub(crate) by_process: Vec<(String, PeriodTotals)>,
    /// How long ago (ms, the engine's clock) a shared allocation of the
    /// period was first about to be made; `None`: never.
    pub(crate) made_ms_ago: Option<u64>,
    /// What each process wrote ahead of the measure asked for: the most
    /// it may have been granted, and what it gave back
    /// ([`Shared::write_grants`]).
    pub grants: Vec<(String, u64, u64)>,
}
