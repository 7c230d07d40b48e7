//! [`Shared`] on PostgreSQL: catalog writes from `catalog_changes` (each
//! row joined to the entry as it stands), notices by `LISTEN
//! tollgate_catalog` on a connection of its own, and the `instances`
//! heartbeat.

use std::time::Duration;

use super::catalog::{key_of, plan_of, tenant_of, KEY_COLUMNS, PLAN_COLUMNS, TENANT_COLUMNS};
use super::engine::PgEngine;
use crate::quota::period::Period;
use crate::store::shared::{Backlog, Changed, Shared, Shares};
use crate::store::{PeriodTotals, StoreError};

fn prefixed(columns: &str, table: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Shared for PgEngine {
    fn catalog_version(&self) -> Result<u64, StoreError> {
        let rows = self.query(
            "SELECT coalesce(max(version), 0) FROM catalog_changes",
            Vec::new(),
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    fn catalog_changes(&self, after: u64, limit: usize) -> Result<(u64, Vec<Changed>), StoreError> {
        let sql = format!(
            "SELECT c.version, c.kind, c.id, c.origin, (p.id IS NOT NULL), {}, \
             (t.id IS NOT NULL), {}, (k.id IS NOT NULL), {} FROM catalog_changes c \
             LEFT JOIN plans p ON c.kind = 'plan' AND p.id = c.id \
             LEFT JOIN tenants t ON c.kind = 'tenant' AND t.id = c.id \
             LEFT JOIN api_keys k ON c.kind = 'key' AND k.id = c.id \
             WHERE c.version > $1 ORDER BY c.version LIMIT $2",
            prefixed(PLAN_COLUMNS, "p"),
            prefixed(TENANT_COLUMNS, "t"),
            prefixed(KEY_COLUMNS, "k"),
        );
        let (after, limit) = (after.min(i64::MAX as u64) as i64, limit as i64);
        let rows = self
            .pg
            .run(move |c| async move { Ok(c.query(&sql, &[&after, &limit]).await?) })?;
        let (plan, tenant, key) = (4, 4 + 16, 4 + 16 + 8);
        let mut version = after.max(0) as u64;
        let mut changes = Vec::new();
        for r in &rows {
            version = r.get::<_, i64>(0).max(0) as u64;
            let (kind, id, origin): (&str, String, &str) = (r.get(1), r.get(2), r.get(3));
            if origin == self.instance {
                continue;
            }
            changes.push(match kind {
                "plan" => Changed::Plan(
                    id,
                    if r.get::<_, bool>(plan) {
                        Some(plan_of(r, plan + 1)?)
                    } else {
                        None
                    },
                ),
                "tenant" => Changed::Tenant(
                    id,
                    if r.get::<_, bool>(tenant) {
                        Some(tenant_of(r, tenant + 1)?)
                    } else {
                        None
                    },
                ),
                "key" => Changed::Key(
                    id,
                    if r.get::<_, bool>(key) {
                        Some(key_of(r, key + 1)?)
                    } else {
                        None
                    },
                ),
                other => {
                    tracing::warn!(kind = other, "unknown catalog change; ignored");
                    continue;
                }
            });
        }
        Ok((version, changes))
    }

    fn wait_for_changes(&self, timeout: Duration) -> bool {
        if let Err(e) = self.listener.listen(&self.pg) {
            tracing::debug!(error = %e, "cannot listen for catalog changes; polling");
            std::thread::sleep(timeout);
            return false;
        }
        let inbox = self.listener.inbox.lock();
        inbox.recv_timeout(timeout).is_ok()
    }

    fn heartbeat(&self, live: Duration) -> Result<usize, StoreError> {
        let instance = self.instance.clone();
        let live_s = live.as_secs_f64();
        let rows = self.pg.run(move |c| async move {
            c.execute(
                "INSERT INTO instances (id, started_at, seen_at) VALUES ($1, now(), now()) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                &[&instance],
            )
            .await?;
            Ok(c.query(
                "SELECT count(*) FROM instances \
                 WHERE seen_at > now() - make_interval(secs => $1)",
                &[&live_s],
            )
            .await?)
        })?;
        Ok(rows
            .first()
            .map_or(1, |r| r.get::<_, i64>(0).max(1) as usize))
    }

    fn backlog(&self) -> Backlog {
        PgEngine::backlog(self)
    }

    fn set_process(&self, process: &str) {
        let _ = self.process.set(process.to_string());
    }

    /// One statement, so one snapshot: the totals and their parts agree.
    fn shares(&self, tenant: &str, period: Period, measure: &str) -> Result<Shares, StoreError> {
        let rows = self.query(
            "SELECT 0, '', calls, tokens FROM period_totals WHERE period = $1 AND tenant_id = $2 \
             UNION ALL SELECT 1, process, calls, tokens FROM process_totals \
             WHERE period = $1 AND tenant_id = $2 \
             UNION ALL SELECT 2, '', \
             (extract(epoch FROM now() - made_at) * 1000)::int8, 0::int8 FROM shared_periods \
             WHERE period = $1 AND tenant_id = $2 AND measure = $3 \
             UNION ALL SELECT 3, process, granted, given FROM process_grants \
             WHERE period = $1 AND tenant_id = $2 AND measure = $3",
            vec![
                Box::new(period.0),
                Box::new(tenant.to_string()),
                Box::new(measure.to_string()),
            ],
        )?;
        let mut shares = Shares::default();
        for r in &rows {
            let totals = PeriodTotals {
                calls: r.get::<_, i64>(2).max(0) as u64,
                tokens: r.get::<_, i64>(3).max(0) as u64,
            };
            match r.get::<_, i32>(0) {
                0 => shares.total = totals,
                1 => shares.by_process.push((r.get(1), totals)),
                2 => shares.made_ms_ago = Some(totals.calls),
                _ => shares.grants.push((r.get(1), totals.calls, totals.tokens)),
            }
        }
        Ok(shares)
    }

    fn persisted(
        &self,
        period: Period,
        tenants: &[String],
    ) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        let rows = self.query(
            "SELECT tenant_id, calls, tokens FROM period_totals \
             WHERE period = $1 AND tenant_id = ANY($2)",
            vec![Box::new(period.0), Box::new(tenants.to_vec())],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let totals = PeriodTotals {
                    calls: r.get::<_, i64>(1).max(0) as u64,
                    tokens: r.get::<_, i64>(2).max(0) as u64,
                };
                (r.get(0), totals)
            })
            .collect())
    }

    fn write_grants(
        &self,
        period: Period,
        measure: &str,
        rows: &[(String, u64, u64)],
    ) -> Result<(), StoreError> {
        let Some(process) = self.process.get().cloned() else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let i = |v: u64| v.min(i64::MAX as u64) as i64;
        let tenants: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
        let granted: Vec<i64> = rows.iter().map(|r| i(r.1)).collect();
        let given: Vec<i64> = rows.iter().map(|r| i(r.2)).collect();
        self.query(
            "INSERT INTO process_grants (period, tenant_id, measure, process, granted, given) \
             SELECT $1, t, $2, $3, g, b FROM unnest($4::text[], $5::int8[], $6::int8[]) AS r(t, g, b) \
             ON CONFLICT (period, tenant_id, measure, process) DO UPDATE SET \
             granted = GREATEST(process_grants.granted, EXCLUDED.granted), \
             given = GREATEST(process_grants.given, EXCLUDED.given)",
            vec![
                Box::new(period.0),
                Box::new(measure.to_string()),
                Box::new(process),
                Box::new(tenants),
                Box::new(granted),
                Box::new(given),
            ],
        )?;
        Ok(())
    }

    fn mark_made(&self, tenant: &str, period: Period, measure: &str) -> Result<(), StoreError> {
        self.query(
            "INSERT INTO shared_periods (period, tenant_id, measure) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            vec![
                Box::new(period.0),
                Box::new(tenant.to_string()),
                Box::new(measure.to_string()),
            ],
        )?;
        Ok(())
    }

    fn leave(&self) -> Result<(), StoreError> {
        let instance = self.instance.clone();
        self.pg.run(move |c| async move {
            c.execute("DELETE FROM instances WHERE id = $1", &[&instance])
                .await?;
            Ok(())
        })
    }
}
