//! `[[forward]]`: one section per forwarder (a feed consumer that POSTs to the application).
//! Every key is in `config/mailroom.example.toml`; the secrets can come from the environment so
//! the file can be committed.

use std::time::Duration;

use serde::Deserialize;

use crate::store::feed::{Start, Stream};

/// One forwarder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Names the forwarder, its feed consumer (`mailroom_feed_consumers.name`) and its metrics.
    pub name: String,
    /// The application's endpoint, `http://` or `https://`.
    pub url: String,
    /// `events` (batches of stored events) or `inbound_emails` (one email per request).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Where a new consumer starts: `beginning` (every stored row) or `now`.
    #[serde(default = "default_start")]
    pub start_at: String,
    /// Deliveries (HTTP requests) per second, at most: a token bucket.
    pub rate_per_second: f64,
    /// Requests the bucket lets through at once after an idle spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Events per request (inbound emails always go one per request).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// One request's timeout.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Failed attempts (not 2xx, not a slow-down) before a delivery becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles up to `backoff_max_secs`, with full jitter.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
    /// How often to look for new rows when the feed is idle.
    #[serde(default = "default_poll")]
    pub poll_interval_ms: u64,
    /// HMAC-SHA256 keys, newest first: every delivery carries one signature per key, so the
    /// application can rotate (add the new key on both sides, then drop the old one).
    #[serde(default)]
    pub signing_secrets: Vec<String>,
    /// An environment variable holding the keys instead (comma-separated, newest first).
    #[serde(default)]
    pub signing_secrets_env: Option<String>,
    /// Inbound emails: include attachment bytes (base64) in the delivery.
    #[serde(default = "default_true")]
    pub include_attachments: bool,
}

fn default_stream() -> String {
    "events".into()
}
fn default_start() -> String {
    "beginning".into()
}
fn default_burst() -> u32 {
    1
}
fn default_concurrency() -> u32 {
    4
}
fn default_batch_size() -> u32 {
    100
}
fn default_timeout() -> u64 {
    10
}
fn default_max_attempts() -> u32 {
    10
}
fn default_backoff_initial() -> u64 {
    1_000
}
fn default_backoff_max() -> u64 {
    300
}
fn default_poll() -> u64 {
    500
}
fn default_true() -> bool {
    true
}

/// Most events in one delivery.
pub const MAX_BATCH_SIZE: u32 = 1_000;

impl ForwardConfig {
    pub fn stream(&self) -> Stream {
        self.stream.parse().unwrap_or(Stream::Events)
    }

    pub fn start(&self) -> Start {
        if self.start_at == "now" {
            Start::Now
        } else {
            Start::Beginning
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The signing keys: `signing_secrets`, else the variable `signing_secrets_env` names.
    pub fn secrets(&self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        if !self.signing_secrets.is_empty() {
            return self.signing_secrets.clone();
        }
        self.signing_secrets_env
            .as_deref()
            .and_then(var)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every problem with this section, each naming the forwarder and key.
    pub fn problems(&self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let at = format!("forward \"{}\"", self.name);
        let mut problems = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !name_ok {
            problems.push(format!(
                "{at}: name must be 1-63 letters, digits, '_', '.', '-' (starting with a letter or digit)"
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("{at}: url must start with http:// or https://"));
        } else if reqwest::Url::parse(&self.url).is_err() {
            problems.push(format!("{at}: url {:?} is not a valid URL", self.url));
        }
        if self.stream.parse::<Stream>().is_err() {
            problems.push(format!("{at}: stream must be events or inbound_emails"));
        }
        if !matches!(self.start_at.as_str(), "beginning" | "now") {
            problems.push(format!("{at}: start_at must be beginning or now"));
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            problems.push(format!("{at}: rate_per_second must be above 0"));
        }
        if self.burst == 0 {
            problems.push(format!("{at}: burst must be at least 1"));
        }
        if self.concurrency == 0 {
            problems.push(format!("{at}: concurrency must be at least 1"));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            problems.push(format!("{at}: batch_size must be 1-{MAX_BATCH_SIZE}"));
        }
        if self.timeout_secs == 0 {
            problems.push(format!("{at}: timeout_secs must be at least 1"));
        }
        if self.max_attempts == 0 {
            problems.push(format!("{at}: max_attempts must be at least 1"));
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_secs == 0 {
            problems.push(format!(
                "{at}: backoff_initial_ms and backoff_max_secs must be at least 1"
            ));
        }
        if self.poll_interval_ms == 0 {
            problems.push(format!("{at}: poll_interval_ms must be at least 1"));
        }
        if self.secrets(var).is_empty() {
            problems.push(match &self.signing_secrets_env {
                Some(env) => format!(
                    "{at}: signing_secrets_env names {env}, which is not set or empty: deliveries must be signed"
                ),
                None => format!(
                    "{at}: set signing_secrets or signing_secrets_env: deliveries must be signed"
                ),
            });
        }
        problems
    }
}
