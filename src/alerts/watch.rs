//! The anomaly watcher: a thread that, once an hour is complete (and a
//! minute more, for the last records to land), judges that hour of every
//! tenant busy enough to be judged, and of the fleet, with
//! [`analytics::anomaly`](crate::analytics::anomaly), and fires a
//! `usage.anomaly` event at the start of each episode (consecutive hours
//! flagged for the same metric the same way) - once, across restarts, like
//! the thresholds: each firing is an [`AlertMark`] keyed by the episode's
//! owner, metric, direction and first hour.
//!
//! The hour is judged from its own cells and those of the same hour in the
//! previous weeks, a few reads per owner; only an owner with an anomaly
//! reads its weeks whole, to find where the episode began.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use tokio::sync::mpsc::UnboundedSender;

use super::{Event, Firing, Target};
use crate::analytics::anomaly::{
    detect, episode_start, Anomaly, Direction, Metric, BASELINE_WEEKS, EPISODE_GAP_HOURS,
    EPISODE_WALK_HOURS, HISTORY_HOURS, MIN_REQUESTS,
};
use crate::analytics::hours::{HourPoint, Hours, HOUR_MS, WEEK_HOURS};
use crate::clock::Clock;
use crate::quota::period::Period;
use crate::rollup::{Buckets, Grain, Owner};
use crate::store::{alert_key, AlertMark, MarkOf, Store, StoreError};

/// How long after an hour ends it is judged.
pub(crate) const SETTLE_MS: i64 = 60_000;
/// The owner a fleet-wide anomaly is marked for (no tenant id has a `*`).
pub(crate) const FLEET: &str = "*";

/// What an episode's mark is of: its first hour within its period (<
/// 1024) times 8, plus metric and direction.
pub(crate) fn episode_code(start_hour: i64, period: Period, a: &Anomaly) -> MarkOf {
    let within = (start_hour - period.start_secs() / 3600).clamp(0, 1023) as u32;
    let metric = Metric::ALL
        .iter()
        .position(|m| *m == a.metric)
        .expect("a known metric") as u32;
    MarkOf::Episode(within << 3 | metric << 1 | (a.direction == Direction::Down) as u32)
}

pub(crate) struct Watcher {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Stops the thread (its sender of firings goes with it).
    pub(crate) fn stop(&mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("the anomaly watcher panicked");
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Watch {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    urls: Vec<String>,
    tx: UnboundedSender<Firing>,
    fired: HashSet<String>,
    /// The episodes under way: their first and last flagged hours.
    ongoing: HashMap<(Owner, Metric, Direction), (i64, i64)>,
}

/// Starts the watcher for the targets that asked for anomalies; `fired`
/// holds the keys of the marks already stored.
pub(crate) fn start(
    targets: &[Target],
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    tx: UnboundedSender<Firing>,
    fired: HashSet<String>,
) -> std::io::Result<Option<Watcher>> {
    let urls: Vec<String> = targets
        .iter()
        .filter(|t| t.anomalies)
        .map(|t| t.url.clone())
        .collect();
    if urls.is_empty() {
        return Ok(None);
    }
    let (stop, stopped) = bounded::<()>(0);
    let mut w = Watch {
        store,
        clock,
        urls,
        tx,
        fired,
        ongoing: HashMap::new(),
    };
    let handle = std::thread::Builder::new()
        .name("tollgate-anomalies".into())
        .spawn(move || {
            // The last complete hour is judged at start, then each next one.
            let mut next = w.now_ms().saturating_sub(SETTLE_MS).div_euclid(HOUR_MS) - 1;
            loop {
                let due = (next + 1) * HOUR_MS + SETTLE_MS;
                let now = w.now_ms();
                if now >= due {
                    if let Err(e) = w.judge(next) {
                        tracing::warn!(error = %e, hour = next, "cannot look for anomalies this hour");
                    }
                    next += 1;
                    continue;
                }
                // The clock may be a test's: look again at least every second.
                let wait = Duration::from_millis((due - now).clamp(1, 1_000) as u64);
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })?;
    Ok(Some(Watcher {
        stop: Some(stop),
        handle: Some(handle),
    }))
}

impl Watch {
    fn now_ms(&self) -> i64 {
        self.clock.now_nanos().millis().0
    }

    /// Judges hour `h` of the fleet and of every tenant busy then or in
    /// its baseline.
    fn judge(&mut self, h: i64) -> Result<(), StoreError> {
        let store = self.store.clone();
        let baseline: Vec<i64> = (0..=BASELINE_WEEKS).map(|k| h - k * WEEK_HOURS).collect();
        let mut owners = vec![Owner::Fleet];
        let mut seen = HashSet::new();
        for &t in &baseline {
            for (_, cell) in store.rollups(&Owner::Fleet, Buckets::new(Grain::Hour, t, t + 1))? {
                for (tenant, p) in &cell.tenants {
                    if p.requests >= MIN_REQUESTS
                        && tenant != crate::rollup::OTHER
                        && seen.insert(tenant.clone())
                    {
                        owners.push(Owner::Tenant(tenant.clone()));
                    }
                }
            }
        }
        self.ongoing
            .retain(|_, (_, last)| h - *last <= EPISODE_GAP_HOURS);
        for owner in owners {
            let hours = sparse(store.as_ref(), &owner, h, &baseline)?;
            let mut whole = None;
            for a in detect(&hours, h, h + 1) {
                let key = (owner.clone(), a.metric, a.direction);
                if let Some((_, last)) = self.ongoing.get_mut(&key) {
                    // An episode this watcher has seen begin: fired already.
                    *last = h;
                    continue;
                }
                // Where an episode began (it may have begun before a
                // restart) needs the weeks whole.
                if whole.is_none() {
                    let from = h - HISTORY_HOURS - EPISODE_WALK_HOURS;
                    whole = Some(Hours::read(store.as_ref(), &owner, from, h + 1)?);
                }
                let start = episode_start(whole.as_ref().expect("just read"), &a);
                self.ongoing.insert(key, (start, h));
                self.fire(&owner, &a, start);
            }
        }
        Ok(())
    }

    fn fire(&mut self, owner: &Owner, a: &Anomaly, start: i64) {
        let period = Period::containing_secs(start * 3600);
        let tenant = match owner {
            Owner::Fleet => FLEET,
            Owner::Tenant(id) => id.as_str(),
        };
        let of = episode_code(start, period, a);
        let now = self.clock.now();
        let event = Event::anomaly((tenant != FLEET).then_some(tenant), a, start * HOUR_MS, now);
        let body = event.body();
        for url in &self.urls {
            if !self.fired.insert(alert_key(tenant, period, url, of)) {
                continue;
            }
            tracing::info!(tenant, metric = a.metric.name(), direction = a.direction.name(),
                observed = a.observed, expected = a.expected, url = %url, "usage anomaly");
            let _ = self.tx.send(Firing {
                mark: AlertMark {
                    tenant: tenant.to_string(),
                    period,
                    url: url.clone(),
                    of,
                    body: body.clone(),
                    delivered: false,
                },
                event: event.clone(),
                fresh: true,
            });
        }
    }
}

/// The hours hour `h` is judged on, read one by one (with the hour before
/// each, where an episode may have begun): the rest are left empty.
fn sparse(store: &dyn Store, owner: &Owner, h: i64, hours: &[i64]) -> Result<Hours, StoreError> {
    let first = h - HISTORY_HOURS - 1;
    let mut out = Hours {
        first,
        points: vec![HourPoint::default(); (h + 1 - first) as usize],
    };
    for &t in hours {
        for (bucket, cell) in store.rollup_heads(owner, Buckets::new(Grain::Hour, t - 1, t + 1))? {
            if let Some(p) = out.points.get_mut((bucket - first) as usize) {
                *p = HourPoint::of(&cell);
            }
        }
    }
    Ok(out)
}
