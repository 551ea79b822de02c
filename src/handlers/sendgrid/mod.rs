//! The `"sendgrid"` handler: decodes Event Webhook batches and Inbound Parse posts and stores
//! them, a whole SQS batch in one transaction.
//!
//! Why it is shaped this way:
//! - Decoding happens first, per job, with no IO. A body that does not decode (or fails the
//!   optional signature check) will never decode: it is dead-lettered with a reason that names
//!   what failed, and does not hold up the rest of the batch.
//! - Everything that decoded is written in ONE transaction (all events of all jobs in one
//!   UNNEST statement, each inbound email in its own statements) and committed before any job
//!   is reported Done, because the engine deletes a message as soon as it sees Done.
//! - If that transaction fails because of the database (connection, pool, shutdown, privilege,
//!   disk), every job is retried as transient: the data is fine and must not be dead-lettered.
//!   If it fails for another reason, one job's data may be to blame, so each job is retried in
//!   its own transaction: the good ones are stored and Done, a job whose data Postgres rejects
//!   is dead-lettered, and an unexplained failure gets a counted retry.
//! - Hooks ([`SendgridHook`]) run in that same transaction, after the inserts, with only what
//!   was new (see `hook.rs`); their errors are handled like a store error of the same class.
//!   The built-in ones (`status.rs`: each message's status and the suppression list, on unless
//!   the config turns them off) run first, then the application's, in registration order.

mod feed_notify;
mod hook;
mod source_metrics;
mod status;
mod webhook_keys;

use source_metrics::SourceCounts;
use webhook_keys::{KeySettings, KeySettingsError, WebhookKeys};

pub use feed_notify::{FeedNotifyHook, FEED_NOTIFY_HOOK};
pub use hook::{HookError, NewEmail, NewEvent, SendgridHook, StoredBatch};
pub use status::{MessageStatusHook, SuppressionsHook, MESSAGE_STATUS_HOOK, SUPPRESSIONS_HOOK};

use std::sync::Arc;

use mailroom_envelope::Kind;
use mailroom_sendgrid::{parse_events, parse_inbound_shared, Event, InboundEmail};

use crate::handler::{BoxFuture, Handler, Job, Outcome};
use crate::store::{
    dedup_key, insert_events, insert_inbound, insert_new_events, ErrorClass, EventRecord,
    InboundRecord, Store, StoreError,
};

/// The registry name of this handler (`handler = "sendgrid"` in a queue's config).
pub const SENDGRID_HANDLER: &str = "sendgrid";

/// Settings of the `"sendgrid"` handler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridHandlerConfig {
    /// The Signed Event Webhook verification key (base64 DER public key, as shown in SendGrid's
    /// settings). When set, every Event Webhook message must carry a valid signature over its
    /// exact body, or it is dead-lettered. Messages in the legacy `body-json` shape cannot be
    /// verified (their body was re-serialized by API Gateway), so enable this only once all
    /// traffic goes through mailroom-router.
    ///
    /// The signature's age is not checked here, on purpose: the router checks it against the
    /// time of the request, while the worker may handle a message hours later (a backlog, a
    /// Postgres outage, retries), and an age check then would dead-letter genuine events.
    #[serde(default)]
    pub event_webhook_public_key: Option<String>,
    /// The default route's previous key during a key rotation: a message signed with either
    /// verifies. Remove it once the router's overlap (`MAILROOM_EVENT_WEBHOOK_PREVIOUS_KEY_EXPIRES_AT`)
    /// is over and the queue holds no older messages.
    #[serde(default)]
    pub event_webhook_previous_public_key: Option<String>,
    /// The keys of the router's named webhook routes (`/sendgrid/events/{name}`), by name:
    /// `marketing = ["<current>", "<previous>"]`. A message from a named route is verified
    /// with its route's keys (either verifies). Once any key is configured, a message from a
    /// route without keys here is refused (a dead letter) unless `trust_router_for` names it.
    #[serde(default)]
    pub webhook_public_keys: std::collections::BTreeMap<String, Vec<String>>,
    /// Named routes whose messages are stored without the worker's own check, trusting the
    /// router's: for a route the router verifies (or deliberately does not) and the worker has
    /// no key for. Only matters once any key is configured.
    ///
    /// The threat: anyone who may send to the events queue can put an envelope on it directly,
    /// unsigned, naming any route in `source.webhook`. With a key configured, the worker refuses
    /// every message it cannot verify, so a forged envelope naming an unknown route, or a route
    /// the worker has no key for, becomes a dead letter instead of stored events. Listing a route
    /// here gives that up for the route: its messages are as trustworthy as the queue's send
    /// permission. Each entry must be a route name (what the router accepts: 1 to 64 of a-z,
    /// 0-9, '-' and '_'), and not a route with keys in `webhook_public_keys`.
    #[serde(default)]
    pub trust_router_for: std::collections::BTreeSet<String>,
    /// As `trust_router_for`, for the unnamed default route (`/sendgrid/events`): when keys are
    /// configured for named routes only, the default route's messages are refused unless this
    /// is set. Not allowed together with `event_webhook_public_key`.
    #[serde(default)]
    pub trust_router_for_default_route: bool,
    /// Keep `mailroom_message_status` (each message's delivery state, opens and clicks per
    /// recipient) in every batch's transaction. On by default.
    #[serde(default = "on")]
    pub message_status: bool,
    /// Keep `mailroom_suppressions` (hard bounces, drops of bad addresses, spam reports,
    /// unsubscribes; read with `mailroom_may_send`) in every batch's transaction. On by default.
    #[serde(default = "on")]
    pub suppressions: bool,
    /// One `pg_notify('mailroom_feed', 'events' | 'inbound_emails')` per batch transaction that
    /// stored something new, for feed readers that `LISTEN` (docs/feed.md). Off by default.
    #[serde(default)]
    pub notify_feed: bool,
}

fn on() -> bool {
    true
}

impl Default for SendgridHandlerConfig {
    /// No signature check; both built-in hooks on (what an empty `[handlers.sendgrid]` means).
    fn default() -> Self {
        Self {
            event_webhook_public_key: None,
            event_webhook_previous_public_key: None,
            webhook_public_keys: Default::default(),
            trust_router_for: Default::default(),
            trust_router_for_default_route: false,
            message_status: true,
            suppressions: true,
            notify_feed: false,
        }
    }
}

/// A [`SendgridHandlerConfig`] that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SendgridConfigError {
    /// Checked at startup: a bad key would otherwise dead-letter every event message.
    #[error("sendgrid handler: {0}")]
    PublicKey(#[source] webhook_keys::KeyError),
    /// A route setting (`webhook_public_keys`, `trust_router_for`,
    /// `trust_router_for_default_route`) that cannot be what was meant; every one is listed.
    #[error("sendgrid handler: {}", join_route_errors(.0))]
    RouteSettings(Vec<webhook_keys::RouteSettingError>),
}

fn join_route_errors(problems: &[webhook_keys::RouteSettingError]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Stores SendGrid callbacks. See the module docs.
#[derive(Clone)]
pub struct SendgridHandler {
    store: Store,
    keys: Arc<WebhookKeys>,
    hooks: Vec<Arc<dyn SendgridHook>>,
}

impl std::fmt::Debug for SendgridHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendgridHandler")
            .field("store", &self.store)
            .field("verifies_signatures", &self.keys.any())
            .field(
                "hooks",
                &self.hooks.iter().map(|h| h.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A job's body, decoded.
enum Body {
    Events(Vec<Event>),
    Inbound {
        email: Box<InboundEmail>,
        dedup_key: String,
    },
}

impl SendgridHandler {
    /// Fails only on a public key that does not parse. The built-in hooks the config turns on
    /// are registered first.
    pub fn new(store: Store, config: SendgridHandlerConfig) -> Result<Self, SendgridConfigError> {
        let default_keys: Vec<&str> = config
            .event_webhook_public_key
            .iter()
            .chain(&config.event_webhook_previous_public_key)
            .map(String::as_str)
            .collect();
        let keys = WebhookKeys::parse(&KeySettings {
            default: &default_keys,
            named: &config.webhook_public_keys,
            trust_default: config.trust_router_for_default_route,
            trusted: &config.trust_router_for,
        })
        .map_err(|e| match e {
            KeySettingsError::Key(e) => SendgridConfigError::PublicKey(e),
            KeySettingsError::Routes(problems) => SendgridConfigError::RouteSettings(problems),
        })?;
        let mut hooks: Vec<Arc<dyn SendgridHook>> = Vec::new();
        if config.message_status {
            hooks.push(Arc::new(MessageStatusHook));
        }
        if config.suppressions {
            hooks.push(Arc::new(SuppressionsHook));
        }
        if config.notify_feed {
            hooks.push(Arc::new(FeedNotifyHook));
        }
        Ok(Self {
            store,
            keys: Arc::new(keys),
            hooks,
        })
    }

    /// The names of the hooks run in each batch's transaction, in order (built-in first).
    pub fn hook_names(&self) -> Vec<&str> {
        self.hooks.iter().map(|h| h.name()).collect()
    }

    /// Run `hook` in every batch's transaction (after the built-in hooks and those added before
    /// it).
    pub fn with_hook(mut self, hook: Arc<dyn SendgridHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Handle one batch: exactly one outcome per job, in order.
    pub async fn handle(&self, jobs: &[Job]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
        let mut decoded: Vec<(usize, Body)> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let result = if job.envelope.body.len() >= BLOCKING_DECODE_BYTES {
                off_the_runtime(|| self.decode(job))
            } else {
                self.decode(job)
            };
            match result {
                Ok(d) => decoded.push((i, d)),
                Err(reason) => {
                    tracing::warn!(
                        queue = %job.queue, message_id = %job.message_id, %reason,
                        "undecodable SendGrid callback"
                    );
                    outcomes[i] = Some(Outcome::dead_letter(reason));
                }
            }
        }

        if !decoded.is_empty() {
            let all: Vec<(&Job, &Body)> = decoded.iter().map(|(i, d)| (&jobs[*i], d)).collect();
            match self.write(&all).await {
                Ok(()) => {
                    for (i, _) in &decoded {
                        outcomes[*i] = Some(Outcome::Done);
                    }
                }
                Err(e) if e.is_transient() || decoded.len() == 1 => {
                    tracing::warn!(error = %e, jobs = decoded.len(), "storing a SendGrid batch failed");
                    for (i, _) in &decoded {
                        outcomes[*i] = Some(outcome_for(&e));
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e, jobs = decoded.len(),
                        "storing a SendGrid batch failed; retrying each message on its own"
                    );
                    for (i, d) in &decoded {
                        let job = &jobs[*i];
                        outcomes[*i] = Some(match self.write(&[(job, d)]).await {
                            Ok(()) => Outcome::Done,
                            Err(e) => {
                                tracing::warn!(
                                    queue = %job.queue, message_id = %job.message_id, error = %e,
                                    "storing a SendGrid callback failed"
                                );
                                outcome_for(&e)
                            }
                        });
                    }
                }
            }
        }

        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::retry("internal: no outcome")))
            .collect()
    }

    /// Decode a job, or say (as a dead-letter reason) why it never will be.
    fn decode(&self, job: &Job) -> Result<Body, String> {
        let env = &job.envelope;
        match env.kind {
            Kind::Events => {
                self.keys.check_events(env).map_err(|e| e.to_string())?;
                parse_events(&env.body)
                    .map(Body::Events)
                    .map_err(|e| format!("event webhook body: {e}"))
            }
            Kind::Message => Err(
                "not a SendGrid callback: this queue's messages are plain (message_format = \"plain\"); \
                 the sendgrid handler needs router envelopes"
                    .to_string(),
            ),
            Kind::Inbound => {
                webhook_keys::route_of(env).map_err(|e| e.to_string())?;
                let content_type = env
                    .content_type
                    .as_deref()
                    .or_else(|| env.header("content-type"))
                    .ok_or_else(|| {
                        "inbound parse: no content-type (the multipart boundary is needed)"
                            .to_string()
                    })?;
                // Shared, not copied: the email's raw MIME and the attachments stored as sent
                // are slices of the envelope's body.
                let email = parse_inbound_shared(content_type, &env.body)
                    .map_err(|e| format!("inbound parse: {e}"))?;
                Ok(Body::Inbound {
                    email: Box::new(email),
                    dedup_key: dedup_key(&env.body),
                })
            }
        }
    }

    /// Store decoded jobs in one transaction, with the hooks' writes.
    async fn write(&self, items: &[(&Job, &Body)]) -> Result<(), WriteError> {
        let mut tx = self.store.begin().await?;

        let events: Vec<EventRecord<'_>> = items
            .iter()
            .filter_map(|(job, d)| match d {
                Body::Events(events) => Some(events.iter().map(move |event| EventRecord {
                    event,
                    sqs_message_id: &job.message_id,
                    queue: &job.queue,
                    received_at: received_at(job),
                    source: source(job),
                })),
                Body::Inbound { .. } => None,
            })
            .flatten()
            .collect();
        let mut by_source = SourceCounts::default();
        for (job, d) in items.iter() {
            match d {
                Body::Events(events) => by_source.add_events(&job.queue, source(job), events.len()),
                Body::Inbound { .. } => by_source.add_email(&job.queue, source(job)),
            }
        }
        let mut stored = StoredBatch::default();
        let new_events = if self.hooks.is_empty() {
            insert_events(&mut tx, &events).await?
        } else {
            let new = insert_new_events(&mut tx, &events).await?;
            stored.events = new.iter().map(NewEvent::from).collect();
            new.len() as u64
        };

        for (job, d) in items {
            if let Body::Inbound { email, dedup_key } = d {
                let rec = InboundRecord {
                    email,
                    dedup_key,
                    sqs_message_id: &job.message_id,
                    queue: &job.queue,
                    received_at: received_at(job),
                    source: source(job),
                };
                if let Some(id) = insert_inbound(&mut tx, &rec).await? {
                    stored.emails.push(NewEmail {
                        id,
                        email,
                        queue: &job.queue,
                        sqs_message_id: &job.message_id,
                    });
                }
            }
        }

        if !stored.is_empty() {
            for hook in &self.hooks {
                hook.on_stored(&mut tx, &stored)
                    .await
                    .map_err(|source| WriteError::Hook {
                        hook: hook.name().to_string(),
                        source,
                    })?;
            }
        }

        tx.commit().await.map_err(StoreError::query("committing"))?;
        by_source.record();
        tracing::debug!(
            jobs = items.len(),
            events = events.len(),
            new_events,
            new_emails = stored.emails.len(),
            "stored SendGrid callbacks"
        );
        Ok(())
    }
}

/// Why a batch's transaction did not commit.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sendgrid hook {hook}: {source}")]
    Hook {
        hook: String,
        #[source]
        source: HookError,
    },
}

impl WriteError {
    fn is_transient(&self) -> bool {
        match self {
            WriteError::Store(e) => e.is_transient(),
            WriteError::Hook { source, .. } => matches!(source, HookError::Transient(_)),
        }
    }
}

/// Bodies at least this big (only S3-offloaded ones: SQS caps a message at 256 KiB) are decoded
/// with [`off_the_runtime`].
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// Run CPU-heavy decoding without stalling the runtime. Decoding a large inbound email (MIME
/// parts, base64, charsets) is pure CPU: a parsed-mode post with a 60 MiB attachment took
/// 163 ms on the dev machine (16 MiB: 42 ms), long enough to hold up the receives, acks and
/// heartbeats that share its tokio worker thread; on a
/// multi-threaded runtime `block_in_place` hands that thread's other tasks to another thread
/// first. A current-thread runtime (some tests) cannot do that, so there it runs in place.
fn off_the_runtime<T>(decode: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(decode),
        _ => decode(),
    }
}

/// When the edge received the request; the SQS send time for legacy shapes that do not say.
fn received_at(job: &Job) -> Option<chrono::DateTime<chrono::Utc>> {
    job.envelope.received_at.or(job.sent_at)
}

/// The named webhook route that received the callback, stored as each row's `source`; `None`
/// on the unnamed default routes and for legacy shapes, which carry no route.
fn source(job: &Job) -> Option<&str> {
    job.envelope
        .source
        .as_ref()
        .and_then(|s| s.webhook.as_deref())
}

/// What a failed write means for the job(s) that were being written.
fn outcome_for(e: &WriteError) -> Outcome {
    match e {
        WriteError::Store(store) => match store.class() {
            ErrorClass::Transient => {
                // Counted here, where it is known to be Postgres (not in a wrapper that would
                // count any handler's transient outcome).
                crate::telemetry::count_postgres_error("handler");
                Outcome::transient(format!("database unavailable: {e}"))
            }
            ErrorClass::Data => Outcome::dead_letter(format!("database rejected the data: {e}")),
            ErrorClass::Other => Outcome::retry(format!("storing failed: {e}")),
        },
        WriteError::Hook { source, .. } => match source {
            HookError::Transient(_) => Outcome::transient(e.to_string()),
            HookError::Retry(_) => Outcome::retry(e.to_string()),
            HookError::Reject(_) => Outcome::dead_letter(e.to_string()),
        },
    }
}

impl Handler for SendgridHandler {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.handle(jobs))
    }
}

#[cfg(test)]
mod tests {
    use super::{off_the_runtime, SendgridHandlerConfig};

    /// Every setting the example config documents for `[handlers.sendgrid]` (commented out)
    /// exists, with the documented type.
    #[test]
    fn the_example_sendgrid_section_is_valid_once_uncommented() {
        let text = include_str!("../../../config/mailroom.example.toml");
        let start = text.find("[handlers.sendgrid]\n").expect("the section");
        let end = start + text[start..].find("\n[s3]").expect("the next section");
        let settings: String = text[start..end]
            .lines()
            .filter_map(|l| {
                let l = l.strip_prefix("# ").unwrap_or(l);
                let setting = l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
                setting.then_some(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        #[derive(serde::Deserialize)]
        struct File {
            handlers: Handlers,
        }
        #[derive(serde::Deserialize)]
        struct Handlers {
            sendgrid: SendgridHandlerConfig,
        }
        let file: File = toml::from_str(&settings).expect("the uncommented section parses");
        let c = file.handlers.sendgrid;
        assert!(c.event_webhook_public_key.is_some());
        assert_eq!(c.trust_router_for, ["partners".to_owned()].into());
        assert_eq!(c.webhook_public_keys["marketing"].len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_the_runtime_runs_on_a_multi_threaded_runtime() {
        assert_eq!(off_the_runtime(|| 6 * 7), 42);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn off_the_runtime_runs_in_place_on_a_current_thread_runtime() {
        assert_eq!(off_the_runtime(|| 6 * 7), 42);
    }

    #[test]
    fn off_the_runtime_runs_outside_any_runtime() {
        assert_eq!(off_the_runtime(|| 6 * 7), 42);
    }
}
