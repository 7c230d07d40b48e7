//! [`Slots`]: places for work that holds server resources while it runs
//! (exports streaming, analytics reports computing), counted across the
//! server and per owner (a tenant), so that one key cannot take them all.
//! A place is given back when its [`Slot`] is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use parking_lot::Mutex;

use super::error::ApiError;

/// Places for one kind of work.
#[derive(Debug)]
pub struct Slots {
    /// The work's name in messages (`exports`, `reports`).
    what: &'static str,
    /// The error codes: the owner has all of its places, the server all.
    codes: (&'static str, &'static str),
    /// The `[limits]` keys that set the two bounds, for messages.
    keys: (&'static str, &'static str),
    max: u32,
    per_owner: u32,
    held: Mutex<(u32, HashMap<String, u32>)>,
}

/// One place; given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    owner: String,
}

impl Slots {
    /// `max` places across the server (`u32::MAX`: no bound but the
    /// owners'), `per_owner` for each owner.
    pub fn new(
        what: &'static str,
        codes: (&'static str, &'static str),
        keys: (&'static str, &'static str),
        max: u32,
        per_owner: u32,
    ) -> Arc<Slots> {
        Arc::new(Slots {
            what,
            codes,
            keys,
            max,
            per_owner,
            held: Mutex::default(),
        })
    }

    /// A place for `owner`, or the refusal: 429 with the first code when
    /// the owner has all of its own, 503 with the second when the server
    /// has all of them; both with `Retry-After`.
    pub fn take(self: &Arc<Self>, owner: &str) -> Result<Slot, ApiError> {
        let mut held = self.held.lock();
        if held.1.get(owner).copied().unwrap_or(0) >= self.per_owner {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                self.codes.0,
                format!(
                    "this tenant already has {} {} running ([limits] {}); finish one first",
                    self.per_owner, self.what, self.keys.1
                ),
            )
            .retry_after(1));
        }
        if held.0 >= self.max {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                self.codes.1,
                format!(
                    "{} {} are running ([limits] {}); try again shortly",
                    self.max, self.what, self.keys.0
                ),
            )
            .retry_after(1));
        }
        held.0 += 1;
        *held.1.entry(owner.to_string()).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            owner: owner.to_string(),
        })
    }

    /// Places taken now.
    pub fn active(&self) -> u32 {
        self.held.lock().0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_per_owner_and_in_all_and_come_back() {
        let s = Slots::new(
            "exports",
            ("too_many_exports", "exports_busy"),
            ("exports", "exports_per_tenant"),
            3,
            2,
        );
        let a1 = s.take("a").unwrap();
        let _a2 = s.take("a").unwrap();
        let e = s.take("a").err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (429, "too_many_exports"));
        let _b1 = s.take("b").unwrap();
        let e = s.take("c").err().unwrap();
        assert_eq!((e.status.as_u16(), e.code), (503, "exports_busy"));
        drop(a1);
        assert_eq!(s.active(), 2);
        assert!(s.take("c").is_ok());
    }
}
