//! The only code that deletes messages or changes their visibility.
//!
//! Every delete and visibility change from every handler goes through one task that coalesces
//! them per queue into DeleteMessageBatch / ChangeMessageVisibilityBatch calls: flushed as soon
//! as 10 entries are waiting, or after a short interval. Each batch's per-entry failures are
//! retried (a few times, with backoff) unless SQS says the entry itself is bad, and every caller
//! is told how its entry ended, so a handler's message is known deleted (and, for instance, its
//! S3 body can then be removed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::sqs::describe;

/// SQS batch calls take at most 10 entries.
const MAX_ENTRIES: usize = 10;
/// Attempts for an entry that failed for a reason that may pass.
const MAX_ATTEMPTS: u32 = 4;

/// How an ack request ended.
pub type AckResult = Result<(), AckError>;

/// Why a delete or visibility change did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AckError {
    /// SQS refused it (after retries, where a retry could help).
    #[error("SQS did not accept the {op}: {detail}")]
    Refused { op: &'static str, detail: String },
    /// The acker had stopped (the engine is shutting down).
    #[error("the acker stopped before the request was sent")]
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Delete,
    Visibility,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Delete => "delete",
            Op::Visibility => "change_visibility",
        }
    }
}

struct Entry {
    receipt_handle: String,
    visibility_timeout_secs: u32,
    done: Option<oneshot::Sender<AckResult>>,
}

enum Request {
    Ack {
        op: Op,
        queue: QueueRef,
        entry: Entry,
    },
    Flush(oneshot::Sender<()>),
}

/// A queue's URL and its label for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueRef {
    pub name: Arc<str>,
    pub url: Arc<str>,
}

/// Handle to the acker task; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::UnboundedSender<Request>,
}

impl Acker {
    /// Start the acker task. It runs until every `Acker` clone is dropped, then flushes what is
    /// pending and ends; await the returned handle to know everything was sent.
    pub fn spawn(client: Client, flush_interval: Duration) -> (Acker, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, flush_interval, rx));
        (Acker { tx }, task)
    }

    /// Delete a message; the receiver says when (and whether) SQS confirmed it.
    pub fn delete(&self, queue: &QueueRef, receipt_handle: String) -> oneshot::Receiver<AckResult> {
        self.send(Op::Delete, queue, receipt_handle, 0)
    }

    /// Make a message visible again after `secs` (0: at once).
    pub fn change_visibility(
        &self,
        queue: &QueueRef,
        receipt_handle: String,
        secs: u32,
    ) -> oneshot::Receiver<AckResult> {
        self.send(Op::Visibility, queue, receipt_handle, secs)
    }

    /// Send everything pending now and wait for it.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Request::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    fn send(
        &self,
        op: Op,
        queue: &QueueRef,
        receipt_handle: String,
        secs: u32,
    ) -> oneshot::Receiver<AckResult> {
        let (done, wait) = oneshot::channel();
        let entry = Entry {
            receipt_handle,
            visibility_timeout_secs: secs,
            done: Some(done),
        };
        if let Err(mpsc::error::SendError(Request::Ack { mut entry, .. })) =
            self.tx.send(Request::Ack {
                op,
                queue: queue.clone(),
                entry,
            })
        {
            if let Some(done) = entry.done.take() {
                let _ = done.send(Err(AckError::Stopped));
            }
        }
        wait
    }
}

async fn run(client: Client, flush_interval: Duration, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut pending: HashMap<(Op, QueueRef), Vec<Entry>> = HashMap::new();
    let mut flush_at: Option<Instant> = None;
    let mut sending: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            request = rx.recv() => match request {
                Some(Request::Ack { op, queue, entry }) => {
                    let key = (op, queue);
                    let buffer = pending.entry(key.clone()).or_default();
                    buffer.push(entry);
                    if buffer.len() >= MAX_ENTRIES {
                        let entries = std::mem::take(buffer);
                        pending.remove(&key);
                        sending.spawn(send_batch(client.clone(), key.0, key.1, entries));
                    }
                    if pending.is_empty() {
                        flush_at = None;
                    } else if flush_at.is_none() {
                        flush_at = Some(Instant::now() + flush_interval);
                    }
                }
                Some(Request::Flush(done)) => {
                    flush_all(&client, &mut pending, &mut sending);
                    flush_at = None;
                    while sending.join_next().await.is_some() {}
                    let _ = done.send(());
                }
                None => break,
            },
            _ = sleep_until(flush_at) => {
                flush_all(&client, &mut pending, &mut sending);
                flush_at = None;
            }
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
        }
    }
    flush_all(&client, &mut pending, &mut sending);
    while sending.join_next().await.is_some() {}
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn flush_all(
    client: &Client,
    pending: &mut HashMap<(Op, QueueRef), Vec<Entry>>,
    sending: &mut JoinSet<()>,
) {
    for ((op, queue), mut entries) in pending.drain() {
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(MAX_ENTRIES));
            sending.spawn(send_batch(client.clone(), op, queue.clone(), entries));
            entries = rest;
        }
    }
}

/// Send one batch, retrying the entries that failed for a reason that may pass.
async fn send_batch(client: Client, op: Op, queue: QueueRef, mut entries: Vec<Entry>) {
    metrics::histogram!("mailroom_ack_batch_size", "op" => op.label()).record(entries.len() as f64);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failures = call(&client, op, &queue, &entries).await;
        let mut retry = Vec::new();
        for (index, mut entry) in entries.into_iter().enumerate() {
            match failures.get(&index) {
                None => {
                    if op == Op::Delete {
                        metrics::counter!("mailroom_messages_deleted_total", "queue" => queue.name.to_string())
                            .increment(1);
                    }
                    if let Some(done) = entry.done.take() {
                        let _ = done.send(Ok(()));
                    }
                }
                Some(failure) if failure.retryable && attempt < MAX_ATTEMPTS => retry.push(entry),
                Some(failure) => {
                    metrics::counter!("mailroom_ack_failures_total", "op" => op.label(), "queue" => queue.name.to_string())
                        .increment(1);
                    tracing::warn!(
                        queue = %queue.name,
                        op = op.label(),
                        attempts = attempt,
                        error = %failure.message,
                        "SQS did not accept a {}; the message will be delivered again and its writes are idempotent",
                        op.label()
                    );
                    if let Some(done) = entry.done.take() {
                        let _ = done.send(Err(AckError::Refused {
                            op: op.label(),
                            detail: failure.message.clone(),
                        }));
                    }
                }
            }
        }
        if retry.is_empty() {
            return;
        }
        entries = retry;
        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
    }
}

struct Failure {
    message: String,
    retryable: bool,
}

/// One batch call; returns the failed entries by index (all of them when the call itself failed).
async fn call(
    client: &Client,
    op: Op,
    queue: &QueueRef,
    entries: &[Entry],
) -> HashMap<usize, Failure> {
    let ids: Vec<String> = (0..entries.len()).map(|i| i.to_string()).collect();
    let outcome = match op {
        Op::Delete => {
            let batch = entries
                .iter()
                .zip(&ids)
                .map(|(e, id)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(&e.receipt_handle)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect::<Vec<_>>();
            client
                .delete_message_batch()
                .queue_url(&*queue.url)
                .set_entries(Some(batch))
                .send()
                .await
                .map(|out| out.failed)
                .map_err(|e| describe(&e))
        }
        Op::Visibility => {
            let batch = entries
                .iter()
                .zip(&ids)
                .map(|(e, id)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(&e.receipt_handle)
                        .visibility_timeout(e.visibility_timeout_secs as i32)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect::<Vec<_>>();
            client
                .change_message_visibility_batch()
                .queue_url(&*queue.url)
                .set_entries(Some(batch))
                .send()
                .await
                .map(|out| out.failed)
                .map_err(|e| describe(&e))
        }
    };
    match outcome {
        Ok(failed) => failed
            .into_iter()
            .filter_map(|f| {
                let index = f.id.parse::<usize>().ok()?;
                let message = format!("{}: {}", f.code, f.message.unwrap_or_default());
                // Sender faults (a bad or expired receipt handle) will not pass on retry.
                Some((
                    index,
                    Failure {
                        message,
                        retryable: !f.sender_fault,
                    },
                ))
            })
            .collect(),
        Err(message) => {
            metrics::counter!("mailroom_sqs_errors_total", "queue" => queue.name.to_string(), "op" => op.label())
                .increment(1);
            (0..entries.len())
                .map(|i| {
                    (
                        i,
                        Failure {
                            message: message.clone(),
                            retryable: true,
                        },
                    )
                })
                .collect()
        }
    }
}
