//! An application's own Mailroom worker, as a Rust team would write it:
//!
//! - [`Orders`]: a handler for the application's own queue of JSON order messages, stored in
//!   its own table (`app_orders`), idempotent on the order id, configured by `[handlers.orders]`.
//! - [`Suppressions`]: a SendGrid hook that marks an address in the application's `app_users`
//!   table when SendGrid reports a bounce, a drop, a spam report or an unsubscribe, exactly once
//!   per event (it runs in the transaction that stores the events and sees only new ones).
//!
//! The tables are in `schema.sql`; the application owns them, not Mailroom's migrations.

mod orders;
mod suppressions;

pub use orders::{Order, Orders, OrdersConfig};
pub use suppressions::{Suppressions, SUPPRESSING_EVENTS};

/// The application's tables, for tests and the demo (`psql -f schema.sql` does the same).
pub const SCHEMA: &str = include_str!("../schema.sql");
