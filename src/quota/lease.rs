//! [`Shared`]: a tenant's monthly calls and tokens when several instances
//! share them (`cluster/`, through Redis). The decision reads and changes
//! only the atomics here:
//!
//! - the **calls** come from a [`Lease`]: units Redis granted this
//!   instance alone, which it spends with a compare-and-swap as it would
//!   its own counter. Redis never grants past the limit, so however the
//!   instances race, the fleet cannot allow more than the limit.
//! - the **tokens** are known only after a response, so they are counted,
//!   not leased: the fleet's total as last seen plus what this instance
//!   added since (stale by at most one sync of the other instances).
//!
//! What to ask for, report and give back is picked up by the cluster's
//! sync loop: a lease running low queues its tenant on the [`LeaseHub`]
//! (once per refill). Nothing here does I/O.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::counter::PeriodCounter;
use super::period::{Nanos, Period};

/// Tenants whose leases want the sync loop's attention.
#[derive(Debug)]
pub struct LeaseHub {
    tx: Sender<Arc<str>>,
    rx: Receiver<Arc<str>>,
    /// Set while Redis cannot be reached and `on_redis_down = "local"`:
    /// a spent lease falls back to its reserve.
    local: AtomicBool,
}

impl Default for LeaseHub {
    fn default() -> Self {
        // A bounded channel is an array: sending allocates nothing.
        let (tx, rx) = bounded(1 << 16);
        LeaseHub {
            tx,
            rx,
            local: AtomicBool::new(false),
        }
    }
}

impl LeaseHub {
    /// Says whether decisions may spend their reserves (Redis is down and
    /// `on_redis_down = "local"`).
    pub fn set_local(&self, on: bool) {
        self.local.store(on, Ordering::Release);
    }

    pub fn local(&self) -> bool {
        self.local.load(Ordering::Acquire)
    }

    /// The tenants asked for since the last call, into `into`.
    pub fn drain(&self, into: &mut Vec<Arc<str>>) {
        into.extend(self.rx.try_iter());
    }
}

/// Units of a shared calls quota this instance holds, and the running
/// totals it tells Redis. Every figure is tagged with its period, so a
/// lease of last month reads as nothing.
///
/// The totals only grow (or, for refunds, are netted), and every sync sends
/// them whole: a call whose answer was lost is harmless, since the next
/// one carries the same totals and Redis applies only what it has not
/// seen. Grants come back as Redis's total granted to this instance, and
/// the lease takes only the part it has not added yet
/// ([`grants`](Self::grants)), whichever answer brings it first.
#[derive(Debug)]
pub struct Lease {
    /// Granted to this instance and not spent (refunds come back here).
    /// What was spent is what was granted less what was given back and
    /// what is held (here or in reserve), so a decision changes this one
    /// counter, as one instance's decision changes its own.
    held: PeriodCounter,
    /// Granted, and set aside for an outage (`on_redis_down = "local"`):
    /// spent only while Redis cannot be reached. Allocated in Redis like
    /// any lease, so the fleet cannot exceed the limit through it.
    reserve: PeriodCounter,
    /// Units given back to Redis.
    given: PeriodCounter,
    /// Units counted past the lease (usage that already happened, or a
    /// plan without a calls limit).
    over: PeriodCounter,
    /// The total Redis granted this instance that the lease has added.
    granted: PeriodCounter,
    /// The fleet's allocation as last seen: every instance's spent units
    /// and outstanding leases, this one's included.
    seen: PeriodCounter,
    /// Below this many held units the sync loop is asked for more.
    low: AtomicU64,
    /// Until when (nanoseconds) Redis said nothing is left: no top-up is
    /// tried before then.
    dry_until: AtomicI64,
}

/// The running totals of one period that a sync carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Spent less refunded.
    pub spent: u64,
    pub given: u64,
    pub over: u64,
    pub granted: u64,
}

impl Lease {
    fn new(period: Period) -> Lease {
        let zero = || PeriodCounter::new(period, 0);
        Lease {
            held: zero(),
            given: zero(),
            over: zero(),
            granted: zero(),
            reserve: zero(),
            seen: zero(),
            low: AtomicU64::new(0),
            dry_until: AtomicI64::new(i64::MIN),
        }
    }

    /// The fleet's use as this instance can tell it: the allocation last
    /// seen less what this instance still holds. Other instances' unspent
    /// leases count as used (at most one lease each).
    #[inline]
    pub fn used(&self, period: Period) -> u64 {
        self.seen
            .used(period)
            .saturating_sub(self.held.used(period))
            .saturating_sub(self.reserve.used(period))
    }

    pub fn held(&self, period: Period) -> u64 {
        self.held.used(period)
    }

    pub fn seen(&self, period: Period) -> u64 {
        self.seen.used(period)
    }

    /// Units spent or counted past the lease in `period` (the sync
    /// loop's rate estimate).
    pub fn consumed(&self, period: Period) -> u64 {
        let t = self.totals(period);
        t.spent + t.over
    }

    /// Takes Redis's total granted to this instance in `period`: the part
    /// not added yet goes into the lease (once, whichever answer brings
    /// it). How many units that was.
    pub fn grants(&self, period: Period, total: u64) -> u64 {
        let mut added = 0;
        loop {
            let have = self.granted.used(period);
            if total <= have {
                return added;
            }
            if self
                .granted
                .try_consume(period, total - have, Some(total))
                .is_ok()
            {
                self.held.add(period, total - have);
                added += total - have;
            }
        }
    }

    /// The fleet's allocation, as Redis answered it.
    pub fn saw(&self, period: Period, alloc: u64) {
        self.seen.set(period, alloc);
    }

    /// The refill threshold (half a lease at the tenant's rate).
    pub fn low(&self) -> u64 {
        self.low.load(Ordering::Relaxed)
    }

    /// Sets the refill threshold.
    pub fn set_low(&self, low: u64) {
        self.low.store(low, Ordering::Relaxed);
    }

    /// Gives back every held unit: how many.
    pub fn surrender(&self, period: Period) -> u64 {
        let n = self.held.take_all(period) + self.reserve.take_all(period);
        if n > 0 {
            self.given.add(period, n);
        }
        n
    }

    /// Units set aside for an outage.
    pub fn reserved(&self, period: Period) -> u64 {
        self.reserve.used(period)
    }

    /// Moves held units into the reserve until it has `target`: how many.
    pub fn set_aside(&self, period: Period, target: u64) -> u64 {
        let want = target.saturating_sub(self.reserve.used(period));
        let n = want.min(self.held.used(period));
        if n == 0 || self.held.try_take(period, n).is_err() {
            return 0;
        }
        self.reserve.add(period, n);
        n
    }

    /// Moves the reserve back into the lease, to be spent.
    pub fn unreserve(&self, period: Period) {
        let n = self.reserve.take_all(period);
        if n > 0 {
            self.held.add(period, n);
        }
    }

    /// Gives back the reserve: how many units.
    pub fn surrender_reserve(&self, period: Period) -> u64 {
        let n = self.reserve.take_all(period);
        if n > 0 {
            self.given.add(period, n);
        }
        n
    }

    /// Gives back the held units above `keep`: how many.
    pub fn surrender_above(&self, period: Period, keep: u64) -> u64 {
        let held = self.held.used(period);
        if held <= keep {
            return 0;
        }
        // Spent meanwhile: give back nothing this time.
        match self.held.try_take(period, held - keep) {
            Ok(_) => {
                self.given.add(period, held - keep);
                held - keep
            }
            Err(_) => 0,
        }
    }

    /// The running totals to send.
    pub fn totals(&self, period: Period) -> Totals {
        let granted = self.granted.used(period);
        let given = self.given.used(period);
        Totals {
            // Read before `held`: a grant landing between the two reads
            // shows as less spent, never more.
            spent: granted
                .saturating_sub(given)
                .saturating_sub(self.held.used(period))
                .saturating_sub(self.reserve.used(period)),
            given,
            over: self.over.used(period),
            granted,
        }
    }

    /// Says Redis had nothing left until `until`.
    pub fn dry(&self, until: Nanos) {
        self.dry_until.store(until, Ordering::Relaxed);
    }

    /// Whether a top-up from Redis is worth trying at `now`.
    pub fn may_top_up(&self, now: Nanos) -> bool {
        now >= self.dry_until.load(Ordering::Relaxed)
    }
}

/// A tenant's calls and tokens shared with other instances.
#[derive(Debug)]
pub struct Shared {
    tenant: Arc<str>,
    hub: Arc<LeaseHub>,
    /// Set while this tenant is queued on the hub.
    asked: AtomicBool,
    pub calls: Lease,
    /// Overage Redis has acknowledged.
    over_acked: PeriodCounter,
    /// The epoch of the period's hash this instance has met (0: none).
    epoch: PeriodCounter,
    /// Numbers this instance's calls, so Redis applies only the newest.
    seq: AtomicU64,
    /// The totals Redis last acknowledged (the sync loop and top-ups:
    /// never the decision).
    acked: parking_lot::Mutex<(Period, Totals)>,
    /// The fleet's tokens as last seen (this instance's acknowledged ones
    /// included).
    tokens_seen: PeriodCounter,
    /// Tokens counted here, and the part of them Redis acknowledged.
    tokens_here: PeriodCounter,
    tokens_acked: PeriodCounter,
    /// The calls the store has persisted for the period, as last read:
    /// every call sends it, and Redis's allocation is never below it, so
    /// a hash tampered with or gone stale cannot grant a second quota.
    stored: PeriodCounter,
}

impl Shared {
    pub fn new(tenant: Arc<str>, hub: Arc<LeaseHub>, period: Period) -> Shared {
        Shared {
            tenant,
            hub,
            asked: AtomicBool::new(false),
            calls: Lease::new(period),
            over_acked: PeriodCounter::new(period, 0),
            epoch: PeriodCounter::new(period, 0),
            seq: AtomicU64::new(0),
            acked: parking_lot::Mutex::new((period, Totals::default())),
            tokens_seen: PeriodCounter::new(period, 0),
            tokens_here: PeriodCounter::new(period, 0),
            tokens_acked: PeriodCounter::new(period, 0),
            stored: PeriodCounter::new(period, 0),
        }
    }

    pub fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }

    /// Queues the tenant for the sync loop, unless it is queued already.
    #[inline]
    pub fn ask(&self) {
        if self.asked.load(Ordering::Relaxed) || self.asked.swap(true, Ordering::AcqRel) {
            return;
        }
        // An Arc clone: a count, no allocation. A full hub drops the ask
        // and clears the flag, so the next decision asks again.
        if self.hub.tx.try_send(self.tenant.clone()).is_err() {
            self.asked.store(false, Ordering::Release);
        }
    }

    /// The sync loop took the tenant off the hub.
    pub fn answered(&self) {
        self.asked.store(false, Ordering::Release);
    }

    /// Takes `n` calls from the lease (`limit` `None`: unlimited, counted
    /// and reported but never leased): the fleet's use after, or the use
    /// that made it fail.
    #[inline]
    pub fn take_calls(&self, period: Period, n: u64, limit: Option<u64>) -> Result<u64, u64> {
        let lease = &self.calls;
        if limit.is_none() {
            lease.over.add(period, n);
            return Ok(lease.used(period) + self.unreported_over(period));
        }
        match lease.held.try_take(period, n) {
            Ok(left) => {
                if left < lease.low.load(Ordering::Relaxed) {
                    self.ask();
                }
                Ok(lease.used(period) + self.unreported_over(period))
            }
            Err(_) => {
                self.ask();
                // Redis is down and the reserve may be spent: this
                // instance's share, allocated in Redis beforehand.
                if self.hub.local() && lease.reserve.try_take(period, n).is_ok() {
                    return Ok(lease.used(period) + self.unreported_over(period));
                }
                Err(lease.used(period) + self.unreported_over(period))
            }
        }
    }

    /// Gives back `n` calls a decision took in `period`.
    pub fn give_back_calls(&self, period: Period, n: u64, limit: Option<u64>) {
        let lease = &self.calls;
        if limit.is_none() {
            // Unlimited calls were counted as overage: count them back.
            lease.over.refund(period, n);
            return;
        }
        lease.held.add(period, n);
    }

    /// Overage Redis has not been told of yet (it is in no allocation seen).
    fn unreported_over(&self, period: Period) -> u64 {
        self.calls
            .over
            .used(period)
            .saturating_sub(self.over_acked.used(period))
    }

    /// The epoch of the period's hash this instance has met (0: none).
    pub fn epoch(&self, period: Period) -> i64 {
        self.epoch.used(period) as i64
    }

    pub fn met(&self, period: Period, epoch: i64) {
        self.epoch.set(period, epoch.max(0) as u64);
    }

    /// The next call's number.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Redis has the totals `t` (after an answer).
    pub fn acked(&self, period: Period, t: Totals) {
        self.over_acked.set(period, t.over);
        *self.acked.lock() = (period, t);
    }

    /// The totals and tokens Redis last acknowledged in `period`.
    pub fn acked_totals(&self, period: Period) -> (Totals, u64) {
        let (p, t) = *self.acked.lock();
        let t = if p == period { t } else { Totals::default() };
        (t, self.tokens_acked.used(period))
    }

    /// Counts usage that already happened: calls past the lease, tokens.
    pub fn add(&self, period: Period, calls: u64, tokens: u64) {
        if calls > 0 {
            self.calls.over.add(period, calls);
        }
        if tokens > 0 {
            self.tokens_here.add(period, tokens);
            self.ask();
        }
    }

    /// Reserves `n` tokens if the fleet's tokens as this instance sees
    /// them stay within `limit`: counted here at once (and reported with
    /// the rest), given back if that passed the limit - so requests racing
    /// on this instance never pass it together.
    pub fn take_tokens(&self, period: Period, n: u64, limit: Option<u64>) -> Result<u64, u64> {
        let before = self.tokens_used(period);
        if limit.is_some_and(|l| before.saturating_add(n) > l) {
            return Err(before);
        }
        self.tokens_here.add(period, n);
        let after = self.tokens_used(period);
        if limit.is_some_and(|l| after > l) {
            self.tokens_here.refund(period, n);
            return Err(after.saturating_sub(n));
        }
        self.ask();
        Ok(after)
    }

    /// Gives back `n` tokens reserved in `period`.
    pub fn give_back_tokens(&self, period: Period, n: u64) {
        self.tokens_here.refund(period, n);
        self.ask();
    }

    /// The fleet's tokens: the total Redis last answered, plus what this
    /// instance counted since.
    #[inline]
    pub fn tokens_used(&self, period: Period) -> u64 {
        let unacked = self
            .tokens_here
            .used(period)
            .saturating_sub(self.tokens_acked.used(period));
        self.tokens_seen.used(period).saturating_add(unacked)
    }

    /// The tokens counted here (a running total, as the sync sends it).
    pub fn tokens_here(&self, period: Period) -> u64 {
        self.tokens_here.used(period)
    }

    /// Redis answered `total` for the fleet, having this instance's
    /// running total `here`.
    pub fn tokens_answered(&self, period: Period, here: u64, total: u64) {
        self.tokens_acked.set(period, here);
        self.tokens_seen.set(period, total);
    }

    /// Sets the figures last seen (the persisted totals, at start-up).
    pub fn restore(&self, period: Period, calls: u64, tokens: u64) {
        self.calls.seen.set(period, calls);
        self.tokens_seen.set(period, tokens);
        self.stored(period, calls);
    }

    /// The store has `calls` of the period persisted (it only grows).
    pub fn stored(&self, period: Period, calls: u64) {
        if calls > self.stored.used(period) {
            self.stored.set(period, calls);
        }
    }

    /// The calls of the period the store had when last read.
    pub fn stored_calls(&self, period: Period) -> u64 {
        self.stored.used(period)
    }

    /// Whether the running totals differ from `acked` (what Redis has).
    pub fn pending(&self, period: Period, acked: &(Totals, u64)) -> bool {
        self.calls.totals(period) != acked.0 || self.tokens_here(period) != acked.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(Arc::from("t"), Arc::new(LeaseHub::default()), Period(0))
    }

    #[test]
    fn a_lease_is_spent_and_its_totals_sent() {
        let s = shared();
        let p = Period(0);
        assert_eq!(s.take_calls(p, 1, Some(10)), Err(0));
        let mut asked = Vec::new();
        s.hub.drain(&mut asked);
        assert_eq!(asked.len(), 1, "an empty lease asks once");
        assert_eq!(s.take_calls(p, 1, Some(10)), Err(0));
        s.hub.drain(&mut asked);
        assert_eq!(asked.len(), 1, "and not again until answered");
        s.answered();
        assert_eq!(s.calls.grants(p, 4), 4);
        s.calls.saw(p, 6); // 2 used elsewhere, 4 here
        assert_eq!(s.calls.grants(p, 4), 0, "a grant is added once");
        assert_eq!(s.calls.used(p), 2);
        assert_eq!(s.take_calls(p, 3, Some(10)), Ok(5));
        assert_eq!(s.take_calls(p, 2, Some(10)), Err(5));
        s.give_back_calls(p, 1, Some(10));
        assert_eq!(s.calls.held(p), 2);
        assert_eq!(s.calls.surrender(p), 2);
        let t = s.calls.totals(p);
        assert_eq!(
            t,
            Totals {
                spent: 2,
                given: 2,
                over: 0,
                granted: 4,
            }
        );
        assert!(s.pending(p, &(Totals::default(), 0)));
        assert!(!s.pending(p, &(t, 0)));
    }

    #[test]
    fn a_lease_of_last_month_is_nothing() {
        let s = shared();
        s.calls.grants(Period(0), 5);
        assert_eq!(s.take_calls(Period(1), 1, Some(10)), Err(0));
    }

    #[test]
    fn tokens_count_until_redis_answers() {
        let s = shared();
        let p = Period(0);
        s.add(p, 0, 30);
        assert_eq!(s.tokens_used(p), 30);
        s.tokens_answered(p, 30, 100);
        assert_eq!(s.tokens_used(p), 100);
        s.add(p, 0, 5);
        assert_eq!(s.tokens_used(p), 105);
        assert_eq!(s.tokens_here(p), 35);
    }
}
