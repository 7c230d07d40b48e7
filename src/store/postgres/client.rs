//! [`Pg`]: the engine's way to PostgreSQL - a pool of `tokio-postgres`
//! connections on a small runtime of its own, reached from any thread.
//!
//! The storage traits are synchronous and are called from the flusher
//! thread, start-up, and actix's workers (which run a runtime of their
//! own, where blocking on another runtime would panic). So a call is
//! spawned on the engine's runtime and its result waited for on a channel:
//! the same from every thread, and bounded by the call timeout.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::store::{Failure, StoreError};

pub(super) const ENGINE: &str = "postgres";

/// A pooled connection.
pub(super) type Conn = Object;

pub struct Pg {
    runtime: tokio::runtime::Runtime,
    pool: Pool,
    config: tokio_postgres::Config,
    /// The longest one call may take, connecting included.
    timeout: Duration,
}

/// Why a call failed, as the engine tells it to the rest of Tollgate.
pub(super) fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::engine(ENGINE, Failure::Transient, e.to_string())
}

/// The database could not be reached (no connection, a lost one, a
/// timeout, a server shutting down), as opposed to refusing what was asked.
pub(super) fn unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Engine { source, .. } => {
            source
                .downcast_ref::<PgError>()
                .is_some_and(|PgError(e)| match e.code() {
                    // Connection exceptions and operator intervention (a shutdown).
                    Some(code) => ["08", "57"]
                        .iter()
                        .any(|class| code.code().starts_with(class)),
                    None => e.as_db_error().is_none(),
                })
        }
        _ => false,
    }
}

impl Pg {
    /// A pool of up to `size` connections to `url` (nothing connects yet).
    pub fn new(url: &str, size: usize, timeout: Duration) -> Result<Pg, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!("[store] postgres_url is not a PostgreSQL URL: {e}"))
        })?;
        let mut config = config;
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        config.connect_timeout(timeout.min(Duration::from_secs(5)));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tollgate-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the postgres runtime: {e}"))
            })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(timeout))
                .wait_timeout(Some(timeout))
                .build()
                .map_err(failed)?
        };
        Ok(Pg {
            runtime,
            pool,
            config,
            timeout,
        })
    }

    /// Runs `f` on a pooled connection, on the engine's runtime, and waits
    /// for its result (at most the call timeout).
    pub fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let pool = self.pool.clone();
        self.block(async move {
            let conn = pool.get().await.map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}"))
            })?;
            f(conn).await
        })
    }

    /// Runs a future on the engine's runtime and waits for it.
    pub fn block<T, Fut>(&self, fut: Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout = self.timeout;
        self.runtime.spawn(async move {
            let result = match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the postgres runtime stopped".into(),
            ))
        })
    }

    /// The connection settings (the change listener opens its own).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// A driver error that says what went wrong: the driver's own text is
/// "db error" for everything the server reported, which is all that
/// `/healthz` and the logs said during an outage.
#[derive(Debug)]
pub(super) struct PgError(pub tokio_postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(
                f,
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            ),
            None => {
                write!(f, "{}", self.0)?;
                let mut cause = std::error::Error::source(&self.0);
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// A data exception (SQLSTATE class 22: a value out of range, a byte
    /// the encoding refuses) or an integrity violation (23) is about what
    /// was sent: the same call fails again, so it is `Rejected`, never
    /// retried as it is. Anything else may pass later.
    fn from(e: tokio_postgres::Error) -> StoreError {
        let rejected = e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
        let failure = if rejected {
            Failure::Rejected
        } else {
            Failure::Transient
        };
        StoreError::engine(ENGINE, failure, PgError(e))
    }
}
