//! The core: one callback request in, one answer out, with SQS (and S3) in between.
//!
//! The rule this module exists for: answer 2xx only after SQS has accepted the message (and S3
//! the offloaded body, when there is one). Every failure is a 5xx with a short reason and an
//! error log line carrying the request id, so SendGrid retries instead of the callback being
//! lost, which is what the Node Lambda this replaces did.
//!
//! Each answer, S3 offload and failed send is counted here, once, for `serve`'s Prometheus
//! metrics ([`crate::telemetry`]); without an installed recorder (Lambda, tests) that is skipped.

use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use mailroom_envelope::{
    Envelope, Kind, Origin, S3Pointer, Source, ATTR_KIND, ATTR_VERSION, ENVELOPE_VERSION,
    EXTENDED_PAYLOAD_SIZE_ATTRIBUTES,
};
use serde_json::json;

use crate::auth::{self, AuthError};
use crate::config::Config;
use crate::request::{CallbackRequest, Reply};
use crate::routing::{self, kind_name, Route};
use crate::sink::{Attribute, Sink};
use crate::telemetry;

/// Request headers never copied into the envelope: credentials don't belong in a queue or a
/// database.
const REDACTED_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Where "now" comes from (tests and conformance vectors inject a fixed time).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The router: configuration, a sink, and a clock.
pub struct App<S> {
    config: Config,
    sink: S,
    clock: Clock,
}

impl<S: Sink> App<S> {
    pub fn new(config: Config, sink: S) -> Self {
        Self {
            config,
            sink,
            clock: Arc::new(Utc::now),
        }
    }

    /// Replaces the clock (signature timestamps are checked against it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles one HTTP callback request.
    pub async fn handle(&self, request: CallbackRequest) -> Reply {
        let started = telemetry::enabled().then(Instant::now);
        let route = routing::route(&self.config, &request.path, request.stage.as_deref());
        let reply = match self.accept(route, &request) {
            Err(refused) => refused,
            Ok((kind, queue_url)) => {
                let body = mailroom_envelope::encode(&self.envelope(kind, &request));
                let mut attributes = vec![
                    Attribute::string(ATTR_KIND, kind_name(kind)),
                    Attribute::number(ATTR_VERSION, ENVELOPE_VERSION),
                ];
                let span = trace_span(kind, &request);
                // The worker continues this trace: the W3C context rides along as a message
                // attribute.
                if let Some(traceparent) = (!span.is_disabled())
                    .then(|| mailroom_otel::traceparent(&span))
                    .flatten()
                {
                    attributes.push(Attribute::string(
                        mailroom_otel::TRACEPARENT_ATTRIBUTE,
                        traceparent,
                    ));
                }
                let reply = self
                    .deliver(kind, queue_url, body, attributes, &request.request_id)
                    .instrument(span.clone())
                    .await;
                span.record("http.response.status_code", reply.status.as_u16());
                reply
            }
        };
        observe_request(route_label(route), &reply, request.body.len(), started);
        reply
    }

    /// Answers a request `serve` refused before it had the whole body (over the size limit,
    /// unreadable), counted like every other answer.
    pub fn refuse_unread(&self, path: &str, reply: Reply, started: Instant) -> Reply {
        let route = routing::route(&self.config, path, None);
        observe_request(route_label(route), &reply, 0, Some(started));
        reply
    }

    /// Everything decided before anything is sent: the route, method, size and credentials, and
    /// the queue. A kind and its queue, or the refusal to answer.
    fn accept<'a>(
        &'a self,
        route: Route,
        request: &'a CallbackRequest,
    ) -> Result<(Kind, &'a str), Reply> {
        let kind = match route {
            Route::NotFound => {
                return Err(Reply::error(StatusCode::NOT_FOUND, "no such callback path"))
            }
            Route::Health => {
                return Err(
                    if request.method == Method::GET || request.method == Method::HEAD {
                        Reply::json(StatusCode::OK, json!({ "status": "ok" }))
                    } else {
                        Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
                            .with_header("allow", "GET, HEAD")
                    },
                );
            }
            Route::Callback(kind) => kind,
        };
        if request.method != Method::POST {
            return Err(Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
                .with_header("allow", "POST"));
        }
        if request.body.len() > self.config.max_request_bytes {
            return Err(Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is {} bytes, over the {} byte limit",
                    request.body.len(),
                    self.config.max_request_bytes
                ),
            ));
        }
        if let Err(e) = self.authorize(kind, request) {
            tracing::warn!(request_id = %request.request_id, kind = kind_name(kind), reason = %e, "refused");
            let reply = Reply::error(e.status(), e.to_string());
            return Err(if e.status() == StatusCode::UNAUTHORIZED {
                reply.with_header(
                    "www-authenticate",
                    "Basic realm=\"mailroom\", charset=\"UTF-8\"",
                )
            } else {
                reply
            });
        }
        let Some(queue_url) = routing::queue_url(&self.config, kind, &request.stage_variables)
        else {
            tracing::error!(request_id = %request.request_id, kind = kind_name(kind), "no queue configured");
            return Err(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no queue configured for {}", kind_name(kind)),
            ));
        };
        Ok((kind, queue_url))
    }

    /// Handles a legacy mapping-template event (`{"queue_url", "body-json"}` or
    /// `{"queue_url", "body-raw", "http-headers"}`): its JSON text is forwarded as-is (the worker
    /// decodes these shapes), to the configured queue for its kind. `None` when `event` is not
    /// such an event.
    pub async fn handle_legacy(&self, event: &str, request_id: &str) -> Option<Reply> {
        // Cheap pre-filter so proxy events (up to 6 MB) are not parsed twice.
        if !event.contains("\"body-json\"") && !event.contains("\"body-raw\"") {
            return None;
        }
        let started = telemetry::enabled().then(Instant::now);
        let value: serde_json::Value = serde_json::from_str(event).ok()?;
        let kind = legacy_kind(&value)?;
        let reply = match self.legacy_queue(kind, &value, request_id) {
            Err(refused) => refused,
            Ok(queue_url) => {
                let attributes = vec![Attribute::string(ATTR_KIND, kind_name(kind))];
                self.deliver(kind, queue_url, event.to_owned(), attributes, request_id)
                    .await
            }
        };
        observe_request(kind_name(kind), &reply, event.len(), started);
        Some(reply)
    }

    /// The queue of a legacy event: its own `queue_url` when allowed, else the kind's.
    fn legacy_queue<'a>(
        &'a self,
        kind: Kind,
        value: &'a serde_json::Value,
        request_id: &str,
    ) -> Result<&'a str, Reply> {
        let event_queue = value.get("queue_url").and_then(|v| v.as_str());
        // Legacy events have no stage variables.
        static NO_VARS: std::sync::LazyLock<std::collections::HashMap<String, String>> =
            std::sync::LazyLock::new(Default::default);
        let queue_url = match event_queue {
            Some(url) if self.config.allow_event_queue_url && !url.is_empty() => Some(url),
            _ => routing::queue_url(&self.config, kind, &NO_VARS),
        };
        let Some(queue_url) = queue_url else {
            tracing::error!(%request_id, kind = kind_name(kind), "no queue configured for legacy event");
            return Err(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no queue configured for {}", kind_name(kind)),
            ));
        };
        Ok(queue_url)
    }

    fn authorize(&self, kind: Kind, request: &CallbackRequest) -> Result<(), AuthError> {
        let now = (self.clock)().timestamp();
        let max_age = self.config.signature_max_age_secs;
        match kind {
            Kind::Events => {
                if let Some(key) = &self.config.events_public_key {
                    auth::check_signature(key, request, now, max_age)?;
                }
            }
            Kind::Inbound => {
                if let Some(expected) = &self.config.inbound_basic_auth {
                    auth::check_basic_auth(expected, request)?;
                }
                if let Some(key) = &self.config.inbound_public_key {
                    auth::check_signature(key, request, now, max_age)?;
                }
            }
            Kind::Message => {}
        }
        Ok(())
    }

    fn envelope(&self, kind: Kind, request: &CallbackRequest) -> Envelope {
        Envelope {
            origin: Origin::Router {
                version: ENVELOPE_VERSION,
            },
            kind,
            received_at: Some((self.clock)()),
            source: Some(Source {
                path: request.path.clone(),
                stage: request.stage.clone(),
                request_id: Some(request.request_id.clone()),
                webhook: None,
            }),
            headers: request
                .headers
                .iter()
                .filter(|(name, _)| !REDACTED_HEADERS.contains(&name.as_str()))
                .cloned()
                .collect(),
            content_type: request.header("content-type").map(str::to_owned),
            body: request.body.to_vec(),
            queue_url: None,
        }
    }

    /// Sends `body` to `queue_url`, first offloading it to S3 when it is too large for SQS.
    async fn deliver(
        &self,
        kind: Kind,
        queue_url: &str,
        body: String,
        mut attributes: Vec<Attribute>,
        request_id: &str,
    ) -> Reply {
        let size = body.len();
        let body = if size + attributes_size(&attributes) > self.config.max_message_bytes {
            let Some(bucket) = &self.config.large_body_bucket else {
                tracing::warn!(%request_id, kind = kind_name(kind), size, "too large for SQS and no bucket configured");
                return Reply::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "callback is {size} bytes encoded, over the {} byte SQS message limit, \
                         and no MAILROOM_LARGE_BODY_BUCKET is configured",
                        self.config.max_message_bytes
                    ),
                );
            };
            let key = self.object_key(kind);
            if let Err(e) = self.sink.put_object(bucket, &key, Bytes::from(body)).await {
                tracing::error!(%request_id, kind = kind_name(kind), error = %e, "S3 offload failed");
                count(telemetry::S3_OFFLOAD_FAILURES, kind);
                return Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not store the callback body; retry later",
                );
            }
            count(telemetry::S3_OFFLOADS, kind);
            attributes.push(Attribute::number(EXTENDED_PAYLOAD_SIZE_ATTRIBUTES[0], size));
            S3Pointer {
                bucket: bucket.clone(),
                key,
            }
            .to_message_body()
        } else {
            body
        };
        match self.sink.send_message(queue_url, body, attributes).await {
            Ok(message_id) => {
                tracing::info!(%request_id, kind = kind_name(kind), %message_id, size, "queued");
                Reply::json(
                    StatusCode::OK,
                    json!({ "status": "queued", "message_id": message_id }),
                )
            }
            Err(e) => {
                tracing::error!(%request_id, kind = kind_name(kind), error = %e, "SQS send failed");
                count(telemetry::SQS_SEND_FAILURES, kind);
                Reply::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "could not queue the callback; retry later",
                )
            }
        }
    }

    fn object_key(&self, kind: Kind) -> String {
        let date = (self.clock)().format("%Y-%m-%d");
        let prefix = &self.config.large_body_prefix;
        let id = uuid::Uuid::new_v4();
        if prefix.is_empty() {
            format!("{}/{date}/{id}", kind_name(kind))
        } else {
            format!("{prefix}/{}/{date}/{id}", kind_name(kind))
        }
    }
}

/// The `kind` label of a request's route: its callback kind, or `other`.
fn route_label(route: Route) -> &'static str {
    match route {
        Route::Callback(kind) => kind_name(kind),
        Route::Health | Route::NotFound => "other",
    }
}

/// Counts one answered request (`started` is `None` when metrics are off).
fn observe_request(kind: &'static str, reply: &Reply, bytes: usize, started: Option<Instant>) {
    let Some(started) = started else {
        return;
    };
    let status = telemetry::status_label(reply.status);
    metrics::counter!(telemetry::REQUESTS, "kind" => kind, "status" => status).increment(1);
    metrics::histogram!(telemetry::REQUEST_DURATION, "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!(telemetry::REQUEST_BYTES, "kind" => kind).record(bytes as f64);
}

/// Increments one of the per-kind fault or offload counters (when metrics are on).
fn count(name: &'static str, kind: Kind) {
    if telemetry::enabled() {
        metrics::counter!(name, "kind" => kind_name(kind)).increment(1);
    }
}

/// The kind of a legacy mapping-template event, if `value` is one.
fn legacy_kind(value: &serde_json::Value) -> Option<Kind> {
    let object = value.as_object()?;
    if object.contains_key("requestContext") || object.contains_key("httpMethod") {
        return None;
    }
    if object.contains_key("body-json") {
        Some(Kind::Events)
    } else if object.contains_key("body-raw") {
        Some(Kind::Inbound)
    } else {
        None
    }
}

/// What SQS counts towards the message size for these attributes: name, type and value.
fn attributes_size(attributes: &[Attribute]) -> usize {
    attributes
        .iter()
        .map(|a| {
            let (data_type, value) = match &a.value {
                crate::sink::AttributeValue::String(v) => ("String", v),
                crate::sink::AttributeValue::Number(v) => ("Number", v),
            };
            a.name.len() + data_type.len() + value.len()
        })
        .sum()
}

/// The request's trace span: a child of the caller's `traceparent` (or API Gateway's X-Ray
/// `x-amzn-trace-id`) when it sent one, else a new trace. Disabled, at no cost, unless an OTLP
/// exporter is configured (`mailroom-otel`).
fn trace_span(kind: Kind, request: &CallbackRequest) -> tracing::Span {
    let span = tracing::span!(target: mailroom_otel::TARGET, parent: None, tracing::Level::TRACE,
        "router.request", otel.kind = "server", http.request.method = %request.method,
        url.path = %request.path, mailroom.kind = kind_name(kind),
        mailroom.request_id = %request.request_id, http.response.status_code = tracing::field::Empty);
    if !span.is_disabled() {
        if let Some(parent) = mailroom_otel::remote_parent(
            request.header("traceparent"),
            request.header("x-amzn-trace-id"),
        ) {
            mailroom_otel::set_remote_parent(&span, parent);
        }
    }
    span
}
