//! The delivery loop: every firing goes to its target's [`Channel`] -
//! claimed in the store first (once across instances), tried with
//! exponential backoff, marked delivered on the first success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc::UnboundedReceiver;

use super::email::{Email, Mailer};
use super::{webhook::Webhook, Event, Firing, Target, Via};
use crate::store::{AlertMark, Store};
use crate::telemetry::stats::Stats;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a stop waits for deliveries in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One way of telling a target (a webhook, an e-mail): a new one (Slack,
/// PagerDuty) is a file that implements this and a [`Via`] that makes it.
pub(crate) trait Channel: Send + Sync {
    /// What it is, in logs: `webhook`, `e-mail`.
    fn what(&self) -> &'static str;
    /// Its delivery counters (`/metrics`).
    fn counts<'a>(&self, stats: &'a Stats) -> Counts<'a>;
    /// One try at telling `event`, whose JSON is `body` (the bytes the
    /// mark keeps).
    fn send<'a>(&'a self, event: &'a Event, body: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// The counters of one kind of delivery.
pub(crate) struct Counts<'a> {
    pub delivered: &'a AtomicU64,
    pub retried: &'a AtomicU64,
    pub failed: &'a AtomicU64,
}

/// Each target's channel (none for an e-mail target with no `[smtp]`).
fn channels(targets: &[Target], mailer: Option<Mailer>) -> Vec<Option<Box<dyn Channel>>> {
    let client = Webhook::client();
    let mailer = mailer.map(Arc::new);
    targets
        .iter()
        .map(|t| -> Option<Box<dyn Channel>> {
            match &t.via {
                Via::Webhook { secret } => Some(Box::new(Webhook::new(
                    client.clone(),
                    &t.url,
                    secret,
                    t.timeout,
                ))),
                Via::Email { to } => mailer
                    .clone()
                    .map(|m| Box::new(Email::new(m, to)) as Box<dyn Channel>),
            }
        })
        .collect()
}

/// Delivers the firings `rx` brings until it closes, then waits a moment
/// for the deliveries in flight.
pub(crate) fn deliver_all(
    mut rx: UnboundedReceiver<Firing>,
    targets: Arc<Vec<Target>>,
    mailer: Option<Mailer>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the alert delivery runtime; webhooks and e-mails are off");
            return;
        }
    };
    let channels: Arc<Vec<Option<Box<dyn Channel>>>> = Arc::new(channels(&targets, mailer));
    rt.block_on(async move {
        let mut inflight = tokio::task::JoinSet::new();
        while let Some(Firing { mark, event, fresh }) = rx.recv().await {
            let Some(i) = targets.iter().position(|t| t.url == mark.url) else {
                tracing::warn!(url = %mark.url, "alert target no longer configured; not delivered");
                continue;
            };
            if channels[i].is_none() {
                tracing::error!(url = %mark.url, "no [smtp] server; e-mail not sent");
                continue;
            }
            let (targets, channels, store, stats) = (
                targets.clone(),
                channels.clone(),
                store.clone(),
                stats.clone(),
            );
            inflight.spawn(async move {
                let channel = channels[i].as_deref().expect("checked above");
                deliver(
                    &targets[i],
                    channel,
                    mark,
                    &event,
                    fresh,
                    store.as_ref(),
                    &stats,
                )
                .await;
            });
            while inflight.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
    });
}

/// Claims a fresh firing in the store (another instance sharing the store
/// may have fired it first: then nothing is sent), then tries the channel
/// up to the target's attempts with exponential backoff; marks it
/// delivered on the first success.
async fn deliver(
    target: &Target,
    channel: &dyn Channel,
    mut mark: AlertMark,
    event: &Event,
    fresh: bool,
    store: &dyn Store,
    stats: &Stats,
) {
    let what = channel.what();
    let counts = channel.counts(stats);
    if fresh {
        match store.claim_alert_mark(&mark) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(url = %target.url, tenant = %mark.tenant, of = ?mark.of, what, "fired already by another instance; not sent again");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, what, "cannot record an alert firing; it may fire again after a restart");
            }
        }
    }
    let mut delay = target.retry_initial;
    for attempt in 1..=target.max_attempts {
        let problem = match channel.send(event, &mark.body).await {
            Ok(()) => {
                counts.delivered.fetch_add(1, Ordering::Relaxed);
                mark.delivered = true;
                if let Err(e) = store.put_alert_mark(&mark) {
                    tracing::warn!(error = %e, what, "alert delivered but not marked; it may be sent again after a restart");
                }
                tracing::info!(url = %target.url, tenant = %mark.tenant, of = ?mark.of, attempt, what, "alert delivered");
                return;
            }
            Err(problem) => problem,
        };
        if attempt == target.max_attempts {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(url = %target.url, tenant = %mark.tenant, of = ?mark.of, attempt, problem, what, "alert not delivered; it is sent again at the next start");
            return;
        }
        counts.retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %target.url, attempt, retry_in_ms = delay.as_millis() as u64, problem, what, "alert delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}
