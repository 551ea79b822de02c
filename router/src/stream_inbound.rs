//! `serve`'s inbound route: an Inbound Parse post of any size SendGrid sends (up to 30 MB),
//! stored without ever holding it whole.
//!
//! SendGrid drops a post for good on any 4xx and retries a 5xx for 3 days, and the Lambda path
//! caps a request at 6 MB: so behind a load balancer, `serve` takes the large emails. A post
//! at most the SQS message limit is read into memory and handled by [`App::handle`] like any
//! other. A larger one (by its `Content-Length`, or once a chunked body's buffered part passes
//! the limit) is written as it arrives, as the router envelope's JSON text (prefix, base64 of
//! the body chunk by chunk, suffix: [`crate::stream_envelope`]), into an S3 multipart upload
//! ([`crate::upload`]); then the Extended Client pointer goes on the queue exactly as for any
//! offloaded body, and only then is the answer 200. So the worker reads a streamed post like any
//! offloaded one, byte for byte.
//!
//! The order of checks is what keeps a forged or broken post out of the bucket and off the
//! queue: basic auth and the signature headers' timestamp are checked from the headers before
//! anything is uploaded; the signature is verified over the streamed bytes (an incremental
//! SHA-256) before the upload is completed. Any failure once the upload started (a bad
//! signature, S3, a body that ends early or stalls, the client going away, the limit) aborts
//! the upload, and a pointer SQS refused has its object deleted: nothing is left in the bucket
//! and nothing is queued.
//!
//! An authentic post Mailroom cannot store is answered 5xx, never 4xx (507 over
//! `MAILROOM_MAX_INBOUND_BYTES` or without a bucket, 503 for an unreadable body or an outage),
//! with an error log line and `mailroom_router_inbound_refused_total{reason}`, so an alarm
//! fires while SendGrid still retries.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Body;
use mailroom_sendgrid::SignedDigest;

use crate::app::App;
use crate::auth;
use crate::request::{CallbackRequest, Reply};
use crate::sink::Sink;
use crate::stream_envelope::{Base64Chunks, EnvelopeFrame};
use crate::telemetry;
use crate::upload::MultipartWriter;

/// How long a request body may send nothing before the post is given up (and its upload
/// aborted): a stalled sender must not hold an upload and a part buffer forever.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an authentic inbound post was not stored; the `reason` label of
/// [`telemetry::INBOUND_REFUSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `MAILROOM_MAX_INBOUND_BYTES` (or its envelope over the worker's limit).
    OverLimit,
    /// Too large for SQS and no `MAILROOM_LARGE_BODY_BUCKET`.
    NoBucket,
    /// The body could not be read whole: the client went away, stalled, or sent less than its
    /// `Content-Length`.
    BodyUnreadable,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::OverLimit => "over_limit",
            Refusal::NoBucket => "no_bucket",
            Refusal::BodyUnreadable => "body_unreadable",
        }
    }

    /// 507 when only the operator can help (a limit, a bucket); 503 when a retry may do.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::OverLimit | Refusal::NoBucket => StatusCode::INSUFFICIENT_STORAGE,
            Refusal::BodyUnreadable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Why reading a request body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("could not read the request body: {0}")]
    Read(String),
    #[error("the request body sent nothing for {}s", BODY_IDLE_TIMEOUT.as_secs())]
    Stalled,
    #[error("the request body ended after {received} of its {declared} declared bytes")]
    Short { received: u64, declared: u64 },
}

/// The next data chunk of `body` (trailers skipped), `None` at its end.
async fn next_chunk<B>(body: &mut B) -> Result<Option<Bytes>, BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        let frame = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(BodyError::Stalled),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
}

/// Answers an authentic post Mailroom cannot store: 5xx, an error line, a count. Also the
/// Lambda path's answer for an inbound post too large for it.
pub(crate) fn refuse(refusal: Refusal, request_id: &str, detail: &str) -> Reply {
    tracing::error!(%request_id, kind = "inbound", reason = refusal.reason(), detail,
        "inbound post not stored; answered 5xx so SendGrid retries it");
    if telemetry::enabled() {
        metrics::counter!(telemetry::INBOUND_REFUSED, "reason" => refusal.reason()).increment(1);
    }
    Reply::error(refusal.status(), format!("{detail}; retry later"))
}

fn declared_length(request: &CallbackRequest) -> Option<u64> {
    request.header("content-length")?.trim().parse().ok()
}

/// Reads what is left of a refused post (up to `limit` bytes, while it keeps coming), so the
/// sender reads the 401/403 instead of a reset connection.
async fn drain<B>(mut body: B, limit: usize)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut read = 0usize;
    while read <= limit {
        match next_chunk(&mut body).await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Answers one request for an inbound route (the caller checked it is one, with
/// [`App::inbound_target`]); `request` carries the headers, its body is `body`.
pub async fn serve_inbound<S, B>(
    app: &App<S>,
    mut request: CallbackRequest,
    mut body: B,
    started: Instant,
) -> Reply
where
    S: Sink,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let config = app.config();
    let limit = config.max_inbound_bytes;
    let declared = declared_length(&request);
    let checked = app.inbound_target(&request).map(|r| r.map(|_| ()));
    match checked {
        Some(Ok(())) => {}
        Some(Err(reply)) => {
            if declared.is_none_or(|n| n <= limit as u64) {
                drain(body, limit).await;
            }
            app.observe_served(&request.path, &reply, 0, started);
            return reply;
        }
        None => {
            let reply = Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "not an inbound route");
            app.observe_served(&request.path, &reply, 0, started);
            return reply;
        }
    }
    if let Some(declared) = declared.filter(|n| *n > limit as u64) {
        let detail = format!(
            "request body is {declared} bytes, over the {limit} byte inbound limit \
             (MAILROOM_MAX_INBOUND_BYTES)"
        );
        let reply = refuse(Refusal::OverLimit, &request.request_id, &detail);
        app.observe_served(&request.path, &reply, 0, started);
        return reply;
    }
    // At most this much is held in memory and handled like any other callback.
    let in_memory = config.max_message_bytes.min(config.max_request_bytes);
    let mut first = BytesMut::new();
    if declared.is_none_or(|n| n <= in_memory as u64) {
        loop {
            match next_chunk(&mut body).await {
                Ok(Some(chunk)) => {
                    first.extend_from_slice(&chunk);
                    if first.len() > in_memory {
                        break;
                    }
                }
                Ok(None) => {
                    request.body = first.freeze();
                    return app.handle(request).await;
                }
                Err(e) => {
                    let reply =
                        refuse(Refusal::BodyUnreadable, &request.request_id, &e.to_string());
                    app.observe_served(&request.path, &reply, first.len(), started);
                    return reply;
                }
            }
        }
    }
    let (reply, received) = stream(app, &request, first.freeze(), body, declared).await;
    app.observe_served(&request.path, &reply, received, started);
    reply
}

/// Streams the body (`first`, then the rest of `body`) into S3 and queues its pointer.
/// Returns the answer and the body bytes received.
async fn stream<S, B>(
    app: &App<S>,
    request: &CallbackRequest,
    first: Bytes,
    mut body: B,
    declared: Option<u64>,
) -> (Reply, usize)
where
    S: Sink,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let request_id = request.request_id.as_str();
    let Some(Ok(inbound)) = app.inbound_target(request) else {
        return (
            Reply::error(StatusCode::INTERNAL_SERVER_ERROR, "not an inbound route"),
            0,
        );
    };
    let config = app.config();
    let Some(bucket) = config.large_body_bucket.as_deref() else {
        let detail = format!(
            "the post is over the {} byte SQS message limit and no MAILROOM_LARGE_BODY_BUCKET \
             is configured",
            config.max_message_bytes
        );
        return (refuse(Refusal::NoBucket, request_id, &detail), first.len());
    };
    let frame = match EnvelopeFrame::of(&app.envelope_without_body(&inbound, request)) {
        Ok(frame) => frame,
        Err(e) => {
            tracing::error!(%request_id, error = %e, "cannot frame the envelope");
            return (
                Reply::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot frame the envelope",
                ),
                0,
            );
        }
    };
    // Checked present (and its timestamp's age) by `inbound_target`.
    let mut digest = match inbound.target.public_key {
        Some(_) => auth::signature_headers(request)
            .ok()
            .map(|(_, timestamp)| SignedDigest::new(timestamp)),
        None => None,
    };
    let key = app.inbound_object_key();
    let mut writer = match MultipartWriter::start(app.sink(), bucket, &key).await {
        Ok(writer) => writer,
        Err(e) => return (s3_failed(request_id, &e), first.len()),
    };
    writer.buffer().extend_from_slice(frame.prefix.as_bytes());
    let mut encoder = Base64Chunks::new();
    let mut received = 0usize;
    let mut next = Some(first).filter(|b| !b.is_empty());
    let failure = loop {
        let chunk = match next.take() {
            Some(chunk) => chunk,
            None => match next_chunk(&mut body).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break None,
                Err(e) => break Some(refuse(Refusal::BodyUnreadable, request_id, &e.to_string())),
            },
        };
        received += chunk.len();
        if received > config.max_inbound_bytes
            || frame.envelope_len(received) > mailroom_envelope::MAX_MESSAGE_BYTES
        {
            let detail = format!(
                "request body passed the {} byte inbound limit (MAILROOM_MAX_INBOUND_BYTES)",
                config.max_inbound_bytes
            );
            break Some(refuse(Refusal::OverLimit, request_id, &detail));
        }
        if let Some(digest) = digest.as_mut() {
            digest.update(&chunk);
        }
        encoder.push(&chunk, writer.buffer());
        drop(chunk);
        if let Err(e) = writer.upload_full_parts().await {
            break Some(s3_failed(request_id, &e));
        }
    };
    let failure = failure.or_else(|| {
        let declared = declared?;
        (declared != received as u64).then(|| {
            let e = BodyError::Short {
                received: received as u64,
                declared,
            };
            refuse(Refusal::BodyUnreadable, request_id, &e.to_string())
        })
    });
    let failure = failure.or_else(|| {
        app.verify_streamed_signature(&inbound, request, digest.as_ref())
            .err()
    });
    if let Some(reply) = failure {
        writer.abort(request_id).await;
        return (reply, received);
    }
    encoder.finish(writer.buffer());
    writer.buffer().extend_from_slice(frame.suffix.as_bytes());
    let stored = match writer.complete().await {
        Ok(stored) => stored,
        Err((writer, e)) => {
            let reply = s3_failed(request_id, &e);
            writer.abort(request_id).await;
            return (reply, received);
        }
    };
    tracing::info!(%request_id, bucket, key = %stored.key, size = stored.size, parts = stored.parts,
        body_bytes = received, "inbound post streamed to S3");
    let reply = app
        .queue_streamed(&inbound, request, bucket, &stored.key, stored.size)
        .await;
    if reply.status == StatusCode::OK {
        if telemetry::enabled() {
            metrics::counter!(telemetry::INBOUND_STREAMED).increment(1);
        }
    } else if let Err(e) = app.sink().delete_object(bucket, &stored.key).await {
        tracing::error!(%request_id, bucket, key = %stored.key, error = %e,
            "could not delete the object whose pointer SQS refused; the lifecycle rule will");
    }
    (reply, received)
}

fn s3_failed(request_id: &str, error: &crate::sink::SinkError) -> Reply {
    tracing::error!(%request_id, kind = "inbound", error = %error, "S3 offload failed");
    if telemetry::enabled() {
        metrics::counter!(telemetry::S3_OFFLOAD_FAILURES, "kind" => "inbound").increment(1);
    }
    Reply::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "could not store the callback body; retry later",
    )
}
