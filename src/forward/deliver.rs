//! One delivery (a batch of events, or one email) to the application, with its retries.
//!
//! What an answer means: 2xx delivered; 429 or 503 "slow down" (the pace halves, every sender
//! waits the `Retry-After`, and the attempt does not count against `max_attempts`: an
//! application that sheds load is not rejecting the data); anything else (another status, a
//! timeout, a refused connection) a failed attempt, retried after a backoff that doubles up to
//! `backoff_max_secs` with full jitter, until `max_attempts` failures make it a dead letter.

use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::bucket::TokenBucket;
use super::config::ForwardConfig;
use super::sign::{signature, SIGNATURE_HEADER};

/// A request body and what identifies it.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// `Idempotency-Key`: the forwarder and the positions of the first and last row, so a
    /// redelivery of the same rows (after a crash before the ack) carries the same key.
    pub key: String,
    pub body: Bytes,
    pub rows: usize,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Ok {
        attempts: u32,
    },
    /// Gave up after `max_attempts` failures; the reason names the last one.
    DeadLetter {
        attempts: u32,
        reason: String,
    },
    /// Shutdown came first: not delivered as far as we know (it will be again after restart).
    Stopped,
}

enum Attempt {
    Delivered,
    SlowDown(Option<Duration>, String),
    Failed(String),
}

/// What every delivery of one forwarder shares.
pub struct Shared {
    pub config: ForwardConfig,
    pub secrets: Vec<String>,
    pub client: reqwest::Client,
    pub bucket: TokenBucket,
}

/// Deliver `d`, retrying as the module docs say, until it is delivered, dead, or `stop`.
pub async fn deliver(shared: &Shared, d: &Delivery, stop: &CancellationToken) -> Delivered {
    let name = shared.config.name.clone();
    let mut failures = 0u32;
    let mut attempts = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Delivered::Stopped,
            _ = shared.bucket.acquire() => {}
        }
        attempts += 1;
        let outcome = tokio::select! {
            _ = stop.cancelled() => return Delivered::Stopped,
            outcome = attempt(shared, d, attempts) => outcome,
        };
        let wait = match outcome {
            Attempt::Delivered => {
                shared.bucket.delivered().await;
                metrics::counter!("mailroom_forward_deliveries_total", "forwarder" => name.clone(),
                    "outcome" => "delivered")
                .increment(1);
                return Delivered::Ok { attempts };
            }
            Attempt::SlowDown(retry_after, why) => {
                shared.bucket.slow_down(retry_after).await;
                metrics::counter!("mailroom_forward_deliveries_total", "forwarder" => name.clone(),
                    "outcome" => "slowed")
                .increment(1);
                tracing::info!(forwarder = %name, key = %d.key, %why, "application asked to slow down");
                retry_after
                    .unwrap_or_else(|| backoff(&shared.config, 1))
                    .min(Duration::from_secs(shared.config.backoff_max_secs))
            }
            Attempt::Failed(why) => {
                failures += 1;
                if failures >= shared.config.max_attempts {
                    metrics::counter!("mailroom_forward_deliveries_total",
                        "forwarder" => name.clone(), "outcome" => "dead_lettered")
                    .increment(1);
                    tracing::warn!(forwarder = %name, key = %d.key, attempts, %why,
                        "delivery failed {failures} times: kept as a dead letter");
                    return Delivered::DeadLetter {
                        attempts,
                        reason: format!("forward {name}: {failures} failed attempts, last: {why}"),
                    };
                }
                metrics::counter!("mailroom_forward_deliveries_total", "forwarder" => name.clone(),
                    "outcome" => "retried")
                .increment(1);
                tracing::info!(forwarder = %name, key = %d.key, attempts, %why, "delivery failed; will retry");
                backoff(&shared.config, failures)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Delivered::Stopped,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn attempt(shared: &Shared, d: &Delivery, attempt: u32) -> Attempt {
    let timestamp = chrono::Utc::now().timestamp();
    let request = shared
        .client
        .post(&shared.config.url)
        .timeout(shared.config.timeout())
        .header("content-type", "application/json")
        .header("idempotency-key", &d.key)
        .header(
            SIGNATURE_HEADER,
            signature(&shared.secrets, timestamp, &d.body),
        )
        .header("mailroom-forwarder", &shared.config.name)
        .header("mailroom-delivery-attempt", attempt.to_string())
        .header("mailroom-rows", d.rows.to_string())
        .body(d.body.clone());
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Attempt::Failed(format!("no answer within {} s", shared.config.timeout_secs))
        }
        Err(e) => {
            return Attempt::Failed(format!(
                "request failed: {}",
                crate::error_text::chain_text(&e)
            ))
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // The body may explain the failure; a little of it goes into the reason.
    let text = response.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    let why = if snippet.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", snippet.trim())
    };
    if status.as_u16() == 429 || status.as_u16() == 503 {
        Attempt::SlowDown(retry_after, why)
    } else {
        Attempt::Failed(why)
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(secs.max(0) as u64))
}

/// Full jitter: uniform in [0, min(max, initial * 2^(n-1))].
fn backoff(config: &ForwardConfig, failures: u32) -> Duration {
    let cap = Duration::from_secs(config.backoff_max_secs);
    let exp = Duration::from_millis(config.backoff_initial_ms)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(cap);
    let ms = rand::rng().random_range(0..=exp.as_millis() as u64);
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon.replace("+0000", "GMT")).expect("an HTTP-date");
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
