//! The HTTP edge (actix-web): the server, its middleware and `/healthz`,
//! over four rooms that do not call one another - [`api`] (the API's
//! routes and bodies), [`gateway`] (gateway mode), [`forward_auth`] (an
//! edge proxy's auth service) and [`dashboard`] (the embedded pages) -
//! each over [`metering`](crate::metering) and the wire toolkit [`wire`]
//! (extractors, JSON errors, headers, the response arena).
//!
//! Architecture Invariant: only this module knows actix; a metered
//! request is decided by `metering/`, never here.

pub mod api;
pub(crate) mod dashboard;
pub(crate) mod forward_auth;
pub(crate) mod gateway;
pub(crate) mod openapi;
pub(crate) mod state;
pub(crate) mod wire;

pub use self::state::AppState;

use self::api::{admin, analytics, backup, export, import, limits, metrics, tenant};
use self::wire::{error, headers, route};

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use std::time::Instant;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer, Route};
use tracing::Instrument;

use crate::http::wire::extract::TenantCtx;
use crate::http::wire::request_id::RequestId;

/// `GET /healthz`: `ok`, or `degraded` while the store is failing, the
/// queue to it is over 90 % full or dropped a record within 10 s, or a
/// shared database is unreachable
/// (usage then waits in the local spool); with the count of records that
/// could not be persisted (store errors and a full queue, since start).
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", body = crate::http::openapi::Health), (status = 503, description = "`degraded`: the store fails, the queue is over 90 % full, records are dropped, usage waits in the spool, the database or Redis cannot be reached", body = crate::http::openapi::Health))
)]
async fn healthz(st: web::Data<AppState>) -> HttpResponse {
    let failure = st.metering.stats.store_failure();
    let failing = failure.is_some();
    let depth = st.metering.queue.depth();
    let backed_up = depth * 10 > st.metering.queue.capacity() * 9;
    let instances = st.metering.stats.instances_live.load(Ordering::Relaxed);
    let spooled = st.metering.stats.spooled_records.load(Ordering::Relaxed);
    let database_down = st.metering.stats.database_down.lock().clone();
    let cluster = st.metering.cluster.as_deref().map(|c| c.health());
    let cluster_down = st
        .metering
        .cluster
        .as_deref()
        .is_some_and(|c| !c.redis_up());
    // Records dropped by a full queue within the last 10 s: the store does
    // not keep up (their quota still counts; their analytics are lost).
    let dropping = st.metering.stats.dropping();
    let warning = (instances > 1 && cluster.is_none()).then(|| {
        format!(
            "{instances} instances share this database: monthly quotas are enforced per \
             instance until shared counters are configured"
        )
    });
    let degraded =
        failing || backed_up || dropping || spooled > 0 || database_down.is_some() || cluster_down;
    // Degraded answers 503, so that a health check (Docker's, a load
    // balancer's) sees it; the body says why either way.
    let mut answer = if degraded {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    answer.json(serde_json::json!({
        "status": if degraded { "degraded" } else { "ok" },
        "droppingRecords": dropping,
        "storeFailing": failing,
        "storeError": failure,
        "unpersistedRecords": st.metering.stats.unpersisted(),
        "droppedQueueFull": st.metering.stats.dropped_queue_full.load(Ordering::Relaxed),
        "queueDepth": depth,
        "queueCapacity": st.metering.queue.capacity(),
        "instances": instances,
        "spooledRecords": spooled,
        "databaseError": database_down,
        "warning": warning,
        "cluster": cluster,
    }))
}

/// `GET /readyz`: whether this instance should be sent traffic now - 200
/// `{ready: true}`, or 503 `{ready: false, reasons}` while it would refuse
/// what it is sent (the store fails, so reported usage is refused; the
/// usage queue is nearly full; Redis cannot be reached, so a spent lease
/// is not renewed). `/healthz` reports every cause (503 while any holds);
/// this decides whether to send traffic.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{ready: true}`: send this instance traffic"), (status = 503, description = "`{ready: false, reasons}`: it would refuse what it is sent; Retry-After set"))
)]
async fn readyz(st: web::Data<AppState>) -> HttpResponse {
    let mut reasons: Vec<String> = Vec::new();
    if let Some(why) = st.metering.stats.store_failure() {
        reasons.push(format!("the store is failing: {why}"));
    }
    if st.metering.queue.depth() * 10 > st.metering.queue.capacity() * 9 {
        reasons.push("the usage queue is nearly full".into());
    }
    if st
        .metering
        .cluster
        .as_deref()
        .is_some_and(|c| !c.redis_up())
    {
        reasons.push("Redis cannot be reached: shared quotas are not renewed".into());
    }
    if reasons.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(serde_json::json!({ "ready": false, "reasons": reasons }))
    }
}

/// A route path whose other methods answer the JSON 405. The resource is
/// named by its path, which labels its metrics.
pub fn resource(path: &str, routes: Vec<Route>) -> actix_web::Resource {
    routes
        .into_iter()
        .fold(web::resource(path).name(path), |r, route| r.route(route))
        .default_service(web::to(error::method_not_allowed))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use route::{delete, get, patch, post, put};
    cfg.service(resource("/healthz", vec![get().to(healthz)]))
        .service(resource("/readyz", vec![get().to(readyz)]))
        .service(resource("/metrics", vec![get().to(metrics::metrics)]))
        .service(resource(
            "/api/openapi.json",
            vec![get().to(openapi::openapi_json)],
        ))
        .service(resource(
            "/api/v1/authorize",
            vec![post().to(tenant::authorize)],
        ))
        .service(resource("/api/v1/check", vec![post().to(tenant::check)]))
        .service(resource(
            "/api/v1/forward-auth",
            vec![web::route().to(forward_auth::forward_auth)],
        ))
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
            "/api/admin/tenants/{id}/api-usage/export",
            vec![get().to(export::admin_export)],
        ))
        .service(resource(
            "/api/admin/anomalies",
            vec![get().to(analytics::admin_anomalies)],
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
            vec![delete().to(admin::revoke_key), patch().to(admin::patch_key)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/keys/{key_id}/rotate",
            vec![post().to(admin::rotate_key)],
        ))
        .service(resource(
            "/api/admin/plans/{id}/limits",
            vec![
                get().to(limits::get_plan_limits),
                put().to(limits::put_plan_limits),
            ],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/limits",
            vec![
                get().to(limits::get_tenant_limits),
                put().to(limits::put_tenant_limits),
            ],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/keys/{key_id}/limits",
            vec![
                get().to(limits::get_key_limits),
                put().to(limits::put_key_limits),
            ],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/import",
            vec![post().to(import::import)],
        ))
        .service(resource(
            "/api/admin/backup",
            vec![post().to(backup::backup)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/usage",
            vec![get().to(admin::tenant_usage)],
        ))
        .service(resource(
            "/api/admin/tenants/{id}/subscription",
            vec![get().to(admin::tenant_subscription)],
        ))
        .default_service(web::to(error::not_found));
    for (path, route) in crate::http::dashboard::pages() {
        cfg.service(resource(path, vec![route]));
    }
}

/// `listener` with TCP_NODELAY, which the connections it accepts inherit
/// (Linux copies it to each): every connection sends as soon as it
/// writes. A response written in pieces - a gateway stream relaying each
/// chunk as the upstream sends it - otherwise held each small write until
/// the client acknowledged the one before, which a client delaying its
/// acknowledgements does 40 ms later (scripts/gateway-load.sh: 42 ms added
/// to every streamed completion; tests/gateway_stream.rs). Set once on the
/// listener, it costs no call per connection.
fn nodelay(listener: TcpListener) -> TcpListener {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, an option of the size it takes.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set TCP_NODELAY on the listener");
    }
    listener
}

/// Binds the routes to an already-bound listener (tests pass `127.0.0.1:0`).
/// The server stops gracefully on SIGTERM/SIGINT or through its handle.
pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: usize,
) -> std::io::Result<Server> {
    let proxies = state.proxies.clone();
    let mut http = HttpServer::new(move || {
        let proxies = proxies.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let id = RequestId::of(req.headers());
                let span = tracing::info_span!(
                    "request",
                    request_id = %id,
                    method = %req.method(),
                    path = req.path()
                );
                let fut = span.in_scope(|| srv.call(req));
                async move {
                    let mut res = fut.await?;
                    // Borrowed, not cloned: an `Arc` count shared by every
                    // worker would be one more contended cache line.
                    let ctx = res.request().extensions().get::<Rc<TenantCtx>>().cloned();
                    let decision = {
                        let req = res.request();
                        ctx.as_ref().and_then(|ctx| {
                            ctx.decision().or_else(|| {
                                req.app_data::<web::Data<AppState>>()
                                    .map(|st| ctx.tenant.snapshot(st.metering.clock.now_nanos()))
                            })
                        })
                    };
                    // The rate-limit headers and the request id, from one
                    // buffer; with a decision, room for all seven at once
                    // (one growth of the map, not two).
                    let success = res.status().is_success();
                    if decision.is_some() {
                        res.headers_mut().reserve(7);
                    }
                    {
                        let views = ctx.as_ref().map(|c| c.views());
                        let views = views.as_deref().map_or(&[][..], |v| &v[..]);
                        headers::apply(
                            res.headers_mut(),
                            decision.as_ref(),
                            views,
                            success,
                            id.as_str(),
                        );
                    }
                    let elapsed = started.elapsed();
                    let route = res.request().match_name().unwrap_or("(unmatched)");
                    if let Some(st) = res.request().app_data::<web::Data<AppState>>() {
                        st.metering.metrics.request(route, elapsed.as_secs_f64());
                    }
                    let status = res.status().as_u16();
                    let took_us = elapsed.as_micros() as u64;
                    // A 503 is back-pressure (a full queue, a failing store
                    // already logged once), not a failure: a flood of them
                    // under load must not flood the log too.
                    if status >= 500 && status != 503 {
                        tracing::warn!(target: "tollgate::access", status, route, took_us, "request failed");
                    } else {
                        tracing::debug!(target: "tollgate::access", status, route, took_us, "request");
                    }
                    Ok(res)
                }
                .instrument(span)
            })
            .configure(|cfg| {
                for p in &proxies {
                    cfg.service(gateway::ProxyTarget::resource(p.clone()));
                }
                routes(cfg)
            })
    })
    .listen(nodelay(listener))?
    // Signals are `app.rs`'s: actix-web stops at once on SIGINT, dropping
    // the requests in flight, where Tollgate stops gracefully on both.
    .disable_signals()
    .shutdown_timeout(10);
    if workers > 0 {
        http = http.workers(workers);
    }
    Ok(http.run())
}
