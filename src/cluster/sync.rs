//! The sync loop: every `[cluster] sync_ms`, one pipeline to Redis for the
//! tenants that need it - a lease running low (refilled to last
//! `lease_ms` at the tenant's rate, and its reserve with `on_redis_down =
//! "local"`), spending to report, a lease idle for a second or wanted by
//! another instance (given back) - and nothing for the others. Every
//! second a heartbeat counts the live instances, among which the burst
//! limits are divided. On a graceful stop its last pass gives every lease
//! back and leaves.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::script::{self, Answer, Ask, Reply};
use super::Inner;
use crate::clock::Nanos;
use crate::quota::lease::Measure;
use crate::quota::period::Period;
use crate::quota::TenantState;
use crate::registry::Registry;
use crate::telemetry::stats::wall_ms;

/// A lease unused this long is given back.
const IDLE: Duration = Duration::from_secs(1);
/// Every tenant followed is seen at least this often, a lease or not (to
/// learn that another instance needs units, and to join a hash Redis made
/// again within its hold).
pub(super) const REFRESH: Duration = Duration::from_secs(1);
/// How often the persisted calls of the tenants followed are read from the
/// shared store (one query for all): the floor of Redis's allocation.
const CROSS_CHECK: Duration = Duration::from_secs(1);
/// Pipelines carry at most this many calls.
const BATCH: usize = 512;
/// Each instance says it is live this often; one silent for `GONE` is
/// no longer counted among the instances sharing the burst limits.
const HEARTBEAT: Duration = Duration::from_secs(1);
const GONE: Duration = Duration::from_secs(3);
/// The sorted set of live instances (score: the last heartbeat, ms).
pub(super) const MEMBERS: &str = "tg:members";

/// What the loop knows of one tenant it follows: of each measure's lease.
struct Track {
    state: Arc<TenantState>,
    /// The tenant was queued on the hub since the last tick.
    asked: bool,
    flows: [Flow; 2],
}

/// What the loop knows of one lease of a tenant.
struct Flow {
    last_taken: u64,
    /// Units a second, rising at once and falling slowly.
    rate: f64,
    last_active: Instant,
    last_visit: Instant,
    /// When (ms) Redis last said some instance was short, and when this
    /// one was.
    need_ms: i64,
    own_short_ms: i64,
    /// No refill is asked before this (nanoseconds): the quota is spent
    /// and no lease is out to come back.
    dry_until: i64,
    /// Units given back that Redis acknowledged (for the count).
    given_acked: u64,
}

impl Track {
    fn new(state: Arc<TenantState>, now: Instant, now_ns: i64) -> Track {
        let period = Period::containing_nanos(Nanos(now_ns));
        let flow = |m: Measure| Flow {
            last_taken: state.shared().map_or(0, |s| s.lease(m).consumed(period)),
            rate: 0.0,
            last_active: now,
            last_visit: now - REFRESH,
            need_ms: 0,
            own_short_ms: 0,
            dry_until: i64::MIN,
            given_acked: 0,
        };
        let flows = Measure::ALL.map(flow);
        Track {
            state,
            asked: false,
            flows,
        }
    }
}

/// What a lease's rate is measured by: calls spent or counted, tokens
/// reserved (reported tokens take nothing from a lease, so a tenant that
/// only reports them holds no token lease).
fn taken(lease: &crate::quota::lease::Lease, m: Measure, period: Period) -> u64 {
    match m {
        Measure::Calls => lease.consumed(period),
        Measure::Tokens => lease.totals(period).spent,
    }
}

/// One call planned for a pipeline.
struct Planned {
    id: Arc<str>,
    measure: Measure,
    ask: Ask,
}

pub(super) async fn run(inner: Arc<Inner>, registry: Arc<Registry>) {
    let mut tracked: HashMap<Arc<str>, Track> = HashMap::new();
    let mut asked = Vec::new();
    let mut tick = tokio::time::interval(inner.sync_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut last_beat: Option<Instant> = None;
    let mut last_check = Instant::now();
    loop {
        tick.tick().await;
        let stopping = inner.stopping.load(Ordering::Acquire);
        if stopping {
            leave(&inner).await;
        } else if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            last_beat = Some(Instant::now());
            if let Some(n) = heartbeat(&inner).await {
                inner.stats.members.store(n, Ordering::Relaxed);
                registry.set_burst_share(n.clamp(1, u32::MAX as u64) as u32);
            }
        }
        // After an outage every tenant followed is visited at once: should
        // Redis have lost its data, the live instances join within the hold.
        let recovering = !inner.up.load(Ordering::Relaxed);
        let now_i = Instant::now();
        let dt = now_i.duration_since(last).as_secs_f64().max(1e-3);
        last = now_i;
        inner.hub.drain(&mut asked);
        for id in asked.drain(..) {
            let Some(state) = registry.tenant_state(&id) else {
                continue;
            };
            if let Some(s) = state.shared() {
                s.answered();
            }
            tracked
                .entry(id)
                .or_insert_with(|| Track::new(state, now_i, inner.clock.now_nanos().0))
                .asked = true;
        }
        let now = inner.clock.now_nanos().0;
        let period = Period::containing_nanos(Nanos(now));
        if !stopping && !tracked.is_empty() && last_check.elapsed() >= CROSS_CHECK {
            last_check = Instant::now();
            let ids = tracked.keys().map(|id| id.to_string()).collect();
            for (id, totals) in inner.persisted(ids, period).await {
                if let Some(s) = tracked.get(id.as_str()).and_then(|t| t.state.shared()) {
                    s.calls.stored(period, totals.calls);
                    s.tokens.stored(period, totals.tokens);
                }
            }
        }
        let mut planned = Vec::new();
        for (id, tr) in tracked.iter_mut() {
            for m in Measure::ALL {
                let force = stopping || recovering;
                if let Some(ask) = plan(&inner, tr, m, period, now, now_i, dt, force) {
                    planned.push(Planned {
                        id: id.clone(),
                        measure: m,
                        ask,
                    });
                }
            }
            tr.asked = false;
        }
        for chunk in planned.chunks(BATCH) {
            let replies = call(&inner, chunk, period, now).await;
            // What the answers grant is written to the store before it is
            // spent (one statement per measure).
            let answered = chunk.iter().zip(&replies).filter_map(|(p, r)| match r {
                Some(Reply::Answer(a)) => {
                    let tr = tracked.get(&p.id)?;
                    Some((&*tr.state, p.measure, &p.ask, a))
                }
                _ => None,
            });
            inner.secure(answered, period).await;
            for (p, reply) in chunk.iter().zip(replies) {
                let Some(tr) = tracked.get_mut(&p.id) else {
                    continue;
                };
                let answer = match reply {
                    Some(Reply::Answer(a)) => {
                        if let Some(shared) = tr.state.shared() {
                            inner.take(shared, p.measure, &p.ask, &a, period);
                        }
                        Some(a)
                    }
                    // The hash is to be made, or its hold has ended: this
                    // tenant alone, with the store's totals.
                    Some(Reply::Missing) => {
                        inner
                            .exchange(&tr.state, p.measure, p.ask.clone(), period, now)
                            .await
                    }
                    None => None,
                };
                if let Some(a) = answer {
                    note(&inner, tr, p, &a, now);
                }
            }
        }
        let mut held = 0;
        tracked.retain(|_, tr| {
            let Some(s) = tr.state.shared() else {
                return false;
            };
            let h = s.calls.held(period);
            held += h;
            let active = tr.flows.iter().map(|f| f.last_active).max();
            h > 0
                || s.tokens.held(period) > 0
                || s.pending(period)
                || active.is_some_and(|t| now_i.duration_since(t) < IDLE * 2)
        });
        inner.stats.held.store(held, Ordering::Relaxed);
        inner
            .stats
            .tenants
            .store(tracked.len() as u64, Ordering::Relaxed);
        if stopping {
            return;
        }
    }
}

/// Says this instance is live; how many are (heard from within `GONE`).
/// The burst limits are divided among them. Wall-clock time, not the
/// injectable clock: it is about processes, not periods.
async fn heartbeat(inner: &Inner) -> Option<u64> {
    let now = wall_ms() as i64;
    let mut pipe = redis::pipe();
    pipe.zadd(MEMBERS, &inner.member, now)
        .ignore()
        .zrembyscore(MEMBERS, "-inf", now - GONE.as_millis() as i64)
        .ignore()
        .zcard(MEMBERS);
    let mut conn = inner.conn.clone();
    let reply = tokio::time::timeout(inner.timeout, pipe.query_async::<(u64,)>(&mut conn)).await;
    let n = reply.ok().and_then(Result::ok).map(|(n,)| n);
    inner.answered(n.is_some());
    n
}

/// Says this instance has stopped (the others' burst shares grow at their
/// next heartbeat).
async fn leave(inner: &Inner) {
    let mut conn = inner.conn.clone();
    let mut cmd = redis::cmd("ZREM");
    cmd.arg(MEMBERS).arg(&inner.member);
    let _ = tokio::time::timeout(inner.timeout, cmd.query_async::<i64>(&mut conn)).await;
}

/// What to ask of Redis for one lease (of `m`) of a tenant this tick, if
/// anything. It carries the running totals, so a call that fails needs
/// nothing put back.
#[allow(clippy::too_many_arguments)]
fn plan(
    inner: &Inner,
    track: &mut Track,
    m: Measure,
    period: Period,
    now: i64,
    now_i: Instant,
    dt: f64,
    force: bool,
) -> Option<Ask> {
    let stopping = inner.stopping.load(Ordering::Acquire);
    let asked = track.asked;
    let state = &track.state;
    let tr = &mut track.flows[m.index()];
    let shared = state.shared()?;
    let lease = shared.lease(m);
    let limit = m.limit(&state.plan().plan);
    let taken = taken(lease, m, period);
    let delta = taken.saturating_sub(tr.last_taken);
    tr.last_taken = taken;
    let rate = delta as f64 / dt;
    tr.rate = if rate > tr.rate {
        rate
    } else {
        0.8 * tr.rate + 0.2 * rate
    };
    if delta > 0 || asked {
        tr.last_active = now_i;
    }
    let least = match m {
        Measure::Calls => 1,
        Measure::Tokens => 0,
    };
    let target = ((tr.rate * inner.lease_ms as f64 / 1000.0).ceil() as u64).max(least);
    lease.set_low(target.div_ceil(2));
    // With `on_redis_down = "local"`, as much again is set aside for an
    // outage (granted units move into the reserve first) - but not while
    // the quota is scarce (an instance got less than it asked for within
    // the last second): then reserves are spent or given back like leases,
    // so that exactly the limit can be allowed.
    let now_ms = now / 1_000_000;
    let scarce = now_ms - tr.need_ms < 1000;
    let reserve_target = if inner.local && !scarce { target } else { 0 };
    if limit.is_some() {
        if scarce {
            lease.unreserve(period);
        }
        lease.set_aside(period, reserve_target);
    }
    let held = lease.held(period);
    let reserved = lease.reserved(period);
    let mut give = 0;
    let mut want = 0;
    let up = inner.up.load(Ordering::Relaxed);
    if stopping || (up && now_i.duration_since(tr.last_active) >= IDLE) {
        // (Not while Redis is down: a reserve is for exactly then.)
        give = lease.surrender(period);
    } else if limit.is_some() {
        let others_need = tr.need_ms > tr.own_short_ms && now_ms - tr.need_ms < 1000;
        let keep = ((tr.rate * inner.sync_every.as_secs_f64() * 2.0).ceil() as u64).max(1);
        if others_need && up && (held > keep || reserved > 0) {
            // Another instance is short: the reserve goes first, then the
            // lease above what the next two syncs will spend.
            give = lease.surrender_reserve(period) + lease.surrender_above(period, keep);
        } else if (held < target.div_ceil(2) || reserved < reserve_target.div_ceil(2))
            && now >= tr.dry_until
        {
            want = (target - held.min(target)) + (reserve_target - reserved.min(reserve_target));
        }
    }
    let due = now_i.duration_since(tr.last_visit);
    let pending = lease.pending(period);
    let report_due = pending && due >= Duration::from_millis(inner.lease_ms);
    // Every tenant followed is visited at least every REFRESH, a lease or
    // not: should Redis have lost the hash, each instance with units or
    // records of the tenant on their way to the store joins the rebuilt
    // hash within its hold (one followed is active within the last 2 s,
    // longer than a record takes to reach the store).
    let refresh_due = due >= REFRESH;
    if want == 0 && give == 0 && !report_due && !refresh_due && !force {
        return None;
    }
    if stopping && give == 0 && !pending {
        return None;
    }
    tr.last_visit = now_i;
    Some(inner.ask(state, shared, m, period, want, 1))
}

/// Sends `chunk` as one pipeline: each call's reply, or `None` for all
/// when Redis failed.
async fn call(inner: &Inner, chunk: &[Planned], period: Period, now: i64) -> Vec<Option<Reply>> {
    let ttl = Inner::ttl_s(period, now);
    let mut pipe = redis::pipe();
    // Loading first costs one hash on the server and spares a NOSCRIPT
    // after Redis restarted.
    pipe.load_script(&inner.script);
    let mut invocations = Vec::with_capacity(chunk.len());
    for p in chunk {
        let mut inv = inner.script.prepare_invoke();
        script::args(
            &mut inv,
            &script::key(&p.id, period, p.measure),
            &inner.member,
            &p.ask,
            now / 1_000_000,
            ttl,
        );
        invocations.push(inv);
    }
    for inv in &invocations {
        pipe.invoke_script(inv);
    }
    let mut conn = inner.conn.clone();
    let reply: Option<Vec<redis::Value>> = match tokio::time::timeout(
        inner.timeout * 2,
        pipe.query_async::<Vec<redis::Value>>(&mut conn),
    )
    .await
    {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cluster: Redis pipeline failed");
            None
        }
        Err(_) => None,
    };
    inner.answered(reply.is_some());
    match reply {
        Some(values) => values
            .into_iter()
            .skip(1)
            .map(|v| {
                redis::from_redis_value::<Vec<i64>>(v)
                    .ok()
                    .and_then(|v| Reply::parse(&v))
            })
            .chain(std::iter::repeat(None))
            .take(chunk.len())
            .collect(),
        None => vec![None; chunk.len()],
    }
}

/// Notes what an answer says of the other instances: that one of them
/// is short (give back), or that nothing can come back (stop asking).
fn note(inner: &Inner, track: &mut Track, p: &Planned, a: &Answer, now: i64) {
    let tr = &mut track.flows[p.measure.index()];
    if p.measure == Measure::Calls {
        inner.stats.given_back.fetch_add(
            p.ask.totals.given.saturating_sub(tr.given_acked),
            Ordering::Relaxed,
        );
    }
    tr.given_acked = tr.given_acked.max(p.ask.totals.given);
    tr.need_ms = a.need_ms;
    if a.granted < p.ask.want {
        tr.own_short_ms = a.need_ms;
        let spent = p.ask.limit.is_some_and(|l| a.alloc >= l);
        if a.granted == 0 && spent && a.live == 0 && !a.holding {
            // Everything is spent and no lease is out: nothing can come
            // back, so stop asking (and stop requests asking) for a while.
            let until = now + 1_000_000_000;
            tr.dry_until = until;
            if let Some(s) = track.state.shared() {
                s.lease(p.measure).dry(Nanos(until));
            }
        }
    }
}
