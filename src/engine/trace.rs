//! The worker's trace spans (`mailroom-otel`): receive, each message (a child of the trace its
//! router request started, read from the message's `traceparent` attribute or X-Ray header),
//! decode, the handler's batch (one transaction, linked to every message in it: a batch has many
//! parents, so links, not one parent) and the ack.
//!
//! All at TRACE level under `mailroom_otel::TARGET`: disabled callsites unless an OTLP exporter
//! is configured, so these functions cost a cached check per call when tracing is off.

use tracing::field::Empty;
use tracing::{Level, Span};

use crate::sqs::Received;

/// One ReceiveMessage call.
pub fn receive(queue: &str, max: usize) -> Span {
    tracing::span!(target: mailroom_otel::TARGET, Level::TRACE, "sqs.receive",
        otel.kind = "consumer", messaging.system = "aws_sqs", messaging.operation.type = "receive",
        messaging.destination.name = %queue, messaging.batch.max = max, messaging.batch.message_count = Empty)
}

/// One message, from its receive to its ack: continues the trace the message carries.
pub fn message(queue: &str, message: &Received, received_by: &Span) -> Span {
    let span = tracing::span!(target: mailroom_otel::TARGET, Level::TRACE, "mailroom.message",
        otel.kind = "consumer", messaging.system = "aws_sqs", messaging.operation.type = "process",
        messaging.destination.name = %queue, messaging.message.id = %message.message_id,
        messaging.sqs.receive_count = message.receive_count, mailroom.outcome = Empty);
    if span.is_disabled() {
        return span;
    }
    if let Some(parent) = mailroom_otel::remote_parent(
        message
            .attributes
            .get(mailroom_otel::TRACEPARENT_ATTRIBUTE)
            .map(String::as_str),
        message.aws_trace_header.as_deref(),
    ) {
        mailroom_otel::set_remote_parent(&span, parent);
    }
    if let Some(receive) = mailroom_otel::span_context(received_by) {
        mailroom_otel::add_link(&span, receive);
    }
    span
}

/// Opening one message's envelope (and fetching an offloaded body).
pub fn decode(message: &Span) -> Span {
    tracing::span!(target: mailroom_otel::TARGET, parent: message, Level::TRACE, "mailroom.decode")
}

/// One handler call: one transaction for the batch, linked to each message's span.
pub fn batch<'a>(queue: &str, handler: &str, messages: impl Iterator<Item = &'a Span>) -> Span {
    let span = tracing::span!(target: mailroom_otel::TARGET, parent: None, Level::TRACE, "mailroom.batch",
        messaging.destination.name = %queue, mailroom.handler = %handler,
        messaging.batch.message_count = Empty, mailroom.done = Empty, mailroom.retried = Empty,
        mailroom.dead_lettered = Empty);
    if span.is_disabled() {
        return span;
    }
    let mut n = 0u64;
    for message in messages {
        n += 1;
        if let Some(sc) = mailroom_otel::span_context(message) {
            mailroom_otel::add_link(&span, sc);
        }
    }
    span.record("messaging.batch.message_count", n);
    span
}

/// Waiting for SQS to confirm a batch's deletes and visibility changes.
pub fn ack(batch: &Span, entries: usize) -> Span {
    tracing::span!(target: mailroom_otel::TARGET, parent: batch, Level::TRACE, "sqs.ack",
        messaging.operation.type = "settle", mailroom.entries = entries)
}
