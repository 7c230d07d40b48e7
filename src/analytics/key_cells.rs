//! [`KeyCells`]: the rollup cells of one API key's records over a range,
//! made for one report from the stored records (rollups are kept per
//! tenant, not per key), so that the same queries answer a report
//! filtered by `keyId`. Day cells always; hour cells where the series or
//! the range's partial days need them; minute cells where the series or
//! the range's partial hours need them - a month's report holds a few
//! hundred cells.

use std::collections::BTreeMap;

use super::query::{Cells, Range};
use crate::rollup::{Buckets, Cell, Grain, Owner};
use crate::store::{Store, StoreError};

/// The most records of one key a filtered report reads.
pub const MAX_RECORDS: u64 = 2_000_000;

pub struct KeyCells {
    cells: BTreeMap<(Grain, i64), Cell>,
}

/// Why a filtered report could not be made.
#[derive(Debug)]
pub enum KeyCellsError {
    Store(StoreError),
    /// More than [`MAX_RECORDS`] records of the key in the range.
    TooMany,
}

impl From<StoreError> for KeyCellsError {
    fn from(e: StoreError) -> Self {
        KeyCellsError::Store(e)
    }
}

impl KeyCells {
    /// Reads the records of `tenant` made with key `key_id` in `range`
    /// into cells for a series by `bucket`.
    pub fn read(
        store: &dyn Store,
        tenant: &str,
        key_id: &str,
        range: Range,
        bucket: Grain,
    ) -> Result<KeyCells, KeyCellsError> {
        let mut cells: BTreeMap<(Grain, i64), Cell> = BTreeMap::new();
        let (from, to) = (range.from_ms, range.to_ms);
        let edge = |g: Grain, ts: i64| {
            let b = g.bucket(ts);
            b == g.bucket(from) || b == g.bucket(to.saturating_sub(1))
        };
        let mut n = 0u64;
        store.scan_usage(tenant, from, to, &mut |r| {
            if *r.key_id != *key_id {
                return true;
            }
            n += 1;
            if n > MAX_RECORDS {
                return false;
            }
            let ts = r.ts_ms;
            let mut add = |g: Grain| cells.entry((g, g.bucket(ts))).or_default().add(r, None);
            add(Grain::Day);
            if bucket != Grain::Day || edge(Grain::Day, ts) {
                add(Grain::Hour);
            }
            if bucket == Grain::Minute || edge(Grain::Hour, ts) {
                add(Grain::Minute);
            }
            true
        })?;
        if n > MAX_RECORDS {
            return Err(KeyCellsError::TooMany);
        }
        Ok(KeyCells { cells })
    }
}

impl Cells for KeyCells {
    fn rollups(&self, _owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        Ok(self
            .cells
            .range((span.grain, span.from)..(span.grain, span.to))
            .map(|((_, b), c)| (*b, c.clone()))
            .collect())
    }
}
