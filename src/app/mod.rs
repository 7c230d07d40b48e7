//! Wiring: open the store, load the registry, start the flusher, serve, and
//! on stop drain everything to disk.

mod secrets;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use crate::alerts::{self, Deliveries};
use crate::auth::AdminToken;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::EngineKind;
use crate::config::{Config, ConfigError};
use crate::grpc::GrpcServer;
use crate::http::api::chat::ChatBackend;
use crate::http::gateway::ProxyTarget;
use crate::http::{self, AppState};
use crate::metering::Metering;
use crate::pricing::{PriceError, PriceTable};
use crate::quota::TenantState;
use crate::registry::follow::{self, Follower};
use crate::registry::{Registry, RegistryError};
use crate::store::postgres::{self as pg, PgOptions};
use crate::store::shared::Shared;
use crate::store::{SledOptions, SledStore, Store, StoreError};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::stats::Stats;
use crate::usage::flusher::{BatchHook, FlushSchedule, UsageFlusher};
use crate::usage::queue::{usage_queue, UsageQueue};
use crate::usage::UsageWatch;

use self::secrets::Secrets;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot open the store in {dir}: {source}")]
    OpenStore { dir: String, source: StoreError },
    #[error("cannot open the PostgreSQL store at {url}: {source}")]
    OpenDatabase { url: String, source: StoreError },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Prices(#[from] PriceError),
    /// A setting that needs a secret from the environment.
    #[error("config: {0}")]
    Secret(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A command that cannot do what it was asked, saying why.
    #[error("{0}")]
    Refused(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Creates the data directory, or makes it private (a walk of its files:
/// done once per start).
fn private_data_dir(config: &Config) -> Result<(), StartError> {
    crate::files::private_dir(&config.data_dir).map_err(io(format!(
        "cannot create data dir {}",
        config.data_dir.display()
    )))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let context = context.into();
    move |source| StartError::Io { context, source }
}

/// A started Tollgate, not yet serving.
pub struct Tollgate {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub stats: Arc<Stats>,
    pub clock: Arc<dyn Clock>,
    pub queue: UsageQueue,
    pub prices: Arc<PriceTable>,
    /// Where the admin token was written, when it was not given.
    pub(crate) admin_token_path: Option<PathBuf>,
    admin: Option<AdminToken>,
    flusher: UsageFlusher,
    deliveries: Option<Deliveries>,
    /// What watches usage the flusher does not write (the alerts).
    watch: Option<UsageWatch>,
    /// When keys were last used, noted as records are written.
    key_uses: Arc<crate::usage::key_use::KeyUses>,
    proxies: Vec<Arc<ProxyTarget>>,
    metrics_token: Option<AdminToken>,
    /// The chat upstream's key, handed to the chat client once.
    chat_key: Option<String>,
    /// Follows the other instances on a shared store.
    follower: Option<Follower>,
    /// Bound at open (`[grpc] bind`), served by `serve`.
    grpc_listener: Option<TcpListener>,
    geo: Option<Arc<crate::geo::GeoIp>>,
    /// Shared enforcement (`[cluster] redis_url`).
    pub cluster: Option<Arc<Cluster>>,
}

impl Tollgate {
    /// Opens the data directory and loads everything; `admin_token` is
    /// `TOLLGATE_ADMIN_TOKEN`, if set.
    pub fn open(
        config: Config,
        admin_token: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Tollgate, StartError> {
        private_data_dir(&config)?;
        if config.store.engine == EngineKind::Postgres {
            let options = PgOptions {
                url: config.store.postgres_url.clone(),
                instance: instance_name(&config)?,
                pool_size: config.store.postgres_pool as usize,
                call_timeout: Duration::from_millis(config.store.postgres_timeout_ms),
                spool_dir: Some(config.data_dir.join("spool")),
                spool_max_bytes: config.store.spool_max_mb << 20,
            };
            let (store, engine) =
                pg::open(&options).map_err(|source| StartError::OpenDatabase {
                    url: pg::redacted(&options.url),
                    source,
                })?;
            tracing::info!(
                database = %pg::redacted(&options.url),
                instance = %options.instance,
                "store: PostgreSQL"
            );
            return Tollgate::assemble(config, Arc::new(store), Some(engine), admin_token, clock);
        }
        let db_dir = config.data_dir.join("db");
        let options = SledOptions {
            flush_every_ms: config.flush.interval_ms,
            cache_bytes: config.store.cache_mb * 1024 * 1024,
            flush_deadline: Duration::from_millis(config.store.flush_timeout_ms),
            min_free_bytes: config.store.min_free_mb * 1024 * 1024,
            recover: config.store.recover,
        };
        let store = match SledStore::open_with(&db_dir, options.clone()) {
            // sled cannot read what is left: with --recover, the damaged
            // files are set aside (kept for a specialist) and the store
            // starts empty - everything is lost, and the log says so.
            Err(e) if config.store.recover && !matches!(e, StoreError::InUse(_)) => {
                let aside = db_dir.with_file_name(format!(
                    "db.damaged-{}",
                    crate::telemetry::stats::wall_ms() / 1000
                ));
                tracing::error!(
                    error = %e,
                    moved_to = %aside.display(),
                    "store unreadable, started with --recover: its files are set aside and the \
                     store starts EMPTY - every plan, tenant, key and record is lost (restore \
                     the data directory from a backup to get them back)"
                );
                std::fs::rename(&db_dir, &aside).map_err(|io| StartError::OpenStore {
                    dir: db_dir.display().to_string(),
                    source: StoreError::Unavailable(format!(
                        "cannot set the damaged store aside: {io}"
                    )),
                })?;
                SledStore::open_with(&db_dir, options)
            }
            other => other,
        }
        .map_err(|source| StartError::OpenStore {
            dir: db_dir.display().to_string(),
            source,
        })?;
        Tollgate::assemble(config, Arc::new(store), None, admin_token, clock)
    }

    /// Like [`open`](Self::open), on a store the caller made (another engine,
    /// or a test's failing one). The data directory still holds the admin token.
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        admin_token: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Tollgate, StartError> {
        private_data_dir(&config)?;
        Tollgate::assemble(config, store, None, admin_token, clock)
    }

    /// Everything but the store, on a data directory already made private;
    /// `shared` when other instances may share the store.
    fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        shared: Option<Arc<dyn Shared>>,
        admin_token: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Result<Tollgate, StartError> {
        let started = std::time::Instant::now();
        // Read before the registry loads: no change falls between.
        let catalog_version = match &shared {
            Some(s) => s.catalog_version()?,
            None => 0,
        };
        let (admin, admin_token_path) = AdminToken::load_or_create(admin_token, &config.data_dir)
            .map_err(io("cannot use the admin token file"))?;
        let prices = Arc::new(if config.prices.is_empty() {
            PriceTable::builtin()
        } else {
            PriceTable::load(std::path::Path::new(&config.prices))?
        });
        let cluster = match config.cluster.redis_url.as_str() {
            "" => None,
            _ => Some(Arc::new(Cluster::new(&config.cluster, clock.clone())?)),
        };
        let counting = cluster.as_ref().map(|c| c.counting()).unwrap_or_default();
        let registry = Arc::new(Registry::load_counting(
            store.clone(),
            &config.default_plans()?,
            clock.now(),
            counting,
        )?);
        registry.set_max_subjects(config.limits.max_subjects_per_tenant);
        if let Some(c) = &cluster {
            c.start(registry.clone(), shared.clone());
            tracing::info!(
                redis = %crate::cluster::redacted(&config.cluster.redis_url),
                instance = %c.instance(),
                "cluster: monthly quotas shared through Redis"
            );
        }
        let stats = Arc::new(Stats::default());
        let follower = match shared {
            Some(shared) => {
                follow::heartbeat(shared.as_ref(), &stats);
                Some(
                    Follower::start(
                        registry.clone(),
                        shared,
                        catalog_version,
                        clock.clone(),
                        stats.clone(),
                    )
                    .map_err(io("cannot start the follower thread"))?,
                )
            }
            None => None,
        };
        stats.store_stall_ms.store(
            config.store.flush_timeout_ms,
            std::sync::atomic::Ordering::Relaxed,
        );
        let (queue, rx) = usage_queue(config.flush.queue_capacity, stats.clone());
        let Secrets {
            alert_targets: targets,
            mailer,
            proxies,
            metrics_token,
            chat_key,
        } = Secrets::read(&config, |name| std::env::var(name).ok()).map_err(StartError::Secret)?;
        let (hook, watch, deliveries): (Option<BatchHook>, Option<UsageWatch>, _) =
            if targets.is_empty() {
                (None, None, None)
            } else {
                let (alerts, deliveries) =
                    alerts::start(targets, mailer, store.clone(), stats.clone(), clock.clone())
                        .map_err(io("cannot start the webhook thread"))?;
                // The flusher's hook owns the alerts; the watch only reaches
                // them while it does: at the stop, the hook goes with the
                // flusher, the alerts with it, and the delivery thread,
                // whose channel they held, can end.
                let alerts = Arc::new(alerts);
                let weak = Arc::downgrade(&alerts);
                (
                    Some(Box::new(move |batch: &[_]| alerts.observe(batch))),
                    Some(Arc::new(move |t: &TenantState| {
                        if let Some(alerts) = weak.upgrade() {
                            alerts.observe_tenant(t);
                        }
                    })),
                    Some(deliveries),
                )
            };
        let geo = match config.geoip.mmdb.as_str() {
            "" => None,
            path => {
                let trusted: Vec<String> = config
                    .geoip
                    .trusted_proxies
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from)
                    .collect();
                let geo = crate::geo::GeoIp::open(Some(std::path::Path::new(path)), &trusted)
                    .map_err(StartError::Secret)?;
                tracing::info!(mmdb = %path, trusted_proxies = trusted.len(), "geoip: countries from client addresses");
                Some(Arc::new(geo))
            }
        };
        let grpc_listener = match config.grpc.bind.as_str() {
            "" => None,
            bind => Some(
                TcpListener::bind(bind).map_err(io(format!("cannot listen for gRPC on {bind}")))?,
            ),
        };
        // The flusher notes which keys made each batch, and keeps their
        // last use in the store once a minute.
        let key_uses = Arc::new(crate::usage::key_use::KeyUses::default());
        let hook: BatchHook = {
            let (uses, store, clock) = (key_uses.clone(), store.clone(), clock.clone());
            let mut alerts = hook;
            Box::new(move |batch: &[crate::usage::Queued]| {
                if let Some(alerts) = alerts.as_mut() {
                    alerts(batch);
                }
                uses.saw(batch.iter().map(|q| (&q.tenant.id, &q.record)));
                uses.write_due(store.as_ref(), clock.now_nanos().millis().0);
            })
        };
        let flusher = UsageFlusher::start(
            rx,
            store.clone(),
            FlushSchedule {
                interval: Duration::from_millis(config.flush.interval_ms),
                checkpoint: Duration::from_millis(config.flush.checkpoint_ms),
                raw_days: config.retention.raw_days,
                stop_timeout: Duration::from_millis(config.store.flush_timeout_ms) * 2,
            },
            clock.clone(),
            stats.clone(),
            Some(hook),
        )
        .map_err(io("cannot start the flusher thread"))?;
        tracing::info!(
            tenants = registry.tenant_count(),
            took_ms = started.elapsed().as_millis() as u64,
            data_dir = %config.data_dir.display(),
            "store loaded"
        );
        Ok(Tollgate {
            config,
            store,
            registry,
            stats,
            clock,
            queue,
            prices,
            admin_token_path,
            admin: Some(admin),
            flusher,
            deliveries,
            watch,
            key_uses,
            proxies,
            metrics_token,
            chat_key,
            follower,
            grpc_listener,
            geo,
            cluster,
        })
    }

    /// Where the gRPC services listen, when `[grpc] bind` is set.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.as_ref()?.local_addr().ok()
    }

    fn app_state(&mut self) -> web::Data<AppState> {
        let chat = &self.config.chat;
        let api_key = self.chat_key.take();
        let reservations = Arc::new(crate::quota::reservation::Book::default());
        let clock = self.clock.clone();
        if let Err(e) =
            crate::quota::reservation::Book::expire_every_second(&reservations, move || {
                clock.now_nanos().millis().0
            })
        {
            tracing::error!(error = %e, "cannot start the reservations' thread: unsettled ones wait for the next month");
        }
        let metering = Arc::new(Metering {
            registry: self.registry.clone(),
            queue: self.queue.clone(),
            clock: self.clock.clone(),
            prices: self.prices.clone(),
            stats: self.stats.clone(),
            metrics: Arc::new(Metrics::default()),
            cluster: self.cluster.clone(),
            in_flight_per_tenant: self.config.limits.in_flight_per_tenant,
            reservations,
            geo: self.geo.clone(),
            watch: self.watch.clone(),
            key_uses: self.key_uses.clone(),
        });
        web::Data::new(AppState {
            backups_dir: self.config.data_dir.join("backups"),
            exports: crate::http::wire::slots::Slots::new(
                "exports",
                ("too_many_exports", "exports_busy"),
                ("exports", "exports_per_tenant"),
                self.config.limits.exports,
                self.config.limits.exports_per_tenant,
            ),
            reports: crate::http::wire::slots::Slots::new(
                "reports",
                // No bound across the server (the blocking pool's own).
                ("too_many_reports", "reports_busy"),
                ("", "reports_per_tenant"),
                u32::MAX,
                self.config.limits.reports_per_tenant,
            ),
            metering,
            chat: ChatBackend::new(
                chat.upstream.as_ref(),
                api_key,
                Duration::from_millis(chat.timeout_ms),
            ),
            admin: self
                .admin
                .take()
                .unwrap_or_else(|| AdminToken::new(&crate::auth::generate_key())),
            max_body_bytes: self.config.max_body_bytes,
            body_timeout: Duration::from_millis(self.config.limits.body_timeout_ms),
            ingest_wait: Duration::from_millis(self.config.limits.ingest_wait_ms),
            raw_days: self.config.retention.raw_days,
            metrics_token: self.metrics_token.take(),
            default_model: chat.default_model.clone(),
            proxies: self.proxies.clone(),
        })
    }

    /// Serves on `listener` until SIGTERM/SIGINT (or the handle's stop), then
    /// drains the queue and flushes the store. Blocks the calling thread.
    pub fn serve(self, listener: TcpListener) -> Result<(), StartError> {
        self.serve_with(listener, |_| {})
    }

    /// Like [`serve`](Self::serve), handing the server's handle to `on_start`.
    pub(crate) fn serve_with(
        mut self,
        listener: TcpListener,
        on_start: impl FnOnce(actix_web::dev::ServerHandle),
    ) -> Result<(), StartError> {
        let state = self.app_state();
        let workers = self.config.workers;
        let grpc = match self.grpc_listener.take() {
            Some(listener) => {
                let threads = match workers {
                    0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                    n => n,
                };
                let edge = Arc::new(crate::grpc::Edge {
                    metering: state.metering.clone(),
                    max_message_bytes: self.config.max_body_bytes,
                    tenant_id: self.config.grpc.tenant_id,
                    peers: self.config.grpc.peers.clone(),
                });
                let server = GrpcServer::start(edge, listener, threads)
                    .map_err(io("cannot start the gRPC server"))?;
                tracing::info!(addr = %server.addr, "gRPC: Envoy rate-limit and ext_authz services");
                Some(server)
            }
            None => None,
        };
        let result = actix_web::rt::System::new().block_on(async move {
            let server = http::server(state, listener, workers)?;
            // The server's handler listens before `on_start`, which may
            // hand over from startup's (signals::Early).
            let signals = listen_for_stop();
            on_start(server.handle());
            actix_web::rt::spawn(stop_on_signal(server.handle(), signals));
            server.await
        });
        // Its calls in flight are answered and queued before the drain.
        if let Some(grpc) = grpc {
            grpc.stop();
        }
        // No decision is made after this: the leases go back to the fleet.
        if let Some(c) = &self.cluster {
            c.stop();
        }
        let unpersisted = self.stats.unpersisted();
        self.flusher.shutdown();
        let lost_at_stop = self.stats.unpersisted().saturating_sub(unpersisted);
        if let Some(d) = self.deliveries.as_mut() {
            d.join();
        }
        let store = self.store.clone();
        let deadline = Duration::from_millis(self.config.store.flush_timeout_ms);
        crate::store::within(deadline, move || store.flush()).unwrap_or_else(|| {
            Err(StoreError::Unavailable(format!(
                "the store did not flush within {} ms; the last writes may be lost",
                deadline.as_millis()
            )))
        })?;
        if let Some(f) = self.follower.as_mut() {
            f.shutdown();
        }
        if lost_at_stop == 0 {
            tracing::info!("stopped; every queued record is stored");
        } else {
            tracing::error!(
                records = lost_at_stop,
                "stopped; queued records could not be stored (the store failed: see above)"
            );
        }
        result.map_err(io("the HTTP server failed"))
    }
}

/// This instance's name on a shared store: `[store] instance`, or the one
/// kept in the data directory (made up on first start). Stable across
/// restarts, so the store recognises a write sent again after a crash.
fn instance_name(config: &Config) -> Result<String, StartError> {
    if !config.store.instance.is_empty() {
        return Ok(config.store.instance.clone());
    }
    let path = config.data_dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_string()),
        _ => {
            let name = crate::auth::random_id("tg-");
            // The data directory is private (umask 077): the file is too.
            std::fs::write(&path, &name).map_err(io(format!("cannot write {}", path.display())))?;
            Ok(name)
        }
    }
}

type StopSignals = (
    actix_web::rt::signal::unix::Signal,
    actix_web::rt::signal::unix::Signal,
);

/// SIGINT and SIGTERM, listened for from now on (inside the runtime).
fn listen_for_stop() -> Option<StopSignals> {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => Some((int, term)),
        _ => {
            tracing::error!("cannot listen for SIGINT and SIGTERM; stop with the handle only");
            None
        }
    }
}

/// Stops the server gracefully on SIGINT (Ctrl-C) as on SIGTERM: it stops
/// accepting, answers the requests in flight (up to 10 s), then returns.
async fn stop_on_signal(server: actix_web::dev::ServerHandle, signals: Option<StopSignals>) {
    let Some((mut int, mut term)) = signals else {
        return;
    };
    let which = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(
        signal = which,
        "stopping gracefully: requests in flight are answered, then the queue is written"
    );
    server.stop(true).await;
}

/// A server running on its own thread (tests, embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The gRPC services' address, when `[grpc] bind` is set.
    pub grpc_addr: Option<SocketAddr>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), StartError>>>,
}

impl RunningServer {
    /// Opens `config`'s data dir and serves on `127.0.0.1:0`.
    pub fn start(
        config: Config,
        admin_token: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningServer, StartError> {
        RunningServer::serve(Tollgate::open(config, Some(admin_token), clock)?)
    }

    /// Serves an opened Tollgate on `127.0.0.1:0`.
    pub fn serve(tollgate: Tollgate) -> Result<RunningServer, StartError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("cannot bind"))?;
        let addr = listener.local_addr().map_err(io("no local address"))?;
        let grpc_addr = tollgate.grpc_addr();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tollgate-server".into())
            .spawn(move || {
                tollgate.serve_with(listener, move |h| {
                    let _ = tx.send(h);
                })
            })
            .map_err(io("cannot spawn the server thread"))?;
        let handle = rx.recv().map_err(|_| StartError::Io {
            context: "the server did not start".into(),
            source: std::io::Error::other("server thread ended"),
        })?;
        Ok(RunningServer {
            addr,
            grpc_addr,
            handle,
            thread: Some(thread),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful stop: finishes requests in flight, drains and flushes.
    pub fn stop(mut self) -> Result<(), StartError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), StartError> {
        if let Some(thread) = self.thread.take() {
            // The stop command is sent when `stop` is called; the thread's
            // end is what we wait for.
            drop(self.handle.stop(true));
            return thread.join().unwrap_or(Ok(()));
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
