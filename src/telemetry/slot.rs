//! Per-thread slots: a number fixed for each thread, so that data written on
//! the request path can be split into one part per thread (queue lanes,
//! metric slots) and threads do not contend on one cache line.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A number fixed for the life of the calling thread, handed out round
/// robin; callers reduce it to their slot count (a power of two).
#[inline]
pub(crate) fn thread_slot() -> usize {
    SLOT.with(|s| {
        let mut slot = s.get();
        if slot == usize::MAX {
            slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
            s.set(slot);
        }
        slot
    })
}

/// Slots for per-thread data: at least as many as CPUs (and at least 8), a
/// power of two.
pub(crate) fn slot_count() -> usize {
    std::thread::available_parallelism()
        .map_or(8, |n| n.get())
        .max(8)
        .next_power_of_two()
}
