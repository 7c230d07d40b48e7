//! The registry: plans, tenants and keys, in memory for the request path and
//! in the store for restarts.
//!
//! Reads on the request path go through two [`ShardedMap`]s (key hash ->
//! [`KeyEntry`], tenant id -> [`TenantState`]) and never lock. Admin writes are
//! cold: they take the catalog's `parking_lot` mutex, write the store first,
//! then publish to the maps, so memory never holds what the store lacks.

pub(crate) mod change;
pub(crate) mod follow;
pub mod sharded;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};

pub use self::change::{Change, ChangeFeed};
use self::sharded::ShardedMap;
use crate::auth::{generate_key, random_id, KeyHash, KeyHasher};
use crate::model::{ApiKey, CompactString, ModelError, Plan, StoredKey, Tenant, TenantStatus};
use crate::quota::counters::Counting;
use crate::quota::period::Period;
use crate::quota::scoped::DEFAULT_MAX_SUBJECTS;
use crate::quota::{ActivePlan, TenantState};
use crate::store::{Store, StoreError};

/// What a key lookup finds: held in the key table itself (no `Arc` of
/// its own: 40 bytes a key less).
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key's id (`key_` and 16 characters: held inline).
    pub key_id: CompactString,
    pub tenant: Arc<TenantState>,
    /// From then on (ms since the epoch) the secret is refused as expired;
    /// `i64::MAX` for never.
    pub expires_ms: i64,
}

impl KeyEntry {
    /// The entry of a secret of key `key_id` of `tenant`, working until
    /// `until` (`None`: as long as the key is not revoked).
    pub fn new(key_id: &str, tenant: &Arc<TenantState>, until: Option<DateTime<Utc>>) -> KeyEntry {
        KeyEntry {
            key_id: key_id.into(),
            tenant: tenant.clone(),
            expires_ms: until.map_or(i64::MAX, |t| t.timestamp_millis()),
        }
    }
}

/// Why a secret finds no tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// No key has it (or its key was revoked).
    Unknown,
    /// Its key expired, or a rotation's overlap ended.
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Invalid(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct Catalog {
    plans: BTreeMap<String, Arc<ActivePlan>>,
    // No copy of the tenants: the tenant table holds each one's plan and
    // suspension, the store its name and creation date (at 100,000
    // tenants this saves ~24 MB).
    // Nor of the keys: the key table holds the live ones by hash, the
    // store every key by id (at 100,000 keys this saves ~11 MB).
}

pub struct Registry {
    store: Arc<dyn Store>,
    keys: ShardedMap<KeyHash, KeyEntry, KeyHasher>,
    tenants: ShardedMap<Arc<str>, Arc<TenantState>>,
    /// Admin-side view; its lock also serialises every admin write.
    catalog: Mutex<Catalog>,
    /// Told of every admin write ([`Registry::subscribe`]).
    feeds: RwLock<Vec<Arc<dyn ChangeFeed>>>,
    /// Where the tenants' quotas are counted (this process, or shared).
    counting: Counting,
    /// How many instances share each burst limit (`[cluster]`: the live
    /// instances; 1 alone).
    burst_share: std::sync::atomic::AtomicU32,
    max_subjects: std::sync::atomic::AtomicUsize,
}

fn not_found(what: &str, id: &str) -> RegistryError {
    RegistryError::NotFound(format!("{what} '{id}' not found"))
}

impl Registry {
    /// Loads everything from the store; the current period's counters come
    /// from the persisted totals. Plans in `defaults` are added when the store
    /// has no plan at all (first start).
    pub fn load(
        store: Arc<dyn Store>,
        defaults: &[Plan],
        now: DateTime<Utc>,
    ) -> Result<Registry, RegistryError> {
        Registry::load_counting(store, defaults, now, Counting::Local)
    }

    /// [`load`](Self::load), with the quotas counted as `counting` says.
    pub fn load_counting(
        store: Arc<dyn Store>,
        defaults: &[Plan],
        now: DateTime<Utc>,
        counting: Counting,
    ) -> Result<Registry, RegistryError> {
        let mut plans = store.plans()?;
        if plans.is_empty() {
            for p in defaults {
                p.validate()?;
                store.put_plan(p)?;
            }
            plans = defaults.to_vec();
        }
        let mut cat = Catalog::default();
        for p in plans {
            cat.plans.insert(p.id.clone(), ActivePlan::new(p));
        }
        let period = Period::containing(now);
        let totals: std::collections::HashMap<String, _> =
            store.period_totals(period)?.into_iter().collect();
        let mut states = Vec::new();
        let setup = crate::quota::scoped::Setup {
            max_subjects: DEFAULT_MAX_SUBJECTS,
            fleet: counting.fleet().cloned(),
        };
        for t in store.tenants()? {
            let plan = cat.plans.get(&t.plan_id).cloned().ok_or_else(|| {
                RegistryError::Conflict(format!(
                    "tenant '{}' refers to missing plan '{}'",
                    t.id, t.plan_id
                ))
            })?;
            let state = Arc::new(TenantState::counted(
                &t.id,
                plan.clone(),
                t.status == TenantStatus::Suspended,
                period,
                &counting,
            ));
            if let Some(tot) = totals.get(&t.id) {
                state.restore(period, tot.calls, tot.tokens);
            }
            state.configure(plan, Some((&t.limits, t.billing_day)), &setup);
            states.push((state.id.clone(), state));
        }
        let by_id: std::collections::HashMap<_, _> = states.iter().cloned().collect();
        let mut key_entries = Vec::new();
        for k in store.keys()? {
            if k.key.revoked_at.is_some() {
                continue;
            }
            if let Some(state) = by_id.get(k.key.tenant_id.as_str()) {
                state.set_key_limits(&k.key.id, &k.key.limits, &setup);
                for (hash, until) in k.secrets() {
                    key_entries.push((KeyHash(hash), KeyEntry::new(&k.key.id, state, until)));
                }
            }
        }
        let reg = Registry {
            store,
            keys: ShardedMap::new(),
            tenants: ShardedMap::new(),
            catalog: Mutex::new(cat),
            feeds: RwLock::new(Vec::new()),
            counting,
            burst_share: std::sync::atomic::AtomicU32::new(1),
            max_subjects: std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_SUBJECTS),
        };
        // The counts of the limits of SPEC §12 live in memory: rebuilt from
        // the records of their current windows.
        for (_, state) in &states {
            rebuild_limits(state, reg.store.as_ref(), now.timestamp_millis(), None)?;
        }
        reg.tenants.replace_all(states);
        reg.keys.replace_all(key_entries);
        Ok(reg)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// How many end users, bots, models and keys one tenant's limits may
    /// track (`[limits] max_subjects_per_tenant`).
    pub(crate) fn max_subjects(&self) -> usize {
        self.max_subjects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How a tenant's limits of SPEC §12 are made: the bound of its table
    /// of subjects, and the fleet that shares them (`[cluster]`).
    pub(crate) fn setup(&self) -> crate::quota::scoped::Setup {
        crate::quota::scoped::Setup {
            max_subjects: self.max_subjects(),
            fleet: self.counting.fleet().cloned(),
        }
    }

    /// Sets [`max_subjects`](Self::max_subjects) for tenants configured from now on.
    pub fn set_max_subjects(&self, n: usize) {
        let _cat = self.catalog.lock();
        self.max_subjects
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
        for state in self.tenants.values() {
            if let Some(s) = state.scoped() {
                s.set_max_subjects(n);
            }
        }
    }

    /// How many instances share each burst limit.
    pub(crate) fn burst_share(&self) -> u32 {
        self.burst_share.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Divides every plan's burst limit among `n` instances (the cluster,
    /// when the live instances change): each tenant's next decision uses
    /// its share.
    pub(crate) fn set_burst_share(&self, n: u32) {
        let n = n.max(1);
        let mut cat = self.catalog.lock();
        if self
            .burst_share
            .swap(n, std::sync::atomic::Ordering::AcqRel)
            == n
        {
            return;
        }
        let plans: std::collections::HashMap<String, Arc<ActivePlan>> = cat
            .plans
            .iter()
            .map(|(id, p)| (id.clone(), ActivePlan::shared_by(p.plan.clone(), n)))
            .collect();
        for state in self.tenants.values() {
            if let Some(plan) = plans.get(&state.plan().plan.id) {
                state.set_plan(plan.clone());
            }
        }
        cat.plans.extend(plans);
    }

    // ---- request path -------------------------------------------------

    /// Runs `f` on the entry of a key hash: no lock, no allocation.
    #[inline]
    pub fn with_key<R>(&self, hash: &KeyHash, f: impl FnOnce(Option<&KeyEntry>) -> R) -> R {
        self.keys.with(hash, f)
    }

    /// The tenant a secret belongs to, if the key exists, is not revoked
    /// and has not expired (at the clock's `now_ms`).
    pub fn authenticate(&self, secret: &str, now_ms: i64) -> Option<Arc<TenantState>> {
        self.key_of(secret, now_ms).ok().map(|(t, _)| t)
    }

    /// The tenant and key id a secret belongs to at `now_ms`, or why not.
    /// No allocation (the key id is held inline).
    pub fn key_of(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<(Arc<TenantState>, CompactString), KeyProblem> {
        if !crate::auth::looks_like_key(secret) {
            return Err(KeyProblem::Unknown);
        }
        self.with_key(&KeyHash::of(secret), |e| match e {
            None => Err(KeyProblem::Unknown),
            Some(e) if now_ms >= e.expires_ms => Err(KeyProblem::Expired),
            Some(e) => Ok((e.tenant.clone(), e.key_id.clone())),
        })
    }

    pub fn tenant_state(&self, id: &str) -> Option<Arc<TenantState>> {
        self.tenants.get(id)
    }

    pub(crate) fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    // ---- plans ----------------------------------------------------------

    pub fn plans(&self) -> Vec<Plan> {
        self.catalog
            .lock()
            .plans
            .values()
            .map(|p| p.plan.clone())
            .collect()
    }

    pub fn plan(&self, id: &str) -> Option<Plan> {
        self.catalog.lock().plans.get(id).map(|p| p.plan.clone())
    }

    pub fn create_plan(&self, plan: Plan, now: DateTime<Utc>) -> Result<Plan, RegistryError> {
        plan.validate()?;
        let mut cat = self.catalog.lock();
        if cat.plans.contains_key(&plan.id) {
            return Err(RegistryError::Conflict(format!(
                "plan '{}' already exists",
                plan.id
            )));
        }
        self.store.put_plan(&plan)?;
        self.commit(&mut cat, Change::PlanPut(plan.clone()), now)?;
        Ok(plan)
    }

    /// Applies `change` to a copy of the plan; every tenant on it sees the
    /// new limits on its next request.
    pub(crate) fn update_plan(
        &self,
        id: &str,
        change: impl FnOnce(&mut Plan) -> Result<(), RegistryError>,
        now: DateTime<Utc>,
    ) -> Result<Plan, RegistryError> {
        let mut cat = self.catalog.lock();
        let mut plan = cat
            .plans
            .get(id)
            .ok_or_else(|| not_found("plan", id))?
            .plan
            .clone();
        change(&mut plan)?;
        if plan.id != id {
            return Err(ModelError::Invalid("a plan's id cannot change".into()).into());
        }
        plan.validate()?;
        self.store.put_plan(&plan)?;
        self.commit(&mut cat, Change::PlanPut(plan.clone()), now)?;
        Ok(plan)
    }

    pub(crate) fn delete_plan(&self, id: &str, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let mut cat = self.catalog.lock();
        if !cat.plans.contains_key(id) {
            return Err(not_found("plan", id));
        }
        if let Some(t) = self.on_plan(id).first() {
            return Err(RegistryError::Conflict(format!(
                "plan '{id}' is in use by tenant '{}'",
                t.id
            )));
        }
        self.store.delete_plan(id)?;
        self.commit(&mut cat, Change::PlanDeleted { id: id.to_string() }, now)
    }

    // ---- tenants --------------------------------------------------------

    /// Every tenant, by id (read from the store).
    pub fn tenants(&self) -> Result<Vec<Tenant>, RegistryError> {
        let _cat = self.catalog.lock();
        let mut all: Vec<Tenant> = self
            .store
            .tenants()?
            .into_iter()
            .filter(|t| self.tenants.get(t.id.as_str()).is_some())
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// A tenant this instance serves (its name and date read from the store).
    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>, RegistryError> {
        let _cat = self.catalog.lock();
        self.tenant_locked(id)
    }

    fn tenant_locked(&self, id: &str) -> Result<Option<Tenant>, RegistryError> {
        if self.tenants.get(id).is_none() {
            return Ok(None);
        }
        Ok(self.store.tenant(id)?)
    }

    /// The tenants whose plan is `plan_id`.
    fn on_plan(&self, plan_id: &str) -> Vec<Arc<TenantState>> {
        self.tenants
            .values()
            .into_iter()
            .filter(|s| s.plan().plan.id == plan_id)
            .collect()
    }

    pub fn create_tenant(
        &self,
        tenant: Tenant,
        now: DateTime<Utc>,
    ) -> Result<Tenant, RegistryError> {
        tenant.validate()?;
        let mut cat = self.catalog.lock();
        if self.tenants.get(tenant.id.as_str()).is_some() {
            return Err(RegistryError::Conflict(format!(
                "tenant '{}' already exists",
                tenant.id
            )));
        }
        if !cat.plans.contains_key(&tenant.plan_id) {
            return Err(
                ModelError::Invalid(format!("planId '{}' does not exist", tenant.plan_id)).into(),
            );
        }
        self.store.put_tenant(&tenant)?;
        self.commit(&mut cat, Change::TenantPut(tenant.clone()), now)?;
        Ok(tenant)
    }

    pub(crate) fn update_tenant(
        &self,
        id: &str,
        change: impl FnOnce(&mut Tenant) -> Result<(), RegistryError>,
        now: DateTime<Utc>,
    ) -> Result<Tenant, RegistryError> {
        let mut cat = self.catalog.lock();
        let mut tenant = self
            .tenant_locked(id)?
            .ok_or_else(|| not_found("tenant", id))?;
        change(&mut tenant)?;
        if tenant.id != id {
            return Err(ModelError::Invalid("a tenant's id cannot change".into()).into());
        }
        tenant.validate()?;
        if !cat.plans.contains_key(&tenant.plan_id) {
            return Err(
                ModelError::Invalid(format!("planId '{}' does not exist", tenant.plan_id)).into(),
            );
        }
        self.store.put_tenant(&tenant)?;
        self.commit(&mut cat, Change::TenantPut(tenant.clone()), now)?;
        Ok(tenant)
    }

    /// Deletes the tenant and purges everything stored under its id (its
    /// keys, records, totals, rollups and alert marks), so that a tenant
    /// created later with the same id starts from nothing: a tenant's
    /// identity is not its name. The request path lets go of it first (no
    /// key finds it, and records still queued for it are dropped, its state
    /// being retired), then the store purges. If the purge fails the tenant
    /// stays listed, and deleting it again finishes the job.
    pub(crate) fn delete_tenant(&self, id: &str, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let mut cat = self.catalog.lock();
        if self.tenants.get(id).is_none() {
            return Err(not_found("tenant", id));
        }
        self.release_tenant(&cat, id);
        self.store.delete_tenant(id)?;
        self.commit(&mut cat, Change::TenantDeleted { id: id.to_string() }, now)
    }

    // ---- keys -------------------------------------------------------------

    /// Creates a key; the secret is returned this once and kept only hashed.
    pub fn create_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(ApiKey, String), RegistryError> {
        self.create_key_with(tenant_id, name, expires_at, Vec::new(), now)
    }

    /// [`create_key`](Self::create_key) with the key's own limits (SPEC §12).
    pub fn create_key_with(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        limits: Vec<crate::model::Limit>,
        now: DateTime<Utc>,
    ) -> Result<(ApiKey, String), RegistryError> {
        check_key_limits(&limits)?;
        let mut cat = self.catalog.lock();
        let state = self
            .tenants
            .get(tenant_id)
            .ok_or_else(|| not_found("tenant", tenant_id))?;
        let secret = generate_key();
        let key = ApiKey {
            id: random_id("key_"),
            tenant_id: tenant_id.to_string(),
            name: name.to_string(),
            prefix: secret[..8].to_string(),
            created_at: now,
            revoked_at: None,
            expires_at,
            last_used_at: None,
            limits,
        };
        let stored = StoredKey {
            key: key.clone(),
            hash: KeyHash::of(&secret).0,
            previous: None,
        };
        debug_assert_eq!(&*state.id, tenant_id);
        self.store.put_key(&stored)?;
        self.commit(&mut cat, Change::KeyPut(stored), now)?;
        Ok((key, secret))
    }

    /// A new secret for a key: the key (its id, name and limits, its
    /// usage) stays; the old secret works until `overlap_until` (at most
    /// the key's own expiry), the new one as long as the key does. The
    /// new secret is returned this once.
    pub(crate) fn rotate_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        overlap_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(ApiKey, String), RegistryError> {
        let mut cat = self.catalog.lock();
        let mut stored = self.live_key(tenant_id, key_id)?;
        let secret = generate_key();
        stored.previous = Some(crate::model::PreviousSecret {
            hash: stored.hash,
            until: overlap_until.max(now),
        });
        stored.hash = KeyHash::of(&secret).0;
        stored.key.prefix = secret[..8].to_string();
        self.store.put_key(&stored)?;
        let key = stored.key.clone();
        self.commit(&mut cat, Change::KeyPut(stored), now)?;
        Ok((key, secret))
    }

    /// Sets (or, with `None`, lifts) a key's expiry.
    #[cfg(test)]
    pub(crate) fn set_key_expiry(
        &self,
        tenant_id: &str,
        key_id: &str,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<ApiKey, RegistryError> {
        self.update_key(tenant_id, key_id, |k| k.expires_at = expires_at, now)
    }

    /// Changes a live key's expiry or limits as `f` does (its secrets stay).
    pub(crate) fn update_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        f: impl FnOnce(&mut ApiKey),
        now: DateTime<Utc>,
    ) -> Result<ApiKey, RegistryError> {
        let mut cat = self.catalog.lock();
        let mut stored = self.live_key(tenant_id, key_id)?;
        f(&mut stored.key);
        check_key_limits(&stored.key.limits)?;
        self.store.put_key(&stored)?;
        let key = stored.key.clone();
        self.commit(&mut cat, Change::KeyPut(stored), now)?;
        Ok(key)
    }

    /// A key of `tenant_id` that is not revoked, as the store has it.
    fn live_key(&self, tenant_id: &str, key_id: &str) -> Result<StoredKey, RegistryError> {
        match self.key_of_tenant(tenant_id, key_id)? {
            k if k.key.revoked_at.is_none() => Ok(k),
            _ => Err(not_found("key", key_id)),
        }
    }

    /// A key of `tenant_id` (revoked or not), as the store has it.
    fn key_of_tenant(&self, tenant_id: &str, key_id: &str) -> Result<StoredKey, RegistryError> {
        match self.store.key(key_id)? {
            Some(k) if k.key.tenant_id == tenant_id && self.tenants.get(tenant_id).is_some() => {
                Ok(k)
            }
            _ => Err(not_found("key", key_id)),
        }
    }

    pub fn keys(&self, tenant_id: &str) -> Result<Vec<ApiKey>, RegistryError> {
        let _cat = self.catalog.lock();
        if self.tenants.get(tenant_id).is_none() {
            return Err(not_found("tenant", tenant_id));
        }
        let used = self.store.keys_last_used(tenant_id)?;
        let mut keys: Vec<ApiKey> = self
            .store
            .keys_of(tenant_id)?
            .into_iter()
            .map(|k| ApiKey {
                last_used_at: used.get(&k.key.id).map(|&ms| crate::clock::ms_to_utc(ms)),
                ..k.key
            })
            .collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    pub(crate) fn revoke_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKey, RegistryError> {
        let mut cat = self.catalog.lock();
        let mut stored = self.key_of_tenant(tenant_id, key_id)?;
        if stored.key.revoked_at.is_none() {
            stored.key.revoked_at = Some(now);
            self.store.put_key(&stored)?;
            let change = Change::KeyRevoked {
                key_id: key_id.to_string(),
            };
            self.commit(&mut cat, change, now)?;
        }
        Ok(stored.key)
    }
}

/// A key's own limits: each counts that key's use (scope `key`).
fn check_key_limits(limits: &[crate::model::Limit]) -> Result<(), RegistryError> {
    Ok(crate::model::check_limits(
        limits,
        &[crate::model::Scope::Key],
    )?)
}

/// Rebuilds the counts of the limits `names` of a tenant - added, or
/// reshaped, while their windows run - from its stored records of those
/// windows: a limit set at noon counts the morning's use, as one known at
/// start-up does (never a fresh allowance mid-window).
pub(crate) fn rebuild_named(
    state: &TenantState,
    store: &dyn Store,
    now_ms: i64,
    names: &[crate::model::CompactString],
) {
    let Some(s) = state.scoped().filter(|_| !names.is_empty()) else {
        return;
    };
    s.forget(names);
    if let Err(e) = rebuild_limits(state, store, now_ms, Some(names)) {
        tracing::warn!(tenant = %state.id, error = %e, "cannot count the records of limits just set: they count from now");
    }
}

/// Rebuilds the counts of a tenant's limits of SPEC §12 - of those named
/// in `only`, when given - from its stored records of their current
/// windows (they live in memory, and a restart must not hand out a second
/// allowance).
fn rebuild_limits(
    state: &TenantState,
    store: &dyn Store,
    now_ms: i64,
    only: Option<&[crate::model::CompactString]>,
) -> Result<(), StoreError> {
    let Some(s) = state.scoped() else {
        return Ok(());
    };
    let Some(from) = s.counted_since(now_ms, only) else {
        return Ok(());
    };
    store.scan_usage(&state.id, from, now_ms.saturating_add(1), &mut |r| {
        s.debit_to(&crate::quota::scoped::Ask::of(r), r.ts_ms, now_ms, only);
        true
    })
}
