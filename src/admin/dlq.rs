//! `mailroom queues dlq peek|redrive`: look at and move back the messages of a queue's DLQ.
//!
//! Peek holds what it shows for a few seconds, then releases it (visibility 0), so messages are
//! never consumed and each is shown once. Redrive prefers SQS's own StartMessageMoveTask; where
//! the server lacks it, it copies: receive, SendMessageBatch to the source (body and message
//! attributes kept), and deletes from the DLQ only the entries SQS accepted, so a message is
//! never lost; it could only be doubled if a delete fails after its copy was sent, which is
//! reported (and harmless: every Mailroom write is idempotent).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};

use super::Ctx;
use crate::sqs::{self, describe};

/// How `redrive` moves messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// StartMessageMoveTask, else copy.
    Auto,
    /// StartMessageMoveTask only.
    MoveTask,
    /// Receive, send, delete.
    Copy,
}

const PEEK_HOLD_SECS: i32 = 30;
const COPY_HOLD_SECS: i32 = 60;
/// Consecutive empty receives that mean "the DLQ is drained".
const EMPTY_RECEIVES_TO_STOP: u32 = 2;
const MOVE_TASK_WAIT: Duration = Duration::from_secs(600);

async fn receive(ctx: &Ctx, url: &str, max: usize, hold_secs: i32) -> Result<Vec<Message>> {
    let out = ctx
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(hold_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))
        .context("ReceiveMessage on the DLQ")?;
    Ok(out.messages.unwrap_or_default())
}

pub async fn peek(ctx: &Ctx, queue: &str, max: usize) -> Result<()> {
    let (dlq_name, dlq_url) = ctx.dlq_of(queue).await?;
    let mut seen = HashSet::new();
    let mut held: Vec<String> = Vec::new();
    let mut empty = 0;
    let mut shown = Vec::new();
    while shown.len() < max && empty < EMPTY_RECEIVES_TO_STOP {
        let messages = receive(ctx, &dlq_url, max - shown.len(), PEEK_HOLD_SECS).await?;
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in messages {
            if let Some(r) = &m.receipt_handle {
                held.push(r.clone());
            }
            let id = m.message_id.clone().unwrap_or_default();
            if seen.insert(id) {
                shown.push(m);
            }
        }
    }
    let released = release(ctx, &dlq_url, &held).await;
    println!(
        "DLQ {dlq_name} of queue \"{queue}\": {} message(s) shown, none consumed",
        shown.len()
    );
    for m in &shown {
        print_message(m);
    }
    if let Err(e) = released {
        eprintln!(
            "mailroom: warning: {}; the messages reappear after {PEEK_HOLD_SECS} s",
            crate::error_text::error_text(&e)
        );
    }
    Ok(())
}

fn print_message(m: &Message) {
    let system = m.attributes.clone().unwrap_or_default();
    let get = |k: MessageSystemAttributeName| system.get(&k).cloned().unwrap_or_default();
    println!(
        "--- message {} (receive count {}, sent at {} ms)",
        m.message_id.as_deref().unwrap_or("?"),
        get(MessageSystemAttributeName::ApproximateReceiveCount),
        get(MessageSystemAttributeName::SentTimestamp)
    );
    for (k, v) in m.message_attributes.clone().unwrap_or_default() {
        println!(
            "attribute {k} = {}",
            v.string_value.as_deref().unwrap_or("(binary)")
        );
    }
    let body = m.body.as_deref().unwrap_or("");
    match mailroom_envelope::decode(body) {
        Ok(mailroom_envelope::Decoded::Envelope(e)) => println!(
            "envelope: kind {:?}, content-type {}, body {} bytes",
            e.kind,
            e.content_type.as_deref().unwrap_or("-"),
            e.body.len()
        ),
        Ok(mailroom_envelope::Decoded::Pointer(p)) => {
            println!("envelope: S3 pointer s3://{}/{}", p.bucket, p.key)
        }
        Err(e) => println!("envelope: does not decode: {e}"),
    }
    let shown: String = body.chars().take(2000).collect();
    println!("{shown}");
    if shown.len() < body.len() {
        println!("... ({} bytes in all)", body.len());
    }
}

/// Make held messages visible again at once.
async fn release(ctx: &Ctx, url: &str, receipts: &[String]) -> Result<()> {
    for chunk in receipts.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("r{i}"))
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        let out = ctx
            .sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))
            .context("releasing peeked messages")?;
        if !out.failed.is_empty() {
            bail!(
                "{} peeked message(s) could not be released",
                out.failed.len()
            );
        }
    }
    Ok(())
}

pub async fn redrive(ctx: &Ctx, queue: &str, method: Method, max: Option<usize>) -> Result<()> {
    let (dlq_name, dlq_url) = ctx.dlq_of(queue).await?;
    let url = ctx.queue_url(queue).await?;
    if method != Method::Copy {
        match move_task(ctx, &dlq_url, &url).await {
            Ok(moved) => {
                println!("moved {moved} message(s) from {dlq_name} back to \"{queue}\" (StartMessageMoveTask)");
                return Ok(());
            }
            Err(e) if method == Method::Auto => {
                eprintln!(
                    "mailroom: StartMessageMoveTask not available ({}); copying instead",
                    crate::error_text::error_text(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
    let report = copy(ctx, &dlq_url, &url, max).await?;
    println!(
        "moved {} message(s) from {dlq_name} back to \"{queue}\" (receive, send, delete); {} could not be sent and stay in the DLQ; {} were sent but could not be deleted from the DLQ",
        report.moved, report.send_failed, report.delete_failed
    );
    if report.send_failed > 0 || report.delete_failed > 0 {
        bail!("redrive incomplete");
    }
    Ok(())
}

async fn arn(ctx: &Ctx, url: &str) -> Result<String> {
    sqs::attributes(&ctx.sqs, url)
        .await
        .map_err(anyhow::Error::msg)?
        .get("QueueArn")
        .cloned()
        .with_context(|| format!("{url} has no QueueArn attribute"))
}

async fn move_task(ctx: &Ctx, dlq_url: &str, url: &str) -> Result<i64> {
    let source = arn(ctx, dlq_url).await?;
    let destination = arn(ctx, url).await?;
    ctx.sqs
        .start_message_move_task()
        .source_arn(&source)
        .destination_arn(&destination)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(describe(&e)))?;
    let deadline = tokio::time::Instant::now() + MOVE_TASK_WAIT;
    loop {
        let tasks = ctx
            .sqs
            .list_message_move_tasks()
            .source_arn(&source)
            .max_results(1)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        if let Some(task) = tasks.results.unwrap_or_default().into_iter().next() {
            let moved = task.approximate_number_of_messages_moved;
            match task.status.as_deref() {
                Some("COMPLETED") => return Ok(moved),
                Some("FAILED") | Some("CANCELLED") => bail!(
                    "move task {}: {} after {moved} message(s)",
                    task.status.unwrap_or_default(),
                    task.failure_reason.unwrap_or_default()
                ),
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("move task still running after {MOVE_TASK_WAIT:?}; see ListMessageMoveTasks");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, Default)]
struct CopyReport {
    moved: usize,
    send_failed: usize,
    delete_failed: usize,
}

async fn copy(ctx: &Ctx, dlq_url: &str, url: &str, max: Option<usize>) -> Result<CopyReport> {
    let fifo = url.ends_with(".fifo");
    let mut report = CopyReport::default();
    let mut empty = 0;
    let mut seen = HashSet::new();
    let limit = max.unwrap_or(usize::MAX);
    while empty < EMPTY_RECEIVES_TO_STOP && report.moved + report.send_failed < limit {
        let want = (limit - report.moved - report.send_failed).min(10);
        let messages = receive(ctx, dlq_url, want, COPY_HOLD_SECS).await?;
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        let mut entries = Vec::new();
        let mut receipts = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let (Some(id), Some(receipt)) = (&m.message_id, &m.receipt_handle) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                // Already copied this run but its delete was lost: release it, don't resend.
                receipts.push((format!("e{i}"), receipt.clone(), false));
                continue;
            }
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(format!("e{i}"))
                .message_body(m.body.clone().unwrap_or_default())
                .set_message_attributes(m.message_attributes.clone());
            if fifo {
                let group = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned()
                    .unwrap_or_else(|| "mailroom-redrive".into());
                entry = entry.message_group_id(group).message_deduplication_id(id);
            }
            entries.push(entry.build().context("building a SendMessageBatch entry")?);
            receipts.push((format!("e{i}"), receipt.clone(), true));
        }
        let sent: HashSet<String> = if entries.is_empty() {
            HashSet::new()
        } else {
            let out = ctx
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!(describe(&e)))
                .context("SendMessageBatch to the source queue")?;
            for failed in &out.failed {
                tracing::warn!(entry = %failed.id, code = %failed.code, "redrive: send failed");
            }
            out.successful.into_iter().map(|s| s.id).collect()
        };
        let mut deletes = Vec::new();
        let mut unsent = Vec::new();
        let mut copies = 0;
        for (id, receipt, fresh) in receipts {
            if fresh && sent.contains(&id) {
                deletes.push((id, receipt));
                copies += 1;
            } else if fresh {
                report.send_failed += 1;
                unsent.push(receipt);
            } else {
                // Copied earlier in this run; only its DLQ delete is still owed.
                deletes.push((id, receipt));
            }
        }
        let deleting = deletes.len();
        // Counted as moved: fresh copies whose delete went through (a late delete of an earlier
        // copy was already counted in delete_failed, and is not counted twice).
        let redeletes = deleting - copies;
        if !deletes.is_empty() {
            let entries = deletes
                .into_iter()
                .filter_map(|(id, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(r)
                        .build()
                        .ok()
                })
                .collect();
            match ctx
                .sqs
                .delete_message_batch()
                .queue_url(dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => {
                    report.delete_failed += out.failed.len();
                    report.moved += (deleting - out.failed.len()).saturating_sub(redeletes);
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "redrive: DeleteMessageBatch failed");
                    report.delete_failed += deleting;
                }
            }
        }
        // Unsent messages stay in the DLQ: release them now rather than after the hold.
        let _ = release(ctx, dlq_url, &unsent).await;
        if !unsent.is_empty() {
            break;
        }
    }
    Ok(report)
}
