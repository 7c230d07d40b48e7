//! [`MemoryStore`]: the [`Store`] in plain maps behind one mutex - nothing
//! survives the process. It is the reference the contract suite
//! (`contract.rs`) holds every engine to, and a store for unit tests.
//! Its rollup cells are kept as the records are written (what sled's book
//! and checkpoint arrive at), so a checkpoint has nothing to do.

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;

use super::{AlertMark, PeriodTotals, Store, StoreError, UsageBlock};
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Cell, Grain, ALL_TENANTS};

const MS_PER_DAY: i64 = 86_400_000;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    plans: BTreeMap<String, Plan>,
    tenants: BTreeMap<String, Tenant>,
    keys: BTreeMap<String, StoredKey>,
    /// Per tenant, in write order.
    records: BTreeMap<String, Vec<UsageRecord>>,
    totals: HashMap<(Period, String), PeriodTotals>,
    /// (grain, owner, bucket) -> cell; owner `ALL_TENANTS` for the fleet.
    cells: BTreeMap<(Grain, String, i64), Cell>,
    marks: BTreeMap<String, AlertMark>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Inner {
    fn add_to_cells(&mut self, tenant: &str, records: &[UsageRecord]) {
        // Per minute first, as the book does, then into every grain.
        let mut minutes: BTreeMap<i64, Cell> = BTreeMap::new();
        for r in records {
            minutes
                .entry(Grain::Minute.bucket(r.ts_ms))
                .or_default()
                .add(r, None);
        }
        for (minute, delta) in minutes {
            let ms = Grain::Minute.start_ms(minute);
            for grain in Grain::ALL {
                let b = grain.bucket(ms);
                self.cells
                    .entry((grain, tenant.to_string(), b))
                    .or_default()
                    .merge(&delta);
                self.cells
                    .entry((grain, ALL_TENANTS.to_string(), b))
                    .or_default()
                    .merge_for_all_tenants(&delta, tenant);
            }
        }
    }
}

impl Store for MemoryStore {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        Ok(self.inner.lock().plans.values().cloned().collect())
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.inner
            .lock()
            .plans
            .insert(plan.id.clone(), plan.clone());
        Ok(())
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.inner.lock().plans.remove(id);
        Ok(())
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        Ok(self.inner.lock().tenants.values().cloned().collect())
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.inner
            .lock()
            .tenants
            .insert(tenant.id.clone(), tenant.clone());
        Ok(())
    }
    /// Purges everything under the id, as every engine must.
    fn delete_tenant(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.tenants.remove(id);
        inner.keys.retain(|_, k| k.key.tenant_id != id);
        inner.records.remove(id);
        inner.totals.retain(|(_, t), _| t != id);
        inner.cells.retain(|(_, owner, _), _| owner != id);
        inner.marks.retain(|_, m| m.tenant != id);
        Ok(())
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.inner.lock().keys.values().cloned().collect())
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(self.inner.lock().keys.get(id).cloned())
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.inner
            .lock()
            .keys
            .insert(key.key.id.clone(), key.clone());
        Ok(())
    }

    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for block in blocks.iter().filter(|b| !b.is_retired()) {
            for r in &block.records {
                let period = Period::containing_secs(r.ts_ms.div_euclid(1000));
                let t = inner
                    .totals
                    .entry((period, block.tenant.clone()))
                    .or_default();
                t.calls = t.calls.saturating_add(r.calls);
                t.tokens = t.tokens.saturating_add(r.tokens);
            }
            inner
                .records
                .entry(block.tenant.clone())
                .or_default()
                .extend(block.records.iter().cloned());
            inner.add_to_cells(&block.tenant, &block.records);
        }
        Ok(())
    }

    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let inner = self.inner.lock();
        let mut all: Vec<(String, PeriodTotals)> = inner
            .totals
            .iter()
            .filter(|((p, _), _)| *p == period)
            .map(|((_, t), v)| (t.clone(), *v))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        Ok(self
            .inner
            .lock()
            .totals
            .get(&(period, tenant.to_string()))
            .copied()
            .unwrap_or_default())
    }

    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError> {
        let mut records: Vec<UsageRecord> = self
            .inner
            .lock()
            .records
            .get(tenant)
            .map(|rs| {
                rs.iter()
                    .filter(|r| r.ts_ms >= from_ms && r.ts_ms < to_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // Day by day, within a day in write order (a stable sort).
        records.sort_by_key(|r| r.ts_ms.div_euclid(MS_PER_DAY));
        for r in &records {
            if !visit(r) {
                break;
            }
        }
        Ok(())
    }

    fn rollups(
        &self,
        tenant: &str,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Cell)>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let owner = tenant.to_string();
        Ok(self
            .inner
            .lock()
            .cells
            .range((grain, owner.clone(), from)..(grain, owner, to))
            .map(|((_, _, b), c)| (*b, c.clone()))
            .collect())
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn drop_days_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock();
        let mut days = std::collections::BTreeSet::new();
        for rs in inner.records.values_mut() {
            rs.retain(|r| {
                let day = r.ts_ms.div_euclid(MS_PER_DAY);
                let keep = day >= raw_day;
                if !keep {
                    days.insert(day);
                }
                keep
            });
        }
        let mut minute_days = std::collections::BTreeSet::new();
        inner.cells.retain(|(grain, _, bucket), _| {
            let keep = *grain != Grain::Minute || bucket.div_euclid(1440) >= minute_day;
            if !keep {
                minute_days.insert(bucket.div_euclid(1440));
            }
            keep
        });
        Ok(days.len() + minute_days.len())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        Ok(self.inner.lock().marks.values().cloned().collect())
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.inner.lock().marks.insert(mark.key(), mark.clone());
        Ok(())
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.inner.lock().marks.retain(|_, m| m.period >= before);
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
