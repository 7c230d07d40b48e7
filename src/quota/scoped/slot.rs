//! One limit's count in one window ([`Slot`]), a subject's counts
//! ([`Entry`]), and the arithmetic of a decision on them: a window rolled
//! over, a request refused or taken, a decision adjusted, a count shown.

use smallvec::SmallVec;

use super::{window, Ask, Delta};
use crate::model::{CompactString, Limit, Measure, Scope, Window};

/// One limit's count: the window it belongs to and what was used in it
/// (for the burst window, `window` is the GCRA's theoretical arrival
/// time in nanoseconds; for in-flight, `used` is the requests served now).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Slot {
    pub(super) window: i64,
    pub(super) used: u64,
}

/// One subject's counts, by limit name.
#[derive(Debug, Default)]
pub(super) struct Entry {
    pub(super) slots: SmallVec<[(CompactString, Slot); 1]>,
    /// Which tracking of its subject this is (unique per tenant; 0 for
    /// the tenant's own counts): a decision's hold finds the entry again
    /// by it and its id's hash, without the id.
    pub(super) serial: u64,
}

impl Entry {
    /// A new subject's entry, with the next of `serial`.
    pub(super) fn new(serial: &mut u64) -> Entry {
        *serial += 1;
        Entry {
            slots: SmallVec::new(),
            serial: *serial - 1,
        }
    }

    /// The slot of the limit `name`, made if it is new.
    pub(super) fn slot(&mut self, name: &str) -> &mut Slot {
        match self.slots.iter().position(|(n, _)| n == name) {
            Some(i) => &mut self.slots[i].1,
            None => {
                self.slots.push((name.into(), Slot::default()));
                &mut self.slots.last_mut().expect("just pushed").1
            }
        }
    }

    pub(super) fn peek(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    pub(super) fn find(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// A limit as a response shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub name: CompactString,
    pub scope: Scope,
    pub measure: Measure,
    pub window: Window,
    pub amount: u64,
    pub used: u64,
    /// Seconds the window lasts (the burst window's `perSeconds`).
    pub window_secs: u64,
    /// Milliseconds until the window resets (the bucket is full again).
    pub reset_ms: i64,
}

impl View {
    pub fn remaining(&self) -> u64 {
        self.amount.saturating_sub(self.used)
    }
}

/// Moves a fixed window's slot to the window of `now_ms` (its count
/// starts again at 0).
pub(super) fn roll(l: &Limit, slot: &mut Slot, now_ms: i64, day: u8) {
    if matches!(l.window, Window::Burst | Window::None) {
        return;
    }
    let n = window::index(l.window, day, now_ms);
    if slot.window != n {
        *slot = Slot { window: n, used: 0 };
    }
}

/// The GCRA's emission interval of a burst limit, in nanoseconds.
pub(super) fn interval_ns(l: &Limit) -> i64 {
    let amount = l.amount.unwrap_or(1).max(1);
    ((u128::from(l.per_seconds) * 1_000_000_000) / u128::from(amount)).max(1) as i64
}

/// What a request would take of `l`'s measure.
pub(super) fn need(l: &Limit, ask: &Ask<'_>) -> u64 {
    match l.measure {
        Measure::Calls => ask.calls,
        Measure::Tokens => ask.tokens,
        Measure::SpendUsd => ask.spend,
        Measure::InFlight => 1,
    }
}

/// `Some(ms until it could pass)` when `l` refuses `ask`.
pub(super) fn refuses(l: &Limit, slot: &Slot, ask: &Ask<'_>, now_ms: i64, day: u8) -> Option<i64> {
    let amount = l.amount?;
    let n = need(l, ask);
    if l.window == Window::Burst {
        let t = interval_ns(l);
        let now_ns = now_ms.saturating_mul(1_000_000);
        let tat = slot
            .window
            .max(now_ns)
            .saturating_add(t.saturating_mul(n as i64));
        let capacity = t.saturating_mul(l.burst as i64);
        let over = tat - now_ns - capacity;
        return (over > 0).then(|| (over + 999_999) / 1_000_000);
    }
    // Reserving nothing, a limit is open while anything of it is left;
    // reserving, only if the reservation fits whole.
    let refused = if n == 0 {
        slot.used >= amount
    } else {
        slot.used.saturating_add(n) > amount
    };
    refused.then(|| match l.window {
        Window::None => 1_000,
        w => window::end_ms(w, day, slot.window)
            .saturating_sub(now_ms)
            .max(1),
    })
}

pub(super) fn add(l: &Limit, slot: &mut Slot, ask: &Ask<'_>, now_ms: i64) {
    let n = need(l, ask);
    if l.window == Window::Burst {
        let now_ns = now_ms.saturating_mul(1_000_000);
        slot.window = slot
            .window
            .max(now_ns)
            .saturating_add(interval_ns(l).saturating_mul(n as i64));
    } else {
        slot.used = slot.used.saturating_add(n);
    }
}

/// Applies `delta` to `slot` of `l` for a decision made at `at_ms`: a
/// fixed window only while it is still the one of `at_ms`.
pub(super) fn apply(l: &Limit, slot: &mut Slot, at_ms: i64, day: u8, delta: &Delta) {
    let by = match l.measure {
        Measure::Calls => delta.calls,
        Measure::Tokens => delta.tokens,
        Measure::SpendUsd => delta.spend,
        Measure::InFlight => {
            if delta.leave {
                slot.used = slot.used.saturating_sub(1);
            }
            return;
        }
    };
    if by == 0 {
        return;
    }
    match l.window {
        Window::Burst => {
            if by < 0 {
                slot.window = slot
                    .window
                    .saturating_sub(interval_ns(l).saturating_mul(-by));
            }
        }
        Window::None => {}
        w => {
            if slot.window == window::index(w, day, at_ms) {
                slot.used = slot.used.saturating_add_signed(by);
            }
        }
    }
}

pub(super) fn view_of(l: &Limit, slot: Slot, now_ms: i64, day: u8) -> View {
    let amount = l.amount.unwrap_or(u64::MAX);
    let (used, reset_ms) = match l.window {
        Window::Burst => {
            let t = interval_ns(l);
            let now_ns = now_ms.saturating_mul(1_000_000);
            let ahead = slot.window.saturating_sub(now_ns).max(0);
            let capacity = t.saturating_mul(l.burst as i64);
            let left = (capacity - ahead).max(0) / t;
            (
                amount.min(l.burst).saturating_sub(left as u64),
                (ahead + 999_999) / 1_000_000,
            )
        }
        Window::None => (slot.used, 0),
        w => (
            slot.used,
            window::end_ms(w, day, slot.window).saturating_sub(now_ms),
        ),
    };
    View {
        name: l.name.clone(),
        scope: l.scope,
        measure: l.measure,
        window: l.window,
        amount: if l.window == Window::Burst {
            amount.min(l.burst)
        } else {
            amount
        },
        used,
        window_secs: l.window_secs(),
        reset_ms,
    }
}
