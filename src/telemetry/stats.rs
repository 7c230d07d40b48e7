//! Process-wide counters the health check (and later `/metrics`) report.
//!
//! Architecture Invariant: nothing here is touched on the allowed-request
//! fast path; only rare events (a full queue, a flush) write these atomics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::telemetry::metrics::Hist;

/// Distinct unknown model names remembered for `/metrics`; the rest are
/// counted under `(other)`.
const MAX_UNKNOWN_MODELS: usize = 100;

/// How long a dropped record keeps `/healthz` degraded, and how often the
/// drops are logged.
pub(crate) const DROP_WINDOW_MS: u64 = 10_000;

/// Milliseconds since the Unix epoch, on the wall clock.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Records refused by a full queue: decided and answered, never persisted.
    pub(crate) dropped_queue_full: AtomicU64,
    /// When (ms since the epoch) a full queue last dropped a record, and
    /// when that was last logged.
    last_drop_ms: AtomicU64,
    drop_logged_ms: AtomicU64,
    /// Records the store failed to write.
    pub(crate) unpersisted_store_error: AtomicU64,
    /// Of those, records the store refused as data (set apart one by one
    /// from the batch they came in; the rest of it was written).
    pub(crate) rejected_by_store: AtomicU64,
    /// Records of spooled writes the shared database refused as data
    /// (dropped from the spool so that the writes behind them could go).
    pub(crate) spool_rejected: AtomicU64,
    /// Reported records refused with 503 (never acknowledged): the ingest
    /// lane had no room for their batch.
    pub(crate) refused_queue_full: AtomicU64,
    /// Reported records refused with 503 while the store was failing.
    pub(crate) refused_store_failing: AtomicU64,
    /// Reported records refused with 429 by the plan's ingest rate.
    pub(crate) refused_rate_limited: AtomicU64,
    /// Records written to the store.
    pub persisted: AtomicU64,
    /// Reported records left out because their id was claimed before
    /// (`POST /api/v1/usage`'s `id`s and `Idempotency-Key`): counted once.
    pub(crate) duplicates: AtomicU64,
    /// Every record queued before this moment (ms since the epoch, wall
    /// clock) is in the store or counted as unpersisted: a kill -9 can lose
    /// only what came after. 0 before the first write.
    pub(crate) persisted_through_ms: AtomicU64,
    pub flushes: AtomicU64,
    pub(crate) flush_errors: AtomicU64,
    /// Why the last flush failed (cleared by the next good one).
    store_error: Mutex<Option<String>>,
    /// Usage records naming a model the price table lacks (costed at 0),
    /// by model name.
    pub(crate) unknown_models: Mutex<HashMap<String, u64>>,
    /// How long each store write of a batch took.
    pub(crate) flush_duration: Mutex<Hist>,
    /// Threshold webhook deliveries: answered 2xx.
    pub(crate) webhooks_delivered: AtomicU64,
    /// Failed tries that will be retried.
    pub(crate) webhooks_retried: AtomicU64,
    /// Deliveries given up after their last try (retried at the next start).
    pub(crate) webhooks_failed: AtomicU64,
    /// E-mail alerts: accepted by the SMTP server, retried, given up.
    pub(crate) emails_delivered: AtomicU64,
    pub(crate) emails_retried: AtomicU64,
    pub(crate) emails_failed: AtomicU64,
    /// When the flusher's store call in flight began (ms on the process
    /// clock, at least 1); 0 when none is in flight.
    pub(crate) store_call_since: AtomicU64,
    /// A store call in flight longer than this many ms counts as a failing
    /// store (a write that never returns is a failure too).
    pub(crate) store_stall_ms: AtomicU64,
    /// Instances live on the shared database, this one included (0: the
    /// store is not shared).
    pub(crate) instances_live: AtomicU64,
    /// Usage records waiting in the local spool for the shared database.
    pub(crate) spooled_records: AtomicU64,
    /// Why the shared database cannot be reached; `None` while it can.
    pub(crate) database_down: Mutex<Option<String>>,
}

/// Milliseconds since the first call in this process.
fn process_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

impl Stats {
    /// Runs one of the flusher's store calls, so that a call that hangs is
    /// seen by [`store_failing_now`](Self::store_failing_now).
    pub(crate) fn store_call<R>(&self, call: impl FnOnce() -> R) -> R {
        self.store_call_since
            .store(process_ms().max(1), Ordering::Relaxed);
        let r = call();
        self.store_call_since.store(0, Ordering::Relaxed);
        r
    }

    /// The last write failed, or a store call has been in flight too long.
    pub(crate) fn store_failing_now(&self) -> bool {
        self.store_stalled_ms().is_some() || self.store_error.lock().is_some()
    }

    /// How long the store call in flight has taken, if longer than allowed.
    fn store_stalled_ms(&self) -> Option<u64> {
        let since = self.store_call_since.load(Ordering::Relaxed);
        let stall = self.store_stall_ms.load(Ordering::Relaxed);
        let took = process_ms().saturating_sub(since);
        (since > 0 && stall > 0 && took > stall).then_some(took)
    }

    /// Why the store is failing now (`None` when it is not).
    pub(crate) fn store_failure(&self) -> Option<String> {
        if let Some(ms) = self.store_stalled_ms() {
            return Some(format!("a store call has been running for {ms} ms"));
        }
        self.store_error.lock().clone()
    }

    /// A write succeeded (`None`) or failed with `error`.
    pub(crate) fn store_result(&self, error: Option<String>) {
        *self.store_error.lock() = error;
    }

    /// A record's model has no price.
    pub(crate) fn unknown_model(&self, model: &str) {
        let mut models = self.unknown_models.lock();
        if let Some(n) = models.get_mut(model) {
            *n += 1;
        } else if models.len() < MAX_UNKNOWN_MODELS {
            models.insert(model.to_owned(), 1);
        } else {
            *models.entry("(other)".to_owned()).or_default() += 1;
        }
    }

    /// Notes a record dropped by a full queue now; whether to log the drops
    /// (at most every [`DROP_WINDOW_MS`]).
    pub(crate) fn note_drop(&self) -> bool {
        let now = wall_ms();
        self.last_drop_ms.store(now, Ordering::Relaxed);
        let logged = self.drop_logged_ms.load(Ordering::Relaxed);
        now.saturating_sub(logged) >= DROP_WINDOW_MS
            && self
                .drop_logged_ms
                .compare_exchange(logged, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether a full queue dropped a record within the last
    /// [`DROP_WINDOW_MS`] (`/healthz` is then `degraded`).
    pub fn dropping(&self) -> bool {
        let last = self.last_drop_ms.load(Ordering::Relaxed);
        last > 0 && wall_ms().saturating_sub(last) < DROP_WINDOW_MS
    }

    /// How far (ms) the store is behind what was acknowledged: a kill -9
    /// now loses at most what was queued in this last stretch. `None`
    /// before the first write.
    pub fn persist_lag_ms(&self) -> Option<u64> {
        let through = self.persisted_through_ms.load(Ordering::Relaxed);
        (through > 0).then(|| wall_ms().saturating_sub(through))
    }

    pub fn unpersisted(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.unpersisted_store_error.load(Ordering::Relaxed)
    }
}
