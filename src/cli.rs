//! The command line: `run`, `check`, `migrate`, and the operator commands (`queues`,
//! `dead-letters`, `send`, in `crate::admin`). Errors are anyhow at this edge, with context that
//! says what was being done; everything below returns typed errors.
//!
//! `run` is also where the process meets its service manager: sd_notify READY/STOPPING and
//! watchdog pings (`crate::notify`), and the telemetry listener (`crate::telemetry`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::admin::{self, DeadLettersCommand, QueuesCommand, SendArgs};
use crate::config::Config;
use crate::engine::{Controls, Engine, EngineParts};
use crate::handler::Registry;
use crate::handlers::{self, SendgridHandlerConfig};
use crate::notify::{self, Liveness, Notifier};
use crate::s3::Bodies;
use crate::store::Store;
use crate::telemetry::{self, Health, Phase, Probe};
use crate::{logging, signals, sqs};
use tokio_util::sync::CancellationToken;

/// Mailroom: a worker daemon that consumes SendGrid callbacks (Event Webhook batches and Inbound
/// Parse posts) from SQS and stores them in Postgres. Messages are deleted only after their
/// data is committed; every write is idempotent.
#[derive(Debug, Parser)]
#[command(name = "mailroom", version, about, long_about = None)]
pub struct Cli {
    /// Path of the TOML config (see config/mailroom.example.toml for every key).
    #[arg(
        long,
        short,
        global = true,
        env = "MAILROOM_CONFIG",
        default_value = "/etc/mailroom/mailroom.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM/SIGINT (drains, then releases what it will not finish).
    /// SIGTSTP or SIGUSR1 makes it quiet (no more receives); SIGCONT or SIGUSR2 resumes.
    Run,
    /// Validate the config and reach every queue and Postgres; exit 0 only if all is well
    /// (fit for systemd's ExecStartPre).
    Check,
    /// Apply the database migrations this binary carries.
    Migrate,
    /// Look at and manage the configured queues and their DLQs.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// List and replay rows of mailroom_dead_letters.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLettersCommand),
    /// Put a captured SendGrid POST body on a queue in the router's envelope (for testing).
    Send(SendArgs),
}

pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run => report(run(&cli.config).await),
        Command::Check => check(&cli.config).await,
        Command::Migrate => report(migrate(&cli.config).await),
        Command::Queues(command) => report(queues(&cli.config, command).await),
        Command::DeadLetters(command) => dead_letters(&cli.config, command).await,
        Command::Send(args) => report(send(&cli.config, &args).await),
    }
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let text = error_text(&err);
            tracing::error!("{text}");
            eprintln!("mailroom: error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once.
///
/// `{:#}` prints every error in the chain, but many errors (ours and sqlx's) already include
/// their cause in their own message, so a migration failure read "... already exists: while
/// executing migration ...: ... already exists: ... already exists" four times over. A cause
/// whose text the line already holds is left out.
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

fn database_url(config: &Config) -> Result<&str> {
    config
        .store
        .database_url
        .as_deref()
        .context("store.database_url is not set (or DATABASE_URL)")
}

/// Env override of `[telemetry] listen`, so N instances sharing one config file each get their
/// own port (set per instance in /etc/mailroom/mailroom-N.env). Empty turns the listener off.
pub const ENV_TELEMETRY_LISTEN: &str = "MAILROOM_TELEMETRY_LISTEN";

async fn run(path: &std::path::Path) -> Result<()> {
    let mut config = Config::load(path)?;
    if let Ok(listen) = std::env::var(ENV_TELEMETRY_LISTEN) {
        config.telemetry.listen = Some(listen).filter(|l| !l.is_empty());
    }
    logging::init(config.telemetry.log_format.as_deref());
    let notifier = Notifier::from_env();
    let liveness = Liveness::default();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_background = CancellationToken::new();
    // The stop token must fire on every exit path, errors included.
    let _stop_guard = stop_background.clone().drop_guard();
    if let (true, Some(period)) = (notifier.enabled(), notify::watchdog_period()) {
        tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
        tokio::spawn(notify::watchdog(
            notifier.clone(),
            period,
            liveness.clone(),
            armed.clone(),
            stop_background.clone(),
        ));
    }
    let metrics = match &config.telemetry.listen {
        Some(_) => Some(telemetry::install_recorder()?),
        None => None,
    };
    let aws = sqs::aws_config(&config.sqs).await;
    let sqs_client = sqs::client(&aws);
    let bodies = Bodies::new(&aws, aws.endpoint_url().is_some());
    let store = Store::connect(database_url(&config)?, config.store.max_connections)
        .await
        .context("connecting to Postgres")?;
    store
        .check_schema()
        .await
        .context("checking the database schema")?;
    let mut defaults = Registry::new();
    handlers::register_defaults(
        &mut defaults,
        store.clone(),
        SendgridHandlerConfig {
            event_webhook_public_key: config.sendgrid.verification_public_key.clone(),
        },
    )
    .context("[sendgrid] config")?;
    // Every handler counted for mailroom_postgres_errors_total.
    let mut registry = Registry::new();
    for name in defaults.names() {
        if let Some(handler) = defaults.get(name) {
            registry.register(name, Arc::new(telemetry::CountingHandler(handler)));
        }
    }
    let signals = signals::install().context("installing signal handlers")?;
    let health = Health::new(
        signals.quiet.clone(),
        match config.queues.first() {
            Some(q) => Some(Probe {
                store: store.clone(),
                sqs: sqs_client.clone(),
                queue: (
                    q.name.clone(),
                    sqs::queue_url(&sqs_client, &q.name, q.url.as_deref())
                        .await
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("queue \"{}\": cannot resolve its URL", q.name))?,
                ),
            }),
            None => None,
        },
    );
    if let (Some(listen), Some(metrics)) = (&config.telemetry.listen, metrics) {
        let addr = telemetry::parse_listen(listen)?;
        telemetry::serve(addr, metrics, health.clone(), stop_background.clone()).await?;
        let mut queues = Vec::new();
        for q in &config.queues {
            let url = sqs::queue_url(&sqs_client, &q.name, q.url.as_deref())
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("queue \"{}\": cannot resolve its URL", q.name))?;
            queues.push((q.name.clone(), url));
        }
        tokio::spawn(telemetry::poll_queue_depths(
            sqs_client.clone(),
            queues,
            stop_background.clone(),
        ));
    }
    let engine = Engine::new(EngineParts {
        config,
        sqs: sqs_client,
        bodies,
        registry,
        dead_letters: Arc::new(telemetry::CountingDeadLetters(Arc::new(store))),
    })
    .await?;
    let shutdown = signals.shutdown;
    let (ready_health, stopping_health) = (health.clone(), health.clone());
    let (ready_notifier, stopping_notifier) = (notifier.clone(), notifier.clone());
    engine
        .run(
            async {
                let _ = shutdown.await;
            },
            Controls {
                quiet: signals.quiet,
                on_ready: Box::new(move || {
                    ready_health.set_phase(Phase::Receiving);
                    armed.store(true, std::sync::atomic::Ordering::Relaxed);
                    ready_notifier.notify_or_log("READY=1\nSTATUS=receiving");
                }),
                on_stopping: Box::new(move || {
                    stopping_health.set_phase(Phase::Draining);
                    stopping_notifier.notify_or_log("STOPPING=1\nSTATUS=draining");
                }),
                liveness,
            },
        )
        .await;
    stop_background.cancel();
    Ok(())
}

async fn queues(path: &std::path::Path, command: QueuesCommand) -> Result<()> {
    let config = Config::load(path)?;
    logging::init(config.telemetry.log_format.as_deref());
    let ctx = admin::Ctx::new(config).await;
    admin::queues(&ctx, command).await
}

async fn send(path: &std::path::Path, args: &SendArgs) -> Result<()> {
    let config = Config::load(path)?;
    logging::init(config.telemetry.log_format.as_deref());
    let ctx = admin::Ctx::new(config).await;
    admin::send::send(&ctx, args).await
}

/// `list` and `replay`; replay exits non-zero when any row was kept.
async fn dead_letters(path: &std::path::Path, command: DeadLettersCommand) -> ExitCode {
    let result = async {
        let config = Config::load(path)?;
        logging::init(config.telemetry.log_format.as_deref());
        let store = Store::connect(database_url(&config)?, 2)
            .await
            .context("connecting to Postgres")?;
        match command {
            DeadLettersCommand::List { limit } => {
                admin::dead_letters::list(&store, limit).await?;
                Ok(true)
            }
            DeadLettersCommand::Replay(args) => {
                store
                    .check_schema()
                    .await
                    .context("checking the database schema")?;
                let aws = sqs::aws_config(&config.sqs).await;
                let bodies = Bodies::new(&aws, aws.endpoint_url().is_some());
                let mut registry = Registry::new();
                handlers::register_defaults(
                    &mut registry,
                    store.clone(),
                    SendgridHandlerConfig {
                        event_webhook_public_key: config.sendgrid.verification_public_key.clone(),
                    },
                )
                .context("[sendgrid] config")?;
                let handler_of = |queue: &str| {
                    config
                        .queues
                        .iter()
                        .find(|q| q.name == queue)
                        .map(|q| q.handler.clone())
                };
                admin::dead_letters::replay(&store, &registry, &bodies, handler_of, &args).await
            }
        }
    }
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(err) => report(Err(err)),
    }
}

async fn migrate(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    logging::init(config.telemetry.log_format.as_deref());
    let store = Store::connect(database_url(&config)?, 1)
        .await
        .context("connecting to Postgres")?;
    store.migrate().await.context("applying migrations")?;
    println!("mailroom: database schema is up to date");
    Ok(())
}

/// Every check runs, each printing one line; the exit code is non-zero if any failed.
async fn check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => {
            println!("ok   config {}", path.display());
            config
        }
        Err(err) => {
            println!("FAIL {err}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let listen = std::env::var(ENV_TELEMETRY_LISTEN)
        .ok()
        .or_else(|| config.telemetry.listen.clone())
        .filter(|l| !l.is_empty());
    if let Some(listen) = listen {
        match telemetry::parse_listen(&listen) {
            Ok(addr) => println!("ok   telemetry will listen on {addr}"),
            Err(err) => {
                println!("FAIL {err}");
                failed = true;
            }
        }
    }
    let aws = sqs::aws_config(&config.sqs).await;
    let client = sqs::client(&aws);
    for queue in &config.queues {
        let url = match sqs::queue_url(&client, &queue.name, queue.url.as_deref()).await {
            Ok(url) => url,
            Err(err) => {
                println!(
                    "FAIL queue \"{}\": cannot resolve its URL: {err}",
                    queue.name
                );
                failed = true;
                continue;
            }
        };
        match sqs::attributes(&client, &url).await {
            Ok(attrs) => {
                let redrive = if attrs.contains_key("RedrivePolicy") {
                    "with a redrive policy"
                } else {
                    "no redrive policy"
                };
                println!(
                    "ok   queue \"{}\" reachable at {url} ({redrive})",
                    queue.name
                );
                if queue.dead_letter == crate::config::DeadLetterMode::Sqs
                    && !attrs.contains_key("RedrivePolicy")
                {
                    println!("FAIL queue \"{}\": dead_letter = \"sqs\" needs a redrive policy on the queue", queue.name);
                    failed = true;
                }
            }
            Err(err) => {
                println!("FAIL queue \"{}\" at {url}: {err}", queue.name);
                failed = true;
            }
        }
    }
    match database_url(&config) {
        Ok(url) => match Store::connect(url, 1).await {
            Ok(store) => match store.check_schema().await {
                Ok(()) => println!("ok   postgres reachable, schema up to date"),
                Err(err) => {
                    println!("FAIL postgres schema: {err}");
                    failed = true;
                }
            },
            Err(err) => {
                println!("FAIL postgres: {err}");
                failed = true;
            }
        },
        Err(err) => {
            println!("FAIL {err}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A regression test: `mailroom migrate` over an existing table printed the database's
    /// message four times.
    #[test]
    fn error_text_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("while executing migration 1: {0}")]
        struct Execute(#[source] std::io::Error);
        let inner = std::io::Error::other("relation \"t\" already exists");
        let err = anyhow::Error::new(Execute(inner)).context("applying migrations");
        assert_eq!(
            error_text(&err),
            "applying migrations: while executing migration 1: relation \"t\" already exists"
        );
        // Causes that do not repeat are all kept.
        let err = anyhow::anyhow!("disk full")
            .context("writing")
            .context("storing");
        assert_eq!(error_text(&err), "storing: writing: disk full");
    }
}
