//! The worker's configuration: one TOML file, every key documented in
//! `config/mailroom.example.toml`, unknown keys rejected (a typo must not silently fall back to a
//! default), units in key names. Secrets and URLs can come from the environment instead, so the
//! file can be committed to a deploy repo.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Longest long poll SQS allows.
pub const MAX_WAIT_TIME_SECS: u32 = 20;
/// Most messages one ReceiveMessage returns.
pub const MAX_BATCH_SIZE: u32 = 10;
/// Longest visibility timeout SQS allows (12 hours).
pub const MAX_VISIBILITY_TIMEOUT_SECS: u32 = 43_200;

/// Default `[worker] total_concurrency`: the most messages in flight. With the adaptive limit
/// (`engine/limit.rs`) this is a ceiling the process reaches only while SQS latency needs it:
/// at 20 ms each way a message is held ~80 ms, and ~11k one-event messages/s (what one worker
/// process stores on 2 cores) need ~900 in flight.
pub const DEFAULT_TOTAL_CONCURRENCY: u32 = 1000;
/// Default `[worker] min_concurrency`: where the adaptive limit starts, and its floor.
/// 200 was the fixed default before the limit adapted: on a load Postgres bounds, a lower
/// floor only made batches smaller (measured: mixed load ~10% slower with the floor at 100).
pub const DEFAULT_MIN_CONCURRENCY: u32 = 200;
/// Default `batch_window_ms`: one Postgres transaction per 20 ms of receives instead of one
/// per receive (on the bench, 1.4-1.8x less worker CPU per message than no window).
pub const DEFAULT_BATCH_WINDOW_MS: u64 = 20;
/// Default `max_batch_messages`.
pub const DEFAULT_MAX_BATCH_MESSAGES: u32 = 100;
/// Default `max_partial_batches`: while one batch smaller than `max_batch_messages` runs, the
/// next one keeps gathering (as Nagle's algorithm holds a small segment while one is
/// unacknowledged), so under load transactions are full and few, and an idle queue still
/// starts each batch at once (BENCHMARKS.md, "partial batches").
pub const DEFAULT_MAX_PARTIAL_BATCHES: u32 = 1;
/// Default `max_partial_wait_ms`: a partial batch waits at most this long past its window for
/// a running partial batch to end. Under load a transaction ends well within it (20-70 ms on
/// the bench); a handler stuck on a lock or a slow call holds the queue's next messages back
/// no longer than this.
pub const DEFAULT_MAX_PARTIAL_WAIT_MS: u64 = 250;

/// Default `[worker] max_body_bytes_in_flight`: one body of the 64 MiB envelope limit at a time.
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: u64 = 64 * 1024 * 1024;

/// Environment variables that override the file.
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_SQS_ENDPOINT_URL: &str = "MAILROOM_SQS_ENDPOINT_URL";
/// Overrides `[telemetry] listen`, so N instances sharing one config file each get their own
/// port. Empty turns the listener off.
pub const ENV_TELEMETRY_LISTEN: &str = "MAILROOM_TELEMETRY_LISTEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub worker: WorkerConfig,
    #[serde(default)]
    pub sqs: SqsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub s3: S3Config,
    /// `[retention]`: how long events and inbound emails are kept, and the maintenance that
    /// creates and drops event partitions (`crate::store::partitions`, docs/retention.md).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Deprecated: `[handlers.sendgrid]`. Still read, with a warning; see [`Config::parse`].
    #[serde(default, rename = "sendgrid")]
    legacy_sendgrid: Option<LegacySendgridConfig>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Each handler's own section, `[handlers.NAME]`, kept as TOML here and deserialized by the
    /// handler registered under NAME when the worker is assembled (`crate::Worker`), so a
    /// handler's settings are typed by the handler and checked at start, never per message.
    #[serde(default)]
    pub handlers: toml::Table,
    #[serde(rename = "queue", default)]
    pub queues: Vec<QueueConfig>,
    /// `[[forward]]`: paced, signed HTTP delivery of the feed to the application
    /// (`crate::forward`).
    #[serde(rename = "forward", default)]
    pub forwards: Vec<crate::forward::ForwardConfig>,
    /// Deprecated keys that were read, each with what replaces it; logged at start and printed
    /// by `mailroom check`.
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Most messages in flight across all queues in this process (the adaptive limit's
    /// ceiling).
    pub total_concurrency: u32,
    /// true: the in-flight limit moves between `min_concurrency` and `total_concurrency` by
    /// how long messages take (`engine/limit.rs`); false: fixed at `total_concurrency`.
    pub adaptive_concurrency: bool,
    /// The adaptive limit's start and floor; default [`DEFAULT_MIN_CONCURRENCY`] (or
    /// `total_concurrency` when that is lower).
    pub min_concurrency: Option<u32>,
    /// How long SIGTERM waits for running handlers before releasing their messages.
    pub shutdown_timeout_secs: u64,
    /// How queues share `total_concurrency`: "weighted" or "strict_priority".
    pub scheduling: Scheduling,
    /// Most bytes of S3-offloaded bodies fetched, decoded and being stored at once; a body that
    /// does not fit waits, one larger than all of it runs alone.
    pub max_body_bytes_in_flight: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            // What the bench measures (BENCHMARKS.md): the limit starts at 200 and rises
            // toward 1000 only while messages are waited on elsewhere (SQS latency), not while
            // this process or Postgres is the bound.
            total_concurrency: DEFAULT_TOTAL_CONCURRENCY,
            adaptive_concurrency: true,
            min_concurrency: None,
            shutdown_timeout_secs: 25,
            scheduling: Scheduling::Weighted,
            max_body_bytes_in_flight: DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduling {
    /// Each queue gets a share of the total by weight, and may use idle capacity.
    Weighted,
    /// A queue receives only while every queue of higher priority came back empty.
    StrictPriority,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqsConfig {
    /// AWS region; when absent, the standard AWS chain (AWS_REGION, profile) decides.
    pub region: Option<String>,
    /// Endpoint override (an SQS-compatible server); env MAILROOM_SQS_ENDPOINT_URL or
    /// AWS_ENDPOINT_URL also work.
    pub endpoint_url: Option<String>,
    /// Deletes and visibility changes are coalesced into batch calls: flushed at 10 entries or
    /// after this long.
    pub ack_flush_interval_ms: Option<u64>,
}

impl SqsConfig {
    pub fn ack_flush_interval(&self) -> Duration {
        Duration::from_millis(self.ack_flush_interval_ms.unwrap_or(5))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The large-body buckets the router offloads to. The worker follows SQS Extended Client
    /// pointers into these only; a pointer to any other bucket is a dead letter. Empty: any
    /// bucket (with a warning from `check`).
    pub buckets: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Postgres URL; env DATABASE_URL overrides it.
    pub database_url: Option<String>,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            max_connections: 16,
        }
    }
}

/// `[retention]`. Events live in weekly partitions by their own time: retention drops whole
/// weeks (never a DELETE), so a week goes once all of it is older than `events_days`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days of events to keep (by `occurred_at`); 0 keeps them forever.
    pub events_days: u32,
    /// Days of inbound emails (and their attachments) to keep, by `received_at`; 0 keeps them
    /// forever. Deleted in bounded batches.
    pub inbound_days: u32,
    /// Weeks of event partitions created ahead of the current one.
    pub premake_weeks: u32,
    /// How often the worker runs maintenance (also once at start); 0: never in the worker
    /// (run `mailroom maintain` from a timer instead).
    pub maintenance_interval_secs: u64,
}

/// Retention shorter than this could drop an event while a copy of it can still be redelivered
/// (SQS keeps a message up to 14 days, SendGrid retries for 24 h, Inbound Parse for 72 h), which
/// would then be stored again.
pub const MIN_RETENTION_DAYS: u32 = 30;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events_days: 0,
            inbound_days: 0,
            premake_weeks: 4,
            maintenance_interval_secs: 3600,
        }
    }
}

impl RetentionConfig {
    /// What is wrong with these settings, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, days) in [
            ("events_days", self.events_days),
            ("inbound_days", self.inbound_days),
        ] {
            if days != 0 && days < MIN_RETENTION_DAYS {
                problems.push(format!(
                    "retention.{key} must be 0 (keep forever) or at least {MIN_RETENTION_DAYS}: \
                     a shorter one could drop rows whose SQS messages can still be redelivered"
                ));
            }
        }
        if !(1..=52).contains(&self.premake_weeks) {
            problems.push("retention.premake_weeks must be 1-52".into());
        }
        problems
    }
}

/// The `[sendgrid]` section of configs written before handler sections existed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LegacySendgridConfig {
    /// Now `[handlers.sendgrid] event_webhook_public_key`.
    verification_public_key: Option<String>,
}

/// The one name of the SendGrid Event Webhook verification key, across router and worker: the
/// worker's `[handlers.sendgrid] event_webhook_public_key`, and this environment variable for
/// both (the router reads only the environment).
pub const ENV_EVENT_WEBHOOK_PUBLIC_KEY: &str = "MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY";
/// The key's handler-section name.
pub const EVENT_WEBHOOK_PUBLIC_KEY: &str = "event_webhook_public_key";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Address for /metrics, /health, /ready and the status page (/), e.g. "127.0.0.1:9090".
    /// Off when absent.
    pub listen: Option<String>,
    /// Log format: "auto" (human on a terminal, JSON otherwise), "human" or "json".
    pub log_format: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// A label used in logs and metrics, and the name of the queue when `url` is absent.
    pub name: String,
    /// Full queue URL; when absent the URL is looked up by `name` at start.
    pub url: Option<String>,
    /// Registered handler that processes this queue's messages, e.g. "sendgrid".
    pub handler: String,
    /// Most messages of this queue in flight at once (defaults to its weighted share).
    pub concurrency: Option<u32>,
    /// Share of `total_concurrency` under weighted scheduling.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Higher receives first under strict_priority scheduling.
    #[serde(default)]
    pub priority: i32,
    /// Long-poll wait, 0-20 s.
    #[serde(default = "default_wait")]
    pub wait_time_secs: u32,
    /// Messages per ReceiveMessage, 1-10.
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// Visibility timeout requested on receive.
    #[serde(default = "default_visibility")]
    pub visibility_timeout_secs: u32,
    /// Delay before attempt n+1 after a failed attempt n; after the last one the message is
    /// dead-lettered (see `dead_letter`).
    #[serde(default = "default_retry_intervals")]
    pub retry_intervals_secs: Vec<u32>,
    /// While a handler runs, its message's visibility is extended every this many seconds.
    /// 0 disables the heartbeat.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u32,
    /// Gather messages from several receives for up to this long into one handler batch.
    #[serde(default = "default_batch_window")]
    pub batch_window_ms: u64,
    /// Most messages in one handler batch.
    #[serde(default = "default_max_batch")]
    pub max_batch_messages: u32,
    /// Most batches smaller than `max_batch_messages` running at once for this queue; while
    /// that many run, the next batch keeps gathering past its window until one ends or it is
    /// full. Full batches start whatever runs. 0: no bound (each window's batch starts at once).
    #[serde(default = "default_max_partial_batches")]
    pub max_partial_batches: u32,
    /// How long past its window a partial batch waits for a running one to end before it starts
    /// anyway, so a stuck handler never holds the queue's next messages back for longer.
    #[serde(default = "default_max_partial_wait")]
    pub max_partial_wait_ms: u64,
    /// Where exhausted messages go: "table" (the store's dead-letter table, then deleted) or
    /// "sqs" (left to the queue's redrive policy).
    #[serde(default)]
    pub dead_letter: DeadLetterMode,
    /// Concurrent long polls for this queue: "auto" (default: adapted between 1 and
    /// concurrency / batch_size, at most 64) or a number, the most it adapts up to.
    #[serde(default)]
    pub receive_loops: ReceiveLoopsSetting,
    /// What the SQS bodies are: "envelope" (mailroom-router's envelope, the legacy API Gateway
    /// shapes, or an S3 pointer to one) or "plain" (an application's own messages, handed to the
    /// handler exactly as sent, as `Kind::Message`).
    #[serde(default)]
    pub message_format: MessageFormat,
}

/// `receive_loops`: how many long polls a queue may keep open at once. Either way the engine
/// adapts the number that actually poll to what the receives bring (`engine/adapt.rs`): one on
/// an idle queue, more while receives come back full with permits free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReceiveLoopsSetting {
    /// Up to enough loops to fill the queue's concurrency (concurrency / batch_size), at most
    /// [`MAX_AUTO_RECEIVE_LOOPS`].
    #[default]
    Auto,
    /// Up to this many.
    Max(u32),
}

/// The most loops `receive_loops = "auto"` opens for one queue. A loop brings at most a batch
/// (10) per round trip: at 20 ms of SQS latency each way a receive takes ~45 ms, so 16 loops
/// capped one queue at ~3,500 msgs/s (measured: 3,254 with 16, 4,354 with 48). How many of
/// them poll follows the receives' round trip (`engine/adapt.rs`), so on a near SQS server
/// the count stops where more loops would only queue there, and a high maximum costs nothing
/// (BENCHMARKS.md, "receive loops follow the round trip").
pub const MAX_AUTO_RECEIVE_LOOPS: u32 = 64;

impl<'de> Deserialize<'de> for ReceiveLoopsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ReceiveLoopsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of loops")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(ReceiveLoopsSetting::Max)
                    .map_err(|_| E::custom(format!("receive_loops {v} is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "auto" => Ok(ReceiveLoopsSetting::Auto),
                    other => Err(E::custom(format!(
                        "receive_loops must be \"auto\" or a number, not \"{other}\""
                    ))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    #[default]
    Envelope,
    Plain,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterMode {
    #[default]
    Table,
    Sqs,
}

fn default_weight() -> u32 {
    1
}
fn default_wait() -> u32 {
    MAX_WAIT_TIME_SECS
}
fn default_batch() -> u32 {
    MAX_BATCH_SIZE
}
fn default_visibility() -> u32 {
    60
}
fn default_retry_intervals() -> Vec<u32> {
    vec![10, 60, 300, 900]
}
fn default_heartbeat() -> u32 {
    20
}
fn default_max_batch() -> u32 {
    DEFAULT_MAX_BATCH_MESSAGES
}
fn default_batch_window() -> u64 {
    DEFAULT_BATCH_WINDOW_MS
}
fn default_max_partial_batches() -> u32 {
    DEFAULT_MAX_PARTIAL_BATCHES
}
fn default_max_partial_wait() -> u64 {
    DEFAULT_MAX_PARTIAL_WAIT_MS
}

/// Everything wrong with a config, each with the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config is not valid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse, apply environment overrides, validate.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        config.adopt_legacy_sections()?;
        config.apply_env(|k| std::env::var(k).ok());
        config.validate()?;
        Ok(config)
    }

    /// Move `[sendgrid] verification_public_key` into `[handlers.sendgrid]`, with a deprecation
    /// note; both set is an error (which one is meant cannot be guessed).
    fn adopt_legacy_sections(&mut self) -> Result<(), ConfigError> {
        let Some(legacy) = self.legacy_sendgrid.take() else {
            return Ok(());
        };
        let Some(key) = legacy.verification_public_key else {
            self.deprecations
                .push("[sendgrid] is deprecated (and empty here): remove it".into());
            return Ok(());
        };
        let section = self
            .handlers
            .entry("sendgrid")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = section.as_table_mut() else {
            return Err(ConfigError::Invalid(vec![
                "handlers.sendgrid must be a table ([handlers.sendgrid])".into(),
            ]));
        };
        if table.contains_key(EVENT_WEBHOOK_PUBLIC_KEY) {
            return Err(ConfigError::Invalid(vec![format!(
                "both [sendgrid] verification_public_key (deprecated) and [handlers.sendgrid] \
                 {EVENT_WEBHOOK_PUBLIC_KEY} are set: keep only the second"
            )]));
        }
        table.insert(EVENT_WEBHOOK_PUBLIC_KEY.into(), toml::Value::String(key));
        self.deprecations.push(format!(
            "[sendgrid] verification_public_key is deprecated: use [handlers.sendgrid] \
             {EVENT_WEBHOOK_PUBLIC_KEY} (or {ENV_EVENT_WEBHOOK_PUBLIC_KEY})"
        ));
        Ok(())
    }

    /// The `[handlers.NAME]` section, if the file has one.
    pub fn handler_section(&self, name: &str) -> Option<&toml::Value> {
        self.handlers.get(name)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var(ENV_DATABASE_URL).filter(|v| !v.is_empty()) {
            self.store.database_url = Some(url);
        }
        if let Some(url) = var(ENV_SQS_ENDPOINT_URL).filter(|v| !v.is_empty()) {
            self.sqs.endpoint_url = Some(url);
        }
        if let Some(listen) = var(ENV_TELEMETRY_LISTEN) {
            self.telemetry.listen = Some(listen).filter(|l| !l.is_empty());
        }
        if let Some(key) = var(ENV_EVENT_WEBHOOK_PUBLIC_KEY).filter(|v| !v.is_empty()) {
            if let Some(table) = self
                .handlers
                .entry("sendgrid")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
            {
                table.insert(EVENT_WEBHOOK_PUBLIC_KEY.into(), toml::Value::String(key));
            }
        }
    }

    /// Every problem that stops the worker, at once. Settings that work but cannot mean what
    /// they say are [`Config::warnings`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.queues.is_empty() {
            problems.push("no [[queue]] configured: there is nothing to consume".to_string());
        }
        if self.worker.total_concurrency == 0 {
            problems.push("worker.total_concurrency must be at least 1".into());
        }
        if self.worker.min_concurrency == Some(0) {
            problems.push("worker.min_concurrency must be at least 1".into());
        }
        if self.store.database_url.is_none() {
            problems
                .push("store.database_url is not set (set it or the DATABASE_URL env var)".into());
        }
        if self.worker.max_body_bytes_in_flight == 0 {
            problems.push("worker.max_body_bytes_in_flight must be at least 1".into());
        }
        if self.store.max_connections == 0 {
            problems.push("store.max_connections must be at least 1".into());
        }
        let mut names = HashSet::new();
        for q in &self.queues {
            let at = format!("queue \"{}\"", q.name);
            if q.name.trim().is_empty() {
                problems.push("a [[queue]] has an empty name".into());
            }
            if !names.insert(q.name.as_str()) {
                problems.push(format!("{at} is configured twice"));
            }
            if q.wait_time_secs > MAX_WAIT_TIME_SECS {
                problems.push(format!(
                    "{at}: wait_time_secs must be 0-{MAX_WAIT_TIME_SECS}"
                ));
            }
            if !(1..=MAX_BATCH_SIZE).contains(&q.batch_size) {
                problems.push(format!("{at}: batch_size must be 1-{MAX_BATCH_SIZE}"));
            }
            if q.visibility_timeout_secs == 0
                || q.visibility_timeout_secs > MAX_VISIBILITY_TIMEOUT_SECS
            {
                problems.push(format!(
                    "{at}: visibility_timeout_secs must be 1-{MAX_VISIBILITY_TIMEOUT_SECS}"
                ));
            }
            if q.heartbeat_secs != 0 && q.heartbeat_secs >= q.visibility_timeout_secs {
                problems.push(format!(
                    "{at}: heartbeat_secs ({}) must be below visibility_timeout_secs ({}) or 0",
                    q.heartbeat_secs, q.visibility_timeout_secs
                ));
            }
            if q.retry_intervals_secs
                .iter()
                .any(|&s| s > MAX_VISIBILITY_TIMEOUT_SECS)
            {
                problems.push(format!("{at}: retry_intervals_secs entries must be at most {MAX_VISIBILITY_TIMEOUT_SECS}"));
            }
            if q.concurrency == Some(0) {
                problems.push(format!("{at}: concurrency must be at least 1"));
            }
            if q.weight == 0 {
                problems.push(format!("{at}: weight must be at least 1"));
            }
            if q.max_batch_messages == 0 {
                problems.push(format!("{at}: max_batch_messages must be at least 1"));
            }
            if q.receive_loops == ReceiveLoopsSetting::Max(0) {
                problems.push(format!("{at}: receive_loops must be at least 1"));
            }
        }
        let mut forwarders = HashSet::new();
        for f in &self.forwards {
            if !forwarders.insert(f.name.as_str()) {
                problems.push(format!("forward \"{}\" is configured twice", f.name));
            }
            problems.extend(f.problems(|k| std::env::var(k).ok()));
        }
        problems.extend(self.retention.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// What `check` and the start-up log warn about: deprecated keys, and settings that cannot
    /// take effect.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.deprecations.clone();
        if self.s3.buckets.is_empty() {
            warnings.push(
                "[s3] buckets is not set: S3 pointers are followed into any bucket the \
                 worker's credentials can read"
                    .into(),
            );
        }
        if let Some(min) = self
            .worker
            .min_concurrency
            .filter(|&m| self.worker.adaptive_concurrency && m > self.worker.total_concurrency)
        {
            warnings.push(format!(
                "worker.min_concurrency ({min}) is above worker.total_concurrency ({}): the \
                 in-flight limit stays at total_concurrency",
                self.worker.total_concurrency
            ));
        }
        for q in &self.queues {
            if let Some(c) = q.concurrency.filter(|&c| c > self.worker.total_concurrency) {
                warnings.push(format!(
                    "queue \"{}\": concurrency {c} is above worker.total_concurrency ({}), so \
                     it can never be reached",
                    q.name, self.worker.total_concurrency
                ));
            }
        }
        warnings
    }

    /// The in-flight limit's bounds, (start and floor, ceiling): equal when it does not adapt.
    pub fn concurrency_bounds(&self) -> (u32, u32) {
        let max = self.worker.total_concurrency.max(1);
        if self.worker.adaptive_concurrency {
            let min = self
                .worker
                .min_concurrency
                .unwrap_or(DEFAULT_MIN_CONCURRENCY);
            (min.clamp(1, max), max)
        } else {
            (max, max)
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.worker.shutdown_timeout_secs)
    }

    /// Each queue's concurrency: its own setting, or its weighted share of the total (at least 1).
    pub fn queue_concurrency(&self, queue: &QueueConfig) -> u32 {
        if let Some(c) = queue.concurrency {
            return c.min(self.worker.total_concurrency);
        }
        let total_weight: u64 = self
            .queues
            .iter()
            .map(|q| u64::from(q.weight))
            .sum::<u64>()
            .max(1);
        let share =
            u64::from(self.worker.total_concurrency) * u64::from(queue.weight) / total_weight;
        share.clamp(1, u64::from(self.worker.total_concurrency)) as u32
    }
}

impl QueueConfig {
    /// The most receive loops: `receive_loops`, or for "auto" enough concurrent long polls to
    /// fill the queue's concurrency, at most [`MAX_AUTO_RECEIVE_LOOPS`]. How many of them poll
    /// adapts below that (`engine/adapt.rs`).
    pub fn receive_loops(&self, concurrency: u32) -> u32 {
        match self.receive_loops {
            ReceiveLoopsSetting::Max(n) => n,
            ReceiveLoopsSetting::Auto => concurrency
                .div_ceil(self.batch_size)
                .clamp(1, MAX_AUTO_RECEIVE_LOOPS),
        }
    }

    /// Visibility for the next attempt after a failed attempt `receive_count` (1-based), or None
    /// when the retries are exhausted.
    pub fn retry_delay(&self, receive_count: u32) -> Option<u32> {
        let index = receive_count.saturating_sub(1) as usize;
        self.retry_intervals_secs.get(index).copied()
    }

    /// The longest retry interval, used for transient faults that must never dead-letter.
    pub fn longest_retry_secs(&self) -> u32 {
        self.retry_intervals_secs
            .iter()
            .copied()
            .max()
            .unwrap_or(self.visibility_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
        [store]
        database_url = "postgres://localhost/x"
        [[queue]]
        name = "events"
        handler = "sendgrid"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        c.validate().unwrap();
        let q = &c.queues[0];
        assert_eq!(q.wait_time_secs, 20);
        assert_eq!(q.batch_size, 10);
        assert_eq!(c.queue_concurrency(q), 1000);
        assert_eq!(c.concurrency_bounds(), (200, 1000));
        assert_eq!(q.batch_window_ms, 20);
        assert_eq!(q.max_batch_messages, 100);
        assert_eq!(q.max_partial_batches, 1);
        assert_eq!(q.max_partial_wait_ms, 250);
        assert_eq!(q.receive_loops, ReceiveLoopsSetting::Auto);
        assert_eq!(q.receive_loops(100), 10, "auto: concurrency / batch size");
        assert_eq!(q.receive_loops(1000), 64, "auto: at most 64");
        assert_eq!(
            q.receive_loops(64),
            7,
            "auto: enough to fill the concurrency"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = format!("{MINIMAL}\nvisiblity_timeout_secs = 30\n");
        let err = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("visiblity_timeout_secs"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [store]
            database_url = "postgres://localhost/x"
            [[queue]]
            name = "a"
            handler = "sendgrid"
            batch_size = 11
            wait_time_secs = 21
            visibility_timeout_secs = 10
            heartbeat_secs = 10
        "#;
        let c: Config = toml::from_str(text).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("batch_size must be 1-10"), "{err}");
        assert!(err.contains("wait_time_secs must be 0-20"), "{err}");
        assert!(err.contains("heartbeat_secs (10) must be below"), "{err}");
    }

    #[test]
    fn weights_split_the_total() {
        let text = r#"
            [worker]
            total_concurrency = 30
            [store]
            database_url = "postgres://localhost/x"
            [[queue]]
            name = "events"
            handler = "sendgrid"
            weight = 2
            [[queue]]
            name = "inbound"
            handler = "sendgrid"
        "#;
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!(c.queue_concurrency(&c.queues[0]), 20);
        assert_eq!(c.queue_concurrency(&c.queues[1]), 10);
    }

    #[test]
    fn retry_delay_follows_receive_count_then_runs_out() {
        let c: Config = toml::from_str(MINIMAL).unwrap();
        let q = &c.queues[0];
        assert_eq!(q.retry_delay(1), Some(10));
        assert_eq!(q.retry_delay(4), Some(900));
        assert_eq!(q.retry_delay(5), None);
    }

    #[test]
    fn env_overrides_database_url() {
        let mut c: Config = toml::from_str(MINIMAL).unwrap();
        c.apply_env(|k| (k == ENV_DATABASE_URL).then(|| "postgres://env/db".to_string()));
        assert_eq!(c.store.database_url.as_deref(), Some("postgres://env/db"));
    }
}

#[cfg(test)]
mod handler_sections {
    use super::tests::MINIMAL as QUEUE;
    use super::*;

    #[test]
    fn the_old_sendgrid_section_still_works_with_a_deprecation_warning() {
        let text = format!("{QUEUE}\n[sendgrid]\nverification_public_key = \"abc\"\n");
        let c = Config::parse(&text, "x.toml").expect("old configs keep working");
        assert_eq!(
            c.handler_section("sendgrid")
                .and_then(|s| s.get(EVENT_WEBHOOK_PUBLIC_KEY)),
            Some(&toml::Value::String("abc".into()))
        );
        let warnings = c.warnings();
        assert!(
            warnings[0].contains("[handlers.sendgrid] event_webhook_public_key"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_old_and_new_key_names_together_are_an_error() {
        let text = format!(
            "{QUEUE}\n[sendgrid]\nverification_public_key = \"a\"\n[handlers.sendgrid]\nevent_webhook_public_key = \"b\"\n"
        );
        let err = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("keep only the second"), "{err}");
    }

    #[test]
    fn handler_sections_are_kept_for_their_handlers() {
        let text = format!("{QUEUE}\n[handlers.orders]\nmax = 3\n");
        let c = Config::parse(&text, "x.toml").unwrap();
        assert_eq!(
            c.handler_section("orders").and_then(|s| s.get("max")),
            Some(&toml::Value::Integer(3))
        );
    }

    #[test]
    fn the_key_env_var_fills_the_sendgrid_section() {
        let mut c: Config = toml::from_str(QUEUE).unwrap();
        c.apply_env(|k| (k == ENV_EVENT_WEBHOOK_PUBLIC_KEY).then(|| "k".to_string()));
        assert_eq!(
            c.handler_section("sendgrid")
                .and_then(|s| s.get(EVENT_WEBHOOK_PUBLIC_KEY)),
            Some(&toml::Value::String("k".into()))
        );
    }

    #[test]
    fn receive_loops_is_auto_or_a_maximum() {
        let parse = |v: &str| {
            toml::from_str::<Config>(&format!("{}\nreceive_loops = {v}\n", super::tests::MINIMAL))
        };
        let c = parse("\"auto\"").unwrap();
        assert_eq!(c.queues[0].receive_loops, ReceiveLoopsSetting::Auto);
        let c = parse("4").unwrap();
        assert_eq!(c.queues[0].receive_loops(200), 4, "a number is the maximum");
        let err = parse("\"many\"").unwrap_err().to_string();
        assert!(
            err.contains("receive_loops must be \"auto\" or a number"),
            "{err}"
        );
        let c = parse("0").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("receive_loops must be at least 1"), "{err}");
    }

    #[test]
    fn a_queue_concurrency_above_the_total_is_a_warning() {
        let text = format!("[worker]\ntotal_concurrency = 4\n{QUEUE}\nconcurrency = 10\n");
        let c = Config::parse(&text, "x.toml").unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("can never be reached")),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn the_in_flight_limit_adapts_between_min_and_total_unless_turned_off() {
        let bounds = |worker: &str| {
            Config::parse(&format!("[worker]\n{worker}\n{QUEUE}\n"), "x.toml")
                .unwrap()
                .concurrency_bounds()
        };
        assert_eq!(bounds(""), (200, 1000), "the defaults");
        assert_eq!(bounds("total_concurrency = 32"), (32, 32), "a low ceiling");
        assert_eq!(
            bounds("min_concurrency = 20\ntotal_concurrency = 300"),
            (20, 300)
        );
        assert_eq!(
            bounds("adaptive_concurrency = false\ntotal_concurrency = 300"),
            (300, 300),
            "fixed"
        );
        let c = Config::parse(
            &format!("[worker]\nmin_concurrency = 50\ntotal_concurrency = 10\n{QUEUE}\n"),
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.concurrency_bounds(), (10, 10));
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("min_concurrency (50)")),
            "{:?}",
            c.warnings()
        );
        let err = Config::parse(
            &format!("[worker]\nmin_concurrency = 0\n{QUEUE}\n"),
            "x.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("min_concurrency must be at least 1"), "{err}");
    }
}

#[cfg(test)]
mod example_config {
    use super::*;

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../config/mailroom.example.toml");
        let mut config: Config = toml::from_str(text).expect("example parses");
        config.store.database_url = Some("postgres://x".into());
        config.validate().expect("example validates");
        assert_eq!(config.queues.len(), 2);
    }

    /// The commented-out [[forward]] of the example, uncommented, is a valid forwarder: every
    /// key it documents exists.
    #[test]
    fn the_example_forwarder_section_is_valid_once_uncommented() {
        let text = include_str!("../config/mailroom.example.toml");
        let start = text.find("# [[forward]]").expect("a forward section");
        let section: String = text[start..]
            .lines()
            .filter(|l| !l.starts_with("# #"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(serde::Deserialize)]
        struct File {
            forward: Vec<crate::forward::ForwardConfig>,
        }
        let file: File = toml::from_str(&section).expect("the uncommented section parses");
        let f = &file.forward[0];
        let env = |k: &str| (k == "MAILROOM_FORWARD_RAILS_SECRETS").then(|| "k2,k1".to_string());
        assert_eq!(f.problems(env), Vec::<String>::new());
        assert_eq!(f.secrets(env), ["k2", "k1"]);
        assert!(
            !f.problems(|_| None).is_empty(),
            "an unset secret is a problem"
        );
    }
}
