//! [`Limits`]: what one instance keeps of the fleet's limits - the changes
//! waiting to go over (in order), its own part of every count it touched
//! (to put back should Redis lose them), and the epoch of the counts it
//! last put them in. Plain state, no I/O: the cluster's tasks and the
//! deterministic simulation drive it alike.

use std::collections::HashMap;

use crate::quota::scoped::{Change, Counted, Kind};

/// Changes that may wait at most (past that one is dropped and counted:
/// Redis has been away for very long).
pub(crate) const MAX_WAITING: usize = 1_000_000;

/// Changes sent in one call at most.
pub(crate) const BATCH: usize = 256;

/// One thing waiting to go over.
#[derive(Clone, Debug)]
pub(crate) enum Pending {
    Change(Change),
    /// Changes sent together under a token (sent again as they are, so
    /// Redis applies them once).
    Batch {
        token: String,
        changes: Vec<Change>,
    },
    /// A take whose answer never came: given back if Redis made it, and
    /// its token voided (`apply` false: only voided).
    Undo {
        token: String,
        items: Vec<(String, Kind, i64, i64)>,
        apply: bool,
    },
}

/// This instance's part of one count: units (fixed, in flight) or the
/// burst window's arrival time (us), and until when it matters (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) kind: Kind,
    pub(crate) value: i64,
    pub(crate) until_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Limits {
    pub(crate) waiting: Vec<Pending>,
    parts: HashMap<String, Part>,
    pub(crate) epoch: Option<i64>,
    pruned_ms: i64,
    seq: u64,
}

impl Limits {
    fn note(&mut self, key: &str, kind: Kind, until_ms: i64, f: impl FnOnce(i64) -> i64) {
        let part = self.parts.entry(key.to_string()).or_insert(Part {
            kind,
            value: 0,
            until_ms,
        });
        part.value = f(part.value).max(0);
        part.until_ms = part.until_ms.max(until_ms);
    }

    /// A new token for a take of `member`.
    pub(crate) fn token(&mut self, member: &str) -> String {
        self.seq += 1;
        format!("tg:t:{member}:{}", self.seq)
    }

    /// Queues `changes` (a hold's, a reported record's) at `now_ms`: this
    /// instance's parts change at once. False when too many wait.
    pub(crate) fn queue(&mut self, changes: Vec<Change>, now_ms: i64) -> bool {
        if self.waiting.len() + changes.len() > MAX_WAITING {
            return false;
        }
        for c in &changes {
            let (by, interval) = (c.by, c.interval_us);
            let until = now_ms + c.ttl_ms.max(1_000);
            self.note(&c.key, c.kind, until, |v| match c.kind {
                Kind::Burst => v.saturating_add(interval.saturating_mul(by)),
                _ => v.saturating_add(by),
            });
        }
        self.waiting
            .extend(changes.into_iter().map(Pending::Change));
        true
    }

    /// A take of `items` with `token` got no answer: queued to be undone.
    pub(crate) fn undo(&mut self, token: String, items: &[Counted]) {
        let items = items
            .iter()
            .map(|c| (c.key.clone(), c.kind, c.need as i64, c.interval_us))
            .collect();
        self.waiting.push(Pending::Undo {
            token,
            items,
            apply: true,
        });
    }

    /// A take of `items` answered with the counts after it, at `now_ms`:
    /// this instance's parts grow by what it took.
    pub(crate) fn taken(&mut self, items: &[Counted], counts: &[i64], now_ms: i64) {
        for (c, &count) in items.iter().zip(counts) {
            let need = c.need as i64;
            let until = now_ms + c.ttl_ms.max(1_000);
            match c.kind {
                Kind::Burst => self.note(&c.key, c.kind, until, |_| count),
                Kind::InFlight => self.note(&c.key, c.kind, until, |v| v + 1),
                Kind::Fixed if need > 0 => {
                    self.note(&c.key, c.kind, until, |v| v.saturating_add(need))
                }
                Kind::Fixed => {}
            }
        }
    }

    /// The parts to put back into counts of `epoch` at `now_ms` (`None`:
    /// they are in already). The changes waiting are in the parts, so they
    /// go with them. A waiting undo then only voids its token, and its
    /// counts are put back too (at this instance's part, which never held
    /// the take): whether Redis made the take or lost it, it is gone.
    pub(crate) fn parts_to_put(&mut self, epoch: i64, now_ms: i64) -> Option<Vec<(String, Part)>> {
        if now_ms - self.pruned_ms >= 10_000 {
            self.pruned_ms = now_ms;
            self.parts.retain(|_, p| p.until_ms > now_ms);
        }
        if self.epoch == Some(epoch) {
            return None;
        }
        let mut put: std::collections::BTreeMap<String, Part> = self
            .parts
            .iter()
            .filter(|(_, p)| p.until_ms > now_ms)
            .map(|(k, p)| (k.clone(), *p))
            .collect();
        self.waiting.retain_mut(|p| match p {
            Pending::Change(_) | Pending::Batch { .. } => false,
            Pending::Undo { items, apply, .. } => {
                *apply = false;
                for (key, kind, _, _) in items.iter() {
                    put.entry(key.clone()).or_insert(Part {
                        kind: *kind,
                        value: 0,
                        until_ms: now_ms + 60_000,
                    });
                }
                true
            }
        });
        Some(put.into_iter().collect())
    }

    /// The parts of [`parts_to_put`](Self::parts_to_put) are in the counts of `epoch`.
    pub(crate) fn put(&mut self, epoch: i64) {
        self.epoch = Some(epoch);
    }

    /// Takes the waiting things to send, changes gathered into batches
    /// (each with its token, for `member`).
    pub(crate) fn take_waiting(&mut self, member: &str) -> Vec<Pending> {
        let mut out = Vec::new();
        // Changes join only a batch made here: one sent before (its answer
        // lost) goes again exactly as it was, under its token.
        let mut open = false;
        for p in std::mem::take(&mut self.waiting) {
            match (p, out.last_mut()) {
                (Pending::Change(c), Some(Pending::Batch { changes, .. }))
                    if open && changes.len() < BATCH =>
                {
                    changes.push(c);
                }
                (Pending::Change(c), _) => {
                    let token = self.token(member);
                    out.push(Pending::Batch {
                        token,
                        changes: vec![c],
                    });
                    open = true;
                }
                (other, _) => {
                    out.push(other);
                    open = false;
                }
            }
        }
        out
    }

    /// Puts back `unsent` (in front of what was queued meanwhile).
    pub(crate) fn requeue(&mut self, unsent: Vec<Pending>) {
        let later = std::mem::take(&mut self.waiting);
        self.waiting = unsent;
        self.waiting.extend(later);
    }
}
