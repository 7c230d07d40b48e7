//! The schema, as versioned migrations embedded in the binary. Tollgate
//! applies the missing ones itself on start, one instance at a time (an
//! advisory lock), and refuses a database a newer Tollgate migrated.
//!
//! Layout (version 1):
//! - `plans`, `tenants`, `api_keys` (the SHA-256 of a key, never the key):
//!   the catalog, a column per field;
//! - `catalog_changes`: one row per catalog write (`kind`, `id`, the
//!   instance that made it), numbered; the other instances follow it
//!   (`LISTEN tollgate_catalog`, and polling);
//! - `usage_records`: one row per record, partitioned by UTC day (`day`,
//!   days since the epoch; one partition per day, listed in `usage_days`),
//!   metadata as `jsonb`; `usage_batches`: each usage write's
//!   `(instance, seq)`, written in the same transaction, so that a write
//!   sent twice is taken once;
//! - `period_totals`, `rollup_cells` (a cell in the one codec's bytes; the
//!   fleet's cells under the owner `''`, tenant ids being never empty) and
//!   `alert_marks`;
//! - `instances`: who is serving on this database, with a heartbeat.
//!
//! Version 2 adds to `usage_records` `api_version`, `country`,
//! `integration` and `retried` (older rows take the defaults); the cells'
//! bytes gained a tail ([`crate::rollup::CellExt`]) that older cells lack.
//!
//! Version 8 adds to `usage_records` the token kinds (`cached_prompt_tokens`,
//! `cache_write_tokens`, `cache_write_1h_tokens`, `reasoning_tokens`, each
//! part of `prompt_tokens` or `completion_tokens`) and where the cost went
//! (`cost_uncached_prompt_usd`, `cost_cached_prompt_usd`, `cost_cache_write_usd`, `cost_completion_usd`,
//! `cost_reasoning_usd`) and the key that made each (`key_id`); older rows
//! read 0 and ''. The cells' bytes gained a second tail
//! ([`crate::rollup::CellExt6`]). Keys gain `expires_at` and a rotated
//! key's `previous_sha256` with `previous_until`; `key_last_used` keeps
//! when each key was last used (to the minute, off the catalog).
//!
//! Version 9 adds the limits of SPEC §12 to plans, tenants and keys
//! (`limits`: the list in the one codec's bytes, `NULL` for none),
//! tenants' `billing_day` and plans' `reserve_usd_micro`.

use super::client::Pg;
use crate::store::StoreError;

/// Migration `n + 1` is `MIGRATIONS[n]`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE plans (
    id text PRIMARY KEY,
    name text NOT NULL,
    monthly_calls bigint,
    monthly_tokens bigint,
    rate_requests bigint,
    rate_per_seconds bigint,
    rate_burst bigint,
    price_usd_monthly double precision NOT NULL,
    ingest_records bigint,
    ingest_per_seconds bigint,
    ingest_burst bigint
);
CREATE TABLE tenants (
    id text PRIMARY KEY,
    name text NOT NULL,
    plan_id text NOT NULL,
    suspended boolean NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    prefix text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    sha256 bytea NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
CREATE TABLE catalog_changes (
    version bigserial PRIMARY KEY,
    kind text NOT NULL,
    id text NOT NULL,
    origin text NOT NULL,
    made_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE alert_marks (
    tenant_id text NOT NULL,
    period integer NOT NULL,
    url text NOT NULL,
    threshold integer NOT NULL,
    body text NOT NULL,
    delivered boolean NOT NULL,
    PRIMARY KEY (tenant_id, period, url, threshold)
);
CREATE TABLE period_totals (
    period integer NOT NULL,
    tenant_id text NOT NULL,
    calls bigint NOT NULL,
    tokens bigint NOT NULL,
    PRIMARY KEY (period, tenant_id)
);
CREATE SEQUENCE usage_record_ids;
CREATE TABLE usage_records (
    day integer NOT NULL,
    id bigint NOT NULL DEFAULT nextval('usage_record_ids'),
    tenant_id text NOT NULL,
    ts timestamptz NOT NULL,
    endpoint text NOT NULL,
    method text NOT NULL,
    status smallint NOT NULL,
    response_ms double precision NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    tokens bigint NOT NULL,
    model text NOT NULL,
    user_id text NOT NULL,
    bot_id text NOT NULL,
    metadata jsonb NOT NULL,
    calls bigint NOT NULL,
    cost_usd double precision NOT NULL,
    rejected boolean NOT NULL
) PARTITION BY RANGE (day);
CREATE INDEX usage_records_tenant ON usage_records (tenant_id, day, id);
CREATE TABLE usage_days (day integer PRIMARY KEY);
CREATE TABLE usage_batches (
    instance text NOT NULL,
    seq bigint NOT NULL,
    records integer NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, seq)
);
CREATE TABLE rollup_cells (
    grain smallint NOT NULL,
    owner text NOT NULL,
    bucket bigint NOT NULL,
    cell bytea NOT NULL,
    PRIMARY KEY (grain, owner, bucket)
);
CREATE TABLE instances (
    id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL
);
"#,
    r#"
ALTER TABLE usage_records
    ADD COLUMN api_version text NOT NULL DEFAULT '',
    ADD COLUMN country text NOT NULL DEFAULT '',
    ADD COLUMN integration text NOT NULL DEFAULT '',
    ADD COLUMN retried boolean NOT NULL DEFAULT false;
"#,
    r#"
CREATE TABLE process_totals (
    period integer NOT NULL,
    tenant_id text NOT NULL,
    process text NOT NULL,
    calls bigint NOT NULL,
    tokens bigint NOT NULL,
    PRIMARY KEY (period, tenant_id, process)
);
CREATE TABLE shared_periods (
    period integer NOT NULL,
    tenant_id text NOT NULL,
    made_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (period, tenant_id)
);
"#,
    r#"
ALTER TABLE plans
    ADD COLUMN reserve_tokens bigint,
    ADD COLUMN reservation_ttl_seconds bigint;
ALTER TABLE shared_periods
    ADD COLUMN measure text NOT NULL DEFAULT 'calls',
    DROP CONSTRAINT shared_periods_pkey,
    ADD PRIMARY KEY (period, tenant_id, measure);
"#,
    r#"
CREATE TABLE process_grants (
    period integer NOT NULL,
    tenant_id text NOT NULL,
    measure text NOT NULL,
    process text NOT NULL,
    granted bigint NOT NULL,
    given bigint NOT NULL,
    PRIMARY KEY (period, tenant_id, measure, process)
);
"#,
    r#"
CREATE TABLE record_ids (
    tenant_id text NOT NULL,
    id text NOT NULL,
    batch_key text NOT NULL,
    made_at bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX record_ids_made_at ON record_ids (made_at);
"#,
    r#"
ALTER TABLE usage_records
    ADD COLUMN cached_prompt_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_write_1h_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN reasoning_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cost_uncached_prompt_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN cost_cached_prompt_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN cost_cache_write_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN cost_completion_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN cost_reasoning_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN key_id text NOT NULL DEFAULT '';
ALTER TABLE api_keys
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN previous_sha256 bytea,
    ADD COLUMN previous_until timestamptz;
CREATE TABLE key_last_used (
    key_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    at_ms bigint NOT NULL
);
"#,
    r#"
ALTER TABLE plans ADD COLUMN limits bytea, ADD COLUMN reserve_usd_micro bigint;
ALTER TABLE tenants ADD COLUMN limits bytea, ADD COLUMN billing_day smallint;
ALTER TABLE api_keys ADD COLUMN limits bytea;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Serialises migrations between instances starting together.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

/// Brings the database to [`SCHEMA_VERSION`]; refuses one that is newer.
pub(super) fn migrate(pg: &Pg) -> Result<(), StoreError> {
    pg.run(|mut c| async move {
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS tollgate_schema (version integer NOT NULL)")
            .await?;
        let found: Option<i32> = tx
            .query_opt("SELECT version FROM tollgate_schema", &[])
            .await?
            .map(|r| r.get(0));
        let found = found.unwrap_or(0) as u32;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await?;
            tracing::info!(version = n + 1, "postgres schema migrated");
        }
        tx.execute("DELETE FROM tollgate_schema", &[]).await?;
        tx.execute(
            "INSERT INTO tollgate_schema (version) VALUES ($1)",
            &[&(SCHEMA_VERSION as i32)],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    })
}
