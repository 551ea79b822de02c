//! `mailroom queues stats` and `mailroom queues purge`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};

use super::queue_info::{dead_letter_queue, Depth};
use super::Ctx;
use crate::sqs;

#[derive(Debug, serde::Serialize)]
struct Row {
    queue: String,
    role: &'static str,
    name: String,
    #[serde(flatten)]
    depth: Depth,
}

pub async fn stats(ctx: &Ctx, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for q in &ctx.config.queues {
        let url = ctx.queue_url(&q.name).await?;
        let attrs = sqs::attributes(&ctx.sqs, &url)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("queue \"{}\": GetQueueAttributes", q.name))?;
        rows.push(Row {
            queue: q.name.clone(),
            role: "queue",
            name: url.rsplit('/').next().unwrap_or(&url).to_string(),
            depth: Depth::from_attrs(&attrs),
        });
        if let Some((dlq_name, dlq_url)) = dead_letter_queue(&ctx.sqs, &attrs)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("queue \"{}\": resolving its DLQ", q.name))?
        {
            let dlq = sqs::attributes(&ctx.sqs, &dlq_url)
                .await
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("DLQ {dlq_name}: GetQueueAttributes"))?;
            rows.push(Row {
                queue: q.name.clone(),
                role: "dlq",
                name: dlq_name,
                depth: Depth::from_attrs(&dlq),
            });
        }
    }
    let mut out = std::io::stdout().lock();
    if json {
        for row in &rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.queue.len().max(r.name.len()))
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:<5}  {:<width$}  {:>9}  {:>9}  {:>9}  {:>10}",
        "QUEUE", "ROLE", "SQS NAME", "VISIBLE", "IN FLIGHT", "DELAYED", "OLDEST AGE"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<width$}  {:<5}  {:<width$}  {:>9}  {:>9}  {:>9}  {:>10}",
            r.queue, r.role, r.name, r.depth.visible, r.depth.in_flight, r.depth.delayed, "n/a"
        )?;
    }
    writeln!(
        out,
        "(counts are SQS approximations; the oldest message's age is CloudWatch's \
         ApproximateAgeOfOldestMessage, not available from SQS)"
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
