//! mailroom-router: Mailroom's edge. It takes SendGrid's callbacks (Event Webhook batches and
//! Inbound Parse posts) off API Gateway and puts each one on SQS as a
//! [`mailroom_envelope`] envelope, answering 2xx only once SQS has accepted it.
//!
//! The same core ([`App::handle`]) runs in AWS Lambda ([`lambda`]) and in a plain HTTP server
//! for development and end-to-end tests ([`serve`]); AWS sits behind the [`Sink`] seam.
//! `serve` can also export Prometheus metrics on a listener of their own ([`telemetry`]).
//! See README.md for configuration and the build recipe.

pub mod app;
pub mod auth;
pub mod aws;
pub mod config;
pub mod lambda;
pub mod message_group;
pub mod request;
pub mod routes;
pub mod routing;
pub mod serve;
pub mod sink;
pub mod stream_envelope;
pub mod stream_inbound;
pub mod telemetry;
pub mod unknown_webhooks;
pub mod upload;

pub use app::{App, Clock};
pub use aws::AwsSink;
pub use config::{Config, ConfigError};
pub use request::{CallbackRequest, Reply};
pub use sink::{Attribute, AttributeValue, Sink, SinkError};
