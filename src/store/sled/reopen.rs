//! [`Reopening`]: how the [`Ledger`](crate::store::Ledger) reaches sled -
//! one open database ([`SledEngine`]), replaced by a fresh one after it
//! fails, and writes refused short of a full disk.
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
//! already counted those records as unpersisted. A reopen moves the
//! [`generation`](Access::generation), and the ledger replays the rollup
//! journal of the new engine, so rollups, counters and raw records agree
//! again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::engine::SledEngine;
use crate::store::{Access, StoreError};

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
    /// Open a store that holds less than it last knew it had (`check.rs`),
    /// logging what was lost, rather than refuse (`--recover`).
    pub recover: bool,
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

pub struct Reopening {
    settings: Settings,
    state: Mutex<EngineState>,
    /// Held while the database is being opened again.
    reopening: Mutex<()>,
    /// How many times the database was opened again.
    generation: AtomicU64,
    /// Every write holds it shared; a backup holds it alone, so the copy
    /// is of one state.
    gate: parking_lot::RwLock<()>,
}

impl SledOptions {
    /// A flush may take 30 s before it counts as a failure; free space is
    /// not checked.
    pub fn new(flush_every_ms: u64, cache_bytes: u64) -> SledOptions {
        SledOptions {
            flush_every_ms,
            cache_bytes,
            flush_deadline: DEFAULT_FLUSH_DEADLINE,
            min_free_bytes: 0,
            recover: false,
        }
    }
}

impl Reopening {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, options: SledOptions) -> Result<Self, StoreError> {
        let settings = Settings {
            dir: dir.to_path_buf(),
            options,
        };
        let engine = settings.open()?;
        Ok(Reopening {
            settings,
            state: Mutex::new(EngineState::Open(Arc::new(engine))),
            reopening: Mutex::new(()),
            generation: AtomicU64::new(0),
            gate: parking_lot::RwLock::new(()),
        })
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
                self.generation.fetch_add(1, Ordering::AcqRel);
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

    /// Runs `f` on `engine`; sets the engine aside if it failed.
    fn call_on<T>(
        &self,
        engine: Arc<SledEngine>,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = f(&engine);
        if let Err(e) = &result {
            if e.broke_the_engine() {
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

impl Access for Reopening {
    type Engine = SledEngine;

    fn read<T>(
        &self,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.call_on(self.engine(false)?, f)
    }

    /// Only with room on the disk for `bytes` and the reserve.
    fn write<T>(
        &self,
        bytes: u64,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _writing = self.gate.read();
        self.room(bytes)?;
        self.read(f)
    }

    /// Writes wait; what was written is made durable; sled's files - with
    /// the note of what they hold - are copied as they are on disk then,
    /// a state sled opens like one after a crash (and replays the rollup
    /// journal of).
    fn backup(&self, to: &Path) -> Result<u64, StoreError> {
        let _alone = self.gate.write();
        self.call_on(self.engine(false)?, crate::store::Engine::durable)?;
        super::upgrade::copy_tree(&self.settings.dir, to).map_err(|e| {
            StoreError::Unavailable(format!("cannot copy the store to {}: {e}", to.display()))
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A stop's last flush should not fail only because the last attempt
    /// to reopen was recent.
    fn revive(&self) {
        let _ = self.engine(true);
    }
}
