//! [`RollupBook`]: what the rollup cells have not absorbed yet, in memory.
//!
//! A usage write adds its records to per-tenant *minute deltas* here (and
//! the engine journals the write, atomically with the records). A
//! checkpoint merges the deltas into the stored minute, hour and day cells
//! and the all-tenants cells, moves the rollup watermark and drops the
//! journal entries it covers. On start-up the journal past the watermark is
//! replayed into the cells. So stored cells + book always equal the
//! aggregation of the persisted records; each record costs one cell update
//! on the write path, and each stored cell is rewritten at most once per
//! checkpoint.

use std::collections::{BTreeMap, HashMap};

use crate::model::UsageRecord;
use crate::rollup::{Cell, Grain, Owner};

#[derive(Default)]
pub(crate) struct RollupBook {
    /// tenant -> minute bucket -> records since the last checkpoint.
    deltas: HashMap<String, BTreeMap<i64, Cell>>,
}

impl RollupBook {
    pub(crate) fn add(&mut self, tenant: &str, records: &[UsageRecord]) {
        if !self.deltas.contains_key(tenant) {
            self.deltas.insert(tenant.to_string(), BTreeMap::new());
        }
        let Some(minutes) = self.deltas.get_mut(tenant) else {
            return;
        };
        // Records of one minute come together: one cell search a run.
        for run in
            records.chunk_by(|a, b| Grain::Minute.bucket(a.ts_ms) == Grain::Minute.bucket(b.ts_ms))
        {
            minutes
                .entry(Grain::Minute.bucket(run[0].ts_ms))
                .or_default()
                .add_run(run);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Visits every delta with the cells it belongs to: for each minute
    /// delta of each tenant, `(grain, owner, bucket, delta, tenant)` once for
    /// the tenant's own cell and once for the fleet's.
    pub(crate) fn for_each_target(&self, mut visit: impl FnMut(Grain, &Owner, i64, &Cell, &str)) {
        for (tenant, minutes) in &self.deltas {
            let own = Owner::tenant(tenant);
            for (minute, cell) in minutes {
                let ms = Grain::Minute.start_ms(*minute);
                for grain in Grain::ALL {
                    let b = grain.bucket(ms);
                    visit(grain, &own, b, cell, tenant);
                    visit(grain, &Owner::Fleet, b, cell, tenant);
                }
            }
        }
    }

    /// The not-yet-absorbed part of `owner`'s cells at `grain` with
    /// `from <= bucket < to`.
    pub(crate) fn overlay(
        &self,
        grain: Grain,
        owner: &Owner,
        from: i64,
        to: i64,
    ) -> BTreeMap<i64, Cell> {
        let mut out: BTreeMap<i64, Cell> = BTreeMap::new();
        if from >= to {
            return out;
        }
        let per = grain.ms() / Grain::Minute.ms();
        let (m0, m1) = (from.saturating_mul(per), to.saturating_mul(per));
        let mut fold = |tenant: &str, minutes: &BTreeMap<i64, Cell>| {
            for (minute, cell) in minutes.range(m0..m1) {
                let slot = out.entry(minute.div_euclid(per)).or_default();
                match owner {
                    Owner::Fleet => slot.merge_for_all_tenants(cell, tenant),
                    Owner::Tenant(_) => slot.merge(cell),
                }
            }
        };
        match owner {
            Owner::Fleet => {
                for (tenant, minutes) in &self.deltas {
                    fold(tenant, minutes);
                }
            }
            Owner::Tenant(id) => {
                if let Some(minutes) = self.deltas.get(id) {
                    fold(id, minutes);
                }
            }
        }
        out
    }

    /// Drops a (deleted) tenant's deltas.
    pub(crate) fn forget(&mut self, tenant: &str) {
        self.deltas.remove(tenant);
    }

    /// After a checkpoint committed.
    pub(crate) fn clear(&mut self) {
        self.deltas.clear();
    }
}
