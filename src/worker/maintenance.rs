//! The worker's maintenance task: event partitions created ahead and retention applied at
//! start and every `[retention] maintenance_interval_secs`, so an installation without a timer
//! still never runs out of partitions. Failures are logged and retried at the next interval;
//! they never stop the worker (events without a partition land in the default one, nothing is
//! lost). The advisory lock inside `store::maintain` lets N workers and `mailroom maintain`
//! share one database.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::maintain::{plan, summary};
use crate::config::RetentionConfig;
use crate::store::{maintain, Store};

/// How long one run in the worker may spend moving a pre-partitioning table (the next run
/// goes on), so a large conversion proceeds in slices.
const LEGACY_BUDGET: Duration = Duration::from_secs(120);

/// Start the task; `None` when `maintenance_interval_secs` is 0.
pub(crate) fn spawn(
    store: &Store,
    retention: &RetentionConfig,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    if retention.maintenance_interval_secs == 0 {
        return None;
    }
    let interval = Duration::from_secs(retention.maintenance_interval_secs);
    let plan = plan(retention, Some(LEGACY_BUDGET));
    let pool = store.pool().clone();
    Some(tokio::spawn(async move {
        loop {
            let run = maintain(&pool, &plan, chrono::Utc::now());
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                result = run => result,
            };
            match next {
                Ok(Some(report)) => {
                    let remaining = report.legacy_remaining;
                    tracing::info!("maintenance done: {}", summary(&report).replace('\n', "; "));
                    if remaining {
                        // Go on moving the old table soon rather than in an hour.
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        }
                    }
                }
                Ok(None) => tracing::debug!("maintenance: another process holds the lock"),
                Err(e) => tracing::warn!("maintenance failed (retried in {interval:?}): {e}"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }))
}
