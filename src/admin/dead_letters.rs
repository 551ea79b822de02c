//! `mailroom dead-letters list|replay`: inspect `mailroom_dead_letters`, and once the bug that
//! put messages there is fixed, run the handler over them again. A replay is the same call the
//! engine makes (a `Job` per row, the registered handler, one outcome each): a row is removed
//! only when its handler answered Done (committed), and kept with the new reason otherwise.
//! Handler writes are idempotent, so replaying a row twice stores nothing twice.

use anyhow::{Context, Result};

use crate::handler::{Job, Outcome, Registry};
use crate::s3::{Bodies, OpenError};
use crate::store::admin::{self, DeadLetterRow};
use crate::store::Store;

use super::ReplayArgs;

pub async fn list(store: &Store, limit: i64) -> Result<()> {
    let rows = admin::dead_letters(store.pool(), None, limit)
        .await
        .context("reading mailroom_dead_letters")?;
    println!(
        "{:>8}  {:<20}  {:<25}  {:>5}  {:<10}  REASON",
        "ID", "QUEUE", "FAILED AT", "TRIES", "HANDLER"
    );
    for r in &rows {
        println!(
            "{:>8}  {:<20}  {:<25}  {:>5}  {:<10}  {}",
            r.id,
            r.queue,
            r.failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.receive_count,
            r.handler.as_deref().unwrap_or("-"),
            r.reason.replace('\n', " ")
        );
    }
    println!("({} dead letter(s) shown)", rows.len());
    Ok(())
}

/// What happened to one row.
enum Replayed {
    Removed,
    Kept(String),
}

/// How a replay ended, for the exit code.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub removed: usize,
    pub kept: usize,
    /// Ids named with `--id` that are not in the table (a typo, or already replayed).
    pub missing: Vec<i64>,
}

pub async fn replay(
    store: &Store,
    registry: &Registry,
    bodies: &Bodies,
    configured_handler: impl Fn(&str) -> Option<String>,
    args: &ReplayArgs,
) -> Result<ReplaySummary> {
    let ids = (!args.all).then_some(args.ids.as_slice());
    let rows = admin::dead_letters(store.pool(), ids, i64::MAX)
        .await
        .context("reading mailroom_dead_letters")?;
    let mut summary = ReplaySummary::default();
    if let Some(ids) = ids {
        summary.missing = ids
            .iter()
            .copied()
            .filter(|id| !rows.iter().any(|r| r.id == *id))
            .collect();
        summary.missing.sort_unstable();
        summary.missing.dedup();
        for id in &summary.missing {
            eprintln!(
                "mailroom: error: no dead letter with id {id} (see `mailroom dead-letters list`)"
            );
        }
    }
    if rows.is_empty() {
        if summary.missing.is_empty() {
            println!("no dead letters to replay");
        }
        return Ok(summary);
    }
    for row in rows {
        let handler_name = configured_handler(&row.queue).or_else(|| row.handler.clone());
        let result = match handler_name.as_deref().and_then(|n| registry.get(n)) {
            None => Replayed::Kept(format!(
                "replay: no handler for queue \"{}\" (handler {:?})",
                row.queue, handler_name
            )),
            Some(handler) => match job(&row, bodies).await {
                Err(reason) => Replayed::Kept(format!("replay: {reason}")),
                Ok(job) if args.dry_run => {
                    println!(
                        "would replay {} (queue {}, {:?}, {} body bytes) with handler {}",
                        row.id,
                        row.queue,
                        job.envelope.kind,
                        job.envelope.body.len(),
                        handler_name.as_deref().unwrap_or("-")
                    );
                    continue;
                }
                Ok(job) => {
                    let jobs = [job];
                    match handler.handle_batch(&jobs).await.into_iter().next() {
                        Some(Outcome::Done) => Replayed::Removed,
                        Some(Outcome::Retry(r)) => {
                            Replayed::Kept(format!("replay: retry: {}", r.reason))
                        }
                        Some(Outcome::DeadLetter { reason }) => {
                            Replayed::Kept(format!("replay: {reason}"))
                        }
                        None => Replayed::Kept("replay: the handler returned no outcome".into()),
                    }
                }
            },
        };
        if args.dry_run {
            if let Replayed::Kept(reason) = result {
                println!("would keep {}: {reason}", row.id);
            }
            continue;
        }
        match result {
            Replayed::Removed => {
                admin::remove_dead_letter(store.pool(), row.id)
                    .await
                    .with_context(|| format!("removing dead letter {}", row.id))?;
                summary.removed += 1;
                println!("replayed {}: stored, row removed", row.id);
            }
            Replayed::Kept(reason) => {
                admin::update_dead_letter_reason(store.pool(), row.id, &reason)
                    .await
                    .with_context(|| format!("updating dead letter {}", row.id))?;
                summary.kept += 1;
                println!("kept {}: {reason}", row.id);
            }
        }
    }
    if !args.dry_run {
        println!(
            "replay: {} stored and removed, {} kept",
            summary.removed, summary.kept
        );
    }
    Ok(summary)
}

async fn job(row: &DeadLetterRow, bodies: &Bodies) -> Result<Job, OpenError> {
    let (envelope, _) = bodies.open(&row.body).await?;
    Ok(Job {
        message_id: row.sqs_message_id.clone(),
        queue: row.queue.clone(),
        receive_count: u32::try_from(row.receive_count).unwrap_or(1),
        sent_at: None,
        attributes: row.attributes.clone(),
        envelope,
    })
}
