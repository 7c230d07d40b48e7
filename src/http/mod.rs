//! The HTTP edge (actix-web): routes, extractors, errors, headers.
//!
//! Architecture Invariant: only this module knows about HTTP and JSON; it
//! turns requests into calls on the registry, the quota engine and the queue.

pub mod admin;
pub mod analytics;
pub mod error;
pub mod export;
pub mod extract;
pub mod headers;
pub mod tenant;
pub mod types;

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer, Route};

use self::extract::TenantCtx;
use crate::auth::AdminToken;
use crate::chat::ChatBackend;
use crate::clock::Clock;
use crate::pricing::PriceTable;
use crate::registry::Registry;
use crate::stats::Stats;
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
    pub default_model: String,
}

/// `GET /healthz`: `ok`, or `degraded` while the store is failing or the
/// queue to it is over 90 % full; with the count of records that could not
/// be persisted (store errors and a full queue, since start).
async fn healthz(st: web::Data<AppState>) -> HttpResponse {
    let failing = st.stats.store_failing.load(Ordering::Relaxed);
    let depth = st.queue.depth();
    let backed_up = depth * 10 > st.queue.capacity() * 9;
    HttpResponse::Ok().json(serde_json::json!({
        "status": if failing || backed_up { "degraded" } else { "ok" },
        "storeFailing": failing,
        "unpersistedRecords": st.stats.unpersisted(),
        "droppedQueueFull": st.stats.dropped_queue_full.load(Ordering::Relaxed),
        "queueDepth": depth,
        "queueCapacity": st.queue.capacity(),
    }))
}

/// A route path whose other methods answer the JSON 405.
pub fn resource(path: &str, routes: Vec<Route>) -> actix_web::Resource {
    routes
        .into_iter()
        .fold(web::resource(path), |r, route| r.route(route))
        .default_service(web::to(error::method_not_allowed))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, patch, post};
    cfg.service(resource("/healthz", vec![get().to(healthz)]))
        .service(resource(
            "/api/v1/authorize",
            vec![post().to(tenant::authorize)],
        ))
        .service(resource("/api/v1/check", vec![post().to(tenant::check)]))
        .service(resource("/api/v1/usage", vec![post().to(tenant::ingest)]))
        .service(resource("/api/chat", vec![post().to(tenant::chat)]))
        .service(resource(
            "/api/billing/usage",
            vec![get().to(tenant::billing_usage)],
        ))
        .service(resource(
            "/api/billing/api-usage",
            vec![get().to(analytics::billing_api_usage)],
        ))
        .service(resource(
            "/api/billing/api-usage/export",
            vec![get().to(export::export)],
        ))
        .service(resource(
            "/api/admin/api-usage",
            vec![get().to(analytics::admin_api_usage)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/api-usage",
            vec![get().to(analytics::admin_tenant_api_usage)],
        ))
        .service(resource(
            "/api/billing/subscription",
            vec![get().to(tenant::billing_subscription)],
        ))
        .service(resource(
            "/api/admin/plans",
            vec![get().to(admin::list_plans), post().to(admin::create_plan)],
        ))
        .service(resource(
            "/api/admin/plans/{id}",
            vec![
                get().to(admin::get_plan),
                patch().to(admin::patch_plan),
                delete().to(admin::delete_plan),
            ],
        ))
        .service(resource(
            "/api/admin/tenants",
            vec![
                get().to(admin::list_tenants),
                post().to(admin::create_tenant),
            ],
        ))
        .service(resource(
            "/api/admin/tenants/{id}",
            vec![
                get().to(admin::get_tenant),
                patch().to(admin::patch_tenant),
                delete().to(admin::delete_tenant),
            ],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/keys",
            vec![get().to(admin::list_keys), post().to(admin::create_key)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/keys/{key_id}",
            vec![delete().to(admin::revoke_key)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/usage",
            vec![get().to(admin::tenant_usage)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/subscription",
            vec![get().to(admin::tenant_subscription)],
        ))
        .configure(crate::dashboard::routes)
        .default_service(web::to(error::not_found));
}

/// Binds the routes to an already-bound listener (tests pass `127.0.0.1:0`).
/// The server stops gracefully on SIGTERM/SIGINT or through its handle.
pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<Server> {
    let mut http = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(|req, srv| {
                let fut = srv.call(req);
                async move {
                    let mut res = fut.await?;
                    let ctx = res.request().extensions().get::<Rc<TenantCtx>>().cloned();
                    if let Some(ctx) = ctx {
                        let decision = ctx.decision().or_else(|| {
                            res.request()
                                .app_data::<web::Data<AppState>>()
                                .map(|st| ctx.tenant.snapshot(st.clock.now_nanos()))
                        });
                        if let Some(d) = decision {
                            headers::apply(res.headers_mut(), &d);
                        }
                    }
                    Ok(res)
                }
            })
            .configure(routes)
    })
    .listen(listener)?
    .shutdown_timeout(10);
    if workers > 0 {
        http = http.workers(workers);
    }
    Ok(http.run())
}
