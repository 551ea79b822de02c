//! `mailroom-router serve`: the same core behind a plain HTTP/1.1 server, for development, the
//! README demo and end-to-end tests. Not meant to face the internet (no TLS); in AWS the
//! router runs as a Lambda behind API Gateway.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::App;
use crate::request::{CallbackRequest, Reply};
use crate::sink::Sink;

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve<S, F>(
    app: Arc<App<S>>,
    listener: TcpListener,
    shutdown: F,
) -> std::io::Result<()>
where
    S: Sink + 'static,
    F: Future<Output = ()>,
{
    let graceful = GracefulShutdown::new();
    let builder = http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let app = Arc::clone(&app);
                let service = hyper::service::service_fn(move |request| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(handle_http(&app, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down; waiting for in-flight requests");
    graceful.shutdown().await;
    Ok(())
}

/// Reads one hyper request (up to the configured request size) and answers it.
pub async fn handle_http<S: Sink>(
    app: &App<S>,
    request: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let limit = app.config().max_request_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let reply = Reply::error(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is over the {limit} byte limit"),
            );
            return to_hyper(app.refuse_unread(parts.uri.path(), reply, started));
        }
        Err(e) => {
            let reply = Reply::error(
                http::StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            );
            return to_hyper(app.refuse_unread(parts.uri.path(), reply, started));
        }
    };
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = CallbackRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        stage: None,
        request_id,
        headers,
        body,
        stage_variables: Default::default(),
    };
    to_hyper(app.handle(request).await)
}

fn to_hyper(reply: Reply) -> http::Response<Full<Bytes>> {
    let response: http::Response<String> = reply.into_http();
    response.map(|body| Full::new(Bytes::from(body)))
}
