//! The seam between the engine and the work: a [`Handler`] gets decoded callbacks, never SQS
//! types, and answers with an [`Outcome`] per message. Retry semantics are types, so the engine
//! (not each handler) decides visibility timeouts, dead-lettering and deletes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailroom_envelope::Envelope;

/// One message, decoded, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The SQS message id: stable across redeliveries of the same message.
    pub message_id: String,
    /// Name of the configured queue it came from.
    pub queue: String,
    /// 1 on first delivery (SQS ApproximateReceiveCount).
    pub receive_count: u32,
    /// When SQS accepted the message (SentTimestamp), if known.
    pub sent_at: Option<DateTime<Utc>>,
    /// The message's string attributes.
    pub attributes: HashMap<String, String>,
    /// The decoded callback (an S3-offloaded body is already fetched).
    pub envelope: Envelope,
}

/// What to do with a message once its handler ran.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored (or already stored): delete the message.
    Done,
    /// Could not finish now; try again later.
    Retry(Retry),
    /// Will never succeed as it is (malformed, unsupported): keep it in the dead-letter store with
    /// this reason, then delete it from SQS.
    DeadLetter { reason: String },
}

/// A retry request.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub reason: String,
    /// Override the queue's retry interval for this attempt.
    pub after: Option<Duration>,
    /// A fault outside the message (Postgres down, S3 unreachable): retried with the queue's
    /// longest interval until the fault clears, never dead-lettered for it; the queue's SQS
    /// redrive policy remains the last resort.
    pub transient: bool,
}

impl Outcome {
    /// A retry that counts towards the queue's retry limit.
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry(Retry {
            reason: reason.into(),
            after: None,
            transient: false,
        })
    }

    /// A retry caused by infrastructure, not by the message.
    pub fn transient(reason: impl Into<String>) -> Self {
        Outcome::Retry(Retry {
            reason: reason.into(),
            after: None,
            transient: true,
        })
    }

    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter {
            reason: reason.into(),
        }
    }
}

/// A boxed future, so handlers can live behind `dyn Handler` in the registry.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Work done for messages. Implementations must be idempotent: delivery is at-least-once.
pub trait Handler: Send + Sync + 'static {
    /// Handle the messages of one batch (one receive, or those gathered in the queue's batch
    /// window) and return exactly one outcome per job, in order. Writing them in one transaction
    /// is the point of batching.
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>>;
}

/// Handlers by the name the config uses (`handler = "sendgrid"`).
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, name: impl Into<String>, handler: Arc<dyn Handler>) -> &mut Self {
        self.handlers.insert(name.into(), handler);
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// A message kept whole because it will never be handled as it is.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub queue: String,
    pub message_id: String,
    /// The SQS message body exactly as received.
    pub body: String,
    pub attributes: HashMap<String, String>,
    pub receive_count: u32,
    /// Handler name, when one was chosen.
    pub handler: Option<String>,
    /// Why it was dead-lettered: a clear, human-readable reason.
    pub reason: String,
}

/// Where dead letters are kept (the store's dead-letter table). The engine deletes the SQS
/// message only after `keep` succeeded; an `Err` means "could not keep it now": the message is
/// retried later, never dropped.
pub trait DeadLetterSink: Send + Sync + 'static {
    fn keep<'a>(&'a self, letters: &'a [DeadLetter]) -> BoxFuture<'a, Result<(), KeepError>>;
}

/// Dead letters could not be kept now (the sink's own error is the source).
#[derive(Debug, thiserror::Error)]
#[error("could not keep dead letters: {0}")]
pub struct KeepError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl KeepError {
    pub fn new(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(err.into())
    }
}
