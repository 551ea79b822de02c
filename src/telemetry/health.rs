//! Liveness and readiness. `/health` answers 200 while the process serves HTTP at all (a hung
//! runtime does not). `/ready` answers 200 only while this process is receiving (READY reached,
//! not quiet, not draining) and its dependencies answer: Postgres (`select 1`) and SQS
//! (GetQueueAttributes on the first queue). Dependency probes are cached for [`READY_CACHE`]
//! so a scraping load balancer cannot turn into load on Postgres or SQS.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use crate::store::Store;

/// How long a dependency probe result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(3);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Receiving = 1,
    Draining = 2,
}

/// What the readiness probe reaches.
pub struct Probe {
    pub store: Store,
    pub sqs: aws_sdk_sqs::Client,
    /// Queue label and URL to read attributes of.
    pub queue: (String, String),
}

pub struct Health {
    phase: AtomicU8,
    quiet: watch::Receiver<bool>,
    probe: Option<Probe>,
    cache: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Health {
    pub fn new(quiet: watch::Receiver<bool>, probe: Option<Probe>) -> Arc<Self> {
        Arc::new(Self {
            phase: AtomicU8::new(Phase::Starting as u8),
            quiet,
            probe,
            cache: Mutex::new(None),
        })
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Receiving,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    /// Receiving is paused (SIGUSR1/SIGTSTP).
    pub fn is_quiet(&self) -> bool {
        *self.quiet.borrow()
    }

    /// Ok when this process should get traffic; Err with the reason otherwise.
    pub async fn ready(&self) -> Result<(), String> {
        match self.phase() {
            Phase::Starting => return Err("starting: not receiving yet".into()),
            Phase::Draining => return Err("draining: shutting down".into()),
            Phase::Receiving => {}
        }
        if *self.quiet.borrow() {
            return Err("quiet: receiving is paused (SIGUSR1/SIGTSTP; SIGUSR2 resumes)".into());
        }
        let Some(probe) = &self.probe else {
            return Ok(());
        };
        let mut cache = self.cache.lock().await;
        if let Some((at, result)) = cache.as_ref() {
            if at.elapsed() < READY_CACHE {
                return result.clone();
            }
        }
        let result = check(probe).await;
        *cache = Some((Instant::now(), result.clone()));
        result
    }
}

async fn check(probe: &Probe) -> Result<(), String> {
    let pg = tokio::time::timeout(PROBE_TIMEOUT, crate::store::admin::ping(probe.store.pool()));
    let sqs = tokio::time::timeout(
        PROBE_TIMEOUT,
        crate::sqs::attributes(&probe.sqs, &probe.queue.1),
    );
    let (pg, sqs) = tokio::join!(pg, sqs);
    let mut problems = Vec::new();
    match pg {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            super::count_postgres_error("ready");
            problems.push(format!("postgres: {e}"));
        }
        Err(_) => {
            super::count_postgres_error("ready");
            problems.push("postgres: no answer within 2 s".into());
        }
    }
    let sqs_problem = match sqs {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("sqs queue \"{}\": {e}", probe.queue.0)),
        Err(_) => Some(format!(
            "sqs queue \"{}\": no answer within 2 s",
            probe.queue.0
        )),
    };
    if let Some(p) = sqs_problem {
        metrics::counter!("mailroom_sqs_errors_total", "queue" => probe.queue.0.clone(), "op" => "ready").increment(1);
        problems.push(p);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
