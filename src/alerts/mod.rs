//! Threshold webhooks and e-mails (SPEC §8 `[[alerts]]`).
//!
//! Threshold and anomaly alerts (SPEC §8 `[[alerts]]`), from what fires
//! them to their delivery.
//!
//! The flusher shows [`Alerts::observe`] every batch before writing it; for
//! each tenant in the batch it compares the monthly call counter with each
//! configured threshold. A threshold crossed for the first time in the
//! period *fires*: an [`Event`] goes to the delivery thread
//! ([`deliver`]), which records it in the store ([`AlertMark`]) and tells
//! it through the target's [`Channel`] ([`webhook`]: POSTed, signed;
//! [`email`]: mailed in words), retrying with exponential backoff. Marks
//! make a firing happen once per tenant, period, URL and threshold across
//! restarts; undelivered ones are sent again at the next start.
//!
//! Anomalies (`anomalies = true` on an `[[alerts]]` target) are watched by
//! a thread of their own ([`watch`]) and delivered the same way.
//!
//! Architecture Invariant: nothing here runs on the request path; a slow or
//! dead receiver delays no request and no flush. Outbound HTTP is the
//! webhook channel's alone, SMTP the e-mail channel's.

pub(crate) mod deliver;
pub(crate) mod email;
mod event;
pub(crate) mod watch;
pub(crate) mod webhook;

pub(crate) use event::Event;

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::clock::{Clock, Nanos};
use crate::config::AlertConfig;
use crate::quota::period::Period;
use crate::quota::TenantState;
use crate::store::{alert_key, AlertMark, MarkOf, Store};
use crate::telemetry::stats::Stats;
use crate::usage::Queued;

/// How a target is told (the [`Channel`] the delivery thread makes of it).
#[derive(Debug)]
pub(crate) enum Via {
    /// POSTed to the target's URL, signed with this secret.
    Webhook { secret: Vec<u8> },
    /// Mailed through `[smtp]` to these addresses.
    Email { to: Vec<String> },
}

/// One receiver, as configured, with its secret read: a webhook URL or a
/// list of e-mail addresses (an `[[alerts]]` entry with both is two).
#[derive(Debug)]
pub(crate) struct Target {
    /// Who it is, in its firings' marks: the webhook URL, or
    /// `mailto:` and the addresses.
    pub url: String,
    /// Ascending.
    pub thresholds: Vec<u32>,
    pub via: Via,
    pub(crate) retry_initial: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Duration,
    /// Told about anomalies too.
    pub anomalies: bool,
}

impl Target {
    /// The targets of one `[[alerts]]` entry. A webhook's secret is read
    /// from `secret_env`; a missing secret is an error, since receivers must
    /// be able to check the signature. Addresses must look like addresses.
    pub(crate) fn from_config(
        c: &AlertConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Target>, String> {
        let mut thresholds = c.thresholds.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        let target = |url: String, via: Via| Target {
            url,
            thresholds: thresholds.clone(),
            via,
            retry_initial: Duration::from_millis(c.retry_initial_ms),
            max_attempts: c.max_attempts,
            timeout: Duration::from_millis(c.timeout_ms),
            anomalies: c.anomalies,
        };
        let mut out = Vec::new();
        if let Some(url) = &c.url {
            let secret = env(&c.secret_env)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "alert {url}: set {} to the webhook signing secret",
                        c.secret_env
                    )
                })?;
            out.push(target(
                url.to_string(),
                Via::Webhook {
                    secret: secret.into_bytes(),
                },
            ));
        }
        if !c.email.is_empty() {
            for a in &c.email {
                email::mailbox(a).map_err(|e| format!("alert email {a:?}: {e}"))?;
            }
            out.push(target(
                format!("mailto:{}", c.email.join(",")),
                Via::Email {
                    to: c.email.clone(),
                },
            ));
        }
        if out.is_empty() {
            return Err("an [[alerts]] entry needs a url, an email list, or both".into());
        }
        Ok(out)
    }
}

/// A firing on its way to the delivery thread: a fresh one is claimed in
/// the store first (so instances sharing it deliver it once); a resend of
/// an undelivered one from an earlier run is stored already.
#[derive(Debug)]
pub(crate) struct Firing {
    pub mark: AlertMark,
    /// What the mark's body says.
    pub event: Event,
    pub fresh: bool,
}

/// The watcher the flusher calls; owns the sending side of the deliveries.
pub(crate) struct Alerts {
    targets: Arc<Vec<Target>>,
    /// The period last seen, and the keys of the firings of it (and of the
    /// period before, which the store also still holds).
    fired: Mutex<(Period, HashSet<String>)>,
    tx: UnboundedSender<Firing>,
    clock: Arc<dyn Clock>,
}

/// The delivery thread (and the anomaly watcher feeding it); joining stops
/// the watcher and waits for deliveries in flight (briefly).
pub(crate) struct Deliveries {
    handle: Option<JoinHandle<()>>,
    watcher: Option<watch::Watcher>,
}

impl Deliveries {
    pub(crate) fn join(&mut self) {
        if let Some(mut w) = self.watcher.take() {
            w.stop();
        }
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("the webhook delivery thread panicked");
            }
        }
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        self.join();
    }
}

/// Starts the delivery thread and queues the undelivered firings of earlier
/// runs. The delivery thread ends once the returned [`Alerts`] is dropped.
pub(crate) fn start(
    targets: Vec<Target>,
    mailer: Option<email::Mailer>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
) -> std::io::Result<(Alerts, Deliveries)> {
    let period = Period::containing(clock.now());
    let prev = Period(period.0 - 1);
    if let Err(e) = store.prune_alert_marks(prev) {
        tracing::warn!(error = %e, "cannot prune old webhook marks");
    }
    let marks = store.alert_marks().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read webhook marks; thresholds may fire again");
        Vec::new()
    });
    let targets = Arc::new(targets);
    let (tx, rx) = unbounded_channel();
    let mut fired = HashSet::new();
    let mut episodes = HashSet::new();
    for mark in marks {
        if let MarkOf::Episode(_) = mark.of {
            episodes.insert(mark.key());
        }
        fired.insert(mark.key());
        if mark.delivered {
            continue;
        }
        match Event::parse(&mark.body) {
            Some(event) => {
                let _ = tx.send(Firing {
                    mark,
                    event,
                    fresh: false,
                });
            }
            None => {
                tracing::error!(tenant = %mark.tenant, url = %mark.url, "an undelivered alert's body is not an event; not sent again")
            }
        }
    }
    let watcher = watch::start(&targets, store.clone(), clock.clone(), tx.clone(), episodes)?;
    let thread_targets = targets.clone();
    let handle = std::thread::Builder::new()
        .name("tollgate-webhooks".into())
        .spawn(move || deliver::deliver_all(rx, thread_targets, mailer, store, stats))?;
    Ok((
        Alerts {
            targets,
            fired: Mutex::new((period, fired)),
            tx,
            clock,
        },
        Deliveries {
            handle: Some(handle),
            watcher,
        },
    ))
}

impl Alerts {
    /// Fires each threshold the batch's tenants have newly crossed.
    /// Checks one tenant whose usage was written outside the flusher (a
    /// claimed batch, written by its request).
    pub(crate) fn observe_tenant(&self, tenant: &TenantState) {
        let now = self.clock.now();
        let now_ns = Nanos(now.timestamp_nanos_opt().unwrap_or(i64::MAX));
        self.check(tenant, now_ns, Period::containing(now), now);
    }

    pub(crate) fn observe(&self, batch: &[Queued]) {
        let now = self.clock.now();
        let now_ns = Nanos(now.timestamp_nanos_opt().unwrap_or(i64::MAX));
        let period = Period::containing(now);
        {
            // A new month: forget the firings of months before the last.
            let mut fired = self.fired.lock();
            if fired.0 != period {
                fired.0 = period;
                fired
                    .1
                    .retain(|key| key_period(key).is_some_and(|p| p >= period.0 - 1));
            }
        }
        let mut seen: HashSet<*const TenantState> = HashSet::new();
        for q in batch {
            if seen.insert(Arc::as_ptr(&q.tenant)) {
                self.check(&q.tenant, now_ns, period, now);
            }
        }
    }

    fn check(
        &self,
        tenant: &TenantState,
        now_ns: Nanos,
        period: Period,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let d = tenant.snapshot(now_ns);
        let Some(limit) = d.calls_limit.filter(|&l| l > 0) else {
            return;
        };
        let used = d.calls_used;
        for target in self.targets.iter() {
            for &threshold in &target.thresholds {
                if (used as u128) * 100 < (threshold as u128) * (limit as u128) {
                    break;
                }
                let of = MarkOf::Threshold(threshold);
                let key = alert_key(&tenant.id, period, &target.url, of);
                if !self.fired.lock().1.insert(key) {
                    continue;
                }
                let event = Event::threshold(&tenant.id, threshold, used, limit, period, now);
                tracing::info!(tenant = %tenant.id, threshold, used, limit, url = %target.url, "usage threshold crossed");
                let _ = self.tx.send(Firing {
                    mark: AlertMark {
                        tenant: tenant.id.to_string(),
                        period,
                        url: target.url.clone(),
                        of,
                        body: event.body(),
                        delivered: false,
                    },
                    event,
                    fresh: true,
                });
            }
        }
    }
}

/// The period number in an [`alert_key`].
fn key_period(key: &str) -> Option<i32> {
    key.split('\u{0}').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_period() {
        let key = alert_key(
            "acme",
            Period(682),
            "http://127.0.0.1:9/h",
            MarkOf::Threshold(80),
        );
        assert_eq!(key_period(&key), Some(682));
        assert_eq!(key_period("garbage"), None);
    }
}
