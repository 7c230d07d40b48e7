//! sled's key layout: how each row's key is built and read back (the whole
//! picture is in `engine.rs` and ARCHITECTURE.md).

use crate::quota::period::{civil_from_days, Period};
use crate::rollup::Owner;

pub(super) const RAW_PREFIX: &str = "raw/";
pub(super) const MINUTE_PREFIX: &str = "rollup/minute/";
pub(super) const MS_PER_DAY: i64 = 86_400_000;

pub(super) fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_DAY)
}

/// The name of the day-tree `prefix` + `YYYY-MM-DD`.
pub(super) fn day_tree_name(prefix: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{prefix}{y:04}-{m:02}-{d:02}")
}

pub(super) fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

/// Tenant id ++ 0x00 ++ bucket (i64 BE, sign bit flipped); the fleet's
/// cells under the empty id (never a tenant's).
pub(super) fn cell_key(owner: &Owner, bucket: i64) -> Vec<u8> {
    let mut k = tenant_prefix(match owner {
        Owner::Fleet => "",
        Owner::Tenant(id) => id,
    });
    k.extend_from_slice(&((bucket as u64) ^ (1 << 63)).to_be_bytes());
    k
}

pub(super) fn cell_bucket(key: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[key.len() - 8..]);
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// Period (i32 BE, sign bit flipped) ++ tenant id.
pub(super) fn counter_key(period: Period, tenant: &str) -> Vec<u8> {
    let mut k = ((period.0 as u32) ^ 0x8000_0000).to_be_bytes().to_vec();
    k.extend_from_slice(tenant.as_bytes());
    k
}

/// The tenant id of a counter key.
pub(super) fn counter_tenant(key: &[u8]) -> &[u8] {
    key.get(4..).unwrap_or_default()
}

/// `key` followed by the chunk number.
pub(super) fn chunk_key(mut key: Vec<u8>, chunk: usize) -> Vec<u8> {
    key.extend_from_slice(&(chunk as u32).to_be_bytes());
    key
}

/// The write number a journal key starts with.
pub(super) fn key_seq(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if let Some(head) = key.get(..8) {
        b.copy_from_slice(head);
    }
    u64::from_be_bytes(b)
}

/// The prefix of the chunks one write made of a tenant's records of one
/// day: tenant id ++ 0x00 ++ seq (u64 BE).
pub(super) fn block_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + 9);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
