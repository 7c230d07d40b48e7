//! [`Counts`]: the tenant's own counts and a table per scope of the
//! subjects its limits count - keys, end users, bots, models - bounded by
//! the caller (`[limits] max_subjects_per_tenant`).
//!
//! Each subject is hashed once per decision ([`Who`]) and found with that
//! hash: foldhash, a few nanoseconds for a short id and seeded per
//! process, so that ids a client picks cannot be made to collide. An id is
//! kept as an `Arc<str>`, which a decision's hold shares instead of
//! copying.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use super::slot::Entry;
use crate::model::Scope;

type Hasher = foldhash::fast::RandomState;

/// A subject of a decision: its scope, its id and the id's hash.
#[derive(Clone, Copy, Debug)]
pub(super) struct Who<'a> {
    pub(super) scope: Scope,
    pub(super) id: &'a str,
    hash: u64,
}

/// A tracked subject: its id, shared, and its counts.
pub(super) type Tracked = (Arc<str>, Entry);

/// Where a decision found a subject: its id's hash and its entry's
/// serial. A hold finds the entry again by them without keeping the id
/// (no reference count, no string compared); an entry dropped and made
/// again since is another serial, and is not found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    hash: u64,
    serial: u64,
}

/// The tenant's counts and the subjects a decision met, found together.
pub(super) type Found<'c> = (&'c mut Entry, [Option<&'c mut Tracked>; 4]);

pub(super) struct Counts {
    /// The tenant's own counts.
    pub(super) tenant: Entry,
    /// Keys, end users, bots and models (by [`at`]).
    tables: [HashTable<Tracked>; 4],
    hasher: Hasher,
    last_sweep_ms: i64,
    /// The serial the next tracked subject gets.
    next_serial: u64,
}

/// The table of `scope` (the tenant has none: its counts are its own).
fn at(scope: Scope) -> usize {
    match scope {
        Scope::Tenant | Scope::Key => 0,
        Scope::User => 1,
        Scope::Bot => 2,
        Scope::Model => 3,
    }
}

/// When a full table was last swept for idle entries, at most once per this.
pub(super) const SWEEP_MS: i64 = 1_000;

impl Counts {
    pub(super) fn new() -> Counts {
        Counts {
            tenant: Entry::default(),
            tables: Default::default(),
            hasher: Hasher::default(),
            last_sweep_ms: i64::MIN,
            next_serial: 1,
        }
    }

    /// `id` of `scope`, hashed.
    pub(super) fn who<'a>(&self, scope: Scope, id: &'a str) -> Who<'a> {
        Who {
            scope,
            id,
            hash: self.hasher.hash_one(id),
        }
    }

    /// Subjects tracked, of every scope.
    pub(super) fn tracked(&self) -> usize {
        self.tables.iter().map(HashTable::len).sum()
    }

    /// Makes `who` tracked if it is new: false when the tables hold `max`
    /// and sweeping the idle entries (at most once every [`SWEEP_MS`]; an
    /// entry is kept while `live` says so) made no room.
    pub(super) fn track(
        &mut self,
        who: Who<'_>,
        now_ms: i64,
        max: usize,
        live: impl Fn(Scope, &str, &Entry) -> bool,
    ) -> bool {
        let table = &self.tables[at(who.scope)];
        if table.find(who.hash, |(k, _)| **k == *who.id).is_some() {
            return true;
        }
        if self.tracked() >= max {
            if now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_MS {
                return false;
            }
            self.last_sweep_ms = now_ms;
            for &scope in &Scope::ALL[1..] {
                self.tables[at(scope)].retain(|(id, e)| live(scope, id, e));
            }
            if self.tracked() >= max {
                return false;
            }
        }
        let hasher = &self.hasher;
        self.tables[at(who.scope)].insert_unique(
            who.hash,
            (Arc::from(who.id), Entry::new(&mut self.next_serial)),
            |(k, _)| hasher.hash_one(&**k),
        );
        true
    }

    /// The tenant's counts and the subjects of `whos`, each found once
    /// and made if it is new - or the scope of the first that could not be
    /// tracked (as [`track`](Self::track) says).
    pub(super) fn find_or_track(
        &mut self,
        whos: [Option<Who<'_>>; 4],
        now_ms: i64,
        max: usize,
        live: impl Fn(Scope, &str, &Entry) -> bool,
    ) -> Result<Found<'_>, Scope> {
        // With room for every subject a decision can bring, each is found
        // or made in one probe; near the bound, the checked way.
        if self.tracked() + whos.len() > max {
            for who in whos.iter().flatten() {
                if !self.track(*who, now_ms, max, &live) {
                    return Err(who.scope);
                }
            }
            return Ok(self.find_each(whos));
        }
        let Counts {
            tenant,
            tables,
            hasher,
            next_serial,
            ..
        } = self;
        Ok(per_table(tenant, tables, whos, |table, who| {
            let who = who?;
            let e = table.entry(
                who.hash,
                |(k, _)| **k == *who.id,
                |(k, _)| hasher.hash_one(&**k),
            );
            Some(
                e.or_insert_with(|| (Arc::from(who.id), Entry::new(next_serial)))
                    .into_mut(),
            )
        }))
    }

    /// The tenant's counts and the subjects a decision found (`marks`, by
    /// [`Scope`]'s order past the tenant), where they are still tracked.
    pub(super) fn find_marked(&mut self, marks: &[Option<Mark>; 4]) -> Found<'_> {
        let Counts { tenant, tables, .. } = self;
        per_table(tenant, tables, *marks, |table, mark| {
            let mark = mark?;
            table.find_mut(mark.hash, |(_, e)| e.serial == mark.serial)
        })
    }

    /// Where `who`, found as `t`, is: for a hold to find it again.
    pub(super) fn mark(who: Option<Who<'_>>, t: &Option<&mut Tracked>) -> Option<Mark> {
        let (who, (_, e)) = (who?, t.as_ref()?);
        Some(Mark {
            hash: who.hash,
            serial: e.serial,
        })
    }

    /// The tenant's counts, and the tracked subjects of `whos` (a key, an
    /// end user, a bot, a model), each found once, together.
    pub(super) fn find_each(&mut self, whos: [Option<Who<'_>>; 4]) -> Found<'_> {
        let Counts { tenant, tables, .. } = self;
        per_table(tenant, tables, whos, |table, who| {
            let who = who?;
            table.find_mut(who.hash, |(k, _)| **k == *who.id)
        })
    }

    /// Runs `f` on every tracked subject's counts.
    pub(super) fn each_mut(&mut self, mut f: impl FnMut(&mut Entry)) {
        for table in &mut self.tables {
            for (_, e) in table.iter_mut() {
                f(e);
            }
        }
    }

    /// Every tracked subject, with its scope.
    pub(super) fn each(&self) -> impl Iterator<Item = (Scope, &Tracked)> {
        Scope::ALL[1..]
            .iter()
            .flat_map(|&scope| self.tables[at(scope)].iter().map(move |t| (scope, t)))
    }
}

/// The tenant's counts, and in each table (keys, end users, bots, models)
/// what `f` finds there with that table's argument of `args`.
fn per_table<'c, A>(
    tenant: &'c mut Entry,
    tables: &'c mut [HashTable<Tracked>; 4],
    args: [A; 4],
    mut f: impl FnMut(&'c mut HashTable<Tracked>, A) -> Option<&'c mut Tracked>,
) -> Found<'c> {
    let [keys, users, bots, models] = tables;
    let [k, u, b, m] = args;
    (tenant, [f(keys, k), f(users, u), f(bots, b), f(models, m)])
}
