//! [`Shared`]: a tenant's monthly calls and tokens when several instances
//! share them (`cluster/`, through Redis). The decision reads and changes
//! only the atomics here:
//!
//! - the **calls** come from a [`Lease`]: units Redis granted this
//!   instance alone, which it spends with a compare-and-swap as it would
//!   its own counter. Redis never grants past the limit, so however the
//!   instances race, the fleet cannot allow more than the limit.
//! - the **tokens** come from a second lease, of the token quota, spent
//!   the same way by the requests that reserve tokens before they run
//!   (`reservation.rs`): settled against what the answer used, the rest
//!   given back into the lease; tokens counted without a reservation
//!   (reported usage, what passed a reservation) count past the lease, as
//!   reported calls do.
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
    pub(crate) fn set_local(&self, on: bool) {
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
    /// Overage Redis has acknowledged.
    over_acked: PeriodCounter,
    /// The epoch of the period's hash this instance has met (0: none).
    epoch: PeriodCounter,
    /// The totals Redis last acknowledged (the sync loop and top-ups:
    /// never the decision).
    acked: parking_lot::Mutex<(Period, Totals)>,
    /// The units the store has persisted for the period, as last read:
    /// every call sends it, and Redis never grants past it, so a hash
    /// tampered with or gone stale cannot grant a second quota.
    stored: PeriodCounter,
    /// The granted and given back totals last written to the store
    /// (before a grant is spent: `cluster::Inner::secure`).
    written_granted: PeriodCounter,
    written_given: PeriodCounter,
}

/// What a lease is of: a tenant's monthly calls or its monthly tokens,
/// each with a Redis hash of its own (`cluster/script.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    Calls,
    Tokens,
}

impl Measure {
    pub const ALL: [Measure; 2] = [Measure::Calls, Measure::Tokens];

    /// Its place in [`ALL`](Self::ALL) (arrays kept per measure).
    pub fn index(self) -> usize {
        match self {
            Measure::Calls => 0,
            Measure::Tokens => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Measure::Calls => "calls",
            Measure::Tokens => "tokens",
        }
    }

    /// The plan's limit of this measure (`None`: unlimited).
    pub fn limit(self, plan: &crate::model::Plan) -> Option<u64> {
        match self {
            Measure::Calls => plan.monthly_calls,
            Measure::Tokens => plan.monthly_tokens,
        }
    }
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
            over_acked: zero(),
            epoch: zero(),
            acked: parking_lot::Mutex::new((period, Totals::default())),
            stored: zero(),
            written_granted: zero(),
            written_given: zero(),
        }
    }

    /// Whether `granted` and `given` are past what the store was last told.
    pub(crate) fn unwritten(&self, period: Period, granted: u64, given: u64) -> bool {
        granted > self.written_granted.used(period) || given > self.written_given.used(period)
    }

    /// The store has been told `granted` and `given` (each only grows).
    pub fn wrote(&self, period: Period, granted: u64, given: u64) {
        if granted > self.written_granted.used(period) {
            self.written_granted.set(period, granted);
        }
        if given > self.written_given.used(period) {
            self.written_given.set(period, given);
        }
    }

    /// The fleet's use with what this instance counted past the lease
    /// and has not reported yet.
    #[inline]
    pub(crate) fn fleet_used(&self, period: Period) -> u64 {
        self.used(period) + self.unreported_over(period)
    }

    /// Overage Redis has not been told of yet (it is in no allocation seen).
    fn unreported_over(&self, period: Period) -> u64 {
        self.over
            .used(period)
            .saturating_sub(self.over_acked.used(period))
    }

    /// Takes back `n` units counted past the lease.
    pub(crate) fn uncount(&self, period: Period, n: u64) {
        self.over.refund(period, n);
    }

    /// The epoch of the period's hash this instance has met (0: none).
    pub(crate) fn epoch(&self, period: Period) -> i64 {
        self.epoch.used(period) as i64
    }

    pub fn met(&self, period: Period, epoch: i64) {
        self.epoch.set(period, epoch.max(0) as u64);
    }

    /// Redis has the totals `t` (after an answer).
    pub fn acked(&self, period: Period, t: Totals) {
        self.over_acked.set(period, t.over);
        *self.acked.lock() = (period, t);
    }

    /// The totals Redis last acknowledged in `period`.
    pub(crate) fn acked_totals(&self, period: Period) -> Totals {
        let (p, t) = *self.acked.lock();
        if p == period {
            t
        } else {
            Totals::default()
        }
    }

    /// Whether the running totals differ from what Redis has.
    pub(crate) fn pending(&self, period: Period) -> bool {
        self.totals(period) != self.acked_totals(period)
    }

    /// The store has `units` of the period persisted (it only grows).
    pub fn stored(&self, period: Period, units: u64) {
        if units > self.stored.used(period) {
            self.stored.set(period, units);
        }
    }

    /// The units of the period the store had when last read.
    pub(crate) fn stored_units(&self, period: Period) -> u64 {
        self.stored.used(period)
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

    /// Units spent or counted past the lease in `period` (the sync
    /// loop's rate estimate).
    pub(crate) fn consumed(&self, period: Period) -> u64 {
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
    pub(crate) fn low(&self) -> u64 {
        self.low.load(Ordering::Relaxed)
    }

    /// Sets the refill threshold.
    pub(crate) fn set_low(&self, low: u64) {
        self.low.store(low, Ordering::Relaxed);
    }

    /// Gives back every held unit: how many.
    pub(crate) fn surrender(&self, period: Period) -> u64 {
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
    pub(crate) fn set_aside(&self, period: Period, target: u64) -> u64 {
        let want = target.saturating_sub(self.reserve.used(period));
        let n = want.min(self.held.used(period));
        if n == 0 || self.held.try_take(period, n).is_err() {
            return 0;
        }
        self.reserve.add(period, n);
        n
    }

    /// Moves the reserve back into the lease, to be spent.
    pub(crate) fn unreserve(&self, period: Period) {
        let n = self.reserve.take_all(period);
        if n > 0 {
            self.held.add(period, n);
        }
    }

    /// Gives back the reserve: how many units.
    pub(crate) fn surrender_reserve(&self, period: Period) -> u64 {
        let n = self.reserve.take_all(period);
        if n > 0 {
            self.given.add(period, n);
        }
        n
    }

    /// Gives back the held units above `keep`: how many.
    pub(crate) fn surrender_above(&self, period: Period, keep: u64) -> u64 {
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
        self.dry_until.store(until.0, Ordering::Relaxed);
    }

    /// Whether a top-up from Redis is worth trying at `now`.
    pub(crate) fn may_top_up(&self, now: Nanos) -> bool {
        now.0 >= self.dry_until.load(Ordering::Relaxed)
    }
}

/// A tenant's calls and tokens shared with other instances: a lease of each.
#[derive(Debug)]
pub struct Shared {
    tenant: Arc<str>,
    hub: Arc<LeaseHub>,
    /// Set while this tenant is queued on the hub.
    asked: AtomicBool,
    pub calls: Lease,
    pub tokens: Lease,
    /// Numbers this instance's calls, so Redis applies only the newest.
    seq: AtomicU64,
}

impl Shared {
    pub fn new(tenant: Arc<str>, hub: Arc<LeaseHub>, period: Period) -> Shared {
        Shared {
            tenant,
            hub,
            asked: AtomicBool::new(false),
            calls: Lease::new(period),
            tokens: Lease::new(period),
            seq: AtomicU64::new(0),
        }
    }

    pub fn tenant(&self) -> &Arc<str> {
        &self.tenant
    }

    pub fn lease(&self, m: Measure) -> &Lease {
        match m {
            Measure::Calls => &self.calls,
            Measure::Tokens => &self.tokens,
        }
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
    pub(crate) fn take_calls(
        &self,
        period: Period,
        n: u64,
        limit: Option<u64>,
    ) -> Result<u64, u64> {
        self.take(&self.calls, period, n, limit)
    }

    /// Reserves `n` tokens from the token lease, as calls are taken.
    #[inline]
    pub(crate) fn take_tokens(
        &self,
        period: Period,
        n: u64,
        limit: Option<u64>,
    ) -> Result<u64, u64> {
        self.take(&self.tokens, period, n, limit)
    }

    #[inline]
    fn take(&self, lease: &Lease, period: Period, n: u64, limit: Option<u64>) -> Result<u64, u64> {
        if limit.is_none() {
            lease.over.add(period, n);
            return Ok(lease.fleet_used(period));
        }
        match lease.held.try_take(period, n) {
            Ok(left) => {
                if left < lease.low.load(Ordering::Relaxed) {
                    self.ask();
                }
                Ok(lease.fleet_used(period))
            }
            Err(_) => {
                self.ask();
                // Redis is down and the reserve may be spent: this
                // instance's share, allocated in Redis beforehand.
                if self.hub.local() && lease.reserve.try_take(period, n).is_ok() {
                    return Ok(lease.fleet_used(period));
                }
                Err(lease.fleet_used(period))
            }
        }
    }

    /// Gives back `n` calls a decision took in `period`.
    pub(crate) fn give_back_calls(&self, period: Period, n: u64, limit: Option<u64>) {
        if limit.is_none() {
            // Unlimited calls were counted as overage: count them back.
            self.calls.over.refund(period, n);
            return;
        }
        self.calls.held.add(period, n);
    }

    /// Gives back `n` tokens a reservation took in `period` (a reservation
    /// is made only under a token limit: they go back into the lease).
    pub(crate) fn give_back_tokens(&self, period: Period, n: u64) {
        self.tokens.held.add(period, n);
    }

    /// The next call's number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts usage that already happened: calls and tokens past the leases.
    pub fn add(&self, period: Period, calls: u64, tokens: u64) {
        if calls > 0 {
            self.calls.over.add(period, calls);
        }
        if tokens > 0 {
            self.tokens.over.add(period, tokens);
            self.ask();
        }
    }

    /// The fleet's tokens as this instance can tell them (reservations in
    /// flight included).
    #[inline]
    pub fn tokens_used(&self, period: Period) -> u64 {
        self.tokens.fleet_used(period)
    }

    /// Sets the figures last seen (the persisted totals, at start-up).
    pub fn restore(&self, period: Period, calls: u64, tokens: u64) {
        self.calls.seen.set(period, calls);
        self.tokens.seen.set(period, tokens);
        self.calls.stored(period, calls);
        self.tokens.stored(period, tokens);
    }

    /// Whether either lease has totals Redis does not have yet.
    pub(crate) fn pending(&self, period: Period) -> bool {
        self.calls.pending(period) || self.tokens.pending(period)
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
        assert!(s.pending(p));
        s.calls.acked(p, t);
        assert!(!s.pending(p));
    }

    #[test]
    fn a_lease_of_last_month_is_nothing() {
        let s = shared();
        s.calls.grants(Period(0), 5);
        assert_eq!(s.take_calls(Period(1), 1, Some(10)), Err(0));
    }

    #[test]
    fn tokens_are_reserved_from_their_own_lease_and_counted_past_it() {
        let s = shared();
        let p = Period(0);
        assert_eq!(s.take_tokens(p, 300, Some(1_000)), Err(0), "no lease yet");
        s.tokens.grants(p, 500);
        s.tokens.saw(p, 500);
        assert_eq!(s.take_tokens(p, 300, Some(1_000)), Ok(300));
        assert_eq!(s.take_tokens(p, 300, Some(1_000)), Err(300));
        s.give_back_tokens(p, 100); // settled at 200
        assert_eq!(s.tokens_used(p), 200);
        s.add(p, 0, 50); // reported usage: past the lease
        assert_eq!(s.tokens_used(p), 250);
        let t = s.tokens.totals(p);
        assert_eq!((t.spent, t.over, t.granted), (200, 50, 500));
        assert_eq!(s.calls.totals(p), Totals::default(), "calls untouched");
    }
}
