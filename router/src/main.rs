//! The `mailroom-router` binary (named `bootstrap` in a Lambda package): runs the router in AWS
//! Lambda when `AWS_LAMBDA_RUNTIME_API` is set, or as a local HTTP server with `serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mailroom_router::{App, AwsSink, Config};

#[derive(Parser)]
#[command(
    version,
    about = "Puts SendGrid callbacks on SQS (AWS Lambda or local HTTP server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the router over plain HTTP (development, demos, end-to-end tests).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "MAILROOM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Serve Prometheus metrics at GET /metrics on this address (its own listener, never
        /// the callback port). Unset: no metrics.
        #[arg(long, env = "MAILROOM_ROUTER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run as an AWS Lambda function (the default when AWS_LAMBDA_RUNTIME_API is set).
    Lambda,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    init_tracing(log_format_is_json(
        in_lambda,
        std::env::var("MAILROOM_LOG_FORMAT").ok().as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
    ));
    let mode = match cli.command {
        Some(Command::Serve {
            listen,
            metrics_listen,
        }) => Mode::Serve(listen, metrics_listen),
        Some(Command::Lambda) => Mode::Lambda,
        None if in_lambda => Mode::Lambda,
        None => anyhow::bail!(
            "AWS_LAMBDA_RUNTIME_API is not set: run `mailroom-router serve --listen ADDR` \
             for a local server (see --help)"
        ),
    };
    let config = Config::from_env().context("invalid configuration")?;
    for deprecation in &config.deprecations {
        tracing::warn!("{deprecation}");
    }
    log_routes(&config);
    if config.events_queue_url.is_none() || config.inbound_queue_url.is_none() {
        tracing::warn!(
            "MAILROOM_EVENTS_QUEUE_URL or MAILROOM_INBOUND_QUEUE_URL is not set: requests for \
             that kind fail with 500 unless a stage variable names the queue"
        );
    }
    let sink = AwsSink::from_env().await;
    let app = Arc::new(App::new(config, sink));
    match mode {
        Mode::Serve(listen, metrics_listen) => serve(app, listen, metrics_listen).await,
        Mode::Lambda => lambda(app).await,
    }
}

/// One line per named route at start, and a warning for a previous key whose overlap is over
/// (it is refused from then on: remove it).
fn log_routes(config: &Config) {
    let now = chrono::Utc::now();
    for route in &config.routes {
        tracing::info!(kind = mailroom_router::routing::kind_name(route.kind), webhook = %route.name,
            signed = route.public_key.is_some(), basic_auth = route.basic_auth.is_some(),
            own_queue = route.queue_url.is_some(), "route");
    }
    let previous = config
        .routes
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.previous_key.as_ref()?)))
        .chain(
            config
                .events_previous_key
                .iter()
                .map(|k| ("default events", k)),
        )
        .chain(
            config
                .inbound_previous_key
                .iter()
                .map(|k| ("default inbound", k)),
        );
    for (name, key) in previous {
        if key.expires_at <= now {
            tracing::warn!(webhook = name, expired_at = %key.expires_at,
                "the previous key's overlap is over and it is no longer accepted: remove it");
        }
    }
}

enum Mode {
    Serve(SocketAddr, Option<SocketAddr>),
    Lambda,
}

/// Like the worker's `log_format`: "json", "human", or "auto" (the default: JSON in Lambda and
/// whenever the output is not a terminal, so a log file never gets ANSI colour codes).
fn log_format_is_json(in_lambda: bool, format: Option<&str>, terminal: bool) -> bool {
    match format {
        Some("json") => true,
        Some("human") => false,
        _ => in_lambda || !terminal,
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer();
    let logs = if json {
        // CloudWatch adds its own timestamps; one JSON object per line is what Logs Insights reads.
        fmt.json().without_time().with_current_span(false).boxed()
    } else {
        // Human format only reaches a terminal unless asked for; colours only there.
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed()
    };
    // Traces (OTLP, from the standard OTEL_* variables) have their own filter: the log level does
    // not decide them, and they do not reach the log.
    let traces = mailroom_otel::layer("mailroom-router").unwrap_or_else(|e| {
        eprintln!("mailroom-router: warning: traces are off: {e}");
        None
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .init();
}

async fn serve(
    app: Arc<App<AwsSink>>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let metrics = match metrics_listen {
        Some(addr) => Some(start_metrics(addr, app.config()).await?),
        None => None,
    };
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, "mailroom-router serving");
    mailroom_router::serve::serve(app, listener, shutdown_signal()).await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    tokio::task::spawn_blocking(mailroom_otel::shutdown)
        .await
        .ok();
    Ok(())
}

/// Binds the metrics listener (a taken port fails the start), installs the recorder, serves.
async fn start_metrics(
    addr: SocketAddr,
    config: &Config,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("MAILROOM_ROUTER_METRICS_LISTEN: cannot listen on {addr}"))?;
    let handle = mailroom_router::telemetry::install(config)?;
    tracing::info!(listen = %listener.local_addr()?, "metrics at /metrics");
    Ok(tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = mailroom_router::telemetry::serve_metrics(handle, listener, never).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

async fn lambda(app: Arc<App<AwsSink>>) -> anyhow::Result<()> {
    let handler = lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Box<serde_json::value::RawValue>>| {
            let app = Arc::clone(&app);
            async move {
                let reply = mailroom_router::lambda::handle_event(
                    &app,
                    &event.payload,
                    &event.context.request_id,
                )
                .await;
                // The sandbox may freeze after this invocation: export its spans now.
                tokio::task::spawn_blocking(mailroom_otel::flush).await.ok();
                reply
            }
        },
    );
    lambda_runtime::run(handler)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::log_format_is_json;

    /// Regression: the router wrote ANSI colour codes into its log when the output was a file.
    #[test]
    fn a_log_file_gets_json_not_colour_codes() {
        assert!(log_format_is_json(false, None, false), "a file: JSON");
        assert!(!log_format_is_json(false, None, true), "a terminal: human");
        assert!(log_format_is_json(true, None, true), "Lambda: JSON");
        assert!(!log_format_is_json(false, Some("human"), false));
        assert!(log_format_is_json(false, Some("json"), true));
    }
}
