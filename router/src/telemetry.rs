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

/// The `kind` label values: the two callback kinds, and `other` for everything else.
pub const KINDS: [&str; 3] = ["events", "inbound", "other"];
/// The statuses the router answers (see router/README.md), registered at 0 for every kind.
pub const STATUSES: [&str; 9] = [
    "200", "400", "401", "403", "404", "405", "413", "500", "503",
];

/// Durations: the router's own work is microseconds, an SQS round trip milliseconds, an S3
/// offload of a large body up to seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Body sizes: 1 KiB to 10 MiB (API Gateway's limit); 256 KiB and 1 MiB are SQS's limits.
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
/// at 0 and keeps the histograms tidy in the background. Needs a Tokio runtime.
pub fn install() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(REQUEST_BYTES.into()), BYTES_BUCKETS)?
        .install_recorder()?;
    register_zeroes();
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
