//! The process-wide Prometheus recorder. Histograms get explicit buckets (Prometheus
//! histograms aggregate across the N worker processes; summaries would not).

use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("cannot install the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
}

const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 8.0, 10.0];
/// Messages per handler batch: up to `max_batch_messages` (100 by default, any number set).
const HANDLER_BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 80.0, 100.0, 200.0, 500.0];

/// Install the recorder (once per process) and keep its histograms tidy in the background.
pub fn install_recorder() -> Result<PrometheusHandle, RecorderError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("mailroom_ack_batch_size".into()),
            BATCH_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("mailroom_handler_batch_messages".into()),
            HANDLER_BATCH_BUCKETS,
        )?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
