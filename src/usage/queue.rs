//! [`UsageQueue`]: the bounded crossbeam channel to the flusher, split into
//! lanes so that threads enqueueing at once do not contend on one tail.
//!
//! There are at least as many lanes as CPUs (a power of two, at least 8);
//! each thread picks a lane once (round robin) and keeps it. Enqueueing is a
//! `try_send`: it never blocks and never allocates; when the lane is full the
//! record is counted as dropped and the request is still answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::Queued;
use crate::slot::{slot_count, thread_slot};
use crate::stats::Stats;

#[derive(Clone)]
pub struct UsageQueue {
    lanes: Arc<[Sender<Queued>]>,
    stats: Arc<Stats>,
    capacity: usize,
}

/// The flusher's end of the queue.
pub struct QueueReceiver {
    lanes: Vec<Receiver<Queued>>,
}

/// A queue holding at most `capacity` records (split evenly over the lanes).
pub fn usage_queue(capacity: usize, stats: Arc<Stats>) -> (UsageQueue, QueueReceiver) {
    let lanes = slot_count();
    let per_lane = capacity.div_ceil(lanes).max(1);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..lanes).map(|_| bounded(per_lane)).unzip();
    (
        UsageQueue {
            lanes: txs.into(),
            stats,
            capacity: per_lane * lanes,
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
        let lanes = self.lanes.len();
        let mask = lanes - 1; // a power of two
        let first = thread_slot() & mask;
        let mut item = match self.lanes[first].try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Full(item)) => item,
            Err(TrySendError::Disconnected(_)) => return self.dropped(),
        };
        for i in 1..lanes {
            match self.lanes[(first + i) & mask].try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) => item = back,
                Err(TrySendError::Disconnected(_)) => return self.dropped(),
            }
        }
        self.dropped()
    }

    #[cold]
    fn dropped(&self) -> bool {
        self.stats
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Records waiting for the flusher.
    pub fn depth(&self) -> usize {
        self.lanes.iter().map(|l| l.len()).sum()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl QueueReceiver {
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
