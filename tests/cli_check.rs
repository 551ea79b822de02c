//! `mailroom check`, as systemd's ExecStartPre runs it: a bad config and unreachable services
//! each get a clear line and a non-zero exit; a good setup passes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = common::temp_dir(name);
    let path = dir.join("mailroom.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check(config: &Path, database_url: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    cmd.args(["--config", config.to_str().unwrap(), "check"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL");
    match database_url {
        Some(url) => cmd.env("DATABASE_URL", url),
        None => cmd.env_remove("DATABASE_URL"),
    };
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_misspelled_key_is_named_and_exits_2() {
    let config = write_config(
        "check-typo",
        "[store]\ndatabase_url = \"postgres://x\"\n[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\nvisiblity_timeout_secs = 30\n",
    );
    let (code, text) = check(&config, None);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("FAIL") && text.contains("visiblity_timeout_secs"),
        "{text}"
    );
}

#[test]
fn invalid_values_are_all_reported_at_once() {
    let config = write_config(
        "check-invalid",
        "[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\nbatch_size = 50\nwait_time_secs = 30\n",
    );
    let (code, text) = check(&config, None);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("batch_size must be 1-10"), "{text}");
    assert!(text.contains("wait_time_secs must be 0-20"), "{text}");
    assert!(text.contains("store.database_url is not set"), "{text}");
}

#[test]
fn unreachable_sqs_and_postgres_each_get_a_fail_line() {
    let sqs_port = closed_port();
    let pg_port = closed_port();
    let config = write_config(
        "check-unreachable",
        &format!(
            "[sqs]\nendpoint_url = \"http://127.0.0.1:{sqs_port}\"\n[[queue]]\nname = \"events\"\nhandler = \"sendgrid\"\n"
        ),
    );
    let (code, text) = check(
        &config,
        Some(&format!("postgres://postgres@127.0.0.1:{pg_port}/postgres")),
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ok   config"), "{text}");
    assert!(
        text.contains("FAIL queue \"events\": cannot resolve its URL"),
        "{text}"
    );
    assert!(text.contains("FAIL postgres"), "{text}");
    // Regression: the address dialled was never named, and Postgres's real cause was hidden
    // behind "pool timed out" (with its prefix twice).
    assert!(
        text.contains(&format!("via the SQS endpoint http://127.0.0.1:{sqs_port}")),
        "the endpoint dialled is named: {text}"
    );
    assert!(
        text.to_lowercase().contains("connection refused"),
        "the Postgres cause is shown: {text}"
    );
    assert!(!text.contains("pool timed out"), "{text}");
}

/// Regression: `check` passed a queue whose handler does not exist, which `run` refused, so
/// `ExecStartPre=mailroom check` let a crash loop through.
#[test]
fn check_fails_on_an_unknown_handler_as_run_does() {
    let config = write_config(
        "check-handler",
        "[[queue]]\nname = \"q\"\nurl = \"http://127.0.0.1:9/q\"\nhandler = \"sendgird\"\n",
    );
    let (code, text) = check(&config, Some("postgres://postgres@127.0.0.1:9/x"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no handler named \"sendgird\" (registered: sendgrid)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_reachable_setup_passes() {
    let sqs = common::sqs().await;
    let name = common::unique_dashed("check-ok");
    let url = common::create_queue(&sqs, &name, 30, None).await;
    let admin_url = common::admin_url();
    // A schema check needs a migrated database: migrate a fresh one first.
    let db = name.replace('-', "_");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let db_url = common::db_url(&admin_url, &db);
    let config = write_config(
        "check-ok",
        &format!(
            "[sqs]\nendpoint_url = \"{}\"\n[[queue]]\nname = \"{name}\"\nurl = \"{url}\"\nhandler = \"sendgrid\"\n",
            common::endpoint()
        ),
    );
    let (code, text) = check(&config, Some(&db_url));
    assert_eq!(code, 1, "an unmigrated database fails the check: {text}");
    assert!(
        text.contains("mailroom migrate"),
        "the failure says what to do: {text}"
    );
    let migrated = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["--config", config.to_str().unwrap(), "migrate"])
        .env("DATABASE_URL", &db_url)
        .output()
        .unwrap();
    assert!(migrated.status.success());
    let (code, text) = check(&config, Some(&db_url));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("ok   queue \"{name}\"")), "{text}");
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Regression: `migrate` on an empty database applied the migrations and printed only "database
/// schema is up to date"; it says which it applied, and that there was nothing the second time.
#[tokio::test]
async fn migrate_says_which_migrations_it_applied() {
    let admin_url = common::admin_url();
    let db = common::unique_dashed("migrate-says").replace('-', "_");
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let db_url = common::db_url(&admin_url, &db);
    let config = write_config(
        "migrate-says",
        "[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\n",
    );
    let migrate = || {
        Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["--config", config.to_str().unwrap(), "migrate"])
            .env("DATABASE_URL", &db_url)
            .output()
            .unwrap()
    };
    let first = migrate();
    assert!(first.status.success());
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("applied 20261126000001"), "{said}");
    let again = migrate();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to apply"));
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
