//! [`Change`]: every admin write, as data. A write is checked and written to
//! the store by its [`Registry`] method; the change is then applied to
//! memory by one function, [`Registry::apply_locked`] - the only place the
//! request path's tables and the catalog change after start-up - and handed
//! to every subscribed [`ChangeFeed`]. Another instance that shares the
//! store applies the same change with [`Registry::apply`] (memory only: the
//! store has it already), which is how an admin write on one instance will
//! reach the others.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{not_found, Catalog, KeyEntry, Registry, RegistryError};
use crate::auth::KeyHash;
use crate::model::{Plan, StoredKey, Tenant, TenantStatus};
use crate::quota::period::Period;
use crate::quota::{ActivePlan, TenantState};
use crate::store::PeriodTotals;

/// New tenants in one page of changes from which their totals are read
/// together.
const BULK: usize = 32;

/// One admin write, after the store took it.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A plan created or changed; tenants on it see it on their next request.
    PlanPut(Plan),
    PlanDeleted {
        id: String,
    },
    /// A tenant created or changed (name, plan, suspension).
    TenantPut(Tenant),
    /// A tenant deleted, with everything stored under its id.
    TenantDeleted {
        id: String,
    },
    /// A key created or changed (rotated, its expiry set): each of its
    /// secrets (the SHA-256 of the current one, and of the one a rotation
    /// replaced) finds it, each until it expires.
    KeyPut(StoredKey),
    KeyRevoked {
        key_id: String,
    },
}

/// Told of every change an instance's admin API makes, in order.
pub trait ChangeFeed: Send + Sync {
    /// Called with the registry's catalog lock held (so changes arrive in
    /// the order they were made): hand the change on, do not block.
    fn published(&self, change: &Change);
}

impl Registry {
    #[cfg(test)]
    /// Tells `feed` of every admin write from now on.
    pub(crate) fn subscribe(&self, feed: Arc<dyn ChangeFeed>) {
        self.feeds.write().push(feed);
    }

    /// Applies a change another instance made (and wrote to the shared
    /// store): memory only, and not published again.
    pub fn apply(&self, change: &Change, now: DateTime<Utc>) -> Result<(), RegistryError> {
        let mut cat = self.catalog.lock();
        self.apply_locked(&mut cat, change, now, None)
    }

    /// Applies many changes other instances made, in order, as
    /// [`apply`](Self::apply) each; the errors of those that failed. A
    /// page of many new tenants (a bulk import elsewhere) reads the
    /// period's totals once instead of once a tenant.
    pub(crate) fn apply_all(
        &self,
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<Vec<(Change, RegistryError)>, RegistryError> {
        let mut cat = self.catalog.lock();
        let new_tenants = changes
            .iter()
            .filter(
                |c| matches!(c, Change::TenantPut(t) if self.tenants.get(t.id.as_str()).is_none()),
            )
            .count();
        let totals = if new_tenants >= BULK {
            Some(
                self.store
                    .period_totals(Period::containing(now))?
                    .into_iter()
                    .collect::<HashMap<_, _>>(),
            )
        } else {
            None
        };
        Ok(changes
            .iter()
            .filter_map(|c| {
                self.apply_locked(&mut cat, c, now, totals.as_ref())
                    .err()
                    .map(|e| (c.clone(), e))
            })
            .collect())
    }

    /// Applies a change this instance wrote to the store, then publishes it.
    pub(super) fn commit(
        &self,
        cat: &mut Catalog,
        change: Change,
        now: DateTime<Utc>,
    ) -> Result<(), RegistryError> {
        self.apply_locked(cat, &change, now, None)?;
        for feed in self.feeds.read().iter() {
            feed.published(&change);
        }
        Ok(())
    }

    /// Counts the records of the current windows for limits just added
    /// or reshaped (`changed`) of `state`.
    fn rebuild_changed(
        &self,
        state: &TenantState,
        now: DateTime<Utc>,
        changed: &[crate::model::CompactString],
    ) {
        if !changed.is_empty() {
            super::rebuild_named(state, self.store.as_ref(), now.timestamp_millis(), changed);
        }
    }

    /// The one place memory follows the store. Each change is idempotent:
    /// applied twice, it leaves what it left once.
    /// `totals`: the period's persisted totals, when the caller read them
    /// all at once (a new tenant then takes its own from there).
    fn apply_locked(
        &self,
        cat: &mut Catalog,
        change: &Change,
        now: DateTime<Utc>,
        totals: Option<&HashMap<String, PeriodTotals>>,
    ) -> Result<(), RegistryError> {
        match change {
            Change::PlanPut(plan) => {
                let active = ActivePlan::shared_by(plan.clone(), self.burst_share());
                for state in self.on_plan(&plan.id) {
                    let changed = state.configure(active.clone(), None, &self.setup());
                    self.rebuild_changed(&state, now, &changed);
                }
                cat.plans.insert(plan.id.clone(), active);
            }
            Change::PlanDeleted { id } => {
                cat.plans.remove(id);
            }
            Change::TenantPut(tenant) => {
                let plan = cat.plans.get(&tenant.plan_id).cloned().ok_or_else(|| {
                    RegistryError::Conflict(format!(
                        "tenant '{}' refers to missing plan '{}'",
                        tenant.id, tenant.plan_id
                    ))
                })?;
                let suspended = tenant.status == TenantStatus::Suspended;
                let own = Some((&tenant.limits[..], tenant.billing_day));
                match self.tenants.get(tenant.id.as_str()) {
                    Some(state) => {
                        let changed = state.configure(plan, own, &self.setup());
                        self.rebuild_changed(&state, now, &changed);
                        state.set_suspended(suspended);
                    }
                    None => {
                        // A created tenant continues whatever the store
                        // counts for its id (nothing, after a purge).
                        let period = Period::containing(now);
                        let totals = match totals {
                            Some(all) => all.get(&tenant.id).copied().unwrap_or_default(),
                            None => self.store.tenant_totals(&tenant.id, period)?,
                        };
                        let state = Arc::new(TenantState::counted(
                            &tenant.id,
                            plan.clone(),
                            suspended,
                            period,
                            &self.counting,
                        ));
                        state.restore(period, totals.calls, totals.tokens);
                        let changed = state.configure(plan, own, &self.setup());
                        self.rebuild_changed(&state, now, &changed);
                        self.tenants.insert(state.id.clone(), state);
                    }
                }
            }
            Change::TenantDeleted { id } => {
                self.release_tenant(cat, id);
            }
            Change::KeyPut(key) => {
                let tenant_id = &key.key.tenant_id;
                let state = self
                    .tenants
                    .get(tenant_id.as_str())
                    .ok_or_else(|| not_found("tenant", tenant_id))?;
                if key.key.revoked_at.is_some() {
                    self.keys.remove_where(|_, e| e.key_id == key.key.id);
                    return Ok(());
                }
                let changed = state.set_key_limits(&key.key.id, &key.key.limits, &self.setup());
                self.rebuild_changed(&state, now, &changed);
                for (hash, until) in key.secrets() {
                    self.keys
                        .insert(KeyHash(hash), KeyEntry::new(&key.key.id, &state, until));
                }
            }
            Change::KeyRevoked { key_id } => {
                // By id, from the key table itself: no copy of the keys is
                // kept, and the store may have purged the key already.
                self.keys.remove_where(|_, e| e.key_id == *key_id);
            }
        }
        Ok(())
    }

    /// The request path lets go of a tenant: no key finds it, and its state
    /// is retired (records still queued for it are dropped).
    /// `_cat`: called with the catalog's lock held.
    pub(super) fn release_tenant(&self, _cat: &Catalog, id: &str) {
        self.keys.remove_where(|_, e| &*e.tenant.id == id);
        if let Some(state) = self.tenants.get(id) {
            state.retire();
            self.tenants.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledOptions, SledStore, Store};
    use parking_lot::Mutex;

    struct Recorder(Mutex<Vec<Change>>);
    impl ChangeFeed for Recorder {
        fn published(&self, change: &Change) {
            self.0.lock().push(change.clone());
        }
    }

    /// Another instance on the same store, fed every change.
    struct Forward(Arc<Registry>, DateTime<Utc>);
    impl ChangeFeed for Forward {
        fn published(&self, change: &Change) {
            self.0.apply(change, self.1).unwrap();
        }
    }

    fn registry(store: &Arc<dyn Store>) -> Arc<Registry> {
        Arc::new(Registry::load(store.clone(), &[Plan::unlimited("free")], Utc::now()).unwrap())
    }

    #[test]
    fn every_admin_write_is_one_change_and_another_instance_can_apply_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open_with(dir.path(), SledOptions::new(100, 1 << 24)).unwrap());
        let a = registry(&store);
        let b = registry(&store);
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        a.subscribe(recorder.clone());
        let now = Utc::now();
        a.subscribe(Arc::new(Forward(b.clone(), now)));

        let mut pro = Plan::unlimited("pro");
        pro.monthly_calls = Some(5);
        a.create_plan(pro.clone(), now).unwrap();
        let tenant = Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            plan_id: "pro".into(),
            status: TenantStatus::Active,
            created_at: now,
            limits: Vec::new(),
            billing_day: None,
        };
        a.create_tenant(tenant.clone(), now).unwrap();
        let (key, secret) = a.create_key("acme", "k", None, now).unwrap();
        // The other instance sees the tenant, its plan and its key.
        let seen = b.authenticate(&secret, 0).expect("the key works on B");
        assert_eq!(seen.plan().plan.monthly_calls, Some(5));
        a.update_plan(
            "pro",
            |p| {
                p.monthly_calls = Some(7);
                Ok(())
            },
            now,
        )
        .unwrap();
        assert_eq!(seen.plan().plan.monthly_calls, Some(7));
        a.update_tenant(
            "acme",
            |t| {
                t.status = TenantStatus::Suspended;
                Ok(())
            },
            now,
        )
        .unwrap();
        assert_eq!(
            b.tenant_state("acme")
                .unwrap()
                .check(1, 0, crate::clock::Nanos(0))
                .outcome,
            crate::quota::Outcome::Suspended
        );
        a.revoke_key("acme", &key.id, now).unwrap();
        assert!(b.authenticate(&secret, 0).is_none(), "revoked on B too");
        let (k2, second) = a.create_key("acme", "k2", None, now).unwrap();
        assert!(b.authenticate(&second, 0).is_some());
        // A rotation reaches B: both secrets work until the overlap ends,
        // as one key; an expiry set on A expires it on B.
        let ms = now.timestamp_millis();
        let until = now + chrono::Duration::seconds(60);
        let (_, third) = a.rotate_key("acme", &k2.id, until, now).unwrap();
        assert_eq!(b.key_of(&second, ms).unwrap().1, k2.id.as_str());
        assert_eq!(b.key_of(&third, ms).unwrap().1, k2.id.as_str());
        assert_eq!(
            b.key_of(&second, ms + 60_000).unwrap_err(),
            super::super::KeyProblem::Expired
        );
        assert!(b.key_of(&third, ms + 60_000).is_ok());
        a.set_key_expiry(
            "acme",
            &k2.id,
            Some(now + chrono::Duration::seconds(10)),
            now,
        )
        .unwrap();
        assert_eq!(
            b.key_of(&third, ms + 10_000).unwrap_err(),
            super::super::KeyProblem::Expired
        );
        assert!(b.key_of(&third, ms + 9_999).is_ok());
        // The old secret's overlap never outlives the key.
        assert_eq!(
            b.key_of(&second, ms + 10_000).unwrap_err(),
            super::super::KeyProblem::Expired
        );
        a.delete_tenant("acme", now).unwrap();
        assert!(b.tenant("acme").unwrap().is_none() && b.authenticate(&second, 0).is_none());
        assert!(seen.is_retired());
        a.delete_plan("pro", now).unwrap();
        assert!(b.plan("pro").is_none());

        let kinds: Vec<&str> = recorder
            .0
            .lock()
            .iter()
            .map(|c| match c {
                Change::PlanPut(_) => "plan",
                Change::PlanDeleted { .. } => "plan-deleted",
                Change::TenantPut(_) => "tenant",
                Change::TenantDeleted { .. } => "tenant-deleted",
                Change::KeyPut(_) => "key",
                Change::KeyRevoked { .. } => "key-revoked",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "plan",
                "tenant",
                "key",
                "plan",
                "tenant",
                "key-revoked",
                "key",
                "key",
                "key",
                "tenant-deleted",
                "plan-deleted"
            ]
        );
        // Applying a change twice leaves what once did.
        let again = recorder.0.lock()[0].clone();
        b.apply(&again, now).unwrap();
        b.apply(&again, now).unwrap();
        assert_eq!(b.plan("pro").unwrap().monthly_calls, Some(5));
    }

    /// A page of many new tenants (a bulk import on another instance) reads
    /// the totals once and gives each tenant the same counters as one
    /// change at a time would; a small page reads them one by one.
    #[test]
    fn a_page_of_new_tenants_takes_their_totals_at_once() {
        use crate::store::memory::MemoryStore;
        use crate::store::UsageBlock;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::in_memory());
        let now = Utc::now();
        let b = registry(&store);
        let record = crate::model::UsageRecord {
            ts_ms: now.timestamp_millis(),
            calls: 1,
            tokens: 5,
            ..Default::default()
        };
        store
            .write_usage(&[
                UsageBlock::new("t3", vec![record.clone(); 3]),
                UsageBlock::new("t40", vec![record; 2]),
            ])
            .unwrap();
        let tenant = |i: usize| Tenant {
            id: format!("t{i}"),
            name: format!("T{i}"),
            plan_id: "free".into(),
            status: TenantStatus::Active,
            created_at: now,
            limits: Vec::new(),
            billing_day: None,
        };
        let page: Vec<Change> = (0..BULK + 8)
            .map(|i| Change::TenantPut(tenant(i)))
            .collect();
        assert!(b.apply_all(&page, now).unwrap().is_empty());
        let period = Period::containing(now);
        assert_eq!(b.tenant_state("t3").unwrap().used(period), (3, 15));
        assert_eq!(b.tenant_state("t0").unwrap().used(period), (0, 0));
        let small = vec![Change::TenantPut(tenant(40))];
        assert!(b.apply_all(&small, now).unwrap().is_empty());
        assert_eq!(b.tenant_state("t40").unwrap().used(period), (2, 10));
        // A change that cannot apply is handed back, the others applied.
        let mut orphan = tenant(41);
        orphan.plan_id = "missing".into();
        let failed = b
            .apply_all(
                &[Change::TenantPut(orphan), Change::TenantPut(tenant(42))],
                now,
            )
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert!(b.tenant_state("t42").is_some());
    }
}
