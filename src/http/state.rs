//! [`AppState`]: what every handler shares - [`Metering`] (the registry,
//! the queue, the clock, prices, metrics, the cluster), the chat backend,
//! the admin and scrape tokens, the limits a request is held to and the
//! gateway's targets. Built once by `app.rs`, handed to actix as `web::Data`.

use std::sync::Arc;

use crate::auth::AdminToken;
use crate::http::api::chat::ChatBackend;
use crate::http::gateway;
use crate::metering::Metering;
use crate::model::CompactString;

/// What every handler shares.
pub struct AppState {
    /// What every metered request shares, with the other edges.
    pub metering: Arc<Metering>,
    pub chat: ChatBackend,
    pub admin: AdminToken,
    pub(crate) max_body_bytes: usize,
    /// A request body must arrive within this (`[limits] body_timeout_ms`).
    pub body_timeout: std::time::Duration,
    /// How long a usage batch waits for queue room (`[limits] ingest_wait_ms`).
    pub(crate) ingest_wait: std::time::Duration,
    /// Days raw records are kept (`[retention] raw_days`): how old an
    /// imported record may be.
    pub(crate) raw_days: u32,
    /// The bearer token `/metrics` asks for, if one is configured.
    pub(crate) metrics_token: Option<AdminToken>,
    pub(crate) default_model: String,
    /// Gateway mode's fronted APIs.
    pub proxies: Vec<Arc<gateway::ProxyTarget>>,
    /// Exports streaming now (`[limits] exports`, `exports_per_tenant`).
    pub exports: std::sync::Arc<crate::http::wire::slots::Slots>,
    /// Analytics reports computing now, per tenant
    /// (`[limits] reports_per_tenant`).
    pub reports: std::sync::Arc<crate::http::wire::slots::Slots>,
    /// Where `POST /api/admin/backup` writes (`<data dir>/backups`).
    pub(crate) backups_dir: std::path::PathBuf,
}

impl AppState {
    /// The country of the request's client, when `[geoip]` can tell.
    pub(crate) fn country_of(&self, req: &actix_web::HttpRequest) -> CompactString {
        let Some(geo) = &self.metering.geo else {
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
}
