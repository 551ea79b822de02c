//! Whether the worker may store an Event Webhook message, by the route it came in on: the one
//! place that decides which key verifies it, and what happens when none does.
//!
//! With several SendGrid webhooks, each signs with its own key, and the router routes each to
//! `/sendgrid/events/{name}` and writes the name into the envelope (`source.webhook`). The
//! worker's own check (defence in depth behind the router's) must then pick the key by that
//! name: `event_webhook_public_key` for the unnamed default route, `webhook_public_keys.NAME`
//! for a named one. During a key rotation a route has two keys and either verifies (the worker
//! has no overlap deadline of its own: it may handle a message long after the router accepted
//! it, so the router's deadline is the one that counts; remove the old key after it).
//!
//! The threat this check exists for is a message put straight on the queue by anyone with SQS
//! send access, bypassing the router. Such a sender also writes `source.webhook`, so the name
//! in an envelope is a claim, not a fact. Hence, once the worker has any key:
//! - a name the router could never have written (not a [route
//!   name](mailroom_envelope::valid_webhook_name): `"MARKETING"`, `""`; the router answers 404 for
//!   those) is refused, with or without keys;
//! - a route without a key here is refused, unless the config says the router's check is
//!   trusted for it (`trust_router_for = ["name"]`, `trust_router_for_default_route`): an
//!   unknown name, or a route the router has a key for and the worker does not, would otherwise
//!   be stored unverified. Until issue 26 it was ("a named route without an entry is not
//!   checked again here").
//!
//! Refusals are [`Refusal`]s, which the handler turns into dead letters at once (never a
//! retry: the same message never verifies later).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use mailroom_envelope::{valid_webhook_name, Envelope, MAX_WEBHOOK_NAME_LEN};
use mailroom_sendgrid::{PublicKey, SignatureError, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// The parsed keys, and the routes whose router check is trusted.
#[derive(Default)]
pub struct WebhookKeys {
    default: Vec<PublicKey>,
    named: HashMap<String, Vec<PublicKey>>,
    trust_default: bool,
    trusted: HashSet<String>,
}

/// The route a message claims to have come in on (`source.webhook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// The unnamed `/sendgrid/events` (no name in the envelope, or a legacy shape).
    Default,
    Named(&'a str),
}

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Default => f.write_str("the default route"),
            Route::Named(name) => write!(f, "route {name:?}"),
        }
    }
}

/// What every route name must be, for messages and config alike (the router's rule).
const ROUTE_NAME_RULE: &str = "a route name is 1 to 64 of a-z, 0-9, '-' and '_', starting with \
                               a letter or digit";
const _: () = assert!(
    MAX_WEBHOOK_NAME_LEN == 64,
    "ROUTE_NAME_RULE states the limit"
);

/// Why a message is refused. The `Display` text is the dead letter's reason; it names the route.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "webhook route {name:?}: not a route name ({ROUTE_NAME_RULE}); the router answers 404 \
         for it, so this message did not come through the router"
    )]
    NotARouteName { name: String },
    #[error(
        "event webhook signature: {route} has no key here ([handlers.sendgrid] {setting}) and \
         the router is not trusted for it ({trust}): refused unverified"
    )]
    NoKey {
        route: String,
        setting: String,
        trust: &'static str,
    },
    #[error("event webhook signature: {route}: missing {header} header")]
    MissingHeader { route: String, header: &'static str },
    #[error("event webhook signature: {route}: {source}")]
    BadSignature {
        route: String,
        #[source]
        source: SignatureError,
    },
}

/// A key that does not parse, and where it was configured.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {source}")]
pub struct KeyError {
    pub setting: String,
    #[source]
    pub source: SignatureError,
}

/// A route setting that cannot be what was meant.
#[derive(Debug, thiserror::Error)]
pub enum RouteSettingError {
    #[error(
        "{setting}: {name:?} is not a route name ({ROUTE_NAME_RULE}); the router has no such route"
    )]
    NotARouteName { setting: &'static str, name: String },
    #[error(
        "trust_router_for names {name:?}, which has keys (webhook_public_keys.{name}): a route \
         with keys is verified, so trusting the router for it means nothing; remove one"
    )]
    TrustedAndKeyed { name: String },
    #[error(
        "trust_router_for_default_route with event_webhook_public_key set: the default route is \
         verified with its key, so trusting the router for it means nothing; remove one"
    )]
    DefaultTrustedAndKeyed,
}

/// Everything [`WebhookKeys::parse`] reads.
pub struct KeySettings<'a> {
    /// The default route's keys, current then previous.
    pub default: &'a [&'a str],
    pub named: &'a BTreeMap<String, Vec<String>>,
    pub trust_default: bool,
    pub trusted: &'a BTreeSet<String>,
}

/// Why the settings do not parse.
#[derive(Debug, thiserror::Error)]
pub enum KeySettingsError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{} route setting problem(s)", .0.len())]
    Routes(Vec<RouteSettingError>),
}

impl WebhookKeys {
    /// Parses the keys and checks the route settings; every route problem is reported at once.
    pub fn parse(settings: &KeySettings<'_>) -> Result<Self, KeySettingsError> {
        let mut problems = Vec::new();
        for name in settings.named.keys() {
            if !valid_webhook_name(name) {
                problems.push(RouteSettingError::NotARouteName {
                    setting: "webhook_public_keys",
                    name: name.clone(),
                });
            }
        }
        for name in settings.trusted {
            if !valid_webhook_name(name) {
                problems.push(RouteSettingError::NotARouteName {
                    setting: "trust_router_for",
                    name: name.clone(),
                });
            } else if settings.named.get(name).is_some_and(|k| !k.is_empty()) {
                problems.push(RouteSettingError::TrustedAndKeyed { name: name.clone() });
            }
        }
        if settings.trust_default && !settings.default.is_empty() {
            problems.push(RouteSettingError::DefaultTrustedAndKeyed);
        }
        if !problems.is_empty() {
            return Err(KeySettingsError::Routes(problems));
        }

        let parse = |setting: String, value: &str| {
            PublicKey::from_base64(value.trim()).map_err(|source| KeyError { setting, source })
        };
        let default = settings
            .default
            .iter()
            .map(|k| parse("event_webhook_public_key".into(), k))
            .collect::<Result<_, _>>()?;
        let named = settings
            .named
            .iter()
            .map(|(name, keys)| {
                let keys = keys
                    .iter()
                    .map(|k| parse(format!("webhook_public_keys.{name}"), k))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((name.clone(), keys))
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(Self {
            default,
            named,
            trust_default: settings.trust_default,
            trusted: settings.trusted.iter().cloned().collect(),
        })
    }

    /// Whether any key is configured (the worker verifies signatures at all).
    pub fn any(&self) -> bool {
        !self.default.is_empty() || self.named.values().any(|k| !k.is_empty())
    }

    /// Checks an Event Webhook message: its route name, then (when any key is configured) its
    /// signature with its route's keys, or the config's trust in the router for that route.
    pub fn check_events(&self, env: &Envelope) -> Result<(), Refusal> {
        let route = route_of(env)?;
        if !self.any() {
            return Ok(());
        }
        let keys = match route {
            Route::Default => self.default.as_slice(),
            Route::Named(name) => self.named.get(name).map_or(&[][..], Vec::as_slice),
        };
        if keys.is_empty() {
            return match route {
                Route::Default if self.trust_default => Ok(()),
                Route::Named(name) if self.trusted.contains(name) => Ok(()),
                Route::Default => Err(Refusal::NoKey {
                    route: route.to_string(),
                    setting: "event_webhook_public_key".into(),
                    trust: "trust_router_for_default_route",
                }),
                Route::Named(name) => Err(Refusal::NoKey {
                    route: route.to_string(),
                    setting: format!("webhook_public_keys.{name}"),
                    trust: "trust_router_for",
                }),
            };
        }
        let header = |header: &'static str| {
            env.header(header).ok_or_else(|| Refusal::MissingHeader {
                route: route.to_string(),
                header,
            })
        };
        let signature = header(SIGNATURE_HEADER)?;
        let timestamp = header(TIMESTAMP_HEADER)?;
        verify(keys, signature, timestamp, &env.body).map_err(|source| Refusal::BadSignature {
            route: route.to_string(),
            source,
        })
    }
}

/// The route a message claims, refused when the router could not have written that name (an
/// Inbound Parse message too: the name is stored as its `source`).
pub fn route_of(env: &Envelope) -> Result<Route<'_>, Refusal> {
    match env.source.as_ref().and_then(|s| s.webhook.as_deref()) {
        None => Ok(Route::Default),
        Some(name) if valid_webhook_name(name) => Ok(Route::Named(name)),
        Some(name) => Err(Refusal::NotARouteName {
            name: name.to_owned(),
        }),
    }
}

/// Verifies with each of `keys` in turn; the last error when none verifies.
fn verify(
    keys: &[PublicKey],
    signature: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<(), SignatureError> {
    let mut last = None;
    for key in keys {
        match key.verify(signature, timestamp, body) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    last.map_or(Ok(()), Err)
}
