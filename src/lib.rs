//! The Mailroom worker: long-polls SQS, decodes SendGrid callbacks, stores them in Postgres,
//! and deletes each message only after its transaction commits. See ARCHITECTURE.md.

pub mod handler;
