//! Process-wide counters the health check (and later `/metrics`) report.
//!
//! Architecture Invariant: nothing here is touched on the allowed-request
//! fast path; only rare events (a full queue, a flush) write these atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Records refused by a full queue: decided and answered, never persisted.
    pub dropped_queue_full: AtomicU64,
    /// Records the store failed to write.
    pub unpersisted_store_error: AtomicU64,
    /// Records written to the store.
    pub persisted: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    /// Whether the last flush failed (cleared by the next good one).
    pub store_failing: AtomicBool,
    /// Usage records naming a model the price table lacks (costed at 0).
    pub unknown_model: AtomicU64,
}

impl Stats {
    pub fn unpersisted(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.unpersisted_store_error.load(Ordering::Relaxed)
    }
}
