//! [`Event`]: what an alert tells - a threshold crossed or an anomaly
//! begun - as data. Its JSON is the body a webhook receives and the
//! firing's mark keeps (so that a resend sends the same bytes); its words
//! are an e-mail's subject and text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analytics::anomaly::Anomaly;
use crate::clock::{fmt_ms, ms_to_utc};
use crate::quota::period::Period;

/// One alert, as every channel tells it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub(crate) enum Event {
    /// A tenant's monthly calls reached a share of its quota.
    #[serde(rename = "usage.threshold", rename_all = "camelCase")]
    Threshold {
        tenant_id: String,
        /// Percent of the quota.
        threshold: u32,
        used: u64,
        limit: u64,
        period_start: String,
        period_end: String,
        timestamp: String,
    },
    /// An hour unlike the same hour of the weeks before: the start of an
    /// episode (`tenantId` null for every tenant together).
    #[serde(rename = "usage.anomaly", rename_all = "camelCase")]
    Anomaly {
        tenant_id: Option<String>,
        metric: String,
        direction: String,
        /// The hour's start.
        hour: String,
        episode_start: String,
        observed: f64,
        expected: f64,
        score: f64,
        /// The anomaly in a sentence.
        message: String,
        timestamp: String,
    },
}

impl Event {
    /// `tenant` has used `used` of its `limit` calls in `period`, past
    /// `threshold` percent.
    pub(crate) fn threshold(
        tenant: &str,
        threshold: u32,
        used: u64,
        limit: u64,
        period: Period,
        now: DateTime<Utc>,
    ) -> Event {
        Event::Threshold {
            tenant_id: tenant.to_string(),
            threshold,
            used,
            limit,
            period_start: fmt_ms(period.start()),
            period_end: fmt_ms(period.end()),
            timestamp: fmt_ms(now),
        }
    }

    /// Anomaly `a` of `tenant` (none: the fleet), in an episode that began
    /// at `episode_start_ms`.
    pub(crate) fn anomaly(
        tenant: Option<&str>,
        a: &Anomaly,
        episode_start_ms: i64,
        now: DateTime<Utc>,
    ) -> Event {
        let (observed, expected, score) = a.rounded();
        let direction = a.direction.name();
        Event::Anomaly {
            tenant_id: tenant.map(str::to_string),
            metric: a.metric.name().to_string(),
            direction: direction.to_string(),
            hour: fmt_ms(ms_to_utc(a.t_ms())),
            episode_start: fmt_ms(ms_to_utc(episode_start_ms)),
            observed,
            expected,
            score,
            message: format!(
                "{} {} {}: {observed} against {expected} expected at this hour of the week",
                tenant.unwrap_or("every tenant together"),
                a.metric.label(),
                if direction == "up" { "rose" } else { "fell" },
            ),
            timestamp: fmt_ms(now),
        }
    }

    /// The event a body kept in a mark is (a firing of an earlier run).
    pub(crate) fn parse(body: &str) -> Option<Event> {
        serde_json::from_str(body).ok()
    }

    /// Its name: the body's `event` and the webhook's `Tollgate-Event`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Event::Threshold { .. } => "usage.threshold",
            Event::Anomaly { .. } => "usage.anomaly",
        }
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> String {
        serde_json::to_string(self).expect("an event is plain data")
    }

    /// An e-mail's subject and text: the event in words, with `body` (the
    /// JSON the webhooks receive) below.
    pub(crate) fn mail(&self, body: &str) -> (String, String) {
        let (subject, lead) = match self {
            Event::Threshold {
                tenant_id,
                threshold,
                used,
                limit,
                period_start,
                period_end,
                ..
            } => (
                format!("Tollgate: {tenant_id} reached {threshold} % of its monthly calls"),
                format!(
                    "Tenant {tenant_id} has used {used} of its {limit} calls this period \
                     ({period_start} to {period_end})."
                ),
            ),
            Event::Anomaly {
                tenant_id,
                metric,
                direction,
                hour,
                episode_start,
                message,
                ..
            } => {
                let who = tenant_id
                    .as_deref()
                    .map_or("every tenant together".to_string(), |t| {
                        format!("tenant {t}")
                    });
                (
                    format!("Tollgate: unusual {metric} ({direction}) for {who}"),
                    format!(
                        "{message}.\nThe hour starting {hour}; the episode began {episode_start}."
                    ),
                )
            }
        };
        let text = format!("{lead}\n\nThe event, as the webhooks receive it:\n\n{body}\n");
        (subject, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::anomaly::{Direction, Metric};

    #[test]
    fn a_threshold_and_an_anomaly_in_json_and_in_words() {
        let period = Period::containing(
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 5, 0, 0, 0).unwrap(),
        );
        let now = period.start();
        let e = Event::threshold("acme", 80, 8000, 10_000, period, now);
        let body = e.body();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"], "usage.threshold");
        assert_eq!(v["tenantId"], "acme");
        assert_eq!(v["periodStart"], "2026-12-01T00:00:00.000Z");
        assert_eq!(v["periodEnd"], "2027-01-01T00:00:00.000Z");
        assert_eq!(Event::parse(&body), Some(e.clone()));
        let (subject, text) = e.mail(&body);
        assert_eq!(subject, "Tollgate: acme reached 80 % of its monthly calls");
        assert!(
            text.starts_with("Tenant acme has used 8000 of its 10000 calls"),
            "{text}"
        );
        assert!(text.contains(r#""threshold":80"#));

        let a = Anomaly {
            hour: 493_000,
            metric: Metric::Requests,
            observed: 1200.0,
            expected: 100.123,
            score: 9.876,
            direction: Direction::Up,
        };
        let e = Event::anomaly(None, &a, a.t_ms(), now);
        let body = e.body();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"], "usage.anomaly");
        assert!(v["tenantId"].is_null());
        assert_eq!(v["expected"], 100.12);
        assert_eq!(Event::parse(&body), Some(e.clone()));
        let (subject, _) = e.mail(&body);
        assert_eq!(
            subject,
            "Tollgate: unusual requests (up) for every tenant together"
        );
        assert_eq!(Event::parse("{}"), None);
    }
}
