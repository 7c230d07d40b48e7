//! [`SledStore`]: the [`Store`] Tollgate runs on - one open sled database
//! ([`SledEngine`]), replaced by a fresh one after it fails.
//!
//! sled 0.34.7 never recovers in place from an I/O error: the first one (a
//! full disk) is kept as a "global error" and every later write and flush
//! returns it, even after space comes back. Worse, a write that fails on
//! sled's I/O thread sets that error without waking a flush already waiting
//! for it, so that flush waits forever (`tests/full_disk.rs` found both).
//! So when a call fails with an I/O error, corruption, or a flush past its
//! deadline, the engine is set aside: it is woken (a second flush sees the
//! global error and wakes every waiter), dropped, and the database opened
//! again from what reached the disk - at most once a second, on the next
//! store call, until it succeeds. sled's file lock guarantees that the new
//! engine opens only once the old one has let go of the files.
//!
//! What the failing engine had not made durable is lost; the flusher has
//! already counted those records as unpersisted. Reopening replays the rollup
//! journal, so rollups, counters and raw records agree again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::engine::SledEngine;
use crate::model::{Plan, StoredKey, Tenant, UsageRecord};
use crate::quota::period::Period;
use crate::rollup::{Cell, Grain};
use crate::store::{AlertMark, PeriodTotals, Store, StoreError, UsageBlock};

/// The least time between two attempts to reopen a failed store.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
const DEFAULT_FLUSH_DEADLINE: Duration = Duration::from_secs(30);

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct SledOptions {
    /// sled flushes on its own this often; should be the flusher's interval.
    pub flush_every_ms: u64,
    /// Bounds sled's page cache.
    pub cache_bytes: u64,
    /// A flush longer than this is a store failure.
    pub flush_deadline: Duration,
    /// Writes are refused (a store failure, nothing written) while the file
    /// system has less than this free; 0 turns the check off.
    pub min_free_bytes: u64,
}

struct Settings {
    dir: PathBuf,
    options: SledOptions,
}

/// The store's one database: open, or failed and waiting to be reopened.
enum EngineState {
    Open(Arc<SledEngine>),
    /// The engine failed; `why` is the error, `tried` when it failed or the
    /// last attempt to reopen it was made.
    Failed {
        why: String,
        tried: Instant,
    },
}

pub struct SledStore {
    settings: Settings,
    state: Mutex<EngineState>,
    /// Held while the database is being opened again.
    reopening: Mutex<()>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `flush_every_ms` should be the
    /// flusher's interval; `cache_bytes` bounds sled's page cache. A flush
    /// may take 30 s before it counts as a failure; free space is not checked.
    pub fn open(dir: &Path, flush_every_ms: u64, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(
            dir,
            SledOptions {
                flush_every_ms,
                cache_bytes,
                flush_deadline: DEFAULT_FLUSH_DEADLINE,
                min_free_bytes: 0,
            },
        )
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(dir: &Path, options: SledOptions) -> Result<Self, StoreError> {
        let settings = Settings {
            dir: dir.to_path_buf(),
            options,
        };
        let engine = settings.open()?;
        Ok(SledStore {
            settings,
            state: Mutex::new(EngineState::Open(Arc::new(engine))),
            reopening: Mutex::new(()),
        })
    }

    /// Writes many tenants and keys at once (bulk import), with one flush.
    pub fn import(&self, tenants: &[Tenant], keys: &[StoredKey]) -> Result<(), StoreError> {
        self.write(|e| e.import(tenants, keys))
    }

    /// Refuses a write of about `size` bytes unless the disk keeps the
    /// reserve after it. sled must never meet a full disk: a large value (a
    /// blob) that fails to write leaves its log buffer unwritable, so every
    /// later flush waits forever and the instance cannot even be closed -
    /// only a restart recovers. Refusing early keeps the engine healthy, and
    /// writes resume by themselves when space comes back.
    fn room(&self, size: u64) -> Result<(), StoreError> {
        let min = self.settings.options.min_free_bytes;
        if min == 0 {
            return Ok(());
        }
        match free_bytes(&self.settings.dir) {
            Ok(free) if free < min.saturating_add(size) => Err(StoreError::DiskFull {
                free_mb: free >> 20,
                min_mb: min.div_ceil(1 << 20),
            }),
            // Free, or the file system cannot tell: let the write try.
            _ => Ok(()),
        }
    }

    /// [`call`](Self::call) for a small write: only with room on the disk.
    fn write<T>(
        &self,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.room(0)?;
        self.call(f)
    }

    /// The open engine, reopening a failed one when it is time to try again
    /// (or now, when `now`). The state is not locked while the database opens
    /// (which can block for good behind a wedged sled), so other calls fail
    /// fast meanwhile.
    fn engine(&self, now: bool) -> Result<Arc<SledEngine>, StoreError> {
        let why = match &*self.state.lock() {
            EngineState::Open(engine) => return Ok(engine.clone()),
            EngineState::Failed { why, tried } if now || tried.elapsed() >= REOPEN_EVERY => {
                why.clone()
            }
            EngineState::Failed { why, .. } => return Err(reopening(why)),
        };
        let Some(_one_at_a_time) = self.reopening.try_lock() else {
            return Err(reopening(&why));
        };
        if let EngineState::Open(engine) = &*self.state.lock() {
            return Ok(engine.clone());
        }
        let opened = self.settings.open();
        let mut state = self.state.lock();
        match opened {
            Ok(engine) => {
                tracing::warn!(failure = %why, "store reopened; persistence resumes");
                let engine = Arc::new(engine);
                *state = EngineState::Open(engine.clone());
                Ok(engine)
            }
            Err(e) => {
                tracing::debug!(error = %e, "the store cannot be reopened yet");
                *state = EngineState::Failed {
                    why,
                    tried: Instant::now(),
                };
                Err(StoreError::Unavailable(format!(
                    "the store failed and cannot be reopened yet: {e}"
                )))
            }
        }
    }

    /// Runs `f` on the open engine; sets the engine aside if it failed.
    fn call<T>(
        &self,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.call_on(self.engine(false)?, f)
    }

    fn call_on<T>(
        &self,
        engine: Arc<SledEngine>,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = f(&engine);
        if let Err(e) = &result {
            if engine_failed(e) {
                self.set_aside(&engine, e);
            }
        }
        result
    }

    /// Takes `failed` out of use (unless another call already did).
    fn set_aside(&self, failed: &Arc<SledEngine>, error: &StoreError) {
        {
            let mut state = self.state.lock();
            match &*state {
                EngineState::Open(current) if Arc::ptr_eq(current, failed) => {}
                _ => return,
            }
            // The first reopen waits a moment, for the calls still holding
            // the old engine to finish and let go of its files.
            *state = EngineState::Failed {
                why: error.to_string(),
                tried: Instant::now(),
            };
        }
        tracing::error!(error = %error, "the store failed; it will be reopened");
        // Outside the lock: waking can take a second.
        failed.wake();
        retire(failed.clone());
    }
}

impl Settings {
    fn open(&self) -> Result<SledEngine, StoreError> {
        SledEngine::open(&self.dir, &self.options)
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
#[cfg(unix)]
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: `statvfs` writes only into `st`, a plain C struct; `path` is
    // a NUL-terminated string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// An upper bound of what writing `blocks` takes on disk: twice their text
/// plus 64 bytes a record (bincode needs about one byte per character and a
/// few per number; sled adds headers and may write a block twice when it
/// rewrites a page).
fn usage_bytes(blocks: &[UsageBlock]) -> u64 {
    let record = |r: &UsageRecord| {
        let text = r.endpoint.len()
            + r.method.len()
            + r.model.len()
            + r.user_id.len()
            + r.bot_id.len()
            + r.metadata
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

/// Closes a failed engine on a thread of its own, once the calls still using
/// it are done: closing flushes, and a wedged sled never finishes that.
fn retire(engine: Arc<SledEngine>) {
    let _ = std::thread::Builder::new()
        .name("tollgate-store-retire".into())
        .spawn(move || {
            while Arc::strong_count(&engine) > 1 {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(engine);
        });
}

fn reopening(why: &str) -> StoreError {
    StoreError::Unavailable(format!("the store failed ({why}) and is being reopened"))
}

/// Errors after which the sled instance is no use any more.
fn engine_failed(e: &StoreError) -> bool {
    match e {
        StoreError::Sled(
            sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_),
        ) => true,
        StoreError::Stalled { .. } => true,
        StoreError::Sled(_)
        | StoreError::Codec(_)
        | StoreError::NewerFormat { .. }
        | StoreError::DiskFull { .. }
        | StoreError::Unavailable(_) => false,
    }
}

impl Store for SledStore {
    fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        self.call(|e| e.plans())
    }
    fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.write(|e| e.put_plan(plan))
    }
    fn delete_plan(&self, id: &str) -> Result<(), StoreError> {
        self.write(|e| e.delete_plan(id))
    }
    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.call(|e| e.tenants())
    }
    fn put_tenant(&self, tenant: &Tenant) -> Result<(), StoreError> {
        self.write(|e| e.put_tenant(tenant))
    }
    fn delete_tenant(&self, id: &str) -> Result<(), StoreError> {
        self.write(|e| e.delete_tenant(id))
    }
    fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.call(|e| e.keys())
    }
    fn key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.call(|e| e.key(id))
    }
    fn put_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.write(|e| e.put_key(key))
    }
    fn write_usage(&self, blocks: &[UsageBlock]) -> Result<(), StoreError> {
        self.room(usage_bytes(blocks))?;
        self.call(|e| e.write_usage(blocks))
    }
    fn period_totals(&self, period: Period) -> Result<Vec<(String, PeriodTotals)>, StoreError> {
        self.call(|e| e.period_totals(period))
    }
    fn tenant_totals(&self, tenant: &str, period: Period) -> Result<PeriodTotals, StoreError> {
        self.call(|e| e.tenant_totals(tenant, period))
    }
    fn scan_usage(
        &self,
        tenant: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&UsageRecord) -> bool,
    ) -> Result<(), StoreError> {
        self.call(|e| e.scan_usage(tenant, from_ms, to_ms, visit))
    }
    fn rollups(
        &self,
        tenant: &str,
        grain: Grain,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Cell)>, StoreError> {
        self.call(|e| e.rollups(tenant, grain, from, to))
    }
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.write(|e| e.checkpoint())
    }
    fn drop_days_before(&self, raw_day: i64, minute_day: i64) -> Result<usize, StoreError> {
        self.call(|e| e.drop_days_before(raw_day, minute_day))
    }
    /// Tries a failed store again at once (a stop's last flush should not
    /// fail only because the last attempt was recent). Without room for the
    /// rollup checkpoint, only makes what is written durable; the next start
    /// rebuilds the rollups from the journal.
    fn flush(&self) -> Result<(), StoreError> {
        let engine = self.engine(true)?;
        match self.room(0) {
            Ok(()) => self.call_on(engine, |e| e.flush()),
            Err(_) => self.call_on(engine, |e| e.durable()),
        }
    }
    fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        self.call(|e| e.alert_marks())
    }
    fn put_alert_mark(&self, mark: &AlertMark) -> Result<(), StoreError> {
        self.write(|e| e.put_alert_mark(mark))
    }
    fn prune_alert_marks(&self, before: Period) -> Result<(), StoreError> {
        self.write(|e| e.prune_alert_marks(before))
    }
    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.call(|e| e.size_on_disk())
    }
}
