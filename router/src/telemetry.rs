//! Prometheus metrics for `mailroom-router serve` (with `MAILROOM_ROUTER_METRICS_LISTEN`).
//!
//! In Lambda nothing is installed: CloudWatch already counts the API's requests by status and
//! the function's errors, and a Lambda has nowhere to be scraped. Without [`install`] no
//! recorder exists and [`enabled`] is false, so `App` skips the metrics entirely (not even a
//! label is built).
//!
//! The series (docs/operations.md, "Metrics"):
//!
//! - `mailroom_router_requests_total{kind, status}`: every answered request; `kind` is
//!   `events`, `inbound` or `other` (health, unknown paths), `status` the HTTP status code as
//!   text (`"200"`, `"503"`), so `status=~"5.."` selects the failures.
//! - `mailroom_router_s3_offloads_total{kind}`, `mailroom_router_s3_offload_failures_total{kind}`,
//!   `mailroom_router_sqs_send_failures_total{kind}`.
//! - `mailroom_router_request_duration_seconds{kind}` and `mailroom_router_request_bytes{kind}`:
//!   histograms with fixed buckets, so they aggregate across router processes.
//! - `mailroom_router_webhook_requests_total{kind, webhook, status}`: the callback routes'
//!   answers per route (`webhook` is a configured name or `default`).
//! - `mailroom_router_previous_key_accepted_total{kind, webhook}`: posts verified only by a
//!   route's previous key during a key rotation.
//! - `mailroom_router_unknown_webhook_total{kind}`: posts to a route name nobody configured.
//! - `mailroom_router_inbound_refused_total{reason}`: inbound posts `serve` could not store and
//!   answered 5xx so SendGrid retries them ([`INBOUND_REFUSED_REASONS`]); any increase needs an
//!   operator (raise `MAILROOM_MAX_INBOUND_BYTES`, configure the bucket) within SendGrid's 3 days.
//! - `mailroom_router_inbound_streamed_total`: inbound posts `serve` streamed to S3 in parts.
//!
//! Every counter is registered at 0 by [`install`] for each kind and each status the router
//! can answer ([`STATUSES`]), so `increase(...)` sees the first 5xx after a start.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use metrics::SharedString;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Requests answered, by `kind` and `status`.
pub const REQUESTS: &str = "mailroom_router_requests_total";
/// Envelopes stored in S3 (the pointer then goes to SQS), by `kind`.
pub const S3_OFFLOADS: &str = "mailroom_router_s3_offloads_total";
/// S3 PutObject failures (answered 503), by `kind`.
pub const S3_OFFLOAD_FAILURES: &str = "mailroom_router_s3_offload_failures_total";
/// SQS SendMessage failures (answered 503), by `kind`.
pub const SQS_SEND_FAILURES: &str = "mailroom_router_sqs_send_failures_total";
/// Time from the request's body in hand to the answer, by `kind`.
pub const REQUEST_DURATION: &str = "mailroom_router_request_duration_seconds";
/// Request body sizes, by `kind`.
pub const REQUEST_BYTES: &str = "mailroom_router_request_bytes";
/// Requests answered on a callback route, by `kind`, `webhook` (the route's name, `default` for
/// the unnamed routes: configured names only, so bounded) and `status`.
pub const WEBHOOK_REQUESTS: &str = "mailroom_router_webhook_requests_total";
/// Signatures that verified only with a route's previous key (during a rotation's overlap), by
/// `kind` and `webhook`: at 0 for a while, the old key can be removed.
pub const PREVIOUS_KEY_ACCEPTED: &str = "mailroom_router_previous_key_accepted_total";
/// Posts to a named route that does not exist (404), by `kind`; the name is in the log only
/// (it comes from the request path, so it is no label).
pub const UNKNOWN_WEBHOOK: &str = "mailroom_router_unknown_webhook_total";

/// Inbound posts `serve` refused with a 5xx although they were authentic, by `reason`.
pub const INBOUND_REFUSED: &str = "mailroom_router_inbound_refused_total";
/// Inbound posts `serve` streamed to S3 as a multipart upload (and queued).
pub const INBOUND_STREAMED: &str = "mailroom_router_inbound_streamed_total";
/// The `reason` label values of [`INBOUND_REFUSED`]: over `MAILROOM_MAX_INBOUND_BYTES` (507),
/// too large for SQS with no `MAILROOM_LARGE_BODY_BUCKET` (507), and a body that could not be
/// read whole (the client went away or stalled, 503).
pub const INBOUND_REFUSED_REASONS: [&str; 3] = ["over_limit", "no_bucket", "body_unreadable"];

/// The `kind` label values: the two callback kinds, and `other` for everything else.
pub const KINDS: [&str; 3] = ["events", "inbound", "other"];
/// The statuses the router answers (see router/README.md), registered at 0 for every kind.
pub const STATUSES: [&str; 10] = [
    "200", "400", "401", "403", "404", "405", "413", "500", "503", "507",
];

/// Durations: the router's own work is microseconds, an SQS round trip milliseconds, an S3
/// offload of a large body up to seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Body sizes: 1 KiB to 10 MiB (API Gateway's limit); 256 KiB and 1 MiB are SQS's limits; 32
/// and 40 MiB for the inbound posts `serve` streams (SendGrid's 30 MB emails).
const BYTES_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    6_291_456.0,
    10_485_760.0,
    33_554_432.0,
    41_943_040.0,
];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether [`install`] ran in this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot install the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
}

/// Installs the process-wide Prometheus recorder (once per process), registers every counter
/// at 0 (the per-route series for `config`'s routes too) and keeps the histograms tidy in the
/// background. Needs a Tokio runtime.
pub fn install(config: &crate::config::Config) -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(REQUEST_BYTES.into()), BYTES_BUCKETS)?
        .install_recorder()?;
    register_zeroes();
    register_routes(config);
    ENABLED.store(true, Ordering::Relaxed);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

fn register_zeroes() {
    for kind in KINDS {
        for status in STATUSES {
            metrics::counter!(REQUESTS, "kind" => kind, "status" => status).absolute(0);
        }
        for name in [S3_OFFLOADS, S3_OFFLOAD_FAILURES, SQS_SEND_FAILURES] {
            metrics::counter!(name, "kind" => kind).absolute(0);
        }
    }
    for kind in &KINDS[..2] {
        metrics::counter!(UNKNOWN_WEBHOOK, "kind" => *kind).absolute(0);
    }
    for reason in INBOUND_REFUSED_REASONS {
        metrics::counter!(INBOUND_REFUSED, "reason" => reason).absolute(0);
    }
    metrics::counter!(INBOUND_STREAMED).absolute(0);
}

/// Registers the per-route series at 0 for every configured route (and the default ones), so
/// `increase(...)` sees a route's first failure after a start.
fn register_routes(config: &crate::config::Config) {
    let named = config
        .routes
        .iter()
        .map(|r| (crate::routing::kind_name(r.kind), r.name.clone()));
    let defaults = [
        ("events", "default".to_owned()),
        ("inbound", "default".to_owned()),
    ];
    for (kind, webhook) in defaults.into_iter().chain(named) {
        for status in ["200", "503"] {
            metrics::counter!(WEBHOOK_REQUESTS, "kind" => kind, "webhook" => webhook.clone(),
                "status" => status)
            .absolute(0);
        }
        metrics::counter!(PREVIOUS_KEY_ACCEPTED, "kind" => kind, "webhook" => webhook).absolute(0);
    }
}

/// The `status` label: borrowed for the statuses the router answers, owned for anything else.
pub fn status_label(status: StatusCode) -> SharedString {
    let text = status.as_str();
    match STATUSES.iter().find(|s| **s == text) {
        Some(known) => SharedString::const_str(known),
        None => SharedString::from(text.to_owned()),
    }
}

/// Serves `GET /metrics` (the Prometheus text) on `listener` until `shutdown` resolves.
/// Anything else is 404 (405 for another method on /metrics). This is its own listener,
/// never the callback port: the callback port faces SendGrid.
pub async fn serve_metrics<F>(
    handle: PrometheusHandle,
    listener: TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        continue;
                    }
                };
                let handle = handle.clone();
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(answer(&handle, request.method(), request.uri().path())) }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}

fn answer(handle: &PrometheusHandle, method: &Method, path: &str) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (path, method) {
        ("/metrics", &Method::GET | &Method::HEAD) => {
            (StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        ("/metrics", _) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics here\n".to_owned(),
        ),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_statuses_are_borrowed_and_others_still_counted() {
        assert_eq!(&*status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
        assert_eq!(&*status_label(StatusCode::IM_A_TEAPOT), "418");
    }
}
