//! sled's `Db::flush`, bounded in time.
//!
//! With sled 0.34.7, once a write has failed (a full disk), a later flush
//! can wait forever for an IO buffer that will never be written
//! (`tests/full_disk.rs`). So every flush runs on one worker thread and the
//! caller waits at most the deadline: past it the flush is reported as a
//! store error (the flusher counts the batch as unpersisted, `/healthz` says
//! degraded) and a graceful stop ends instead of hanging.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use crate::store::{Failure, StoreError};

type Done = Sender<sled::Result<usize>>;

pub(super) struct FlushWorker {
    tx: Option<Sender<Done>>,
    handle: Option<JoinHandle<()>>,
    deadline: Duration,
    /// A flush outlived its deadline and has not returned yet.
    stuck: AtomicBool,
}

impl FlushWorker {
    pub(super) fn start(db: sled::Db, deadline: Duration) -> std::io::Result<FlushWorker> {
        let (tx, rx) = bounded::<Done>(64);
        let handle = std::thread::Builder::new()
            .name("tollgate-sled-flush".into())
            .spawn(move || {
                while let Ok(done) = rx.recv() {
                    let _ = done.send(db.flush());
                }
            })?;
        Ok(FlushWorker {
            tx: Some(tx),
            handle: Some(handle),
            deadline,
            stuck: AtomicBool::new(false),
        })
    }

    /// Makes every write so far durable, or says why not within the deadline.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        let timeout = || {
            self.stuck.store(true, Ordering::Relaxed);
            StoreError::engine(
                "sled",
                Failure::Broken,
                format!(
                    "the store did not flush within {} ms (disk full or failing?)",
                    self.deadline.as_millis()
                ),
            )
        };
        let started = Instant::now();
        let (done_tx, done_rx) = bounded(1);
        let tx = self.tx.as_ref().ok_or_else(timeout)?;
        tx.send_timeout(done_tx, self.deadline)
            .map_err(|_| timeout())?;
        let left = self.deadline.saturating_sub(started.elapsed());
        match done_rx.recv_timeout(left) {
            Ok(result) => {
                self.stuck.store(false, Ordering::Relaxed);
                result?;
                Ok(())
            }
            Err(_) => Err(timeout()),
        }
    }
}

impl Drop for FlushWorker {
    /// Joins the worker (it holds the database open) unless a flush is
    /// stuck, in which case it is left behind.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            if !self.stuck.load(Ordering::Relaxed) {
                let _ = h.join();
            }
        }
    }
}

/// Runs `call` on its own thread and waits at most `deadline` for it; `None`
/// when it did not finish (the thread is left to finish, or not, alone).
/// For the few calls that must not hang a stop on a wedged store.
pub fn within<T: Send + 'static>(
    deadline: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("tollgate-store-call".into())
        .spawn(move || {
            let _ = tx.send(call());
        })
        .ok()?;
    rx.recv_timeout(deadline).ok()
}
