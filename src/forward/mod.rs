//! Paced delivery to the application: each `[[forward]]` is a feed consumer that POSTs what was
//! stored to the application's URL at the rate the application can take, signed, with an
//! idempotency key, and acknowledges the feed only after the application answered 2xx (or the
//! delivery became a dead letter). What the application gets:
//!
//! - events in batches, as a JSON array of SendGrid's own event objects: the body SendGrid would
//!   have posted, so an existing webhook controller works unchanged;
//! - inbound emails one per request, as the JSON object `mailroom feed read` prints.
//!
//! Exactly-once per position, at-least-once over HTTP: a crash between the application's 2xx and
//! the ack delivers the same rows again, with the same `Idempotency-Key`; every event also
//! carries its `sg_event_id` (and every email its `id`) to dedupe on.
//!
//! One process delivers for a forwarder at a time (a session advisory lock); the others stand by
//! and take over within seconds when it goes away. Reads do not hold a transaction open while
//! delivering, so a slow application never holds the feed's horizon back for other consumers.
//! Failures and retries are `deliver.rs`'s; pacing is `bucket.rs`'s; signatures `sign.rs`'s.

mod bucket;
pub mod config;
mod deliver;
pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::handler::DeadLetter;
use crate::store::feed::{self, FeedRow, Stream};
use crate::store::{keep_dead_letters, Store, StoreError};

pub use bucket::TokenBucket;
pub use config::ForwardConfig;
pub use deliver::{Delivered, Delivery};

/// How long a standby waits before trying for the lock again, and the pause after a database
/// error.
const STANDBY_RETRY: Duration = Duration::from_secs(2);

/// Start every configured forwarder; each runs until `stop`.
pub fn spawn_all(
    store: &Store,
    configs: &[ForwardConfig],
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    configs
        .iter()
        .map(|c| {
            let store = store.clone();
            let config = c.clone();
            let stop = stop.clone();
            tokio::spawn(async move { run(store, config, stop).await })
        })
        .collect()
}

/// Register the forwarders' series at 0 (see `telemetry::register_zeroes`).
pub fn register_zeroes(configs: &[ForwardConfig]) {
    for c in configs {
        for outcome in ["delivered", "retried", "slowed", "dead_lettered"] {
            metrics::counter!("mailroom_forward_deliveries_total", "forwarder" => c.name.clone(),
                "outcome" => outcome)
            .absolute(0);
        }
        metrics::counter!("mailroom_forward_rows_total", "forwarder" => c.name.clone()).absolute(0);
        metrics::gauge!("mailroom_forward_lag_seconds", "forwarder" => c.name.clone()).set(0.0);
    }
}

/// One forwarder, until `stop`: subscribe, take the lead, deliver page after page.
pub async fn run(store: Store, config: ForwardConfig, stop: CancellationToken) {
    let secrets = config.secrets(|k| std::env::var(k).ok());
    let client = match reqwest::Client::builder()
        .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(forwarder = %config.name, error = %e, "cannot build an HTTP client: forwarder not started");
            return;
        }
    };
    let shared = Arc::new(deliver::Shared {
        bucket: TokenBucket::new(config.rate_per_second, config.burst),
        config,
        secrets,
        client,
    });
    let name = shared.config.name.clone();
    while !stop.is_cancelled() {
        match lead_and_deliver(&store, &shared, &stop).await {
            Ok(()) => {}
            Err(e) => {
                crate::telemetry::count_postgres_error("forward");
                tracing::warn!(forwarder = %name, error = %crate::error_text::chain_text(&e),
                    "forwarder paused by a database error; trying again");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }
}

/// Take the lock (or return to stand by), then deliver until `stop` or a database error.
async fn lead_and_deliver(
    store: &Store,
    shared: &deliver::Shared,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let config = &shared.config;
    let mut lock = store
        .pool()
        .acquire()
        .await
        .map_err(StoreError::query("connecting for the forwarder lock"))?;
    if !feed::try_lead(&mut lock, &config.name).await? {
        tracing::debug!(forwarder = %config.name, "another process delivers for this forwarder; standing by");
        return Ok(());
    }
    // The leader makes sure its consumer exists, once per lead; standbys touch nothing.
    let result =
        match feed::subscribe(store.pool(), &config.name, config.stream(), config.start()).await {
            Ok(()) => {
                tracing::info!(forwarder = %config.name, url = %config.url, "forwarder delivering");
                deliver_pages(store, shared, &mut lock, stop).await
            }
            Err(e) => Err(e),
        };
    // The lock goes with the connection; do not return it to the pool still held.
    let _ = sqlx::Connection::close(lock.detach()).await;
    result
}

async fn deliver_pages(
    store: &Store,
    shared: &deliver::Shared,
    lock: &mut sqlx::PgConnection,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    let config = &shared.config;
    let stream = config.stream();
    let per_delivery = match stream {
        Stream::Events => config.batch_size as usize,
        Stream::InboundEmails => 1,
    };
    let page_rows = per_delivery * deliveries_per_page(config, per_delivery);
    while !stop.is_cancelled() {
        feed::still_leading(lock).await?;
        let rows = {
            let mut conn = store
                .pool()
                .acquire()
                .await
                .map_err(StoreError::query("connecting to read the feed"))?;
            feed::read(
                &mut conn,
                &config.name,
                stream,
                page_rows as i64,
                config.include_attachments,
            )
            .await?
        };
        let Some(oldest) = rows.first() else {
            metrics::gauge!("mailroom_forward_lag_seconds", "forwarder" => config.name.clone())
                .set(0.0);
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(config.poll_interval()) => {}
            }
            continue;
        };
        let lag = (chrono::Utc::now() - oldest.stored_at)
            .num_milliseconds()
            .max(0) as f64
            / 1e3;
        metrics::gauge!("mailroom_forward_lag_seconds", "forwarder" => config.name.clone())
            .set(lag);

        let chunks: Vec<&[FeedRow]> = rows.chunks(per_delivery).collect();
        let deliveries: Vec<Delivery> = chunks
            .iter()
            .map(|chunk| delivery(&config.name, stream, chunk))
            .collect();
        // Boxed first: a `map` closure over borrowed deliveries trips the compiler's
        // higher-ranked lifetime check inside `tokio::spawn`.
        let attempts: Vec<crate::handler::BoxFuture<'_, Delivered>> = deliveries
            .iter()
            .map(|d| Box::pin(deliver::deliver(shared, d, stop)) as _)
            .collect();
        let outcomes: Vec<Delivered> = futures::stream::iter(attempts)
            .buffered(config.concurrency as usize)
            .collect()
            .await;

        // Acknowledge the deliveries that ended, up to the first that did not (shutdown): what
        // follows it is delivered again after the restart.
        let mut done = 0;
        let mut letters = Vec::new();
        for (outcome, d) in outcomes.iter().zip(&deliveries) {
            match outcome {
                Delivered::Ok { .. } => {}
                Delivered::DeadLetter { attempts, reason } => letters.push(DeadLetter {
                    queue: format!("forward:{}", config.name),
                    message_id: d.key.clone(),
                    body: String::from_utf8_lossy(&d.body).into_owned(),
                    attributes: [("mailroom.forward.url".to_string(), config.url.clone())]
                        .into_iter()
                        .collect(),
                    receive_count: *attempts,
                    handler: Some("forward".into()),
                    reason: reason.clone(),
                }),
                Delivered::Stopped => break,
            }
            done += 1;
        }
        if done == 0 {
            return Ok(());
        }
        let last = chunks[done - 1].last().expect("chunks are not empty");
        let rows_done: usize = chunks[..done].iter().map(|c| c.len()).sum();
        let mut tx = store.begin().await?;
        keep_dead_letters(&mut *tx, &letters).await?;
        feed::ack(&mut tx, &config.name, last.position, rows_done as i64).await?;
        tx.commit()
            .await
            .map_err(StoreError::query("committing a forwarder acknowledgement"))?;
        metrics::counter!("mailroom_forward_rows_total", "forwarder" => config.name.clone())
            .increment(rows_done as u64);
        if done < deliveries.len() {
            return Ok(());
        }
    }
    Ok(())
}

/// Most rows one page holds.
const MAX_PAGE_ROWS: usize = 5_000;

/// Deliveries per page: at least `concurrency`, and about two seconds of them at the configured
/// rate, so the read and the ack between pages (a few milliseconds, more on a loaded machine)
/// are a small part of each page's time. With one page per `concurrency` deliveries, that gap
/// came every few requests and, the bucket holding only `burst` tokens, the pace fell to 60% of
/// the rate on a busy 2-core machine.
fn deliveries_per_page(config: &ForwardConfig, per_delivery: usize) -> usize {
    let concurrency = config.concurrency as usize;
    let two_seconds = (config.rate_per_second * 2.0).ceil().min(1e6) as usize;
    let by_rows = (MAX_PAGE_ROWS / per_delivery.max(1)).max(1);
    two_seconds.clamp(concurrency, concurrency.max(by_rows))
}

/// The request body for `rows`: events as a JSON array of SendGrid's objects, an email as its
/// object.
fn delivery(name: &str, stream: Stream, rows: &[FeedRow]) -> Delivery {
    let first = rows.first().map(|r| r.position).unwrap_or_default();
    let last = rows.last().map(|r| r.position).unwrap_or_default();
    let body = match stream {
        Stream::Events => {
            let mut body =
                String::with_capacity(2 + rows.iter().map(|r| r.json.len() + 1).sum::<usize>());
            body.push('[');
            for (i, r) in rows.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&r.json);
            }
            body.push(']');
            body
        }
        Stream::InboundEmails => rows.first().map(|r| r.json.clone()).unwrap_or_default(),
    };
    Delivery {
        key: format!("{name}:{first}-{last}"),
        body: Bytes::from(body),
        rows: rows.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: f64, concurrency: u32, batch: u32) -> ForwardConfig {
        toml::from_str(&format!(
            "name = \"t\"\nurl = \"http://x/\"\nrate_per_second = {rate}\nconcurrency = {concurrency}\n\
             batch_size = {batch}\nsigning_secrets = [\"k\"]"
        ))
        .expect("config")
    }

    /// Regression: a page of only `concurrency` deliveries left a read-and-ack gap every few
    /// requests, and the pace fell well below the configured rate.
    #[test]
    fn pages_of_only_concurrency_deliveries_starved_the_pace() {
        assert_eq!(deliveries_per_page(&config(20.0, 4, 1), 1), 40);
        assert_eq!(
            deliveries_per_page(&config(1.0, 4, 1), 1),
            4,
            "at least concurrency"
        );
        assert_eq!(
            deliveries_per_page(&config(1e9, 4, 1), 1),
            MAX_PAGE_ROWS,
            "at most MAX_PAGE_ROWS rows"
        );
        assert_eq!(
            deliveries_per_page(&config(50.0, 8, 500), 500),
            10,
            "500-event batches: 5,000 rows"
        );
        assert_eq!(
            deliveries_per_page(&config(50.0, 16, 1000), 1000),
            16,
            "never below concurrency, even past the row cap"
        );
    }
}
