//! The driver's and the pool's errors as [`StoreError`]s.
//!
//! What passes — the database unreachable, restarting, out of connections, a
//! statement cancelled by a shutdown, a deadlock or serialization failure that a
//! retry resolves — is [`StoreError::Unavailable`] (the server answers
//! "storage temporarily unavailable" and senders retry); anything else is
//! [`StoreError::Backend`] with the database's message. The `path` of every
//! error is the connection string with its password hidden.

use std::path::PathBuf;
use std::sync::Arc;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Builds the errors of one database.
#[derive(Clone)]
pub(crate) struct PgErrors {
    pub(crate) name: Arc<str>,
}

/// A message as the error's source.
#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl PgErrors {
    fn path(&self) -> PathBuf {
        PathBuf::from(self.name.as_ref())
    }

    /// A temporary failure: `reason` in a few lower-case words.
    pub(crate) fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            path: self.path(),
            reason: reason.into(),
        }
    }

    /// A permanent failure with a message.
    pub(crate) fn backend(&self, message: impl Into<String>) -> StoreError {
        StoreError::Backend {
            path: self.path(),
            source: Box::new(Message(message.into())),
        }
    }

    /// A setting the backend cannot work with.
    pub(crate) fn config(&self, message: String) -> StoreError {
        self.backend(message)
    }

    pub(crate) fn timed_out(&self) -> StoreError {
        self.unavailable("database statement timed out")
    }

    /// A stored value that does not decode.
    pub(crate) fn decode(&self, table: &'static str, detail: impl Into<String>) -> StoreError {
        StoreError::Decode {
            table,
            detail: detail.into(),
        }
    }

    /// No connection could be had from the pool.
    pub(crate) fn pool(&self, error: &PoolError) -> StoreError {
        match error {
            PoolError::Timeout(_) => self.unavailable("database connection timed out"),
            PoolError::Backend(error) => self.query(error),
            PoolError::Closed => self.unavailable("database pool closed"),
            other => self.unavailable(format!("database unreachable: {other}")),
        }
    }

    /// A failed statement.
    pub(crate) fn query(&self, error: &tokio_postgres::Error) -> StoreError {
        if let Some(reason) = temporary(error) {
            return self.unavailable(reason);
        }
        StoreError::Backend {
            path: self.path(),
            source: Box::new(Message(describe(error))),
        }
    }
}

/// Whether the statement failed because of a unique index.
pub(crate) fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The reason of a failure that passes, if it is one.
fn temporary(error: &tokio_postgres::Error) -> Option<&'static str> {
    if error.is_closed() {
        return Some("database connection lost");
    }
    let Some(code) = error.code() else {
        // No SQL state: the connection itself failed (I/O, TLS, a refused connect).
        return Some("database unreachable");
    };
    let class = code.code().get(..2).unwrap_or("");
    match class {
        // Connection exception; operator intervention (shutdown, crash, cannot
        // connect now); insufficient resources (too many connections, disk full).
        "08" => Some("database connection lost"),
        "57" => Some("database shutting down or restarting"),
        "53" => Some("database out of resources"),
        // Serialization failure, deadlock: a retry resolves them.
        "40" => Some("database transaction conflict"),
        _ if *code == SqlState::READ_ONLY_SQL_TRANSACTION => Some("database is read-only"),
        _ => None,
    }
}

/// The database's message with its SQL state, or the driver's.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}
