//! The in-process enforcement path: key lookup, decision (check + consume),
//! enqueue of the usage record - the work `POST /api/v1/authorize` does
//! besides HTTP. Fixed inputs; single- and multi-threaded groups.
//!
//! Run: `cargo bench --bench enforcement`; add
//! `TOLLGATE_BENCH_THREADS=1,2,4,8,16` for the thread-scaling group.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::auth::KeyHash;
use tollgate::clock::Nanos;
use tollgate::model::{Plan, RateLimit, Tenant, TenantStatus, UsageRecord};
use tollgate::registry::Registry;
use tollgate::store::{SledStore, Store};
use tollgate::telemetry::stats::Stats;
use tollgate::usage::queue::{usage_queue, QueueReceiver, UsageQueue};
use tollgate::usage::Queued;

const TENANTS: usize = 10_000;
/// Records decided by each thread between two (untimed) drains of the
/// big queue; 16 threads x CHUNK fit in it.
const CHUNK: u64 = 20_000;

/// A usage queue the decisions enqueue into, and how many each thread
/// decides between two drains (never more than its lane holds).
struct Lane {
    queue: UsageQueue,
    rx: QueueReceiver,
    chunk: u64,
}

struct Fixture {
    registry: Registry,
    hashes: Vec<KeyHash>,
    /// 1 << 20 records: every timed chunk writes slots the cache has not
    /// seen since the last lap of the ring.
    big: Lane,
    /// The server's default `[flush] queue_capacity`, drained as often as
    /// a thread's lane fills.
    default: Lane,
    /// Whether the tenants' plan has the limits of SPEC §12 that
    /// `named_limits` adds: the decision then checks, takes, holds and
    /// settles them too.
    limited: bool,
    _dir: tempfile::TempDir,
}

/// A plan no benchmark reaches: a huge quota and burst, so every decision
/// is allowed.
fn bench_plan() -> Plan {
    Plan {
        id: "bench".into(),
        name: "Bench".into(),
        monthly_calls: Some(1 << 46),
        monthly_tokens: Some(1 << 46),
        rate_limit: Some(RateLimit {
            requests: 1_000_000_000,
            per_seconds: 1,
            burst: 1_000_000_000,
        }),
        price_usd_monthly: 0.0,
        ingest_rate: None,
        reserve_tokens: None,
        reservation_ttl_seconds: None,
        reserve_usd: None,
        limits: Vec::new(),
    }
}

fn fixture() -> Fixture {
    fixture_with(bench_plan())
}

/// [`bench_plan`] with three limits of SPEC §12: with its monthly quota,
/// four apply to every decision - the quota, a monthly dollar budget, the
/// key's calls per minute, the end user's tokens per day.
fn limited_plan() -> Plan {
    use tollgate::model::{Limit, Measure, Scope, Window};
    let mut plan = bench_plan();
    plan.limits = vec![
        Limit::new(
            "budget",
            Scope::Tenant,
            Measure::SpendUsd,
            Window::Month,
            Some(1 << 46),
        ),
        Limit::new(
            "key-minute",
            Scope::Key,
            Measure::Calls,
            Window::Minute,
            Some(1 << 46),
        ),
        Limit::new(
            "user-day",
            Scope::User,
            Measure::Tokens,
            Window::Day,
            Some(1 << 46),
        ),
    ];
    plan
}

fn fixture_with(plan: Plan) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 100, 16 << 20).unwrap());
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let limited = !plan.limits.is_empty();
    let registry = Registry::load(store, &[plan], now).unwrap();
    let mut hashes = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let id = format!("t{i}");
        registry
            .create_tenant(
                Tenant {
                    id: id.clone(),
                    name: id.clone(),
                    plan_id: "bench".into(),
                    status: TenantStatus::Active,
                    created_at: now,
                    limits: Vec::new(),
                    billing_day: None,
                },
                now,
            )
            .unwrap();
        let (_, secret) = registry.create_key(&id, "k", None, now).unwrap();
        hashes.push(KeyHash::of(&secret));
    }
    let (queue, rx) = usage_queue(1 << 20, Arc::new(Stats::default()));
    let big = Lane {
        queue,
        rx,
        chunk: CHUNK,
    };
    let capacity = tollgate::config::Config::default().flush.queue_capacity;
    let (queue, rx) = usage_queue(capacity, Arc::new(Stats::default()));
    let default = Lane {
        chunk: queue.lane_capacity() as u64,
        queue,
        rx,
    };
    Fixture {
        registry,
        hashes,
        big,
        default,
        limited,
        _dir: dir,
    }
}

const NOW_NS: Nanos = Nanos(1_795_000_000_000_000_000);

/// One decision the way the authorize handler makes it, minus HTTP.
#[inline]
fn decide(f: &Fixture, lane: &Lane, hash: &KeyHash, i: i64) -> bool {
    f.registry.with_key(hash, |entry| {
        let Some(entry) = entry else { return false };
        let d = entry.tenant.acquire(1, NOW_NS + i);
        if f.limited {
            named(entry, NOW_NS + i);
        }
        lane.queue.enqueue(Queued {
            tenant: entry.tenant.clone(),
            record: UsageRecord {
                ts_ms: (NOW_NS + i).millis().0,
                status: 200,
                calls: 1,
                ..Default::default()
            },
        });
        d.allowed()
    })
}

/// What the limits of SPEC §12 add to a decision: checked and taken, held,
/// and settled at what the answer used.
#[inline]
fn named(entry: &tollgate::registry::KeyEntry, at: Nanos) {
    use tollgate::quota::scoped::{Ask, Hold};
    let Some(scoped) = entry.tenant.scoped() else {
        return;
    };
    let ask = Ask {
        key_id: &entry.key_id,
        user: "5f0c1c9e-7b7e-4d1e-9a57-0d2f3e4a5b6c",
        bot: "",
        model: "gpt-4o",
        calls: 1,
        tokens: 500,
        spend: 2_000,
    };
    if let Ok((_, ids)) = scoped.take(&ask, at.millis().0) {
        Hold::new(scoped, &ask, ids, at.millis().0).settle(450, 1_800);
    }
}

/// Runs `iters` decisions on each of `threads` threads; returns the busiest
/// thread's timed work. The threads decide in lock-step chunks; between two
/// chunks, with every thread stopped, thread 0 empties the queue (untimed),
/// the way the flusher does - so no drain ever disturbs a timed chunk.
fn run(f: &Fixture, lane: &Lane, threads: usize, iters: u64, pick: Pick) -> Duration {
    let barrier = std::sync::Barrier::new(threads);
    let barrier = &barrier;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut timed = Duration::ZERO;
                    let mut drained = Vec::new();
                    let mut done = 0;
                    while done < iters {
                        let n = lane.chunk.min(iters - done);
                        barrier.wait();
                        let start = Instant::now();
                        for i in done..done + n {
                            black_box(decide(f, lane, &f.hashes[pick(t, threads, i)], i as i64));
                        }
                        timed += start.elapsed();
                        done += n;
                        if barrier.wait().is_leader() {
                            while lane.rx.drain_into(&mut drained, usize::MAX) > 0 {
                                drained.clear();
                            }
                        }
                    }
                    timed
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

/// Picks the tenant for decision `i` on thread `t` of `threads`.
type Pick = fn(usize, usize, u64) -> usize;

/// Each thread gets its own slice of the tenants.
fn distinct(t: usize, threads: usize, i: u64) -> usize {
    let slice = TENANTS / threads;
    t * slice + i as usize % slice
}

/// Every thread hits the same tenant.
fn hot(_: usize, _: usize, _: u64) -> usize {
    7
}

/// Thread counts for the `scaling` group, from `TOLLGATE_BENCH_THREADS`
/// (e.g. `1,2,4,8,16` on a many-core machine); the group is skipped when
/// unset.
fn scaling_threads() -> Vec<usize> {
    std::env::var("TOLLGATE_BENCH_THREADS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("decision");
    g.bench_function("lookup_only", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = (i + 1) % TENANTS;
            f.registry
                .with_key(black_box(&f.hashes[i]), |e| e.is_some())
        })
    });
    // The key's SHA-256 alone. sha2 0.10 picks the CPU's SHA extensions at
    // run time (its x86 backend's `shani` check); said here so a figure is
    // read against the right backend.
    #[cfg(target_arch = "x86_64")]
    eprintln!(
        "SHA extensions (sha_ni) on this CPU: {}",
        std::arch::is_x86_feature_detected!("sha")
    );
    g.bench_function("sha256_of_key", |b| {
        b.iter(|| KeyHash::of(black_box("tg_00000000000000000000000000000000")))
    });
    // The baseline `KeyHash::of` is measured against: sha2's streaming
    // hasher over the same key (the same digest).
    g.bench_function("sha256_streaming", |b| {
        use sha2::Digest;
        b.iter(|| sha2::Sha256::digest(black_box("tg_00000000000000000000000000000000")))
    });
    g.bench_function("hash_and_lookup", |b| {
        b.iter(|| {
            f.registry
                .authenticate(black_box("tg_00000000000000000000000000000000"), 0)
                .is_some()
        })
    });
    // The decision alone on one tenant the cache holds: lookup and
    // acquire, no enqueue - the arithmetic a decision does, without the
    // misses of the cycling benchmarks below.
    g.bench_function("lookup_and_acquire_in_cache", |b| {
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            f.registry.with_key(black_box(&f.hashes[7]), |e| {
                e.map(|e| e.tenant.acquire(1, NOW_NS + i).allowed())
            })
        })
    });
    g.bench_function("one_thread", |b| {
        b.iter_custom(|iters| run(&f, &f.big, 1, iters, distinct))
    });
    // The same at the server's default queue capacity, whose lanes the
    // cache keeps (a lane is about 1.3 MiB).
    g.bench_function("one_thread_default_queue", |b| {
        b.iter_custom(|iters| run(&f, &f.default, 1, iters, distinct))
    });
    g.bench_function("two_threads_distinct_tenants", |b| {
        b.iter_custom(|iters| run(&f, &f.big, 2, iters, distinct))
    });
    g.bench_function("two_threads_one_hot_tenant", |b| {
        b.iter_custom(|iters| run(&f, &f.big, 2, iters, hot))
    });
    g.finish();

    // Per-thread time per decision at N threads; scaling at N is
    // N x (1-thread time) / (N-thread time).
    let threads = scaling_threads();
    if threads.is_empty() {
        return;
    }
    let mut g = c.benchmark_group("scaling");
    for &n in &threads {
        g.bench_function(format!("distinct/{n}"), |b| {
            b.iter_custom(|iters| run(&f, &f.big, n, iters, distinct))
        });
    }
    for &n in &threads {
        g.bench_function(format!("hot/{n}"), |b| {
            b.iter_custom(|iters| run(&f, &f.big, n, iters, hot))
        });
    }
    g.finish();
}

/// The decision alone on one tenant far from its limit: counted in this
/// process, against counted from a lease of a quota shared through Redis
/// (`[cluster]`; the lease granted up front, as the sync loop keeps it
/// filled). Same plan, same clock, same run.
fn leases(c: &mut Criterion) {
    use tollgate::quota::counters::Counting;
    use tollgate::quota::lease::LeaseHub;
    use tollgate::quota::period::Period;
    use tollgate::quota::{ActivePlan, TenantState};
    let plan = ActivePlan::new(bench_plan());
    let period = Period::containing_nanos(NOW_NS);
    let local = TenantState::counted("t", plan.clone(), false, period, &Counting::Local);
    let shared = TenantState::counted(
        "t",
        plan,
        false,
        period,
        &Counting::Shared(Arc::new(LeaseHub::default()), None),
    );
    shared.shared().unwrap().calls.grants(period, 1 << 45);
    let mut g = c.benchmark_group("acquire");
    for (name, t) in [("local", &local), ("shared_lease", &shared)] {
        g.bench_function(name, |b| {
            let mut i = 0i64;
            b.iter(|| {
                i += 1;
                black_box(t.acquire(1, NOW_NS + i)).allowed()
            })
        });
    }
    g.finish();
}

/// The decision against the limits of SPEC §12 (issue 39's performance
/// clause): the same tenant in cache, with today's limits only (the plan's
/// monthly quota and burst) and with four applicable limits - the monthly
/// quota, a monthly dollar budget, the key's calls per minute and the end
/// user's tokens per day - checked, taken, held and settled.
fn named_limits(c: &mut Criterion) {
    let mut g = c.benchmark_group("named_limits");
    // The comparison: `decision/one_thread`'s harness (10,000
    // tenants cycled, each decision enqueued), without and with four
    // applicable limits, in the same run.
    let plain = fixture();
    let four = fixture_with(limited_plan());
    g.bench_function("one_thread", |b| {
        b.iter_custom(|iters| run(&plain, &plain.big, 1, iters, distinct))
    });
    g.bench_function("one_thread_four_limits", |b| {
        b.iter_custom(|iters| run(&four, &four.big, 1, iters, distinct))
    });
    // One tenant the cache holds: the arithmetic alone.
    g.bench_function("today_limits", |b| {
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            plain.registry.with_key(black_box(&plain.hashes[7]), |e| {
                e.map(|e| e.tenant.acquire(1, NOW_NS + i).allowed())
            })
        })
    });
    g.bench_function("four_limits", |b| {
        let mut i = 0i64;
        b.iter(|| {
            i += 1;
            four.registry.with_key(black_box(&four.hashes[7]), |e| {
                e.map(|e| {
                    let d = e.tenant.acquire(1, NOW_NS + i);
                    named(e, NOW_NS + i);
                    d.allowed()
                })
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, leases, named_limits);
criterion_main!(benches);
