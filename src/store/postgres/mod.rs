//! The PostgreSQL engine's room: one database shared by any number of
//! Tollgate instances. Nothing outside it knows PostgreSQL.
//!
//! - `client.rs`: [`client::Pg`], a pool of `tokio-postgres` connections on
//!   a runtime of the engine's own, callable from any thread;
//! - `schema.rs`: the versioned migrations, applied on start;
//! - `engine.rs`: [`PgEngine`], every storage concern (each usage write
//!   one transaction: records by binary `COPY`, totals and rollup cells);
//! - `records.rs`: the records' `COPY` encoding, day partitions and reads;
//! - `shared.rs`: [`Shared`](crate::store::shared::Shared) - other
//!   instances' catalog writes, notices, the heartbeat.
//!
//! [`PgStore`] is the [`Store`](crate::store::Store) over it.

mod client;
mod engine;
#[cfg(test)]
#[path = "../../../tests/common/postgres.rs"]
pub(crate) mod harness;
mod records;
mod schema;
mod shared;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use engine::PgEngine;
pub use schema::SCHEMA_VERSION;

use super::ledger::Direct;
use super::{Ledger, StoreError};

pub type PgStore = Ledger<Direct<PgEngine>>;

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
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
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
    let engine = Arc::new(PgEngine::new(Arc::new(pg), options.instance.clone()));
    let store = Ledger::new(Direct(engine.clone()))?;
    Ok((store, engine))
}
