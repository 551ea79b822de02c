//! Which callback a path is, and which queue it goes to.
//!
//! API Gateway hands the path over in different forms: REST APIs without a custom domain give
//! the resource path in `path` but the stage-prefixed path in `requestContext.path`; HTTP APIs
//! put the stage in `rawPath` unless it is `$default`. So a configured path matches with or
//! without a leading `/<stage>` segment, and trailing slashes are ignored.

use std::collections::HashMap;

use mailroom_envelope::Kind;

use crate::config::Config;

/// Stage variable that overrides `MAILROOM_EVENTS_QUEUE_URL` for one stage.
pub const STAGE_VAR_EVENTS_QUEUE: &str = "eventsQueueUrl";
/// Stage variable that overrides `MAILROOM_INBOUND_QUEUE_URL` for one stage.
pub const STAGE_VAR_INBOUND_QUEUE: &str = "inboundQueueUrl";

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Callback(Kind),
    Health,
    NotFound,
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

/// Routes a request path (query string already removed).
pub fn route(config: &Config, path: &str, stage: Option<&str>) -> Route {
    let path = normalize(path);
    let candidates = [Some(path), strip_stage(path, stage).map(normalize)];
    for candidate in candidates.into_iter().flatten() {
        if candidate == config.events_path {
            return Route::Callback(Kind::Events);
        }
        if candidate == config.inbound_path {
            return Route::Callback(Kind::Inbound);
        }
        if config.health_path.as_deref() == Some(candidate) {
            return Route::Health;
        }
    }
    Route::NotFound
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

    #[test]
    fn matches_with_and_without_stage() {
        let config = Config::default();
        let events = Route::Callback(Kind::Events);
        assert_eq!(route(&config, "/sendgrid/events", None), events);
        assert_eq!(route(&config, "/sendgrid/events/", Some("prod")), events);
        assert_eq!(
            route(&config, "/prod/sendgrid/events", Some("prod")),
            events
        );
        assert_eq!(
            route(&config, "/prod/sendgrid/inbound", Some("prod")),
            Route::Callback(Kind::Inbound)
        );
        assert_eq!(
            route(&config, "/dev/sendgrid/events", Some("prod")),
            Route::NotFound
        );
        assert_eq!(
            route(&config, "/prodx/sendgrid/events", Some("prod")),
            Route::NotFound
        );
        assert_eq!(route(&config, "/sendgrid", None), Route::NotFound);
        assert_eq!(route(&config, "/healthz", None), Route::Health);
        assert_eq!(route(&config, "/", None), Route::NotFound);
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
