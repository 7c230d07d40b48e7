//! [`Spool`]: usage writes that could not reach PostgreSQL, waiting on the
//! local disk (a small sled database in the data directory) until they
//! can, in write order, each under its number: a write delivered twice
//! (its first commit's answer was lost) still counts once.
//!
//! Bounded: past `max_bytes` a write is refused, the flusher holds it, the
//! queue fills and ingestion answers 503 - as for a failing store.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::client::ENGINE;
use crate::rollup::{Cell, CellExt, CellExt6};
use crate::store::codec::{decode_with_tails, encode_with_tails};
use crate::store::{Failure, StoreError};

/// A stored cell's key: (grain, owner - `''` for the fleet -, bucket).
pub(super) type CellId = (i16, String, i64);

/// One usage write as it goes to PostgreSQL, computed once.
#[derive(Serialize, Deserialize)]
pub struct Write {
    pub(crate) seq: u64,
    pub records: u32,
    /// The days its records fall on (their partitions must exist).
    pub days: Vec<i64>,
    /// The records as one binary `COPY` stream.
    pub copy: Vec<u8>,
    /// (period, tenant, calls, tokens), in key order.
    pub totals: Vec<(i32, String, i64, i64)>,
    /// ((grain, owner, bucket), delta), in key order.
    pub cells: Vec<(CellId, Cell)>,
    /// The `COPY` stream's layout ([`COPY_LAYOUT`](super::records::COPY_LAYOUT) when made by this
    /// binary; 0 for a write spooled by one before schema version 2).
    #[serde(skip)]
    pub layout: u32,
}

/// What a spooled write keeps after its older fields (the codec's first
/// tail): its layout and the cells' format 4 parts. Their token kinds
/// follow as a second tail.
#[derive(Default, PartialEq, Serialize, Deserialize)]
struct WriteExt {
    layout: u32,
    cells: Vec<CellExt>,
}

fn encode_write(w: &Write) -> Result<Vec<u8>, StoreError> {
    let ext = WriteExt {
        layout: w.layout,
        cells: w.cells.iter().map(|(_, c)| c.ext.clone()).collect(),
    };
    let kinds: Vec<CellExt6> = w.cells.iter().map(|(_, c)| c.ext6.clone()).collect();
    let kinds = if kinds.iter().all(|k| *k == CellExt6::default()) {
        Vec::new()
    } else {
        kinds
    };
    Ok(encode_with_tails(w, &ext, &kinds)?)
}

fn decode_write(bytes: &[u8]) -> Result<Write, StoreError> {
    let (mut w, ext, kinds): (Write, WriteExt, Vec<CellExt6>) = decode_with_tails(bytes)?;
    w.layout = ext.layout;
    if ext.cells.len() == w.cells.len() {
        for ((_, cell), e) in w.cells.iter_mut().zip(ext.cells) {
            cell.ext = e;
        }
    }
    if kinds.len() == w.cells.len() {
        for ((_, cell), k) in w.cells.iter_mut().zip(kinds) {
            cell.ext6 = k;
        }
    }
    Ok(w)
}

pub struct Spool {
    tree: sled::Db,
    max_bytes: u64,
    /// Records waiting.
    records: AtomicU64,
    /// Bytes waiting (the values' sizes).
    bytes: AtomicU64,
}

fn failed(e: sled::Error) -> StoreError {
    StoreError::engine(ENGINE, Failure::Transient, format!("the local spool: {e}"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, StoreError> {
        let tree = sled::Config::new()
            .path(dir)
            .cache_capacity(8 << 20)
            .flush_every_ms(None)
            .open()
            .map_err(|e| {
                StoreError::InUse(format!(
                    "cannot open the spool in {}: {e} (another Tollgate on this data directory?)",
                    dir.display()
                ))
            })?;
        let spool = Spool {
            tree,
            max_bytes,
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        for entry in spool.tree.iter() {
            let (_, v) = entry.map_err(failed)?;
            let w: Write = decode_write(&v)?;
            spool.records.fetch_add(w.records as u64, Ordering::Relaxed);
            spool.bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
        }
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Records waiting.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// The number of the last write waiting (0 for none).
    pub(crate) fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.tree.last().map_err(failed)?.map_or(0, |(k, _)| {
            u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))
        }))
    }

    /// Keeps `write` until it is delivered (durable after [`flush`](Self::flush)).
    pub fn push(&self, write: &Write) -> Result<(), StoreError> {
        let value = encode_write(write)?;
        let held = self.bytes.load(Ordering::Relaxed);
        if held + value.len() as u64 > self.max_bytes {
            return Err(StoreError::Unavailable(format!(
                "PostgreSQL is unreachable and the local spool is full ({} MiB, [store] \
                 spool_max_mb): usage waits in memory, then ingestion answers 503",
                held >> 20
            )));
        }
        self.tree
            .insert(write.seq.to_be_bytes(), value.as_slice())
            .map_err(failed)?;
        self.records
            .fetch_add(write.records as u64, Ordering::Relaxed);
        self.bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The oldest `n` writes waiting, oldest first.
    pub(crate) fn first_n(&self, n: usize) -> Result<Vec<Write>, StoreError> {
        self.tree
            .iter()
            .take(n)
            .map(|entry| decode_write(&entry.map_err(failed)?.1))
            .collect()
    }

    pub fn remove(&self, write: &Write) -> Result<(), StoreError> {
        if let Some(v) = self.tree.remove(write.seq.to_be_bytes()).map_err(failed)? {
            self.records
                .fetch_sub(write.records as u64, Ordering::Relaxed);
            self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map_err(failed).map(|_| ())
    }
}
