//! Which callback a path is, and which queue it goes to.
//!
//! API Gateway hands the path over in different forms: REST APIs without a custom domain give
//! the resource path in `path` but the stage-prefixed path in `requestContext.path`; HTTP APIs
//! put the stage in `rawPath` unless it is `$default`. So a configured path matches with or
//! without a leading `/<stage>` segment, and trailing slashes are ignored.

use std::collections::HashMap;

use mailroom_envelope::Kind;
use mailroom_sendgrid::PublicKey;

use crate::config::{BasicAuth, Config};
use crate::routes::{MessageGroup, NamedRoute, PreviousKey};

/// Stage variable that overrides `MAILROOM_EVENTS_QUEUE_URL` for one stage.
pub const STAGE_VAR_EVENTS_QUEUE: &str = "eventsQueueUrl";
/// Stage variable that overrides `MAILROOM_INBOUND_QUEUE_URL` for one stage.
pub const STAGE_VAR_INBOUND_QUEUE: &str = "inboundQueueUrl";

/// Everything about the route a callback came in on: its kind, its name (none for the default
/// routes), its credentials, its queue and its message grouping.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: Kind,
    /// The named route's name; `None` on the default `/sendgrid/events` and `/sendgrid/inbound`.
    pub name: Option<&'a str>,
    pub public_key: Option<&'a PublicKey>,
    pub previous_key: Option<&'a PreviousKey>,
    pub basic_auth: Option<&'a BasicAuth>,
    /// The route's own queue, if it has one (else the kind's, see [`queue_url`]).
    pub queue_url: Option<&'a str>,
    pub message_group: Option<&'a MessageGroup>,
}

impl Target<'_> {
    /// The name used in logs, metric labels and `MessageGroupId`s: the route's, or `default`.
    pub fn label(&self) -> &str {
        self.name.unwrap_or(DEFAULT_ROUTE_LABEL)
    }
}

/// What the unnamed routes are called in logs and metrics.
pub const DEFAULT_ROUTE_LABEL: &str = "default";

/// What a path is.
#[derive(Debug, Clone, Copy)]
pub enum Route<'a> {
    Callback(Target<'a>),
    /// `{events_path}/{name}` or `{inbound_path}/{name}` with a name no route has: a
    /// configuration error on the sender's side (a wrong URL), answered 404.
    UnknownWebhook {
        kind: Kind,
        name: &'a str,
    },
    Health,
    NotFound,
}

impl Route<'_> {
    /// The callback kind, if the path is one.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Route::Callback(target) => Some(target.kind),
            Route::UnknownWebhook { kind, .. } => Some(*kind),
            Route::Health | Route::NotFound => None,
        }
    }
}

fn normalize(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

fn strip_stage<'a>(path: &'a str, stage: Option<&str>) -> Option<&'a str> {
    let stage = stage.filter(|s| !s.is_empty() && *s != "$default")?;
    let rest = path.strip_prefix('/')?.strip_prefix(stage)?;
    rest.starts_with('/').then_some(rest)
}

/// The default route of a kind, configured by the environment.
fn default_target(config: &Config, kind: Kind) -> Target<'_> {
    let (public_key, previous_key, basic_auth) = match kind {
        Kind::Inbound => (
            config.inbound_public_key.as_ref(),
            config.inbound_previous_key.as_ref(),
            config.inbound_basic_auth.as_ref(),
        ),
        _ => (
            config.events_public_key.as_ref(),
            config.events_previous_key.as_ref(),
            None,
        ),
    };
    Target {
        kind,
        name: None,
        public_key,
        previous_key,
        basic_auth,
        queue_url: None,
        message_group: config.message_group.as_ref(),
    }
}

fn named_target(route: &NamedRoute) -> Target<'_> {
    Target {
        kind: route.kind,
        name: Some(&route.name),
        public_key: route.public_key.as_ref(),
        previous_key: route.previous_key.as_ref(),
        basic_auth: route.basic_auth.as_ref(),
        queue_url: route.queue_url.as_deref(),
        message_group: route.message_group.as_ref(),
    }
}

/// Routes a request path (query string already removed). Exact paths win over named routes,
/// so a base path that is a prefix of the other kind's (`/sendgrid` and `/sendgrid/inbound`)
/// still routes both.
pub fn route<'a>(config: &'a Config, path: &'a str, stage: Option<&str>) -> Route<'a> {
    let path = normalize(path);
    let candidates = [Some(path), strip_stage(path, stage).map(normalize)];
    let bases = [
        (Kind::Events, config.events_path.as_str()),
        (Kind::Inbound, config.inbound_path.as_str()),
    ];
    for candidate in candidates.into_iter().flatten() {
        if let Some((kind, _)) = bases.iter().find(|(_, base)| candidate == *base) {
            return Route::Callback(default_target(config, *kind));
        }
        if config.health_path.as_deref() == Some(candidate) {
            return Route::Health;
        }
    }
    for candidate in candidates.into_iter().flatten() {
        for (kind, base) in bases {
            let Some(name) = candidate
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|name| !name.contains('/'))
            else {
                continue;
            };
            return match config
                .routes
                .iter()
                .find(|r| r.kind == kind && r.name == name)
            {
                Some(named) => Route::Callback(named_target(named)),
                None => Route::UnknownWebhook { kind, name },
            };
        }
    }
    Route::NotFound
}

/// The queue for a route: its own when it has one, else its kind's.
pub fn target_queue_url<'a>(
    config: &'a Config,
    target: &Target<'a>,
    stage_variables: &'a HashMap<String, String>,
) -> Option<&'a str> {
    target
        .queue_url
        .or_else(|| queue_url(config, target.kind, stage_variables))
}

/// The queue for a kind: the stage variable when set, else the environment's.
pub fn queue_url<'a>(
    config: &'a Config,
    kind: Kind,
    stage_variables: &'a HashMap<String, String>,
) -> Option<&'a str> {
    let (var, default) = match kind {
        Kind::Events => (STAGE_VAR_EVENTS_QUEUE, &config.events_queue_url),
        Kind::Inbound => (STAGE_VAR_INBOUND_QUEUE, &config.inbound_queue_url),
        // No route posts an application's own messages.
        Kind::Message => return None,
    };
    stage_variables
        .get(var)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .or(default.as_deref())
}

/// The word used for a kind in logs, S3 keys and the kind attribute.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Events => "events",
        Kind::Inbound => "inbound",
        Kind::Message => "message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind and name of a callback route, or what else it is.
    fn what(route: Route<'_>) -> String {
        match route {
            Route::Callback(t) => format!("{:?}/{}", t.kind, t.label()),
            Route::UnknownWebhook { kind, name } => format!("unknown {kind:?}/{name}"),
            Route::Health => "health".into(),
            Route::NotFound => "not found".into(),
        }
    }

    #[test]
    fn matches_with_and_without_stage() {
        let config = Config::default();
        let at = |path: &str, stage: Option<&str>| what(route(&config, path, stage));
        assert_eq!(at("/sendgrid/events", None), "Events/default");
        assert_eq!(at("/sendgrid/events/", Some("prod")), "Events/default");
        assert_eq!(at("/prod/sendgrid/events", Some("prod")), "Events/default");
        assert_eq!(
            at("/prod/sendgrid/inbound", Some("prod")),
            "Inbound/default"
        );
        assert_eq!(at("/dev/sendgrid/events", Some("prod")), "not found");
        assert_eq!(at("/prodx/sendgrid/events", Some("prod")), "not found");
        assert_eq!(at("/sendgrid", None), "not found");
        assert_eq!(at("/healthz", None), "health");
        assert_eq!(at("/", None), "not found");
    }

    #[test]
    fn named_routes_match_under_their_kinds_base_path() {
        let config = Config {
            routes: crate::routes::parse(
                "MAILROOM_ROUTES",
                r#"{"events": {"marketing": {"queue_url": "q-m"}}, "inbound": {"support": {}}}"#,
            )
            .unwrap(),
            ..Config::default()
        };
        let at = |path: &str, stage: Option<&str>| what(route(&config, path, stage));
        assert_eq!(at("/sendgrid/events/marketing", None), "Events/marketing");
        assert_eq!(
            at("/prod/sendgrid/events/marketing/", Some("prod")),
            "Events/marketing"
        );
        assert_eq!(at("/sendgrid/inbound/support", None), "Inbound/support");
        assert_eq!(
            at("/sendgrid/events/support", None),
            "unknown Events/support"
        );
        assert_eq!(
            at("/sendgrid/inbound/marketing", None),
            "unknown Inbound/marketing"
        );
        assert_eq!(at("/sendgrid/events/marketing/x", None), "not found");
        let Route::Callback(marketing) = route(&config, "/sendgrid/events/marketing", None) else {
            panic!("marketing is a route");
        };
        assert_eq!(marketing.queue_url, Some("q-m"));
    }

    #[test]
    fn a_base_path_that_prefixes_the_other_still_routes_both() {
        let config = Config {
            events_path: "/sendgrid".into(),
            ..Config::default()
        };
        let at = |path: &str| what(route(&config, path, None));
        assert_eq!(at("/sendgrid"), "Events/default");
        assert_eq!(at("/sendgrid/inbound"), "Inbound/default");
        assert_eq!(at("/sendgrid/other"), "unknown Events/other");
    }

    #[test]
    fn stage_variable_overrides_environment() {
        let config = Config {
            events_queue_url: Some("env-events".into()),
            ..Config::default()
        };
        let mut vars = HashMap::new();
        assert_eq!(queue_url(&config, Kind::Events, &vars), Some("env-events"));
        assert_eq!(queue_url(&config, Kind::Inbound, &vars), None);
        vars.insert(STAGE_VAR_EVENTS_QUEUE.to_owned(), "stage-events".to_owned());
        vars.insert(STAGE_VAR_INBOUND_QUEUE.to_owned(), " ".to_owned());
        assert_eq!(
            queue_url(&config, Kind::Events, &vars),
            Some("stage-events")
        );
        assert_eq!(queue_url(&config, Kind::Inbound, &vars), None);
    }
}
