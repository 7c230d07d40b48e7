//! [`MemoryEngine`]: every storage concern in plain maps behind one mutex -
//! nothing survives the process. It is the reference the contract suite
//! (`contract.rs`) holds every engine to, and a store for unit tests
//! ([`MemoryStore`], the ledger over it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    ledger::Direct, AlertMark, AlertMarks, Catalog, CellKey, Claims, Engine, HeldBy, Ledger,
    PeriodTotals, RecordIds, RollupCells, StoreError, StoredCell, UsageBlock, UsageLog, UsageReads,
};
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Cell, Grain, Owner};

const MS_PER_DAY: i64 = 86_400_000;

/// The store over a fresh in-memory engine.
pub(crate) type MemoryStore = Ledger<Direct<MemoryEngine>>;

impl MemoryStore {
    #[cfg(test)]
    /// A store over an empty engine.
    pub(crate) fn in_memory() -> MemoryStore {
        Self::over(Arc::default())
    }

    /// A store over `engine` - another one over the same engine is what a
    /// restart of a persisting engine is.
    pub fn over(engine: Arc<MemoryEngine>) -> MemoryStore {
        Ledger::new(Direct(engine)).expect("an in-memory engine never fails")
    }
}

#[derive(Default)]
pub(crate) struct MemoryEngine {
    inner: Mutex<Inner>,
    /// Records a test makes the engine refuse as data (as PostgreSQL
    /// refuses a value out of range): a write holding one fails whole.
    #[cfg(test)]
    refuse: Mutex<Option<Refusal>>,
}

/// Which records a test makes the engine refuse.
#[cfg(test)]
type Refusal = fn(&UsageRecord) -> bool;

#[cfg(test)]
impl MemoryEngine {
    /// From now on, a write holding a record `refused` says is refused.
    pub(crate) fn refuse(&self, refused: fn(&UsageRecord) -> bool) {
        *self.refuse.lock() = Some(refused);
    }

    fn refused(&self, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        let Some(refused) = *self.refuse.lock() else {
            return Ok(());
        };
        if blocks.iter().flat_map(|b| &b.records).any(refused) {
            return Err(StoreError::engine(
                "memory",
                super::Failure::Rejected,
                "a record the test refuses",
            ));
        }
        Ok(())
    }
}

/// One usage write's blocks: (tenant, records).
type Write = Vec<(String, Vec<UsageRecord>)>;

#[derive(Default)]
struct Inner {
    plans: BTreeMap<String, Plan>,
    tenants: BTreeMap<String, Tenant>,
    keys: BTreeMap<String, StoredKey>,
    /// Per tenant, in write order.
    records: BTreeMap<String, Vec<UsageRecord>>,
    totals: HashMap<(Period, String), PeriodTotals>,
    seq: u64,
    /// The writes the cells do not include yet.
    journal: BTreeMap<u64, Write>,
    cells: BTreeMap<CellKey, StoredCell>,
    watermark: u64,
    marks: BTreeMap<String, AlertMark>,
    /// (tenant, id) -> (who claimed it, when).
    claims: HashMap<(String, String), (HeldBy, i64)>,
    /// (tenant, key id) -> when last used.
    key_used: HashMap<(String, String), i64>,
}

impl Catalog for MemoryEngine {
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
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(self.inner.lock().tenants.get(id).cloned())
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.import(std::slice::from_ref(tenant), &[])
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.inner.lock().keys.values().cloned().collect())
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(self.inner.lock().keys.get(id).cloned())
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.import(&[], std::slice::from_ref(key))
    }
    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for t in tenants {
            inner.tenants.insert(t.id.clone(), t.clone());
        }
        for k in keys {
            inner.keys.insert(k.key.id.clone(), k.clone());
        }
        Ok(())
    }
    fn touch_keys(&self, used: &[crate::store::KeyUse]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        for u in used {
            let at = inner
                .key_used
                .entry((u.tenant.clone(), u.key_id.clone()))
                .or_insert(i64::MIN);
            *at = (*at).max(u.at_ms);
        }
        Ok(())
    }
    fn keys_last_used(&self, tenant_id: &str) -> Result<HashMap<String, i64>, StoreError> {
        Ok(self
            .inner
            .lock()
            .key_used
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, k), at)| (k.clone(), *at))
            .collect())
    }
}

impl AlertMarks for MemoryEngine {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        Ok(self.inner.lock().marks.values().cloned().collect())
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.inner.lock().marks.insert(mark.key(), mark.clone());
        Ok(())
    }
    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        if inner.marks.contains_key(&mark.key()) {
            return Ok(false);
        }
        inner.marks.insert(mark.key(), mark.clone());
        Ok(true)
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.inner.lock().marks.retain(|_, m| m.period >= before);
        Ok(())
    }
}

impl UsageLog for MemoryEngine {
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        #[cfg(test)]
        self.refused(blocks)?;
        let mut inner = self.inner.lock();
        let mut journal = Vec::new();
        for block in blocks {
            for r in &block.records {
                let period = Period::containing_secs(r.ts_ms.div_euclid(1000));
                inner
                    .totals
                    .entry((period, block.tenant.clone()))
                    .or_default()
                    .add(r.calls, r.tokens);
            }
            inner
                .records
                .entry(block.tenant.clone())
                .or_default()
                .extend(block.records.iter().cloned());
            journal.push((block.tenant.clone(), block.records.clone()));
        }
        inner.journal.insert(seq, journal);
        inner.seq = seq;
        Ok(())
    }

    fn append_claimed(
        &self,
        seq: u64,
        block: &UsageBlock,
        claims: &Claims,
    ) -> Result<bool, StoreError> {
        {
            let inner = self.inner.lock();
            let taken = claims
                .made()
                .into_iter()
                .any(|id| inner.claims.contains_key(&(block.tenant.clone(), id)));
            if taken {
                return Ok(false);
            }
        }
        // One lock for the check and the write would be stricter; the
        // ledger's writer lock already makes them one step.
        self.append(seq, &[block])?;
        let mut inner = self.inner.lock();
        for id in claims.made() {
            inner.claims.insert(
                (block.tenant.clone(), id),
                (claims.key.clone(), claims.at_ms),
            );
        }
        Ok(true)
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().seq)
    }

    fn written_since(
        &self,
        after: u64,
        visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError> {
        let writes: Vec<(u64, Write)> = self
            .inner
            .lock()
            .journal
            .range(after + 1..)
            .map(|(s, w)| (*s, w.clone()))
            .collect();
        // A purge takes the tenant's blocks out of the journal too.
        for (seq, blocks) in writes {
            for (tenant, records) in blocks {
                visit(seq, &tenant, records);
            }
        }
        Ok(())
    }

    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError> {
        let mut days = std::collections::BTreeSet::new();
        for rs in self.inner.lock().records.values_mut() {
            rs.retain(|r| {
                let d = r.ts_ms.div_euclid(MS_PER_DAY);
                if d < day {
                    days.insert(d);
                }
                d >= day
            });
        }
        Ok(days.len())
    }
}

impl RecordIds for MemoryEngine {
    fn claimed(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<HeldBy>>, StoreError> {
        let inner = self.inner.lock();
        Ok(ids
            .iter()
            .map(|id| {
                inner
                    .claims
                    .get(&(tenant.to_string(), id.to_string()))
                    .map(|(k, _)| k.clone())
            })
            .collect())
    }

    fn drop_claims_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        let was = inner.claims.len();
        inner.claims.retain(|_, (_, at)| *at >= before_ms);
        Ok((was - inner.claims.len()) as u64)
    }
}

impl RollupCells for MemoryEngine {
    fn cell(&self, key: &CellKey) -> Result<Option<StoredCell>, StoreError> {
        Ok(self.inner.lock().cells.get(key).cloned())
    }

    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        let Buckets { grain, from, to } = span;
        if from >= to {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .lock()
            .cells
            .range((grain, owner.clone(), from)..(grain, owner.clone(), to))
            .map(|((_, _, b), c)| (*b, c.cell.clone()))
            .collect())
    }

    fn watermark(&self) -> Result<u64, StoreError> {
        Ok(self.inner.lock().watermark)
    }

    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        watermark: u64,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.cells.extend(cells);
        inner.watermark = watermark;
        inner.journal.retain(|seq, _| *seq > watermark);
        Ok(())
    }

    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError> {
        let mut days = std::collections::BTreeSet::new();
        self.inner.lock().cells.retain(|(grain, _, bucket), _| {
            let d = bucket.div_euclid(1440);
            let keep = *grain != Grain::Minute || d >= day;
            if !keep {
                days.insert(d);
            }
            keep
        });
        Ok(days.len())
    }
}

impl Engine for MemoryEngine {
    fn purge_tenant(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.tenants.remove(id);
        inner.keys.retain(|_, k| k.key.tenant_id != id);
        inner.records.remove(id);
        inner.totals.retain(|(_, t), _| t != id);
        let own = Owner::tenant(id);
        inner.cells.retain(|(_, owner, _), _| *owner != own);
        inner.marks.retain(|_, m| m.tenant != id);
        inner.claims.retain(|(t, _), _| t != id);
        inner.key_used.retain(|(t, _), _| t != id);
        for blocks in inner.journal.values_mut() {
            blocks.retain(|(t, _)| t != id);
        }
        Ok(())
    }

    fn durable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl UsageReads for MemoryEngine {
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
}
