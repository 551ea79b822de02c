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
//! Large buffers are always mapped on their own (`M_MMAP_THRESHOLD` fixed at 4 MiB, the heap
//! trimmed past 8 MiB free at its top), so a freed body goes back to the system at once. Why:
//! glibc's default threshold is dynamic, raised to the size of each mapped buffer freed (up to
//! 32 MiB), so after the first large inbound email every later 25 MB body, decoded attachment
//! and bind buffer came from the heap, and what they left free there stayed resident: ten
//! 25 MB raw-mode emails peaked at 202-232 MiB, with the threshold fixed at 177.5-178 MiB
//! (`mailroom-bench --only large`, BENCHMARKS.md).
//!
//! An operator's own `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`
//! (or those thresholds in `GLIBC_TUNABLES`) wins: glibc has read it already, and this leaves
//! that setting alone. Other platforms and allocators are untouched.

/// Buffers this large or larger are mapped on their own (bodies, decoded attachments, bind
/// buffers of large emails); below it, the heap as before.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: i32 = 4 * 1024 * 1024;

/// Limit glibc to one malloc arena and map large buffers on their own, each unless the
/// environment sets it already. Call before the runtime starts its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // The one exception to the workspace's unsafe_code lint; see above.
pub fn limit_arenas() {
    let set = |name: &str| std::env::var_os(name).is_some();
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let mut options = Vec::new();
    if !set("MALLOC_ARENA_MAX") {
        options.push((libc::M_ARENA_MAX, 1));
    }
    let thresholds_set = set("MALLOC_MMAP_THRESHOLD_")
        || set("MALLOC_TRIM_THRESHOLD_")
        || tunables.contains("mmap_threshold")
        || tunables.contains("trim_threshold");
    if !thresholds_set {
        options.push((libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES));
        options.push((libc::M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES));
    }
    for (option, value) in options {
        // SAFETY: mallopt only sets a glibc malloc parameter; it is called before any other
        // thread exists, takes no pointers, and a refusal (return 0) leaves the default in place.
        unsafe {
            libc::mallopt(option, value);
        }
    }
}

/// Nothing to tune off glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}
