//! [`UsageFlusher`]: the thread that moves queued records into the store.
//!
//! Every flush interval it drains the queue and writes what it found in one
//! store write per batch ([`flush_batch`], a plain function so that a failing
//! store can be tested). Every checkpoint interval it has the store write
//! the rollups; once an hour it applies retention. Stopping drains the queue
//! to the last record, writes it, checkpoints and joins the thread; dropping
//! the flusher does the same.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::queue::QueueReceiver;
use super::retention;
use super::Queued;
use crate::clock::Clock;
use crate::stats::Stats;
use crate::store::{Store, UsageBlock};

/// At most this many records go into one store write.
const MAX_BATCH: usize = 100_000;
/// Records' room the batch buffer keeps between flushes.
const KEEP_BATCH: usize = 8_192;

/// When the flusher does what.
#[derive(Clone, Copy, Debug)]
pub struct FlushSchedule {
    /// Records are written every `interval`.
    pub interval: Duration,
    /// Rollups are checkpointed every `checkpoint`.
    pub checkpoint: Duration,
    /// Raw records are kept this many days.
    pub raw_days: u32,
    /// How long a stop waits for the flusher thread: a store that hangs
    /// (sled on a full disk) must not hang the stop.
    pub stop_timeout: Duration,
}

/// Sees every batch before it is written (the threshold webhooks watch
/// usage this way, off the request path).
pub type BatchHook = Box<dyn FnMut(&[Queued]) + Send>;

const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often free heap pages go back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(60);

pub struct UsageFlusher {
    stop: Option<Sender<()>>,
    /// Signalled when the thread has written everything and flushed.
    done: Receiver<()>,
    stop_timeout: Duration,
    handle: Option<JoinHandle<()>>,
}

impl UsageFlusher {
    pub fn start(
        rx: QueueReceiver,
        store: Arc<dyn Store>,
        schedule: FlushSchedule,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
        mut hook: Option<BatchHook>,
    ) -> std::io::Result<UsageFlusher> {
        let (stop_tx, stop_rx) = bounded::<()>(1);
        let (done_tx, done_rx) = bounded::<()>(1);
        let handle = std::thread::Builder::new()
            .name("tollgate-flusher".into())
            .spawn(move || {
                let mut buf = Vec::new();
                let mut last_checkpoint = Instant::now();
                // On the clock's time, not the process's: a day-tree expires by
                // the clock (and the fast-clock soak runs days in minutes).
                let mut last_retention: Option<chrono::DateTime<chrono::Utc>> = None;
                let mut last_trim = Instant::now();
                loop {
                    let stopping = !matches!(
                        stop_rx.recv_timeout(schedule.interval),
                        Err(RecvTimeoutError::Timeout)
                    );
                    while rx.drain_into(&mut buf, MAX_BATCH) > 0 {
                        if let Some(hook) = hook.as_mut() {
                            hook(&buf);
                        }
                        stats.store_call(|| flush_batch(store.as_ref(), &mut buf, &stats));
                    }
                    // A burst grows the batch buffer up to MAX_BATCH records
                    // (~25 MB); give that back once it is written.
                    if buf.capacity() > KEEP_BATCH {
                        buf.shrink_to(KEEP_BATCH);
                    }
                    if stopping {
                        if let Err(e) = stats.store_call(|| store.flush()) {
                            tracing::error!(error = %e, "final store flush failed");
                        }
                        let _ = done_tx.send(());
                        return;
                    }
                    if last_checkpoint.elapsed() >= schedule.checkpoint {
                        last_checkpoint = Instant::now();
                        if let Err(e) = stats.store_call(|| store.checkpoint()) {
                            tracing::error!(error = %e, "rollup checkpoint failed; will retry");
                        }
                    }
                    if last_trim.elapsed() >= TRIM_EVERY {
                        last_trim = Instant::now();
                        crate::alloc::release_free_memory();
                    }
                    let now = clock.now();
                    if last_retention.is_none_or(|t| {
                        (now - t).num_seconds().unsigned_abs() >= RETENTION_EVERY.as_secs()
                    }) {
                        last_retention = Some(now);
                        if let Err(e) = stats
                            .store_call(|| retention::apply(store.as_ref(), now, schedule.raw_days))
                        {
                            tracing::error!(error = %e, "retention failed; will retry");
                        }
                    }
                }
            })?;
        Ok(UsageFlusher {
            stop: Some(stop_tx),
            done: done_rx,
            stop_timeout: schedule.stop_timeout,
            handle: Some(handle),
        })
    }

    /// Drains what is queued, writes it, flushes the store and joins -
    /// waiting at most the stop timeout: a thread stuck in the store is
    /// left behind (and said so) rather than hanging the stop.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(handle) = self.handle.take() else {
            return;
        };
        match self.done.recv_timeout(self.stop_timeout) {
            Err(RecvTimeoutError::Timeout) => {
                tracing::error!(
                    waited_ms = self.stop_timeout.as_millis() as u64,
                    "the store did not finish the last writes in time (stuck on a full or failing disk?); \
                     records still queued are lost"
                );
            }
            _ => {
                if handle.join().is_err() {
                    tracing::error!("the flusher thread panicked");
                }
            }
        }
    }
}

impl Drop for UsageFlusher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Writes `batch` (grouped into one block per tenant) and empties it.
/// Returns how many records were persisted; a store error is logged and
/// counted as unpersisted records, never raised.
pub fn flush_batch(store: &dyn Store, batch: &mut Vec<Queued>, stats: &Stats) -> usize {
    let n = batch.len();
    if n == 0 {
        return 0;
    }
    let start = std::time::Instant::now();
    let mut by_tenant: HashMap<*const crate::quota::TenantState, UsageBlock> = HashMap::new();
    for q in batch.drain(..) {
        by_tenant
            .entry(Arc::as_ptr(&q.tenant))
            .or_insert_with(|| UsageBlock {
                tenant: q.tenant.id.to_string(),
                records: Vec::new(),
            })
            .records
            .push(q.record);
    }
    let blocks: Vec<UsageBlock> = by_tenant.into_values().collect();
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    let written = store.write_usage(&blocks);
    stats
        .flush_duration
        .lock()
        .observe(start.elapsed().as_secs_f64());
    match written {
        Ok(()) => {
            stats.persisted.fetch_add(n as u64, Ordering::Relaxed);
            stats.store_result(None);
            tracing::trace!(
                records = n,
                took_ms = start.elapsed().as_millis() as u64,
                "flushed"
            );
            n
        }
        Err(e) => {
            stats
                .unpersisted_store_error
                .fetch_add(n as u64, Ordering::Relaxed);
            stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            stats.store_result(Some(e.to_string()));
            tracing::error!(error = %e, records = n, "usage write failed; records counted as unpersisted");
            0
        }
    }
}
