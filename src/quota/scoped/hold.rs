//! [`Hold`]: what one decision took of a tenant's [`Scoped`] limits, until
//! the request's usage is known. Dropped, it gives back what it still
//! holds: its reserved tokens and spend and its place in flight.

use std::sync::Arc;

use super::{Ask, Delta, Ids, Scoped};
use crate::model::CompactString;

/// What one allowed decision took of the scoped limits.
#[derive(Debug)]
pub struct Hold {
    scoped: Arc<Scoped>,
    /// A key id (`key_` and 16 characters) is held inline.
    key_id: CompactString,
    ids: Ids,
    at_ms: i64,
    calls: u64,
    tokens: u64,
    spend: u64,
    in_flight: bool,
    /// The fleet took it too (`[cluster]`): its changes go there as well.
    shared: bool,
}

impl Hold {
    /// Owns what `ask` took of `scoped` at `at_ms` (`ids`: its subjects,
    /// as [`Scoped::take`] answered them).
    pub fn new(scoped: Arc<Scoped>, ask: &Ask<'_>, ids: Ids, at_ms: i64) -> Hold {
        Hold {
            scoped,
            key_id: ask.key_id.into(),
            ids,
            at_ms,
            calls: ask.calls,
            tokens: ask.tokens,
            spend: ask.spend,
            in_flight: true,
            shared: false,
        }
    }

    /// The fleet took what this hold took: its changes reach the fleet.
    pub fn taken_by_fleet(&mut self) {
        self.shared = true;
    }

    fn change(&self, delta: Delta) {
        self.scoped
            .adjust(&self.key_id, &self.ids, self.at_ms, delta);
        if self.shared {
            self.scoped.forward(&self.ask(), self.at_ms, &delta);
        }
    }

    /// The limits it took of.
    pub fn scoped(&self) -> &Arc<Scoped> {
        &self.scoped
    }

    /// Its subjects by name (their ids are kept where a fleet shares the
    /// limits, the one place that needs them).
    fn ask(&self) -> Ask<'_> {
        Ask {
            key_id: &self.key_id,
            user: self.ids.user.as_deref().unwrap_or(""),
            bot: self.ids.bot.as_deref().unwrap_or(""),
            model: self.ids.model.as_deref().unwrap_or(""),
            calls: 0,
            tokens: 0,
            spend: 0,
        }
    }

    /// Micro-dollars reserved.
    pub fn spend(&self) -> u64 {
        self.spend
    }

    /// Gives back the calls it took (Tollgate could not serve the request).
    pub(crate) fn refund_calls(&mut self) {
        let calls = std::mem::take(&mut self.calls);
        if calls > 0 {
            let delta = Delta {
                calls: -(calls as i64),
                ..Delta::default()
            };
            self.change(delta);
        }
    }

    /// The request used `tokens` and `spend` (micro-dollars): they replace
    /// what was reserved, and its place in flight is given back.
    pub fn settle(mut self, tokens: u64, spend: u64) {
        let delta = Delta {
            calls: 0,
            tokens: tokens as i64 - std::mem::take(&mut self.tokens) as i64,
            spend: spend as i64 - std::mem::take(&mut self.spend) as i64,
            leave: std::mem::take(&mut self.in_flight),
        };
        self.change(delta);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.tokens > 0 || self.spend > 0 || self.in_flight {
            let delta = Delta {
                calls: 0,
                tokens: -(self.tokens as i64),
                spend: -(self.spend as i64),
                leave: self.in_flight,
            };
            self.change(delta);
        }
    }
}
