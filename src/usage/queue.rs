//! [`UsageQueue`]: the bounded crossbeam channel to the flusher, split into
//! lanes so that threads enqueueing at once do not contend on one tail.
//!
//! There are at least as many lanes as CPUs (a power of two, at least 8);
//! each thread picks a lane once (round robin) and keeps it. Enqueueing is a
//! `try_send`: it never blocks and never allocates; when the lane is full the
//! record is counted as dropped and the request is still answered.
//!
//! Reported usage (`POST /api/v1/usage`) has a lane of its own, half the
//! capacity, and is taken a whole batch or nothing ([`UsageQueue::admit_by`]):
//! an admission reserves room for the whole batch (one compare-and-swap on
//! the lane's count) and hands the batch over as one message, so a record
//! acknowledged there is never dropped by the queue. A batch that finds
//! no room waits for it, up to a deadline ([`UsageQueue::admit_by`]): the
//! flusher wakes the waiters each time it drains that lane, so a client
//! under load is slowed rather than refused and re-sending at once (whose
//! re-sends would take the CPU the flusher needs to make room). That lane holds
//! memory for the batches in it, not for its capacity (the request lanes'
//! slots, taken without allocating, are allocated up front: 160 bytes
//! each, a record's rarely set fields boxed apart, 10 MiB at the default
//! capacity).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use super::{unrecorded::Unrecorded, Queued};
use crate::telemetry::slot::{slot_count, thread_slot};
use crate::telemetry::stats::Stats;

#[derive(Clone)]
pub struct UsageQueue {
    lanes: Arc<[Sender<Queued>]>,
    ingest: Arc<IngestLane>,
    stats: Arc<Stats>,
    capacity: usize,
    /// What the records a full queue dropped consumed (their decisions
    /// stand); the receiver writes it.
    unrecorded: Arc<Unrecorded>,
}

/// The lane of reported usage; see the module's notes.
struct IngestLane {
    tx: Sender<Vec<Queued>>,
    /// Records in the lane or reserved by an admission.
    queued: AtomicUsize,
    capacity: usize,
    /// Woken each time the flusher takes records from the lane.
    freed: tokio::sync::Notify,
    /// A token for the flusher, sent when a batch handed over leaves
    /// [`full_batch`](Self::full_batch) records or more in the lane: a
    /// batch worth writing at once, before the lane fills while the
    /// flusher sleeps out its interval. Bounded to one token: a handover
    /// that finds one waiting costs a failed `try_send`.
    wake: (Sender<()>, Receiver<()>),
}

impl IngestLane {
    /// Records worth a write of their own: a full batch, or a whole lane
    /// smaller than that (whose clients then wait for the interval, as a
    /// small queue is meant to make them).
    fn full_batch(&self) -> usize {
        FULL_BATCH.min(self.capacity).max(1)
    }
}

/// Records that make a write worth doing at once rather than after the
/// flush interval (a write is a transaction and a flush, whatever it holds).
pub(crate) const FULL_BATCH: usize = 8_192;

/// Room for a whole batch in the ingest lane, reserved until the batch
/// is handed over (or given back, if it is dropped unsent).
pub(crate) struct Admission<'a> {
    lane: &'a IngestLane,
    reserved: usize,
}

impl Admission<'_> {
    /// Hands the admitted batch (never more records than admitted) to the
    /// flusher, as it is: the vector travels, its records are not moved.
    /// Returns false only when the flusher is gone (the server is
    /// stopping).
    pub(crate) fn send(mut self, batch: Vec<Queued>) -> bool {
        let n = batch.len();
        debug_assert!(n <= self.reserved);
        let unused = self.reserved - n;
        self.reserved = 0;
        self.lane.queued.fetch_sub(unused, Ordering::AcqRel);
        if n == 0 {
            return true;
        }
        match self.lane.tx.send(batch) {
            Ok(()) => {
                if self.lane.queued.load(Ordering::Acquire) >= self.lane.full_batch() {
                    let _ = self.lane.wake.0.try_send(());
                }
                true
            }
            Err(_) => {
                self.lane.queued.fetch_sub(n, Ordering::AcqRel);
                false
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.lane.queued.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

/// Why a batch was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the ingest lane's capacity right now: retry shortly.
    Full,
    /// More records than the lane can ever hold at once.
    TooLarge { capacity: usize },
}

/// The flusher's end of the queue.
pub struct QueueReceiver {
    lanes: Vec<Receiver<Queued>>,
    ingest: Receiver<Vec<Queued>>,
    ingest_lane: Arc<IngestLane>,
    /// The rest of an ingest batch larger than a drain took.
    partial: Mutex<std::vec::IntoIter<Queued>>,
    unrecorded: Arc<Unrecorded>,
}

/// A queue holding at most `capacity` records: half in the per-thread lanes
/// (split evenly), half in the ingest lane.
pub fn usage_queue(capacity: usize, stats: Arc<Stats>) -> (UsageQueue, QueueReceiver) {
    let lanes = slot_count();
    let ingest_capacity = (capacity / 2).max(1);
    let per_lane = (capacity - capacity / 2).div_ceil(lanes).max(1);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..lanes).map(|_| bounded(per_lane)).unzip();
    let (ingest_tx, ingest_rx) = unbounded();
    let ingest = Arc::new(IngestLane {
        tx: ingest_tx,
        queued: AtomicUsize::new(0),
        capacity: ingest_capacity,
        freed: tokio::sync::Notify::new(),
        wake: bounded(1),
    });
    let unrecorded = Arc::new(Unrecorded::default());
    (
        UsageQueue {
            lanes: txs.into(),
            ingest: ingest.clone(),
            stats,
            capacity: per_lane * lanes + ingest_capacity,
            unrecorded: unrecorded.clone(),
        },
        QueueReceiver {
            lanes: rxs,
            ingest: ingest_rx,
            ingest_lane: ingest,
            partial: Mutex::new(Vec::new().into_iter()),
            unrecorded,
        },
    )
}

impl UsageQueue {
    /// Hands a record to the flusher. Returns false (and counts it) when the
    /// queue is full or the flusher is gone: the record is dropped from the
    /// analytics, and what its decision consumed is kept ([`Unrecorded`]).
    /// A thread uses its own lane; only when that lane is full does it try
    /// the others, so one busy thread can still use the whole capacity.
    #[inline]
    pub fn enqueue(&self, item: Queued) -> bool {
        match self.try_enqueue(item) {
            Ok(()) => true,
            Err(dropped) => {
                // The decision stands: what it consumed still reaches the
                // store's period totals.
                self.unrecorded.keep(*dropped);
                false
            }
        }
    }

    /// Like [`enqueue`](Self::enqueue), handing back the record it could
    /// not take (still counted as dropped; boxed on that cold path).
    #[inline]
    pub(crate) fn try_enqueue(&self, item: Queued) -> Result<(), Box<Queued>> {
        let lanes = self.lanes.len();
        let mask = lanes - 1; // a power of two
        let first = thread_slot() & mask;
        let mut item = match self.lanes[first].try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(item)) => item,
            Err(TrySendError::Disconnected(item)) => return self.dropped(item),
        };
        for i in 1..lanes {
            match self.lanes[(first + i) & mask].try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => item = back,
                Err(TrySendError::Disconnected(item)) => return self.dropped(item),
            }
        }
        self.dropped(item)
    }

    #[cold]
    fn dropped(&self, item: Queued) -> Result<(), Box<Queued>> {
        let total = self
            .stats
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if self.stats.note_drop() {
            tracing::warn!(
                dropped = total,
                "the usage queue is full: the store does not keep up, and records are dropped \
                 from the analytics (their calls and tokens still count); said at most every \
                 10 s"
            );
        }
        Err(Box::new(item))
    }

    /// A cheap look, without the mutex, before a batch of `n` is
    /// converted (a refusal should cost little under load): `Full` (and
    /// counted) when the lane has no room for it now. Only
    /// [`admit_by`](Self::admit_by) says there is room; a batch the lane can never
    /// hold is left for it to refuse.
    pub(crate) fn refuse_if_full(&self, n: usize) -> Result<(), Refusal> {
        if n <= self.ingest.capacity && self.room() < n {
            self.count_refusal(Refusal::Full, n);
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Free room in the ingest lane now, in records.
    pub fn room(&self) -> usize {
        let queued = self.ingest.queued.load(Ordering::Acquire);
        self.ingest.capacity.saturating_sub(queued)
    }

    /// Room for `n` reported records in the ingest lane, all or nothing.
    /// A batch that finds no room waits for the flusher to make it, until
    /// `deadline`; only then is it refused (and counted). A batch larger
    /// than the lane is refused at once.
    pub(crate) async fn admit_by(
        &self,
        n: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Admission<'_>, Refusal> {
        loop {
            match self.try_admit(n) {
                Err(Refusal::Full) if self.room_by(n, deadline).await => continue,
                got => return got.inspect_err(|r| self.count_refusal(*r, n)),
            }
        }
    }

    /// Waits until the ingest lane has room for `n` records (true) or
    /// `deadline` passes first (false). Reserves nothing: a cheap wait
    /// before a batch is parsed. A batch larger than the lane is true at
    /// once, left for [`admit_by`](Self::admit_by) to refuse.
    pub(crate) async fn room_by(&self, n: usize, deadline: tokio::time::Instant) -> bool {
        let lane = &*self.ingest;
        loop {
            // Registered before the look, so that a drain between the two
            // is not missed.
            let freed = lane.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if n > lane.capacity || self.room() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.room() >= n;
            }
        }
    }

    /// Reserves room for `n`, counting nothing.
    fn try_admit(&self, n: usize) -> Result<Admission<'_>, Refusal> {
        let lane = &*self.ingest;
        if n > lane.capacity {
            return Err(Refusal::TooLarge {
                capacity: lane.capacity,
            });
        }
        let mut queued = lane.queued.load(Ordering::Acquire);
        loop {
            if lane.capacity.saturating_sub(queued) < n {
                return Err(Refusal::Full);
            }
            match lane.queued.compare_exchange_weak(
                queued,
                queued + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => queued = now,
            }
        }
        Ok(Admission { lane, reserved: n })
    }

    /// A batch of `n` refused for want of room counts as refused records.
    fn count_refusal(&self, refusal: Refusal, n: usize) {
        if refusal == Refusal::Full {
            self.stats
                .refused_queue_full
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Records waiting for the flusher.
    pub fn depth(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum::<usize>()
            + self.ingest.queued.load(Ordering::Acquire)
    }

    /// How many records one thread's request lane holds (every lane holds
    /// as many).
    pub fn lane_capacity(&self) -> usize {
        self.lanes.first().and_then(|l| l.capacity()).unwrap_or(0)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl QueueReceiver {
    /// Records waiting, in every lane.
    pub fn waiting(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum::<usize>()
            + self.ingest_lane.queued.load(Ordering::Acquire)
    }

    /// Whether reported usage is waiting (or has room reserved).
    pub(crate) fn reported_waiting(&self) -> bool {
        self.ingest_lane.queued.load(Ordering::Acquire) > 0
    }

    /// Whether a batch worth a write of its own is waiting now.
    pub(crate) fn full_batch_waiting(&self) -> bool {
        self.waiting() >= self.ingest_lane.full_batch()
    }

    /// Sleeps up to `timeout`: less when `stop` says to stop (true) or
    /// when reported usage fills its lane past a full batch. The request
    /// lanes wake no one (a decision does not pay for a wake-up): their
    /// records wait for the interval, or for the next full batch.
    pub(crate) fn wait_or_stop(&self, stop: &Receiver<()>, timeout: std::time::Duration) -> bool {
        let wake = &self.ingest_lane.wake.1;
        let mut select = crossbeam_channel::Select::new();
        let stop_op = select.recv(stop);
        select.recv(wake);
        match select.select_timeout(timeout) {
            // A message or a sender gone: both mean stop.
            Ok(op) if op.index() == stop_op => {
                let _ = op.recv(stop);
                true
            }
            // The lane holds its own sender: this is a token.
            Ok(op) => {
                let _ = op.recv(wake);
                false
            }
            Err(_) => false,
        }
    }

    /// Moves up to `max` waiting records into `out` - first the sums of
    /// what dropped records consumed - and returns how many.
    pub fn drain_into(&self, out: &mut Vec<Queued>, max: usize) -> usize {
        let start = out.len();
        self.unrecorded.take(out);
        'lanes: for lane in &self.lanes {
            while out.len() - start < max {
                match lane.try_recv() {
                    Ok(item) => out.push(item),
                    Err(_) => continue 'lanes,
                }
            }
            break;
        }
        // Reported batches, whole where they fit; the rest of one that
        // does not waits for the next drain.
        let mut partial = self.partial.lock();
        let mut freed = false;
        loop {
            let room = max - (out.len() - start);
            if room == 0 {
                break;
            }
            if partial.len() == 0 {
                match self.ingest.try_recv() {
                    Ok(batch) => *partial = batch.into_iter(),
                    Err(_) => break,
                }
            }
            let before = out.len();
            out.extend(partial.by_ref().take(room));
            self.ingest_lane
                .queued
                .fetch_sub(out.len() - before, Ordering::AcqRel);
            freed = true;
        }
        if freed {
            self.ingest_lane.freed.notify_waiters();
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UsageRecord;
    use crate::quota::period::Period;
    use crate::quota::{ActivePlan, TenantState};
    use std::time::Duration;
    use tokio::time::Instant;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn item(t: &Arc<TenantState>) -> Queued {
        Queued {
            tenant: t.clone(),
            record: UsageRecord::default(),
        }
    }

    #[test]
    fn a_batch_is_admitted_whole_or_refused_whole() {
        let plan = ActivePlan::new(crate::model::Plan::unlimited("p"));
        let t = Arc::new(TenantState::new("t", plan, false, Period(0)));
        let stats = Arc::new(Stats::default());
        let (q, rx) = usage_queue(200, stats.clone());
        // At once: a deadline already passed.
        let admit = |n| block_on(q.admit_by(n, Instant::now()));
        // The other half is split evenly among the request lanes.
        assert_eq!(q.lane_capacity(), 100usize.div_ceil(slot_count()));
        let a = admit(60).unwrap();
        assert!(a.send((0..60).map(|_| item(&t)).collect()));
        assert_eq!(admit(41).err(), Some(Refusal::Full));
        assert_eq!(admit(101).err(), Some(Refusal::TooLarge { capacity: 100 }));
        let unsent = admit(40).unwrap();
        drop(unsent);
        assert_eq!(
            q.room(),
            40,
            "an admission dropped unsent gives its room back"
        );
        let a = admit(40).unwrap();
        assert!(a.send((0..39).map(|_| item(&t)).collect()));
        assert_eq!(q.room(), 1, "what an admission did not use is room again");
        assert_eq!(stats.refused_queue_full.load(Ordering::Relaxed), 41);
        let mut out = Vec::new();
        assert_eq!(
            rx.drain_into(&mut out, 70),
            70,
            "a batch is split at the drain's size"
        );
        assert_eq!(rx.waiting(), 29);
        assert_eq!(rx.drain_into(&mut out, 1_000), 29);
        assert_eq!(rx.waiting(), 0);
        assert!(admit(100).is_ok(), "drained room is room again");
    }

    #[test]
    fn a_batch_that_finds_no_room_waits_for_the_flusher_until_its_deadline() {
        let plan = ActivePlan::new(crate::model::Plan::unlimited("p"));
        let t = Arc::new(TenantState::new("t", plan, false, Period(0)));
        let stats = Arc::new(Stats::default());
        let (q, rx) = usage_queue(200, stats.clone());
        let a = block_on(q.admit_by(100, Instant::now())).unwrap();
        assert!(a.send((0..100).map(|_| item(&t)).collect()));
        // Nobody drains: the wait ends at its deadline, refused and counted.
        let started = std::time::Instant::now();
        let late = block_on(q.admit_by(10, Instant::now() + Duration::from_millis(150)));
        assert_eq!(late.err(), Some(Refusal::Full));
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(stats.refused_queue_full.load(Ordering::Relaxed), 10);
        // A drain during the wait wakes it, and the batch is taken.
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                let mut out = Vec::new();
                assert_eq!(rx.drain_into(&mut out, 1_000), 100);
            });
            let started = std::time::Instant::now();
            let waited = block_on(async {
                assert!(
                    q.room_by(30, Instant::now() + Duration::from_secs(10))
                        .await
                );
                q.admit_by(30, Instant::now() + Duration::from_secs(10))
                    .await
            });
            assert!(waited.is_ok(), "taken once the flusher made room");
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(90) && took < Duration::from_secs(5),
                "woken by the drain, not by the deadline: {took:?}"
            );
        });
        assert_eq!(stats.refused_queue_full.load(Ordering::Relaxed), 10);
    }
}
