//! `mailroom queues stats` and `mailroom queues purge`.
//!
//! Stats reads every configured queue and its DLQ on its own: a queue that does not resolve (or
//! whose attributes cannot be read) becomes an error row and the others are still shown, since
//! an operator runs `stats` exactly when something is wrong; the exit is non-zero at the end if
//! any row failed. A queue without a RedrivePolicy gets a `no DLQ` row rather than none, so a
//! missing DLQ is seen, not inferred from an absent line. OLDEST AGE comes from
//! [`queue_info::oldest_age`]: DLQs are sampled by default (a receive count on a DLQ is not
//! acted on), queues only with `--sample-queues` (there it counts toward retries and
//! maxReceiveCount).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};

use super::queue_info::{self, dlq_target, format_age, Depth, DlqTarget, OldestAge};
use super::{Ctx, StatsArgs};
use crate::error_text::error_text;
use crate::sqs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Role {
    Queue,
    Dlq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    /// The queue has no RedrivePolicy.
    NoDlq,
    Error,
}

/// One line of `queues stats` (one JSON object with `--json`).
#[derive(Debug, serde::Serialize)]
struct Row {
    queue: String,
    role: Role,
    /// The SQS queue name; absent when it could not be known.
    name: Option<String>,
    status: Status,
    #[serde(flatten)]
    depth: Option<Depth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_age_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_age_from: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Row {
    fn ok(queue: &str, role: Role, name: String, depth: Depth, age: OldestAge) -> Self {
        Row {
            queue: queue.to_string(),
            role,
            name: Some(name),
            status: Status::Ok,
            depth: Some(depth),
            oldest_age_secs: age.secs(),
            oldest_age_from: Some(age.source()),
            error: None,
        }
    }

    fn no_dlq(queue: &str) -> Self {
        Row {
            queue: queue.to_string(),
            role: Role::Dlq,
            name: None,
            status: Status::NoDlq,
            depth: None,
            oldest_age_secs: None,
            oldest_age_from: None,
            error: None,
        }
    }

    fn error(queue: &str, role: Role, name: Option<String>, err: &anyhow::Error) -> Self {
        Row {
            queue: queue.to_string(),
            role,
            name,
            status: Status::Error,
            depth: None,
            oldest_age_secs: None,
            oldest_age_from: None,
            error: Some(error_text(err)),
        }
    }

    fn age_cell(&self) -> String {
        match (self.oldest_age_secs, self.oldest_age_from) {
            (Some(secs), _) => format_age(secs),
            (None, Some("not_sampled")) => "not sampled".into(),
            _ => "-".into(),
        }
    }
}

fn sqs_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

/// The oldest age of a queue whose attributes were read; a sample that fails is a warning, not
/// a failed row (its depth was read).
async fn age_of(
    ctx: &Ctx,
    url: &str,
    attrs: &HashMap<String, String>,
    sample: bool,
    now: DateTime<Utc>,
) -> OldestAge {
    match queue_info::oldest_age(&ctx.sqs, url, attrs, sample, now).await {
        Ok(age) => age,
        Err(e) => {
            eprintln!(
                "mailroom: warning: {}: oldest age not sampled: {e}",
                sqs_name(url)
            );
            OldestAge::NotSampled
        }
    }
}

/// The rows of one configured queue: the queue and its DLQ (or `no DLQ`, or error rows).
async fn queue_rows(ctx: &Ctx, queue: &str, args: &StatsArgs, now: DateTime<Utc>) -> Vec<Row> {
    let url = match ctx.queue_url(queue).await {
        Ok(url) => url,
        Err(e) => return vec![Row::error(queue, Role::Queue, None, &e)],
    };
    let name = sqs_name(&url);
    let attrs = match sqs::attributes(&ctx.sqs, &url).await {
        Ok(attrs) => attrs,
        Err(e) => {
            let e = anyhow::Error::new(e).context(format!("queue \"{queue}\""));
            return vec![Row::error(queue, Role::Queue, Some(name), &e)];
        }
    };
    let age = age_of(ctx, &url, &attrs, args.sample_queues, now).await;
    let mut rows = vec![Row::ok(
        queue,
        Role::Queue,
        name,
        Depth::from_attrs(&attrs),
        age,
    )];
    let dlq_name = match dlq_target(&attrs) {
        DlqTarget::None => {
            rows.push(Row::no_dlq(queue));
            return rows;
        }
        DlqTarget::Unreadable(policy) => {
            let e = anyhow::anyhow!("RedrivePolicy names no DLQ: {policy}");
            rows.push(Row::error(queue, Role::Dlq, None, &e));
            return rows;
        }
        DlqTarget::Named(name) => name,
    };
    let dlq = async {
        let url = sqs::queue_url(&ctx.sqs, &dlq_name, None).await?;
        let attrs = sqs::attributes(&ctx.sqs, &url).await?;
        // A DLQ that has a DLQ of its own acts on receive counts: sample it only when asked.
        let sample = args.sample_queues || dlq_target(&attrs) == DlqTarget::None;
        let age = age_of(ctx, &url, &attrs, sample, now).await;
        anyhow::Ok((attrs, age))
    };
    rows.push(match dlq.await {
        Ok((attrs, age)) => Row::ok(queue, Role::Dlq, dlq_name, Depth::from_attrs(&attrs), age),
        Err(e) => {
            let e = e.context(format!("DLQ {dlq_name}"));
            Row::error(queue, Role::Dlq, Some(dlq_name), &e)
        }
    });
    rows
}

pub async fn stats(ctx: &Ctx, args: &StatsArgs) -> Result<()> {
    let now = Utc::now();
    let mut rows = Vec::new();
    for q in &ctx.config.queues {
        rows.extend(queue_rows(ctx, &q.name, args, now).await);
    }
    let failed = rows.iter().filter(|r| r.status == Status::Error).count();
    let mut out = std::io::stdout().lock();
    if args.json {
        for row in &rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
    } else {
        print_table(&mut out, &rows)?;
    }
    out.flush()?;
    if failed > 0 {
        bail!(
            "{failed} row(s) could not be read (shown as {}); the others are as shown",
            if args.json {
                "\"status\":\"error\""
            } else {
                "ERROR"
            }
        );
    }
    Ok(())
}

fn print_table(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let name_cell = |r: &Row| match (r.status, &r.name) {
        (Status::NoDlq, _) => "no DLQ".to_string(),
        (_, Some(name)) => name.clone(),
        (_, None) => "?".to_string(),
    };
    let qwidth = rows.iter().map(|r| r.queue.len()).max().unwrap_or(5).max(5);
    let nwidth = rows
        .iter()
        .map(|r| name_cell(r).len())
        .max()
        .unwrap_or(8)
        .max(8);
    writeln!(
        out,
        "{:<qwidth$}  {:<5}  {:<nwidth$}  {:>9}  {:>9}  {:>9}  {:>11}",
        "QUEUE", "ROLE", "SQS NAME", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST AGE"
    )?;
    for r in rows {
        let role = match r.role {
            Role::Queue => "queue",
            Role::Dlq => "dlq",
        };
        let lead = format!("{:<qwidth$}  {role:<5}  {:<nwidth$}", r.queue, name_cell(r));
        match (&r.depth, &r.error) {
            (Some(d), _) => writeln!(
                out,
                "{lead}  {:>9}  {:>9}  {:>9}  {:>11}",
                d.visible,
                d.in_flight,
                d.delayed,
                r.age_cell()
            )?,
            (None, Some(e)) => writeln!(out, "{lead}  ERROR: {e}")?,
            (None, None) => writeln!(
                out,
                "{lead}  {:>9}  {:>9}  {:>9}  {:>11}",
                "-", "-", "-", "-"
            )?,
        }
    }
    writeln!(
        out,
        "(counts are SQS approximations; OLDEST AGE is the oldest visible message among up to 10 \
         seen by a receive that hides nothing (VisibilityTimeout=0), a lower bound; queues are \
         sampled only with --sample-queues, since that receive adds 1 to each message's receive \
         count)"
    )?;
    Ok(())
}

pub async fn purge(ctx: &Ctx, queue: &str, dlq: bool, yes: bool) -> Result<()> {
    let (name, url) = if dlq {
        ctx.dlq_of(queue).await?
    } else {
        (queue.to_string(), ctx.queue_url(queue).await?)
    };
    let attrs = sqs::attributes(&ctx.sqs, &url)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("queue {name}: GetQueueAttributes"))?;
    let depth = Depth::from_attrs(&attrs);
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to purge {name} without a terminal to confirm on: pass --yes");
        }
        eprint!(
            "Purge {name} ({url}): about {} visible and {} in-flight messages will be deleted for good.\n\
             Type the queue name to confirm: ",
            depth.visible, depth.in_flight
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the confirmation")?;
        if answer.trim() != name {
            bail!("not confirmed: nothing purged");
        }
    }
    ctx.sqs
        .purge_queue()
        .queue_url(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(sqs::describe(&e)))
        .with_context(|| format!("PurgeQueue {name}"))?;
    println!(
        "purged {name} (about {} messages; SQS may take up to 60 s to finish)",
        depth.visible + depth.in_flight + depth.delayed
    );
    Ok(())
}
