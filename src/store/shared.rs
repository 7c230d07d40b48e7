//! [`Shared`]: what an engine that several instances share tells each of
//! them about the others - the catalog writes they made, and who is live.
//! The registry follows the first (`registry/follow.rs`); `/healthz` and the
//! start-up log say the second.

use std::time::Duration;

use super::StoreError;
use crate::model::{Plan, StoredKey, Tenant};

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

    /// Usage records waiting locally for the shared engine, and why it
    /// cannot be reached (`None` while it can).
    fn backlog(&self) -> (u64, Option<String>);
}
