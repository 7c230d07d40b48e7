//! The sled engine's room. Nothing outside it knows sled.
//!
//! - `engine.rs`: [`SledEngine`], one open sled 0.34 database - its trees,
//!   layout (`keys.rs`) and rows (`rows.rs`) - and its
//!   [`Engine`](crate::store::Engine) lifecycle; one file per storage trait
//!   it implements beside it: `catalog.rs`, `alert_marks.rs`,
//!   `usage_log.rs`, `rollup_cells.rs`, `usage_reads.rs`;
//! - `upgrade.rs`: the format version and the upgrade of older data;
//! - the rows go through the one bincode codec (`store/codec.rs`);
//! - `reopen.rs`: [`Reopening`], the [`Access`](crate::store::Access) that
//!   refuses writes short of a full disk and reopens a failed database;
//! - `deadline.rs`: every sled flush on one worker thread, with a deadline.
//!
//! [`SledStore`] is the [`Store`](crate::store::Store) Tollgate runs on:
//! the engine-neutral ledger over [`Reopening`].

use super::codec;

mod alert_marks;
mod catalog;
mod check;
mod deadline;
mod engine;
mod keys;
mod reopen;
mod rollup_cells;
mod rows;
mod upgrade;
mod usage_log;
mod usage_reads;

use std::path::Path;

pub use deadline::within;
pub use engine::SledEngine;
pub use reopen::{Reopening, SledOptions};
pub(crate) use upgrade::copy_tree;
pub use upgrade::FORMAT_VERSION;

use super::{Failure, Ledger, StoreError};

pub type SledStore = Ledger<Reopening>;

impl Ledger<Reopening> {
    /// Opens (or creates) the store in `dir`: `flush_every_ms` should be
    /// the flusher's interval; `cache_bytes` bounds sled's page cache (see
    /// [`SledOptions::new`]).
    pub fn open(dir: &Path, flush_every_ms: u64, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, SledOptions::new(flush_every_ms, cache_bytes))
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(dir: &Path, options: SledOptions) -> Result<Self, StoreError> {
        Ledger::new(Reopening::open(dir, options)?)
    }
}

impl From<codec::CodecError> for StoreError {
    fn from(e: codec::CodecError) -> StoreError {
        StoreError::Codec(e.to_string())
    }
}

impl From<sled::Error> for StoreError {
    /// An I/O error, corruption or a bug: sled keeps it for good, so the
    /// instance must be replaced; anything else is transient.
    fn from(e: sled::Error) -> StoreError {
        let failure = match e {
            sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
                Failure::Broken
            }
            _ => Failure::Transient,
        };
        StoreError::engine("sled", failure, e)
    }
}

/// Whether `e` is sled's file lock held by another process (or another
/// open handle): sled wraps the lock's WouldBlock in an error of kind Other.
/// Whether a process has the store in `dir` open (sled's file lock).
pub(crate) fn in_use(dir: &Path) -> bool {
    match sled::Config::new().path(dir).open() {
        Ok(open) => {
            drop(open);
            false
        }
        Err(e) => is_lock_held(&e),
    }
}

pub(crate) fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock
            || io.to_string().contains("could not acquire lock"))
}

/// Opens with `open` again while sled's file lock is still held: its
/// background threads let go of the files a moment after the last handle
/// is dropped, so a test that reopens at once waits for that (at most 10
/// s). A restart is a new process, where the lock went with the old one.
#[cfg(test)]
pub(crate) fn wait_for_lock<T>(open: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(StoreError::InUse(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
