//! [`Worker`]: the library's front door. It owns the whole assembly of a Mailroom process
//! (config, store, AWS clients, queue resolution, handlers and their config sections, telemetry,
//! systemd notify, signals, graceful shutdown), so a binary (ours or a user's) only registers
//! handlers and calls [`Worker::main`] or [`Worker::run`].
//!
//! Why one builder for every binary: `mailroom check` must refuse exactly what `mailroom run`
//! would refuse, for custom handlers too. Both go through [`Worker::preflight`], which runs every
//! validation in one place and yields the prepared parts (store, handlers, resolved queues) that
//! `run` then uses, so the two cannot drift.

mod check;
mod maintenance;
mod registration;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::{Controls, Engine, EngineError, EngineParts, ShutdownReport};
use crate::handler::Handler;
use crate::handlers::SendgridHook;
use crate::notify::{self, Liveness, Notifier};
use crate::signals;
use crate::telemetry::{self, Health, Phase, Probe};

pub use check::{CheckLine, CheckReport, CheckStatus, Prepared};
use registration::Registration;
pub use registration::{Setup, SetupError};

pub use crate::config::ENV_TELEMETRY_LISTEN;

/// A Mailroom worker: the handlers it runs, and how to run them.
///
/// ```no_run
/// use mailroom::{BoxFuture, Handler, Job, Outcome, Setup, Worker};
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct OrdersConfig { table: String }
///
/// struct Orders { config: OrdersConfig }
///
/// impl Handler for Orders {
///     fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
///         Box::pin(async move { jobs.iter().map(|_| Outcome::Done).collect() })
///     }
/// }
///
/// fn main() -> std::process::ExitCode {
///     Worker::new()
///         .handler("orders", |config: OrdersConfig, _: &Setup| {
///             Ok::<_, std::convert::Infallible>(Orders { config })
///         })
///         .main()
/// }
/// ```
pub struct Worker {
    registrations: Vec<Registration>,
    sendgrid_hooks: Vec<Arc<dyn SendgridHook>>,
}

impl Default for Worker {
    fn default() -> Self {
        Self::new()
    }
}

impl Worker {
    /// A worker with Mailroom's built-in `"sendgrid"` handler (configured by
    /// `[handlers.sendgrid]`).
    pub fn new() -> Self {
        Self {
            registrations: vec![Registration::sendgrid()],
            sendgrid_hooks: Vec::new(),
        }
    }

    /// Register a handler under `name` (what a queue's `handler = "..."` names). At start the
    /// `[handlers.NAME]` section of the config (an empty table when absent) is deserialized into
    /// `C` and `factory` builds the handler from it; an error from either stops `run` and fails
    /// `check`, naming the section. Use `#[serde(deny_unknown_fields)]` on `C` so a typo in the
    /// section is an error, not a silent default.
    pub fn handler<C, H, E, F>(mut self, name: impl Into<String>, factory: F) -> Self
    where
        C: serde::de::DeserializeOwned,
        H: Handler,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Fn(C, &Setup<'_>) -> Result<H, E> + Send + Sync + 'static,
    {
        self.registrations
            .push(Registration::new(name.into(), factory));
        self
    }

    /// Run `hook` inside the transaction of every batch the `"sendgrid"` handler stores, with
    /// the events and emails that batch stored for the first time. Hooks run in the order
    /// added.
    pub fn sendgrid_hook(mut self, hook: impl SendgridHook) -> Self {
        self.sendgrid_hooks.push(Arc::new(hook));
        self
    }

    /// The registered handler names, sorted.
    pub fn handler_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.registrations.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The command line (`run`, `check`, `migrate`, `queues`, `dead-letters`, `send`) with these
    /// handlers: what a custom binary's `main` calls. Parses the arguments, starts the runtime,
    /// and returns the exit code.
    pub fn main(self) -> std::process::ExitCode {
        crate::malloc_tuning::limit_arenas();
        let cli = <crate::cli::Cli as clap::Parser>::parse();
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(crate::cli::dispatch(cli, self)),
            Err(e) => {
                eprintln!("mailroom: error: starting the async runtime: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }

    /// Run until SIGTERM or SIGINT (SIGTSTP/SIGUSR1 make it quiet, SIGCONT/SIGUSR2 resume),
    /// telling systemd what it does when `NOTIFY_SOCKET` is set. Fails before consuming anything
    /// if [`Worker::preflight`] finds a problem.
    pub async fn run(self, config: Config) -> Result<ShutdownReport, WorkerError> {
        let signals = signals::install().map_err(WorkerError::Signals)?;
        let shutdown = signals.shutdown;
        self.run_with(
            config,
            async {
                let _ = shutdown.await;
            },
            signals.quiet,
            Notifier::from_env(),
        )
        .await
    }

    /// Run until `shutdown` resolves (no signal handlers, no systemd): for tests and for
    /// programs that embed the worker and decide themselves when it stops.
    pub async fn run_until(
        self,
        config: Config,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ShutdownReport, WorkerError> {
        let (_quiet_tx, quiet) = watch::channel(false);
        self.run_with(config, shutdown, quiet, Notifier::new(None))
            .await
    }

    async fn run_with(
        self,
        config: Config,
        shutdown: impl Future<Output = ()>,
        quiet: watch::Receiver<bool>,
        notifier: Notifier,
    ) -> Result<ShutdownReport, WorkerError> {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        let liveness = Liveness::default();
        let armed = Arc::new(AtomicBool::new(false));
        let stop_background = CancellationToken::new();
        // The stop token must fire on every exit path, errors included.
        let _stop_guard = stop_background.clone().drop_guard();
        if let (true, Some(period)) = (notifier.enabled(), notify::watchdog_period()) {
            tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
            tokio::spawn(notify::watchdog(
                notifier.clone(),
                period,
                liveness.clone(),
                armed.clone(),
                stop_background.clone(),
            ));
        }
        let metrics = match &config.telemetry.listen {
            Some(_) => {
                let handle = telemetry::install_recorder().map_err(WorkerError::Recorder)?;
                telemetry::register_zeroes(&config);
                Some(handle)
            }
            None => None,
        };

        let (report, prepared) = self.preflight(&config).await;
        let Some(prepared) = prepared.filter(|_| report.passed()) else {
            return Err(WorkerError::Preflight(report));
        };
        let Prepared {
            store,
            registry,
            queues,
            sqs: sqs_client,
            bodies,
        } = prepared;

        let health = Health::new(
            quiet.clone(),
            queues.first().map(|q| Probe {
                store: store.clone(),
                sqs: sqs_client.clone(),
                queue: (q.name.to_string(), q.url.to_string()),
            }),
        );
        if let (Some(listen), Some(metrics)) = (&config.telemetry.listen, metrics) {
            let addr = telemetry::parse_listen(listen).map_err(WorkerError::Telemetry)?;
            let status = telemetry::StatusSource::new(
                config
                    .queues
                    .iter()
                    .map(|q| (q.name.clone(), q.handler.clone()))
                    .collect(),
                config.forwards.iter().map(|f| f.name.clone()).collect(),
                Some(store.pool()),
            );
            telemetry::serve(
                addr,
                metrics,
                health.clone(),
                status,
                stop_background.clone(),
            )
            .await
            .map_err(WorkerError::Telemetry)?;
            tokio::spawn(telemetry::poll_queue_depths(
                sqs_client.clone(),
                queues
                    .iter()
                    .map(|q| (q.name.to_string(), q.url.to_string()))
                    .collect(),
                stop_background.clone(),
            ));
        }
        let forwarders =
            crate::forward::spawn_all(&store, &config.forwards, stop_background.clone());
        let maintenance = maintenance::spawn(&store, &config.retention, stop_background.clone());
        tokio::spawn(report_quiet(
            quiet.clone(),
            notifier.clone(),
            stop_background.clone(),
        ));
        let engine = Engine::new(EngineParts {
            config,
            sqs: sqs_client,
            bodies,
            registry,
            dead_letters: Arc::new(telemetry::CountingDeadLetters(Arc::new(store))),
            queues,
        })
        .map_err(WorkerError::Engine)?;
        let (ready_health, stopping_health) = (health.clone(), health);
        let (ready_notifier, stopping_notifier) = (notifier.clone(), notifier);
        let report = engine
            .run(
                shutdown,
                Controls {
                    quiet,
                    on_ready: Box::new(move || {
                        ready_health.set_phase(Phase::Receiving);
                        armed.store(true, Ordering::Relaxed);
                        ready_notifier.notify_or_log("READY=1\nSTATUS=receiving");
                    }),
                    on_stopping: Box::new(move || {
                        stopping_health.set_phase(Phase::Draining);
                        stopping_notifier.notify_or_log("STOPPING=1\nSTATUS=draining");
                    }),
                    liveness,
                },
            )
            .await;
        stop_background.cancel();
        for forwarder in forwarders {
            // Each stops at once on cancel (what it did not acknowledge is delivered again).
            let _ = forwarder.await;
        }
        if let Some(maintenance) = maintenance {
            // Stops at once on cancel; an unfinished step's transaction rolls back.
            let _ = maintenance.await;
        }
        // The last spans (the drain's acks) go out before the process ends.
        tokio::task::spawn_blocking(mailroom_otel::shutdown)
            .await
            .ok();
        Ok(report)
    }
}

/// Quiet mode shows in `systemctl status`: a new `STATUS=` each time it changes.
async fn report_quiet(
    mut quiet: watch::Receiver<bool>,
    notifier: Notifier,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = quiet.changed() => if changed.is_err() { return },
        }
        let status = if *quiet.borrow() {
            "STATUS=quiet: not receiving (SIGCONT or SIGUSR2 resumes)"
        } else {
            "STATUS=receiving"
        };
        notifier.notify_or_log(status);
    }
}

/// Why the worker did not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A check failed; the report says which (the same lines `mailroom check` prints).
    #[error("{}", .0.failures().join("; "))]
    Preflight(CheckReport),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Recorder(telemetry::RecorderError),
    #[error(transparent)]
    Telemetry(telemetry::ServerError),
    #[error(transparent)]
    Engine(EngineError),
}
