//! The sendgrid handler's built-in hooks: each message's status per recipient
//! (`mailroom_message_status`) and the suppression list (`mailroom_suppressions`), updated in
//! the batch's transaction from the events it inserted, so exactly once per event and never
//! ahead of or behind the events themselves. On by default (`[handlers.sendgrid]
//! message_status`, `suppressions`); they run before the application's hooks, so those already
//! see the updated rows.
//!
//! The rules and the SQL are in `store/status.rs` and migration `20261202000020`; here is only
//! which events go to which statement.

use sqlx::PgConnection;

use super::hook::{HookError, SendgridHook, StoredBatch};
use crate::handler::BoxFuture;
use crate::store::status::SUPPRESSION_EVENTS;
use crate::store::{update_message_status, update_suppressions, ErrorClass, StoreError};

/// The name of [`MessageStatusHook`] in logs and errors.
pub const MESSAGE_STATUS_HOOK: &str = "mailroom_message_status";
/// The name of [`SuppressionsHook`] in logs and errors.
pub const SUPPRESSIONS_HOOK: &str = "mailroom_suppressions";

/// Keeps `mailroom_message_status`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MessageStatusHook;

/// Keeps `mailroom_suppressions`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SuppressionsHook;

fn has_text(s: Option<&str>) -> bool {
    s.is_some_and(|s| !s.trim().is_empty())
}

/// A failed statement of a built-in hook: a database fault is transient, anything else (a bug
/// of ours, not bad SendGrid data) a counted retry.
pub(super) fn hook_error(e: StoreError) -> HookError {
    match e.class() {
        ErrorClass::Transient => HookError::transient(e.to_string()),
        ErrorClass::Data | ErrorClass::Other => HookError::retry(e.to_string()),
    }
}

impl MessageStatusHook {
    async fn apply(&self, tx: &mut PgConnection, batch: &StoredBatch<'_>) -> Result<(), HookError> {
        let ids: Vec<i64> = batch
            .events
            .iter()
            .filter(|n| {
                has_text(n.event.sg_message_id.as_deref()) && has_text(n.event.email.as_deref())
            })
            .map(|n| n.id)
            .collect();
        update_message_status(tx, &ids).await.map_err(hook_error)?;
        Ok(())
    }
}

impl SuppressionsHook {
    async fn apply(&self, tx: &mut PgConnection, batch: &StoredBatch<'_>) -> Result<(), HookError> {
        let ids: Vec<i64> = batch
            .events_of(SUPPRESSION_EVENTS)
            .filter(|n| has_text(n.event.email.as_deref()))
            .map(|n| n.id)
            .collect();
        update_suppressions(tx, &ids).await.map_err(hook_error)?;
        Ok(())
    }
}

impl SendgridHook for MessageStatusHook {
    fn name(&self) -> &str {
        MESSAGE_STATUS_HOOK
    }

    fn on_stored<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(self.apply(tx, batch))
    }
}

impl SendgridHook for SuppressionsHook {
    fn name(&self) -> &str {
        SUPPRESSIONS_HOOK
    }

    fn on_stored<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(self.apply(tx, batch))
    }
}
