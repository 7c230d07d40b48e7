//! [`AlertMarks`] on PostgreSQL: the `alert_marks` table, claimed once across instances.

use super::engine::PgEngine;
use crate::quota::period::Period;
use crate::store::{AlertMark, AlertMarks, MarkOf, StoreError};

impl AlertMarks for PgEngine {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        let rows = self.query(
            "SELECT tenant_id, period, url, threshold, body, delivered FROM alert_marks \
             ORDER BY tenant_id, period, threshold, url",
            Vec::new(),
        )?;
        Ok(rows
            .iter()
            .map(|r| AlertMark {
                tenant: r.get(0),
                period: Period(r.get(1)),
                url: r.get(2),
                of: MarkOf::of_number(r.get::<_, i32>(3).max(0) as u32),
                body: r.get(4),
                delivered: r.get(5),
            })
            .collect())
    }

    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.insert_mark(mark, "DO UPDATE SET body = $5, delivered = $6")
            .map(|_| ())
    }

    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        Ok(self.insert_mark(mark, "DO NOTHING")? == 1)
    }

    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.pg.run(move |c| async move {
            c.execute("DELETE FROM alert_marks WHERE period < $1", &[&before.0])
                .await?;
            Ok(())
        })
    }
}
