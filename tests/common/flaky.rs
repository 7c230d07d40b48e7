//! A real store whose writes fail on demand: the ledger over sled, reached
//! through an access that refuses writes while `failing` is set.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tollgate::store::sled::{Reopening, SledEngine};
use tollgate::store::{Access, Ledger, SledOptions, StoreError};

/// A real server on `c` (whose data directory is `dir`) over a flaky
/// store, not failing yet, and the store.
pub fn server(
    c: tollgate::config::Config,
    dir: tempfile::TempDir,
) -> (crate::common::TestServer, Arc<Ledger<Flaky>>) {
    let store = store(dir.path());
    let tollgate = tollgate::app::Tollgate::with_store(
        c,
        store.clone(),
        Some(crate::common::ADMIN),
        Arc::new(tollgate::clock::SystemClock),
    )
    .unwrap();
    let s = crate::common::TestServer {
        server: Some(tollgate::app::RunningServer::serve(tollgate).unwrap()),
        dir,
        http: reqwest::blocking::Client::new(),
    };
    (s, store)
}

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
