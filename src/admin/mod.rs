//! Operator commands (`mailroom queues ...`, `mailroom dead-letters ...`, `mailroom send`):
//! safer than `shoryuken sqs`: they act on the queues of the config (by their label), peek
//! without consuming, move messages only after the copy was accepted, and refuse to purge
//! without an explicit confirmation.
//!
//! These commands talk to SQS directly (the engine's "only the acker deletes" rule is about the
//! worker; an operator moving or purging messages is a deliberate act outside it).

pub mod dead_letters;
pub mod dlq;
pub mod feed;
pub mod maintain;
pub mod queue_info;
pub mod queues;
pub mod send;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::sqs;

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Per configured queue and its DLQ (from RedrivePolicy): visible, in flight, delayed, and
    /// the age of the oldest visible message. A queue that cannot be read gets an error row
    /// (and a non-zero exit); the others are still shown.
    Stats(StatsArgs),
    /// The dead-letter queue of a configured queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Delete every message of a queue (or of its DLQ). Asks on the terminal unless --yes.
    Purge {
        /// Configured queue label (or a queue name).
        queue: String,
        /// Purge the queue's DLQ instead of the queue.
        #[arg(long)]
        dlq: bool,
        /// Do not ask (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Print DLQ messages decoded (envelope, then the SendGrid callback) without consuming
    /// them: they stay, visible again as soon as they were read.
    Peek(PeekArgs),
    /// Move DLQ messages back to the queue: StartMessageMoveTask when the server has it, else
    /// receive, send (body and attributes kept), and delete only what was sent.
    Redrive {
        queue: String,
        #[arg(long, value_enum, default_value_t = dlq::Method::Auto)]
        method: dlq::Method,
        /// Most messages to move (copy method only).
        #[arg(long)]
        max: Option<usize>,
    },
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also sample the queues themselves (not only their DLQs) for OLDEST AGE. The sample is a
    /// receive with VisibilityTimeout=0 (nothing is hidden from the workers), but it adds one to
    /// the receive count of each message it sees (up to 10), and the worker's retry schedule and
    /// the queue's maxReceiveCount both count receives.
    #[arg(long)]
    pub sample_queues: bool,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    /// Configured queue label (or a queue name) whose DLQ to peek.
    pub queue: String,
    /// Most messages to show.
    #[arg(long, default_value_t = 10)]
    pub max: usize,
    /// Print each message's exact SQS body, uncut, instead of the decoded view (with --json:
    /// add it as "sqs_body").
    #[arg(long)]
    pub raw: bool,
    /// One JSON object per message (the decoded fields), for scripts; the summary line goes to
    /// stderr.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// List rows of mailroom_dead_letters, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Run the configured handler again over dead letters (after the bug is fixed); a row is
    /// removed when its handler answers done, kept with the new reason otherwise.
    Replay(ReplayArgs),
    /// Write a dead letter's decoded payload (the callback's body, exactly as SendGrid posted
    /// it; an S3-offloaded one fetched) to a file, to fix it and replay it with `replay --body`.
    Export {
        /// The dead letter.
        #[arg(long)]
        id: i64,
        /// Where to write it (stdout when absent).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Dead letter id (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<i64>,
    /// Every dead letter.
    #[arg(long, required_unless_present = "ids", conflicts_with = "ids")]
    pub all: bool,
    /// Replay the one `--id` with this payload instead of its own (a fixed copy of what
    /// `export` wrote). The row keeps the body it first had (`original_body`) and who changed
    /// it; the fixed payload becomes its body.
    #[arg(long, value_name = "FILE", requires = "ids")]
    pub body: Option<std::path::PathBuf>,
    /// Who replays, recorded in the row (default: $SUDO_USER, $USER, or "unknown").
    #[arg(long)]
    pub by: Option<String>,
    /// Decode and show what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Configured queue label (or a queue name).
    pub queue: String,
    /// A captured SendGrid POST body.
    pub file: std::path::PathBuf,
    #[arg(long, value_enum)]
    pub kind: send::KindArg,
    /// Content-Type of the captured request; default: application/json for events, and for
    /// inbound multipart/form-data with the boundary read from the file's first line.
    #[arg(long)]
    pub content_type: Option<String>,
}

/// What every admin command needs: the config and an SQS client.
pub struct Ctx {
    pub config: Config,
    pub sqs: aws_sdk_sqs::Client,
}

impl Ctx {
    pub async fn new(config: Config) -> Self {
        let aws = sqs::aws_config(&config.sqs).await;
        Self {
            sqs: sqs::client(&aws),
            config,
        }
    }

    /// A configured queue label (its `url` or name), or else any queue by name.
    pub async fn queue_url(&self, queue: &str) -> Result<String> {
        let configured = self.config.queues.iter().find(|q| q.name == queue);
        sqs::queue_url(&self.sqs, queue, configured.and_then(|q| q.url.as_deref()))
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("queue \"{queue}\": cannot resolve its URL"))
    }

    /// The DLQ (name, url) of a queue, from its RedrivePolicy.
    pub async fn dlq_of(&self, queue: &str) -> Result<(String, String)> {
        let url = self.queue_url(queue).await?;
        let attrs = sqs::attributes(&self.sqs, &url)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("queue \"{queue}\": GetQueueAttributes"))?;
        queue_info::dead_letter_queue(&self.sqs, &attrs)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("queue \"{queue}\": resolving its DLQ"))?
            .with_context(|| format!("queue \"{queue}\" has no RedrivePolicy, so no DLQ"))
    }
}

pub async fn queues(ctx: &Ctx, command: QueuesCommand) -> Result<()> {
    match command {
        QueuesCommand::Stats(args) => queues::stats(ctx, &args).await,
        QueuesCommand::Dlq(DlqCommand::Peek(args)) => dlq::peek(ctx, &args).await,
        QueuesCommand::Dlq(DlqCommand::Redrive { queue, method, max }) => {
            dlq::redrive(ctx, &queue, method, max).await
        }
        QueuesCommand::Purge { queue, dlq, yes } => queues::purge(ctx, &queue, dlq, yes).await,
    }
}
