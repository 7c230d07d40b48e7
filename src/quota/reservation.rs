//! Token reservations: what a request may use of the token quota, taken
//! before it runs ([`TenantState::acquire_reserving`]) and settled when its
//! answer is known.
//!
//! A [`Reservation`] owns the reserved tokens: [`settle`](Reservation::settle)
//! replaces them with what the request used, and dropping it unsettled gives
//! them back - so every exit path (an error, a timeout, a client gone, a
//! stream cut, a panic) returns them without code of its own.
//!
//! `POST /api/v1/authorize` hands its reservation to the [`Book`], which
//! names it (`reservationId`): a usage record carrying that id settles it
//! (the record's tokens count as reported usage, the reservation is given
//! back), and one never settled is given back after its time to live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::period::{Nanos, Period};
use super::scoped::Hold;
use super::TenantState;

/// Tokens reserved for one request, and what its decision took of the
/// tenant's other limits ([`Hold`]). Dropped unsettled, it gives them back.
#[derive(Debug)]
pub struct Reservation {
    tenant: Arc<TenantState>,
    period: Period,
    tokens: u64,
    hold: Option<Hold>,
}

impl Reservation {
    /// Owns the `tokens` a decision reserved in `period` and its `hold`
    /// (neither: `None`).
    pub fn new(
        tenant: Arc<TenantState>,
        period: Period,
        tokens: u64,
        hold: Option<Hold>,
    ) -> Option<Reservation> {
        (tokens > 0 || hold.is_some()).then_some(Reservation {
            tenant,
            period,
            tokens,
            hold,
        })
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Micro-dollars reserved of the tenant's spend limits.
    pub fn spend(&self) -> u64 {
        self.hold.as_ref().map_or(0, Hold::spend)
    }

    /// Gives back the calls the decision took of the other limits.
    pub(crate) fn refund_calls(&mut self) {
        if let Some(h) = self.hold.as_mut() {
            h.refund_calls();
        }
    }

    /// The request used `used` tokens costing `spend` micro-dollars: they
    /// replace the reservation (the rest given back, or what passed it
    /// counted).
    pub(crate) fn settle(self, now: Nanos, used: u64, spend: u64) {
        self.settle_apart(now, used, used, spend);
    }

    /// [`settle`](Self::settle), when `quota_used` of the `used` tokens are
    /// still to count against the token quota (the rest counted while
    /// the answer streamed).
    pub(crate) fn settle_apart(mut self, now: Nanos, quota_used: u64, used: u64, spend: u64) {
        let reserved = std::mem::take(&mut self.tokens);
        if reserved > 0 || quota_used > 0 {
            self.tenant
                .settle_tokens(now, self.period, reserved, quota_used);
        }
        if let Some(h) = self.hold.take() {
            h.settle(used, spend);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.tokens > 0 {
            self.tenant.release_tokens(self.period, self.tokens);
        }
    }
}

const SHARDS: usize = 16;

struct Held {
    reservation: Reservation,
    expires_ms: i64,
}

/// The reservations `authorize` handed out, by id, until a record settles
/// them or they expire. Sixteen mutex-guarded shards: only requests that
/// reserve touch it.
pub struct Book {
    shards: [Mutex<HashMap<u64, Held>>; SHARDS],
    next: AtomicU64,
    /// Mixed into every id, so ids of another process (or of this one
    /// before a restart) name nothing here.
    salt: u64,
}

impl Default for Book {
    fn default() -> Self {
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64).rotate_left(32);
        Book {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next: AtomicU64::new(1),
            salt: salt | 1,
        }
    }
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book").field("held", &self.len()).finish()
    }
}

impl Book {
    /// Keeps `r` until `expires_ms`: its id (`rsv_` and 16 hex digits).
    pub fn keep(&self, r: Reservation, expires_ms: i64) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // An odd multiplier is a bijection: distinct numbers, distinct ids.
        let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.salt;
        self.shard(id).lock().insert(
            id,
            Held {
                reservation: r,
                expires_ms,
            },
        );
        format!("rsv_{id:016x}")
    }

    /// Takes out the reservation `id` of `tenant` (settled by the caller,
    /// or given back when dropped). Another tenant's id, an unknown or
    /// expired one: `None`, and nothing changes.
    pub fn take(&self, tenant: &str, id: &str) -> Option<Reservation> {
        let n = parse(id)?;
        let mut shard = self.shard(n).lock();
        if &*shard.get(&n)?.reservation.tenant.id != tenant {
            return None;
        }
        shard.remove(&n).map(|h| h.reservation)
    }

    /// Gives back every reservation expired at `now_ms`: how many.
    pub fn expire(&self, now_ms: i64) -> usize {
        let mut gone = 0;
        for shard in &self.shards {
            // Dropping one gives its tokens back (atomics only: no lock
            // of the book is taken again).
            shard.lock().retain(|_, h| {
                let keep = h.expires_ms > now_ms;
                gone += usize::from(!keep);
                keep
            });
        }
        gone
    }

    /// Reservations held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back what expires, every second, from a thread of its own,
    /// for as long as the book is in use (`now_ms`: the server's clock).
    pub(crate) fn expire_every_second(
        book: &Arc<Book>,
        now_ms: impl Fn() -> i64 + Send + 'static,
    ) -> std::io::Result<()> {
        let book = Arc::downgrade(book);
        std::thread::Builder::new()
            .name("tollgate-reservations".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let Some(book) = book.upgrade() else { return };
                let n = book.expire(now_ms());
                if n > 0 {
                    tracing::debug!(expired = n, "token reservations never settled, given back");
                }
            })
            .map(drop)
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Held>> {
        &self.shards[(id as usize) % SHARDS]
    }
}

/// The number in a reservation id, if it is one.
fn parse(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("rsv_")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;
    use crate::quota::ActivePlan;

    const NOW: Nanos = Nanos(1_700_000_000 * 1_000_000_000);

    fn tenant(id: &str, tokens: u64) -> Arc<TenantState> {
        let mut plan = Plan::unlimited("p");
        plan.monthly_tokens = Some(tokens);
        Arc::new(TenantState::new(
            id,
            ActivePlan::new(plan),
            false,
            Period::containing_nanos(NOW),
        ))
    }

    fn reserve(t: &Arc<TenantState>, n: u64) -> Option<Reservation> {
        let d = t.acquire_reserving(1, n, NOW);
        let g = d.grant?;
        Reservation::new(t.clone(), g.period, g.tokens, None)
    }

    #[test]
    fn reservations_fit_whole_and_settle_to_what_was_used() {
        let t = tenant("a", 1_000);
        let p = Period::containing_nanos(NOW);
        let a = reserve(&t, 600).unwrap();
        assert_eq!(t.used(p).1, 600);
        assert!(reserve(&t, 500).is_none(), "500 more do not fit");
        assert_eq!(t.used(p).1, 600, "a refused reservation takes nothing");
        a.settle(NOW, 150, 0);
        assert_eq!(t.used(p).1, 150, "the rest given back");
        let b = reserve(&t, 800).unwrap();
        b.settle(NOW, 900, 0);
        assert_eq!(t.used(p).1, 1_050, "what passed a reservation is counted");
        let c = t.acquire_reserving(1, 1, NOW);
        assert_eq!(c.outcome, crate::quota::Outcome::TokenQuotaExceeded);
        assert_eq!(t.used(p).0, 2, "the refused call was given back");
    }

    #[test]
    fn a_dropped_reservation_gives_its_tokens_back() {
        let t = tenant("a", 1_000);
        let p = Period::containing_nanos(NOW);
        {
            let _r = reserve(&t, 700).unwrap();
            assert_eq!(t.used(p).1, 700);
        }
        assert_eq!(t.used(p).1, 0);
    }

    #[test]
    fn the_book_hands_a_reservation_to_its_tenant_only_and_expires_the_rest() {
        let book = Book::default();
        let a = tenant("a", 1_000);
        let p = Period::containing_nanos(NOW);
        let id = book.keep(reserve(&a, 100).unwrap(), 5_000);
        assert!(id.starts_with("rsv_") && id.len() == 20, "{id}");
        assert!(book.take("b", &id).is_none(), "another tenant's id");
        assert!(book.take("a", "rsv_zz").is_none());
        let r = book.take("a", &id).expect("its own");
        assert!(book.take("a", &id).is_none(), "taken once");
        r.settle(NOW, 10, 0);
        assert_eq!(a.used(p).1, 10);
        let _ = book.keep(reserve(&a, 200).unwrap(), 5_000);
        let _ = book.keep(reserve(&a, 300).unwrap(), 9_000);
        assert_eq!(a.used(p).1, 510);
        assert_eq!(book.expire(5_000), 1);
        assert_eq!(a.used(p).1, 310, "the expired one given back");
        assert_eq!(book.len(), 1);
    }
}
