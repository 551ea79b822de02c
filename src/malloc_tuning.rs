//! glibc malloc tuning for the worker process, applied before any thread starts.
//!
//! Why: glibc gives each thread that allocates under contention its own arena (up to 8 per
//! core), and memory freed into one arena is not reused by another. The worker's buffers (SQS
//! responses, decoded bodies, Postgres bind messages) are allocated on one tokio worker thread
//! and freed on another, so with the default the process held ~53 MiB at peak with 200 messages
//! in flight; with a single arena it holds ~42 MiB, at the same throughput (`scripts/bench.sh`,
//! see BENCHMARKS.md). The worker makes a few thousand allocations per message, far too few for
//! arena lock contention to show.
//!
//! An operator's own `MALLOC_ARENA_MAX` (environment) wins: glibc has read it already, and this
//! leaves it alone. Other platforms and allocators are untouched.

/// Limit glibc to one malloc arena unless `MALLOC_ARENA_MAX` is set. Call before the runtime
/// starts its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The one exception to the workspace's unsafe_code lint; see above.
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a glibc malloc parameter; it is called before any other thread
    // exists, takes no pointers, and a refusal (return 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Nothing to tune off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}
