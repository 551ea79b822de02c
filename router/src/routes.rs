//! Named routes: one per SendGrid Event Webhook (or Inbound Parse setting) of an account.
//!
//! SendGrid lets an account have several Event Webhooks, each with its own URL, public key and
//! signing switch, and several Inbound Parse settings (receiving domains). The payload does not
//! say which webhook sent it, so the URL must: each one gets a route `/sendgrid/events/{name}`
//! (or `/sendgrid/inbound/{name}`) with its own credentials, its own queue if wanted, and its
//! name carried in the envelope (`source.webhook`) and stored with every row (`source`).
//!
//! A handful of environment variables cannot describe tens of webhooks, so the routes come as
//! one JSON document, from `MAILROOM_ROUTES` (the text) or `MAILROOM_ROUTES_FILE` (a path):
//!
//! ```json
//! {"events": {"marketing": {"public_key": "MFkw...", "queue_url": "https://sqs.../marketing",
//!                           "previous_public_key": "MFkw...",
//!                           "previous_key_expires_at": "2027-01-15T00:00:00Z",
//!                           "message_group": {"field": "tenant"}}},
//!  "inbound": {"support-example-com": {"basic_auth": "sendgrid:secret"}}}
//! ```
//!
//! Everything is checked at start, and an error names the route (`events.marketing.public_key:
//! ...`): a router with a bad key must fail its init, not refuse every post of one webhook.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mailroom_envelope::Kind;
use mailroom_sendgrid::PublicKey;
use serde::Deserialize;

use crate::config::{BasicAuth, ConfigError};

/// The longest route name (it travels in the envelope, metric labels and a database column).
pub const MAX_NAME_LEN: usize = mailroom_envelope::MAX_WEBHOOK_NAME_LEN;

/// A verification key that is being rotated out: accepted until `expires_at`, refused after.
#[derive(Debug, Clone)]
pub struct PreviousKey {
    pub key: PublicKey,
    pub expires_at: DateTime<Utc>,
}

/// How a route sets SQS's `MessageGroupId`, so one tenant's burst does not delay another's
/// callbacks (SQS fair queues on standard queues; ordering groups on FIFO queues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageGroup {
    /// The route's name (`default` for the unnamed routes): one group per webhook, which is
    /// also one group per SendGrid subuser when each subuser's webhook has its own route.
    Webhook,
    /// A top-level field of the batch's first event: a custom argument (`unique_args` appear as
    /// top-level keys) or a SendGrid field such as `marketing_campaign_id`. A post without it
    /// (or an inbound email) falls back to the route's name.
    Field(String),
}

impl MessageGroup {
    /// Parses `webhook` or `field:NAME` (the `MAILROOM_MESSAGE_GROUP` form).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "webhook" => Some(Self::Webhook),
            other => {
                let field = other.strip_prefix("field:")?.trim();
                (!field.is_empty()).then(|| Self::Field(field.to_owned()))
            }
        }
    }
}

/// One named route, parsed and checked.
#[derive(Debug, Clone)]
pub struct NamedRoute {
    pub kind: Kind,
    pub name: String,
    /// The webhook's current verification key; without one, posts are not signature-checked.
    pub public_key: Option<PublicKey>,
    pub previous_key: Option<PreviousKey>,
    pub basic_auth: Option<BasicAuth>,
    /// This route's queue; without one, the kind's default queue.
    pub queue_url: Option<String>,
    pub message_group: Option<MessageGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesSpec {
    #[serde(default)]
    events: BTreeMap<String, RouteSpec>,
    #[serde(default)]
    inbound: BTreeMap<String, RouteSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    public_key: Option<String>,
    previous_public_key: Option<String>,
    previous_key_expires_at: Option<String>,
    basic_auth: Option<String>,
    queue_url: Option<String>,
    message_group: Option<GroupSpec>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GroupSpec {
    Word(String),
    Field {
        #[serde(rename = "field")]
        name: String,
    },
}

/// Parses the routes document; `var` names where it came from in errors.
pub fn parse(var: &'static str, text: &str) -> Result<Vec<NamedRoute>, ConfigError> {
    let spec: RoutesSpec = serde_json::from_str(text)
        .map_err(|e| ConfigError::invalid(var, format!("not a routes document: {e}")))?;
    let mut routes = Vec::new();
    for (kind, specs) in [(Kind::Events, spec.events), (Kind::Inbound, spec.inbound)] {
        for (name, spec) in specs {
            routes.push(parse_route(var, kind, name, spec)?);
        }
    }
    Ok(routes)
}

fn parse_route(
    var: &'static str,
    kind: Kind,
    name: String,
    spec: RouteSpec,
) -> Result<NamedRoute, ConfigError> {
    let at = |field: &str| format!("{}.{name}.{field}", crate::routing::kind_name(kind));
    if !valid_name(&name) {
        return Err(ConfigError::invalid(
            var,
            format!(
                "{}.{name:?}: a route name is 1 to {MAX_NAME_LEN} of a-z, 0-9, '-' and '_', \
                 starting with a letter or digit",
                crate::routing::kind_name(kind)
            ),
        ));
    }
    let key = |field: &str, value: &str| {
        PublicKey::from_base64(value.trim()).map_err(|e| {
            ConfigError::invalid(
                var,
                format!(
                    "{}: not a base64 DER P-256 public key (SubjectPublicKeyInfo): {e}",
                    at(field)
                ),
            )
        })
    };
    let public_key = spec
        .public_key
        .as_deref()
        .map(|v| key("public_key", v))
        .transpose()?;
    let previous_key = match (spec.previous_public_key, spec.previous_key_expires_at) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                var,
                format!(
                    "{}: required with previous_public_key (the end of the overlap, RFC 3339)",
                    at("previous_key_expires_at")
                ),
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                var,
                format!(
                    "{}: set without previous_public_key",
                    at("previous_key_expires_at")
                ),
            ))
        }
        (Some(previous), Some(expires_at)) => Some(PreviousKey {
            key: key("previous_public_key", &previous)?,
            expires_at: parse_time(&expires_at).ok_or_else(|| {
                ConfigError::invalid(
                    var,
                    format!(
                        "{}: {expires_at:?} is not an RFC 3339 time",
                        at("previous_key_expires_at")
                    ),
                )
            })?,
        }),
    };
    if previous_key.is_some() && public_key.is_none() {
        return Err(ConfigError::invalid(
            var,
            format!("{}: a previous key needs a current one", at("public_key")),
        ));
    }
    let basic_auth = spec
        .basic_auth
        .as_deref()
        .map(|v| {
            BasicAuth::parse(v).ok_or_else(|| {
                ConfigError::invalid(
                    var,
                    format!(
                        "{}: expected user:password, both non-empty",
                        at("basic_auth")
                    ),
                )
            })
        })
        .transpose()?;
    let queue_url = spec
        .queue_url
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    let message_group = match spec.message_group {
        None => None,
        Some(GroupSpec::Word(word)) if word == "webhook" => Some(MessageGroup::Webhook),
        Some(GroupSpec::Field { name }) if !name.trim().is_empty() => {
            Some(MessageGroup::Field(name.trim().to_owned()))
        }
        Some(_) => {
            return Err(ConfigError::invalid(
                var,
                format!(
                    "{}: expected \"webhook\" or {{\"field\": \"<top-level event field>\"}}",
                    at("message_group")
                ),
            ))
        }
    };
    Ok(NamedRoute {
        kind,
        name,
        public_key,
        previous_key,
        basic_auth,
        queue_url,
        message_group,
    })
}

/// Route names are URL path segments, metric label values and column values: keep them plain
/// (the rule lives in `mailroom-envelope`, shared with the worker).
pub fn valid_name(name: &str) -> bool {
    mailroom_envelope::valid_webhook_name(name)
}

/// An RFC 3339 time.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = include_str!("../../tests/data/store/signing_public_key.b64");

    fn parse_ok(text: &str) -> Vec<NamedRoute> {
        parse("MAILROOM_ROUTES", text).expect("valid routes")
    }

    fn parse_err(text: &str) -> String {
        parse("MAILROOM_ROUTES", text)
            .expect_err("invalid routes")
            .to_string()
    }

    #[test]
    fn reads_routes_of_both_kinds() {
        let key = KEY.trim();
        let routes = parse_ok(&format!(
            r#"{{"events": {{"marketing": {{"public_key": "{key}", "queue_url": " q1 ",
                 "previous_public_key": "{key}", "previous_key_expires_at": "2027-01-15T00:00:00Z",
                 "message_group": {{"field": "tenant"}}}},
                 "transactional": {{"message_group": "webhook"}}}},
               "inbound": {{"support-example-com": {{"basic_auth": "u:p"}}}}}}"#
        ));
        assert_eq!(routes.len(), 3);
        let marketing = &routes[0];
        assert_eq!(
            (marketing.kind, marketing.name.as_str()),
            (Kind::Events, "marketing")
        );
        assert!(marketing.public_key.is_some());
        assert_eq!(
            marketing
                .previous_key
                .as_ref()
                .map(|p| p.expires_at.to_rfc3339()),
            Some("2027-01-15T00:00:00+00:00".to_owned())
        );
        assert_eq!(marketing.queue_url.as_deref(), Some("q1"));
        assert_eq!(
            marketing.message_group,
            Some(MessageGroup::Field("tenant".into()))
        );
        assert_eq!(routes[1].message_group, Some(MessageGroup::Webhook));
        assert_eq!(routes[2].kind, Kind::Inbound);
        assert_eq!(routes[2].basic_auth, BasicAuth::parse("u:p"));
    }

    #[test]
    fn errors_name_the_route_and_field() {
        let key = KEY.trim();
        for (text, expected) in [
            (
                r#"{"events": {"a": {"public_key": "bm90"}}}"#.to_owned(),
                "events.a.public_key",
            ),
            (
                format!(
                    r#"{{"events": {{"a": {{"public_key": "{key}", "previous_public_key": "{key}"}}}}}}"#
                ),
                "events.a.previous_key_expires_at: required",
            ),
            (
                format!(
                    r#"{{"inbound": {{"b": {{"public_key": "{key}", "previous_public_key": "{key}", "previous_key_expires_at": "soon"}}}}}}"#
                ),
                "inbound.b.previous_key_expires_at",
            ),
            (
                r#"{"inbound": {"b": {"basic_auth": "nocolon"}}}"#.to_owned(),
                "inbound.b.basic_auth",
            ),
            (
                r#"{"events": {"a": {"message_group": "subuser"}}}"#.to_owned(),
                "events.a.message_group",
            ),
            (
                r#"{"events": {"Bad Name": {}}}"#.to_owned(),
                "events.\"Bad Name\"",
            ),
            (
                r#"{"events": {"a": {"queue": "x"}}}"#.to_owned(),
                "unknown field `queue`",
            ),
            (r#"{"webhooks": {}}"#.to_owned(), "unknown field `webhooks`"),
        ] {
            let err = parse_err(&text);
            assert!(err.starts_with("MAILROOM_ROUTES: "), "{err}");
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn names_are_plain_path_segments() {
        for good in ["a", "marketing", "eu-1", "sub_user_42", "0"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "-a", "A", "a/b", "a b", "é", long.as_str()] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn message_group_variable_forms() {
        assert_eq!(MessageGroup::parse("webhook"), Some(MessageGroup::Webhook));
        assert_eq!(
            MessageGroup::parse("field: tenant"),
            Some(MessageGroup::Field("tenant".into()))
        );
        assert_eq!(MessageGroup::parse("field:"), None);
        assert_eq!(MessageGroup::parse("subuser"), None);
    }
}
