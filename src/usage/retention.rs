//! Retention: raw records older than `retention.raw_days` and minute rollups
//! older than [`MINUTE_ROLLUP_DAYS`] are dropped a whole day-tree at a time;
//! hour and day rollups are kept; claimed record ids are forgotten after
//! [`CLAIM_DAYS`].

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError, CLAIM_DAYS};

pub(crate) const MINUTE_ROLLUP_DAYS: i64 = 7;

/// Drops what `now` puts past retention. Returns how many day-trees went.
pub(crate) fn apply(
    store: &dyn Store,
    now: DateTime<Utc>,
    raw_days: u32,
) -> Result<usize, StoreError> {
    let today = now.timestamp_millis().div_euclid(86_400_000);
    let dropped = store.expire_before(today - raw_days as i64, today - MINUTE_ROLLUP_DAYS)?;
    if dropped > 0 {
        tracing::info!(day_trees = dropped, "retention dropped old day-trees");
    }
    let forgotten = store.drop_claims_before(now.timestamp_millis() - CLAIM_DAYS * 86_400_000)?;
    if forgotten > 0 {
        tracing::info!(
            claims = forgotten,
            days = CLAIM_DAYS,
            "retention forgot old record ids"
        );
    }
    Ok(dropped)
}
