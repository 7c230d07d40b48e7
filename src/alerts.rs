//! Threshold webhooks (SPEC §8 `[[alerts]]`).
//!
//! The flusher shows [`Alerts::observe`] every batch before writing it; for
//! each tenant in the batch it compares the monthly call counter with each
//! configured threshold. A threshold crossed for the first time in the
//! period *fires*: the firing goes to the delivery thread, which records it
//! in the store ([`AlertMark`]) and POSTs the body, signed, retrying with
//! exponential backoff. Marks make a firing happen once per tenant, period,
//! URL and threshold across restarts; undelivered ones are sent again at
//! the next start.
//!
//! Architecture Invariant: nothing here runs on the request path; a slow or
//! dead receiver delays no request and no flush.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::clock::{fmt_ms, Clock};
use crate::config::AlertConfig;
use crate::quota::period::Period;
use crate::quota::TenantState;
use crate::store::{alert_key, AlertMark, Store};
use crate::telemetry::stats::Stats;
use crate::usage::Queued;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a stop waits for deliveries in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One receiver, as configured, with its secret read.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    /// Ascending.
    pub thresholds: Vec<u32>,
    secret: Vec<u8>,
    retry_initial: Duration,
    max_attempts: u32,
    timeout: Duration,
}

impl Target {
    /// Reads the secret from `secret_env`; a missing secret is an error,
    /// since receivers must be able to check the signature.
    pub fn from_config(
        c: &AlertConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, String> {
        let secret = env(&c.secret_env)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "alert {}: set {} to the webhook signing secret",
                    c.url, c.secret_env
                )
            })?;
        let mut thresholds = c.thresholds.clone();
        thresholds.sort_unstable();
        thresholds.dedup();
        Ok(Target {
            url: c.url.clone(),
            thresholds,
            secret: secret.into_bytes(),
            retry_initial: Duration::from_millis(c.retry_initial_ms),
            max_attempts: c.max_attempts,
            timeout: Duration::from_millis(c.timeout_ms),
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `Tollgate-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The watcher the flusher calls; owns the sending side of the deliveries.
pub struct Alerts {
    targets: Arc<Vec<Target>>,
    /// The period last seen, and the keys of the firings of it (and of the
    /// period before, which the store also still holds).
    fired: Mutex<(Period, HashSet<String>)>,
    tx: UnboundedSender<AlertMark>,
    clock: Arc<dyn Clock>,
}

/// The delivery thread; joining waits for deliveries in flight (briefly).
pub struct Deliveries {
    handle: Option<JoinHandle<()>>,
}

impl Deliveries {
    pub fn join(&mut self) {
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
pub fn start(
    targets: Vec<Target>,
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
    for mark in marks {
        fired.insert(mark.key());
        if !mark.delivered {
            let _ = tx.send(mark);
        }
    }
    let thread_targets = targets.clone();
    let handle = std::thread::Builder::new()
        .name("tollgate-webhooks".into())
        .spawn(move || deliver_all(rx, thread_targets, store, stats))?;
    Ok((
        Alerts {
            targets,
            fired: Mutex::new((period, fired)),
            tx,
            clock,
        },
        Deliveries {
            handle: Some(handle),
        },
    ))
}

impl Alerts {
    /// Fires each threshold the batch's tenants have newly crossed.
    pub fn observe(&self, batch: &[Queued]) {
        let now = self.clock.now();
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
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
        now_ns: i64,
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
                let key = alert_key(&tenant.id, period, &target.url, threshold);
                if !self.fired.lock().1.insert(key) {
                    continue;
                }
                let body = serde_json::json!({
                    "event": "usage.threshold",
                    "tenantId": &*tenant.id,
                    "threshold": threshold,
                    "used": used,
                    "limit": limit,
                    "periodStart": fmt_ms(period.start()),
                    "periodEnd": fmt_ms(period.end()),
                    "timestamp": fmt_ms(now),
                });
                tracing::info!(tenant = %tenant.id, threshold, used, limit, url = %target.url, "usage threshold crossed");
                let _ = self.tx.send(AlertMark {
                    tenant: tenant.id.to_string(),
                    period,
                    url: target.url.clone(),
                    threshold,
                    body: body.to_string(),
                    delivered: false,
                });
            }
        }
    }
}

/// The period number in an [`alert_key`].
fn key_period(key: &str) -> Option<i32> {
    key.split('\u{0}').nth(1)?.parse().ok()
}

fn deliver_all(
    mut rx: UnboundedReceiver<AlertMark>,
    targets: Arc<Vec<Target>>,
    store: Arc<dyn Store>,
    stats: Arc<Stats>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the webhook runtime; webhooks are off");
            return;
        }
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default();
    rt.block_on(async move {
        let mut inflight = tokio::task::JoinSet::new();
        while let Some(mark) = rx.recv().await {
            let Some(i) = targets.iter().position(|t| t.url == mark.url) else {
                tracing::warn!(url = %mark.url, "webhook no longer configured; not delivered");
                continue;
            };
            let (targets, store, stats, client) = (
                targets.clone(),
                store.clone(),
                stats.clone(),
                client.clone(),
            );
            inflight.spawn(async move {
                deliver(&client, &targets[i], mark, store.as_ref(), &stats).await;
            });
            while inflight.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
    });
}

async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    mut mark: AlertMark,
    store: &dyn Store,
    stats: &Stats,
) {
    if let Err(e) = store.put_alert_mark(&mark) {
        tracing::error!(error = %e, "cannot record a webhook firing; it may fire again after a restart");
    }
    let signature = signature(&target.secret, mark.body.as_bytes());
    let delivery = signature[7..23].to_string();
    let mut delay = target.retry_initial;
    for attempt in 1..=target.max_attempts {
        let result = client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Tollgate-Signature", &signature)
            .header("Tollgate-Event", "usage.threshold")
            .header("Tollgate-Delivery", &delivery)
            .timeout(target.timeout)
            .body(mark.body.clone())
            .send()
            .await;
        let problem = match result {
            Ok(r) if r.status().is_success() => {
                stats.webhooks_delivered.fetch_add(1, Ordering::Relaxed);
                mark.delivered = true;
                if let Err(e) = store.put_alert_mark(&mark) {
                    tracing::warn!(error = %e, "webhook delivered but not marked; it may be sent again after a restart");
                }
                tracing::info!(url = %target.url, tenant = %mark.tenant, threshold = mark.threshold, attempt, "webhook delivered");
                return;
            }
            Ok(r) => format!("status {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt == target.max_attempts {
            stats.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(url = %target.url, tenant = %mark.tenant, threshold = mark.threshold, attempt, problem, "webhook not delivered; it is sent again at the next start");
            return;
        }
        stats.webhooks_retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %target.url, attempt, retry_in_ms = delay.as_millis() as u64, problem, "webhook delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_period() {
        let key = alert_key("acme", Period(682), "http://127.0.0.1:9/h", 80);
        assert_eq!(key_period(&key), Some(682));
        assert_eq!(key_period("garbage"), None);
    }

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
