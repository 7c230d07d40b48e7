//! What the limits of SPEC §12 cost per tracked end user, and that a
//! tenant inventing end-user ids cannot grow the server past its bound
//! (issue 39, item 5). A counting allocator keeps the live heap as malloc
//! sizes it (`malloc_usable_size` plus its 8-byte header).
//!
//!   cargo run --release --example subjects_memory
//!
//! One tenant with a per-user daily token limit: 1,000,000 distinct end
//! users decided (ids `user-0000001`..., 12 bytes, and UUIDs, 36 bytes),
//! then the same 1,000,000 against `[limits] max_subjects_per_tenant =
//! 100000`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tollgate::model::{Limit, Measure, Scope, Window};
use tollgate::quota::scoped::{Ask, Scoped};

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
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(held(ptr), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

const USERS: usize = 1_000_000;
const NOW_MS: i64 = 1_796_000_000_000;

fn run(label: &str, max: usize, id: impl Fn(usize) -> String) {
    let limits: Arc<[Limit]> = Arc::from(vec![Limit::new(
        "per-user",
        Scope::User,
        Measure::Tokens,
        Window::Day,
        Some(100_000),
    )]);
    let ids: Vec<String> = (0..USERS).map(&id).collect();
    let before = LIVE.load(Ordering::Relaxed);
    let scoped = Scoped::new(max);
    scoped.configure(&limits, None);
    let mut refused = 0;
    for user in &ids {
        let ask = Ask {
            key_id: "key_0000000000000000",
            user,
            tokens: 100,
            calls: 1,
            ..Ask::default()
        };
        if scoped.take(&ask, NOW_MS).is_err() {
            refused += 1;
        }
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let tracked = scoped.subjects();
    println!(
        "{label}: {tracked} end users tracked ({refused} refused), {:.1} MiB, {:.0} bytes each",
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / tracked.max(1) as f64
    );
}

fn main() {
    run("short ids, no bound", usize::MAX, |i| {
        format!("user-{i:07}")
    });
    run("UUIDs, no bound", usize::MAX, |i| {
        format!("{i:08x}-7b7e-4d1e-9a57-0d2f3e4a5b6c")
    });
    run("UUIDs, bound 100,000", 100_000, |i| {
        format!("{i:08x}-7b7e-4d1e-9a57-0d2f3e4a5b6c")
    });
}
