//! The handlers Mailroom ships, and one call to register them under the names a queue's
//! `handler = "..."` config uses. The engine owns the registry; handlers own what a message
//! means and how it is stored.

use std::sync::Arc;

use crate::handler::Registry;
use crate::store::Store;

pub mod sendgrid;

pub use sendgrid::{SendgridConfigError, SendgridHandler, SendgridHandlerConfig, SENDGRID_HANDLER};

/// Register every built-in handler: currently `"sendgrid"` ([`SendgridHandler`]). Fails on a
/// handler config that cannot work (checked at startup, not per message).
pub fn register_defaults(
    registry: &mut Registry,
    store: Store,
    config: SendgridHandlerConfig,
) -> Result<(), SendgridConfigError> {
    registry.register(
        SENDGRID_HANDLER,
        Arc::new(SendgridHandler::new(store, config)?),
    );
    Ok(())
}
