//! [`Follower`]: keeps an instance's registry in step with the catalog
//! writes other instances make on a shared store, and says who is live.
//!
//! A thread waits for the engine's notice of a write (PostgreSQL's
//! `NOTIFY`) at most [`POLL`] at a time, then reads every change after the
//! last version it applied - so a missed notice is caught up on the next
//! poll, and a change reaches this instance within about a second. Each
//! change comes as the entry stands now and is applied to memory only
//! ([`Registry::apply`]: the store has it already); applying one twice
//! leaves what once did. Every [`HEARTBEAT`] it tells the store this
//! instance is live and learns how many are; and it copies the engine's
//! backlog (usage waiting for an unreachable database) into the stats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Change, Registry};
use crate::clock::Clock;
use crate::store::shared::{Changed, Shared};
use crate::telemetry::stats::Stats;

/// The longest a change waits when its notice was missed.
pub(crate) const POLL: Duration = Duration::from_millis(500);
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// An instance not heard from for this long is not live.
pub(crate) const LIVE: Duration = Duration::from_secs(5);
/// Changes read per query.
const PAGE: usize = 1_000;

pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The registry change a catalog entry's new state makes (`None`: nothing
/// to do - a key purged with its tenant).
fn change_of(changed: Changed) -> Option<Change> {
    Some(match changed {
        Changed::Plan(_, Some(plan)) => Change::PlanPut(plan),
        Changed::Plan(id, None) => Change::PlanDeleted { id },
        Changed::Tenant(_, Some(tenant)) => Change::TenantPut(tenant),
        Changed::Tenant(id, None) => Change::TenantDeleted { id },
        Changed::Key(id, Some(k)) if k.key.revoked_at.is_some() => {
            Change::KeyRevoked { key_id: id }
        }
        Changed::Key(_, Some(k)) => Change::KeyPut(k),
        Changed::Key(_, None) => return None,
    })
}

/// Says how many instances are live (and warns when it becomes more than
/// one: quotas are then per instance).
pub(crate) fn heartbeat(shared: &dyn Shared, stats: &Stats) {
    match shared.heartbeat(LIVE) {
        Ok(n) => {
            let before = stats.instances_live.swap(n as u64, Ordering::Relaxed);
            if n > 1 && before <= 1 {
                tracing::warn!(
                    instances = n,
                    "{n} instances share this database: monthly quotas are enforced per \
                     instance until shared counters are configured"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
    }
}

impl Follower {
    /// Follows the changes after `version` (read before the registry was
    /// loaded, so none falls between).
    pub(crate) fn start(
        registry: Arc<Registry>,
        shared: Arc<dyn Shared>,
        mut version: u64,
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Follower> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tollgate-follower".into())
            .spawn(move || {
                let mut beat = Instant::now();
                let mut unreachable = false;
                while !stopping.load(Ordering::Acquire) {
                    shared.wait_for_changes(POLL);
                    let backlog = shared.backlog();
                    stats
                        .spooled_records
                        .store(backlog.waiting, Ordering::Relaxed);
                    stats
                        .spool_rejected
                        .store(backlog.rejected, Ordering::Relaxed);
                    *stats.database_down.lock() = backlog.down;
                    loop {
                        match shared.catalog_changes(version, PAGE) {
                            Ok((reached, changes)) => {
                                let changes: Vec<Change> =
                                    changes.into_iter().filter_map(change_of).collect();
                                match registry.apply_all(&changes, clock.now()) {
                                    Ok(failed) => {
                                        for (change, e) in failed {
                                            tracing::warn!(error = %e, ?change, "cannot apply another instance's change");
                                        }
                                    }
                                    Err(e) => {
                                        // The totals could not be read: this page again.
                                        tracing::warn!(error = %e, "cannot apply other instances' changes; will retry");
                                        break;
                                    }
                                }
                                unreachable = false;
                                if reached == version {
                                    break;
                                }
                                version = reached;
                            }
                            Err(e) => {
                                // Said once per outage; the spool says the rest.
                                if !unreachable {
                                    tracing::warn!(error = %e, "cannot read catalog changes; will retry");
                                }
                                unreachable = true;
                                break;
                            }
                        }
                    }
                    if beat.elapsed() >= HEARTBEAT && !unreachable {
                        beat = Instant::now();
                        heartbeat(shared.as_ref(), &stats);
                    }
                }
                if let Err(e) = shared.leave() {
                    tracing::warn!(error = %e, "cannot sign off from the shared database");
                }
            })?;
        Ok(Follower {
            stop,
            handle: Some(handle),
        })
    }

    pub(crate) fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.shutdown();
    }
}
