//! The optional wake-up call for feed readers (`[handlers.sendgrid] notify_feed = true`): one
//! `pg_notify('mailroom_feed', <stream>)` per batch transaction that stored something new, so a
//! reader can `LISTEN mailroom_feed` instead of polling.
//!
//! Per batch, never per row: Postgres takes a server-wide lock to queue notifications at commit,
//! and a notification per row is what has caused outages at scale. Within one transaction,
//! identical notifications are folded into one, so a batch sends at most one per stream, and a
//! batch of redeliveries (nothing new, no hook call) sends none. A notification is only a hint:
//! readers still read with `mailroom_feed_events`, which decides what is readable.

use sqlx::PgConnection;

use super::hook::{HookError, SendgridHook, StoredBatch};
use super::status::hook_error;
use crate::handler::BoxFuture;
use crate::store::feed::{self, Stream};

/// The name of [`FeedNotifyHook`] in logs and errors.
pub const FEED_NOTIFY_HOOK: &str = "mailroom_feed_notify";

/// Sends the batch's coalesced notification.
#[derive(Debug, Default, Clone, Copy)]
pub struct FeedNotifyHook;

impl FeedNotifyHook {
    async fn apply(&self, tx: &mut PgConnection, batch: &StoredBatch<'_>) -> Result<(), HookError> {
        if !batch.events.is_empty() {
            feed::notify(tx, Stream::Events).await.map_err(hook_error)?;
        }
        if !batch.emails.is_empty() {
            feed::notify(tx, Stream::InboundEmails)
                .await
                .map_err(hook_error)?;
        }
        Ok(())
    }
}

impl SendgridHook for FeedNotifyHook {
    fn name(&self) -> &str {
        FEED_NOTIFY_HOOK
    }

    fn on_stored<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(self.apply(tx, batch))
    }
}
