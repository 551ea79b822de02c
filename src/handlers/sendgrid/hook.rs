//! SendGrid hooks: the application's own code, run inside the transaction that stores a batch.
//!
//! Why inside the transaction: a hook that marks an address invalid on a bounce must do so
//! exactly once per event. Delivery is at-least-once (SQS redelivers, SendGrid retries, two
//! processes may hold copies of one event), so "once" can only come from the store's own
//! idempotency: the events insert is `ON CONFLICT DO NOTHING ... RETURNING`, and a hook is handed
//! only the rows that this transaction inserted. Its writes commit with them or not at all: a
//! hook error rolls the batch back, a crash before `COMMIT` leaves neither, and the redelivered
//! message then finds the events new again and calls the hook again, once.

use mailroom_sendgrid::{Event, InboundEmail};
use sqlx::PgConnection;

use crate::handler::BoxFuture;
use crate::store::{classify, ErrorClass, InsertedEvent};

/// An event that this transaction stored for the first time.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// `mailroom_events.id` of the new row.
    pub id: i64,
    pub event: &'a Event,
    /// The configured queue and the SQS message that carried it.
    pub queue: &'a str,
    pub sqs_message_id: &'a str,
}

impl<'r> From<&InsertedEvent<'r, '_>> for NewEvent<'r> {
    /// A row `insert_new_events` answered with, as a hook sees it.
    fn from(n: &InsertedEvent<'r, '_>) -> Self {
        NewEvent {
            id: n.id,
            event: n.record.event,
            queue: n.record.queue,
            sqs_message_id: n.record.sqs_message_id,
        }
    }
}

/// An inbound email that this transaction stored for the first time.
#[derive(Debug, Clone, Copy)]
pub struct NewEmail<'a> {
    /// `mailroom_inbound_emails.id` of the new row.
    pub id: i64,
    pub email: &'a InboundEmail,
    pub queue: &'a str,
    pub sqs_message_id: &'a str,
}

/// What one transaction stored for the first time. Either list may be empty (a batch of
/// redeliveries stores nothing new); hooks are not called when both are.
#[derive(Debug, Clone, Default)]
pub struct StoredBatch<'a> {
    /// In insertion (`id`) order.
    pub events: Vec<NewEvent<'a>>,
    pub emails: Vec<NewEmail<'a>>,
}

impl<'a> StoredBatch<'a> {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.emails.is_empty()
    }

    /// The new events of the given types (`"bounce"`, `"spamreport"`, ...).
    pub fn events_of<'s>(&'s self, types: &'s [&str]) -> impl Iterator<Item = &'s NewEvent<'a>> {
        self.events
            .iter()
            .filter(move |e| types.contains(&e.event.event.as_str()))
    }
}

/// Why a hook could not finish. Every variant rolls the whole transaction back: no event of the
/// batch is stored and none of the hook's writes happened.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Try again later, counted against the message's retries (then a dead letter).
    #[error("{0}")]
    Retry(String),
    /// A fault outside the data (the application's database or service is down): retried at
    /// the queue's longest interval and never dead-lettered for it.
    #[error("{0}")]
    Transient(String),
    /// The data is bad and will never work: the message becomes a dead letter with this reason.
    #[error("{0}")]
    Reject(String),
}

impl HookError {
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry(reason.into())
    }
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient(reason.into())
    }
    pub fn reject(reason: impl Into<String>) -> Self {
        Self::Reject(reason.into())
    }
}

/// A failed query in a hook is classified as the store classifies its own: connection and
/// resource faults are transient, anything else a counted retry (a hook's data error is more
/// often its own bug than bad SendGrid data, so it is not dead-lettered at once).
impl From<sqlx::Error> for HookError {
    fn from(err: sqlx::Error) -> Self {
        match classify(&err) {
            ErrorClass::Transient => HookError::Transient(format!("hook query: {err}")),
            ErrorClass::Data | ErrorClass::Other => HookError::Retry(format!("hook query: {err}")),
        }
    }
}

/// Code the `sendgrid` handler runs in each batch's transaction, after the inserts and before
/// the commit, with what was new. Register it with `Worker::sendgrid_hook`.
///
/// `tx` is the batch's transaction: write with `sqlx::query(..).execute(&mut *tx)`; do not
/// commit or roll back (the handler does). Keep it short: row locks taken here are held until the
/// batch commits.
pub trait SendgridHook: Send + Sync + 'static {
    /// A name for logs and errors.
    fn name(&self) -> &str;

    fn on_stored<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>>;
}
