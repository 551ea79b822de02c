//! Paced delivery to the application: each `[[forward]]` is a feed consumer that POSTs what was
//! stored to the application's URL at the rate the application can take, signed, with an
//! idempotency key, and acknowledges the feed only after the application answered 2xx (or the
//! delivery became a dead letter). What the application gets:
//!
//! - events in batches, as a JSON array of SendGrid's own event objects: the body SendGrid would
//!   have posted, so an existing webhook controller works unchanged;
//! - inbound emails one per request, as the JSON object `mailroom feed read` prints.
//!
//! Exactly-once per position, at-least-once over HTTP: every delivery is recorded in Postgres
//! before its first attempt (`mailroom_forward_deliveries`), so the rows it carries and its
//! `Idempotency-Key` never change; its end (2xx, or a dead letter) is recorded as it comes, and
//! the feed position moves over the contiguous run of ended deliveries at the front. A crash
//! therefore sends again only what was in flight, with the same rows and the same key, and a
//! delivery the application accepted is never sent again nor dead-lettered (`window.rs`). Every
//! event also carries its `sg_event_id` (and every email its `id`) to dedupe on.
//!
//! One process delivers for a forwarder at a time (`lead.rs`: a session advisory lock, checked
//! every 250 ms; losing it stops every delivery at once); the others stand by and take over
//! within seconds when it goes away. Reads do not hold a transaction open while delivering, so
//! a slow application never holds the feed's horizon back for other consumers. Failures and
//! retries are `deliver.rs`'s; pacing is `bucket.rs`'s; signatures `sign.rs`'s.

mod bucket;
pub mod config;
mod deliver;
mod lead;
pub mod sign;
mod window;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::handler::DeadLetter;
use crate::store::feed::{self, FeedRow, Position, Stream};
use crate::store::forward_plan::{self, PlanState, PlannedDelivery};
use crate::store::{keep_dead_letters, Store, StoreError};
use window::{Slot, SlotState, Window};

pub use bucket::TokenBucket;
pub use config::ForwardConfig;
pub use deliver::{Delivered, Delivery};

/// Why a forwarder stopped delivering for a while (it stands by and tries again).
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consumer was removed while the forwarder was leading.
    #[error("the feed consumer {0:?} is gone (removed while delivering?)")]
    NoConsumer(String),
    /// The task that records ends did not finish (it panicked).
    #[error("recording the forwarder's ended deliveries failed: {0}")]
    Settlement(#[from] tokio::task::JoinError),
}

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
        metrics::counter!("mailroom_forward_leads_lost_total", "forwarder" => c.name.clone())
            .absolute(0);
        metrics::gauge!("mailroom_forward_lag_seconds", "forwarder" => c.name.clone()).set(0.0);
    }
}

/// One forwarder, until `stop`: take the lead (or stand by), deliver, and stand by again when
/// the lead is lost or the database fails.
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
                if matches!(e, ForwardError::Store(_)) {
                    crate::telemetry::count_postgres_error("forward");
                }
                tracing::warn!(forwarder = %name, error = %crate::error_text::chain_text(&e),
                    "forwarder paused by an error; trying again");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }
}

/// Take the lock (or return to stand by), then deliver until `stop`, a lost lead or a database
/// error.
async fn lead_and_deliver(
    store: &Store,
    shared: &Arc<deliver::Shared>,
    stop: &CancellationToken,
) -> Result<(), ForwardError> {
    let config = &shared.config;
    let Some(lead) = lead::take(store, &config.name, stop).await? else {
        tracing::debug!(forwarder = %config.name, "another process delivers for this forwarder; standing by");
        return Ok(());
    };
    // A previous leader whose session just ended may not have noticed yet: give it the time
    // it takes to stop before the first delivery.
    tokio::select! {
        _ = lead.token.cancelled() => {}
        _ = tokio::time::sleep(lead::TAKEOVER_GRACE) => {}
    }
    let result = if lead.token.is_cancelled() {
        Ok(())
    } else {
        // The leader makes sure its consumer exists, once per lead; standbys touch nothing.
        match feed::subscribe(store.pool(), &config.name, config.stream(), config.start()).await {
            Ok(()) => {
                tracing::info!(forwarder = %config.name, url = %config.url, "forwarder delivering");
                deliver_window(store, shared, &lead.token).await
            }
            Err(e) => Err(e.into()),
        }
    };
    lead.end().await;
    result
}

/// Deliver while `lead` holds: keep up to `concurrency` deliveries in flight, each recorded
/// before it is sent; the ends are recorded, and the position moved over the ended front, by
/// one transaction at a time running beside the deliveries (so a commit's latency never holds
/// a send back, and a busy forwarder records many ends per commit).
async fn deliver_window(
    store: &Store,
    shared: &Arc<deliver::Shared>,
    lead: &CancellationToken,
) -> Result<(), ForwardError> {
    let config = &shared.config;
    let per_delivery = rows_per_delivery(config);
    let page_rows = per_delivery * deliveries_per_page(config, per_delivery);
    let concurrency = config.concurrency as usize;
    let most_held = MAX_WINDOW_DELIVERIES.max(2 * page_rows.div_ceil(per_delivery));
    let mut window = Window::default();
    let mut after = resume(store, shared, &mut window).await?;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    // A task of its own, not a future polled by this loop: the loop awaits feed reads, which
    // wait for the consumer row that an uncommitted settlement holds.
    let mut settling: Option<tokio::task::JoinHandle<SettleResult>> = None;
    let mut next_read = tokio::time::Instant::now();
    loop {
        if lead.is_cancelled() {
            break;
        }
        if settling.is_none() {
            let s = window.take_settlement();
            if !s.is_empty() {
                settling = Some(tokio::spawn(settle(store.clone(), config.clone(), s)));
            }
        }
        if window.waiting() < concurrency
            && window.len() < most_held
            && tokio::time::Instant::now() >= next_read
        {
            let read = read_and_record(store, shared, &mut window, after, page_rows).await?;
            match read {
                Some(last) => after = last,
                None => next_read = tokio::time::Instant::now() + config.poll_interval(),
            }
        }
        while in_flight.len() < concurrency {
            let Some((seq, d)) = window.start_next() else {
                break;
            };
            let (shared, lead) = (shared.clone(), lead.clone());
            in_flight.push(async move { (seq, deliver::deliver(&shared, &d, &lead).await) });
        }
        let lag = window.oldest_pending_stored_at().map_or(0.0, |at| {
            (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1e3
        });
        metrics::gauge!("mailroom_forward_lag_seconds", "forwarder" => config.name.clone())
            .set(lag);
        tokio::select! {
            _ = lead.cancelled() => break,
            Some((seq, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                window.end(seq, outcome);
                while let Some(Some((seq, outcome))) = in_flight.next().now_or_never() {
                    window.end(seq, outcome);
                }
            }
            joined = async { settling.as_mut().expect("guarded").await }, if settling.is_some() => {
                settling = None;
                let (settlement, result) = joined?;
                match result {
                    Ok(()) => window.settled(settlement),
                    Err(e) => {
                        window.unsettled(settlement);
                        return Err(e.into());
                    }
                }
            }
            _ = tokio::time::sleep_until(next_read),
                if in_flight.is_empty() && settling.is_none() => {}
        }
    }
    // Stopping: what already ended is recorded before the lock goes (bounded), so the next
    // leader sends less again. Deliveries still in flight stay planned.
    drop(in_flight);
    let finish = async {
        if let Some(pending) = settling.take() {
            match pending.await {
                Ok((s, Ok(()))) => window.settled(s),
                _ => return,
            }
        }
        let s = window.take_settlement();
        if !s.is_empty() {
            let _ = settle(store.clone(), config.clone(), s).await;
        }
    };
    let _ = tokio::time::timeout(SETTLE_ON_STOP, finish).await;
    Ok(())
}

/// How long a stopping forwarder may take to record what ended.
const SETTLE_ON_STOP: Duration = Duration::from_secs(5);

type SettleResult = (window::Settlement, Result<(), StoreError>);

/// Read the rows after `after`, cut them into deliveries, record those and add them to the
/// window; the last row's position, or None when there was nothing to read.
async fn read_and_record(
    store: &Store,
    shared: &deliver::Shared,
    window: &mut Window,
    after: Position,
    page_rows: usize,
) -> Result<Option<Position>, StoreError> {
    let config = &shared.config;
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(StoreError::query("connecting to read the feed"))?;
    let rows = feed::read_after(
        &mut conn,
        &config.name,
        config.stream(),
        page_rows as i64,
        after,
        config.include_attachments,
    )
    .await?;
    let Some(last) = rows.last().map(|r| r.position) else {
        return Ok(None);
    };
    let slots: Vec<Slot> = rows
        .chunks(rows_per_delivery(config))
        .map(|chunk| slot(&config.name, config.stream(), chunk))
        .collect();
    let plan: Vec<PlannedDelivery> = slots.iter().map(planned).collect();
    forward_plan::record(&mut conn, &config.name, &plan).await?;
    for s in slots {
        window.push(s);
    }
    Ok(Some(last))
}

/// Take up what the previous leader recorded: deliveries that ended are not sent again, the
/// others are, with the same rows and key. The position to read new rows after.
async fn resume(
    store: &Store,
    shared: &deliver::Shared,
    window: &mut Window,
) -> Result<Position, ForwardError> {
    let config = &shared.config;
    let mut conn = store
        .pool()
        .acquire()
        .await
        .map_err(StoreError::query("connecting to resume the forwarder"))?;
    let position = feed::position(&mut conn, &config.name)
        .await?
        .ok_or_else(|| ForwardError::NoConsumer(config.name.clone()))?;
    let mut after = position;
    let recorded = forward_plan::load(&mut conn, &config.name, position).await?;
    // The recorded deliveries are contiguous from the position: one read brings all their rows.
    let total: i64 = recorded.iter().map(|p| i64::from(p.rows)).sum();
    let rows = if recorded.is_empty() {
        Vec::new()
    } else {
        feed::read_after(
            &mut conn,
            &config.name,
            config.stream(),
            total,
            position,
            config.include_attachments,
        )
        .await?
    };
    let mut rest = rows.as_slice();
    let mut resent = 0usize;
    for p in &recorded {
        let n = (p.rows as usize).min(rest.len());
        let (mine, later) = rest.split_at(n);
        rest = later;
        let same = mine.len() == p.rows as usize
            && mine.first().map(|r| r.position) == Some(p.first)
            && mine.last().map(|r| r.position) == Some(p.last);
        if !same {
            // Retention dropped some of its rows (a consumer far behind): what is left is cut
            // afresh after the last delivery that could be taken up.
            tracing::warn!(forwarder = %config.name, first = %p.first, last = %p.last,
                "a recorded delivery's rows are no longer all stored; its rows and the ones after it are cut again");
            forward_plan::forget_after(&mut conn, &config.name, after).await?;
            break;
        }
        if p.state == PlanState::Planned {
            window.push(slot(&config.name, config.stream(), mine));
            resent += 1;
        } else {
            window.push_ended(p.first, p.last, p.rows as usize, p.state);
        }
        after = p.last;
    }
    if !recorded.is_empty() {
        tracing::info!(forwarder = %config.name, recorded = recorded.len(), resent,
            "took up the deliveries recorded by the previous leader");
    }
    Ok(after)
}

/// Record a settlement's ends (dead letters with theirs) and move the position over its
/// ended front, in one transaction; hands the settlement back with how it went.
async fn settle(store: Store, config: ForwardConfig, s: window::Settlement) -> SettleResult {
    let result = settle_tx(&store, &config, &s).await;
    if result.is_ok() {
        if let Some((_, rows)) = s.ack {
            metrics::counter!("mailroom_forward_rows_total", "forwarder" => config.name.clone())
                .increment(rows as u64);
        }
    }
    (s, result)
}

async fn settle_tx(
    store: &Store,
    config: &ForwardConfig,
    s: &window::Settlement,
) -> Result<(), StoreError> {
    let mut delivered = Vec::new();
    let mut letters = Vec::new();
    let mut lettered = Vec::new();
    for end in &s.ends {
        match &end.state {
            SlotState::DeadLettered { attempts, reason } => {
                letters.push(dead_letter(config, end, *attempts, reason));
                lettered.push(end.last);
            }
            _ => delivered.push(end.last),
        }
    }
    let mut tx = store.begin().await?;
    if !letters.is_empty() {
        keep_dead_letters(&mut *tx, &letters).await?;
        forward_plan::mark_ended(&mut tx, &config.name, &lettered, PlanState::DeadLettered).await?;
    }
    forward_plan::mark_ended(&mut tx, &config.name, &delivered, PlanState::Delivered).await?;
    if let Some((last, rows)) = s.ack {
        feed::ack(&mut tx, &config.name, last, rows as i64).await?;
        forward_plan::forget_upto(&mut tx, &config.name, last).await?;
    }
    tx.commit()
        .await
        .map_err(StoreError::query("committing a forwarder acknowledgement"))
}

fn dead_letter(
    config: &ForwardConfig,
    end: &window::End,
    attempts: u32,
    reason: &str,
) -> DeadLetter {
    DeadLetter {
        queue: format!("forward:{}", config.name),
        message_id: end.key.clone(),
        body: String::from_utf8_lossy(&end.body).into_owned(),
        attributes: [("mailroom.forward.url".to_string(), config.url.clone())]
            .into_iter()
            .collect(),
        receive_count: attempts,
        handler: Some("forward".into()),
        reason: reason.to_string(),
    }
}

fn rows_per_delivery(config: &ForwardConfig) -> usize {
    match config.stream() {
        Stream::Events => config.batch_size as usize,
        Stream::InboundEmails => 1,
    }
}

/// The most deliveries a window holds (at least two pages): while the oldest one retries, later
/// ones go on ending, and their positions wait here until it ends.
const MAX_WINDOW_DELIVERIES: usize = 10_000;

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

/// The delivery of `rows`: events as a JSON array of SendGrid's objects, an email as its
/// object; its key names the first and last row, which its record keeps fixed.
fn slot(name: &str, stream: Stream, rows: &[FeedRow]) -> Slot {
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
    Slot {
        first,
        last,
        delivery: Delivery {
            key: format!("{name}:{first}-{last}"),
            body: Bytes::from(body),
            rows: rows.len(),
        },
        oldest_stored_at: rows.iter().map(|r| r.stored_at).min(),
        state: SlotState::Waiting,
    }
}

fn planned(slot: &Slot) -> PlannedDelivery {
    PlannedDelivery {
        first: slot.first,
        last: slot.last,
        rows: slot.delivery.rows as i32,
        state: PlanState::Planned,
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
