//! Mailroom: a worker that consumes SendGrid callbacks (and your own queues) from SQS and stores
//! them in Postgres, deleting each message only after its transaction committed. See
//! ARCHITECTURE.md for the map and the invariants.
//!
//! # Your own worker
//!
//! A custom binary registers its handlers (and SendGrid hooks) on a [`Worker`] and gets every
//! command of the shipped `mailroom` binary (`run`, `check`, `migrate`, `queues`,
//! `dead-letters`, `send`) with them:
//!
//! ```no_run
//! use mailroom::{BoxFuture, Handler, Job, Outcome, Setup, Store, Worker};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct OrdersConfig { max_items: usize }             // [handlers.orders] in the TOML file
//!
//! struct Orders { store: Store, config: OrdersConfig }
//!
//! impl Handler for Orders {
//!     fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
//!         Box::pin(async move {
//!             // Write in one transaction, commit, then answer Done (see examples/).
//!             jobs.iter().map(|_| Outcome::Done).collect()
//!         })
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Worker::new()
//!         .handler("orders", |config: OrdersConfig, setup: &Setup| {
//!             Ok::<_, std::convert::Infallible>(Orders { store: setup.store(), config })
//!         })
//!         .main()
//! }
//! ```
//!
//! A queue then names it: `[[queue]] name = "orders" handler = "orders"`. A handler's section is
//! deserialized once at start (and by `mailroom check`), never per message.
//!
//! Handlers never see SQS: a [`Job`] is a decoded message, an [`Outcome`] says what to do with
//! it (done, retry, dead letter), and the engine turns that into deletes and visibility changes.
//! Delivery is at-least-once, so handlers must be idempotent.
//!
//! SendGrid hooks ([`SendgridHook`]) run inside the transaction that stores a batch of SendGrid
//! events, with only the events stored for the first time: the way to act on a bounce exactly
//! once.

mod error_text;
mod malloc_tuning;
mod worker;

pub use config::{Config, ConfigError};
pub use handler::{BoxFuture, Handler, Job, Outcome, Retry};
pub use handlers::sendgrid::{HookError, NewEmail, NewEvent, SendgridHook, StoredBatch};
pub use mailroom_envelope::{Envelope, Kind};
pub use store::{classify, ErrorClass, Store, StoreError, Transaction};
pub use worker::{
    CheckLine, CheckReport, CheckStatus, Setup, SetupError, Worker, WorkerError,
    ENV_TELEMETRY_LISTEN,
};

/// The SendGrid data a hook sees, as decoded by `mailroom-sendgrid`.
pub mod sendgrid {
    pub use mailroom_sendgrid::{Attachment, Event, InboundEmail, InboundMode};
}

pub mod config;
/// Paced, signed HTTP delivery of the feed to the application (`[[forward]]`).
pub mod forward;
pub mod handler;
pub mod handlers;

// The rest is Mailroom's own machinery: public for its binaries, tests and benchmarks, not an
// interface for applications (it changes without notice).
#[doc(hidden)]
pub mod acker;
#[doc(hidden)]
pub mod admin;
#[doc(hidden)]
pub mod backoff;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod engine;
#[doc(hidden)]
pub mod logging;
#[doc(hidden)]
pub mod notify;
#[doc(hidden)]
pub mod s3;
#[doc(hidden)]
pub mod signals;
#[doc(hidden)]
pub mod sqs;
#[doc(hidden)]
pub mod store;
#[doc(hidden)]
pub mod telemetry;
