//! Leading a forwarder: one process delivers per forwarder, and stops as soon as it can no
//! longer show that it is the one.
//!
//! The lead is a session advisory lock on a connection of its own. The lock lives exactly as
//! long as that server session, so when Postgres restarts (or the connection dies) it is free at
//! once, and a standby may take it as soon as the server is back. The old leader checked its
//! connection only between pages and went on delivering its current page meanwhile, so two
//! processes delivered for one forwarder for seconds (issue 26, part 3). Now a watcher asks the
//! server every [`CHECK_INTERVAL`] whether this session still holds the lock and cancels the
//! lead's token the moment it does not, or does not answer within [`CHECK_TIMEOUT`]; every
//! delivery runs under that token. A new leader waits [`TAKEOVER_GRACE`], longer than the
//! old one can take to notice, before its first delivery.

use std::time::Duration;

use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::store::feed;
use crate::store::{Store, StoreError};

/// How often the leader asks whether it still holds the lock.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// A check not answered within this is a lost lead (the server may have gone).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new leader waits before delivering: past the longest a previous leader whose
/// session ended can take to stop (one interval and one timeout), with a margin.
pub const TAKEOVER_GRACE: Duration = Duration::from_millis(1_750);
/// Releasing the lock on the way out is bounded: a server that does not answer frees it when
/// the connection closes.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// A held lead: `token` is cancelled when the lead is lost, when `stop` is cancelled, or by
/// [`Lead::end`].
pub struct Lead {
    pub token: CancellationToken,
    watcher: JoinHandle<()>,
}

/// Try to take forwarder `name`'s lock; None when another process holds it.
pub async fn take(
    store: &Store,
    name: &str,
    stop: &CancellationToken,
) -> Result<Option<Lead>, StoreError> {
    // Detached: the lock must never go back to the pool with its connection.
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(StoreError::query("connecting for the forwarder lock"))?
        .detach();
    if !feed::try_lead(&mut conn, name).await? {
        let _ = conn.close().await;
        return Ok(None);
    }
    let token = stop.child_token();
    let watcher = tokio::spawn(watch(conn, name.to_string(), token.clone()));
    Ok(Some(Lead { token, watcher }))
}

impl Lead {
    /// Give the lead up: the watcher releases the lock and closes its connection.
    pub async fn end(self) {
        self.token.cancel();
        let _ = self.watcher.await;
    }
}

async fn watch(mut conn: sqlx::PgConnection, name: String, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
        let why = match tokio::time::timeout(CHECK_TIMEOUT, feed::still_leading(&mut conn, &name))
            .await
        {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => "the lock is no longer held by this session".to_string(),
            Ok(Err(e)) => crate::error_text::chain_text(&e),
            Err(_) => format!(
                "the lock check had no answer within {} ms",
                CHECK_TIMEOUT.as_millis()
            ),
        };
        if !token.is_cancelled() {
            tracing::warn!(forwarder = %name, %why, "forwarder lost its lead: stopped delivering");
            metrics::counter!("mailroom_forward_leads_lost_total", "forwarder" => name.clone())
                .increment(1);
        }
        token.cancel();
        // The session is gone or unanswering: drop the connection without waiting on it.
        return;
    }
    let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
        if let Err(e) = feed::release_lead(&mut conn, &name).await {
            tracing::debug!(forwarder = %name, error = %e, "releasing the forwarder lock");
        }
        let _ = conn.close().await;
    })
    .await;
}
