//! The limits of SPEC §12 counted by a fleet (`[cluster]`): what one
//! decision asks of the shared engine ([`Counted`], made by
//! [`Scoped::counted`]), how its answer becomes the decision's views or the
//! limit that refused ([`judge`]), and the seam ([`Fleet`]) through which a
//! hold's changes - give-backs, settlements, reported usage - reach it.
//!
//! The shared engine decides every applicable limit of a request at once,
//! all or nothing, and counts each instance's part apart (a request in
//! flight on an instance that died stops counting once that instance is
//! gone). This process's own counts stay what they are without a fleet:
//! a part of the fleet's, checked first, so a request this instance alone
//! refuses costs no round trip.

use std::sync::Arc;

use smallvec::SmallVec;

use super::slot::{need, refuses, view_of, Slot};
use super::{applicable, window, Ask, Breach, Scoped, State, Views};
use crate::model::{CompactString, Limit, Measure, Window};

/// How the shared engine counts a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A fixed window: the sum of every instance's part.
    Fixed,
    /// The burst window: one GCRA arrival time (microseconds).
    Burst,
    /// Requests in flight: the sum of the live instances' parts.
    InFlight,
}

/// One applicable limit of a decision, as the fleet counts it.
#[derive(Clone, Debug)]
pub struct Counted {
    /// Where the fleet keeps it: tenant, limit, scope, window and subject.
    pub key: String,
    pub kind: Kind,
    pub amount: u64,
    /// What the request takes (0: the limit is open while anything is left).
    pub need: u64,
    /// How long the count must outlive now (milliseconds).
    pub ttl_ms: i64,
    /// The burst window's emission interval and capacity in requests.
    pub interval_us: i64,
    pub burst: u64,
    limit: Limit,
    subject: CompactString,
}

/// The limits a decision asks of the fleet, and the tenant's billing day.
#[derive(Clone, Debug, Default)]
pub struct Asked {
    pub items: SmallVec<[Counted; 4]>,
    day: u8,
}

/// The fleet's count of one limit: a fixed window's or in flight's total,
/// or the burst window's arrival time in microseconds.
pub type FleetCount = i64;

/// One change to a count a decision took from the fleet.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: String,
    pub kind: Kind,
    /// Units added (negative: given back); in flight: -1 to leave.
    pub by: i64,
    pub interval_us: i64,
    pub ttl_ms: i64,
}

/// Where a tenant's changes go when a fleet shares its limits.
pub trait Fleet: Send + Sync + std::fmt::Debug {
    /// Queues `changes` for the shared engine (never blocks the caller).
    fn adjust(&self, changes: Vec<Change>);
}

/// Slack kept past a window's end, so a count outlives its last change.
const SLACK_MS: i64 = 60_000;
/// How long a count of requests in flight lasts untouched.
const IN_FLIGHT_TTL_MS: i64 = 86_400_000;

/// The key of a limit's count: `tg:{tenant}:l:` then the limit's name, its
/// scope, its window's number and the subject (last: it may hold anything).
pub fn key_of(tenant: &str, l: &Limit, n: i64, subject: &str) -> String {
    format!(
        "tg:{{{tenant}}}:l:{}:{}:{n}:{subject}",
        l.name, l.scope as u8
    )
}

fn kind_of(l: &Limit) -> Kind {
    match (l.measure, l.window) {
        (Measure::InFlight, _) | (_, Window::None) => Kind::InFlight,
        (_, Window::Burst) => Kind::Burst,
        _ => Kind::Fixed,
    }
}

fn interval_us(l: &Limit) -> i64 {
    (super::slot::interval_ns(l) / 1_000).max(1)
}

fn ttl_ms(l: &Limit, day: u8, n: i64, now_ms: i64) -> i64 {
    match kind_of(l) {
        Kind::Fixed => window::end_ms(l.window, day, n).saturating_sub(now_ms) + SLACK_MS,
        Kind::Burst => (l.per_seconds as i64).saturating_mul(1_000) + SLACK_MS,
        Kind::InFlight => IN_FLIGHT_TTL_MS,
    }
}

impl Scoped {
    /// Links the tenant `tenant` to `fleet`: from now on a hold's changes
    /// reach it too.
    pub fn set_fleet(&self, fleet: Arc<dyn Fleet>, tenant: Arc<str>) {
        let _ = self.fleet.set((fleet, tenant));
    }

    /// Whether a fleet shares these limits.
    pub fn shared(&self) -> bool {
        self.fleet.get().is_some()
    }

    /// What a decision of `ask` at `now_ms` asks of the fleet: every
    /// applicable limit (empty without a fleet).
    pub fn counted(&self, ask: &Ask<'_>, now_ms: i64) -> Asked {
        let Some((_, tenant)) = self.fleet.get() else {
            return Asked::default();
        };
        let guard = self.state.lock();
        let State { config, .. } = &*guard;
        let day = config.billing_day;
        let mut items = SmallVec::new();
        for a in applicable(&config.limits, config.key_own(ask.key_id), ask) {
            let l = a.limit;
            let n = window::index(l.window, day, now_ms);
            items.push(Counted {
                key: key_of(tenant, l, n, a.subject),
                kind: kind_of(l),
                amount: l.amount.unwrap_or(u64::MAX),
                need: need(l, ask),
                ttl_ms: ttl_ms(l, day, n, now_ms),
                interval_us: interval_us(l),
                burst: l.burst,
                limit: l.clone(),
                subject: a.subject.into(),
            });
        }
        Asked { items, day }
    }

    /// What reading `standing` (subjects and views of [`standing`](
    /// Self::standing)) from the fleet asks: one item per entry, in order
    /// (an entry whose limit is gone is dropped from `standing`).
    pub fn counted_standing(
        &self,
        standing: &mut Vec<(CompactString, super::View)>,
        now_ms: i64,
    ) -> Asked {
        let Some((_, tenant)) = self.fleet.get() else {
            standing.clear();
            return Asked::default();
        };
        let guard = self.state.lock();
        let config = &guard.config;
        let day = config.billing_day;
        let mut items = SmallVec::new();
        standing.retain(|(subject, view)| {
            let Some(l) = config.limit(view.scope, subject, &view.name) else {
                return false;
            };
            let n = window::index(l.window, day, now_ms);
            items.push(Counted {
                key: key_of(tenant, l, n, subject),
                kind: kind_of(l),
                amount: l.amount.unwrap_or(u64::MAX),
                need: 0,
                ttl_ms: ttl_ms(l, day, n, now_ms),
                interval_us: interval_us(l),
                burst: l.burst,
                limit: l.clone(),
                subject: subject.clone(),
            });
            true
        });
        Asked { items, day }
    }

    /// Counts a reported record's calls, tokens and spend in the fleet's
    /// windows of `at_ms` too (as [`debit`](Self::debit) does here).
    pub fn debit_fleet(&self, ask: &Ask<'_>, at_ms: i64) {
        let delta = super::Delta {
            calls: ask.calls as i64,
            tokens: ask.tokens as i64,
            spend: ask.spend as i64,
            leave: false,
        };
        self.forward(ask, at_ms, &delta);
    }

    /// Sends `delta` to what a decision of `ask` at `at_ms` took of the
    /// fleet (to the windows of `at_ms`: a window that has passed keeps
    /// its count apart, and nothing reads it).
    pub(super) fn forward(&self, ask: &Ask<'_>, at_ms: i64, delta: &super::Delta) {
        let Some((fleet, tenant)) = self.fleet.get() else {
            return;
        };
        let changes = {
            let guard = self.state.lock();
            let State { config, .. } = &*guard;
            let day = config.billing_day;
            let mut out = Vec::new();
            for a in applicable(&config.limits, config.key_own(ask.key_id), ask) {
                let l = a.limit;
                let by = match l.measure {
                    Measure::Calls => delta.calls,
                    Measure::Tokens => delta.tokens,
                    Measure::SpendUsd => delta.spend,
                    Measure::InFlight => -i64::from(delta.leave),
                };
                let kind = kind_of(l);
                let n = window::index(l.window, day, at_ms);
                // The burst window gives back only (a debit has no slot in it).
                if by == 0 || (kind == Kind::Burst && by > 0) {
                    continue;
                }
                if l.measure != Measure::InFlight && kind == Kind::InFlight {
                    continue;
                }
                out.push(Change {
                    key: key_of(tenant, l, n, a.subject),
                    kind,
                    by,
                    interval_us: interval_us(l),
                    ttl_ms: ttl_ms(l, day, n, at_ms),
                });
            }
            out
        };
        if !changes.is_empty() {
            fleet.adjust(changes);
        }
    }
}

/// The fleet's count of `c` as a slot of this process's arithmetic.
fn slot_of(c: &Counted, count: FleetCount, day: u8, now_ms: i64) -> Slot {
    match c.kind {
        Kind::Burst => Slot {
            window: count.saturating_mul(1_000),
            used: 0,
        },
        Kind::Fixed => Slot {
            window: window::index(c.limit.window, day, now_ms),
            used: count.max(0) as u64,
        },
        Kind::InFlight => Slot {
            window: 0,
            used: count.max(0) as u64,
        },
    }
}

/// Replaces the views of `standing` (as [`Scoped::counted_standing`] left
/// it, one per item of `asked`) with the fleet's `counts`.
pub fn fleet_standing(
    asked: &Asked,
    counts: &[FleetCount],
    now_ms: i64,
    standing: &mut [(CompactString, super::View)],
) {
    for ((c, &count), (_, view)) in asked.items.iter().zip(counts).zip(standing) {
        *view = view_of(
            &c.limit,
            slot_of(c, count, asked.day, now_ms),
            now_ms,
            asked.day,
        );
    }
}

/// What the fleet answered of `asked` (each limit's count: before the
/// decision when `refused` names any, after it otherwise) as the
/// decision's views, or the limit that refused: of those that did, the
/// one that holds the request longest.
pub fn judge(
    asked: &Asked,
    counts: &[FleetCount],
    refused: &[bool],
    ask: &Ask<'_>,
    now_ms: i64,
) -> Result<Views, Breach> {
    let day = asked.day;
    let slot = |c: &Counted, count: FleetCount| slot_of(c, count, day, now_ms);
    let mut breach: Option<Breach> = None;
    for ((c, &count), &no) in asked.items.iter().zip(counts).zip(refused) {
        if !no {
            continue;
        }
        let s = slot(c, count);
        let retry_ms = refuses(&c.limit, &s, ask, now_ms, day).unwrap_or(1);
        if breach.as_ref().is_none_or(|b| retry_ms > b.retry_ms) {
            breach = Some(Breach {
                subject: c.subject.clone(),
                retry_ms,
                view: view_of(&c.limit, s, now_ms, day),
                table_full: false,
            });
        }
    }
    if let Some(b) = breach {
        return Err(b);
    }
    Ok(asked
        .items
        .iter()
        .zip(counts)
        .map(|(c, &count)| view_of(&c.limit, slot(c, count), now_ms, day))
        .collect())
}
