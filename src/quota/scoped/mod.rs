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

mod hold;
pub(crate) mod window;

pub use hold::Hold;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use smallvec::SmallVec;

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
/// How often a full table is swept for idle entries.
const SWEEP_MS: i64 = 1_000;

/// One limit's count: the window it belongs to and what was used in it
/// (for the burst window, `window` is the GCRA's theoretical arrival
/// time in nanoseconds; for in-flight, `used` is the requests served now).
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    window: i64,
    used: u64,
}

/// One subject's counts, by limit name.
#[derive(Debug, Default)]
struct Entry {
    slots: SmallVec<[(CompactString, Slot); 2]>,
}

impl Entry {
    fn slot(&mut self, name: &str) -> &mut Slot {
        match self.slots.iter().position(|(n, _)| n == name) {
            Some(i) => &mut self.slots[i].1,
            None => {
                self.slots.push((name.into(), Slot::default()));
                &mut self.slots.last_mut().expect("just pushed").1
            }
        }
    }

    fn peek(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    fn find(&mut self, name: &str) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

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

/// The ids of a decision's end user, bot and model as the table holds
/// them (each shared: a hold keeps them without copying a string).
#[derive(Clone, Debug, Default)]
pub struct Ids {
    pub user: Option<Arc<str>>,
    pub bot: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
}

/// The views of a decision's applicable limits (no allocation for a few).
pub type Views = SmallVec<[View; 4]>;

struct State {
    /// The tenant's limits: its plan's, each replaced by the tenant's own
    /// of the same name, and the tenant's others.
    limits: Arc<[Limit]>,
    billing_day: u8,
    /// The keys' own limits, by key id.
    keys: HashMap<CompactString, Arc<[Limit]>, Hasher>,
    tenant: Entry,
    /// Keys, end users, bots and models, a table each (by [`at`]): looked
    /// up by `&str`, so that a decision on a known subject allocates
    /// nothing, whatever its id's length.
    subjects: [Table; 4],
    last_sweep_ms: i64,
}

/// Hashes subjects' ids with foldhash: a few nanoseconds for a short id,
/// and seeded per process, so that ids a client picks cannot be made to
/// collide.
type Hasher = foldhash::fast::RandomState;

/// One scope's subjects.
type Table = HashMap<Arc<str>, Entry, Hasher>;

/// One tenant's limits of SPEC §12 and their counts.
pub struct Scoped {
    state: Mutex<State>,
    max_subjects: std::sync::atomic::AtomicUsize,
    /// The tenant's own limits and billing day, as last set (kept to
    /// merge with a changed plan).
    own: Mutex<(Arc<[Limit]>, Option<u8>)>,
}

impl std::fmt::Debug for Scoped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("Scoped")
            .field("limits", &s.limits.len())
            .field("subjects", &s.tracked())
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

impl Scoped {
    pub fn new(max_subjects: usize) -> Scoped {
        Scoped {
            state: Mutex::new(State {
                limits: Arc::from(Vec::new()),
                billing_day: 1,
                keys: HashMap::default(),
                tenant: Entry::default(),
                subjects: Default::default(),
                last_sweep_ms: i64::MIN,
            }),
            max_subjects: std::sync::atomic::AtomicUsize::new(max_subjects.max(1)),
            own: Mutex::new((Arc::from(Vec::new()), None)),
        }
    }

    /// Sets the limits from the plan's and the tenant's own (`None`: keep
    /// the tenant's as they were). Counts of limits that keep their name
    /// are kept.
    pub fn configure(&self, plan: &[Limit], tenant: Option<(&[Limit], Option<u8>)>) {
        let mut own = self.own.lock();
        if let Some((limits, day)) = tenant {
            *own = (Arc::from(limits.to_vec()), day);
        }
        let limits: Arc<[Limit]> = Arc::from(merged(plan, &own.0));
        let mut s = self.state.lock();
        s.limits = limits;
        s.billing_day = own.1.unwrap_or(1);
    }

    /// Sets (or, with an empty list, drops) a key's own limits.
    pub fn set_key(&self, key_id: &str, limits: &[Limit]) {
        let mut s = self.state.lock();
        if limits.is_empty() {
            s.keys.remove(key_id);
        } else {
            s.keys.insert(key_id.into(), Arc::from(limits.to_vec()));
        }
    }

    /// Sets the bound of the table of subjects.
    pub fn set_max_subjects(&self, n: usize) {
        self.max_subjects
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    fn max(&self) -> usize {
        self.max_subjects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether any limit is set (on the tenant, its plan or a key).
    pub fn is_empty(&self) -> bool {
        let s = self.state.lock();
        s.limits.is_empty() && s.keys.is_empty()
    }

    /// Subjects tracked now (end users, bots, models, keys).
    pub fn subjects(&self) -> usize {
        self.state.lock().tracked()
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
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let limits = s.limits.clone();
        let key_own = s.key_limits(ask.key_id);
        let applies = applicable(&limits, key_own.as_deref(), ask);
        let day = s.billing_day;
        // Each subject a limit counts is tracked (made if new, when the
        // table has room) ...
        for a in &applies {
            if !s.track(a, now_ms, self.max()) {
                let view = view_of(a.limit, Slot::default(), now_ms, day);
                return Err(Breach {
                    subject: a.subject.into(),
                    retry_ms: SWEEP_MS,
                    view,
                    table_full: true,
                });
            }
        }
        // ... and looked up once: the tenant's entry and one per scope.
        let mut entries = s.entries(ask, needed(&applies));
        // Every limit is checked ...
        for a in &applies {
            let Some(e) = entries[a.limit.scope as usize].as_deref_mut() else {
                continue;
            };
            let slot = e.slot(&a.limit.name);
            roll(a.limit, slot, now_ms, day);
            if let Some(retry_ms) = refuses(a.limit, slot, ask, now_ms, day) {
                let view = view_of(a.limit, *slot, now_ms, day);
                return Err(Breach {
                    subject: a.subject.into(),
                    retry_ms,
                    view,
                    table_full: false,
                });
            }
        }
        // ... then taken from, every one (the lock is held throughout).
        let mut views = Views::new();
        for a in &applies {
            let Some(e) = entries[a.limit.scope as usize].as_deref_mut() else {
                continue;
            };
            let slot = e.slot(&a.limit.name);
            if take {
                add(a.limit, slot, ask, now_ms);
            }
            views.push(view_of(a.limit, *slot, now_ms, day));
        }
        // The ids of the subjects the limits count, as the table holds
        // them (shared, not copied), for the decision's hold.
        let mut ids = Ids::default();
        if take {
            let bits = needed(&applies);
            let id = |scope: Scope, subject: &str| {
                if bits & (1 << scope as u8) == 0 {
                    return None;
                }
                s.subjects[at(scope)]
                    .get_key_value(subject)
                    .map(|(k, _)| k.clone())
            };
            ids = Ids {
                user: id(Scope::User, ask.user),
                bot: id(Scope::Bot, ask.bot),
                model: id(Scope::Model, ask.model),
            };
        }
        Ok((views, ids))
    }

    /// Every limit of the tenant with its count now: the tenant's, and each
    /// tracked subject's (for the billing views).
    pub fn standing(&self, now_ms: i64) -> Vec<(CompactString, View)> {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let day = s.billing_day;
        let mut out = Vec::new();
        for l in s.limits.iter().filter(|l| l.amount.is_some()) {
            if l.scope == Scope::Tenant {
                let mut slot = s.tenant.find(&l.name).copied().unwrap_or_default();
                roll(l, &mut slot, now_ms, day);
                out.push((CompactString::default(), view_of(l, slot, now_ms, day)));
            }
        }
        for &scope in &Scope::ALL[1..] {
            for (subject, e) in &s.subjects[at(scope)] {
                let own = (scope == Scope::Key)
                    .then(|| s.keys.get(&**subject))
                    .flatten();
                let all = s
                    .limits
                    .iter()
                    .chain(own.into_iter().flat_map(|l| l.iter()));
                for l in all.filter(|l| l.scope == scope && l.amount.is_some()) {
                    if let Some(slot) = e.peek(&l.name) {
                        let mut slot = *slot;
                        roll(l, &mut slot, now_ms, day);
                        out.push((
                            CompactString::from(&**subject),
                            view_of(l, slot, now_ms, day),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Changes what a decision of `ask` at `at_ms` took: `calls`, `tokens`
    /// and `spend` added (negative: given back) to the limits of each
    /// measure, while their window lasts; `leave` gives back its place in
    /// flight.
    pub fn adjust(&self, ask: &Ask<'_>, at_ms: i64, delta: Delta) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let limits = s.limits.clone();
        let key_own = s.key_limits(ask.key_id);
        let day = s.billing_day;
        let applies = applicable(&limits, key_own.as_deref(), ask);
        let mut entries = s.entries(ask, needed(&applies));
        for a in &applies {
            let Some(e) = entries[a.limit.scope as usize].as_deref_mut() else {
                continue;
            };
            if let Some(slot) = e.find(&a.limit.name) {
                apply(a.limit, slot, at_ms, day, &delta);
            }
        }
    }

    /// Where the counts of the current windows start: the earliest start
    /// of a fixed window among the limits (`None`: no limit has one).
    pub fn counted_since(&self, now_ms: i64) -> Option<i64> {
        let s = self.state.lock();
        let day = s.billing_day;
        s.limits
            .iter()
            .chain(s.keys.values().flat_map(|l| l.iter()))
            .filter(|l| l.amount.is_some())
            .filter(|l| !matches!(l.window, Window::Burst | Window::None))
            .map(|l| window::end_ms(l.window, day, window::index(l.window, day, now_ms) - 1))
            .min()
    }

    /// Counts usage that happened without a decision (a reported record
    /// with no reservation): its calls, tokens and spend, in the windows
    /// of `at_ms` that are the current ones at `now_ms`.
    pub fn debit(&self, ask: &Ask<'_>, at_ms: i64, now_ms: i64) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let limits = s.limits.clone();
        let key_own = s.key_limits(ask.key_id);
        let day = s.billing_day;
        let delta = Delta {
            calls: ask.calls as i64,
            tokens: ask.tokens as i64,
            spend: ask.spend as i64,
            leave: false,
        };
        for a in applicable(&limits, key_own.as_deref(), ask) {
            if matches!(a.limit.window, Window::Burst | Window::None) {
                continue;
            }
            // A subject the table has no room for is not counted (it
            // would be refused on its next request anyway).
            if !s.track(&a, now_ms, self.max()) {
                continue;
            }
            let mut entries = s.entries(ask, 1 << a.limit.scope as u8);
            let Some(slot) = entries[a.limit.scope as usize]
                .as_deref_mut()
                .map(|e| e.slot(&a.limit.name))
            else {
                continue;
            };
            roll(a.limit, slot, now_ms, day);
            apply(a.limit, slot, at_ms, day, &delta);
        }
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
    let own = key_own.unwrap_or(&[]);
    let subject = |scope: Scope| {
        match scope {
            Scope::Tenant => Some(""),
            Scope::Key => Some(ask.key_id),
            Scope::User => Some(ask.user),
            Scope::Bot => Some(ask.bot),
            Scope::Model => Some(ask.model),
        }
        .filter(|s| scope == Scope::Tenant || !s.is_empty())
    };
    limits
        .iter()
        .filter(|l| !(l.scope == Scope::Key && own.iter().any(|o| o.name == l.name)))
        .chain(own.iter())
        .filter(|l| l.amount.is_some())
        .filter_map(|limit| subject(limit.scope).map(|subject| Applies { limit, subject }))
        .collect()
}

/// The scopes `applies` counts, as bits (by [`Scope`]'s order).
fn needed(applies: &[Applies<'_, '_>]) -> u8 {
    applies
        .iter()
        .fold(0, |bits, a| bits | 1 << a.limit.scope as u8)
}

/// The table of `scope`'s subjects (the tenant has none: its entry is its own).
fn at(scope: Scope) -> usize {
    match scope {
        Scope::Tenant | Scope::Key => 0,
        Scope::User => 1,
        Scope::Bot => 2,
        Scope::Model => 3,
    }
}

impl State {
    /// A key's own limits, if it has any.
    fn key_limits(&self, key_id: &str) -> Option<Arc<[Limit]>> {
        if self.keys.is_empty() {
            return None;
        }
        self.keys.get(key_id).cloned()
    }

    /// Makes `a`'s subject tracked if it is new: false when the table has
    /// no room for it (after sweeping idle entries).
    fn track(&mut self, a: &Applies<'_, '_>, now_ms: i64, max: usize) -> bool {
        if a.limit.scope == Scope::Tenant {
            return true;
        }
        let i = at(a.limit.scope);
        if self.subjects[i].contains_key(a.subject) {
            return true;
        }
        if self.tracked() >= max {
            if now_ms.saturating_sub(self.last_sweep_ms) < SWEEP_MS {
                return false;
            }
            self.last_sweep_ms = now_ms;
            self.sweep(now_ms);
            if self.tracked() >= max {
                return false;
            }
        }
        self.subjects[i].insert(Arc::from(a.subject), Entry::default());
        true
    }

    /// The entries of `ask`'s subjects of the scopes in `needed`, by
    /// [`Scope`] (each looked up once; `None` where it is not tracked).
    fn entries(&mut self, ask: &Ask<'_>, needed: u8) -> [Option<&mut Entry>; 5] {
        fn get<'m>(
            map: &'m mut Table,
            needed: u8,
            scope: Scope,
            id: &str,
        ) -> Option<&'m mut Entry> {
            if id.is_empty() || needed & (1 << scope as u8) == 0 {
                None
            } else {
                map.get_mut(id)
            }
        }
        let State {
            tenant,
            subjects: [keys, users, bots, models],
            ..
        } = self;
        [
            Some(tenant),
            get(keys, needed, Scope::Key, ask.key_id),
            get(users, needed, Scope::User, ask.user),
            get(bots, needed, Scope::Bot, ask.bot),
            get(models, needed, Scope::Model, ask.model),
        ]
    }

    /// Drops every entry that counts nothing any more: each of its windows
    /// has passed, its bucket is full, nothing of it is in flight.
    fn sweep(&mut self, now_ms: i64) {
        let day = self.billing_day;
        let now_ns = now_ms.saturating_mul(1_000_000);
        let limits = self.limits.clone();
        let keys = &self.keys;
        for &scope in &Scope::ALL[1..] {
            self.subjects[at(scope)].retain(|subject, e| {
                let own = (scope == Scope::Key)
                    .then(|| keys.get(&**subject))
                    .flatten();
                e.slots.iter().any(|(name, slot)| {
                    let limit = limits
                        .iter()
                        .chain(own.into_iter().flat_map(|l| l.iter()))
                        .find(|l| l.name == *name && l.scope == scope);
                    match limit.map(|l| l.window) {
                        None => false,
                        Some(Window::Burst) => slot.window > now_ns,
                        Some(Window::None) => slot.used > 0,
                        Some(w) => slot.used > 0 && slot.window == window::index(w, day, now_ms),
                    }
                })
            });
        }
    }

    /// Subjects tracked, of every scope.
    fn tracked(&self) -> usize {
        self.subjects.iter().map(Table::len).sum()
    }
}

/// Moves a fixed window's slot to the window of `now_ms` (its count
/// starts again at 0).
fn roll(l: &Limit, slot: &mut Slot, now_ms: i64, day: u8) {
    if matches!(l.window, Window::Burst | Window::None) {
        return;
    }
    let n = window::index(l.window, day, now_ms);
    if slot.window != n {
        *slot = Slot { window: n, used: 0 };
    }
}

/// The GCRA's emission interval of a burst limit, in nanoseconds.
fn interval_ns(l: &Limit) -> i64 {
    let amount = l.amount.unwrap_or(1).max(1);
    ((u128::from(l.per_seconds) * 1_000_000_000) / u128::from(amount)).max(1) as i64
}

/// What a request would take of `l`'s measure.
fn need(l: &Limit, ask: &Ask<'_>) -> u64 {
    match l.measure {
        Measure::Calls => ask.calls,
        Measure::Tokens => ask.tokens,
        Measure::SpendUsd => ask.spend,
        Measure::InFlight => 1,
    }
}

/// `Some(ms until it could pass)` when `l` refuses `ask`.
fn refuses(l: &Limit, slot: &Slot, ask: &Ask<'_>, now_ms: i64, day: u8) -> Option<i64> {
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

fn add(l: &Limit, slot: &mut Slot, ask: &Ask<'_>, now_ms: i64) {
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
fn apply(l: &Limit, slot: &mut Slot, at_ms: i64, day: u8, delta: &Delta) {
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

fn view_of(l: &Limit, slot: Slot, now_ms: i64, day: u8) -> View {
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
