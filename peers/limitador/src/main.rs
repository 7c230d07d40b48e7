//! Tollgate's shared decision against Kuadrant's limitador on the same
//! Redis, same threads, same run (issue 15): limitador's
//! `AsyncRedisStorage` (reads, decides, then increments in Redis on every
//! call) and `CachedRedisStorage` (local counters flushed to Redis every
//! second), against Tollgate's leases (`tollgate::cluster`).
//!
//! 1. Throughput: one limiter, `TENANTS` tenants with one limit each, far
//!    from it, `THREADS` tasks deciding `DECISIONS` in all: decisions/s and
//!    Redis commands per 1,000 decisions (`INFO stats`).
//! 2. A race: three limiter instances (each its own connection and, for
//!    Tollgate, its own lease state), 64 tasks spread over them, one tenant
//!    with a monthly limit of 500, 1,500 requests: how many were allowed
//!    (over 500 is overshoot), then - after a second and a half of quiet,
//!    when idle leases are back - what a trickle could still take (rounds
//!    of 100 until one gets nothing).
//!
//! Run: `scripts/peer-limitador.sh` (starts its own redis-server).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use limitador::limit::{Context, Expression, Limit, Predicate};
use limitador::storage::redis::{AsyncRedisStorage, CachedRedisStorageBuilder};
use limitador::AsyncRateLimiter;
use tollgate::cluster::{Cluster, TopUp};
use tollgate::config::ClusterConfig;
use tollgate::model::{Plan, Tenant, TenantStatus};
use tollgate::quota::{Outcome, TenantState};
use tollgate::registry::Registry;
use tollgate::store::{SledStore, Store};

const MONTH_S: u64 = 30 * 86_400;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let r = Redis {
            port,
            child,
            _dir: dir,
        };
        while r.cli(&["PING"]) != "PONG" {
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Commands Redis has processed since it started.
    fn commands(&self) -> u64 {
        self.cli(&["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One limiter instance: decides `cost` units for `tenant`.
enum Limiter {
    Limitador(AsyncRateLimiter),
    Tollgate {
        cluster: Arc<Cluster>,
        registry: Arc<Registry>,
        _dir: tempfile::TempDir,
    },
}

impl Limiter {
    async fn limitador(url: &str, cached: bool, max: u64) -> Limiter {
        let rl = if cached {
            let s = CachedRedisStorageBuilder::new(url)
                .flushing_period(Duration::from_secs(1))
                .build()
                .await
                .unwrap();
            AsyncRateLimiter::new_with_storage(Box::new(s))
        } else {
            AsyncRateLimiter::new_with_storage(Box::new(AsyncRedisStorage::new(url).await.unwrap()))
        };
        let tenant: Expression = "tenant".try_into().unwrap();
        rl.add_limit(Limit::new(
            "ns",
            max,
            MONTH_S,
            Vec::<Predicate>::new(),
            vec![tenant],
        ));
        Limiter::Limitador(rl)
    }

    /// A Tollgate instance: its own store and registry (the same tenants),
    /// quotas shared through `url`. Made off any runtime (its cluster has
    /// one of its own, which must not be dropped inside another).
    fn tollgate(url: &str, name: &str, tenants: usize, max: u64) -> Limiter {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 100, 16 << 20).unwrap());
        let config = ClusterConfig {
            redis_url: url.to_string(),
            instance_id: name.to_string(),
            ..ClusterConfig::default()
        };
        let clock: Arc<dyn tollgate::clock::Clock> = Arc::new(tollgate::clock::SystemClock);
        let cluster = Arc::new(Cluster::new(&config, clock).unwrap());
        let now = chrono::Utc::now();
        let plan = Plan {
            id: "p".into(),
            name: "P".into(),
            monthly_calls: Some(max),
            monthly_tokens: None,
            rate_limit: None,
            price_usd_monthly: 0.0,
            ingest_rate: None,
        };
        let registry =
            Arc::new(Registry::load_counting(store, &[plan], now, cluster.counting()).unwrap());
        for i in 0..tenants {
            let id = format!("t{i}");
            registry
                .create_tenant(
                    Tenant {
                        id: id.clone(),
                        name: id,
                        plan_id: "p".into(),
                        status: TenantStatus::Active,
                        created_at: now,
                    },
                    now,
                )
                .unwrap();
        }
        cluster.start(registry.clone());
        Limiter::Tollgate {
            cluster,
            registry,
            _dir: dir,
        }
    }

    async fn allow(&self, tenant: &str, tenant_state: Option<&Arc<TenantState>>) -> bool {
        match self {
            Limiter::Limitador(rl) => {
                let mut values = HashMap::new();
                values.insert("tenant".to_string(), tenant.to_string());
                let ctx: Context = values.into();
                !rl.check_rate_limited_and_update(&"ns".into(), &ctx, 1)
                    .await
                    .unwrap()
                    .limited
            }
            Limiter::Tollgate { cluster, .. } => {
                let t = tenant_state.unwrap();
                let now = tollgate::clock::Clock::now_nanos(&tollgate::clock::SystemClock);
                let d = t.acquire(1, now);
                if d.outcome != Outcome::QuotaExceeded {
                    return d.allowed();
                }
                // As the HTTP path does: a spent lease asks Redis itself.
                cluster.top_up(t, 1).await == TopUp::Granted && t.acquire(1, now).allowed()
            }
        }
    }

    fn state(&self, tenant: &str) -> Option<Arc<TenantState>> {
        match self {
            Limiter::Tollgate { registry, .. } => registry.tenant_state(tenant),
            Limiter::Limitador(_) => None,
        }
    }

    /// Tollgate's calls to Redis so far (a pipeline is one).
    fn round_trips(&self) -> Option<u64> {
        match self {
            Limiter::Tollgate { cluster, .. } => {
                Some(cluster.stats().round_trips.load(Ordering::Relaxed))
            }
            Limiter::Limitador(_) => None,
        }
    }

    fn stop(&self) {
        if let Limiter::Tollgate { cluster, .. } = self {
            cluster.stop();
        }
    }
}

/// `tasks` tasks deciding `total` decisions over `instances`, each task
/// on its own instance (`task % n`) and tenants round robin: the units
/// allowed and the seconds taken.
fn drive(
    rt: &tokio::runtime::Runtime,
    instances: &Arc<Vec<Limiter>>,
    tenants: usize,
    tasks: usize,
    total: u64,
) -> (u64, f64) {
    let allowed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let mut joins = Vec::new();
        for task in 0..tasks {
            let (allowed, sent, instances) = (allowed.clone(), sent.clone(), instances.clone());
            joins.push(tokio::spawn(async move {
                let limiter = &instances[task % instances.len()];
                let names: Vec<String> = (0..tenants).map(|i| format!("t{i}")).collect();
                let states: Vec<Option<Arc<TenantState>>> =
                    names.iter().map(|n| limiter.state(n)).collect();
                loop {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    let i = (n as usize + task) % tenants;
                    if limiter.allow(&names[i], states[i].as_ref()).await {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
    });
    (allowed.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

fn main() {
    let threads = env("THREADS", 2) as usize;
    let decisions = env("DECISIONS", 200_000);
    let tenants = env("TENANTS", 100) as usize;
    let redis = Redis::start();
    let url = redis.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "machine: {} cores; {threads} deciding threads; {tenants} tenants; {decisions} decisions; Redis {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        redis.cli(&["INFO", "server"]).lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?")
    );
    // ONLY=tollgate (or limitador) runs one side, e.g. for a longer run.
    let only = std::env::var("ONLY").unwrap_or_default();
    let systems: Vec<&str> = ["limitador AsyncRedisStorage", "limitador CachedRedisStorage", "tollgate leases"]
        .into_iter()
        .filter(|n| n.contains(only.as_str()))
        .collect();
    println!("\n1. far from the limit: decisions/s, Redis commands per 1,000 decisions");
    for &name in &systems {
        redis.cli(&["FLUSHALL"]);
        let limiter = match name {
            "tollgate leases" => Limiter::tollgate(&url, "bench-0", tenants, 1 << 40),
            n => rt.block_on(Limiter::limitador(&url, n.contains("Cached"), 1 << 40)),
        };
        let before = redis.commands();
        let instances = Arc::new(vec![limiter]);
        let (allowed, secs) = drive(&rt, &instances, tenants, threads * 16, decisions);
        let commands = redis.commands() - before;
        let trips = instances[0]
            .round_trips()
            .map_or(String::new(), |t| format!(", {:.2} round trips/1000", 1000.0 * t as f64 / decisions as f64));
        println!(
            "{name:30} {:>10.0} decisions/s  {:>8.2} commands/1000{trips}  ({allowed} allowed in {secs:.2} s)",
            decisions as f64 / secs,
            1000.0 * commands as f64 / decisions as f64
        );
        instances[0].stop();
    }
    println!("\n2. three limiter instances, 64 tasks, a limit of 500, 1,500 requests");
    for &name in &systems {
        redis.cli(&["FLUSHALL"]);
        let instances: Arc<Vec<Limiter>> = Arc::new((0..3)
            .map(|i| match name {
                "tollgate leases" => Limiter::tollgate(&url, &format!("race-{i}"), 1, 500),
                n => rt.block_on(Limiter::limitador(&url, n.contains("Cached"), 500)),
            })
            .collect());
        let (raced, secs) = drive(&rt, &instances, 1, 64, 1500);
        // Quiet: limitador's cache flushes, Tollgate's idle leases go back;
        // then a trickle round the instances until a round gets nothing.
        std::thread::sleep(Duration::from_millis(1500));
        let mut more = 0;
        loop {
            let (got, _) = drive(&rt, &instances, 1, 3, 100);
            more += got;
            if got == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1200));
        }
        println!(
            "{name:30} allowed {raced} of 500 in the race ({:+} against the limit, {:.2} s); \
             after a quiet 1.5 s, {more} more: {} in all",
            raced as i64 - 500,
            secs,
            raced + more
        );
        for l in instances.iter() {
            l.stop();
        }
    }
}
