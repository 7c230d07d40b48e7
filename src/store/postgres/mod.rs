//! The PostgreSQL engine's room: one database shared by any number of
//! Tollgate instances. Nothing outside it knows PostgreSQL.
//!
//! - `client.rs`: [`client::Pg`], a pool of `tokio-postgres` connections on
//!   a runtime of the engine's own, callable from any thread;
//! - `schema.rs`: the versioned migrations, applied on start;
//! - `engine.rs`: [`PgEngine`] - the connection, the spool, the
//!   partitions, the batched writes - and its [`Engine`](crate::store::Engine)
//!   lifecycle; one file per storage trait it implements beside it:
//!   `catalog.rs` (and the rows plans, tenants and keys are read from),
//!   `alert_marks.rs`, `usage_log.rs` (each usage write one transaction:
//!   records by binary `COPY`, totals and rollup cells), `rollup_cells.rs`,
//!   `usage_reads.rs`;
//! - `changes.rs`: `catalog_changes` and the notice every catalog write
//!   sends; `listener.rs`: the connection that waits for those notices;
//! - `records.rs`: the records' `COPY` encoding, day partitions and reads;
//! - `spool.rs`: the local spool usage waits in while the database is down;
//! - `shared.rs`: [`Shared`](crate::store::shared::Shared) - other
//!   instances' catalog writes, notices, the heartbeat.
//!
//! [`PgStore`] is the [`Store`](crate::store::Store) over it.

mod alert_marks;
mod catalog;
mod changes;
mod client;
mod engine;
#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
pub(crate) mod harness;
mod listener;
mod records;
mod rollup_cells;
mod schema;
mod shared;
mod spool;
#[cfg(test)]
pub(crate) mod tests;
mod usage_log;
mod usage_reads;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use engine::PgEngine;
pub use schema::SCHEMA_VERSION;

use super::{ledger::Direct, Ledger, StoreError};

pub(crate) type PgStore = Ledger<Direct<PgEngine>>;

/// How the engine reaches its database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// This instance's stable name (its usage writes are numbered under it).
    pub instance: String,
    /// Connections kept open.
    pub pool_size: usize,
    /// The longest one call may take.
    pub call_timeout: Duration,
    /// Where usage waits while the database is unreachable (`None`: it
    /// does not wait; the failure reaches the flusher).
    pub spool_dir: Option<PathBuf>,
    /// The most the spool holds.
    pub spool_max_bytes: u64,
}

/// The URL without its password, for messages.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let credentials = &url[s + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..s + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Connects, migrates the schema, and opens the store; the engine comes
/// back too, for what [`Shared`](crate::store::shared::Shared) tells.
pub fn open(options: &PgOptions) -> Result<(PgStore, Arc<PgEngine>), StoreError> {
    let pg = client::Pg::new(&options.url, options.pool_size, options.call_timeout)?;
    schema::migrate(&pg)?;
    let spool = match &options.spool_dir {
        Some(dir) => Some(spool::Spool::open(dir, options.spool_max_bytes)?),
        None => None,
    };
    let engine = Arc::new(PgEngine::new(Arc::new(pg), options.instance.clone(), spool));
    // What waited in the spool (a stop while the database was down) goes
    // first: the period totals the registry loads then include it.
    match engine.drain() {
        Ok(0) => {}
        Ok(records) => tracing::info!(records, "delivered the spooled usage"),
        Err(e) => return Err(e),
    }
    let store = Ledger::new(Direct(engine.clone()))?;
    if options.spool_dir.is_some() {
        deliver_in_background(Arc::downgrade(&engine));
    }
    Ok((store, engine))
}

/// How often the spool is tried while it holds usage.
const DELIVER_EVERY: Duration = Duration::from_millis(250);

/// Delivers the spool whenever it holds usage, until the engine goes.
fn deliver_in_background(engine: Weak<PgEngine>) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-spool".into())
        .spawn(move || loop {
            std::thread::sleep(DELIVER_EVERY);
            let Some(engine) = engine.upgrade() else {
                return;
            };
            if engine.backlog().waiting == 0 {
                continue;
            }
            match engine.drain() {
                Ok(records) => tracing::info!(
                    records,
                    "PostgreSQL is back: the spooled usage is delivered"
                ),
                Err(e) => tracing::debug!(error = %e, "the spool waits"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the spool thread: spooled usage goes at the next start");
    }
}
