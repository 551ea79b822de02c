//! The worker's maintenance task, in the real binary against real Postgres and SQS: `mailroom
//! run` creates a missing week partition at start (so an installation without the timer never
//! runs out of partitions), and maintenance in the worker and `mailroom maintain` share one
//! database safely (the advisory lock).

mod support;

use support::*;

#[tokio::test]
async fn the_worker_creates_missing_week_partitions_at_start() {
    let admin = admin_url();
    let name = unique("retention_worker");
    let db_url = create_db(&admin, &name).await;
    let sqs = sqs().await;
    let queue = create_queue(&sqs, &unique_dashed("retention-worker"), 30, None).await;
    let dir = temp_dir("retention-worker");
    let config = dir.join("mailroom.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndatabase_url = \"{db_url}\"\n[sqs]\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
             [retention]\nevents_days = 60\nmaintenance_interval_secs = 3600\n\
             [[queue]]\nname = \"events\"\nurl = \"{queue}\"\nhandler = \"sendgrid\"\nwait_time_secs = 1\n",
            endpoint()
        ),
    )
    .expect("config");
    migrate(&config);
    let pool = sqlx::PgPool::connect(&db_url).await.expect("pool");
    let week =
        mailroom::store::partitions::week_start(chrono::Utc::now()) + chrono::Duration::days(14);
    let partition = mailroom::store::partitions::week_partition_name(week);
    sqlx::query(&format!("DROP TABLE {partition}"))
        .execute(&pool)
        .await
        .expect("drop a week ahead");

    let mut worker = Worker::start(&config, dir.join("worker.log"), &[]);
    let check = pool.clone();
    let wanted = partition.clone();
    eventually_async(30, "the worker recreates the dropped week", move || {
        let pool = check.clone();
        let wanted = wanted.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(wanted)
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
        }
    })
    .await;
    worker.wait_log("maintenance done", 30).await;
    // A second run (the timer's command) while the worker runs: fine, nothing left to do.
    let (status, out, err) = mailroom(&config, &["maintain"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("created: none") || out.contains("another process is maintaining"),
        "{out}"
    );
    let log = worker.log_text();
    assert!(!log.contains("maintenance failed"), "{log}");
    let stopped = worker.stop(15).await;
    assert!(stopped.success(), "{}", worker_log_tail(&dir));
    pool.close().await;
    drop_db(&admin, &name).await;
}

fn worker_log_tail(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
}
