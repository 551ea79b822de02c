//! `mailroom maintain`: one maintenance run of the event partitions and of retention, for a
//! systemd timer (`systemd/mailroom-maintain.timer`) or by hand. The worker runs the same
//! thing periodically (`[retention] maintenance_interval_secs`); an advisory lock makes sure
//! only one of them works at a time, so running both is safe. What a run does and why:
//! `crate::store::partitions`, docs/retention.md.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::config::RetentionConfig;
use crate::store::{maintain, MaintenancePlan, MaintenanceReport, Store};

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Stop moving rows of a pre-partitioning events table after this many seconds (the next run
    /// goes on); default: until it is empty.
    #[arg(long)]
    pub legacy_budget_secs: Option<u64>,
}

/// The plan a run follows, from `[retention]`.
pub fn plan(retention: &RetentionConfig, legacy_budget: Option<Duration>) -> MaintenancePlan {
    MaintenancePlan {
        events_days: retention.events_days,
        inbound_days: retention.inbound_days,
        premake_weeks: retention.premake_weeks,
        legacy_budget,
    }
}

/// One run; prints what it did. Another process already maintaining is not an error.
pub async fn run(store: &Store, retention: &RetentionConfig, args: &MaintainArgs) -> Result<()> {
    store
        .check_schema()
        .await
        .context("checking the database schema")?;
    let plan = plan(retention, args.legacy_budget_secs.map(Duration::from_secs));
    match maintain(store.pool(), &plan, chrono::Utc::now())
        .await
        .context("maintaining the event partitions")?
    {
        None => println!("another process is maintaining this database: nothing done"),
        Some(report) => println!("{}", summary(&report)),
    }
    Ok(())
}

/// One line per kind of change, for the terminal and the worker's log.
pub fn summary(r: &MaintenanceReport) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "created: {} ({} rows moved from the default partition)\n\
         dropped (retention): {}\n\
         pre-partitioning table: {} rows moved{}\n\
         inbound emails deleted (retention): {}\n\
         default partition: about {} rows\n\
         longest DDL statement: {} ms, lock waits retried: {}",
        list(&r.created),
        r.moved_from_default,
        list(&r.dropped),
        r.legacy_moved,
        if r.legacy_remaining {
            ", more remain (the next run goes on)"
        } else {
            ""
        },
        r.inbound_deleted,
        r.default_rows_estimate,
        r.longest_ddl.as_millis(),
        r.lock_retries,
    )
}
