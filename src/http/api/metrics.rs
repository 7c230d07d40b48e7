//! `GET /metrics`: the Prometheus text exposition of [`crate::telemetry::metrics`],
//! [`crate::telemetry::stats::Stats`] and a few gauges read at scrape time.

use std::sync::atomic::Ordering;

use actix_web::{web, HttpResponse};

use crate::http::wire::error::{blocking, ApiError};
use crate::http::AppState;
use crate::telemetry::metrics::{encode, Family, Value};

#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition (format 0.0.4)", content_type = "text/plain"), (status = 401, description = "a scrape token is configured ([metrics] token_env) and was not sent", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn metrics(
    st: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = &st.metrics_token {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|t| token.matches(t)) {
            return Err(ApiError::unauthorized(
                "invalid_metrics_token",
                "scrapes of this server send Authorization: Bearer <token> ([metrics] token_env)",
            ));
        }
    }
    let store = st.metering.registry.store().clone();
    // Walks the data directory: off the worker thread.
    let size = blocking(move || Ok(store.size_bytes().ok())).await?;
    let body = encode(families(&st, size));
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

fn families(st: &AppState, store_bytes: Option<u64>) -> Vec<Family> {
    let s = &st.metering.stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let label = |k: &'static str, v: &str| vec![(k, v.to_owned())];

    let mut decisions = Family::new(
        "tollgate_decisions",
        "Enforcement decisions by outcome (unauthorized: no valid key).",
    );
    for (outcome, count) in st.metering.metrics.decisions() {
        decisions = decisions.with(label("outcome", outcome), Value::Counter(count));
    }
    let mut latency = Family::new(
        "tollgate_http_request_duration_seconds",
        "Time from request to response head, by route pattern.",
    );
    for (route, h) in st.metering.metrics.routes() {
        latency = latency.with(label("route", &route), Value::Histogram(h));
    }
    let mut unknown = Family::new(
        "tollgate_unknown_model_records",
        "Usage records whose model has no price (costed at 0), by model.",
    );
    for (model, count) in sorted(s.unknown_models.lock().clone()) {
        unknown = unknown.with(label("model", &model), Value::Counter(count));
    }
    let mut families = vec![
        Family::new("tollgate_build_info", "Always 1; the version is a label.")
            .with(label("version", env!("CARGO_PKG_VERSION")), Value::Gauge(1)),
        decisions,
        latency,
        Family::one(
            "tollgate_queue_depth",
            "Usage records waiting for the flusher.",
            Value::Gauge(st.metering.queue.depth() as i64),
        ),
        Family::one(
            "tollgate_queue_capacity",
            "Usage records the queue to the flusher holds.",
            Value::Gauge(st.metering.queue.capacity() as i64),
        ),
        Family::one(
            "tollgate_records_persisted",
            "Usage records written to the store.",
            Value::Counter(n(&s.persisted)),
        ),
        Family::new(
            "tollgate_records_unpersisted",
            "Usage records decided and answered but never persisted, by reason.",
        )
        .with(
            label("reason", "queue_full"),
            Value::Counter(n(&s.dropped_queue_full)),
        )
        .with(
            label("reason", "store_error"),
            Value::Counter(n(&s.unpersisted_store_error)),
        ),
        Family::one(
            "tollgate_records_rejected_by_store",
            "Usage records the store refused as data (a value out of its range), set apart from their batch so the rest was written; counted in tollgate_records_unpersisted too.",
            Value::Counter(n(&s.rejected_by_store) + n(&s.spool_rejected)),
        ),
        Family::new(
            "tollgate_records_refused",
            "Reported usage records refused, never acknowledged (the client was told to retry), by reason.",
        )
        .with(
            label("reason", "queue_full"),
            Value::Counter(n(&s.refused_queue_full)),
        )
        .with(
            label("reason", "store_failing"),
            Value::Counter(n(&s.refused_store_failing)),
        )
        .with(
            label("reason", "rate_limited"),
            Value::Counter(n(&s.refused_rate_limited)),
        ),
        Family::one(
            "tollgate_records_duplicate",
            "Reported usage records left out because their id (or their batch's Idempotency-Key) was seen within 35 days: the first one counts, these do not.",
            Value::Counter(n(&s.duplicates)),
        ),
        Family::one(
            "tollgate_flushes",
            "Batches the flusher wrote (or tried to).",
            Value::Counter(n(&s.flushes)),
        ),
        Family::one(
            "tollgate_flush_errors",
            "Batches the store failed to write.",
            Value::Counter(n(&s.flush_errors)),
        ),
        Family::one(
            "tollgate_flush_duration_seconds",
            "Time of one batch write to the store.",
            Value::Histogram(s.flush_duration.lock().clone()),
        ),
        Family::one(
            "tollgate_persist_lag_milliseconds",
            "How far the store is behind: every record queued longer ago is written (a kill -9 loses at most what was queued within this); -1 before the first write.",
            Value::Gauge(s.persist_lag_ms().map_or(-1, |ms| ms as i64)),
        ),
        Family::one(
            "tollgate_store_failing",
            "1 while the last store write failed or a store call hangs.",
            Value::Gauge(s.store_failing_now() as i64),
        ),
        Family::one(
            "tollgate_instances_live",
            "Instances live on the shared database, this one included (0: the store is not shared).",
            Value::Gauge(n(&s.instances_live) as i64),
        ),
        Family::one(
            "tollgate_spooled_records",
            "Usage records waiting in the local spool for an unreachable shared database.",
            Value::Gauge(n(&s.spooled_records) as i64),
        ),
        Family::one(
            "tollgate_tenants",
            "Tenants known.",
            Value::Gauge(st.metering.registry.tenant_count() as i64),
        ),
        unknown,
        Family::new(
            "tollgate_webhook_deliveries",
            "Threshold webhook delivery tries, by result.",
        )
        .with(
            label("result", "delivered"),
            Value::Counter(n(&s.webhooks_delivered)),
        )
        .with(
            label("result", "retried"),
            Value::Counter(n(&s.webhooks_retried)),
        )
        .with(
            label("result", "failed"),
            Value::Counter(n(&s.webhooks_failed)),
        ),
        Family::new(
            "tollgate_email_deliveries",
            "Alert e-mail tries, by result.",
        )
        .with(
            label("result", "delivered"),
            Value::Counter(n(&s.emails_delivered)),
        )
        .with(
            label("result", "retried"),
            Value::Counter(n(&s.emails_retried)),
        )
        .with(
            label("result", "failed"),
            Value::Counter(n(&s.emails_failed)),
        ),
    ];
    if let Some(c) = st.metering.cluster.as_deref() {
        families.extend(cluster_families(c));
    }
    if let Some(bytes) = store_bytes {
        families.push(Family::one(
            "tollgate_store_size_bytes",
            "Bytes the store takes on disk.",
            Value::Gauge(bytes as i64),
        ));
    }
    families
}

/// Shared enforcement (`[cluster]`): Redis's state as this instance sees
/// it, its calls, and what its leases hold.
fn cluster_families(c: &crate::cluster::Cluster) -> Vec<Family> {
    let s = c.stats();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let label = |k: &'static str, v: &str| vec![(k, v.to_owned())];
    vec![
        Family::one(
            "tollgate_cluster_redis_up",
            "1 while Redis answered the last call; 0 while decisions come from the leases held, then are refused.",
            Value::Gauge(c.redis_up() as i64),
        ),
        Family::one(
            "tollgate_cluster_redis_round_trips",
            "Calls to Redis (a pipeline is one).",
            Value::Counter(n(&s.round_trips)),
        ),
        Family::one(
            "tollgate_cluster_redis_errors",
            "Calls to Redis that failed or timed out.",
            Value::Counter(n(&s.errors)),
        ),
        Family::new("tollgate_cluster_lease_units", "Units of shared quotas, by what happened to them.")
            .with(label("event", "granted"), Value::Counter(n(&s.granted)))
            .with(label("event", "given_back"), Value::Counter(n(&s.given_back))),
        Family::one(
            "tollgate_cluster_lease_units_held",
            "Units this instance holds in leases now.",
            Value::Gauge(n(&s.held) as i64),
        ),
        Family::one(
            "tollgate_cluster_tenants_leased",
            "Tenants whose leases the sync loop follows.",
            Value::Gauge(n(&s.tenants) as i64),
        ),
        Family::one(
            "tollgate_cluster_top_ups",
            "Requests that found their lease empty and asked Redis themselves.",
            Value::Counter(n(&s.top_ups)),
        ),
        Family::one(
            "tollgate_cluster_denied_redis_down",
            "Decisions refused (503 cluster_unavailable) because Redis could not be reached.",
            Value::Counter(n(&s.denied_down)),
        ),
    ]
}

fn sorted(map: std::collections::HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort();
    v
}
