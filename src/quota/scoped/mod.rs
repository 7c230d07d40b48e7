//! The limits of SPEC §12 past a plan's own fields: [`Scoped`], one per
//! tenant that has any, checks every applicable limit of a request - the
//! tenant's, its key's, its end user's, its bot's, its model's - and takes
//! from all of them or from none.
//!
//! A tenant's state sits behind one mutex: a decision locks it once,
//! checks each limit, and only when every one allows takes from each, so
//! no request is refused by what another took and then gave back, and
//! exactly `amount` passes when demand exceeds any one limit. Tenants
//! without such limits never touch it (their decision is the lock-free
//! one of [`super::TenantState`]).
//!
//! End users, bots and models are chosen by the tenant's clients, so
//! their counts live in a table bounded per tenant (`[limits]
//! max_subjects_per_tenant`). An entry whose windows have all passed (and
//! that holds nothing in flight) is idle: dropping it loses nothing. When
//! the table is full, idle entries are swept (at most once a second); a
//! new subject that still finds no room is refused - never given a fresh
//! allowance by evicting one that has counts.
//!
//! What a decision took is a [`Hold`]: settled with what the request used
//! (its reserved tokens and spend replaced), its calls given back when
//! Tollgate could not serve it, and whatever it still holds given back
//! when it is dropped - so every exit path returns it.

mod fleet;
mod hold;
mod slot;
mod table;
pub(crate) mod window;

pub use fleet::{fleet_standing, judge, key_of, Asked, Change, Counted, Fleet, FleetCount, Kind};
pub use hold::Hold;
pub use slot::View;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use smallvec::SmallVec;

use self::slot::{add, apply, refuses, roll, view_of, Entry, Slot};
use self::table::{Counts, Found, Mark, Tracked, Who, SWEEP_MS};
use crate::model::{CompactString, Limit, Measure, Scope, Window};

/// Micro-dollars of a cost in US dollars (negative and non-finite: 0).
pub fn micro_usd(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).round() as u64
    } else {
        0
    }
}

/// Subjects one tenant may track unless configured otherwise.
pub const DEFAULT_MAX_SUBJECTS: usize = 100_000;

/// What a request asks of the limits.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ask<'a> {
    pub key_id: &'a str,
    pub user: &'a str,
    pub bot: &'a str,
    pub model: &'a str,
    pub calls: u64,
    /// Tokens reserved (0: the limit is open while anything is left).
    pub tokens: u64,
    /// Micro-dollars reserved (0: as for tokens).
    pub spend: u64,
}

impl<'a> Ask<'a> {
    /// What a usage record counts: its key, end user, bot and model, its
    /// calls, tokens and cost.
    pub fn of(r: &'a crate::model::UsageRecord) -> Ask<'a> {
        Ask {
            key_id: &r.key_id,
            user: &r.extra().user_id,
            bot: &r.extra().bot_id,
            model: &r.model,
            calls: r.calls,
            tokens: r.tokens,
            spend: micro_usd(r.cost_usd),
        }
    }
}

/// The limit that refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    pub view: View,
    /// Which subject it counts (the key id, user, bot or model; empty
    /// for the tenant).
    pub subject: CompactString,
    /// Milliseconds until the request could pass.
    pub retry_ms: i64,
    /// The subject could not be tracked: the tenant's table is full.
    pub table_full: bool,
}

impl Breach {
    /// The decision's outcome it is.
    pub fn outcome(&self) -> super::Outcome {
        use super::Outcome;
        match (self.view.measure, self.view.window) {
            (Measure::Calls, Window::Burst) => Outcome::RateLimited,
            (Measure::Calls, _) => Outcome::QuotaExceeded,
            (Measure::Tokens, _) => Outcome::TokenQuotaExceeded,
            (Measure::SpendUsd, _) => Outcome::BudgetExceeded,
            (Measure::InFlight, _) => Outcome::InFlightFull,
        }
    }
}

/// Where a decision found its subjects - its key, end user, bot and
/// model - for its hold to find them again; and, where a fleet shares the
/// limits (its changes name the subjects there), the end user's, bot's
/// and model's ids as the table holds them (shared, not copied).
#[derive(Clone, Debug, Default)]
pub struct Ids {
    marks: [Option<Mark>; 4],
    pub(super) user: Option<Arc<str>>,
    pub(super) bot: Option<Arc<str>>,
    pub(super) model: Option<Arc<str>>,
}

/// The views of a decision's applicable limits (no allocation for a few).
pub type Views = SmallVec<[View; 4]>;

/// What the limits are: the tenant's merged list, its billing day, its
/// keys' own.
struct Config {
    /// The tenant's limits: its plan's, each replaced by the tenant's own
    /// of the same name, and the tenant's others.
    limits: Arc<[Limit]>,
    billing_day: u8,
    /// The keys' own limits, by key id.
    keys: HashMap<CompactString, Arc<[Limit]>, foldhash::fast::RandomState>,
}

impl Config {
    /// A key's own limits, if it has any.
    fn key_own(&self, key_id: &str) -> Option<&[Limit]> {
        if self.keys.is_empty() {
            return None;
        }
        self.keys.get(key_id).map(|l| &**l)
    }

    /// The limit `name` of a subject of `scope` (`id`: a key's, for its own).
    fn limit(&self, scope: Scope, id: &str, name: &str) -> Option<&Limit> {
        let own = (scope == Scope::Key).then(|| self.key_own(id)).flatten();
        self.limits
            .iter()
            .chain(own.into_iter().flatten())
            .find(|l| l.name == name && l.scope == scope)
    }

    /// Whether an entry still counts something at `now_ms`: a window of
    /// it has not passed, its bucket is not full, something of it is in
    /// flight. One that does not can be dropped without losing a count.
    fn live(&self, now_ms: i64) -> impl Fn(Scope, &str, &Entry) -> bool + '_ {
        let day = self.billing_day;
        let now_ns = now_ms.saturating_mul(1_000_000);
        move |scope, id, e| {
            e.slots.iter().any(
                |(name, slot)| match self.limit(scope, id, name).map(|l| l.window) {
                    None => false,
                    Some(Window::Burst) => slot.window > now_ns,
                    Some(Window::None) => slot.used > 0,
                    Some(w) => slot.used > 0 && slot.window == window::index(w, day, now_ms),
                },
            )
        }
    }
}

struct State {
    config: Config,
    counts: Counts,
}

/// One tenant's limits of SPEC §12 and their counts.
pub struct Scoped {
    state: Mutex<State>,
    max_subjects: std::sync::atomic::AtomicUsize,
    /// The tenant's own limits and billing day, as last set (kept to
    /// merge with a changed plan).
    own: Mutex<(Arc<[Limit]>, Option<u8>)>,
    /// The fleet that shares these limits, and the tenant's id there.
    fleet: std::sync::OnceLock<(Arc<dyn Fleet>, Arc<str>)>,
}

impl std::fmt::Debug for Scoped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Scoped")
            .field("limits", &s.config.limits.len())
            .field("subjects", &s.counts.tracked())
            .finish()
    }
}

/// The plan's limits with the tenant's replacing those of the same name.
pub fn merged(plan: &[Limit], tenant: &[Limit]) -> Vec<Limit> {
    let mut out: Vec<Limit> = plan
        .iter()
        .filter(|p| !tenant.iter().any(|t| t.name == p.name))
        .cloned()
        .collect();
    out.extend(tenant.iter().cloned());
    out
}

/// One applicable limit of a request, and which subject it counts.
struct Applies<'l, 'a> {
    limit: &'l Limit,
    subject: &'a str,
}

/// How a tenant's [`Scoped`] is made: the bound of its table of
/// subjects, and the fleet that shares its limits (`[cluster]`).
#[derive(Clone, Debug)]
pub struct Setup {
    pub max_subjects: usize,
    pub fleet: Option<Arc<dyn Fleet>>,
}

impl Scoped {
    /// The limits of tenant `tenant`, made as `setup` says.
    pub fn made(setup: &Setup, tenant: &Arc<str>) -> Scoped {
        let s = Scoped::new(setup.max_subjects);
        if let Some(fleet) = &setup.fleet {
            s.set_fleet(fleet.clone(), tenant.clone());
        }
        s
    }

    pub fn new(max_subjects: usize) -> Scoped {
        Scoped {
            state: Mutex::new(State {
                config: Config {
                    limits: Arc::from(Vec::new()),
                    billing_day: 1,
                    keys: HashMap::default(),
                },
                counts: Counts::new(),
            }),
            max_subjects: std::sync::atomic::AtomicUsize::new(max_subjects.max(1)),
            own: Mutex::new((Arc::from(Vec::new()), None)),
            fleet: std::sync::OnceLock::new(),
        }
    }

    /// Sets the limits from the plan's and the tenant's own (`None`: keep
    /// the tenant's as they were). Counts of limits that keep their name
    /// are kept.
    /// Returns the names of the limits whose counts must be rebuilt from
    /// the records (after [`forget`](Self::forget)): new ones, and those whose
    /// scope, measure or window changed.
    pub fn configure(
        &self,
        plan: &Arc<[Limit]>,
        tenant: Option<(&[Limit], Option<u8>)>,
    ) -> Vec<CompactString> {
        let mut own = self.own.lock();
        if let Some((limits, day)) = tenant {
            *own = (Arc::from(limits.to_vec()), day);
        }
        // Without limits of its own, the tenant shares its plan's list.
        // Its limits that replace the plan's own fields are the plan's
        // decision's (`ActivePlan::overridden`), not counted here again.
        let counted: Vec<Limit> = own
            .0
            .iter()
            .filter(|l| l.plan_field().is_none())
            .cloned()
            .collect();
        let limits = if counted.is_empty() {
            plan.clone()
        } else {
            Arc::from(merged(plan, &counted))
        };
        let mut s = self.state.lock();
        let changed = reshaped(&s.config.limits, &limits);
        s.config.limits = limits;
        s.config.billing_day = own.1.unwrap_or(1);
        changed
    }

    /// The tenant's own limits, as last set.
    pub fn own_limits(&self) -> Arc<[Limit]> {
        self.own.lock().0.clone()
    }

    /// Sets (or, with an empty list, drops) a key's own limits: the names
    /// whose counts must be rebuilt, as [`configure`](Self::configure).
    pub fn set_key(&self, key_id: &str, limits: &[Limit]) -> Vec<CompactString> {
        let mut s = self.state.lock();
        let before = s
            .config
            .keys
            .get(key_id)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let changed = reshaped(&before, limits);
        if limits.is_empty() {
            s.config.keys.remove(key_id);
        } else {
            s.config
                .keys
                .insert(key_id.into(), Arc::from(limits.to_vec()));
        }
        changed
    }

    /// Drops every count of the limits `names` (before they are rebuilt
    /// from the records with [`debit_to`](Self::debit_to)).
    pub fn forget(&self, names: &[CompactString]) {
        let mut s = self.state.lock();
        s.counts.tenant.slots.retain(|(n, _)| !names.contains(n));
        s.counts
            .each_mut(|e| e.slots.retain(|(n, _)| !names.contains(n)));
    }

    /// Sets the bound of the table of subjects.
    pub fn set_max_subjects(&self, n: usize) {
        self.max_subjects
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn max(&self) -> usize {
        self.max_subjects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Subjects tracked now (end users, bots, models, keys).
    pub fn subjects(&self) -> usize {
        self.state.lock().counts.tracked()
    }

    /// Checks every limit `ask` meets at `now_ms` and takes from all of
    /// them, or from none: the views of every applicable limit, or the
    /// limit that refused.
    pub fn take(&self, ask: &Ask<'_>, now_ms: i64) -> Result<(Views, Ids), Breach> {
        self.decide(ask, now_ms, true)
    }

    /// Whether `ask` would pass now (a dry run): takes nothing.
    pub fn check(&self, ask: &Ask<'_>, now_ms: i64) -> Result<Views, Breach> {
        self.decide(ask, now_ms, false).map(|(v, _)| v)
    }

    fn decide(&self, ask: &Ask<'_>, now_ms: i64, take: bool) -> Result<(Views, Ids), Breach> {
        let max = self.max();
        let shared = self.shared();
        let mut guard = self.state.lock();
        let State { config, counts } = &mut *guard;
        let applies = applicable(&config.limits, config.key_own(ask.key_id), ask);
        let day = config.billing_day;
        let whos = whos(counts, ask, needed(&applies));
        // Each subject a limit counts is found, or tracked if it is new and
        // the table has room.
        let (tenant, mut found) = match counts.find_or_track(whos, now_ms, max, config.live(now_ms))
        {
            Ok(found) => found,
            Err(scope) => {
                let a = applies.iter().find(|a| a.limit.scope == scope);
                let Some(a) = a.or(applies.first()) else {
                    return Ok((Views::new(), Ids::default()));
                };
                return Err(Breach {
                    subject: a.subject.into(),
                    retry_ms: SWEEP_MS,
                    view: view_of(a.limit, Slot::default(), now_ms, day),
                    table_full: true,
                });
            }
        };
        let mut tenant = Some(tenant);
        // Every limit is checked; of those that refuse, the one that holds
        // the request longest is named (its wait is the earliest moment
        // the request could pass) ...
        let mut breach: Option<Breach> = None;
        for a in &applies {
            let Some(e) = entry(&mut tenant, &mut found, a.limit.scope) else {
                continue;
            };
            let slot = e.slot(&a.limit.name);
            roll(a.limit, slot, now_ms, day);
            if let Some(retry_ms) = refuses(a.limit, slot, ask, now_ms, day) {
                if breach.as_ref().is_none_or(|b| retry_ms > b.retry_ms) {
                    breach = Some(Breach {
                        subject: a.subject.into(),
                        retry_ms,
                        view: view_of(a.limit, *slot, now_ms, day),
                        table_full: false,
                    });
                }
            }
        }
        if let Some(b) = breach {
            return Err(b);
        }
        // ... then taken from, every one (the lock is held throughout).
        let mut views = Views::new();
        for a in &applies {
            let Some(e) = entry(&mut tenant, &mut found, a.limit.scope) else {
                continue;
            };
            let slot = e.slot(&a.limit.name);
            if take {
                add(a.limit, slot, ask, now_ms);
            }
            views.push(view_of(a.limit, *slot, now_ms, day));
        }
        let id = |t: &Option<&mut Tracked>| t.as_ref().filter(|_| shared).map(|(id, _)| id.clone());
        let ids = Ids {
            marks: std::array::from_fn(|i| Counts::mark(whos[i], &found[i])),
            user: id(&found[1]),
            bot: id(&found[2]),
            model: id(&found[3]),
        };
        Ok((views, ids))
    }

    /// Every limit of the tenant with its count now: the tenant's, and each
    /// tracked subject's (for the billing views).
    pub fn standing(&self, now_ms: i64) -> Vec<(CompactString, View)> {
        let guard = self.state.lock();
        let State { config, counts } = &*guard;
        let day = config.billing_day;
        let mut out = Vec::new();
        let mut show = |subject: &str, l: &Limit, slot: Option<&Slot>| {
            let mut slot = slot.copied().unwrap_or_default();
            roll(l, &mut slot, now_ms, day);
            out.push((CompactString::from(subject), view_of(l, slot, now_ms, day)));
        };
        for l in config.limits.iter().filter(|l| l.amount.is_some()) {
            if l.scope == Scope::Tenant {
                show("", l, counts.tenant.peek(&l.name));
            }
        }
        for (scope, (id, e)) in counts.each() {
            for (name, slot) in &e.slots {
                if let Some(l) = config.limit(scope, id, name).filter(|l| l.amount.is_some()) {
                    show(id, l, Some(slot));
                }
            }
        }
        out
    }

    /// Changes what a decision at `at_ms` took of the subjects it found
    /// (`ids`; `key_id`: its key's): `calls`, `tokens` and `spend` added
    /// (negative: given back) to the limits of each measure, while their
    /// window lasts; `leave` gives back its place in flight.
    pub(super) fn adjust(&self, key_id: &str, ids: &Ids, at_ms: i64, delta: Delta) {
        let mut guard = self.state.lock();
        let State { config, counts } = &mut *guard;
        // The limits of the subjects it found (a subject it did not count
        // then is not counted now).
        let found_as = |scope: Scope| match scope {
            Scope::Tenant => Some(""),
            Scope::Key => Some(key_id).filter(|k| !k.is_empty()),
            s => ids.marks[s as usize - 1].map(|_| ""),
        };
        let applies = applicable_to(&config.limits, config.key_own(key_id), found_as);
        let day = config.billing_day;
        let (tenant, mut found): Found<'_> = counts.find_marked(&ids.marks);
        let mut tenant = Some(tenant);
        for a in &applies {
            let Some(e) = entry(&mut tenant, &mut found, a.limit.scope) else {
                continue;
            };
            if let Some(slot) = e.find(&a.limit.name) {
                apply(a.limit, slot, at_ms, day, &delta);
            }
        }
    }

    /// Where the counts of the current windows start: the earliest start
    /// of a fixed window among the limits - of those named in `only`, when
    /// given (`None`: no such limit has one).
    pub fn counted_since(&self, now_ms: i64, only: Option<&[CompactString]>) -> Option<i64> {
        let s = self.state.lock();
        let day = s.config.billing_day;
        s.config
            .limits
            .iter()
            .chain(s.config.keys.values().flat_map(|l| l.iter()))
            .filter(|l| l.amount.is_some() && only.is_none_or(|n| n.contains(&l.name)))
            .filter(|l| !matches!(l.window, Window::Burst | Window::None))
            .map(|l| window::end_ms(l.window, day, window::index(l.window, day, now_ms) - 1))
            .min()
    }

    /// Counts usage that happened without a decision (a reported record
    /// with no reservation): its calls, tokens and spend, in the windows
    /// of `at_ms` that are the current ones at `now_ms`. A subject the
    /// table has no room for is not counted (it would be refused on its
    /// next request anyway).
    pub fn debit(&self, ask: &Ask<'_>, at_ms: i64, now_ms: i64) {
        self.debit_to(ask, at_ms, now_ms, None);
    }

    /// [`debit`](Self::debit), to the limits named in `only` alone when
    /// given (their counts rebuilt after they were added or reshaped).
    pub fn debit_to(&self, ask: &Ask<'_>, at_ms: i64, now_ms: i64, only: Option<&[CompactString]>) {
        let max = self.max();
        let mut guard = self.state.lock();
        let State { config, counts } = &mut *guard;
        let applies = applicable(&config.limits, config.key_own(ask.key_id), ask);
        let day = config.billing_day;
        let mut whos = whos(counts, ask, needed(&applies));
        for who in whos.iter_mut() {
            if who.is_some_and(|w| !counts.track(w, now_ms, max, config.live(now_ms))) {
                *who = None;
            }
        }
        let delta = Delta {
            calls: ask.calls as i64,
            tokens: ask.tokens as i64,
            spend: ask.spend as i64,
            leave: false,
        };
        let (tenant, mut found) = counts.find_each(whos);
        let mut tenant = Some(tenant);
        for a in &applies {
            let named = only.is_none_or(|n| n.contains(&a.limit.name));
            if matches!(a.limit.window, Window::Burst | Window::None) || !named {
                continue;
            }
            let Some(e) = entry(&mut tenant, &mut found, a.limit.scope) else {
                continue;
            };
            let slot = e.slot(&a.limit.name);
            roll(a.limit, slot, now_ms, day);
            apply(a.limit, slot, at_ms, day, &delta);
        }
    }
}

/// The subjects of `ask` in the scopes of `needed` (a key, an end user, a
/// bot, a model), hashed.
fn whos<'a>(counts: &Counts, ask: &Ask<'a>, needed: u8) -> [Option<Who<'a>>; 4] {
    let who = |scope: Scope, id: &'a str| {
        (needed & (1 << scope as u8) != 0 && !id.is_empty()).then(|| counts.who(scope, id))
    };
    [
        who(Scope::Key, ask.key_id),
        who(Scope::User, ask.user),
        who(Scope::Bot, ask.bot),
        who(Scope::Model, ask.model),
    ]
}

/// The entry a limit of `scope` counts in: the tenant's, or its subject's.
fn entry<'e>(
    tenant: &'e mut Option<&mut Entry>,
    found: &'e mut [Option<&mut Tracked>; 4],
    scope: Scope,
) -> Option<&'e mut Entry> {
    match scope {
        Scope::Tenant => tenant.as_deref_mut(),
        _ => found[scope as usize - 1].as_deref_mut().map(|(_, e)| e),
    }
}

/// A change to what a decision took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub calls: i64,
    pub tokens: i64,
    pub spend: i64,
    pub leave: bool,
}

fn applicable<'l, 'a>(
    limits: &'l [Limit],
    key_own: Option<&'l [Limit]>,
    ask: &Ask<'a>,
) -> SmallVec<[Applies<'l, 'a>; 8]> {
    applicable_to(limits, key_own, |scope| {
        let id = match scope {
            Scope::Tenant => return Some(""),
            Scope::Key => ask.key_id,
            Scope::User => ask.user,
            Scope::Bot => ask.bot,
            Scope::Model => ask.model,
        };
        Some(id).filter(|s| !s.is_empty())
    })
}

/// The limits of `limits` and `key_own` that apply where `subject` names
/// a subject of their scope (`None`: the request has none).
fn applicable_to<'l, 'a>(
    limits: &'l [Limit],
    key_own: Option<&'l [Limit]>,
    subject: impl Fn(Scope) -> Option<&'a str>,
) -> SmallVec<[Applies<'l, 'a>; 8]> {
    let own = key_own.unwrap_or(&[]);
    // Plain loops: an iterator chain collected into a SmallVec was a
    // tenth of the decision.
    let mut out = SmallVec::new();
    for limit in limits {
        // A key's own limit replaces the plan's and tenant's of its name.
        let replaced = limit.scope == Scope::Key
            && !own.is_empty()
            && own.iter().any(|o| o.name == limit.name);
        if limit.amount.is_none() || replaced {
            continue;
        }
        if let Some(subject) = subject(limit.scope) {
            out.push(Applies { limit, subject });
        }
    }
    for limit in own.iter().filter(|l| l.amount.is_some()) {
        if let Some(subject) = subject(limit.scope) {
            out.push(Applies { limit, subject });
        }
    }
    out
}

/// The names of `after`'s limits whose counts `before` does not hold: new
/// names, and names whose scope, measure, window or burst period changed
/// (an amount changed keeps its count).
fn reshaped(before: &[Limit], after: &[Limit]) -> Vec<CompactString> {
    let same = |a: &Limit, b: &Limit| {
        a.scope == b.scope
            && a.measure == b.measure
            && a.window == b.window
            && a.per_seconds == b.per_seconds
    };
    let mut out: Vec<CompactString> = after
        .iter()
        .filter(|a| a.amount.is_some())
        .filter(|a| !before.iter().any(|b| b.name == a.name && same(a, b)))
        .map(|a| a.name.clone())
        .collect();
    out.dedup();
    out
}

/// The scopes `applies` counts, as bits (by [`Scope`]'s order).
fn needed(applies: &[Applies<'_, '_>]) -> u8 {
    applies
        .iter()
        .fold(0, |bits, a| bits | 1 << a.limit.scope as u8)
}
