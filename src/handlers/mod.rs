//! The handlers Mailroom ships (`crate::Worker::new` registers them under the names a queue's
//! `handler = "..."` config uses). The engine owns the registry; handlers own what a message
//! means and how it is stored.

pub mod sendgrid;

pub use sendgrid::{
    HookError, NewEmail, NewEvent, SendgridConfigError, SendgridHandler, SendgridHandlerConfig,
    SendgridHook, StoredBatch, SENDGRID_HANDLER,
};
