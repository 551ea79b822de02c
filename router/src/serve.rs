//! `mailroom-router serve`: the same core behind a plain HTTP/1.1 server: the ingress for inbound
//! mail behind a load balancer (which does TLS and scaling), and the server of the README demo
//! and the end-to-end tests.
//!
//! The inbound route is the one thing `serve` does beyond the Lambda: posts up to
//! `MAILROOM_MAX_INBOUND_BYTES` (default 40 MiB, above SendGrid's 30 MB emails), the large ones
//! streamed to S3 as they arrive ([`crate::stream_inbound`]), each in a task of its own so a
//! client that goes away mid-post still has its upload aborted. Every other route reads the
//! body up to `MAILROOM_MAX_REQUEST_BYTES` and hands it to [`App::handle`], as the Lambda does.

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
                    async move { Ok::<_, Infallible>(handle_http(app, request).await) }
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

/// Answers one hyper request: an inbound post in a task of its own (read, streamed when large,
/// and aborted if the client goes away), anything else read up to the configured request size.
pub async fn handle_http<S: Sink + 'static>(
    app: Arc<App<S>>,
    request: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let head = callback_head(&parts);
    if app.inbound_target(&head).is_some() {
        let path = head.path.clone();
        // Spawned, so the post is finished or its upload aborted even when hyper drops this
        // future because the connection went away.
        let task = tokio::spawn({
            let app = Arc::clone(&app);
            async move { crate::stream_inbound::serve_inbound(&app, head, body, started).await }
        });
        let reply = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "inbound request task failed");
            let reply = Reply::error(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the request could not be handled; retry later",
            );
            app.observe_served(&path, &reply, 0, started);
            reply
        });
        return to_hyper(reply);
    }
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
    let request = CallbackRequest { body, ..head };
    to_hyper(app.handle(request).await)
}

/// The request as the core sees it, without its body (not read yet).
fn callback_head(parts: &http::request::Parts) -> CallbackRequest {
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
    CallbackRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        stage: None,
        request_id,
        headers,
        body: Bytes::new(),
        stage_variables: Default::default(),
    }
}

fn to_hyper(reply: Reply) -> http::Response<Full<Bytes>> {
    let response: http::Response<String> = reply.into_http();
    response.map(|body| Full::new(Bytes::from(body)))
}
