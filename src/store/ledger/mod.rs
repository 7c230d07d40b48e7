//! [`Ledger`]: the [`Store`] over any [`Engine`], engine-neutral. It numbers
//! and serialises the usage writes, keeps the rollup [`book`] of records the
//! stored cells do not include yet, folds it into them at each checkpoint
//! (`checkpoint.rs`), and rebuilds it from the engine's journal when the
//! ledger starts or the engine behind it was replaced - so an engine
//! writes only its own I/O.
//!
//! The ledger reaches its engine through an [`Access`]: directly (the
//! in-memory engine), or through a wrapper that refuses writes short of a
//! full disk and replaces a failed engine (sled's `Reopening`).

pub(crate) mod book;
mod checkpoint;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use self::book::RollupBook;
use super::{
    AlertMark, AlertMarks, Catalog, Claims, Engine, HeldBy, KeyUse, PeriodTotals, RecordIds,
    RollupCells, Store, StoreError, UsageBlock, UsageLog, UsageReads,
};
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Buckets, Cell, CellHead, Owner};

/// How a [`Ledger`] reaches its engine.
pub trait Access: Send + Sync {
    type Engine: Engine;

    /// Runs `f` on the engine.
    fn read<T>(
        &self,
        f: impl FnOnce(&Self::Engine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// Runs `f`, a write of at most about `bytes` bytes, on the engine; a
    /// wrapper may refuse it first (nothing then runs).
    fn write<T>(
        &self,
        bytes: u64,
        f: impl FnOnce(&Self::Engine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _ = bytes;
        self.read(f)
    }

    /// Changes whenever the engine behind was replaced (what the old one
    /// had not made durable is gone): the ledger then rebuilds its book.
    fn generation(&self) -> u64 {
        0
    }

    /// Tries a failed engine again at once (before a stop's last flush).
    fn revive(&self) {}

    /// Writes a consistent copy of the store into `to` while it serves:
    /// the bytes copied. Engines backed up with their own tools refuse.
    fn backup(&self, to: &std::path::Path) -> Result<u64, StoreError> {
        let _ = to;
        Err(not_backed_up())
    }
}

/// What a store that Tollgate does not back up answers.
pub(crate) fn not_backed_up() -> StoreError {
    StoreError::Unavailable(
        "this store is backed up with its engine's own tools (PostgreSQL: pg_dump), not by Tollgate"
            .into(),
    )
}

/// An engine reached directly, with nothing in between.
pub struct Direct<E>(pub std::sync::Arc<E>);

impl<E: Engine> Access for Direct<E> {
    type Engine = E;

    fn read<T>(&self, f: impl FnOnce(&E) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&self.0)
    }
}

/// The writer's state; its lock serialises usage writes, checkpoints,
/// purges and retention. Locked before the book.
struct Writer {
    /// The last write's number.
    seq: u64,
    /// A checkpoint failed: the next one replays the journal instead.
    needs_replay: bool,
}

pub struct Ledger<A: Access> {
    access: A,
    writer: Mutex<Writer>,
    /// Records since the last checkpoint, not in the stored cells yet.
    book: Mutex<RollupBook>,
    /// The [`Access::generation`] the book was built for: set by a replay
    /// (under the writer's lock), read without it (a read checks it
    /// without waiting for a write's flush).
    built_for: AtomicU64,
    /// The engine writes each write's cells with it
    /// ([`RollupCells::rolls_up_on_append`]): the book stays empty.
    rolls_up: bool,
}

impl<A: Access> Ledger<A> {
    /// What `read` gives of the stored cells in `span`, with the book's
    /// deltas since the last checkpoint added by `add`: every persisted
    /// record counted once.
    fn with_book<T: Default>(
        &self,
        owner: &Owner,
        span: Buckets,
        read: impl FnOnce(&A::Engine) -> Result<Vec<(i64, T)>, StoreError>,
        add: impl Fn(&mut T, &Cell),
    ) -> Result<Vec<(i64, T)>, StoreError> {
        let Buckets { grain, from, to } = span;
        if from >= to {
            return Ok(Vec::new());
        }
        if self.replaced() {
            drop(self.writer()?);
        }
        // The book is locked first: a checkpoint (which holds it) is then
        // either wholly before this read or wholly after it.
        let book = self.book.lock();
        let mut cells: std::collections::BTreeMap<i64, T> =
            self.access.read(read)?.into_iter().collect();
        // Records since the last checkpoint are not in the stored cells yet.
        for (bucket, delta) in book.overlay(grain, owner, from, to) {
            add(cells.entry(bucket).or_default(), &delta);
        }
        Ok(cells.into_iter().collect())
    }

    /// A ledger over the engine behind `access`, its rollups brought up to
    /// the last write from the journal (after a crash, or another ledger's
    /// last checkpoint).
    pub fn new(access: A) -> Result<Ledger<A>, StoreError> {
        let rolls_up = access.read(|e| Ok(e.rolls_up_on_append()))?;
        let ledger = Ledger {
            rolls_up,
            writer: Mutex::new(Writer {
                seq: 0,
                needs_replay: false,
            }),
            built_for: AtomicU64::new(access.generation()),
            access,
            book: Mutex::new(RollupBook::default()),
        };
        ledger.replay(&mut ledger.writer.lock(), false)?;
        Ok(ledger)
    }

    pub fn access(&self) -> &A {
        &self.access
    }

    /// Whether the engine was replaced since the book was built.
    fn replaced(&self) -> bool {
        self.built_for.load(Ordering::Acquire) != self.access.generation()
    }

    /// The writer, with the book rebuilt first if the engine was replaced.
    fn writer(&self) -> Result<MutexGuard<'_, Writer>, StoreError> {
        let mut w = self.writer.lock();
        if self.replaced() {
            self.replay(&mut w, false)?;
        }
        Ok(w)
    }
}

/// An upper bound of what writing `blocks` takes on disk: twice their text
/// plus 64 bytes a record (an encoding needs about one byte per character
/// and a few per number; an engine adds headers and may write a value
/// twice when it rewrites a page).
fn write_size(blocks: &[&UsageBlock]) -> u64 {
    let record = |r: &UsageRecord| {
        let x = r.extra();
        let text = r.endpoint.len()
            + r.method.len()
            + r.model.len()
            + x.user_id.len()
            + x.bot_id.len()
            + x.metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        2 * (text as u64 + 64)
    };
    blocks
        .iter()
        .flat_map(|b| b.records.iter())
        .map(record)
        .sum()
}

impl<A: Access> Catalog for Ledger<A> {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        self.access.read(|e| e.plans())
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.access.write(0, |e| e.put_plan(plan))
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.access.write(0, |e| e.delete_plan(id))
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.access.read(|e| e.tenants())
    }
    fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        self.access.read(|e| e.tenant(id))
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.access.write(0, |e| e.put_tenant(tenant))
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.access.read(|e| e.keys())
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.access.read(|e| e.key(id))
    }
    fn keys_of(&self, tenant_id: &str) -> Result<Vec<StoredKey>, StoreError> {
        self.access.read(|e| e.keys_of(tenant_id))
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.access.write(0, |e| e.put_key(key))
    }
    fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        self.access.write(0, |e| e.import(tenants, keys))
    }
    fn touch_keys(&self, used: &[KeyUse]) -> Result<(), StoreError> {
        self.access.write(0, |e| e.touch_keys(used))
    }
    fn keys_last_used(&self, tenant_id: &str) -> Result<HashMap<String, i64>, StoreError> {
        self.access.read(|e| e.keys_last_used(tenant_id))
    }
}

impl<A: Access> AlertMarks for Ledger<A> {
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        self.access.read(|e| e.alert_marks())
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.access.write(0, |e| e.put_alert_mark(mark))
    }
    fn claim_alert_mark(&self, mark: &AlertMark) -> Result<bool, StoreError> {
        self.access.write(0, |e| e.claim_alert_mark(mark))
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.access.write(0, |e| e.prune_alert_marks(before))
    }
}

impl<A: Access> Store for Ledger<A> {
    fn backup(&self, to: &std::path::Path) -> Result<u64, StoreError> {
        self.access.backup(to)
    }

    fn delete_tenant(&self, id: &str) -> Result<(), StoreError> {
        let w = self.writer()?;
        {
            // Fold the book into the stored cells first, so that the
            // all-tenants cells keep the tenant's share and its own deltas
            // are gone; after a failed checkpoint, just forget them (the
            // journal's entries then find no records to replay).
            let mut book = self.book.lock();
            if w.needs_replay {
                book.forget(id);
            } else if !book.is_empty() {
                self.access
                    .write(0, |e| checkpoint::fold(e, &book, w.seq))?;
                book.clear();
            }
        }
        self.access.write(0, |e| e.purge_tenant(id))
    }

    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<u64, StoreError> {
        let mut w = self.writer()?;
        // A tenant deleted since the batch was grouped: its records went
        // with it (checked under the lock the purge holds).
        let blocks: Vec<&UsageBlock> = blocks
            .iter()
            .filter(|b| !b.is_retired() && !b.records.is_empty())
            .collect();
        if blocks.is_empty() {
            return Ok(w.seq);
        }
        let seq = w.seq + 1;
        self.access
            .write(write_size(&blocks), |e| e.append(seq, &blocks))?;
        w.seq = seq;
        // The records are written now, durable or not: the rollups must
        // count them either way, or they would disagree with the totals.
        if !self.rolls_up {
            let mut book = self.book.lock();
            for block in &blocks {
                book.add(&block.tenant, &block.records);
            }
        }
        self.access
            .read(|e| e.durable())
            .map_err(|cause| StoreError::NotDurable {
                seq,
                cause: Box::new(cause),
            })?;
        Ok(seq)
    }

    fn write_claimed(
        &self,
        mut block: UsageBlock,
        mut claims: Claims,
    ) -> Result<Vec<Option<HeldBy>>, StoreError> {
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::new();
                claims.ids.iter().all(|id| id.is_empty() || seen.insert(id))
            },
            "a block's record ids are distinct (its caller sets repeats apart)"
        );
        let mut held: Vec<Option<HeldBy>> = vec![None; block.records.len()];
        // Where each record still in the block came from.
        let mut from: Vec<usize> = (0..block.records.len()).collect();
        let mut w = self.writer()?;
        loop {
            // Ask who holds the ids, leave those records out, and write the
            // rest with their claims; another instance may claim one in
            // between (the write then says so, and nothing is written).
            // The key, claimed, stands for every record without an id.
            let asked: Vec<usize> = (0..claims.ids.len())
                .filter(|&i| !claims.ids[i].is_empty())
                .collect();
            let key_id = claims.key_id();
            let mut ids: Vec<&str> = asked.iter().map(|&i| claims.ids[i].as_str()).collect();
            ids.extend(key_id.as_deref());
            let mut holders = self.access.read(|e| e.claimed(&block.tenant, &ids))?;
            let key_holder = match key_id {
                Some(_) => holders.pop().flatten(),
                None => None,
            };
            let mut out = vec![false; block.records.len()];
            for (&i, holder) in asked.iter().zip(holders) {
                if let Some(h) = holder {
                    held[from[i]] = Some(h);
                    out[i] = true;
                }
            }
            if let Some(h) = key_holder {
                claims.key_held = true;
                for (i, id) in claims.ids.iter().enumerate() {
                    if id.is_empty() {
                        held[from[i]] = Some(h.clone());
                        out[i] = true;
                    }
                }
            }
            drop_marked(&mut block.records, &out);
            drop_marked(&mut claims.ids, &out);
            drop_marked(&mut from, &out);
            if block.records.is_empty() || block.is_retired() {
                return Ok(held);
            }
            let seq = w.seq + 1;
            let size = write_size(&[&block]);
            let write = || {
                self.access
                    .write(size, |e| e.append_claimed(seq, &block, &claims))
            };
            if self.rolls_up {
                // An engine that rolls up on append keeps no book and no
                // watermark to keep in order: its claimed writes run side
                // by side, each under a number of its own taken here (one
                // that fails leaves a gap, which nothing reads).
                w.seq = seq;
                if MutexGuard::unlocked(&mut w, write)? {
                    break;
                }
            } else if write()? {
                w.seq = seq;
                break;
            }
        }
        if !self.rolls_up {
            self.book.lock().add(&block.tenant, &block.records);
        }
        // Durable with the engine's next flush (sled's own, every flush
        // interval; a PostgreSQL commit at once), as a queued record
        // acknowledged before its flush is: the claims go with the records.
        Ok(held)
    }

    /// The writer is brought up to a replaced engine first, which sets the
    /// last write number to the new engine's: a lost write's number is
    /// above it.
    fn written(&self, seq: u64) -> Result<bool, StoreError> {
        let w = self.writer()?;
        if w.seq < seq {
            return Ok(false);
        }
        self.access.read(|e| e.durable())?;
        Ok(true)
    }

    fn rollups(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.with_book(
            owner,
            span,
            |e| e.cells(owner, span),
            |c, delta| c.merge(delta),
        )
    }

    fn rollup_heads(
        &self,
        owner: &Owner,
        span: Buckets,
    ) -> Result<Vec<(i64, CellHead)>, StoreError> {
        self.with_book(
            owner,
            span,
            |e| e.cell_heads(owner, span),
            |h, delta| h.merge(&CellHead::of(delta)),
        )
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        if self.rolls_up {
            // Each write's cells went with it: nothing to fold.
            return Ok(());
        }
        let mut w = self.writer()?;
        if w.needs_replay {
            return self.replay(&mut w, true);
        }
        let mut book = self.book.lock();
        if book.is_empty() && self.access.read(|e| e.watermark())? == w.seq {
            return Ok(());
        }
        let mut ran = false;
        let result = self.access.write(0, |e| {
            ran = true;
            checkpoint::fold(e, &book, w.seq)
        });
        if ran {
            // Either way the book is done: on failure the journal rebuilds it.
            book.clear();
            w.needs_replay = result.is_err();
        }
        result
    }

    fn expire_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError> {
        let _w = self.writer()?;
        self.access
            .read(|e| Ok(e.drop_records_before(raw_day)? + e.drop_minutes_before(minute_day)?))
    }

    /// Without room for the rollup checkpoint (a full disk), only makes
    /// what is written durable; the next start rebuilds the rollups from
    /// the journal.
    fn flush(&self) -> Result<(), StoreError> {
        self.access.revive();
        match self.checkpoint() {
            Ok(()) | Err(StoreError::DiskFull { .. }) => self.access.read(|e| e.durable()),
            Err(e) => Err(e),
        }
    }

    fn size_bytes(&self) -> Result<u64, StoreError> {
        self.access.read(|e| e.size_bytes())
    }
}

/// `v` without the items whose place `out` marks.
fn drop_marked<T>(v: &mut Vec<T>, out: &[bool]) {
    let mut out = out.iter();
    v.retain(|_| !out.next().copied().unwrap_or(false));
}

impl<A: Access> RecordIds for Ledger<A> {
    fn claimed(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<HeldBy>>, StoreError> {
        self.access.read(|e| e.claimed(tenant, ids))
    }

    fn drop_claims_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.access.write(0, |e| e.drop_claims_before(before_ms))
    }
}

impl<A: Access> UsageReads for Ledger<A> {
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        self.access.read(|e| e.period_totals(period))
    }

    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        self.access.read(|e| e.tenant_totals(tenant, period))
    }

    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.access
            .read(|e| e.scan_usage(tenant, from_ms, to_ms, visit))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::rollup::{Grain, Owner};
    use crate::store::memory::MemoryEngine;

    /// An access whose engine the test replaces, as sled's `Reopening`
    /// does after a failure, and whose reads (flushes among them) fail
    /// while `failing` is set; writes go through.
    #[derive(Default)]
    struct Swapping {
        engine: Mutex<Arc<MemoryEngine>>,
        generation: AtomicU64,
        failing: std::sync::atomic::AtomicBool,
    }

    impl Swapping {
        fn replace(&self, engine: Arc<MemoryEngine>) {
            *self.engine.lock() = engine;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    impl Access for Swapping {
        type Engine = MemoryEngine;

        fn read<T>(
            &self,
            f: impl FnOnce(&MemoryEngine) -> Result<T, StoreError>,
        ) -> Result<T, StoreError> {
            if self.failing.load(Ordering::Acquire) {
                return Err(StoreError::Unavailable("injected flush failure".into()));
            }
            let engine = self.engine.lock().clone();
            f(&engine)
        }

        fn write<T>(
            &self,
            _bytes: u64,
            f: impl FnOnce(&MemoryEngine) -> Result<T, StoreError>,
        ) -> Result<T, StoreError> {
            let engine = self.engine.lock().clone();
            f(&engine)
        }

        fn generation(&self) -> u64 {
            self.generation.load(Ordering::Acquire)
        }
    }

    fn scanned(s: &dyn Store, tenant: &str) -> usize {
        let mut n = 0;
        s.scan_usage(tenant, i64::MIN, i64::MAX, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        n
    }

    /// A write made but not flushed is retried by asking whether it
    /// survived - never by writing it again blindly, which would count its
    /// records twice - and written again only if it was lost.
    #[test]
    fn a_write_whose_flush_failed_is_never_counted_twice() {
        use crate::telemetry::stats::Stats;
        use crate::usage::flusher::{retry, write_blocks};
        let stats = Stats::default();
        for lost in [false, true] {
            let s = Ledger::new(Swapping::default()).unwrap();
            s.access().failing.store(true, Ordering::Release);
            let blocks = vec![UsageBlock::new("a", records(4))];
            let held = write_blocks(&s, blocks, &stats).expect("the failed flush keeps the batch");
            assert_eq!(held.made, Some(1), "the write was made");
            s.access().failing.store(false, Ordering::Release);
            if lost {
                // The engine failed and came back without the write.
                s.access().replace(Arc::default());
            }
            assert_eq!(s.written(1).unwrap(), !lost);
            assert!(retry(&s, held, &stats).is_none(), "taken");
            assert_eq!(scanned(&s, "a"), 4, "lost: {lost}");
            let p = crate::quota::period::Period::containing_secs(1_780_000_000);
            assert_eq!(s.tenant_totals("a", p).unwrap().calls, 4, "lost: {lost}");
            assert_eq!(requests(&s, &Owner::tenant("a")), 4, "lost: {lost}");
        }
    }

    fn requests(s: &dyn Store, owner: &Owner) -> u64 {
        s.rollups(owner, Buckets::all(Grain::Hour))
            .unwrap()
            .iter()
            .map(|(_, c)| c.total.requests)
            .sum()
    }

    fn records(n: usize) -> Vec<UsageRecord> {
        (0..n)
            .map(|i| UsageRecord {
                ts_ms: 1_780_000_000_000 + i as i64,
                calls: 1,
                ..Default::default()
            })
            .collect()
    }

    /// After the engine behind is replaced, what the old one's book held is
    /// gone: the ledger answers the new engine's records, from its journal,
    /// and numbers the next write after the new engine's last.
    #[test]
    fn a_replaced_engine_rebuilds_the_book_from_its_journal() {
        let s = Ledger::new(Swapping::default()).unwrap();
        s.write_usage(&[UsageBlock::new("a", records(5))]).unwrap();
        assert_eq!(requests(&s, &Owner::tenant("a")), 5, "from the book");
        // What reached the disk before the failure: two records, journaled,
        // not checkpointed.
        let survivor = Arc::new(MemoryEngine::default());
        let block = UsageBlock::new("a", records(2));
        survivor.append(7, &[&block]).unwrap();
        s.access().replace(survivor);
        assert_eq!(requests(&s, &Owner::tenant("a")), 2);
        assert_eq!(requests(&s, &Owner::Fleet), 2);
        assert_eq!(
            s.write_usage(&[UsageBlock::new("a", records(1))]).unwrap(),
            8,
            "numbered after the new engine's last write"
        );
        s.checkpoint().unwrap();
        assert_eq!(requests(&s, &Owner::tenant("a")), 3);
    }
}
