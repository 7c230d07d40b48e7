//! Folding a [`RollupBook`] into an engine's stored cells, and rebuilding
//! the cells from the engine's journal. Each stored cell carries the last
//! usage write it includes, so a write is never counted twice, even when a
//! checkpoint had written only some cells before it failed.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::{book::RollupBook, Access, Ledger, Writer};
use crate::rollup::Owner;
use crate::store::{CellKey, Engine, RollupCells, StoreError, StoredCell, UsageLog};

/// Stored cells loaded for a checkpoint.
type CellCache = HashMap<CellKey, StoredCell>;

/// Merges the book, which ends at usage write `seq`, into the stored cells
/// and moves the watermark to `seq`.
pub(super) fn fold<E: Engine>(engine: &E, book: &RollupBook, seq: u64) -> Result<(), StoreError> {
    let mut cells = CellCache::new();
    absorb(engine, book, seq, &mut cells)?;
    engine.commit_cells(cells.into_iter().collect(), seq)
}

/// Merges the book's deltas, which end at usage write `seq`, into the
/// stored cells (loaded into `cells` once) that do not include `seq` yet.
fn absorb<E: Engine>(
    engine: &E,
    book: &RollupBook,
    seq: u64,
    cells: &mut CellCache,
) -> Result<(), StoreError> {
    let mut result = Ok(());
    // Cells already at `seq` (a half-done checkpoint) take nothing.
    let mut behind: HashMap<CellKey, bool> = HashMap::new();
    book.for_each_target(|grain, owner, bucket, delta, tenant| {
        if result.is_err() {
            return;
        }
        let key = (grain, owner.clone(), bucket);
        let stored = match cells.entry(key.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => match engine.cell(v.key()) {
                Ok(c) => v.insert(c.unwrap_or_default()),
                Err(e) => {
                    result = Err(e);
                    return;
                }
            },
        };
        if !*behind.entry(key).or_insert(stored.seq < seq) {
            return;
        }
        match owner {
            Owner::Fleet => stored.cell.merge_for_all_tenants(delta, tenant),
            Owner::Tenant(_) => stored.cell.merge(delta),
        }
        stored.seq = seq;
    });
    result
}

impl<A: Access> Ledger<A> {
    /// Brings the stored cells up to the engine's last write from its
    /// journal and empties the book. `guarded`: through [`Access::write`]
    /// (a checkpoint), else through `read` (a start, which must not fail
    /// only for a nearly full disk).
    pub(super) fn replay(&self, w: &mut Writer, guarded: bool) -> Result<(), StoreError> {
        // Read first: an engine replaced during the replay calls for another.
        let generation = self.access.generation();
        let mut book = self.book.lock();
        book.clear();
        let run = |e: &A::Engine| {
            let (covered, last) = (e.watermark()?, e.last_seq()?);
            // One book per write: a cell takes a write number once.
            let mut writes: Vec<(u64, RollupBook)> = Vec::new();
            let mut records = 0;
            e.written_since(covered, &mut |seq, tenant, batch| {
                if writes.last().map(|(s, _)| *s) != Some(seq) {
                    writes.push((seq, RollupBook::default()));
                }
                records += batch.len();
                if let Some((_, book)) = writes.last_mut() {
                    book.add(tenant, &batch);
                }
            })?;
            let mut cells = CellCache::new();
            for (seq, book) in &writes {
                absorb(e, book, *seq, &mut cells)?;
            }
            e.commit_cells(cells.into_iter().collect(), last)?;
            if records > 0 {
                tracing::info!(records, "rollups caught up from the journal");
            }
            Ok(last)
        };
        let last = if guarded {
            self.access.write(0, run)
        } else {
            self.access.read(run)
        }?;
        w.seq = last;
        self.built_for
            .store(generation, std::sync::atomic::Ordering::Release);
        w.needs_replay = false;
        Ok(())
    }
}
