//! [`UsageReads`] on sled: records and totals read back.

use super::codec::decode;
use super::engine::{decode_records, SledEngine};
use super::{keys::*, rows::TotalsRow};
use crate::model::UsageRecord;
use crate::quota::period::Period;
use crate::store::{PeriodTotals, StoreError, UsageReads};

impl UsageReads for SledEngine {
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let prefix = counter_key(period, "");
        self.counters
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let tenant = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                Ok((tenant, decode::<TotalsRow>(&v)?.into()))
            })
            .collect()
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        match self.counters.get(counter_key(period, tenant))? {
            Some(v) => Ok(decode::<TotalsRow>(&v)?.into()),
            None => Ok(PeriodTotals::default()),
        }
    }

    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError> {
        if from_ms >= to_ms {
            return Ok(());
        }
        let (first, last) = (day_of(from_ms), day_of(to_ms - 1));
        let prefix = tenant_prefix(tenant);
        for day in self.day_trees() {
            if day < first || day > last {
                continue;
            }
            let tree = self.db.open_tree(day_tree_name(RAW_PREFIX, day))?;
            for kv in tree.scan_prefix(&prefix) {
                let (_, v) = kv?;
                for r in decode_records(&v)? {
                    if r.ts_ms >= from_ms && r.ts_ms < to_ms && !visit(&r) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}
