//! [`Catalog`] on PostgreSQL: plans, tenants and keys, each change logged in `catalog_changes` for the other instances, and the rows they are read from.

use super::changes::changed;
use super::engine::{i64_of, u64_of, PgEngine};
use crate::model::{
    ApiKey, IngestRate, Plan, PreviousSecret, RateLimit, StoredKey, Tenant, TenantStatus,
};
use crate::store::{limit_rows, Catalog, KeyUse, StoreError};
use std::collections::HashMap;
use tokio_postgres::{GenericClient, Row};

impl Catalog for PgEngine {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        let rows = self.query(
            format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY id"),
            Vec::new(),
        )?;
        rows.iter().map(|r| plan_of(r, 0)).collect()
    }

    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        let p = plan.clone();
        let limits = limit_rows::to_bytes(&p.limits)?;
        let origin = self.instance.clone();
        self.transaction(move |tx| {
            Box::pin(async move {
                let rate = p.rate_limit.map(|r| (r.requests, r.per_seconds, r.burst));
                let ingest = p.ingest_rate.map(|r| (r.records, r.per_seconds, r.burst));
                let part = |r: Option<(u64, u64, u64)>, f: fn((u64, u64, u64)) -> u64| {
                    r.map(|r| i64_of(f(r)))
                };
                tx.execute(
                    &format!(
                        "INSERT INTO plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (id) DO UPDATE SET name = $2, \
                         monthly_calls = $3, monthly_tokens = $4, rate_requests = $5, \
                         rate_per_seconds = $6, rate_burst = $7, price_usd_monthly = $8, \
                         ingest_records = $9, ingest_per_seconds = $10, ingest_burst = $11, \
                         reserve_tokens = $12, reservation_ttl_seconds = $13, limits = $14, \
                         reserve_usd_micro = $15"
                    ),
                    &[
                        &p.id,
                        &p.name,
                        &p.monthly_calls.map(i64_of),
                        &p.monthly_tokens.map(i64_of),
                        &part(rate, |r| r.0),
                        &part(rate, |r| r.1),
                        &part(rate, |r| r.2),
                        &p.price_usd_monthly,
                        &part(ingest, |r| r.0),
                        &part(ingest, |r| r.1),
                        &part(ingest, |r| r.2),
                        &p.reserve_tokens.map(i64_of),
                        &p.reservation_ttl_seconds.map(i64_of),
                        &limits,
                        &p.reserve_usd.map(i64_of),
                    ],
                )
                .await?;
                changed(tx, "plan", &[&p.id], &origin).await
            })
        })
    }

    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        let (id, origin) = (id.to_string(), self.instance.clone());
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("DELETE FROM plans WHERE id = $1", &[&id])
                    .await?;
                changed(tx, "plan", &[&id], &origin).await
            })
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self.query(
            format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"),
            Vec::new(),
        )?;
        rows.iter().map(|r| tenant_of(r, 0)).collect()
    }

    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        let rows = self.query(
            format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"),
            vec![Box::new(id.to_string())],
        )?;
        rows.first().map(|r| tenant_of(r, 0)).transpose()
    }

    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.import(std::slice::from_ref(tenant), &[])
    }

    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"),
            Vec::new(),
        )?;
        rows.iter().map(|r| key_of(r, 0)).collect()
    }

    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            vec![Box::new(id.to_string())],
        )?;
        rows.first().map(|r| key_of(r, 0)).transpose()
    }

    fn keys_of(&self, tenant_id: &str) -> Result<Vec<StoredKey>, StoreError> {
        let rows = self.query(
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id"),
            vec![Box::new(tenant_id.to_string())],
        )?;
        rows.iter().map(|r| key_of(r, 0)).collect()
    }

    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.import(&[], std::slice::from_ref(key))
    }

    fn touch_keys(&self, used: &[KeyUse]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let tenants: Vec<String> = used.iter().map(|u| u.tenant.clone()).collect();
        let ids: Vec<String> = used.iter().map(|u| u.key_id.clone()).collect();
        let at: Vec<i64> = used.iter().map(|u| u.at_ms).collect();
        self.pg.run(move |c| async move {
            c.execute(
                "INSERT INTO key_last_used (key_id, tenant_id, at_ms) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) \
                 ON CONFLICT (key_id) DO UPDATE \
                 SET at_ms = GREATEST(key_last_used.at_ms, EXCLUDED.at_ms)",
                &[&ids, &tenants, &at],
            )
            .await?;
            Ok(())
        })
    }

    fn keys_last_used(&self, tenant_id: &str) -> Result<HashMap<String, i64>, StoreError> {
        let rows = self.query(
            "SELECT key_id, at_ms FROM key_last_used WHERE tenant_id = $1",
            vec![Box::new(tenant_id.to_string())],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        let (tenants, keys) = (tenants.to_vec(), keys.to_vec());
        let origin = self.instance.clone();
        self.transaction(move |tx| {
            Box::pin(async move {
                if !tenants.is_empty() {
                    upsert_tenants(tx, &tenants).await?;
                    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
                    changed(tx, "tenant", &ids, &origin).await?;
                }
                if !keys.is_empty() {
                    upsert_keys(tx, &keys).await?;
                    let ids: Vec<&str> = keys.iter().map(|k| k.key.id.as_str()).collect();
                    changed(tx, "key", &ids, &origin).await?;
                }
                Ok(())
            })
        })
    }
}

/// A plan from [`PLAN_COLUMNS`] starting at column `at`.
pub(super) fn plan_of(r: &Row, at: usize) -> Result<Plan, StoreError> {
    let rate = |i: usize| -> Option<(u64, u64, u64)> {
        Some((
            u64_of(r.get(at + i))?,
            u64_of(r.get(at + i + 1))?,
            u64_of(r.get(at + i + 2))?,
        ))
    };
    Ok(Plan {
        id: r.get(at),
        name: r.get(at + 1),
        monthly_calls: u64_of(r.get(at + 2)),
        monthly_tokens: u64_of(r.get(at + 3)),
        rate_limit: rate(4).map(|(requests, per_seconds, burst)| RateLimit {
            requests,
            per_seconds,
            burst,
        }),
        price_usd_monthly: r.get(at + 7),
        ingest_rate: rate(8).map(|(records, per_seconds, burst)| IngestRate {
            records,
            per_seconds,
            burst,
        }),
        reserve_tokens: u64_of(r.get(at + 11)),
        reservation_ttl_seconds: u64_of(r.get(at + 12)),
        limits: limit_rows::from_bytes(r.get::<_, Option<&[u8]>>(at + 13))?,
        reserve_usd: u64_of(r.get(at + 14)),
    })
}

pub(super) const PLAN_COLUMNS: &str = "id, name, monthly_calls, monthly_tokens, rate_requests, \
     rate_per_seconds, rate_burst, price_usd_monthly, ingest_records, ingest_per_seconds, \
     ingest_burst, reserve_tokens, reservation_ttl_seconds, limits, reserve_usd_micro";
pub(super) const TENANT_COLUMNS: &str =
    "id, name, plan_id, suspended, created_at, limits, billing_day";
pub(super) const KEY_COLUMNS: &str =
    "id, tenant_id, name, prefix, created_at, revoked_at, sha256, expires_at, previous_sha256, \
     previous_until, limits";

/// A tenant from [`TENANT_COLUMNS`] starting at column `at`.
pub(super) fn tenant_of(r: &Row, at: usize) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: r.get(at),
        name: r.get(at + 1),
        plan_id: r.get(at + 2),
        status: if r.get(at + 3) {
            TenantStatus::Suspended
        } else {
            TenantStatus::Active
        },
        created_at: r.get(at + 4),
        limits: limit_rows::from_bytes(r.get::<_, Option<&[u8]>>(at + 5))?,
        billing_day: r
            .get::<_, Option<i16>>(at + 6)
            .and_then(|d| u8::try_from(d).ok()),
    })
}

/// A key from [`KEY_COLUMNS`] starting at column `at`.
pub(super) fn key_of(r: &Row, at: usize) -> Result<StoredKey, StoreError> {
    let hash: Vec<u8> = r.get(at + 6);
    Ok(StoredKey {
        key: ApiKey {
            id: r.get(at),
            tenant_id: r.get(at + 1),
            name: r.get(at + 2),
            prefix: r.get(at + 3),
            created_at: r.get(at + 4),
            revoked_at: r.get(at + 5),
            expires_at: r.get(at + 7),
            last_used_at: None,
            limits: limit_rows::from_bytes(r.get::<_, Option<&[u8]>>(at + 10))?,
        },
        hash: hash
            .try_into()
            .map_err(|_| StoreError::Codec("a stored key hash is not 32 bytes".into()))?,
        previous: match (
            r.get::<_, Option<Vec<u8>>>(at + 8),
            r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(at + 9),
        ) {
            (Some(h), Some(until)) => Some(PreviousSecret {
                hash: h.try_into().map_err(|_| {
                    StoreError::Codec("a stored previous key hash is not 32 bytes".into())
                })?,
                until,
            }),
            _ => None,
        },
    })
}

async fn upsert_tenants(c: &impl GenericClient, tenants: &[Tenant]) -> Result<(), StoreError> {
    let ids: Vec<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
    let plans: Vec<&str> = tenants.iter().map(|t| t.plan_id.as_str()).collect();
    let suspended: Vec<bool> = tenants
        .iter()
        .map(|t| t.status == TenantStatus::Suspended)
        .collect();
    let created: Vec<chrono::DateTime<chrono::Utc>> =
        tenants.iter().map(|t| t.created_at).collect();
    let limits = tenants
        .iter()
        .map(|t| limit_rows::to_bytes(&t.limits))
        .collect::<Result<Vec<_>, _>>()?;
    let days: Vec<Option<i16>> = tenants
        .iter()
        .map(|t| t.billing_day.map(i16::from))
        .collect();
    c.execute(
        "INSERT INTO tenants (id, name, plan_id, suspended, created_at, limits, billing_day) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::timestamptz[], \
         $6::bytea[], $7::smallint[]) \
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, plan_id = EXCLUDED.plan_id, \
         suspended = EXCLUDED.suspended, created_at = EXCLUDED.created_at, \
         limits = EXCLUDED.limits, billing_day = EXCLUDED.billing_day",
        &[&ids, &names, &plans, &suspended, &created, &limits, &days],
    )
    .await?;
    Ok(())
}

async fn upsert_keys(c: &impl GenericClient, keys: &[StoredKey]) -> Result<(), StoreError> {
    let col = |f: fn(&StoredKey) -> &str| keys.iter().map(f).collect::<Vec<&str>>();
    let ids = col(|k| &k.key.id);
    let tenants = col(|k| &k.key.tenant_id);
    let names = col(|k| &k.key.name);
    let prefixes = col(|k| &k.key.prefix);
    let created: Vec<_> = keys.iter().map(|k| k.key.created_at).collect();
    let revoked: Vec<_> = keys.iter().map(|k| k.key.revoked_at).collect();
    let hashes: Vec<&[u8]> = keys.iter().map(|k| &k.hash[..]).collect();
    let expires: Vec<_> = keys.iter().map(|k| k.key.expires_at).collect();
    let previous: Vec<Option<&[u8]>> = keys
        .iter()
        .map(|k| k.previous.as_ref().map(|p| &p.hash[..]))
        .collect();
    let until: Vec<_> = keys.iter().map(|k| k.previous.map(|p| p.until)).collect();
    let limits = keys
        .iter()
        .map(|k| limit_rows::to_bytes(&k.key.limits))
        .collect::<Result<Vec<_>, _>>()?;
    c.execute(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, created_at, revoked_at, sha256, \
         expires_at, previous_sha256, previous_until, limits) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
         $5::timestamptz[], $6::timestamptz[], $7::bytea[], $8::timestamptz[], $9::bytea[], \
         $10::timestamptz[], $11::bytea[]) \
         ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, \
         prefix = EXCLUDED.prefix, created_at = EXCLUDED.created_at, \
         revoked_at = EXCLUDED.revoked_at, sha256 = EXCLUDED.sha256, \
         expires_at = EXCLUDED.expires_at, previous_sha256 = EXCLUDED.previous_sha256, \
         previous_until = EXCLUDED.previous_until, limits = EXCLUDED.limits",
        &[
            &ids, &tenants, &names, &prefixes, &created, &revoked, &hashes, &expires, &previous,
            &until, &limits,
        ],
    )
    .await?;
    Ok(())
}
