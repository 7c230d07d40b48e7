//! Metering, in no transport's terms: the one path every metered request
//! takes, whichever edge it came through (the HTTP API, the gateway,
//! forward-auth, Envoy's ext_authz and rate-limit service).
//!
//! - [`Metering`]: what the path shares - the registry, the usage queue,
//!   the clock, prices, the cluster, metrics - built once by `app.rs`.
//! - [`Meter`]: one request from its decision to its record in the queue.
//! - [`Refusal`] and [`Refused`]: why a request is refused, with the
//!   limit's state; each edge maps them exhaustively to its wire.
//! - [`request`]: what an edge checks of what it is told (a method, the
//!   path a record keeps, a cost).
//!
//! Nothing here knows HTTP, gRPC or JSON bodies' transport: an edge asks,
//! and renders the answer.

pub(crate) mod headers;
mod key;
mod meter;
mod refusal;
pub(crate) mod request;
pub(crate) mod tokens;

use std::sync::Arc;

pub use meter::Meter;
pub use refusal::{Quota, Refusal, Refused};

use crate::clock::Clock;
use crate::model::CompactString;
use crate::model::TokenCounts;
use crate::pricing::{Cost, PriceTable, Priced};
use crate::quota::lease::Measure;
use crate::quota::period::Nanos;
use crate::quota::{Decision, Outcome, TenantState};
use crate::registry::Registry;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::stats::Stats;
use crate::usage::queue::UsageQueue;

/// When a request refused `cluster_unavailable` may retry.
pub(crate) const CLUSTER_RETRY_NS: u64 = 1_000_000_000;

/// What every metered request shares, whatever its edge.
pub struct Metering {
    pub registry: Arc<Registry>,
    pub queue: UsageQueue,
    pub clock: Arc<dyn Clock>,
    pub prices: Arc<PriceTable>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    /// Enforcement shared with other instances (`[cluster] redis_url`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Requests of one tenant served at once (`[limits] in_flight_per_tenant`).
    pub in_flight_per_tenant: u32,
    /// Token reservations `authorize` handed out, until settled or expired.
    pub reservations: Arc<crate::quota::reservation::Book>,
    /// Countries from client addresses (`[geoip] mmdb`), when configured.
    pub(crate) geo: Option<Arc<crate::geo::GeoIp>>,
    /// Told of each tenant whose usage a request wrote itself (a claimed
    /// batch), as the flusher's hook is told of the rest: the alerts.
    pub(crate) watch: Option<crate::usage::UsageWatch>,
    /// When keys were last used (the flusher and the claimed batches note
    /// it; a key's `lastUsedAt` reads it back from the store).
    pub(crate) key_uses: Arc<crate::usage::key_use::KeyUses>,
}

impl Metering {
    /// The cost of `counts` tokens of `model` used at `ts_ms`, at the
    /// price in effect then; a model with no price costs 0 and is counted
    /// for `/metrics`.
    pub fn price(&self, model: &str, counts: &TokenCounts, ts_ms: i64) -> Priced {
        let cost = self.prices.cost(model, counts, ts_ms);
        if cost == Cost::UnknownModel {
            self.stats.unknown_model(model);
        }
        cost.priced()
    }

    /// Micro-dollars to reserve of `tenant`'s spend limits (SPEC §12) for
    /// a call of `model` with a prompt of `prompt` tokens and an answer of
    /// at most `output`, at today's price (a model without a price: the
    /// plan's `reserveUsd`); 0 when the tenant has no limits of SPEC §12.
    pub(crate) fn spend_estimate(
        &self,
        tenant: &TenantState,
        model: &str,
        prompt: u64,
        output: u64,
    ) -> u64 {
        if tenant.scoped().is_none() {
            return 0;
        }
        let counts = TokenCounts {
            prompt,
            completion: output,
            total: prompt.saturating_add(output),
            ..TokenCounts::default()
        };
        match self
            .prices
            .cost(model, &counts, self.clock.now_nanos().millis().0)
        {
            Cost::Priced(p) if p.usd > 0.0 => crate::quota::scoped::micro_usd(p.usd),
            _ => tenant.plan_now().plan.reserve_usd.unwrap_or(0),
        }
    }

    /// Whether `cost` calls (and `tokens` reserved) of `tenant` would pass
    /// at `now`; takes nothing (a dry run). Counted for `/metrics`.
    ///
    /// A shared quota (`[cluster]`) whose lease cannot cover the request
    /// while Redis is down would be refused `cluster_unavailable` (its
    /// lease cannot be topped up), and the dry run says so; while Redis is
    /// up, a lease that runs out is topped up, and the dry run judges by
    /// the fleet's use.
    pub fn check(&self, tenant: &TenantState, cost: u64, tokens: u64, now: Nanos) -> Decision {
        let mut d = tenant.check(cost, tokens, now);
        if let (true, Some(cluster), Some(shared)) =
            (d.allowed(), self.cluster.as_deref(), tenant.shared())
        {
            let short = |m: Measure, n: u64, limit: Option<u64>| {
                n > 0 && limit.is_some() && shared.lease(m).held(d.period) < n
            };
            let tokens = if d.tokens_limit.is_some() { tokens } else { 0 };
            if cluster.down()
                && (short(Measure::Calls, cost, d.calls_limit)
                    || short(Measure::Tokens, tokens, d.tokens_limit))
            {
                d.outcome = Outcome::ClusterUnavailable;
                d.retry_after_ns = CLUSTER_RETRY_NS;
            }
        }
        self.metrics.decision(d.outcome);
        d
    }

    /// Takes one of `tenant`'s places in flight (given back by
    /// [`TenantState::leave`]), or refuses: it has as many as it may.
    pub(crate) fn enter(&self, tenant: &TenantState) -> Result<(), Refused> {
        if tenant.enter(self.in_flight_per_tenant) {
            return Ok(());
        }
        Err(Refused {
            retry_after: Some(1),
            ..Refused::new(
                Refusal::TooManyInFlight,
                format!(
                    "this tenant already has {} requests in progress; wait for one to finish",
                    self.in_flight_per_tenant
                ),
            )
        })
    }

    /// The country of an address, when `[geoip]` can tell (never stored).
    pub(crate) fn country_of_ip(&self, ip: std::net::IpAddr) -> CompactString {
        self.geo
            .as_ref()
            .and_then(|g| g.country(ip))
            .unwrap_or_default()
    }
}
