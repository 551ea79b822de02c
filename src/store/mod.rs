//! Postgres storage for what Mailroom receives. All of Mailroom's SQL lives under this module,
//! so the schema (migrations/, documented in docs/schema.md) and the statements that write it
//! change together.
//!
//! Write functions take an executor (`impl PgExecutor` or `&mut PgConnection`) rather than the
//! pool, so a handler can put a whole batch in one transaction and commit once: the engine
//! deletes SQS messages only after that commit, which is what makes at-least-once delivery
//! safe. Every insert is idempotent on a natural key (`ON CONFLICT DO NOTHING`).
//!
//! Postgres rejects NUL (`\u{0}`) in `text` and `jsonb`; [`sanitize`] removes it from strings
//! before they are bound. Exact bytes are kept where the schema has `bytea` (raw MIME,
//! attachments), and the inbound dedup key hashes the exact request body, so sanitizing never
//! affects idempotency.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub mod admin;
pub mod dead_letters;
pub mod errors;
pub mod events;
pub mod feed;
pub mod forward_plan;
pub mod inbound;
pub mod partitions;
pub mod status;

pub use dead_letters::keep_dead_letters;
pub use errors::{classify, classify_sqlstate, ErrorClass, StoreError};
pub use events::{
    insert_events, insert_new_events, EventRecord, InsertedEvent, EVENTS_PER_STATEMENT,
};
pub use inbound::{dedup_key, insert_inbound, InboundRecord};
pub use partitions::{maintain, MaintenancePlan, MaintenanceReport};
pub use status::{update_message_status, update_suppressions};

/// A Postgres transaction on the store's pool.
pub type Transaction = sqlx::Transaction<'static, sqlx::Postgres>;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Handle to Mailroom's database: a connection pool plus the operations on it.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connect a pool of at most `max_connections` to `url` (`postgres://...`). Does not check
    /// the schema: call [`Store::check_schema`] (worker) or [`Store::migrate`] (`mailroom
    /// migrate`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(StoreError::query("connecting to Postgres"))?;
        Ok(Self { pool })
    }

    /// Open one direct connection (no pool) and close it, within 10 s: the error then names
    /// the real cause (connection refused, authentication failed, no such database) where a
    /// pool reports only that it timed out waiting.
    pub async fn diagnose(url: &str) -> Result<(), StoreError> {
        use sqlx::Connection;
        let connect = sqlx::PgConnection::connect(url);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(source)) => Err(StoreError::Query {
                context: "connecting to Postgres",
                source,
            }),
            Err(_) => Err(StoreError::ConnectTimeout { secs: 10 }),
        }
    }

    /// A pool that connects on first use: handlers are built (and their config checked) with
    /// it before Postgres is reached, so `mailroom check` reports a bad handler config even
    /// while the database is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(url)
            .map_err(StoreError::query("reading the Postgres URL"))?;
        Ok(Self { pool })
    }

    /// Wrap an existing pool (tests, or an engine that builds its own).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Start a transaction: what a handler writes in, committing before it answers `Done`
    /// (the engine deletes the message as soon as it sees `Done`).
    pub async fn begin(&self) -> Result<Transaction, StoreError> {
        self.pool
            .begin()
            .await
            .map_err(StoreError::query("beginning a transaction"))
    }

    /// The pool itself, for Mailroom's own admin code and tests. Handlers use [`Store::begin`].
    #[doc(hidden)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply the embedded migrations that are not applied yet. Refuses (like sqlx) when the
    /// database has applied migrations this binary does not know.
    /// Returns the migrations it applied (`version description`), oldest first; empty when the
    /// schema was already up to date.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let before = self.applied_versions().await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    async fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::query("reading applied migrations"))?;
        if table.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query("reading applied migrations"))
    }

    /// Check that the database has exactly this binary's migrations applied, so a worker never
    /// writes into a schema it was not built for. Errors name the fix.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::query("checking the schema"))?;
        if table.is_none() {
            return Err(StoreError::Schema(
                "the database has no Mailroom schema (no _sqlx_migrations table): run `mailroom migrate`"
                    .into(),
            ));
        }
        let applied: Vec<(i64, bool, Vec<u8>, String)> = sqlx::query_as(
            "SELECT version, success, checksum, description FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query("checking the schema"))?;
        check_applied(&applied)
    }
}

/// Compare applied migrations `(version, success, checksum, description)` with the embedded ones.
fn check_applied(applied: &[(i64, bool, Vec<u8>, String)]) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    for (version, success, checksum, description) in applied {
        match MIGRATOR.iter().find(|m| m.version == *version) {
            None => problems.push(format!(
                "migration {version} ({description}) is applied but unknown to this binary: \
                 the database schema is newer, upgrade mailroom"
            )),
            Some(_) if !success => problems.push(format!(
                "migration {version} ({description}) failed part-way: repair the database, then \
                 run `mailroom migrate`"
            )),
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => problems.push(format!(
                "migration {version} ({description}) was changed after it was applied (checksum \
                 mismatch)"
            )),
            Some(_) => {}
        }
    }
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| !applied.iter().any(|(v, ..)| *v == m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "migrations not applied: {}: run `mailroom migrate`",
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(problems.join("; ")))
    }
}

/// Remove NUL characters, which Postgres rejects in `text` and `jsonb`. Borrows when there are
/// none (the usual case).
pub fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', ""))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// [`sanitize`] for optional text columns.
pub(crate) fn sanitize_opt(s: Option<&str>) -> Option<std::borrow::Cow<'_, str>> {
    s.map(sanitize)
}

/// [`sanitize_json`] for JSON kept as text: Postgres's `jsonb` rejects the escape `\u0000`,
/// so only text that holds it is parsed, cleaned and re-serialized; anything else is bound as
/// it is, with no copy. (A literal `\\u0000`, an escaped backslash, takes the slow path too and
/// comes out unchanged.)
pub fn sanitize_raw_json(
    raw: &serde_json::value::RawValue,
) -> std::borrow::Cow<'_, serde_json::value::RawValue> {
    use std::borrow::Cow;
    // A backslash is found with memchr; most events have none, and then no substring search.
    if !raw.get().contains('\\') || !raw.get().contains("\\u0000") {
        return Cow::Borrowed(raw);
    }
    let cleaned = serde_json::from_str::<serde_json::Value>(raw.get())
        .ok()
        .and_then(|v| serde_json::to_string(&sanitize_json(&v)).ok())
        .and_then(|text| serde_json::value::RawValue::from_string(text).ok());
    // Unparseable text cannot reach here (decoders validate it); if it did, Postgres would
    // reject it with a clear error, which dead-letters the message.
    cleaned.map_or(Cow::Borrowed(raw), Cow::Owned)
}

/// [`sanitize`] every string (and object key) inside a JSON value, for `jsonb` columns.
pub fn sanitize_json(value: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    fn has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn strip(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::String(s) => serde_json::Value::String(s.replace('\0', "")),
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(strip).collect()),
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.replace('\0', ""), strip(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    if has_nul(value) {
        std::borrow::Cow::Owned(strip(value))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_nul_only_when_present() {
        assert!(matches!(sanitize("abc"), std::borrow::Cow::Borrowed("abc")));
        assert_eq!(sanitize("a\0b\0"), "ab");
        let v = serde_json::json!({"k\u{0}": ["x\u{0}y", 1, {"z": "\u{0}"}]});
        assert_eq!(
            *sanitize_json(&v),
            serde_json::json!({"k": ["xy", 1, {"z": ""}]})
        );
    }

    #[test]
    fn sanitize_raw_json_removes_escaped_nul_and_borrows_otherwise() {
        use serde_json::value::RawValue;
        let clean = RawValue::from_string(r#"{"a": "b"}"#.into()).unwrap();
        assert!(matches!(
            sanitize_raw_json(&clean),
            std::borrow::Cow::Borrowed(_)
        ));
        let nul = RawValue::from_string(r#"{"k\u0000": ["x\u0000y", 1]}"#.into()).unwrap();
        let out: serde_json::Value = serde_json::from_str(sanitize_raw_json(&nul).get()).unwrap();
        assert_eq!(out, serde_json::json!({"k": ["xy", 1]}));
        // An escaped backslash before "u0000" is not a NUL: the text keeps its meaning.
        let not_nul = RawValue::from_string(r#"{"a": "\\u0000"}"#.into()).unwrap();
        let out: serde_json::Value =
            serde_json::from_str(sanitize_raw_json(&not_nul).get()).unwrap();
        assert_eq!(out, serde_json::json!({"a": "\\u0000"}));
    }

    #[test]
    fn embedded_migrations_check_against_themselves() {
        let applied: Vec<_> = MIGRATOR
            .iter()
            .map(|m| {
                (
                    m.version,
                    true,
                    m.checksum.to_vec(),
                    m.description.to_string(),
                )
            })
            .collect();
        assert!(check_applied(&applied).is_ok());
        assert!(check_applied(&[]).is_err());
    }
}
