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

use crate::auth::{self, AuthError, KeyUsed};
use crate::config::Config;
use crate::message_group::message_group_id;
use crate::request::{CallbackRequest, Reply};
use crate::routing::{self, kind_name, Route, Target};
use crate::sink::{Attribute, Grouping, Sink};
use crate::stream_inbound::{refuse, Refusal};
use crate::telemetry;
use crate::unknown_webhooks::UnknownWebhooks;
use sha2::{Digest, Sha256};

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
    unknown_webhooks: UnknownWebhooks,
}

/// One message on its way to SQS.
struct Outgoing<'a> {
    kind: Kind,
    queue_url: &'a str,
    body: String,
    attributes: Vec<Attribute>,
    grouping: Grouping<'a>,
}

impl<S: Sink> App<S> {
    pub fn new(config: Config, sink: S) -> Self {
        Self {
            config,
            sink,
            clock: Arc::new(Utc::now),
            unknown_webhooks: UnknownWebhooks::default(),
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
            Ok((target, queue_url)) => {
                let kind = target.kind;
                let body = mailroom_envelope::encode(&self.envelope(&target, &request));
                let group_id = message_group_id(&target, &request.body);
                let dedup_id = queue_url
                    .ends_with(".fifo")
                    .then(|| hex::encode(Sha256::digest(&request.body)));
                let span = trace_span(kind, &request);
                let attributes = envelope_attributes(kind, &span);
                let outgoing = Outgoing {
                    kind,
                    queue_url,
                    body,
                    attributes,
                    grouping: Grouping {
                        group_id: group_id.as_deref(),
                        dedup_id: dedup_id.as_deref(),
                    },
                };
                let reply = self
                    .deliver(outgoing, &request.request_id)
                    .instrument(span.clone())
                    .await;
                span.record("http.response.status_code", reply.status.as_u16());
                reply
            }
        };
        observe_request(route, &reply, request.body.len(), started);
        reply
    }

    /// Answers a request `serve` refused before it had the whole body (over the size limit,
    /// unreadable), counted like every other answer.
    pub fn refuse_unread(&self, path: &str, reply: Reply, started: Instant) -> Reply {
        let route = routing::route(&self.config, path, None);
        observe_request(route, &reply, 0, Some(started));
        reply
    }

    /// Everything decided before anything is sent: the route, method, size and credentials, and
    /// the queue. A kind and its queue, or the refusal to answer.
    fn accept<'a>(
        &'a self,
        route: Route<'a>,
        request: &'a CallbackRequest,
    ) -> Result<(Target<'a>, &'a str), Reply> {
        let target = match route {
            Route::NotFound => {
                return Err(Reply::error(StatusCode::NOT_FOUND, "no such callback path"))
            }
            Route::UnknownWebhook { kind, name } => {
                self.unknown_webhooks.report(kind, name);
                return Err(Reply::error(
                    StatusCode::NOT_FOUND,
                    format!("no {} route named {name:?}", kind_name(kind)),
                ));
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
            Route::Callback(target) => target,
        };
        let kind = target.kind;
        if request.method != Method::POST {
            return Err(Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
                .with_header("allow", "POST"));
        }
        if let Err(e) = self.authorize(&target, request) {
            tracing::warn!(request_id = %request.request_id, kind = kind_name(kind),
                webhook = target.label(), reason = %e, "refused");
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
        // After authentication, so a stranger's oversized post is a 401/403, not a 5xx alarm.
        if request.body.len() > self.config.max_request_bytes {
            let detail = format!(
                "request body is {} bytes, over the {} byte limit",
                request.body.len(),
                self.config.max_request_bytes
            );
            // SendGrid drops an inbound post for good on a 4xx: an authentic email too large
            // for this path is a 5xx it retries, with an alarm for the operator.
            return Err(if kind == Kind::Inbound {
                refuse(Refusal::OverLimit, &request.request_id, &detail)
            } else {
                Reply::error(StatusCode::PAYLOAD_TOO_LARGE, detail)
            });
        }
        let Some(queue_url) =
            routing::target_queue_url(&self.config, &target, &request.stage_variables)
        else {
            tracing::error!(request_id = %request.request_id, kind = kind_name(kind),
                webhook = target.label(), "no queue configured");
            return Err(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("no queue configured for {}", kind_name(kind)),
            ));
        };
        Ok((target, queue_url))
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
                let outgoing = Outgoing {
                    kind,
                    queue_url,
                    body: event.to_owned(),
                    attributes: vec![Attribute::string(ATTR_KIND, kind_name(kind))],
                    grouping: Grouping::default(),
                };
                self.deliver(outgoing, request_id).await
            }
        };
        observe_kind(kind_name(kind), &reply, event.len(), started);
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

    fn authorize(&self, target: &Target<'_>, request: &CallbackRequest) -> Result<(), AuthError> {
        if let Some(expected) = target.basic_auth {
            auth::check_basic_auth(expected, request)?;
        }
        if let Some(current) = target.public_key {
            let now = (self.clock)();
            let used = auth::check_rotating_signature(
                current,
                target.previous_key,
                request,
                now,
                self.config.signature_max_age_secs,
            )?;
            if used == KeyUsed::Previous {
                // Info, not warn: this is the overlap working. The counter tells the operator
                // when the sender has moved to the new key and the old one can go.
                tracing::info!(request_id = %request.request_id, webhook = target.label(),
                    "signature verified with the previous key");
                if telemetry::enabled() {
                    metrics::counter!(telemetry::PREVIOUS_KEY_ACCEPTED,
                        "kind" => kind_name(target.kind), "webhook" => target.label().to_owned())
                    .increment(1);
                }
            }
        }
        Ok(())
    }

    fn envelope(&self, target: &Target<'_>, request: &CallbackRequest) -> Envelope {
        Envelope {
            origin: Origin::Router {
                version: ENVELOPE_VERSION,
            },
            kind: target.kind,
            received_at: Some((self.clock)()),
            source: Some(Source {
                path: request.path.clone(),
                stage: request.stage.clone(),
                request_id: Some(request.request_id.clone()),
                webhook: target.name.map(str::to_owned),
            }),
            headers: request
                .headers
                .iter()
                .filter(|(name, _)| !REDACTED_HEADERS.contains(&name.as_str()))
                .cloned()
                .collect(),
            content_type: request.header("content-type").map(str::to_owned),
            body: request.body.clone(),
            queue_url: None,
        }
    }

    /// Sends `body` to `queue_url`, first offloading it to S3 when it is too large for SQS.
    async fn deliver(&self, outgoing: Outgoing<'_>, request_id: &str) -> Reply {
        let Outgoing {
            kind,
            queue_url,
            body,
            mut attributes,
            grouping,
        } = outgoing;
        let size = body.len();
        let body = if size + attributes_size(&attributes) > self.config.max_message_bytes {
            let Some(bucket) = &self.config.large_body_bucket else {
                let detail = format!(
                    "callback is {size} bytes encoded, over the {} byte SQS message limit, \
                     and no MAILROOM_LARGE_BODY_BUCKET is configured",
                    self.config.max_message_bytes
                );
                if kind == Kind::Inbound {
                    return refuse(Refusal::NoBucket, request_id, &detail);
                }
                tracing::warn!(%request_id, kind = kind_name(kind), size, "too large for SQS and no bucket configured");
                return Reply::error(StatusCode::PAYLOAD_TOO_LARGE, detail);
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
        match self
            .sink
            .send_message(queue_url, body, attributes, grouping)
            .await
        {
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
fn route_label(route: &Route<'_>) -> &'static str {
    match route {
        Route::Callback(target) => kind_name(target.kind),
        Route::UnknownWebhook { .. } | Route::Health | Route::NotFound => "other",
    }
}

/// Counts one answered request (`started` is `None` when metrics are off), and per named or
/// default route for the callback routes.
fn observe_request(route: Route<'_>, reply: &Reply, bytes: usize, started: Option<Instant>) {
    if started.is_none() {
        return;
    }
    if let Route::Callback(target) = route {
        metrics::counter!(telemetry::WEBHOOK_REQUESTS, "kind" => kind_name(target.kind),
            "webhook" => target.label().to_owned(), "status" => telemetry::status_label(reply.status))
        .increment(1);
    }
    observe_kind(route_label(&route), reply, bytes, started);
}

/// Counts one answered request by kind.
fn observe_kind(kind: &'static str, reply: &Reply, bytes: usize, started: Option<Instant>) {
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

/// The attributes of every router envelope: its kind and version and, when the request is
/// traced, the W3C context the worker continues the trace from.
fn envelope_attributes(kind: Kind, span: &tracing::Span) -> Vec<Attribute> {
    let mut attributes = vec![
        Attribute::string(ATTR_KIND, kind_name(kind)),
        Attribute::number(ATTR_VERSION, ENVELOPE_VERSION),
    ];
    if let Some(traceparent) = (!span.is_disabled())
        .then(|| mailroom_otel::traceparent(span))
        .flatten()
    {
        attributes.push(Attribute::string(
            mailroom_otel::TRACEPARENT_ATTRIBUTE,
            traceparent,
        ));
    }
    attributes
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

/// An inbound post `serve` may stream to S3: its route and queue, decided from the headers
/// alone (method, basic auth, the signature headers and their timestamp's age), before any of
/// the body is read or uploaded.
#[derive(Debug, Clone, Copy)]
pub struct InboundTarget<'a> {
    pub target: Target<'a>,
    pub queue_url: &'a str,
}

/// `serve`'s streamed inbound posts ([`crate::stream_inbound`]): the decisions and the SQS
/// send stay here, with the rest of the core's, so a streamed post is routed, authorized,
/// enveloped, attributed and counted exactly like one held in memory.
impl<S: Sink> App<S> {
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// `None` when `request` (its headers; the body is not read yet) is not for an inbound
    /// route; else its target, or the answer refusing it (405, 401, 403 for missing signature
    /// headers or a stale timestamp, 500 without a queue). The one place that knows which
    /// paths are inbound routes and with which credentials and queue.
    pub fn inbound_target<'a>(
        &'a self,
        request: &'a CallbackRequest,
    ) -> Option<Result<InboundTarget<'a>, Reply>> {
        let route = routing::route(&self.config, &request.path, request.stage.as_deref());
        let target = match route {
            Route::Callback(target) if target.kind == Kind::Inbound => target,
            _ => return None,
        };
        Some(self.check_inbound_headers(target, request))
    }

    fn check_inbound_headers<'a>(
        &'a self,
        target: Target<'a>,
        request: &'a CallbackRequest,
    ) -> Result<InboundTarget<'a>, Reply> {
        if request.method != Method::POST {
            return Err(Reply::error(StatusCode::METHOD_NOT_ALLOWED, "use POST")
                .with_header("allow", "POST"));
        }
        let refused = |e: AuthError| {
            tracing::warn!(request_id = %request.request_id, kind = "inbound",
                webhook = target.label(), reason = %e, "refused");
            let reply = Reply::error(e.status(), e.to_string());
            if e.status() == StatusCode::UNAUTHORIZED {
                reply.with_header(
                    "www-authenticate",
                    "Basic realm=\"mailroom\", charset=\"UTF-8\"",
                )
            } else {
                reply
            }
        };
        if let Some(expected) = target.basic_auth {
            auth::check_basic_auth(expected, request).map_err(refused)?;
        }
        if target.public_key.is_some() {
            let (_, timestamp) = auth::signature_headers(request).map_err(refused)?;
            auth::check_signature_age(
                timestamp,
                (self.clock)().timestamp(),
                self.config.signature_max_age_secs,
            )
            .map_err(refused)?;
        }
        let Some(queue_url) =
            routing::target_queue_url(&self.config, &target, &request.stage_variables)
        else {
            tracing::error!(request_id = %request.request_id, kind = "inbound",
                webhook = target.label(), "no queue configured");
            return Err(Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no queue configured for inbound",
            ));
        };
        Ok(InboundTarget { target, queue_url })
    }

    /// The envelope of a streamed post without its body (cut into the frame the body's base64
    /// goes into).
    pub fn envelope_without_body(
        &self,
        inbound: &InboundTarget<'_>,
        request: &CallbackRequest,
    ) -> Envelope {
        let mut envelope = self.envelope(&inbound.target, request);
        envelope.body.clear();
        envelope
    }

    /// A fresh S3 key for an offloaded inbound envelope (the same layout as every offload).
    pub fn inbound_object_key(&self) -> String {
        self.object_key(Kind::Inbound)
    }

    /// Checks a streamed post's signature (when its route has a key) over the digest of what
    /// arrived, like [`Self::authorize`] does over a body in memory.
    pub fn verify_streamed_signature(
        &self,
        inbound: &InboundTarget<'_>,
        request: &CallbackRequest,
        digest: Option<&mailroom_sendgrid::SignedDigest>,
    ) -> Result<(), Reply> {
        let target = &inbound.target;
        let Some(current) = target.public_key else {
            return Ok(());
        };
        let refused = |e: AuthError| {
            tracing::warn!(request_id = %request.request_id, kind = "inbound",
                webhook = target.label(), reason = %e, "refused");
            Reply::error(e.status(), e.to_string())
        };
        let (signature, _) = auth::signature_headers(request).map_err(refused)?;
        let digest = digest.ok_or(AuthError::BadSignature).map_err(refused)?;
        let used = auth::check_rotating_digest(
            current,
            target.previous_key,
            signature,
            digest,
            (self.clock)(),
        )
        .map_err(refused)?;
        if used == KeyUsed::Previous {
            tracing::info!(request_id = %request.request_id, webhook = target.label(),
                "signature verified with the previous key");
            if telemetry::enabled() {
                metrics::counter!(telemetry::PREVIOUS_KEY_ACCEPTED,
                    "kind" => "inbound", "webhook" => target.label().to_owned())
                .increment(1);
            }
        }
        Ok(())
    }

    /// Puts the Extended Client pointer to a streamed envelope (`size` bytes at
    /// `bucket`/`key`) on the route's queue, with the attributes every offloaded message gets.
    /// 200 only once SQS accepted it; the caller deletes the object on any other answer.
    pub async fn queue_streamed(
        &self,
        inbound: &InboundTarget<'_>,
        request: &CallbackRequest,
        bucket: &str,
        key: &str,
        size: usize,
    ) -> Reply {
        let kind = Kind::Inbound;
        count(telemetry::S3_OFFLOADS, kind);
        let span = trace_span(kind, request);
        let mut attributes = envelope_attributes(kind, &span);
        attributes.push(Attribute::number(EXTENDED_PAYLOAD_SIZE_ATTRIBUTES[0], size));
        let body = S3Pointer {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
        .to_message_body();
        // A route's message group by field applies to event batches only; an inbound post gets
        // its route's label, which needs no body.
        let group_id = message_group_id(&inbound.target, b"");
        // A streamed body's digest is not known before it is all in; on a FIFO queue the sink
        // deduplicates by the pointer (one per request), and the worker by the body's SHA-256.
        let grouping = Grouping {
            group_id: group_id.as_deref(),
            dedup_id: None,
        };
        let request_id = &request.request_id;
        let reply = async {
            match self
                .sink
                .send_message(inbound.queue_url, body, attributes, grouping)
                .await
            {
                Ok(message_id) => {
                    tracing::info!(%request_id, kind = "inbound", %message_id, size, streamed = true, "queued");
                    Reply::json(
                        StatusCode::OK,
                        json!({ "status": "queued", "message_id": message_id }),
                    )
                }
                Err(e) => {
                    tracing::error!(%request_id, kind = "inbound", error = %e, "SQS send failed");
                    count(telemetry::SQS_SEND_FAILURES, kind);
                    Reply::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "could not queue the callback; retry later",
                    )
                }
            }
        }
        .instrument(span.clone())
        .await;
        span.record("http.response.status_code", reply.status.as_u16());
        reply
    }

    /// Counts an answer `serve` gave on its own (a streamed post, or one refused before its
    /// body was read), like [`Self::handle`] counts its own.
    pub fn observe_served(&self, path: &str, reply: &Reply, bytes: usize, started: Instant) {
        if telemetry::enabled() {
            let route = routing::route(&self.config, path, None);
            observe_request(route, reply, bytes, Some(started));
        }
    }
}
