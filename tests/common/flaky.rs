//! A real store whose writes fail on demand: the ledger over sled, reached
//! through an access that refuses writes while `failing` is set.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tollgate::store::sled::{Reopening, SledEngine};
use tollgate::store::{Access, Ledger, SledOptions, StoreError};

/// The store, on `dir/db`, not failing yet.
pub fn store(dir: &Path) -> Arc<Ledger<Flaky>> {
    Arc::new(
        Ledger::new(Flaky {
            inner: Reopening::open(&dir.join("db"), SledOptions::new(20, 1 << 24)).unwrap(),
            failing: AtomicBool::new(false),
        })
        .unwrap(),
    )
}

/// The access that refuses writes while `failing` is set.
pub struct Flaky {
    pub inner: Reopening,
    pub failing: AtomicBool,
}

impl Access for Flaky {
    type Engine = SledEngine;

    fn read<T>(
        &self,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.inner.read(f)
    }

    fn write<T>(
        &self,
        bytes: u64,
        f: impl FnOnce(&SledEngine) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected failure".into()));
        }
        self.inner.write(bytes, f)
    }

    fn generation(&self) -> u64 {
        self.inner.generation()
    }
}
