//! The SendGrid hook: when SendGrid reports that an address must not be mailed (a hard bounce,
//! a drop, a spam report, an unsubscribe), mark it in the application's `app_users` table
//! (`email_status`, `email_status_at`) and log the change in `app_email_status_changes`.
//!
//! Exactly once per event, without any bookkeeping of its own: Mailroom calls the hook inside
//! the transaction that stores the batch, with only the events that transaction inserted. A
//! redelivered message, a duplicate, the same `sg_event_id` in two batches or in two worker
//! processes: the event is new in exactly one committed transaction, and only that one ran the
//! hook's writes.

use std::time::Duration;

use mailroom::{BoxFuture, HookError, SendgridHook, StoredBatch};
use sqlx::PgConnection;

/// The event types that suppress an address. A `bounce` counts only when its type is `bounce`
/// (a hard bounce); `blocked` is SendGrid's temporary refusal and does not.
pub const SUPPRESSING_EVENTS: &[&str] = &[
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
];

/// Fault injection for the tests only: sleep this long after the hook's writes and before
/// Mailroom commits, so a test can kill the process in between.
pub const ENV_PAUSE_BEFORE_COMMIT_MS: &str = "APP_HOOK_PAUSE_BEFORE_COMMIT_MS";

#[derive(Debug, Default)]
pub struct Suppressions {
    pause_before_commit: Option<Duration>,
}

impl Suppressions {
    pub fn from_env() -> Self {
        Self {
            pause_before_commit: std::env::var(ENV_PAUSE_BEFORE_COMMIT_MS)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
        }
    }

    async fn apply(&self, tx: &mut PgConnection, batch: &StoredBatch<'_>) -> Result<(), HookError> {
        let mut changed = 0;
        for new in batch.events_of(SUPPRESSING_EVENTS) {
            let e = new.event;
            if e.event == "bounce" && e.bounce_type.as_deref().is_some_and(|t| t != "bounce") {
                continue;
            }
            let Some(email) = e.email.as_deref() else {
                continue;
            };
            let email = email.trim().to_lowercase();
            sqlx::query(
                "INSERT INTO app_users (email, email_status, email_status_at) VALUES ($1, $2, $3)
                 ON CONFLICT (email) DO UPDATE
                 SET email_status = EXCLUDED.email_status, email_status_at = EXCLUDED.email_status_at
                 WHERE app_users.email_status_at IS NULL
                    OR app_users.email_status_at <= EXCLUDED.email_status_at",
            )
            .bind(&email)
            .bind(&e.event)
            .bind(e.occurred_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO app_email_status_changes (email, status, sg_event_id) VALUES ($1, $2, $3)",
            )
            .bind(&email)
            .bind(&e.event)
            .bind(&e.sg_event_id)
            .execute(&mut *tx)
            .await?;
            changed += 1;
        }
        if changed > 0 {
            tracing::info!(changed, "suppressions: addresses marked");
        }
        if let Some(pause) = self.pause_before_commit {
            tracing::info!(
                pause_ms = pause.as_millis() as u64,
                "suppressions: hook done, pausing before commit"
            );
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }
}

impl SendgridHook for Suppressions {
    fn name(&self) -> &str {
        "suppressions"
    }

    fn on_stored<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(self.apply(tx, batch))
    }
}
