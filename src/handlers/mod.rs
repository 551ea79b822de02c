//! The handlers Mailroom ships (`crate::Worker::new` registers them under the names a queue's
//! `handler = "..."` config uses). The engine owns the registry; handlers own what a message
//! means and how it is stored.

pub mod sendgrid;

pub use sendgrid::{
    HookError, MessageStatusHook, NewEmail, NewEvent, SendgridConfigError, SendgridHandler,
    SendgridHandlerConfig, SendgridHook, StoredBatch, SuppressionsHook, MESSAGE_STATUS_HOOK,
    SENDGRID_HANDLER, SUPPRESSIONS_HOOK,
};
