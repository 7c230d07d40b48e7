//! [`UsageQueue`]: the bounded crossbeam channel to the flusher, split into
//! lanes so that threads enqueueing at once do not contend on one tail.
//!
//! There are at least as many lanes as CPUs (a power of two, at least 8);
//! each thread picks a lane once (round robin) and keeps it. Enqueueing is a
//! `try_send`: it never blocks and never allocates; when the lane is full the
//! record is counted as dropped and the request is still answered.
//!
//! Reported usage (`POST /api/v1/usage`) has a lane of its own, half the
//! capacity, and is taken a whole batch or nothing ([`UsageQueue::admit`]):
//! only admissions push into it, one at a time under a mutex, and only the
//! flusher takes out of it, so the room seen under the mutex is room the
//! whole batch will find. A record acknowledged there is never dropped by
//! the queue.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::{Mutex, MutexGuard};

use super::Queued;
use crate::telemetry::slot::{slot_count, thread_slot};
use crate::telemetry::stats::Stats;

#[derive(Clone)]
pub struct UsageQueue {
    lanes: Arc<[Sender<Queued>]>,
    ingest: Arc<IngestLane>,
    stats: Arc<Stats>,
    capacity: usize,
}

/// The lane of reported usage; see the module's notes.
struct IngestLane {
    tx: Mutex<Sender<Queued>>,
    /// The same lane, for reading its length without the mutex.
    probe: Sender<Queued>,
    capacity: usize,
}

/// Room for a whole batch in the ingest lane, held until it is pushed.
pub struct Admission<'a> {
    tx: MutexGuard<'a, Sender<Queued>>,
}

impl Admission<'_> {
    /// Pushes one record of the admitted batch. Returns false only when
    /// the flusher is gone (the server is stopping).
    pub fn push(&mut self, item: Queued) -> bool {
        self.tx.try_send(item).is_ok()
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
}

/// A queue holding at most `capacity` records: half in the per-thread lanes
/// (split evenly), half in the ingest lane.
pub fn usage_queue(capacity: usize, stats: Arc<Stats>) -> (UsageQueue, QueueReceiver) {
    let lanes = slot_count();
    let ingest_capacity = (capacity / 2).max(1);
    let per_lane = (capacity - capacity / 2).div_ceil(lanes).max(1);
    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..lanes).map(|_| bounded(per_lane)).unzip();
    let (ingest_tx, ingest_rx) = bounded(ingest_capacity);
    rxs.push(ingest_rx);
    (
        UsageQueue {
            lanes: txs.into(),
            ingest: Arc::new(IngestLane {
                probe: ingest_tx.clone(),
                tx: Mutex::new(ingest_tx),
                capacity: ingest_capacity,
            }),
            stats,
            capacity: per_lane * lanes + ingest_capacity,
        },
        QueueReceiver { lanes: rxs },
    )
}

impl UsageQueue {
    /// Hands a record to the flusher. Returns false (and counts it) when the
    /// queue is full or the flusher is gone. A thread uses its own lane; only
    /// when that lane is full does it try the others, so one busy thread can
    /// still use the whole capacity.
    #[inline]
    pub fn enqueue(&self, item: Queued) -> bool {
        self.try_enqueue(item).is_ok()
    }

    /// Like [`enqueue`](Self::enqueue), handing back the record it could
    /// not take (still counted as dropped; boxed on that cold path).
    #[inline]
    pub fn try_enqueue(&self, item: Queued) -> Result<(), Box<Queued>> {
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
        self.stats
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        Err(Box::new(item))
    }

    /// A cheap look, without the mutex, before a batch of `n` is
    /// converted (a refusal should cost little under load): `Full` (and
    /// counted) when the lane has no room for it now. Only
    /// [`admit`](Self::admit) says there is room; a batch the lane can never
    /// hold is left for it to refuse.
    pub fn refuse_if_full(&self, n: usize) -> Result<(), Refusal> {
        self.room_for(n, self.ingest.probe.len())
    }

    /// Free room in the ingest lane now, in records.
    pub fn room(&self) -> usize {
        self.ingest.capacity.saturating_sub(self.ingest.probe.len())
    }

    /// Room for `n` reported records in the ingest lane, all or nothing.
    pub fn admit(&self, n: usize) -> Result<Admission<'_>, Refusal> {
        let lane = &*self.ingest;
        if n > lane.capacity {
            return Err(Refusal::TooLarge {
                capacity: lane.capacity,
            });
        }
        let tx = lane.tx.lock();
        self.room_for(n, tx.len())?;
        Ok(Admission { tx })
    }

    /// `Full`, counted as refused records, when `n` more do not fit beside
    /// the `queued` ones (a batch larger than the lane is not `Full`).
    fn room_for(&self, n: usize, queued: usize) -> Result<(), Refusal> {
        let capacity = self.ingest.capacity;
        if n <= capacity && capacity.saturating_sub(queued) < n {
            self.stats
                .refused_queue_full
                .fetch_add(n as u64, Ordering::Relaxed);
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Records waiting for the flusher.
    pub fn depth(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum::<usize>() + self.ingest.probe.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl QueueReceiver {
    /// Records waiting, in every lane.
    pub fn waiting(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum()
    }

    /// Moves up to `max` waiting records into `out`; returns how many.
    pub fn drain_into(&self, out: &mut Vec<Queued>, max: usize) -> usize {
        let start = out.len();
        'lanes: for lane in &self.lanes {
            while out.len() - start < max {
                match lane.try_recv() {
                    Ok(item) => out.push(item),
                    Err(_) => continue 'lanes,
                }
            }
            break;
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
        let mut a = q.admit(60).unwrap();
        assert!((0..60).all(|_| a.push(item(&t))));
        drop(a);
        assert_eq!(q.admit(41).err(), Some(Refusal::Full));
        assert_eq!(
            q.admit(101).err(),
            Some(Refusal::TooLarge { capacity: 100 })
        );
        let mut a = q.admit(40).unwrap();
        assert!((0..40).all(|_| a.push(item(&t))));
        drop(a);
        assert_eq!(stats.refused_queue_full.load(Ordering::Relaxed), 41);
        let mut out = Vec::new();
        assert_eq!(rx.drain_into(&mut out, 1_000), 100);
        assert!(q.admit(100).is_ok(), "drained room is room again");
    }
}
