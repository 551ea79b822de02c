//! Schema checks: a worker refuses a database without Mailroom's migrations (telling the
//! operator to run `mailroom migrate`) or with migrations it does not know (a newer schema),
//! and accepts one that `Store::migrate` brought up to date.

use mailroom::store::{Store, StoreError, MIGRATOR};
use sqlx::PgPool;

fn schema_error(r: Result<(), StoreError>) -> String {
    match r {
        Err(e @ StoreError::Schema(_)) => e.to_string(),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[sqlx::test(migrations = false)]
async fn an_empty_database_is_refused_until_migrated(pool: PgPool) {
    let store = Store::from_pool(pool);
    let msg = schema_error(store.check_schema().await);
    assert!(msg.contains("run `mailroom migrate`"), "{msg}");

    store.migrate().await.expect("migrate");
    store.check_schema().await.expect("schema ok after migrate");
    store.migrate().await.expect("migrate is idempotent");
    store.check_schema().await.expect("still ok");
}

#[sqlx::test(migrations = false)]
async fn a_partly_migrated_database_is_refused(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    store.migrate().await.expect("migrate");
    let last = MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("at least one migration");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .execute(&pool)
        .await
        .expect("delete");
    let msg = schema_error(store.check_schema().await);
    assert!(
        msg.contains("not applied") && msg.contains("run `mailroom migrate`"),
        "{msg}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn an_unknown_newer_migration_is_refused(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    store.check_schema().await.expect("fresh schema ok");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from the future', true, '\\x00'::bytea, 1)",
    )
    .execute(&pool)
    .await
    .expect("insert");
    let msg = schema_error(store.check_schema().await);
    assert!(
        msg.contains("99990101000000") && msg.contains("newer"),
        "{msg}"
    );
    // Migrating does not paper over it either.
    assert!(store.migrate().await.is_err());
}

#[sqlx::test(migrations = "./migrations")]
async fn a_changed_migration_is_refused(pool: PgPool) {
    let store = Store::from_pool(pool.clone());
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea")
        .execute(&pool)
        .await
        .expect("update");
    let msg = schema_error(store.check_schema().await);
    assert!(msg.contains("checksum"), "{msg}");
}

#[tokio::test]
async fn connect_reports_an_unreachable_database_as_transient() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/none", 1)
        .await
        .expect_err("no db");
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string().starts_with("connecting to Postgres"),
        "{err}"
    );
}
