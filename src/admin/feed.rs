//! `mailroom feed subscribe|read|ack|status`: the commit-ordered feed from a shell, for scripts
//! and for looking at a consumer. Applications read it with SQL (docs/feed.md); these commands
//! call the same functions, so what they print is what an application would get.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::store::feed::{self, Position, Start, Stream};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum FeedCommand {
    /// Create a named consumer (idempotent).
    Subscribe {
        /// Consumer name: letters, digits, `_`, `.`, `-` (up to 63).
        name: String,
        /// `events` or `inbound_emails`.
        #[arg(long, default_value = "events")]
        stream: String,
        /// Start from every stored row, or only from rows stored from now on.
        #[arg(long, value_enum, default_value_t = StartArg::Beginning)]
        from: StartArg,
    },
    /// Print the next rows after the consumer's position, one JSON object per line:
    /// {"position":"XID:ID","id":N,"row":{...}}. The position moves only with --ack or `feed ack`.
    Read(ReadArgs),
    /// Move a consumer's position to XID:ID, the last row it handled (as `read` printed it).
    Ack { name: String, position: String },
    /// Every consumer (or one): its position, rows acknowledged, rows waiting.
    Status { name: Option<String> },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StartArg {
    Beginning,
    Now,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    pub name: String,
    /// Most rows to print.
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// Acknowledge what was printed, in the same transaction, once it is written out.
    #[arg(long)]
    pub ack: bool,
    /// Inbound emails: include each attachment's bytes (base64).
    #[arg(long)]
    pub attachments: bool,
}

pub async fn run(store: &Store, command: FeedCommand) -> Result<()> {
    match command {
        FeedCommand::Subscribe { name, stream, from } => {
            let stream: Stream = stream.parse()?;
            let start = match from {
                StartArg::Beginning => Start::Beginning,
                StartArg::Now => Start::Now,
            };
            feed::subscribe(store.pool(), &name, stream, start)
                .await
                .with_context(|| format!("creating feed consumer {name:?}"))?;
            println!("consumer {name} reads {}", stream.as_str());
            Ok(())
        }
        FeedCommand::Read(args) => read(store, &args).await,
        FeedCommand::Ack { name, position } => {
            let position: Position = position.parse()?;
            let mut conn = store.pool().acquire().await.context("connecting")?;
            let moved = feed::ack(&mut conn, &name, position, 0)
                .await
                .with_context(|| format!("acknowledging {position} for {name:?}"))?;
            if moved {
                println!("{name}: position {position}");
            } else {
                println!("{name}: already at or past {position} (nothing changed)");
            }
            Ok(())
        }
        FeedCommand::Status { name } => status(store, name.as_deref()).await,
    }
}

async fn read(store: &Store, args: &ReadArgs) -> Result<()> {
    let Some(stream) = feed::consumer_stream(store.pool(), &args.name).await? else {
        bail!(
            "no feed consumer named {:?}: create it with `mailroom feed subscribe {}`",
            args.name,
            args.name
        );
    };
    let mut tx = store.begin().await?;
    let rows = feed::read(&mut tx, &args.name, stream, args.limit, args.attachments)
        .await
        .with_context(|| format!("reading the feed for {:?}", args.name))?;
    let mut out = std::io::stdout().lock();
    for row in &rows {
        writeln!(
            out,
            r#"{{"position":"{}","id":{},"row":{}}}"#,
            row.position, row.id, row.json
        )?;
    }
    out.flush()?;
    drop(out);
    match rows.last() {
        None => eprintln!("{}: nothing new", args.name),
        Some(last) if args.ack => {
            feed::ack(&mut tx, &args.name, last.position, rows.len() as i64).await?;
            tx.commit()
                .await
                .context("committing the acknowledgement")?;
            eprintln!(
                "{}: {} row(s), acknowledged up to {}",
                args.name,
                rows.len(),
                last.position
            );
        }
        Some(last) => eprintln!(
            "{}: {} row(s); acknowledge with `mailroom feed ack {} {}`",
            args.name,
            rows.len(),
            args.name,
            last.position
        ),
    }
    Ok(())
}

async fn status(store: &Store, name: Option<&str>) -> Result<()> {
    let consumers = feed::status(store.pool(), name).await?;
    if let (Some(name), true) = (name, consumers.is_empty()) {
        bail!("no feed consumer named {name:?}");
    }
    println!(
        "{:<24}  {:<14}  {:<24}  {:>12}  {:>9}  {:<20}  LAST ACK",
        "CONSUMER", "STREAM", "POSITION", "ACKED ROWS", "PENDING", "OLDEST PENDING"
    );
    for c in &consumers {
        let pending = if c.pending >= feed::PENDING_COUNT_CAP {
            format!(">={}", feed::PENDING_COUNT_CAP)
        } else {
            c.pending.to_string()
        };
        let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or("-".to_string(), |t| {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
        };
        println!(
            "{:<24}  {:<14}  {:<24}  {:>12}  {:>9}  {:<20}  {}",
            c.name,
            c.stream.as_str(),
            c.position.to_string(),
            c.acked_rows,
            pending,
            fmt(c.oldest_pending_stored_at),
            fmt(c.acked_at)
        );
    }
    Ok(())
}
