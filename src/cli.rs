//! The command line: `run`, `check`, `migrate`, `maintain`, and the operator commands (`queues`,
//! `dead-letters`, `feed`, `send`, in `crate::admin`). Only command dispatch lives here: assembly is
//! [`crate::Worker`]'s, so a custom binary (`Worker::new().handler(..).main()`) gets every
//! command with its own handlers. Errors are anyhow at this edge, with context that says what
//! was being done; everything below returns typed errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::admin::feed::FeedCommand;
use crate::admin::maintain::MaintainArgs;
use crate::admin::{self, DeadLettersCommand, QueuesCommand, SendArgs};
use crate::config::Config;
use crate::error_text::error_text;
use crate::s3::Bodies;
use crate::store::Store;
use crate::worker::Worker;
use crate::{logging, sqs};

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
    /// Read the commit-ordered feed of stored events and inbound emails as a named consumer
    /// (docs/feed.md): subscribe, read, ack, status.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Put a captured SendGrid POST body on a queue in the router's envelope (for testing).
    Send(SendArgs),
    /// Create event partitions ahead, drop expired ones and delete expired inbound emails
    /// ([retention], docs/retention.md); fit for a systemd timer. Safe next to running workers.
    Maintain(MaintainArgs),
}

/// Exit codes beyond 0 and 1, for scripts.
pub mod exit {
    /// `check`: the config file could not be read or is invalid.
    pub const BAD_CONFIG: u8 = 2;
    /// `dead-letters replay`: some rows were kept (their handler did not answer done).
    pub const REPLAY_KEPT: u8 = 3;
    /// `dead-letters replay --id N`: no dead letter has that id.
    pub const NO_SUCH_DEAD_LETTER: u8 = 4;
}

/// Run the command with `worker`'s handlers.
pub async fn dispatch(cli: Cli, worker: Worker) -> ExitCode {
    match cli.command {
        Command::Run => report(run(&cli.config, worker).await),
        Command::Check => check(&cli.config, &worker).await,
        Command::Migrate => report(migrate(&cli.config).await),
        Command::Queues(command) => report(queues(&cli.config, command).await),
        Command::DeadLetters(command) => dead_letters(&cli.config, &worker, command).await,
        Command::Send(args) => report(send(&cli.config, &args).await),
        Command::Feed(command) => report(feed(&cli.config, command).await),
        Command::Maintain(args) => report(maintain(&cli.config, &args).await),
    }
}

/// The error once, on stderr, as `mailroom: error: ...` (it used to be logged too, so every
/// error showed twice).
fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mailroom: error: {}", error_text(&err));
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

fn load(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    logging::init(config.telemetry.log_format.as_deref());
    Ok(config)
}

async fn run(path: &Path, worker: Worker) -> Result<()> {
    let config = load(path)?;
    worker.run(config).await?;
    Ok(())
}

async fn queues(path: &Path, command: QueuesCommand) -> Result<()> {
    let ctx = admin::Ctx::new(load(path)?).await;
    admin::queues(&ctx, command).await
}

async fn feed(path: &Path, command: FeedCommand) -> Result<()> {
    let config = load(path)?;
    let store = Store::connect(database_url(&config)?, 2)
        .await
        .context("connecting to Postgres")?;
    admin::feed::run(&store, command).await
}

async fn maintain(path: &Path, args: &MaintainArgs) -> Result<()> {
    let config = load(path)?;
    let store = Store::connect(database_url(&config)?, 2)
        .await
        .context("connecting to Postgres")?;
    admin::maintain::run(&store, &config.retention, args).await
}

async fn send(path: &Path, args: &SendArgs) -> Result<()> {
    let ctx = admin::Ctx::new(load(path)?).await;
    admin::send::send(&ctx, args).await
}

/// `list` and `replay`; replay exits non-zero when a row was kept or a named id does not exist.
async fn dead_letters(path: &Path, worker: &Worker, command: DeadLettersCommand) -> ExitCode {
    let result = async {
        let config = load(path)?;
        let store = Store::connect(database_url(&config)?, 2)
            .await
            .context("connecting to Postgres")?;
        match command {
            DeadLettersCommand::List { limit } => {
                admin::dead_letters::list(&store, limit).await?;
                Ok(ExitCode::SUCCESS)
            }
            DeadLettersCommand::Export { id, out } => {
                let aws = sqs::aws_config(&config.sqs).await;
                let bodies = Bodies::new(&aws, aws.endpoint_url().is_some())
                    .restricted_to(&config.s3.buckets);
                Ok(
                    if admin::dead_letters::export(&store, &bodies, id, out.as_deref()).await? {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(exit::NO_SUCH_DEAD_LETTER)
                    },
                )
            }
            DeadLettersCommand::Replay(args) => {
                store
                    .check_schema()
                    .await
                    .context("checking the database schema")?;
                let aws = sqs::aws_config(&config.sqs).await;
                let bodies = Bodies::new(&aws, aws.endpoint_url().is_some())
                    .restricted_to(&config.s3.buckets);
                let registry = worker.build_registry(&config, &store).map_err(|problems| {
                    let texts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    anyhow::anyhow!("handlers: {}", texts.join("; "))
                })?;
                let handler_of = |queue: &str| {
                    config
                        .queues
                        .iter()
                        .find(|q| q.name == queue)
                        .map(|q| q.handler.clone())
                };
                let summary =
                    admin::dead_letters::replay(&store, &registry, &bodies, handler_of, &args)
                        .await?;
                Ok(if !summary.missing.is_empty() {
                    ExitCode::from(exit::NO_SUCH_DEAD_LETTER)
                } else if summary.kept > 0 {
                    ExitCode::from(exit::REPLAY_KEPT)
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(err) => report(Err(err)),
    }
}

async fn migrate(path: &Path) -> Result<()> {
    let config = load(path)?;
    let url = database_url(&config)?;
    Store::diagnose(url).await?;
    let store = Store::connect(url, 1)
        .await
        .context("connecting to Postgres")?;
    let applied = store.migrate().await.context("applying migrations")?;
    if applied.is_empty() {
        println!("mailroom: database schema is up to date (nothing to apply)");
    } else {
        for migration in &applied {
            println!("applied {migration}");
        }
        println!(
            "mailroom: applied {} migration(s); the database schema is up to date",
            applied.len()
        );
    }
    Ok(())
}

/// Every check `run` makes ([`Worker::preflight`]), each printing one line; the exit code is
/// non-zero if any failed.
async fn check(path: &Path, worker: &Worker) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => {
            println!("ok   config {}", path.display());
            config
        }
        Err(err) => {
            println!("FAIL {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let (report, _) = worker.preflight(&config).await;
    for line in &report.lines {
        println!("{line}");
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
