//! What one tenant costs in memory, structure by structure (issue 19,
//! item 3). A counting allocator keeps the live heap as malloc sizes it
//! (`malloc_usable_size` plus its 8-byte header), so each figure is the
//! heap a structure holds, allocator rounding included.
//!
//!   cargo run --release --example memory -- DIR
//!
//! DIR is a data directory `examples/scale` built (`scale DIR 100000 0`).
//! `resident` is the change in RssAnon (after `malloc_trim`): sled's
//! metrics histograms (20.5 MiB, allocated at its first open and never
//! touched in the server) count in `heap` only.
//! The registry's own figure is `Registry::load` on that store; the
//! per-structure rows build each of its tables alone from the same
//! tenants and keys, with the types the registry uses; the server's figure
//! is `Tollgate::open` on the directory with the default configuration.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tollgate::app::Tollgate;
use tollgate::auth::{KeyHash, KeyHasher};
use tollgate::clock::SystemClock;
use tollgate::config::Config;
use tollgate::model::TenantStatus;
use tollgate::quota::counters::Counting;
use tollgate::quota::period::Period;
use tollgate::quota::{ActivePlan, TenantState};
use tollgate::registry::sharded::ShardedMap;
use tollgate::registry::{KeyEntry, Registry};
use tollgate::store::{SledStore, Store};

struct Live;

static LIVE: AtomicI64 = AtomicI64::new(0);

fn held(ptr: *mut u8) -> i64 {
    // SAFETY: ptr came from the system allocator and is not yet freed.
    (unsafe { libc::malloc_usable_size(ptr.cast()) } + 8) as i64
}

unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(held(p), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(held(p), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(held(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = held(ptr);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(held(p) - before, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Resident anonymous memory (heap pages touched, stacks), after the
/// allocator hands its free pages back.
fn rss() -> i64 {
    tollgate::alloc::release_free_memory();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: i64 = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Runs `build`, keeps what it returns, and prints the heap it holds.
fn row<T>(what: &str, tenants: usize, build: impl FnOnce() -> T) -> T {
    let (before, resident) = (live(), rss());
    let kept = build();
    let (bytes, resident) = (live() - before, rss() - resident);
    println!(
        "| {what} | {:.1} MiB | {:.1} MiB | {} |",
        bytes as f64 / (1 << 20) as f64,
        resident as f64 / (1 << 20) as f64,
        bytes / tenants.max(1) as i64
    );
    kept
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let (before, resident) = (live(), rss());
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("db"), 100, 64 << 20).unwrap());
    let (store_bytes, store_rss) = (live() - before, rss() - resident);
    let (warm, warm_rss) = (live(), rss());
    drop((store.tenants().unwrap(), store.keys().unwrap()));
    let (warm, warm_rss) = (live() - warm, rss() - warm_rss);
    let tenants = store.tenants().unwrap();
    let keys = store.keys().unwrap();
    let n = tenants.len();
    println!("{n} tenants, {} keys\n", keys.len());
    println!(
        "sizes: Queued {} UsageRecord {} TenantState {} KeyEntry {} Tenant {}",
        std::mem::size_of::<tollgate::usage::Queued>(),
        std::mem::size_of::<tollgate::model::UsageRecord>(),
        std::mem::size_of::<TenantState>(),
        std::mem::size_of::<KeyEntry>(),
        std::mem::size_of::<tollgate::model::Tenant>()
    );
    println!("| structure | heap | resident | heap bytes per tenant |\n|---|---|---|---|");

    let period = Period::containing(chrono::Utc::now());
    let plans: BTreeMap<String, Arc<ActivePlan>> = store
        .plans()
        .unwrap()
        .into_iter()
        .map(|p| (p.id.clone(), ActivePlan::new(p)))
        .collect();
    let states = row(
        "tenant states (`TenantState`, counters included)",
        n,
        || {
            tenants
                .iter()
                .map(|t| {
                    Arc::new(TenantState::counted(
                        &t.id,
                        plans[&t.plan_id].clone(),
                        t.status == TenantStatus::Suspended,
                        period,
                        &Counting::Local,
                    ))
                })
                .collect::<Vec<_>>()
        },
    );
    let by_id: std::collections::HashMap<&str, &Arc<TenantState>> =
        states.iter().map(|s| (&*s.id, s)).collect();
    let tenant_table = row("tenant table (id -> state)", n, || {
        let m: ShardedMap<Arc<str>, Arc<TenantState>> = ShardedMap::new();
        m.replace_all(states.iter().map(|s| (s.id.clone(), s.clone())));
        m
    });
    let key_table = row("key table (hash -> key entry)", n, || {
        let m: ShardedMap<KeyHash, KeyEntry, KeyHasher> = ShardedMap::new();
        m.replace_all(keys.iter().map(|k| {
            (
                KeyHash(k.hash),
                KeyEntry::new(&k.key.id, by_id[k.key.tenant_id.as_str()], k.key.expires_at),
            )
        }));
        m
    });
    drop((tenant_table, key_table, by_id));
    drop(states);
    println!();
    let registry = row("**`Registry::load`, all of the above**", n, || {
        Registry::load(store.clone(), &[], chrono::Utc::now()).unwrap()
    });
    drop(registry);
    drop((tenants, keys));
    println!(
        "| sled store, opened | {:.1} MiB | {:.1} MiB | |",
        store_bytes as f64 / (1 << 20) as f64,
        store_rss as f64 / (1 << 20) as f64
    );
    println!(
        "| sled's cache after one scan of tenants and keys | {:.1} MiB | {:.1} MiB | {} |",
        warm as f64 / (1 << 20) as f64,
        warm_rss as f64 / (1 << 20) as f64,
        warm / n.max(1) as i64
    );
    drop(store);

    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let server = row("**`Tollgate::open`, the whole server**", n, || {
        Tollgate::open(config, Some("memory-admin"), Arc::new(SystemClock)).unwrap()
    });
    drop(server);
}
