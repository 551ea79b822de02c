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
        "{:>8}  {:<20}  {:<20}  {:<20}  {:>8}  {:>5}  {:<10}  REASON",
        "ID", "QUEUE", "FIRST FAILED", "LAST FAILED", "ATTEMPTS", "RECV", "HANDLER"
    );
    for r in &rows {
        let mut reason = r.reason.replace('\n', " ");
        if let Some(by) = &r.edited_by {
            reason.push_str(&format!(" [body edited by {by}]"));
        }
        println!(
            "{:>8}  {:<20}  {:<20}  {:<20}  {:>8}  {:>5}  {:<10}  {}",
            r.id,
            r.queue,
            r.first_failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.attempts,
            r.receive_count,
            r.handler.as_deref().unwrap_or("-"),
            reason
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
    let by = args.by.clone().unwrap_or_else(operator);
    let mut rows = rows;
    if let Some(path) = &args.body {
        anyhow::ensure!(
            rows.len() == 1 && args.ids.len() == 1,
            "--body replays one dead letter: name exactly one --id"
        );
        let payload = std::fs::read(path)
            .with_context(|| format!("reading the fixed payload {}", path.display()))?;
        let row = &mut rows[0];
        let mut envelope = bodies
            .open(&row.body)
            .await
            .with_context(|| format!("dead letter {}: opening its envelope", row.id))?;
        envelope.body = payload.into();
        let fixed = mailroom_envelope::encode(&envelope);
        if !args.dry_run {
            admin::replace_dead_letter_body(store.pool(), row.id, &fixed, &by)
                .await
                .with_context(|| format!("dead letter {}: storing the fixed payload", row.id))?;
            println!(
                "dead letter {}: payload replaced from {} ({} bytes; the original is kept)",
                row.id,
                path.display(),
                envelope.body.len()
            );
        }
        row.body = fixed;
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
                admin::record_failed_replay(store.pool(), row.id, &reason, &by)
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
    let envelope = bodies.open(&row.body).await?;
    Ok(Job {
        message_id: row.sqs_message_id.clone(),
        queue: row.queue.clone(),
        receive_count: u32::try_from(row.receive_count).unwrap_or(1),
        sent_at: None,
        attributes: row.attributes.clone(),
        envelope,
    })
}

/// Who is replaying, for the row's history.
fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// `dead-letters export`: the decoded payload of one dead letter, exactly as SendGrid posted it
/// (an S3-offloaded body fetched), to a file or stdout; what it is goes to stderr.
fn write_out(body: &[u8], out: Option<&std::path::Path>) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(body)
                .context("writing to stdout")?;
        }
    }
    Ok(())
}

pub async fn export(
    store: &Store,
    bodies: &Bodies,
    id: i64,
    out: Option<&std::path::Path>,
) -> Result<bool> {
    let rows = admin::dead_letters(store.pool(), Some(&[id]), 1)
        .await
        .context("reading mailroom_dead_letters")?;
    let Some(row) = rows.first() else {
        eprintln!(
            "mailroom: error: no dead letter with id {id} (see `mailroom dead-letters list`)"
        );
        return Ok(false);
    };
    // A forwarder's dead letter is the request body itself, not an SQS envelope.
    if row.queue.starts_with("forward:") {
        write_out(row.body.as_bytes(), out)?;
        eprintln!(
            "dead letter {id}: the {} delivery body, {} bytes (re-send it to the application \
             once the cause is fixed); first failed {}, {} attempt(s): {}",
            row.queue,
            row.body.len(),
            row.first_failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
            row.attempts,
            row.reason
        );
        return Ok(true);
    }
    let job = job(row, bodies)
        .await
        .with_context(|| format!("dead letter {id}: opening its envelope"))?;
    let body = &job.envelope.body;
    write_out(body, out)?;
    eprintln!(
        "dead letter {id}: {:?} payload, {} bytes, content type {}; first failed {}, {} attempt(s): {}",
        job.envelope.kind,
        body.len(),
        job.envelope.content_type.as_deref().unwrap_or("-"),
        row.first_failed_at.format("%Y-%m-%dT%H:%M:%SZ"),
        row.attempts,
        row.reason
    );
    if let Some(path) = out {
        eprintln!(
            "fix it, then: mailroom dead-letters replay --id {id} --body {}",
            path.display()
        );
    }
    Ok(true)
}
