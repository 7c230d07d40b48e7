//! [`UsageReads`] on PostgreSQL: records (paged) and period totals read back.

use super::engine::{PgEngine, MAX_MS, MIN_MS, SCAN_PAGE};
use super::records::{self, day_of, RECORD_COLUMNS};
use crate::model::UsageRecord;
use crate::quota::period::Period;
use crate::store::{PeriodTotals, StoreError, UsageReads};
use tokio_postgres::Row;

impl UsageReads for PgEngine {
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let rows = self.query(
            "SELECT tenant_id, calls, tokens FROM period_totals WHERE period = $1 \
             ORDER BY tenant_id",
            vec![Box::new(period.0)],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), totals_of(r, 1))).collect())
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        let rows = self.query(
            "SELECT calls, tokens FROM period_totals WHERE period = $1 AND tenant_id = $2",
            vec![Box::new(period.0), Box::new(tenant.to_string())],
        )?;
        Ok(rows.first().map(|r| totals_of(r, 0)).unwrap_or_default())
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
        let clamp = |d: i64| d.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        // Within what a timestamptz holds (4713 BC to 294276 AD).
        let (from_ms, to_ms) = (from_ms.clamp(MIN_MS, MAX_MS), to_ms.clamp(MIN_MS, MAX_MS));
        let (first_day, last_day) = (clamp(day_of(from_ms)), clamp(day_of(to_ms - 1)));
        let mut after: (i32, i64) = (first_day, i64::MIN);
        loop {
            let rows = self.query(
                scan_page_sql(),
                vec![
                    Box::new(tenant.to_string()),
                    Box::new(after.0),
                    Box::new(after.1),
                    Box::new(last_day),
                    Box::new(from_ms),
                    Box::new(to_ms),
                    Box::new(SCAN_PAGE),
                ],
            )?;
            let n = rows.len() as i64;
            for row in &rows {
                let (at, record) = records::record(row);
                after = at;
                if !visit(&record) {
                    return Ok(());
                }
            }
            if n < SCAN_PAGE {
                return Ok(());
            }
        }
    }
}

/// One page of a tenant's records after `(day, id)`, in write order day by
/// day, within `[from_ms, to_ms)`.
pub(super) fn scan_page_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM usage_records WHERE tenant_id = $1 \
         AND (day, id) > ($2, $3) AND day <= $4 \
         AND ts >= to_timestamp($5::int8 / 1000.0) AND ts < to_timestamp($6::int8 / 1000.0) \
         ORDER BY day, id LIMIT $7"
    )
}

pub(super) fn totals_of(r: &Row, at: usize) -> PeriodTotals {
    PeriodTotals {
        calls: r.get::<_, i64>(at).max(0) as u64,
        tokens: r.get::<_, i64>(at + 1).max(0) as u64,
    }
}
