//! The process allocator (glibc malloc): fewer arenas, and free pages handed
//! back to the OS. Both keep RSS close to the live heap - SPEC §9's memory
//! targets are RSS.

/// glibc gives each busy thread its own malloc arena; with actix workers,
/// the flusher and sled's threads all allocating, RSS grew by fragmentation
/// (a 150 s soak: 420 MiB with the default, 343 MiB with two arenas).
/// `MALLOC_ARENA_MAX` in the environment still wins. Call first thing in
/// `main`, before any other thread exists.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; the caller runs
        // it before other threads allocate.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Hands the allocator's free pages back to the OS. Loading the store
/// decodes every tenant and key once, and the flusher's batches and
/// checkpoints come and go; glibc keeps those freed pages unless asked.
/// Called after start-up and by the flusher once a minute.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
