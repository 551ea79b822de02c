//! Store errors, classified by what the caller should do about them, because that is the only
//! question the handler asks: retry later without counting it against the message (the database
//! is the problem), give up on this message (its data can never be stored as it is), or retry a
//! bounded number of times (something else went wrong and we cannot tell whose fault it is).
//!
//! Permission and resource errors (a revoked INSERT grant, a full disk) are *transient* on
//! purpose: no retry fixes them quickly, but they are an operator's problem, and dead-lettering
//! every message while they last would throw good data into the dead-letter table. The messages
//! stay in SQS and the log says why.

use sqlx::migrate::MigrateError;

/// What a failed store operation means for the message(s) it was writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The database (not the data) is at fault: connection lost, pool exhausted, serialization
    /// failure, shutdown, out of resources, missing privilege. Retry without counting.
    Transient,
    /// The data can never be stored as it is (SQLSTATE classes 22 data exception, 23 integrity
    /// violation except unique violations, 54 program limit exceeded).
    Data,
    /// Anything else: a bug, a schema mismatch, an unexpected reply. Retry, counted.
    Other,
}

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed; `context` says which store operation ran it.
    #[error("{context}: {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("migrating the database: {0}")]
    Migrate(#[from] MigrateError),
    /// Postgres did not answer a connection attempt in time.
    #[error("connecting to Postgres: no answer within {secs} s")]
    ConnectTimeout { secs: u64 },
    /// The database schema is not the one this binary was built for.
    #[error("database schema mismatch: {0}")]
    Schema(String),
}

impl StoreError {
    /// Wrap a query error with the store operation that ran it.
    pub(crate) fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { context, source }
    }

    /// How the caller should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            StoreError::Query { source, .. } => classify(source),
            StoreError::Migrate(MigrateError::Execute(source)) => classify(source),
            StoreError::ConnectTimeout { .. } => ErrorClass::Transient,
            StoreError::Migrate(_) | StoreError::Schema(_) => ErrorClass::Other,
        }
    }

    /// The database, not the data, is at fault: retry later without counting it.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

/// Classify an sqlx error. Public so a handler (or a SendGrid hook) classifies the errors of its
/// own queries the way the store does.
pub fn classify(err: &sqlx::Error) -> ErrorClass {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ErrorClass::Transient,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => classify_sqlstate(&code),
            None => ErrorClass::Other,
        },
        _ => ErrorClass::Other,
    }
}

/// Classify a five-character SQLSTATE.
pub fn classify_sqlstate(code: &str) -> ErrorClass {
    let class = code.get(..2).unwrap_or("");
    match (class, code) {
        // connection exception, insufficient resources (disk full, out of memory, too many
        // connections), system error (I/O), operator intervention (admin shutdown, cannot
        // connect now, statement timeout / cancel)
        ("08" | "53" | "58" | "57", _) => ErrorClass::Transient,
        // serialization failure, deadlock, lock not available, insufficient privilege,
        // read-only transaction (failover to a replica), in failed transaction
        (_, "40001" | "40P01" | "55P03" | "55006" | "42501" | "25006" | "25P02") => {
            ErrorClass::Transient
        }
        // A unique violation outside ON CONFLICT means a concurrent writer raced us: retry.
        (_, "23505") => ErrorClass::Other,
        ("22" | "23" | "54", _) => ErrorClass::Data,
        _ => ErrorClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(classify_sqlstate("08006"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("53100"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("53300"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("57P01"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("40001"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("42501"), ErrorClass::Transient);
        assert_eq!(classify_sqlstate("22021"), ErrorClass::Data);
        assert_eq!(classify_sqlstate("22P05"), ErrorClass::Data);
        assert_eq!(classify_sqlstate("54000"), ErrorClass::Data);
        assert_eq!(classify_sqlstate("23505"), ErrorClass::Other);
        assert_eq!(classify_sqlstate("42P01"), ErrorClass::Other);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), ErrorClass::Transient);
        assert_eq!(classify(&sqlx::Error::RowNotFound), ErrorClass::Other);
    }
}
