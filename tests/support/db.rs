//! Postgres: the admin URL, URLs of other databases on that server, and creating and dropping a
//! database of a test's own.
//!
//! scripts/test.sh drops databases left behind by failed runs by their name's prefix (`e2e_`,
//! `fault_`, `hostile_`, `mailroom_ops_`, ...), so callers keep to those prefixes.

use sqlx::{Connection, PgConnection};

/// The machine's Postgres, as an admin connection: `DATABASE_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The URL of database `db` on the server of `admin_url` (keeping any `?query`).
pub fn db_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

/// Create the empty database `name` on the server of `admin_url`; returns its URL.
pub async fn create_db(admin_url: &str, name: &str) -> String {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect admin");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create database");
    db_url(admin_url, name)
}

/// Drop database `name` (closing its connections), ignoring any failure.
pub async fn drop_db(admin_url: &str, name: &str) {
    if let Ok(mut admin) = PgConnection::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
