//! Threshold webhooks on the wire: the body of a `usage.threshold` event,
//! its `Tollgate-Signature`, and the delivery thread that POSTs each firing
//! and retries with exponential backoff ([`alerts`](crate::alerts) decides
//! what fires).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::alerts::email::Mailer;
use crate::alerts::{Channel, Firing, Target};
use crate::clock::fmt_ms;
use crate::quota::period::Period;
use crate::store::{AlertMark, Store};
use crate::telemetry::stats::Stats;

/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a stop waits for deliveries in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The JSON body of a `usage.threshold` event (kept in the firing's mark,
/// so that a resend sends the same bytes).
pub fn threshold_body(
    tenant: &str,
    threshold: u32,
    used: u64,
    limit: u64,
    period: Period,
    now: DateTime<Utc>,
) -> String {
    serde_json::json!({
        "event": "usage.threshold",
        "tenantId": tenant,
        "threshold": threshold,
        "used": used,
        "limit": limit,
        "periodStart": fmt_ms(period.start()),
        "periodEnd": fmt_ms(period.end()),
        "timestamp": fmt_ms(now),
    })
    .to_string()
}

/// The JSON body of a `usage.anomaly` event: the hour that opened an
/// episode (`tenantId` null for every tenant together).
pub fn anomaly_body(
    tenant: Option<&str>,
    a: &crate::analytics::anomaly::Anomaly,
    episode_start_ms: i64,
    now: DateTime<Utc>,
) -> String {
    let view = crate::http::report::AnomalyView::from(a);
    serde_json::json!({
        "event": "usage.anomaly",
        "tenantId": tenant,
        "metric": view.metric,
        "direction": view.direction,
        "hour": view.t,
        "episodeStart": fmt_ms(crate::clock::ms_to_utc(episode_start_ms)),
        "observed": view.observed,
        "expected": view.expected,
        "score": view.score,
        "message": format!(
            "{} {} {}: {} against {} expected at this hour of the week",
            tenant.unwrap_or("every tenant together"),
            a.metric.label(),
            if view.direction == "up" { "rose" } else { "fell" },
            view.observed,
            view.expected
        ),
        "timestamp": fmt_ms(now),
    })
    .to_string()
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

/// Delivers the firings `rx` brings until it closes, then waits a moment
/// for the deliveries in flight: webhooks over HTTP, e-mails through
/// `mailer`.
pub fn deliver_all(
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
    // No redirect is followed: the signed body goes to the configured URL
    // only (a 3xx is a failed delivery, retried like any other).
    let client = reqwest::Client::builder()
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let mailer = mailer.map(Arc::new);
    rt.block_on(async move {
        let mut inflight = tokio::task::JoinSet::new();
        while let Some(Firing { mark, fresh }) = rx.recv().await {
            let Some(i) = targets.iter().position(|t| t.url == mark.url) else {
                tracing::warn!(url = %mark.url, "alert target no longer configured; not delivered");
                continue;
            };
            let (targets, store, stats, client, mailer) = (
                targets.clone(),
                store.clone(),
                stats.clone(),
                client.clone(),
                mailer.clone(),
            );
            inflight.spawn(async move {
                let target = &targets[i];
                match &target.channel {
                    Channel::Webhook { secret } => {
                        let signature = signature(secret, mark.body.as_bytes());
                        let delivery = signature[7..23].to_string();
                        let event = event_of(&mark);
                        let counts = Counts::webhooks(&stats);
                        let body = mark.body.clone();
                        deliver(
                            target,
                            mark,
                            fresh,
                            store.as_ref(),
                            counts,
                            "webhook",
                            || {
                                let request = client
                                    .post(&target.url)
                                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                                    .header("Tollgate-Signature", &signature)
                                    .header("Tollgate-Event", event)
                                    .header("Tollgate-Delivery", &delivery)
                                    .timeout(target.timeout)
                                    .body(body.clone());
                                async move {
                                    match request.send().await {
                                        Ok(r) if r.status().is_success() => Ok(()),
                                        Ok(r) => Err(format!("status {}", r.status().as_u16())),
                                        Err(e) => Err(e.to_string()),
                                    }
                                }
                            },
                        )
                        .await;
                    }
                    Channel::Email { to } => {
                        let Some(mailer) = mailer else {
                            tracing::error!(url = %target.url, "no [smtp] server; e-mail not sent");
                            return;
                        };
                        let counts = Counts::emails(&stats);
                        let body = mark.body.clone();
                        deliver(
                            target,
                            mark,
                            fresh,
                            store.as_ref(),
                            counts,
                            "e-mail",
                            || {
                                let (mailer, body) = (mailer.clone(), body.clone());
                                async move { mailer.send(to, &body).await }
                            },
                        )
                        .await;
                    }
                }
            });
            while inflight.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while inflight.join_next().await.is_some() {}
        })
        .await;
    });
}

/// The event a mark's body is.
fn event_of(mark: &AlertMark) -> &'static str {
    if mark.threshold & crate::alerts::watch::ANOMALY_MARK != 0 {
        "usage.anomaly"
    } else {
        "usage.threshold"
    }
}

/// The counters of one kind of delivery.
struct Counts<'a> {
    delivered: &'a AtomicU64,
    retried: &'a AtomicU64,
    failed: &'a AtomicU64,
}

impl Counts<'_> {
    fn webhooks(s: &Stats) -> Counts<'_> {
        Counts {
            delivered: &s.webhooks_delivered,
            retried: &s.webhooks_retried,
            failed: &s.webhooks_failed,
        }
    }

    fn emails(s: &Stats) -> Counts<'_> {
        Counts {
            delivered: &s.emails_delivered,
            retried: &s.emails_retried,
            failed: &s.emails_failed,
        }
    }
}

/// Claims a fresh firing in the store (another instance sharing the store
/// may have fired it first: then nothing is sent), then tries `send` up to
/// the target's attempts with exponential backoff; marks it delivered on
/// the first success.
#[allow(clippy::too_many_arguments)]
async fn deliver<F, Fut>(
    target: &Target,
    mut mark: AlertMark,
    fresh: bool,
    store: &dyn Store,
    counts: Counts<'_>,
    what: &str,
    mut send: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if fresh {
        match store.claim_alert_mark(&mark) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(url = %target.url, tenant = %mark.tenant, threshold = mark.threshold, what, "fired already by another instance; not sent again");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, what, "cannot record an alert firing; it may fire again after a restart");
            }
        }
    }
    let mut delay = target.retry_initial;
    for attempt in 1..=target.max_attempts {
        let problem = match send().await {
            Ok(()) => {
                counts.delivered.fetch_add(1, Ordering::Relaxed);
                mark.delivered = true;
                if let Err(e) = store.put_alert_mark(&mark) {
                    tracing::warn!(error = %e, what, "alert delivered but not marked; it may be sent again after a restart");
                }
                tracing::info!(url = %target.url, tenant = %mark.tenant, threshold = mark.threshold, attempt, what, "alert delivered");
                return;
            }
            Err(problem) => problem,
        };
        if attempt == target.max_attempts {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(url = %target.url, tenant = %mark.tenant, threshold = mark.threshold, attempt, problem, what, "alert not delivered; it is sent again at the next start");
            return;
        }
        counts.retried.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %target.url, attempt, retry_in_ms = delay.as_millis() as u64, problem, what, "alert delivery failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
