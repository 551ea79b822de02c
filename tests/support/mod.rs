//! The one copy of the helpers that every kind of integration test needs: unique names, temp
//! dirs, free ports, bounded polling ([`eventually`]), SQS clients and queues ([`aws`]), test
//! databases ([`db`]) and the real `mailroom` binary as a child process ([`process`]).
//!
//! It exists so that `tests/common` (in-process engine tests), `tests/fault_support` (fault
//! injection and hostile input) and `tests/ops_support` (operations tests) do not each keep their
//! own copy of these: each of them includes this module and re-exports it (`pub use
//! support::*`), adding only what is particular to its own tests.
//!
//! Environment, as scripts/test.sh sets it: `AWS_ENDPOINT_URL` (the SQS-compatible server,
//! default `http://127.0.0.1:4566`) and `DATABASE_URL` (an admin connection to Postgres, default
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Each test crate uses only part of this, so unused items and re-exports are allowed here.
#![allow(dead_code)]

mod aws;
mod db;
mod process;

#[allow(unused_imports)] // each test crate uses a different part
pub use self::{aws::*, db::*, process::*};

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_joined(prefix: &str, sep: char) -> String {
    format!(
        "{prefix}{sep}{}{sep}{}{sep}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    )
}

/// A name unique to this process and call, `{prefix}_{pid}_{n}_{micros}`: safe for queues,
/// databases and roles.
pub fn unique(prefix: &str) -> String {
    unique_joined(prefix, '_')
}

/// [`unique`] joined with `-`, `{prefix}-{pid}-{n}-{micros}`: also safe for S3 bucket names.
pub fn unique_dashed(prefix: &str) -> String {
    unique_joined(prefix, '-')
}

/// A new directory under the system temp dir, named [`unique`]`(prefix)`.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Poll `cond` every `every` until it holds; panics naming `what` after `secs`.
pub async fn poll_until<F, Fut>(secs: u64, every: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Poll `cond` (in-process state, no `.await`) every 100 ms for at most `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    poll_until(secs, Duration::from_millis(100), what, || {
        std::future::ready(cond())
    })
    .await
}

/// Poll the async `cond` (a query to SQS, Postgres or HTTP) every 200 ms for at most `secs`.
pub async fn eventually_async<F, Fut>(secs: u64, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(secs, Duration::from_millis(200), what, cond).await
}
