//! [`RollupCells`] on sled: the stored rollup cells and their heads.

use std::collections::HashMap;

use super::codec::decode_prefix;
use super::engine::{read_u64, SledEngine};
use super::{keys::*, rows::CellRow};
use crate::rollup::{Buckets, Cell, CellHead, Owner};
use crate::store::{CellKey, Engine, RollupCells, StoreError, StoredCell};

impl RollupCells for SledEngine {
    fn cell(&self, (grain, owner, bucket): &CellKey) -> Result<Option<StoredCell>, StoreError> {
        match self
            .cell_tree(*grain, *bucket)?
            .get(cell_key(owner, *bucket))?
        {
            Some(v) => Ok(Some(CellRow::decode(&v)?.into())),
            None => Ok(None),
        }
    }

    fn cells(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.cell_values(owner, span, |v| Ok(CellRow::decode(v)?.cell))
    }

    fn cell_heads(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, CellHead)>, StoreError> {
        // A stored cell begins with its head.
        self.cell_values(owner, span, |v| Ok(decode_prefix::<CellHead>(v)?))
    }

    fn watermark(&self) -> Result<u64, StoreError> {
        read_u64(&self.meta, "rollup_seq")
    }

    /// Cell writes are idempotent (each carries its seq), so they need no
    /// transaction across trees.
    fn commit_cells(
        &self,
        cells: Vec<(CellKey, StoredCell)>,
        watermark: u64,
    ) -> Result<(), StoreError> {
        let mut batches: HashMap<Vec<u8>, (sled::Tree, sled::Batch)> = HashMap::new();
        for ((grain, owner, bucket), cell) in cells {
            let tree = self.cell_tree(grain, bucket)?;
            let (_, batch) = batches
                .entry(tree.name().to_vec())
                .or_insert_with(|| (tree, sled::Batch::default()));
            batch.insert(cell_key(&owner, bucket), CellRow::from(cell).encode()?);
        }
        for (_, (tree, batch)) in batches {
            tree.apply_batch(batch)?;
        }
        self.durable()?;
        self.meta.insert("rollup_seq", &watermark.to_be_bytes())?;
        let mut done = sled::Batch::default();
        for k in self.journal.range(..(watermark + 1).to_be_bytes()).keys() {
            done.remove(k?);
        }
        self.journal.apply_batch(done)?;
        self.durable()
    }

    fn drop_minutes_before(&self, day: i64) -> Result<usize, StoreError> {
        self.drop_days(MINUTE_PREFIX, day)
    }
}
