//! Handler registrations: a name, and a factory that turns the handler's own config section
//! (`[handlers.NAME]`) into a running handler. Factories are called at start (and by `check`
//! and `dead-letters replay`), never per message.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Config;
use crate::handler::{Handler, Registry};
use crate::handlers::{SendgridHandler, SendgridHandlerConfig, SendgridHook, SENDGRID_HANDLER};
use crate::store::Store;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Factory =
    Box<dyn Fn(&toml::Value, &Setup<'_>) -> Result<Arc<dyn Handler>, FactoryError> + Send + Sync>;

enum FactoryError {
    Section(toml::de::Error),
    Build(BoxError),
}

pub(crate) struct Registration {
    name: String,
    factory: Factory,
}

impl Registration {
    pub(crate) fn new<C, H, E, F>(name: String, factory: F) -> Self
    where
        C: serde::de::DeserializeOwned,
        H: Handler,
        E: Into<BoxError>,
        F: Fn(C, &Setup<'_>) -> Result<H, E> + Send + Sync + 'static,
    {
        Self {
            name,
            factory: Box::new(move |section, setup| {
                let config: C = section.clone().try_into().map_err(FactoryError::Section)?;
                let handler = factory(config, setup).map_err(|e| FactoryError::Build(e.into()))?;
                Ok(Arc::new(handler) as Arc<dyn Handler>)
            }),
        }
    }

    /// The built-in `"sendgrid"` handler, with the hooks registered on the worker.
    pub(crate) fn sendgrid() -> Self {
        Self::new(
            SENDGRID_HANDLER.to_string(),
            |config: SendgridHandlerConfig, setup: &Setup<'_>| {
                let mut handler = SendgridHandler::new(setup.store(), config)?;
                for hook in setup.sendgrid_hooks {
                    handler = handler.with_hook(hook.clone());
                }
                Ok::<_, crate::handlers::SendgridConfigError>(handler)
            },
        )
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// What a handler factory gets besides its own config section.
pub struct Setup<'a> {
    name: &'a str,
    store: &'a Store,
    config: &'a Config,
    sendgrid_hooks: &'a [Arc<dyn SendgridHook>],
}

impl Setup<'_> {
    /// The name the handler is registered under.
    pub fn name(&self) -> &str {
        self.name
    }

    /// Mailroom's store: begin a transaction with [`Store::begin`] and commit it before
    /// answering `Done`. It connects on first use, so building a handler needs no database.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// The whole worker config (queues, concurrency), read-only.
    pub fn config(&self) -> &Config {
        self.config
    }
}

/// A handler that could not be set up. `check` prints each; `run` refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("[handlers.{handler}]: {source}")]
    Section {
        handler: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("handler \"{handler}\": {source}")]
    Build {
        handler: String,
        #[source]
        source: BoxError,
    },
    #[error("[handlers.{section}] is not a registered handler (registered: {known})")]
    UnknownSection { section: String, known: String },
    #[error("queue \"{queue}\": no handler named \"{handler}\" (registered: {known})")]
    UnknownHandler {
        queue: String,
        handler: String,
        known: String,
    },
    #[error("handler \"{0}\" is registered twice")]
    Duplicate(String),
}

/// Build every registered handler from its section, and check that every section and every
/// queue's `handler` names a registered handler. All problems are returned at once.
pub(crate) fn build_handlers(
    registrations: &[Registration],
    sendgrid_hooks: &[Arc<dyn SendgridHook>],
    config: &Config,
    store: &Store,
) -> (Registry, Vec<SetupError>) {
    let mut registry = Registry::new();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for r in registrations {
        if !names.insert(r.name.as_str()) {
            problems.push(SetupError::Duplicate(r.name.clone()));
        }
    }
    let known = names.iter().copied().collect::<Vec<_>>().join(", ");
    for section in config.handlers.keys() {
        if !names.contains(section.as_str()) {
            problems.push(SetupError::UnknownSection {
                section: section.clone(),
                known: known.clone(),
            });
        }
    }
    for q in &config.queues {
        if !names.contains(q.handler.as_str()) {
            problems.push(SetupError::UnknownHandler {
                queue: q.name.clone(),
                handler: q.handler.clone(),
                known: known.clone(),
            });
        }
    }
    let empty = toml::Value::Table(toml::Table::new());
    for r in registrations {
        let setup = Setup {
            name: &r.name,
            store,
            config,
            sendgrid_hooks,
        };
        let section = config.handler_section(&r.name).unwrap_or(&empty);
        match (r.factory)(section, &setup) {
            Ok(handler) => {
                registry.register(r.name.clone(), handler);
            }
            Err(FactoryError::Section(source)) => problems.push(SetupError::Section {
                handler: r.name.clone(),
                source,
            }),
            Err(FactoryError::Build(source)) => problems.push(SetupError::Build {
                handler: r.name.clone(),
                source,
            }),
        }
    }
    (registry, problems)
}
