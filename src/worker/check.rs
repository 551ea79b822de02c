//! The preflight: every validation `run` makes before it consumes anything, as lines that
//! `mailroom check` prints. `run` calls the same function and refuses to start unless it passed,
//! so `ExecStartPre=mailroom check` fails exactly when `run` would.

use std::fmt;

use crate::acker::QueueRef;
use crate::config::{Config, DeadLetterMode};
use crate::engine::resolve_queue;
use crate::handler::Registry;
use crate::s3::Bodies;
use crate::store::Store;
use crate::{sqs, telemetry};

use super::registration::build_handlers;
use super::Worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

/// One thing checked, and how it went.
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub status: CheckStatus,
    pub text: String,
}

impl fmt::Display for CheckLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            CheckStatus::Ok => "ok  ",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.text)
    }
}

/// Everything the preflight checked, in order.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub lines: Vec<CheckLine>,
}

impl CheckReport {
    fn push(&mut self, status: CheckStatus, text: impl Into<String>) {
        self.lines.push(CheckLine {
            status,
            text: text.into(),
        });
    }
    fn ok(&mut self, text: impl Into<String>) {
        self.push(CheckStatus::Ok, text);
    }
    fn warn(&mut self, text: impl Into<String>) {
        self.push(CheckStatus::Warn, text);
    }
    fn fail(&mut self, text: impl Into<String>) {
        self.push(CheckStatus::Fail, text);
    }

    /// No line failed (warnings pass).
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.status != CheckStatus::Fail)
    }

    /// The failed lines' texts.
    pub fn failures(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.status == CheckStatus::Fail)
            .map(|l| l.text.clone())
            .collect()
    }
}

/// What a passed preflight leaves ready for the engine.
pub struct Prepared {
    pub store: Store,
    pub registry: Registry,
    /// Every configured queue, resolved once, in config order.
    pub queues: Vec<QueueRef>,
    pub sqs: aws_sdk_sqs::Client,
    pub bodies: Bodies,
}

impl Worker {
    /// Run every check `run` makes before it starts consuming: config warnings, the telemetry
    /// address, every handler's config section (and that every queue's handler is registered),
    /// Postgres and its schema, every queue. Each check runs even when an earlier one failed, so
    /// one `check` shows everything to fix. The parts are returned when they could all be built
    /// (the report may still have failed lines: `run` refuses unless [`CheckReport::passed`]).
    pub async fn preflight(&self, config: &Config) -> (CheckReport, Option<Prepared>) {
        let mut report = CheckReport::default();
        for warning in config.warnings() {
            report.warn(warning);
        }
        if let Some(listen) = &config.telemetry.listen {
            match telemetry::parse_listen(listen) {
                Ok(addr) => report.ok(format!("telemetry will listen on {addr}")),
                Err(err) => report.fail(err.to_string()),
            }
        }

        // Handlers first, with a store that connects on first use: a bad handler section is
        // reported even while Postgres is down.
        let url = config.store.database_url.as_deref().unwrap_or_default();
        let store = match Store::connect_lazy(url, config.store.max_connections) {
            Ok(store) => Some(store),
            Err(err) => {
                report.fail(format!("store.database_url: {err}"));
                None
            }
        };
        let registry = store.as_ref().map(|store| {
            let (registry, problems) =
                build_handlers(&self.registrations, &self.sendgrid_hooks, config, store);
            if problems.is_empty() {
                report.ok(format!("handlers: {}", self.handler_names().join(", ")));
            }
            for problem in problems {
                report.fail(problem.to_string());
            }
            registry
        });

        if let Some(store) = &store {
            match Store::diagnose(url).await {
                Err(err) => report.fail(format!("postgres: {err}")),
                Ok(()) => match store.check_schema().await {
                    Ok(()) => report.ok("postgres reachable, schema up to date"),
                    Err(err) => report.fail(format!("postgres schema: {err}")),
                },
            }
        }

        let aws = sqs::aws_config(&config.sqs).await;
        let client = sqs::client(&aws);
        let via = aws
            .endpoint_url()
            .map(|e| format!(" via the SQS endpoint {e}"))
            .unwrap_or_default();
        let mut queues = Vec::with_capacity(config.queues.len());
        for q in &config.queues {
            let queue = match resolve_queue(&client, q).await {
                Ok(queue) => queue,
                Err(err) => {
                    report.fail(format!("{err}{via}"));
                    continue;
                }
            };
            match sqs::attributes(&client, &queue.url).await {
                Ok(attrs) => {
                    let redrive = attrs.contains_key("RedrivePolicy");
                    report.ok(format!(
                        "queue \"{}\" reachable at {} ({})",
                        q.name,
                        queue.url,
                        if redrive {
                            "with a redrive policy"
                        } else {
                            "no redrive policy"
                        }
                    ));
                    if q.dead_letter == DeadLetterMode::Sqs && !redrive {
                        report.fail(format!(
                            "queue \"{}\": dead_letter = \"sqs\" needs a redrive policy on the queue",
                            q.name
                        ));
                    }
                }
                Err(err) => {
                    report.fail(format!("queue \"{}\" at {}{via}: {err}", q.name, queue.url))
                }
            }
            queues.push(queue);
        }

        let prepared = match (store, registry) {
            (Some(store), Some(registry)) if queues.len() == config.queues.len() => {
                Some(Prepared {
                    store,
                    registry,
                    queues,
                    sqs: client,
                    bodies: Bodies::new(&aws, aws.endpoint_url().is_some())
                        .restricted_to(&config.s3.buckets),
                })
            }
            _ => None,
        };
        (report, prepared)
    }

    /// Just the handlers, built from their sections with `store` (for `dead-letters replay`,
    /// which needs no queue).
    #[doc(hidden)]
    pub fn build_registry(
        &self,
        config: &Config,
        store: &Store,
    ) -> Result<Registry, Vec<super::SetupError>> {
        let (registry, problems) =
            build_handlers(&self.registrations, &self.sendgrid_hooks, config, store);
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(problems)
        }
    }
}
