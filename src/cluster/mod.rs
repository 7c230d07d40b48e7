//! Enforcement shared by several instances through Redis (`[cluster]
//! redis_url`): the monthly calls of every tenant, exact across the fleet.
//!
//! Redis holds each tenant-period's allocation and changes it only through
//! one Lua script (`script.rs`) that never grants past the limit. Each
//! instance decides from leases - units granted to it alone, spent with
//! the same atomics as one instance's counters (`quota/lease.rs`) - so a
//! tenant far from its limit is decided in memory. The sync loop
//! (`sync.rs`) reports what was spent, refills leases sized to the
//! tenant's rate, and gives back what sits idle or what another instance
//! needs; near the end of the quota, leases shrink to one unit and a
//! request that finds its lease empty asks Redis itself ([`Cluster::top_up`]).
//!
//! Redis down or slow: every call has a short timeout; a failed call fails
//! its own request, and three in a row open a breaker for a second
//! (`breaker.rs`). Leases already held keep being spent (and,
//! with `on_redis_down = "local"`, their reserves, allocated beforehand);
//! past them a decision is refused with `cluster_unavailable`. Nothing
//! ever falls back to unshared counters.

mod breaker;
mod limits;
mod script;
#[cfg(test)]
mod sim;
mod sync;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::ConnectionManager;

use crate::clock::{Clock, Nanos};
use crate::config::ClusterConfig;
use crate::quota::counters::Counting;
use crate::quota::lease::{LeaseHub, Measure, Shared};
use crate::quota::period::{Period, NANOS_PER_SEC};
use crate::quota::TenantState;
use crate::registry::Registry;
use crate::store::shared::{Shared as SharedStore, Shares};
use crate::store::StoreError;

pub use self::limits::Answer as LimitsAnswer;
pub use self::script::key;
use self::script::{Init, Reply};

/// The fewest requests' worth a top-up asks for: a tenant's first lease
/// on an instance, before the sync loop has seen its rate.
const FIRST_LEASE: u64 = 16;

/// A hash another instance is making is called for again this often, at
/// most this many times in all (then the call fails as Redis down would):
/// longer than a mark stays fresh (the hold), so a slow maker is waited for.
const MAKE_WAIT: Duration = Duration::from_millis(10);
const MAKE_TRIES: usize = 256;

/// Counts for `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Calls to Redis (a pipeline is one).
    pub round_trips: AtomicU64,
    /// Calls that failed or timed out.
    pub errors: AtomicU64,
    /// Units granted to this instance, and given back by it.
    pub granted: AtomicU64,
    pub(crate) given_back: AtomicU64,
    /// Requests that found their lease empty and asked Redis themselves.
    pub(crate) top_ups: AtomicU64,
    /// Decisions refused because Redis could not be reached.
    pub(crate) denied_down: AtomicU64,
    /// Tenants the sync loop follows (holding a lease or reporting).
    pub tenants: AtomicU64,
    /// Units this instance holds in leases now.
    pub held: AtomicU64,
    /// Live instances sharing Redis (the burst limits are divided among them).
    pub(crate) members: AtomicU64,
}

/// `/healthz`'s `cluster`: how this instance shares enforcement now.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterHealth {
    /// This instance's name in Redis (`[cluster] instance_id`).
    pub instance: String,
    /// `up`, or `down` since a call failed (retried every sync).
    pub redis: &'static str,
    /// Every tenant's quota: `shared` (leases from Redis), or, while Redis
    /// is down, `leases-then-deny` (the leases held are spent, then
    /// decisions are refused with `cluster_unavailable`) or, with
    /// `on_redis_down = "local"`, `leases-then-reserve` (then each tenant's
    /// reserve: this instance's share, allocated in Redis beforehand).
    pub mode: &'static str,
    /// `[cluster] on_redis_down`.
    pub(crate) on_redis_down: &'static str,
    /// Live instances sharing Redis, this one included: each enforces
    /// its share of every burst limit (rate and burst divided by this).
    pub instances: u64,
    /// Tenants whose leases the sync loop follows, and the units they hold.
    pub(crate) tenants_with_leases: u64,
    pub(crate) units_held: u64,
    /// Calls to Redis since start (a pipeline is one), and the failed ones.
    pub round_trips: u64,
    pub errors: u64,
    /// Requests that found their lease empty and asked Redis themselves.
    pub(crate) top_ups: u64,
    /// Decisions refused because Redis could not be reached.
    pub(crate) denied_redis_down: u64,
}

/// What a request's own call to Redis brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopUp {
    /// Units were granted into the lease: decide again.
    Granted,
    /// Nothing is left to grant (for now: other leases may come back).
    Dry,
    /// Redis cannot be reached.
    Down,
}

pub struct Cluster {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Runtime,
    sync: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    instance: String,
    /// The instance's name in Redis's fields: its name and a number of
    /// this process.
    member: String,
    hub: Arc<LeaseHub>,
    conn: ConnectionManager,
    script: redis::Script,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    sync_every: Duration,
    lease_ms: u64,
    /// `on_redis_down = "local"`: leases keep a reserve, spent while Redis
    /// is down.
    local: bool,
    /// When calls stop for a while (ms since `epoch`).
    breaker: breaker::Breaker,
    /// Whether Redis answered the last call.
    up: AtomicBool,
    epoch: Instant,
    stopping: AtomicBool,
    stats: ClusterStats,
    /// Set when the sync loop starts (the store's persisted totals).
    registry: std::sync::OnceLock<Arc<Registry>>,
    /// The store the instances share, when they do: its shares of a
    /// period say what each process's records brought to a rebuilt hash.
    shared_store: std::sync::OnceLock<Arc<dyn SharedStore>>,
    /// How long a hash Redis lost grants nothing while the live instances
    /// join: long enough for each one holding a lease to visit it (every
    /// second) and for a call in flight to time out.
    hold: Duration,
    /// The limits of SPEC §12 (`limits.rs`): the scripts that decide and
    /// change them, and the changes waiting to go over.
    limits_take: redis::Script,
    limits_adjust: redis::Script,
    limits_undo: redis::Script,
    limits_mark: redis::Script,
    limits_put: redis::Script,
    limits: Mutex<limits::Limits>,
    limit_wake: tokio::sync::Notify,
}

#[derive(Debug, thiserror::Error)]
#[error("[cluster] redis_url: {0}")]
pub struct ClusterError(String);

/// `url` without its password, for logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// This instance's default name: the host name and the process id.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "tollgate".into()
    } else {
        host
    };
    format!("{host}:{}", std::process::id())
}

impl Cluster {
    /// Connects (lazily: an unreachable Redis at start-up is an outage,
    /// not a failed start) with `config`.
    pub fn new(config: &ClusterConfig, clock: Arc<dyn Clock>) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| ClusterError(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            // Two: a request's top-up is not queued behind the sync
            // loop's pipeline on a busy host.
            .worker_threads(2)
            .thread_name("tollgate-cluster")
            .enable_all()
            .build()
            .map_err(|e| ClusterError(format!("cannot start the cluster runtime: {e}")))?;
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let conn = {
            let _guard = runtime.enter();
            let cfg = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_lazy_with_config(client, cfg)
                .map_err(|e| ClusterError(e.to_string()))?
        };
        let instance = match config.instance_id.as_str() {
            "" => default_instance(),
            id => id.to_string(),
        };
        Ok(Cluster {
            inner: Arc::new(Inner {
                member: format!("{instance}#{:06x}", rand::random::<u32>() & 0xff_ffff),
                instance,
                hub: Arc::new(LeaseHub::default()),
                conn,
                script: script::sync_script(),
                clock,
                timeout,
                sync_every: Duration::from_millis(config.sync_ms),
                lease_ms: config.lease_ms,
                local: config.on_redis_down == crate::config::OnRedisDown::Local,
                breaker: breaker::Breaker::default(),
                up: AtomicBool::new(true),
                epoch: Instant::now(),
                stopping: AtomicBool::new(false),
                stats: ClusterStats::default(),
                registry: std::sync::OnceLock::new(),
                shared_store: std::sync::OnceLock::new(),
                hold: sync::REFRESH + Duration::from_millis(config.sync_ms) * 2 + timeout * 2,
                limits_take: limits::take_script(),
                limits_adjust: limits::adjust_script(),
                limits_undo: limits::undo_script(),
                limits_mark: limits::mark_script(),
                limits_put: limits::put_script(),
                limits: Mutex::new(limits::Limits::default()),
                limit_wake: tokio::sync::Notify::new(),
            }),
            runtime,
            sync: Mutex::new(None),
        })
    }

    /// How the registry counts: through this cluster's leases.
    pub fn counting(&self) -> Counting {
        let link = limits::Link {
            inner: self.inner.clone(),
        };
        Counting::Shared(self.inner.hub.clone(), Some(Arc::new(link)))
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.inner.stats
    }

    /// What `/healthz` says of the cluster.
    pub fn health(&self) -> ClusterHealth {
        let s = &self.inner.stats;
        let up = self.redis_up();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterHealth {
            instance: self.inner.instance.clone(),
            redis: if up { "up" } else { "down" },
            mode: match (up, self.inner.local) {
                (true, _) => "shared",
                (false, false) => "leases-then-deny",
                (false, true) => "leases-then-reserve",
            },
            on_redis_down: if self.inner.local { "local" } else { "deny" },
            instances: n(&s.members),
            tenants_with_leases: n(&s.tenants),
            units_held: n(&s.held),
            round_trips: n(&s.round_trips),
            errors: n(&s.errors),
            top_ups: n(&s.top_ups),
            denied_redis_down: n(&s.denied_down),
        }
    }

    /// Whether Redis answered the last call.
    /// Whether Redis counts as unreachable now (its breaker is open): a
    /// lease that runs out is not topped up, and the request is refused.
    pub fn down(&self) -> bool {
        self.inner.is_down()
    }

    pub(crate) fn redis_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Starts the sync loop over `registry`'s tenants; `shared` is the
    /// store the instances share (when they do), told this process's name
    /// so that its writes count under it.
    pub fn start(&self, registry: Arc<Registry>, shared: Option<Arc<dyn SharedStore>>) {
        let _ = self.inner.registry.set(registry.clone());
        if let Some(shared) = shared {
            shared.set_process(&self.inner.member);
            let _ = self.inner.shared_store.set(shared);
        }
        self.runtime.spawn(limits::run(self.inner.clone()));
        let inner = self.inner.clone();
        let handle = self.runtime.spawn(sync::run(inner, registry));
        *self.sync.lock() = Some(handle);
    }

    /// Asks Redis for `cost` units for a request that found `tenant`'s
    /// lease empty. Awaited on the request's own runtime (actix's, or the
    /// gRPC server's), run on the cluster's: the connection, and any
    /// reconnection, belong to the cluster's runtime alone, which lives
    /// until the leases have gone back at a stop.
    pub async fn top_up(&self, tenant: &Arc<TenantState>, m: Measure, cost: u64) -> TopUp {
        let inner = &self.inner;
        let Some(shared) = tenant.shared() else {
            return TopUp::Dry;
        };
        let lease = shared.lease(m);
        let now = inner.clock.now_nanos().0;
        if !lease.may_top_up(Nanos(now)) {
            return TopUp::Dry;
        }
        if inner.is_down() {
            inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
            return TopUp::Down;
        }
        inner.stats.top_ups.fetch_add(1, Ordering::Relaxed);
        let period = Period::containing_nanos(Nanos(now));
        // The request's units at least; far from the limit, a lease's worth
        // (the script caps a grant at a share of what remains, so near the
        // end this is the request's cost alone).
        // (A first lease is worth `FIRST_LEASE` such requests: for tokens,
        // of the request's reservation.)
        let first = match m {
            Measure::Calls => FIRST_LEASE,
            Measure::Tokens => FIRST_LEASE.saturating_mul(cost),
        };
        let want = cost.max(2 * lease.low()).max(first);
        let ask = inner.ask(tenant, shared, m, period, want, cost);
        // The sync loop follows the tenant from now on (and gives back
        // what it does not spend).
        shared.ask();
        let (on, t) = (self.inner.clone(), tenant.clone());
        let call = self
            .runtime
            .spawn(async move { on.exchange(&t, m, ask, period, now).await });
        let answer = call.await.ok().flatten();
        match answer {
            Some(a) if a.holding => {
                inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
                TopUp::Down
            }
            Some(a) if a.granted > 0 => TopUp::Granted,
            Some(_) => {
                lease.dry(Nanos(now + inner.sync_every.as_nanos() as i64));
                TopUp::Dry
            }
            None => {
                inner.stats.denied_down.fetch_add(1, Ordering::Relaxed);
                TopUp::Down
            }
        }
    }

    /// The fleet's calls and tokens of `tenant` this period, as one Redis
    /// read makes them the same on every instance: of each measure, the
    /// allocation less what every instance holds unspent (a killed one's
    /// lease included: withheld, not used) - with what this instance spent
    /// and has not reported yet. Another instance's spending shows once it
    /// reports it (within `[cluster] lease_ms` of the spend). Tokens
    /// reserved by requests in flight count as used until settled.
    /// `None` when Redis cannot answer or has no hash for the period (the
    /// caller falls back on this instance's own view).
    pub(crate) async fn fleet_usage(&self, tenant: &Arc<TenantState>) -> Option<(u64, u64)> {
        let shared = tenant.shared()?;
        let now = self.inner.clock.now_nanos().0;
        let period = Period::containing_nanos(Nanos(now));
        if self.inner.is_down() {
            return None;
        }
        let mut pipe = redis::pipe();
        for m in Measure::ALL {
            pipe.hgetall(script::key(&tenant.id, period, m));
        }
        let mut conn = self.inner.conn.clone();
        let timeout = self.inner.timeout;
        type Fields = std::collections::HashMap<String, i64>;
        let read = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, pipe.query_async::<(Fields, Fields)>(&mut conn)).await
        });
        let (calls, tokens) = match read.await {
            Ok(Ok(Ok(both))) => both,
            _ => return None,
        };
        let used = |fields: &Fields, lease: &crate::quota::lease::Lease| -> Option<u64> {
            let alloc = *fields.get("alloc")?;
            let field = |name: &str| fields.get(name).copied().unwrap_or(0);
            let held: i64 = fields
                .keys()
                .filter_map(|k| k.strip_prefix("g:"))
                .map(|m| {
                    (field(&format!("g:{m}")) - field(&format!("s:{m}")) - field(&format!("b:{m}")))
                        .max(0)
                })
                .sum();
            let acked = lease.acked_totals(period);
            let now_t = lease.totals(period);
            let unreported = (now_t.spent + now_t.over).saturating_sub(acked.spent + acked.over);
            Some((alloc - held).max(0) as u64 + unreported)
        };
        Some((used(&calls, &shared.calls)?, used(&tokens, &shared.tokens)?))
    }

    /// Stops the sync loop after it gives back every lease this instance
    /// holds and reports what it spent (graceful stop: no decision is made
    /// after this).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        if let Some(handle) = self.sync.lock().take() {
            let wait = self.inner.timeout * 4 + self.inner.sync_every * 2;
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(wait, handle).await });
            // The limits' changes still waiting go over (a place in flight
            // left, a give-back): the sync loop's last pass has left.
            let inner = self.inner.clone();
            let _ = self.runtime.block_on(async move {
                tokio::time::timeout(wait, inner.send_limit_changes()).await
            });
        }
    }
}

impl Inner {
    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    fn is_down(&self) -> bool {
        self.breaker.is_open(self.now_ms())
    }

    /// Marks the outcome of a call: failures in a row open the breaker
    /// (`breaker.rs`), and only then is Redis down.
    fn answered(&self, ok: bool) {
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        match self.breaker.record(ok, self.now_ms()) {
            breaker::Outcome::Answered => {
                self.up.store(true, Ordering::Relaxed);
                self.hub.set_local(false);
            }
            breaker::Outcome::Failed => {}
            breaker::Outcome::Opened => {
                if self.local {
                    self.hub.set_local(true);
                }
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "cluster: Redis did not answer; deciding from the leases held until it does"
                    );
                }
            }
        }
    }

    /// Seconds a period's hash lives: to its end, and a month more.
    fn ttl_s(period: Period, now: i64) -> i64 {
        (period.end_secs() - now / NANOS_PER_SEC).max(0) + 31 * 86_400
    }

    /// A call for `tenant`'s lease of `m`: its running totals, `want`
    /// units, none granted below `floor`.
    fn ask(
        &self,
        tenant: &TenantState,
        shared: &Shared,
        m: Measure,
        period: Period,
        want: u64,
        floor: u64,
    ) -> script::Ask {
        let lease = shared.lease(m);
        script::Ask {
            limit: m.limit(&tenant.plan().plan),
            seq: shared.next_seq(),
            totals: lease.totals(period),
            want,
            floor,
            init: None,
            hold_ms: 0,
            stored: lease.stored_units(period),
        }
    }

    /// Runs `call` on the shared store, on a blocking thread (the store's
    /// calls are synchronous): `None` without a shared store, or when it
    /// failed - then `what` it was doing is logged, as a warning when
    /// `warn` (a call made every second logs at debug).
    async fn on_shared_store<T: Send + 'static>(
        &self,
        what: &'static str,
        warn: bool,
        call: impl FnOnce(&dyn SharedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Option<T> {
        let shared = self.shared_store.get()?.clone();
        match tokio::task::spawn_blocking(move || call(shared.as_ref())).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) if warn => {
                tracing::warn!(error = %e, "cluster: cannot {what}");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster: cannot {what}");
                None
            }
            Err(_) => None,
        }
    }

    /// The store's shares of `tenant`'s `period` - its persisted totals
    /// and each process's part, read together. Without a shared store (one
    /// instance's own), its totals alone. `None` when the store failed.
    async fn shares(&self, tenant: &str, period: Period, m: Measure) -> Option<Shares> {
        let id = tenant.to_string();
        if self.shared_store.get().is_some() {
            return self
                .on_shared_store("read the persisted totals", true, move |s| {
                    s.shares(&id, period, m.name())
                })
                .await;
        }
        let store = self.registry.get()?.store().clone();
        let read = tokio::task::spawn_blocking(move || store.tenant_totals(&id, period));
        match read.await {
            Ok(Ok(total)) => Some(Shares {
                total,
                ..Shares::default()
            }),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: cannot read the persisted totals");
                None
            }
            Err(_) => None,
        }
    }

    /// The totals the shared store has persisted for `tenants` in `period`;
    /// nothing without a shared store or when it fails (the cross-check
    /// waits for the next time).
    async fn persisted(
        &self,
        tenants: Vec<String>,
        period: Period,
    ) -> Vec<(String, crate::store::PeriodTotals)> {
        self.on_shared_store("read the persisted totals", false, move |s| {
            s.persisted(period, &tenants)
        })
        .await
        .unwrap_or_default()
    }

    /// Writes to the shared store what `answers` grant this process - its
    /// granted and given back totals, where they grew - before the leases
    /// take (and spend) them, so that a hash rebuilt without this process
    /// (killed, then Redis lost its data) counts what it could have spent.
    /// Each answer comes with its tenant, the lease's measure and the ask
    /// it answers. One statement per measure. Should the store fail, the
    /// grants are spent all the same (logged at debug): a store down as
    /// well as a `kill -9` and a loss of Redis's data is a third fault.
    async fn secure<'a>(
        &self,
        answers: impl IntoIterator<
            Item = (
                &'a TenantState,
                Measure,
                &'a script::Ask,
                &'a script::Answer,
            ),
        >,
        period: Period,
    ) {
        let mut rows: [Vec<(String, u64, u64)>; 2] = Default::default();
        let mut marks = Vec::new();
        for (tenant, m, ask, a) in answers {
            let Some(lease) = tenant.shared().map(|s| s.lease(m)) else {
                continue;
            };
            let given = ask.totals.given;
            if lease.unwritten(period, a.granted_total, given) {
                rows[m.index()].push((tenant.id.to_string(), a.granted_total, given));
                marks.push((lease, a.granted_total, given));
            }
        }
        for (m, rows) in Measure::ALL.into_iter().zip(rows) {
            if !rows.is_empty() {
                self.write_grants(period, m, rows).await;
            }
        }
        for (lease, granted, given) in marks {
            lease.wrote(period, granted, given);
        }
    }

    /// A store that does not answer within twice the Redis timeout is
    /// not waited for (the write goes on; the grants are spent meanwhile).
    async fn write_grants(&self, period: Period, m: Measure, rows: Vec<(String, u64, u64)>) {
        let write = self.on_shared_store("write grants", false, move |s| {
            s.write_grants(period, m.name(), &rows)
        });
        if tokio::time::timeout(self.timeout * 2, write).await.is_err() {
            tracing::debug!("cluster: the store was slow to take the grants; spending them");
        }
    }

    /// Records in the shared store that `tenant`'s `period` has a hash,
    /// before the hash is made; `None` when the store failed (nothing is
    /// made). Nothing to record without a shared store.
    async fn mark_made(&self, tenant: &str, period: Period, m: Measure) -> Option<()> {
        if self.shared_store.get().is_none() {
            return Some(());
        }
        let id = tenant.to_string();
        self.on_shared_store("record the tenant's allocation", true, move |s| {
            s.mark_made(&id, period, m.name())
        })
        .await
    }

    /// Sends `ask` until Redis answers with an allocation - making the
    /// period's hash from the store's shares when it is missing - and
    /// takes the answer into the lease. A hash missing where one existed
    /// (this instance met it, or the store says one was made: Redis lost
    /// it) is made holding its grants while the live instances join.
    /// `None` when Redis (or the store) failed.
    async fn exchange(
        &self,
        tenant: &TenantState,
        m: Measure,
        mut ask: script::Ask,
        period: Period,
        mut now: i64,
    ) -> Option<script::Answer> {
        let shared = tenant.shared()?;
        let lease = shared.lease(m);
        let met = lease.epoch(period) != 0;
        // A mark younger than this is a hash being made (its maker may
        // wait that long behind a loaded host's other calls), not one lost.
        let fresh = (self.timeout * 4).max(self.hold);
        for _ in 0..MAKE_TRIES {
            // The call carries the time it is sent (a hold is judged by it).
            now = now.max(self.clock.now_nanos().0);
            match self.call_one(&tenant.id, m, period, &ask, now).await? {
                Reply::Answer(a) => {
                    self.secure([(tenant, m, &ask, &a)], period).await;
                    self.take(shared, m, &ask, &a, period);
                    if ask.init.is_some() {
                        self.reread(tenant, m, period).await;
                    }
                    return Some(a);
                }
                Reply::Missing => {
                    let shares = self.shares(&tenant.id, period, m).await?;
                    match shares.made_ms_ago {
                        // Another instance is about to make it (it marked
                        // the store, its script has not run yet): join it
                        // rather than make it again as lost.
                        Some(ago) if !met && ago < fresh.as_millis() as u64 => {
                            tokio::time::sleep(MAKE_WAIT).await;
                            continue;
                        }
                        Some(_) => {
                            ask.hold_ms = self.hold.as_millis() as u64;
                            tracing::warn!(
                                tenant = %tenant.id,
                                measure = m.name(),
                                "cluster: Redis lost this tenant's allocation; rebuilding it"
                            );
                        }
                        None => {
                            if met {
                                ask.hold_ms = self.hold.as_millis() as u64;
                            }
                            self.mark_made(&tenant.id, period, m).await?;
                        }
                    }
                    let init = Init::of(&shares, m);
                    lease.stored(period, init.total);
                    ask.stored = lease.stored_units(period);
                    ask.init = Some(init);
                }
            }
        }
        None
    }

    /// After making a hash (or trying to: another instance may have made
    /// it first), sends the store's shares read again: the hash may have
    /// been made from an older read, and what processes not joined wrote
    /// of their grants since only raises their count. A failure leaves it
    /// to the hash as made.
    async fn reread(&self, tenant: &TenantState, m: Measure, period: Period) {
        let Some(shared) = tenant.shared() else {
            return;
        };
        let Some(shares) = self.shares(&tenant.id, period, m).await else {
            return;
        };
        let mut ask = self.ask(tenant, shared, m, period, 0, 1);
        ask.init = Some(Init::of(&shares, m));
        // The hash exists: should it be gone when this lands, Redis lost
        // it, and it is made again holding.
        ask.hold_ms = self.hold.as_millis() as u64;
        let now = self.clock.now_nanos().0;
        if let Some(Reply::Answer(a)) = self.call_one(&tenant.id, m, period, &ask, now).await {
            self.take(shared, m, &ask, &a, period);
        }
    }

    /// Takes Redis's answer to `ask` into `shared`'s lease of `m`: the
    /// grants not added yet, the allocation seen, the totals acknowledged.
    fn take(
        &self,
        shared: &Shared,
        m: Measure,
        ask: &script::Ask,
        a: &script::Answer,
        period: Period,
    ) {
        let lease = shared.lease(m);
        lease.met(period, a.epoch);
        let added = lease.grants(period, a.granted_total);
        lease.saw(period, a.alloc);
        lease.acked(period, ask.totals);
        if m == Measure::Calls {
            self.stats.granted.fetch_add(added, Ordering::Relaxed);
        }
    }

    /// One script call with the timeout; `None` when Redis failed.
    async fn call_one(
        &self,
        tenant: &str,
        m: Measure,
        period: Period,
        ask: &script::Ask,
        now: i64,
    ) -> Option<Reply> {
        let key = script::key(tenant, period, m);
        let mut inv = self.script.prepare_invoke();
        script::args(
            &mut inv,
            &key,
            &self.member,
            ask,
            now / 1_000_000,
            Inner::ttl_s(period, now),
        );
        let mut conn = self.conn.clone();
        let reply: Option<Vec<i64>> =
            match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => Some(v),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cluster: Redis call failed");
                    None
                }
                Err(_) => None,
            };
        let reply = reply.as_deref().and_then(Reply::parse);
        self.answered(reply.is_some());
        reply
    }
}
