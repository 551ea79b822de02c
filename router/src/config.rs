//! Router configuration, read once at cold start from the environment.
//!
//! Everything that can be wrong with the configuration is found here, before the first request,
//! with an error that names the variable: a Lambda that starts with a bad public key or a
//! malformed size must fail its init (visible in CloudWatch at deploy time), not answer 500 to
//! every SendGrid retry for hours.

use std::collections::HashMap;

use mailroom_sendgrid::PublicKey;

use crate::routes::{self, MessageGroup, NamedRoute, PreviousKey};

/// Default `MAILROOM_MAX_MESSAGE_BYTES`: SQS's maximum message size since 2025 (1 MiB).
/// Queues created before then may still be limited to 256 KiB (262144): set it to that there.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default `MAILROOM_MAX_REQUEST_BYTES`: Lambda's synchronous invocation payload limit (6 MB),
/// below API Gateway's own 10 MB request limit.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;
/// Default `MAILROOM_MAX_INBOUND_BYTES`: the largest Inbound Parse post `serve` takes
/// (streamed to S3). SendGrid accepts emails up to 30 MB and posts them with some multipart
/// overhead; 40 MiB leaves room for that, and a post over it is answered 507 (SendGrid retries
/// it for 3 days) with an error log line and `mailroom_router_inbound_refused_total`.
pub const DEFAULT_MAX_INBOUND_BYTES: usize = 40 * 1024 * 1024;
/// The most `MAILROOM_MAX_INBOUND_BYTES` may be: its base64 envelope (4/3 of it, plus the
/// headers) must stay under the worker's 64 MiB envelope limit
/// ([`mailroom_envelope::MAX_MESSAGE_BYTES`]).
pub const MAX_INBOUND_BYTES_CEILING: usize = 47 * 1024 * 1024;
/// Default `MAILROOM_SIGNATURE_MAX_AGE_SECS`.
pub const DEFAULT_SIGNATURE_MAX_AGE_SECS: u64 = 600;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    /// A problem with `var`.
    pub fn invalid(var: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var,
            reason: reason.into(),
        }
    }
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(var, reason)
}

/// HTTP basic-auth credentials expected on Inbound Parse posts.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BasicAuth {
    /// Parses `user:password` (the password may itself contain `:`).
    pub fn parse(value: &str) -> Option<Self> {
        let (user, password) = value.split_once(':')?;
        if user.is_empty() || password.is_empty() {
            return None;
        }
        Some(Self {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// Everything the router needs to know, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// `MAILROOM_EVENTS_QUEUE_URL`: default queue for Event Webhook batches.
    pub events_queue_url: Option<String>,
    /// `MAILROOM_INBOUND_QUEUE_URL`: default queue for Inbound Parse posts.
    pub inbound_queue_url: Option<String>,
    /// `MAILROOM_EVENTS_PATH` (default `/sendgrid/events`).
    pub events_path: String,
    /// `MAILROOM_INBOUND_PATH` (default `/sendgrid/inbound`).
    pub inbound_path: String,
    /// `MAILROOM_HEALTH_PATH` (default `/healthz`; empty disables): answers GET with 200.
    pub health_path: Option<String>,
    /// `MAILROOM_MAX_MESSAGE_BYTES`: encoded envelopes larger than this go to S3.
    pub max_message_bytes: usize,
    /// `MAILROOM_MAX_REQUEST_BYTES`: request bodies larger than this are refused with 413.
    pub max_request_bytes: usize,
    /// `MAILROOM_MAX_INBOUND_BYTES` (`serve` only, default 40 MiB): the largest Inbound Parse
    /// post; larger ones are answered 507, never 413 (SendGrid drops a post on a 4xx).
    pub max_inbound_bytes: usize,
    /// `MAILROOM_LARGE_BODY_BUCKET`: where oversized envelopes go; without it they are a 413.
    pub large_body_bucket: Option<String>,
    /// `MAILROOM_LARGE_BODY_PREFIX` (default `mailroom`): key prefix in that bucket.
    pub large_body_prefix: String,
    /// `MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY` (the worker reads the same variable): verification
    /// key for the signed Event Webhook. The old name `MAILROOM_SENDGRID_PUBLIC_KEY` still
    /// works, with a deprecation warning.
    pub events_public_key: Option<PublicKey>,
    /// `MAILROOM_INBOUND_PUBLIC_KEY`: verification key for signed Inbound Parse posts.
    pub inbound_public_key: Option<PublicKey>,
    /// `MAILROOM_SIGNATURE_MAX_AGE_SECS` (default 600; 0 disables the replay window).
    pub signature_max_age_secs: u64,
    /// `MAILROOM_INBOUND_BASIC_AUTH` (`user:password`).
    pub inbound_basic_auth: Option<BasicAuth>,
    /// `MAILROOM_ALLOW_EVENT_QUEUE_URL` (default false): let legacy mapping-template events
    /// choose their own queue through their `queue_url` field.
    pub allow_event_queue_url: bool,
    /// `MAILROOM_EVENT_WEBHOOK_PREVIOUS_PUBLIC_KEY` with
    /// `MAILROOM_EVENT_WEBHOOK_PREVIOUS_KEY_EXPIRES_AT`: the default events route's key being
    /// rotated out, accepted until then.
    pub events_previous_key: Option<PreviousKey>,
    /// `MAILROOM_INBOUND_PREVIOUS_PUBLIC_KEY` with `MAILROOM_INBOUND_PREVIOUS_KEY_EXPIRES_AT`.
    pub inbound_previous_key: Option<PreviousKey>,
    /// `MAILROOM_MESSAGE_GROUP` (`webhook` or `field:NAME`): the default routes' SQS
    /// `MessageGroupId` (named routes set their own).
    pub message_group: Option<MessageGroup>,
    /// `MAILROOM_ROUTES` (JSON) or `MAILROOM_ROUTES_FILE` (a path to it): the named routes,
    /// `{events_path}/{name}` and `{inbound_path}/{name}` ([`crate::routes`]).
    pub routes: Vec<NamedRoute>,
    /// Deprecated variables that were read, each with its replacement (logged at start).
    pub deprecations: Vec<String>,
}

/// The one name of the Event Webhook verification key, across router and worker.
pub const ENV_EVENT_WEBHOOK_PUBLIC_KEY: &str = "MAILROOM_EVENT_WEBHOOK_PUBLIC_KEY";
/// Its old name, still read.
pub const ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD: &str = "MAILROOM_SENDGRID_PUBLIC_KEY";

impl Default for Config {
    fn default() -> Self {
        Self {
            events_queue_url: None,
            inbound_queue_url: None,
            events_path: "/sendgrid/events".to_owned(),
            inbound_path: "/sendgrid/inbound".to_owned(),
            health_path: Some("/healthz".to_owned()),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_inbound_bytes: DEFAULT_MAX_INBOUND_BYTES,
            large_body_bucket: None,
            large_body_prefix: "mailroom".to_owned(),
            events_public_key: None,
            inbound_public_key: None,
            signature_max_age_secs: DEFAULT_SIGNATURE_MAX_AGE_SECS,
            inbound_basic_auth: None,
            allow_event_queue_url: false,
            events_previous_key: None,
            inbound_previous_key: None,
            message_group: None,
            routes: Vec::new(),
            deprecations: Vec::new(),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads the given variables (tests pass their own map).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Config {
            events_queue_url: get("MAILROOM_EVENTS_QUEUE_URL"),
            inbound_queue_url: get("MAILROOM_INBOUND_QUEUE_URL"),
            ..Config::default()
        };
        if let Some(path) = get("MAILROOM_EVENTS_PATH") {
            config.events_path = parse_path("MAILROOM_EVENTS_PATH", &path)?;
        }
        if let Some(path) = get("MAILROOM_INBOUND_PATH") {
            config.inbound_path = parse_path("MAILROOM_INBOUND_PATH", &path)?;
        }
        if config.events_path == config.inbound_path {
            return Err(invalid(
                "MAILROOM_INBOUND_PATH",
                "must differ from MAILROOM_EVENTS_PATH",
            ));
        }
        if vars.contains_key("MAILROOM_HEALTH_PATH") {
            config.health_path = match get("MAILROOM_HEALTH_PATH") {
                Some(path) => Some(parse_path("MAILROOM_HEALTH_PATH", &path)?),
                None => None,
            };
        }
        if let Some(v) = get("MAILROOM_MAX_MESSAGE_BYTES") {
            config.max_message_bytes = parse_size("MAILROOM_MAX_MESSAGE_BYTES", &v)?;
        }
        if let Some(v) = get("MAILROOM_MAX_REQUEST_BYTES") {
            config.max_request_bytes = parse_size("MAILROOM_MAX_REQUEST_BYTES", &v)?;
        }
        if let Some(v) = get("MAILROOM_MAX_INBOUND_BYTES") {
            config.max_inbound_bytes = parse_inbound_limit(&v)?;
        }
        config.large_body_bucket = get("MAILROOM_LARGE_BODY_BUCKET");
        if let Some(prefix) = get("MAILROOM_LARGE_BODY_PREFIX") {
            config.large_body_prefix = prefix.trim_matches('/').to_owned();
        }
        match (
            get(ENV_EVENT_WEBHOOK_PUBLIC_KEY),
            get(ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD),
        ) {
            (Some(key), old) => {
                if old.is_some() {
                    config.deprecations.push(format!(
                        "{ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD} is ignored: \
                         {ENV_EVENT_WEBHOOK_PUBLIC_KEY} is set (remove the old name)"
                    ));
                }
                config.events_public_key = Some(parse_key(ENV_EVENT_WEBHOOK_PUBLIC_KEY, &key)?);
            }
            (None, Some(key)) => {
                config.deprecations.push(format!(
                    "{ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD} is deprecated: rename it to \
                     {ENV_EVENT_WEBHOOK_PUBLIC_KEY}"
                ));
                config.events_public_key = Some(parse_key(ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD, &key)?);
            }
            (None, None) => {}
        }
        if let Some(key) = get("MAILROOM_INBOUND_PUBLIC_KEY") {
            config.inbound_public_key = Some(parse_key("MAILROOM_INBOUND_PUBLIC_KEY", &key)?);
        }
        if let Some(v) = get("MAILROOM_SIGNATURE_MAX_AGE_SECS") {
            config.signature_max_age_secs = v.parse().map_err(|_| {
                invalid(
                    "MAILROOM_SIGNATURE_MAX_AGE_SECS",
                    format!("{v:?} is not a whole number of seconds"),
                )
            })?;
        }
        if let Some(v) = get("MAILROOM_INBOUND_BASIC_AUTH") {
            config.inbound_basic_auth = Some(BasicAuth::parse(&v).ok_or_else(|| {
                invalid(
                    "MAILROOM_INBOUND_BASIC_AUTH",
                    "expected user:password, both non-empty",
                )
            })?);
        }
        if let Some(v) = get("MAILROOM_ALLOW_EVENT_QUEUE_URL") {
            config.allow_event_queue_url = parse_bool("MAILROOM_ALLOW_EVENT_QUEUE_URL", &v)?;
        }
        config.events_previous_key = previous_key(
            &get,
            "MAILROOM_EVENT_WEBHOOK_PREVIOUS_PUBLIC_KEY",
            "MAILROOM_EVENT_WEBHOOK_PREVIOUS_KEY_EXPIRES_AT",
            config.events_public_key.is_some(),
        )?;
        config.inbound_previous_key = previous_key(
            &get,
            "MAILROOM_INBOUND_PREVIOUS_PUBLIC_KEY",
            "MAILROOM_INBOUND_PREVIOUS_KEY_EXPIRES_AT",
            config.inbound_public_key.is_some(),
        )?;
        if let Some(v) = get("MAILROOM_MESSAGE_GROUP") {
            config.message_group = Some(MessageGroup::parse(&v).ok_or_else(|| {
                invalid(
                    "MAILROOM_MESSAGE_GROUP",
                    format!("{v:?}: expected webhook or field:<top-level event field>"),
                )
            })?);
        }
        config.routes = match (get("MAILROOM_ROUTES"), get("MAILROOM_ROUTES_FILE")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "MAILROOM_ROUTES_FILE",
                    "set MAILROOM_ROUTES or MAILROOM_ROUTES_FILE, not both",
                ))
            }
            (Some(text), None) => routes::parse("MAILROOM_ROUTES", &text)?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid("MAILROOM_ROUTES_FILE", format!("cannot read {path}: {e}"))
                })?;
                routes::parse("MAILROOM_ROUTES_FILE", &text)?
            }
            (None, None) => Vec::new(),
        };
        Ok(config)
    }
}

fn parse_path(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if !value.starts_with('/') {
        return Err(invalid(var, format!("{value:?} must start with '/'")));
    }
    let trimmed = value.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_owned())
}

fn parse_size(var: &'static str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(0) => Err(invalid(var, "must be greater than 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(invalid(
            var,
            format!("{value:?} is not a whole number of bytes"),
        )),
    }
}

/// `MAILROOM_MAX_INBOUND_BYTES`: a size up to [`MAX_INBOUND_BYTES_CEILING`].
fn parse_inbound_limit(value: &str) -> Result<usize, ConfigError> {
    let var = "MAILROOM_MAX_INBOUND_BYTES";
    let bytes = parse_size(var, value)?;
    if bytes > MAX_INBOUND_BYTES_CEILING {
        return Err(invalid(
            var,
            format!(
                "{bytes} is over {MAX_INBOUND_BYTES_CEILING}: the envelope (base64, 4/3 of the \
                 body) would pass the worker's {} byte limit",
                mailroom_envelope::MAX_MESSAGE_BYTES
            ),
        ));
    }
    Ok(bytes)
}

fn parse_bool(var: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(var, format!("{value:?} is not true or false"))),
    }
}

/// A default route's previous key and the end of its overlap: both or neither, and only beside
/// a current key.
fn previous_key(
    get: &impl Fn(&str) -> Option<String>,
    key_var: &'static str,
    expires_var: &'static str,
    has_current: bool,
) -> Result<Option<PreviousKey>, ConfigError> {
    match (get(key_var), get(expires_var)) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            expires_var,
            format!("required with {key_var} (the end of the overlap, RFC 3339)"),
        )),
        (None, Some(_)) => Err(invalid(expires_var, format!("set without {key_var}"))),
        (Some(_), Some(_)) if !has_current => Err(invalid(
            key_var,
            "a previous key needs a current one beside it",
        )),
        (Some(key), Some(expires_at)) => Ok(Some(PreviousKey {
            key: parse_key(key_var, &key)?,
            expires_at: routes::parse_time(&expires_at).ok_or_else(|| {
                invalid(
                    expires_var,
                    format!("{expires_at:?} is not an RFC 3339 time"),
                )
            })?,
        })),
    }
}

fn parse_key(var: &'static str, value: &str) -> Result<PublicKey, ConfigError> {
    PublicKey::from_base64(value).map_err(|e| {
        invalid(
            var,
            format!("not a base64 DER P-256 public key (SubjectPublicKeyInfo): {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults() {
        let config = Config::from_vars(HashMap::new()).expect("empty environment is valid");
        assert_eq!(config.max_message_bytes, 1_048_576);
        assert_eq!(config.signature_max_age_secs, 600);
        assert_eq!(config.events_path, "/sendgrid/events");
        assert_eq!(config.health_path.as_deref(), Some("/healthz"));
        assert!(config.events_public_key.is_none());
        assert_eq!(config.max_inbound_bytes, 41_943_040);
    }

    #[test]
    fn reads_everything() {
        let config = Config::from_vars(vars(&[
            ("MAILROOM_EVENTS_QUEUE_URL", "http://q/events"),
            ("MAILROOM_INBOUND_QUEUE_URL", " http://q/inbound "),
            ("MAILROOM_EVENTS_PATH", "/hooks/events/"),
            ("MAILROOM_HEALTH_PATH", ""),
            ("MAILROOM_MAX_MESSAGE_BYTES", "262144"),
            ("MAILROOM_LARGE_BODY_BUCKET", "bodies"),
            ("MAILROOM_INBOUND_BASIC_AUTH", "user:pa:ss"),
            ("MAILROOM_ALLOW_EVENT_QUEUE_URL", "true"),
            ("MAILROOM_SIGNATURE_MAX_AGE_SECS", "0"),
        ]))
        .expect("valid");
        assert_eq!(config.events_queue_url.as_deref(), Some("http://q/events"));
        assert_eq!(
            config.inbound_queue_url.as_deref(),
            Some("http://q/inbound")
        );
        assert_eq!(config.events_path, "/hooks/events");
        assert_eq!(config.health_path, None);
        assert_eq!(config.max_message_bytes, 262_144);
        assert_eq!(config.large_body_bucket.as_deref(), Some("bodies"));
        assert_eq!(config.inbound_basic_auth, BasicAuth::parse("user:pa:ss"));
        assert!(config.allow_event_queue_url);
        assert_eq!(config.signature_max_age_secs, 0);
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value) in [
            ("MAILROOM_MAX_MESSAGE_BYTES", "1MB"),
            ("MAILROOM_MAX_REQUEST_BYTES", "0"),
            ("MAILROOM_SENDGRID_PUBLIC_KEY", "bm90IGEga2V5"),
            ("MAILROOM_INBOUND_BASIC_AUTH", "nocolon"),
            ("MAILROOM_SIGNATURE_MAX_AGE_SECS", "-1"),
            ("MAILROOM_EVENTS_PATH", "sendgrid/events"),
            ("MAILROOM_ALLOW_EVENT_QUEUE_URL", "maybe"),
            ("MAILROOM_MAX_INBOUND_BYTES", "40MiB"),
            ("MAILROOM_MAX_INBOUND_BYTES", "49283073"),
        ] {
            let err = Config::from_vars(vars(&[(var, value)])).expect_err(var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn the_event_webhook_key_has_one_name_and_the_old_one_still_works_with_a_warning() {
        let key = include_str!("../../tests/data/store/signing_public_key.b64").trim();
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let new = Config::from_vars(vars(&[(ENV_EVENT_WEBHOOK_PUBLIC_KEY, key)])).unwrap();
        assert!(new.events_public_key.is_some());
        assert!(new.deprecations.is_empty());
        let old = Config::from_vars(vars(&[(ENV_EVENT_WEBHOOK_PUBLIC_KEY_OLD, key)])).unwrap();
        assert!(old.events_public_key.is_some());
        assert!(
            old.deprecations[0].contains(ENV_EVENT_WEBHOOK_PUBLIC_KEY),
            "{:?}",
            old.deprecations
        );
    }
}
