//! [`AppState`]: what every handler shares - the registry, the queue, the
//! clock, prices, the chat backend, the admin and scrape tokens, the limits
//! a request is held to, the metrics and the gateway's targets. Built once
//! by `app.rs`, handed to actix as `web::Data`.

use std::sync::Arc;

use super::proxy;
use crate::auth::AdminToken;
use crate::clock::Clock;
use crate::http::chat::ChatBackend;
use crate::model::CompactString;
use crate::pricing::PriceTable;
use crate::registry::Registry;
use crate::telemetry::stats::Stats;
use crate::usage::queue::UsageQueue;

/// What every handler shares.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub queue: UsageQueue,
    pub clock: Arc<dyn Clock>,
    pub prices: Arc<PriceTable>,
    pub chat: ChatBackend,
    pub admin: AdminToken,
    pub stats: Arc<Stats>,
    pub max_body_bytes: usize,
    /// A request body must arrive within this (`[limits] body_timeout_ms`).
    pub body_timeout: std::time::Duration,
    /// How long a usage batch waits for queue room (`[limits] ingest_wait_ms`).
    pub ingest_wait: std::time::Duration,
    /// Requests of one tenant served at once (`[limits] in_flight_per_tenant`).
    pub in_flight_per_tenant: u32,
    /// The bearer token `/metrics` asks for, if one is configured.
    pub metrics_token: Option<AdminToken>,
    pub default_model: String,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    /// Gateway mode's fronted APIs.
    pub proxies: Vec<Arc<proxy::ProxyTarget>>,
    /// Countries from client addresses (`[geoip] mmdb`), when configured.
    pub geo: Option<Arc<crate::geo::GeoIp>>,
    /// Enforcement shared with other instances (`[cluster] redis_url`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Exports streaming now (`[limits] exports`, `exports_per_tenant`).
    pub exports: std::sync::Arc<super::slots::Slots>,
    /// Analytics reports computing now, per tenant
    /// (`[limits] reports_per_tenant`).
    pub reports: std::sync::Arc<super::slots::Slots>,
    /// Envoy's services: whether a `tenant_id` descriptor is taken
    /// (`[grpc] tenant_id`), and the peers allowed to call (`[grpc] peers`;
    /// empty: any).
    pub grpc_tenant_id: bool,
    pub grpc_peers: Vec<std::net::IpAddr>,
    /// Token reservations `authorize` handed out, until settled or expired.
    pub reservations: Arc<crate::quota::reservation::Book>,
}

impl AppState {
    /// The country of the request's client, when `[geoip]` can tell.
    pub fn country_of(&self, req: &actix_web::HttpRequest) -> CompactString {
        let Some(geo) = &self.geo else {
            return CompactString::default();
        };
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        geo.country_of(req.peer_addr().map(|a| a.ip()), &forwarded)
            .unwrap_or_default()
    }

    /// The country of an address a request names (`clientIp`), never stored.
    pub fn country_of_ip(&self, ip: std::net::IpAddr) -> CompactString {
        self.geo
            .as_ref()
            .and_then(|g| g.country(ip))
            .unwrap_or_default()
    }
}
