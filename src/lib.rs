//! The Mailroom worker: long-polls SQS, decodes SendGrid callbacks, stores them in Postgres,
//! and deletes each message only after its transaction commits. See ARCHITECTURE.md.

pub mod acker;
pub mod admin;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod engine;
pub mod handler;
pub mod handlers;
pub mod logging;
pub mod notify;
pub mod s3;
pub mod signals;
pub mod sqs;
pub mod store;
pub mod telemetry;
