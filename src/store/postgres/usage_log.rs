//! [`UsageLog`] on PostgreSQL: usage writes through the local spool, copied in with their totals.

use super::client::unreachable;
use super::engine::{write_of, PgEngine, PARTITION_LOCK};
use super::records::{self};
use crate::model::UsageRecord;
use crate::store::{Claims, HeldBy, RecordIds, StoreError, UsageBlock, UsageLog};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl UsageLog for PgEngine {
    /// Straight to the database; while it is unreachable (or writes wait
    /// in the spool already, which keeps their order), to the spool.
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let write = Arc::new(write_of(seq, blocks));
        let prepared = started.elapsed();
        let Some(spool) = &self.spool else {
            return self.deliver(&write);
        };
        if spool.is_empty() {
            match self.deliver(&write) {
                Ok(()) => {
                    tracing::debug!(
                        seq,
                        records = write.records,
                        cells = write.cells.len(),
                        prepare_us = prepared.as_micros() as u64,
                        database_us = (started.elapsed() - prepared).as_micros() as u64,
                        "usage write delivered"
                    );
                    return Ok(());
                }
                Err(e) if unreachable(&e) => {
                    tracing::warn!(error = %e, "PostgreSQL is unreachable: usage waits in the local spool");
                }
                Err(e) => return Err(e),
            }
        }
        spool.push(&write)?;
        self.spooled.store(true, Ordering::Release);
        Ok(())
    }

    /// Straight to the database, never to the spool: a claim is made with
    /// its records or not at all, and the client is told to retry.
    fn append_claimed(
        &self,
        seq: u64,
        block: &UsageBlock,
        claims: &Claims,
    ) -> Result<bool, StoreError> {
        if self.spool.as_ref().is_some_and(|s| !s.is_empty()) {
            // Writes wait in the spool, in order; this one cannot.
            self.drain()?;
        }
        let write = Arc::new(write_of(seq, &[block]));
        self.deliver_claimed(&[write], Some((block.tenant.clone(), claims.clone())))
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT coalesce(max(seq), 0) FROM usage_batches WHERE instance = $1",
            vec![Box::new(self.instance.clone())],
        )?;
        let stored = rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
        let waiting = match &self.spool {
            Some(s) => s.last_seq()?,
            None => 0,
        };
        Ok(stored.max(waiting))
    }

    /// Nothing: each write's cells are in its own transaction.
    fn written_since(
        &self,
        _after: u64,
        _visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError> {
        let day = day.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let dropped = self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                    .await?;
                let days: Vec<i32> = tx
                    .query("SELECT day FROM usage_days WHERE day < $1", &[&day])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for d in &days {
                    tx.batch_execute(&format!(
                        "DROP TABLE IF EXISTS {}",
                        records::partition(*d as i64)
                    ))
                    .await?;
                }
                tx.execute("DELETE FROM usage_days WHERE day < $1", &[&day])
                    .await?;
                // Housekeeping of the shared tables, with the hourly
                // retention rather than each heartbeat: instances gone for a
                // day, and catalog changes older than a week (a running
                // instance reads them within a second; one that starts
                // loads the whole catalog).
                tx.execute(
                    "DELETE FROM instances WHERE seen_at < now() - interval '1 day'",
                    &[],
                )
                .await?;
                tx.execute(
                    "DELETE FROM catalog_changes WHERE made_at < now() - interval '7 days'",
                    &[],
                )
                .await?;
                // Each instance's last write stays: it numbers the next.
                tx.execute(
                    "DELETE FROM usage_batches b WHERE written_at < to_timestamp($1::float8 * 86400) \
                     AND seq < (SELECT max(seq) FROM usage_batches l WHERE l.instance = b.instance)",
                    &[&(day as f64)],
                )
                .await?;
                Ok(days.len())
            })
        })?;
        self.days.lock().retain(|d| *d >= day as i64);
        Ok(dropped)
    }
}

impl RecordIds for PgEngine {
    fn claimed(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<HeldBy>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let rows = self.query(
            "SELECT id, batch_key FROM record_ids WHERE tenant_id = $1 AND id = ANY($2::text[])",
            vec![Box::new(tenant.to_string()), Box::new(wanted)],
        )?;
        let held: std::collections::HashMap<String, String> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(ids.iter().map(|id| held.get(*id).cloned()).collect())
    }

    fn drop_claims_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.pg.run(move |c| async move {
            Ok(
                c.execute("DELETE FROM record_ids WHERE made_at < $1", &[&before_ms])
                    .await?,
            )
        })
    }
}
