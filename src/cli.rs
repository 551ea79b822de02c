//! The command line: `run`, `check`, `migrate`. Errors are anyhow at this edge, with context that
//! says what was being done; everything below returns typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::engine::{Controls, Engine, EngineParts};
use crate::handler::Registry;
use crate::handlers::{self, SendgridHandlerConfig};
use crate::s3::Bodies;
use crate::store::Store;
use crate::{logging, signals, sqs};

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
}

pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run => report(run(&cli.config).await),
        Command::Check => check(&cli.config).await,
        Command::Migrate => report(migrate(&cli.config).await),
    }
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("mailroom: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn database_url(config: &Config) -> Result<&str> {
    config
        .store
        .database_url
        .as_deref()
        .context("store.database_url is not set (or DATABASE_URL)")
}

async fn run(path: &std::path::Path) -> Result<()> {
    let config = Config::load(path)?;
    logging::init(config.telemetry.log_format.as_deref());
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
    let mut registry = Registry::new();
    handlers::register_defaults(
        &mut registry,
        store.clone(),
        SendgridHandlerConfig {
            event_webhook_public_key: config.sendgrid.verification_public_key.clone(),
        },
    )
    .context("[sendgrid] config")?;
    let signals = signals::install().context("installing signal handlers")?;
    let engine = Engine::new(EngineParts {
        config,
        sqs: sqs_client,
        bodies,
        registry,
        dead_letters: Arc::new(store),
    })
    .await?;
    let shutdown = signals.shutdown;
    engine
        .run(
            async {
                let _ = shutdown.await;
            },
            Controls {
                quiet: signals.quiet,
                ..Controls::default()
            },
        )
        .await;
    Ok(())
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
