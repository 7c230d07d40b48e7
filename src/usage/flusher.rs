//! [`UsageFlusher`]: the thread that moves queued records into the store.
//!
//! Every flush interval - at once when a full batch is already waiting - it
//! drains the queue and writes what it found in one
//! store write per batch ([`group`], then [`write_blocks`]: plain functions,
//! so that a failing store can be tested). A batch the store fails to take
//! (a full disk, a store being reopened) is kept and written again on the
//! next interval, before anything else is drained: records wait, the queue
//! fills, and ingestion answers 503 rather than taking what cannot be kept. Every checkpoint interval it has the store write
//! the rollups; once an hour it applies retention. Stopping drains the queue
//! to the last record, writes it, checkpoints and joins the thread; dropping
//! the flusher does the same.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::{queue::QueueReceiver, retention, Queued};
use crate::clock::Clock;
use crate::quota::TenantState;
use crate::store::{Retirement, Store, StoreError, UsageBlock};
use crate::telemetry::stats::Stats;

/// At most this many records go into one store write.
const MAX_BATCH: usize = 100_000;
/// Records' room the batch buffer keeps between flushes.
const KEEP_BATCH: usize = 8_192;

/// When the flusher does what.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlushSchedule {
    /// Records are written every `interval`.
    pub interval: Duration,
    /// Rollups are checkpointed every `checkpoint`.
    pub checkpoint: Duration,
    /// Raw records are kept this many days.
    pub raw_days: u32,
    /// How long a stop waits for the flusher thread: a store that hangs
    /// (sled on a full disk) must not hang the stop.
    pub(crate) stop_timeout: Duration,
}

/// Sees every batch before it is written (the threshold webhooks watch
/// usage this way, off the request path).
pub(crate) type BatchHook = Box<dyn FnMut(&[Queued]) + Send>;

const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often free heap pages go back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct UsageFlusher {
    stop: Option<Sender<()>>,
    /// Signalled when the thread has written everything and flushed.
    done: Receiver<()>,
    stop_timeout: Duration,
    handle: Option<JoinHandle<()>>,
}

impl UsageFlusher {
    pub(crate) fn start(
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
                let mut held: Option<Held> = None;
                let mut last_checkpoint = Instant::now();
                // On the clock's time, not the process's: a day-tree expires by
                // the clock (and the fast-clock soak runs days in minutes).
                let mut last_retention: Option<chrono::DateTime<chrono::Utc>> = None;
                let mut last_trim = Instant::now();
                loop {
                    // The interval gathers a trickle into one write; a queue
                    // already holding a full batch is written at once, and
                    // reported usage filling its lane past one wakes the
                    // sleep, so under load the flusher does not sleep while
                    // ingestion waits for room.
                    let busy = held.is_none() && rx.full_batch_waiting();
                    let wait = if busy {
                        Duration::ZERO
                    } else {
                        schedule.interval
                    };
                    let stopping = rx.wait_or_stop(&stop_rx, wait);
                    // A batch the store could not take waits here and is
                    // tried again first; meanwhile the queue is not drained, so
                    // it fills up and ingestion answers 503 (back-pressure)
                    // instead of taking records the store cannot keep.
                    if let Some(h) = held.take() {
                        held = stats.store_call(|| retry(store.as_ref(), h, &stats));
                    }
                    // What is waiting now is written; what requests add
                    // meanwhile waits for the next interval (or the busy
                    // check above), so that a steady stream of decisions
                    // is written in one write per interval, not in as many
                    // small writes as the store can take (each is a
                    // transaction and a flush: sled then wrote ~1.5 KB per
                    // record of ~0.1 KB). Reported usage waiting means
                    // clients may be waiting for room: that is written at
                    // once, as is the rest after a full batch, and a stop
                    // drains everything.
                    // Everything queued before this moment is written once
                    // the loop empties the queue without a failed write:
                    // what a kill -9 can lose is what came after
                    // (`tollgate_persist_lag_milliseconds`).
                    // (Wall clock: the lag is about this process's real
                    // time, whatever clock decides periods.)
                    let gathered_at = crate::telemetry::stats::wall_ms();
                    let mut emptied = false;
                    while held.is_none() {
                        let drained = rx.drain_into(&mut buf, MAX_BATCH);
                        if drained == 0 {
                            emptied = true;
                            break;
                        }
                        if let Some(hook) = hook.as_mut() {
                            hook(&buf);
                        }
                        let blocks = group(&mut buf);
                        held = stats.store_call(|| write_blocks(store.as_ref(), blocks, &stats));
                        if drained < MAX_BATCH && !stopping && !rx.reported_waiting() {
                            emptied = true;
                            break;
                        }
                    }
                    if emptied && held.is_none() {
                        stats
                            .persisted_through_ms
                            .fetch_max(gathered_at, Ordering::Relaxed);
                    }
                    // A burst grows the batch buffer up to MAX_BATCH records
                    // (~25 MB); give that back once it is written.
                    if buf.capacity() > KEEP_BATCH {
                        buf.shrink_to(KEEP_BATCH);
                    }
                    if stopping {
                        if let Some(h) = held.take() {
                            // One last try: a write made but not flushed
                            // may have reached the disk after all.
                            if let Some(h) = stats.store_call(|| retry(store.as_ref(), h, &stats)) {
                                give_up(&h.blocks, &stats);
                            }
                            let mut rest = 0;
                            while rx.drain_into(&mut buf, MAX_BATCH) > 0 {
                                rest += buf.len() as u64;
                                buf.clear();
                            }
                            stats
                                .unpersisted_store_error
                                .fetch_add(rest, Ordering::Relaxed);
                            tracing::error!(
                                records = rest,
                                "stopping while the store fails: queued records are lost"
                            );
                        }
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
    pub(crate) fn shutdown(&mut self) {
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

/// One block per tenant: the batch's records grouped by tenant id (never
/// by the tenant's allocation: a tenant deleted and re-created within one
/// flush would otherwise get two blocks whose chunk keys collide). Records
/// of a deleted tenant are left out; the block carries the tenant's state
/// as its `retired` so that the store, under its write lock, writes nothing
/// of a tenant deleted since.
///
/// Two passes: the first counts each block's records, so that the second
/// moves every record once into a vector of its final size (no growth, no
/// copies of the copies). Consecutive records of one tenant (an ingested
/// batch is one run) are found in the table once per run.
pub(crate) fn group(batch: &mut Vec<Queued>) -> Vec<UsageBlock> {
    let mut at: HashMap<Arc<str>, usize> = HashMap::new();
    let mut blocks: Vec<UsageBlock> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for run in batch.chunk_by(|a, b| Arc::ptr_eq(&a.tenant, &b.tenant)) {
        let t = &run[0].tenant;
        if t.is_retired() {
            continue;
        }
        let i = *at.entry(t.id.clone()).or_insert_with(|| {
            blocks.push(UsageBlock {
                tenant: t.id.to_string(),
                records: Vec::new(),
                retired: Some(t.clone()),
            });
            counts.push(0);
            blocks.len() - 1
        });
        counts[i] += run.len();
    }
    for (block, n) in blocks.iter_mut().zip(counts) {
        block.records.reserve_exact(n);
    }
    let mut last: Option<(Arc<TenantState>, usize)> = None;
    for q in batch.drain(..) {
        if q.tenant.is_retired() {
            continue;
        }
        let i = match &last {
            Some((t, i)) if Arc::ptr_eq(t, &q.tenant) => *i,
            _ => {
                // Every tenant not retired (retiring is final) was counted.
                let Some(&i) = at.get(&q.tenant.id) else {
                    continue;
                };
                last = Some((q.tenant.clone(), i));
                i
            }
        };
        blocks[i].records.push(q.record);
    }
    blocks.retain(|b| !b.records.is_empty());
    blocks
}

/// A block holds its tenant's state to tell the store whether the tenant
/// was deleted since.
impl Retirement for TenantState {
    fn is_retired(&self) -> bool {
        TenantState::is_retired(self)
    }
}

/// A batch the store did not take, kept to be tried again.
pub(crate) struct Held {
    pub blocks: Vec<UsageBlock>,
    /// The number of the write that was made of it, when only making it
    /// durable failed: a retry asks whether that write survived before
    /// writing anything again (which could count the records twice).
    pub made: Option<u64>,
    /// Blocks not tried yet, written once `blocks` is settled (what was
    /// left of a batch being split to set rejected records apart).
    pub after: Vec<UsageBlock>,
}

/// Tries a held batch again: if a write was made of it, whether it
/// survived first; else (or if it did not) the blocks again.
pub(crate) fn retry(store: &dyn Store, held: Held, stats: &Stats) -> Option<Held> {
    let Held {
        blocks,
        made,
        after,
    } = held;
    let still = match made {
        None => write_blocks(store, blocks, stats),
        Some(seq) => match store.written(seq) {
            Ok(true) => {
                let n = records(&blocks);
                stats.persisted.fetch_add(n as u64, Ordering::Relaxed);
                stats.store_result(None);
                tracing::info!(
                    write = seq,
                    records = n,
                    "a write whose flush failed survived; not written again"
                );
                None
            }
            Ok(false) => {
                tracing::warn!(
                    write = seq,
                    "a write whose flush failed was lost with the store; writing it again"
                );
                write_blocks(store, blocks, stats)
            }
            Err(e) => {
                stats.store_result(Some(e.to_string()));
                Some(Held {
                    blocks,
                    made,
                    after: Vec::new(),
                })
            }
        },
    };
    match still {
        Some(mut h) => {
            h.after.extend(after);
            Some(h)
        }
        None if after.is_empty() => None,
        None => write_blocks(store, after, stats),
    }
}

/// Writes `blocks` in one store write. On success, or on an error retrying
/// cannot fix, returns `None` (the records are persisted, or counted as
/// unpersisted); on a retryable error, the blocks back, to be tried again.
pub(crate) fn write_blocks(
    store: &dyn Store,
    blocks: Vec<UsageBlock>,
    stats: &Stats,
) -> Option<Held> {
    let n = records(&blocks);
    if n == 0 {
        return None;
    }
    let start = std::time::Instant::now();
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    let written = store.write_usage(&blocks);
    stats
        .flush_duration
        .lock()
        .observe(start.elapsed().as_secs_f64());
    match written {
        Ok(_) => {
            stats.persisted.fetch_add(n as u64, Ordering::Relaxed);
            stats.store_result(None);
            tracing::trace!(
                records = n,
                took_ms = start.elapsed().as_millis() as u64,
                "flushed"
            );
            None
        }
        Err(e) => {
            stats.flush_errors.fetch_add(1, Ordering::Relaxed);
            stats.store_result(Some(e.to_string()));
            if e.retryable() {
                tracing::error!(error = %e, records = n, "usage write failed; the batch is kept and retried");
                let made = match e {
                    StoreError::NotDurable { seq, .. } => Some(seq),
                    _ => None,
                };
                Some(Held {
                    blocks,
                    made,
                    after: Vec::new(),
                })
            } else if e.rejects_data() && n > 1 {
                // The store refused something in the batch: halves are
                // written apart until the records it refuses are alone,
                // so that one tenant's bad record never holds back (or
                // takes down) the others'.
                let (first, second) = halves(blocks);
                match write_blocks(store, first, stats) {
                    Some(mut h) => {
                        h.after.extend(second);
                        Some(h)
                    }
                    None => write_blocks(store, second, stats),
                }
            } else if e.rejects_data() {
                let tenant = blocks.first().map_or("", |b| b.tenant.as_str());
                tracing::error!(
                    error = %e,
                    tenant,
                    "the store refused a usage record; it is set apart (not written) and counted"
                );
                stats.rejected_by_store.fetch_add(1, Ordering::Relaxed);
                give_up(&blocks, stats);
                None
            } else {
                tracing::error!(error = %e, records = n, "usage write failed for good; records counted as unpersisted");
                give_up(&blocks, stats);
                None
            }
        }
    }
}

/// `blocks` cut in two with about half of the records in each (a block
/// cut in its middle where the middle falls in it).
fn halves(mut blocks: Vec<UsageBlock>) -> (Vec<UsageBlock>, Vec<UsageBlock>) {
    let mut left = records(&blocks) / 2;
    let mut at = 0;
    while at < blocks.len() && blocks[at].records.len() <= left {
        left -= blocks[at].records.len();
        at += 1;
    }
    let mut second = blocks.split_off(at);
    if left > 0 {
        if let Some(cut) = second.first_mut() {
            blocks.push(UsageBlock {
                tenant: cut.tenant.clone(),
                records: cut.records.drain(..left).collect(),
                retired: cut.retired.clone(),
            });
        }
    }
    (blocks, second)
}

/// How many records `blocks` hold.
fn records(blocks: &[UsageBlock]) -> usize {
    blocks.iter().map(|b| b.records.len()).sum()
}

/// Counts `blocks` as never persisted.
fn give_up(blocks: &[UsageBlock], stats: &Stats) {
    let n = records(blocks);
    stats
        .unpersisted_store_error
        .fetch_add(n as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Plan, UsageRecord};
    use crate::quota::period::Period;
    use crate::quota::{ActivePlan, TenantState};
    use crate::usage::queue::FULL_BATCH;

    /// Issue 36, item 8: a batch the store refuses as data was kept and
    /// retried forever, holding back every tenant's records behind it. Now
    /// it is split until the refused records are alone: they are set apart
    /// and counted, every other record is written.
    #[test]
    fn a_refused_record_is_set_apart_and_the_rest_of_its_batch_written() {
        use crate::store::memory::{MemoryEngine, MemoryStore};
        use crate::store::UsageReads;
        let engine = Arc::new(MemoryEngine::default());
        engine.refuse(|r| r.endpoint == "/poison");
        let store = MemoryStore::over(engine);
        let stats = Stats::default();
        let blocks: Vec<UsageBlock> = ["a", "b", "c"]
            .iter()
            .map(|t| UsageBlock {
                tenant: t.to_string(),
                records: (0..40)
                    .map(|i| UsageRecord {
                        ts_ms: 1_000,
                        endpoint: if *t == "b" && (i == 7 || i == 30) {
                            "/poison".into()
                        } else {
                            "/ok".into()
                        },
                        calls: 1,
                        ..Default::default()
                    })
                    .collect(),
                retired: None,
            })
            .collect();
        assert!(
            write_blocks(&store, blocks, &stats).is_none(),
            "nothing held"
        );
        let stored = |t: &str| {
            let mut n = 0;
            store
                .scan_usage(t, 0, i64::MAX, &mut |r| {
                    assert_eq!(r.endpoint, "/ok");
                    n += 1;
                    true
                })
                .unwrap();
            n
        };
        assert_eq!((stored("a"), stored("b"), stored("c")), (40, 38, 40));
        assert_eq!(stats.rejected_by_store.load(Ordering::Relaxed), 2);
        assert_eq!(stats.unpersisted_store_error.load(Ordering::Relaxed), 2);
        assert_eq!(stats.persisted.load(Ordering::Relaxed), 118);
    }

    #[test]
    fn halves_cut_blocks_at_the_middle_record() {
        let block = |t: &str, n: usize| UsageBlock {
            tenant: t.into(),
            records: vec![UsageRecord::default(); n],
            retired: None,
        };
        let (a, b) = halves(vec![block("x", 3), block("y", 4)]);
        let sizes = |v: &[UsageBlock]| {
            v.iter()
                .map(|b| (b.tenant.clone(), b.records.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(&a), [("x".into(), 3)]);
        assert_eq!(sizes(&b), [("y".into(), 4)]);
        let (a, b) = halves(vec![block("x", 5)]);
        assert_eq!(
            (sizes(&a), sizes(&b)),
            (vec![("x".into(), 2)], vec![("x".into(), 3)])
        );
    }

    fn state(id: &str) -> Arc<TenantState> {
        let plan = ActivePlan::new(Plan::unlimited("p"));
        Arc::new(TenantState::new(id, plan, false, Period(0)))
    }

    fn queued(t: &Arc<TenantState>, ts_ms: i64) -> Queued {
        Queued {
            tenant: t.clone(),
            record: UsageRecord {
                ts_ms,
                ..Default::default()
            },
        }
    }

    /// A flusher over a sled store in `dir`, with a queue of `capacity`
    /// that `preload` fills before it starts; each write's record count
    /// comes out of the receiver.
    fn flusher_over_sled(
        dir: &std::path::Path,
        interval: Duration,
        capacity: usize,
        preload: impl FnOnce(&crate::usage::queue::UsageQueue),
    ) -> (
        crate::usage::queue::UsageQueue,
        UsageFlusher,
        std::sync::mpsc::Receiver<usize>,
    ) {
        let store: Arc<dyn Store> = Arc::new(
            crate::store::SledStore::open_with(dir, crate::store::SledOptions::new(100, 1 << 24))
                .unwrap(),
        );
        let stats = Arc::new(Stats::default());
        let (queue, rx) = crate::usage::queue::usage_queue(capacity, stats.clone());
        preload(&queue);
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<usize>();
        let hook: BatchHook = Box::new(move |b: &[Queued]| {
            let _ = seen_tx.send(b.len());
        });
        let schedule = FlushSchedule {
            interval,
            checkpoint: Duration::from_secs(3600),
            raw_days: 30,
            stop_timeout: Duration::from_secs(30),
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let flusher = UsageFlusher::start(rx, store, schedule, clock, stats, Some(hook)).unwrap();
        (queue, flusher, seen_rx)
    }

    /// A queue holding a full batch is written at once, not after the
    /// interval: under load the flusher does not sleep while ingestion is
    /// refused for want of room. A trickle still waits for the interval.
    #[test]
    fn a_full_batch_is_written_without_waiting_for_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        // Two full batches wait when the flusher starts: it does not run
        // the 5 s interval out first.
        let t = state("t");
        let now = chrono::Utc::now().timestamp_millis();
        let start = Instant::now();
        let (queue, flusher, seen_rx) =
            flusher_over_sled(dir.path(), Duration::from_secs(5), 4 * FULL_BATCH, |q| {
                for _ in 0..2 * FULL_BATCH {
                    assert!(q.enqueue(queued(&t, now)));
                }
            });
        let mut taken = 0;
        while taken < 2 * FULL_BATCH {
            taken += seen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        // A trickle after that waits for the interval.
        std::thread::sleep(Duration::from_millis(500));
        assert!(queue.enqueue(queued(&t, now)));
        let early = seen_rx.recv_timeout(Duration::from_secs(2));
        assert!(early.is_err(), "{early:?} after {:?}", start.elapsed());
        assert_eq!(seen_rx.recv_timeout(Duration::from_secs(10)), Ok(1));
        drop(flusher);
    }

    /// Regression (issue 19): the drain went on while anything was
    /// waiting, so a steady stream of decisions was written in as many
    /// small writes as the store could take (hundreds a second, each a
    /// transaction and a flush). Now it is one write per interval.
    #[test]
    fn a_steady_stream_of_decisions_is_written_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, flusher, seen) =
            flusher_over_sled(dir.path(), Duration::from_millis(250), 1 << 17, |_| {});
        let t = state("t");
        let now = chrono::Utc::now().timestamp_millis();
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < Duration::from_millis(1500) {
            assert!(queue.enqueue(queued(&t, now)));
            sent += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        drop(flusher);
        let writes: Vec<usize> = seen.try_iter().collect();
        assert_eq!(writes.iter().sum::<usize>(), sent, "every record written");
        // 1.5 s of 250 ms intervals, and the stop's last write.
        assert!(
            writes.len() <= 9,
            "{} writes for {sent} records, the first {:?}",
            writes.len(),
            &writes[..writes.len().min(12)]
        );
    }

    /// Reported usage filling its lane past a full batch wakes the
    /// flusher before its interval: clients waiting for room are not
    /// kept waiting for it.
    #[test]
    fn reported_usage_past_a_full_batch_is_written_before_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, flusher, seen) =
            flusher_over_sled(dir.path(), Duration::from_secs(5), 1 << 17, |_| {});
        let t = state("t");
        let now = chrono::Utc::now().timestamp_millis();
        // The flusher has started its first 5 s sleep.
        std::thread::sleep(Duration::from_millis(200));
        let n = FULL_BATCH;
        let start = Instant::now();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                let admission = queue
                    .admit_by(n, tokio::time::Instant::now())
                    .await
                    .unwrap();
                assert!(admission.send((0..n).map(|_| queued(&t, now)).collect()));
            });
        let mut taken = 0;
        while taken < n {
            taken += seen.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        drop(flusher);
    }

    /// Regression (seams review, hostile tenant finding 6): a batch was
    /// grouped by the tenant's allocation, so a tenant deleted and
    /// re-created within one flush got two blocks whose chunk keys collide
    /// (the second overwrote the first's records while the totals counted
    /// both). Now one block per id, and the deleted one's records are gone.
    #[test]
    fn a_batch_is_grouped_by_tenant_id_without_retired_tenants() {
        let (old, new, other) = (state("t"), state("t"), state("u"));
        old.retire();
        let mut batch = vec![
            queued(&old, 1),
            queued(&new, 2),
            queued(&other, 3),
            queued(&old, 4),
            queued(&new, 5),
        ];
        let mut blocks = group(&mut batch);
        blocks.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        assert!(batch.is_empty());
        assert_eq!(blocks.len(), 2);
        let ts: Vec<i64> = blocks[0].records.iter().map(|r| r.ts_ms).collect();
        assert_eq!((blocks[0].tenant.as_str(), ts), ("t", vec![2, 5]));
        assert!(!blocks[0].is_retired());
        new.retire();
        assert!(
            blocks[0].is_retired(),
            "the block follows its tenant's flag"
        );
    }
}
