//! The store format's version, and upgrading an older data directory in
//! place on open. The shapes older formats stored live here, and only here.
//!
//! - 1: plans without `ingest_rate`.
//! - 2: plans with `ingest_rate`; tenants and keys with RFC 3339 times and
//!   the status as an enum.
//! - 3: the rows of `rows.rs` (times in milliseconds, the status a flag).
//! - 4: cells and record blocks may carry a tail (`CellExt`, `RecordExt`):
//!   what format 4 added, after the older fields. Format 3 values read as
//!   they are (no tail), so nothing is rewritten; the version moves so that
//!   an older binary, which refuses trailing bytes, refuses the store
//!   clearly instead of failing on the first new value.
//! - 5: plans with `reserve_tokens` and `reservation_ttl_seconds`.
//! - 6: record blocks and cells may carry a second tail (`ChunkExt6`,
//!   `CellExt6`: token kinds, where the cost went, the key that made a
//!   record) after the first, which format 5 values read without; keys
//!   carry their expiry and a rotated key's previous secret (rewritten
//!   from format 5's keys).
//! - 7: plans, tenants and keys carry their limits (SPEC §12), tenants
//!   their billing day, plans the spend a call reserves (all rewritten
//!   from format 6's rows).

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::rows::{KeyRow, PlanRow, RateRow, TenantRow};
use crate::store::StoreError;

/// Bump when the on-disk layout changes; older binaries refuse newer data.
pub const FORMAT_VERSION: u32 = 7;

/// The format of `db` when it is older than this binary's (`None`: this
/// one, a newer one, or a new store).
pub(super) fn older(db: &sled::Db) -> Result<Option<u32>, StoreError> {
    let meta = db.open_tree("meta")?;
    Ok(meta
        .get("format_version")?
        .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
        .filter(|&found| found < FORMAT_VERSION))
}

/// Copies the store in `dir` (closed) beside it, as
/// `<dir>.pre-upgrade-format-<found>` (a number added if that exists):
/// what an upgrade in place would otherwise leave no way back from.
pub(super) fn keep_before_upgrade(
    dir: &std::path::Path,
    found: u32,
) -> Result<std::path::PathBuf, StoreError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "db".into());
    let mut kept = dir.with_file_name(format!("{name}.pre-upgrade-format-{found}"));
    let mut n = 1;
    while kept.exists() {
        n += 1;
        kept = dir.with_file_name(format!("{name}.pre-upgrade-format-{found}.{n}"));
    }
    let fail = |e: std::io::Error| {
        StoreError::Unavailable(format!(
            "cannot keep the store as it was before the upgrade in {}: {e} (nothing was upgraded)",
            kept.display()
        ))
    };
    copy_tree(dir, &kept).map_err(fail)?;
    Ok(kept)
}

/// Copies the directory `from` into `to` (made 0700): the bytes copied.
pub(crate) fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(to)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut bytes = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            bytes += copy_tree(&entry.path(), &target)?;
        } else {
            bytes += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}

/// Checks the format of `db` and upgrades an older one (in one flush).
pub(super) fn check(db: &sled::Db) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    let found = match meta.get("format_version")? {
        Some(v) => u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Unavailable("format_version is not 4 bytes".into()))?,
        ),
        None => {
            meta.insert("format_version", &FORMAT_VERSION.to_be_bytes())?;
            return Ok(());
        }
    };
    if found > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            found,
            supported: FORMAT_VERSION,
        });
    }
    if found < FORMAT_VERSION {
        if found < 2 {
            rewrite::<PlanV1, PlanRow>(&db.open_tree("plans")?, PlanV1::upgrade)?;
        } else if found < 5 {
            rewrite::<PlanV4, PlanRow>(&db.open_tree("plans")?, PlanV4::upgrade)?;
        } else {
            rewrite::<PlanV6, PlanRow>(&db.open_tree("plans")?, PlanV6::upgrade)?;
        }
        if found < 3 {
            rewrite::<TenantV2, TenantRow>(&db.open_tree("tenants")?, TenantV2::upgrade)?;
            rewrite::<KeyV2, KeyRow>(&db.open_tree("keys")?, KeyV2::upgrade)?;
        } else {
            rewrite::<TenantV6, TenantRow>(&db.open_tree("tenants")?, TenantV6::upgrade)?;
            if found < 6 {
                rewrite::<KeyV5, KeyRow>(&db.open_tree("keys")?, KeyV5::upgrade)?;
            } else {
                rewrite::<KeyV6, KeyRow>(&db.open_tree("keys")?, KeyV6::upgrade)?;
            }
        }
        meta.insert("format_version", &FORMAT_VERSION.to_be_bytes())?;
        db.flush()?;
        tracing::info!(from = found, to = FORMAT_VERSION, "store format upgraded");
    }
    Ok(())
}

/// Rewrites every value of `tree` from shape `Old` to `New`, in one batch.
fn rewrite<Old: serde::de::DeserializeOwned, New: Serialize>(
    tree: &sled::Tree,
    upgrade: impl Fn(Old) -> Result<New, StoreError>,
) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for kv in tree.iter() {
        let (k, v) = kv?;
        batch.insert(k, encode(&upgrade(decode(&v)?)?)?);
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// A time as formats 1 and 2 stored it.
fn parse_time(s: &str) -> Result<i64, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| StoreError::Unavailable(format!("a stored time {s:?} does not parse: {e}")))
}

/// A plan as format 1 stored it.
#[derive(Serialize, Deserialize)]
pub(super) struct PlanV1 {
    pub id: String,
    pub name: String,
    pub monthly_calls: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateRow>,
    pub price_usd_monthly: f64,
}

impl PlanV1 {
    fn upgrade(self) -> Result<PlanRow, StoreError> {
        Ok(PlanRow {
            id: self.id,
            name: self.name,
            monthly_calls: self.monthly_calls,
            monthly_tokens: self.monthly_tokens,
            rate_limit: self.rate_limit,
            price_usd_monthly: self.price_usd_monthly,
            ingest_rate: None,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            limits: Vec::new(),
            reserve_usd: None,
        })
    }
}

/// A plan as formats 2 to 4 stored it (no token reservations).
#[derive(Serialize, Deserialize)]
pub(super) struct PlanV4 {
    pub id: String,
    pub name: String,
    pub monthly_calls: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateRow>,
    pub price_usd_monthly: f64,
    pub ingest_rate: Option<RateRow>,
}

impl PlanV4 {
    fn upgrade(self) -> Result<PlanRow, StoreError> {
        Ok(PlanRow {
            id: self.id,
            name: self.name,
            monthly_calls: self.monthly_calls,
            monthly_tokens: self.monthly_tokens,
            rate_limit: self.rate_limit,
            price_usd_monthly: self.price_usd_monthly,
            ingest_rate: self.ingest_rate,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            limits: Vec::new(),
            reserve_usd: None,
        })
    }
}

#[derive(Serialize, Deserialize, PartialEq)]
enum StatusV2 {
    Active,
    Suspended,
}

/// A tenant as formats 1 and 2 stored it.
#[derive(Serialize, Deserialize)]
struct TenantV2 {
    id: String,
    name: String,
    plan_id: String,
    status: StatusV2,
    created_at: String,
}

impl TenantV2 {
    fn upgrade(self) -> Result<TenantRow, StoreError> {
        Ok(TenantRow {
            created_ms: parse_time(&self.created_at)?,
            id: self.id,
            name: self.name,
            plan_id: self.plan_id,
            suspended: self.status == StatusV2::Suspended,
            limits: Vec::new(),
            billing_day: None,
        })
    }
}

/// A key as formats 1 and 2 stored it.
#[derive(Serialize, Deserialize)]
struct KeyV2 {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    created_at: String,
    revoked_at: Option<String>,
    hash: [u8; 32],
}

impl KeyV2 {
    fn upgrade(self) -> Result<KeyRow, StoreError> {
        Ok(KeyRow {
            created_ms: parse_time(&self.created_at)?,
            revoked_ms: self.revoked_at.as_deref().map(parse_time).transpose()?,
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            prefix: self.prefix,
            hash: self.hash,
            expires_ms: None,
            previous: None,
            limits: Vec::new(),
        })
    }
}

/// A key as formats 3 to 5 stored it (no expiry, no rotation).
#[derive(Deserialize)]
struct KeyV5 {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    created_ms: i64,
    revoked_ms: Option<i64>,
    hash: [u8; 32],
}

impl KeyV5 {
    fn upgrade(self) -> Result<KeyRow, StoreError> {
        Ok(KeyRow {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            prefix: self.prefix,
            created_ms: self.created_ms,
            revoked_ms: self.revoked_ms,
            hash: self.hash,
            expires_ms: None,
            previous: None,
            limits: Vec::new(),
        })
    }
}

/// A plan as formats 5 and 6 stored it (no limits of SPEC §12).
#[derive(Deserialize)]
struct PlanV6 {
    id: String,
    name: String,
    monthly_calls: Option<u64>,
    monthly_tokens: Option<u64>,
    rate_limit: Option<RateRow>,
    price_usd_monthly: f64,
    ingest_rate: Option<RateRow>,
    reserve_tokens: Option<u64>,
    reservation_ttl_seconds: Option<u64>,
}

impl PlanV6 {
    fn upgrade(self) -> Result<PlanRow, StoreError> {
        Ok(PlanRow {
            id: self.id,
            name: self.name,
            monthly_calls: self.monthly_calls,
            monthly_tokens: self.monthly_tokens,
            rate_limit: self.rate_limit,
            price_usd_monthly: self.price_usd_monthly,
            ingest_rate: self.ingest_rate,
            reserve_tokens: self.reserve_tokens,
            reservation_ttl_seconds: self.reservation_ttl_seconds,
            limits: Vec::new(),
            reserve_usd: None,
        })
    }
}

/// A tenant as formats 3 to 6 stored it.
#[derive(Deserialize)]
struct TenantV6 {
    id: String,
    name: String,
    plan_id: String,
    suspended: bool,
    created_ms: i64,
}

impl TenantV6 {
    fn upgrade(self) -> Result<TenantRow, StoreError> {
        Ok(TenantRow {
            id: self.id,
            name: self.name,
            plan_id: self.plan_id,
            suspended: self.suspended,
            created_ms: self.created_ms,
            limits: Vec::new(),
            billing_day: None,
        })
    }
}

/// A key as format 6 stored it.
#[derive(Deserialize)]
struct KeyV6 {
    id: String,
    tenant_id: String,
    name: String,
    prefix: String,
    created_ms: i64,
    revoked_ms: Option<i64>,
    hash: [u8; 32],
    expires_ms: Option<i64>,
    previous: Option<([u8; 32], i64)>,
}

impl KeyV6 {
    fn upgrade(self) -> Result<KeyRow, StoreError> {
        Ok(KeyRow {
            id: self.id,
            tenant_id: self.tenant_id,
            name: self.name,
            prefix: self.prefix,
            created_ms: self.created_ms,
            revoked_ms: self.revoked_ms,
            hash: self.hash,
            expires_ms: self.expires_ms,
            previous: self.previous,
            limits: Vec::new(),
        })
    }
}
