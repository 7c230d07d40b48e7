//! [`StoreError`]: what went wrong in a store, in words every engine shares.
//! An engine's own error travels boxed inside [`StoreError::Engine`], with
//! the one thing a caller must decide on: whether the engine itself broke.

/// What a failed engine call means for the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The call failed; the engine is fine and the same call may succeed
    /// later (a conflict, a timeout, a lost connection).
    Transient,
    /// The engine refused what was sent (a value out of its range, a
    /// constraint): it is fine, and the same call fails again, so the
    /// caller must set the offending data apart, not retry it.
    Rejected,
    /// The engine instance is no use any more (an I/O error or corruption
    /// sled keeps for good, a flush past its deadline): it must be replaced.
    Broken,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed; `source` is its own error.
    #[error("{engine}: {source}")]
    Engine {
        engine: &'static str,
        failure: Failure,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A value that does not encode or decode: retrying never helps.
    #[error("{0}")]
    Codec(String),
    #[error(
        "the data directory was written by a newer Tollgate (store format {found}); \
         this binary reads format {supported} - upgrade Tollgate or use another --data-dir"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "the database was migrated by a newer Tollgate (schema {found}); this binary knows \
         schema {supported} - upgrade Tollgate or point [store] postgres_url at another database"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    /// The data is held by another process (a second instance on one
    /// embedded store).
    #[error("{0}")]
    InUse(String),
    /// The embedded store holds less than it last knew it had (a file cut
    /// short, replaced or deleted): refused at start unless recovering.
    #[error("the store is damaged: {0}")]
    Damaged(String),
    /// Usage write `seq` was made, but making it durable failed: whether
    /// it survives is for [`Store::written`](crate::store::Store::written)
    /// to say (writing it again could count it twice).
    #[error("usage write {seq} was made but not made durable: {cause}")]
    NotDurable { seq: u64, cause: Box<StoreError> },
    #[error(
        "the disk holding the store is nearly full ({free_mb} MiB free, \
         {min_mb} MiB kept free by [store] min_free_mb); nothing was written"
    )]
    DiskFull { free_mb: u64, min_mb: u64 },
}

impl StoreError {
    /// An engine's own error.
    pub fn engine(
        engine: &'static str,
        failure: Failure,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Engine {
            engine,
            failure,
            source: source.into(),
        }
    }

    /// Whether the same write may succeed later (a full disk, a store being
    /// reopened, a stalled flush); a value that does not encode never will.
    pub fn retryable(&self) -> bool {
        match self {
            StoreError::Codec(_)
            | StoreError::NewerFormat { .. }
            | StoreError::NewerSchema { .. } => false,
            StoreError::Engine {
                failure: Failure::Rejected,
                ..
            } => false,
            StoreError::NotDurable { cause, .. } => cause.retryable(),
            _ => true,
        }
    }

    /// Whether the engine refused the data itself (a value out of range, a
    /// constraint, a value that does not encode): the same records fail
    /// again, and records without them may pass.
    pub(crate) fn rejects_data(&self) -> bool {
        matches!(
            self,
            StoreError::Codec(_)
                | StoreError::Engine {
                    failure: Failure::Rejected,
                    ..
                }
        )
    }

    /// Whether the engine instance broke and must be replaced.
    pub(crate) fn broke_the_engine(&self) -> bool {
        matches!(
            self,
            StoreError::Engine {
                failure: Failure::Broken,
                ..
            }
        )
    }
}
