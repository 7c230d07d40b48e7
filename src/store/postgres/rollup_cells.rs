//! [`RollupCells`] on PostgreSQL: the stored rollup cells and their heads.

use super::engine::{grain_id, owner_id, upsert_cells, PgEngine, ROLLUP_LOCK};
use super::spool::CellId;
use crate::rollup::{Buckets, Cell, CellHead, Owner};
use crate::store::codec::{decode_cell as decode, decode_prefix, encode_cell};
use crate::store::{CellKey, RollupCells, StoreError, StoredCell, UsageLog};
use std::collections::BTreeMap;

impl RollupCells for PgEngine {
    fn rolls_up_on_append(&self) -> bool {
        true
    }

    fn cell(&self, key: &CellKey) -> Result<Option<StoredCell>, StoreError> {
        let (grain, owner, bucket) = key;
        let rows = self.query(
            "SELECT cell FROM rollup_cells WHERE grain = $1 AND owner = $2 AND bucket = $3",
            vec![
                Box::new(grain_id(*grain)),
                Box::new(owner_id(owner).to_string()),
                Box::new(*bucket),
            ],
        )?;
        rows.first()
            .map(|r| {
                Ok(StoredCell {
                    cell: decode(r.get::<_, &[u8]>(0))?,
                    seq: 0,
                })
            })
            .transpose()
    }

    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.cell_values(owner, span, |b| Ok(decode(b)?))
    }

    fn cell_heads(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, CellHead)>, StoreError> {
        // A stored cell begins with its head.
        self.cell_values(owner, span, |b| Ok(decode_prefix::<CellHead>(b)?))
    }

    /// Every write's cells are written with it.
    fn watermark(&self) -> Result<u64, StoreError> {
        self.last_seq()
    }

    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        _watermark: u64,
    ) -> Result<(), StoreError> {
        if cells.is_empty() {
            return Ok(());
        }
        let cells: Vec<(CellId, Cell)> = cells
            .into_iter()
            .map(|((g, o, b), c)| ((grain_id(g), owner_id(&o).to_string(), b), c.cell))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        self.transaction(move |tx| {
            Box::pin(async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROLLUP_LOCK])
                    .await?;
                let mut bytes = Vec::with_capacity(cells.len());
                for (_, cell) in &cells {
                    bytes.push(encode_cell(cell)?);
                }
                let keys: Vec<&CellId> = cells.iter().map(|(k, _)| k).collect();
                upsert_cells(tx, &keys, &bytes).await
            })
        })
    }

    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError> {
        let before = day.saturating_mul(1440);
        let rows = self.query(
            "WITH gone AS (DELETE FROM rollup_cells WHERE grain = 0 AND bucket < $1 \
             RETURNING bucket) SELECT count(DISTINCT div(bucket, 1440)) FROM gone",
            vec![Box::new(before)],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as usize))
    }
}
