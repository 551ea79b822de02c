//! The HTTP listener: `/metrics` (Prometheus text), `/health`, `/ready`, and the read-only status
//! page (`/` and `/status` as HTML, `/status.json`; see `status.rs`). HTTP/1 only, GET only,
//! one task per connection; meant for loopback or a private network, not the internet.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Health, StatusSource};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("telemetry.listen = \"{listen}\" is not an address like 127.0.0.1:9090")]
    Address { listen: String },
    #[error("cannot listen on {addr} for telemetry: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

struct State {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    status: Arc<StatusSource>,
}

/// Bind now (so a taken port fails start-up, before READY), serve until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    status: Arc<StatusSource>,
    stop: CancellationToken,
) -> Result<SocketAddr, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let state = Arc::new(State {
        metrics,
        health,
        status,
    });
    tracing::info!(listen = %local, "telemetry: /metrics, /health, /ready, status page at /");
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "telemetry: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let body = state.metrics.render();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/health" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => match state.health.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/" | "/status" => {
            let snapshot = state
                .status
                .snapshot(&state.metrics.render(), &state.health)
                .await;
            with_type(
                text(StatusCode::OK, super::render_status_page(&snapshot)),
                "text/html; charset=utf-8",
            )
        }
        "/status.json" => {
            let snapshot = state
                .status
                .snapshot(&state.metrics.render(), &state.health)
                .await;
            match serde_json::to_string_pretty(&snapshot) {
                Ok(json) => with_type(text(StatusCode::OK, json + "\n"), "application/json"),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /, /status.json, /metrics, /health or /ready\n".into(),
        ),
    }
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
