//! Operational metrics and their Prometheus exposition (`GET /metrics`).
//!
//! The request path writes per-thread slots (one cache line each, picked by
//! [`crate::telemetry::slot::thread_slot`]), so workers never contend on a shared counter; a scrape
//! sums the slots and encodes everything with `prometheus-client`'s text
//! encoder. Rare events (flushes, webhook deliveries, unknown models) live in
//! [`crate::telemetry::stats::Stats`].
//!
//! Architecture Invariant: every metric name starts with `tollgate_`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::quota::Outcome;
use crate::telemetry::slot::{slot_count, thread_slot};

/// Upper bounds (seconds) of the latency histograms' buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A fixed-bucket histogram (seconds); the last count is the `+Inf` bucket.
#[derive(Clone, Debug, Default)]
pub struct Hist {
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

impl Hist {
    pub(crate) fn observe(&mut self, seconds: f64) {
        let i = LATENCY_BUCKETS.partition_point(|&b| b < seconds);
        self.counts[i] += 1;
        self.sum += seconds;
    }

    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (upper bound, count in that bucket), as the encoder wants them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }
}

/// How a request's decision went, as `tollgate_decisions_total{outcome}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionLabel {
    Allowed,
    RateLimited,
    QuotaExceeded,
    TokenQuotaExceeded,
    Suspended,
    Unauthorized,
    ClusterUnavailable,
    BudgetExceeded,
    TooManyInFlight,
}

impl DecisionLabel {
    const ALL: [DecisionLabel; 9] = [
        DecisionLabel::Allowed,
        DecisionLabel::RateLimited,
        DecisionLabel::QuotaExceeded,
        DecisionLabel::TokenQuotaExceeded,
        DecisionLabel::Suspended,
        DecisionLabel::Unauthorized,
        DecisionLabel::ClusterUnavailable,
        DecisionLabel::BudgetExceeded,
        DecisionLabel::TooManyInFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionLabel::Allowed => "allowed",
            DecisionLabel::RateLimited => "rate_limited",
            DecisionLabel::QuotaExceeded => "quota_exceeded",
            DecisionLabel::TokenQuotaExceeded => "token_quota_exceeded",
            DecisionLabel::Suspended => "suspended",
            DecisionLabel::Unauthorized => "unauthorized",
            DecisionLabel::ClusterUnavailable => "cluster_unavailable",
            DecisionLabel::BudgetExceeded => "budget_exceeded",
            DecisionLabel::TooManyInFlight => "too_many_in_flight",
        }
    }
}

impl From<Outcome> for DecisionLabel {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Allowed => DecisionLabel::Allowed,
            Outcome::RateLimited => DecisionLabel::RateLimited,
            Outcome::QuotaExceeded => DecisionLabel::QuotaExceeded,
            Outcome::TokenQuotaExceeded => DecisionLabel::TokenQuotaExceeded,
            Outcome::Suspended => DecisionLabel::Suspended,
            Outcome::ClusterUnavailable => DecisionLabel::ClusterUnavailable,
            Outcome::BudgetExceeded => DecisionLabel::BudgetExceeded,
            Outcome::InFlightFull => DecisionLabel::TooManyInFlight,
        }
    }
}

/// One thread's share, alone on its cache lines.
#[derive(Default)]
#[repr(align(128))]
struct ThreadMetrics {
    decisions: [AtomicU64; DecisionLabel::ALL.len()],
    /// Route pattern -> latency. Uncontended: only scrapes share the lock.
    routes: Mutex<HashMap<String, Hist>>,
}

/// The request path's metrics.
pub struct Metrics {
    per_thread: Box<[ThreadMetrics]>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            per_thread: (0..slot_count())
                .map(|_| ThreadMetrics::default())
                .collect(),
        }
    }
}

impl Metrics {
    #[inline]
    fn mine(&self) -> &ThreadMetrics {
        &self.per_thread[thread_slot() & (self.per_thread.len() - 1)]
    }

    #[inline]
    pub fn decision(&self, label: impl Into<DecisionLabel>) {
        let label = label.into();
        let i = DecisionLabel::ALL
            .iter()
            .position(|&l| l == label)
            .unwrap_or(0);
        self.mine().decisions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One answered request on `route` (a route pattern) that took `seconds`.
    pub fn request(&self, route: &str, seconds: f64) {
        let mut routes = self.mine().routes.lock();
        match routes.get_mut(route) {
            Some(h) => h.observe(seconds),
            None => routes.entry(route.to_owned()).or_default().observe(seconds),
        }
    }

    pub fn decisions(&self) -> Vec<(&'static str, u64)> {
        DecisionLabel::ALL
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let n = self
                    .per_thread
                    .iter()
                    .map(|s| s.decisions[i].load(Ordering::Relaxed))
                    .sum();
                (l.as_str(), n)
            })
            .collect()
    }

    /// Latency per route, summed over the threads, sorted by route.
    pub fn routes(&self) -> Vec<(String, Hist)> {
        let mut all: HashMap<String, Hist> = HashMap::new();
        for slot in self.per_thread.iter() {
            for (route, h) in slot.routes.lock().iter() {
                all.entry(route.clone()).or_default().merge(h);
            }
        }
        let mut all: Vec<_> = all.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// A metric's value at scrape time.
#[derive(Debug)]
pub(crate) enum Value {
    Counter(u64),
    Gauge(i64),
    Histogram(Hist),
}

/// One metric family: name (without the `_total` a counter gets), help and
/// samples by label set.
#[derive(Debug)]
pub(crate) struct Family {
    pub name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    pub(crate) fn new(name: &'static str, help: &'static str) -> Family {
        debug_assert!(name.starts_with("tollgate_"));
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    /// Label values may come from outside (a model name an upstream
    /// answered): each is cut to [`MAX_LABEL_CHARS`] and its control
    /// characters replaced (the encoder escapes only backslashes, quotes
    /// and newlines).
    pub(crate) fn with(mut self, labels: Vec<(&'static str, String)>, value: Value) -> Family {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k, label_value(&v)))
            .collect();
        self.samples.push((labels, value));
        self
    }

    pub(crate) fn one(name: &'static str, help: &'static str, value: Value) -> Family {
        Family::new(name, help).with(Vec::new(), value)
    }
}

/// The most characters of a label value a scrape shows.
pub(crate) const MAX_LABEL_CHARS: usize = 128;

fn label_value(v: &str) -> String {
    v.chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// The families of one scrape, as a `prometheus-client` collector.
#[derive(Debug)]
struct Scrape(Vec<Family>);

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let Some((_, first)) = family.samples.first() else {
                continue;
            };
            let kind = match first {
                Value::Counter(_) => MetricType::Counter,
                Value::Gauge(_) => MetricType::Gauge,
                Value::Histogram(_) => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match value {
                    Value::Counter(n) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(n, None)?;
                    }
                    Value::Gauge(v) => sample.encode_gauge(v)?,
                    Value::Histogram(h) => sample.encode_histogram::<NoLabelSet>(
                        h.sum,
                        h.count(),
                        &h.buckets(),
                        None,
                    )?,
                }
            }
        }
        Ok(())
    }
}

/// The Prometheus text exposition (format 0.0.4) of `families`.
pub(crate) fn encode(families: Vec<Family>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Scrape(families)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (hostile tenant, finding 8): an upstream's model name
    /// with control characters reached the open scrape unescaped.
    #[test]
    fn label_values_are_cut_and_control_characters_replaced() {
        let text = encode(vec![Family::new("tollgate_t", "t").with(
            vec![("model", format!("a\r\x1b[31m\"b\n{}", "x".repeat(500)))],
            Value::Counter(1),
        )]);
        let line = text
            .lines()
            .find(|l| l.starts_with("tollgate_t_total"))
            .unwrap();
        assert!(!line.contains('\r') && !line.contains('\x1b'), "{line:?}");
        assert!(line.contains("\\\""), "the quote is escaped: {line}");
        assert!(line.len() < 200, "{}", line.len());
    }
}
