//! `[storage.postgres]`: the PostgreSQL database of `storage.type = "postgres"`,
//! under the reference's environment names where it has them (`POSTGRES_URI`,
//! `POSTGRES_TABLE`, `POSTGRES_IDENTITY_TABLE`).
//!
//! The connection string may hold a password: [`PostgresUri`] shows it only to
//! the code that connects ([`PostgresUri::expose`]); its `Debug` and `Display`,
//! and therefore the logs and `btps check-config`, show `***` instead.

use std::fmt;
use std::time::Duration;

use super::loader::{Loader, Raw, Section, positive_ms, positive_usize};
use crate::store::{DEFAULT_IDENTITY_TABLE, DEFAULT_TRUST_TABLE, redact_uri, valid_table_name};

/// A PostgreSQL connection string whose password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUri(String);

impl PostgresUri {
    /// Wraps a connection string.
    pub fn new(uri: impl Into<String>) -> Self {
        PostgresUri(uri.into())
    }

    /// The connection string itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PostgresUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUri({:?})", redact_uri(&self.0))
    }
}

impl fmt::Display for PostgresUri {
    /// The connection string with its password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_uri(&self.0))
    }
}

/// The database of `storage.type = "postgres"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The connection string (`POSTGRES_URI`); required for `postgres` storage.
    pub uri: Option<PostgresUri>,
    /// The trust records' table (`POSTGRES_TABLE`, default `btps_trust`).
    pub trust_table: String,
    /// The identity records' table (`POSTGRES_IDENTITY_TABLE`, default
    /// `btps_identity`).
    pub identity_table: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long connecting, or waiting for a pooled connection, may take.
    pub connect_timeout: Duration,
    /// How long one statement may take before the call fails as unavailable.
    pub statement_timeout: Duration,
    /// This node's name among those sharing the database (the owner of its outbox
    /// claims); `None`: the host name and the data directory.
    pub node_name: Option<String>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            uri: None,
            trust_table: DEFAULT_TRUST_TABLE.to_owned(),
            identity_table: DEFAULT_IDENTITY_TABLE.to_owned(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            node_name: None,
        }
    }
}

fn table(raw: Raw) -> Result<String, String> {
    let name = raw.text()?;
    if valid_table_name(&name) {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a table name btps accepts: lower-case letters, digits and _, \
             not starting with a digit, at most 48 characters"
        ))
    }
}

fn uri(raw: Raw) -> Result<PostgresUri, String> {
    let text = raw.text()?;
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(PostgresUri(text))
}

impl Loader<'_> {
    /// `[storage.postgres]`, inside the `[storage]` section.
    pub(super) fn postgres(&mut self, storage: &mut Section, settings: &mut PostgresSettings) {
        let mut section = self.table(storage, "postgres");
        self.optional(
            &mut section,
            "uri",
            Some("POSTGRES_URI"),
            uri,
            &mut settings.uri,
        );
        self.setting(
            &mut section,
            "trust_table",
            Some("POSTGRES_TABLE"),
            table,
            &mut settings.trust_table,
        );
        self.setting(
            &mut section,
            "identity_table",
            Some("POSTGRES_IDENTITY_TABLE"),
            table,
            &mut settings.identity_table,
        );
        self.setting(
            &mut section,
            "pool_size",
            Some("BTPS_POSTGRES_POOL_SIZE"),
            positive_usize,
            &mut settings.pool_size,
        );
        self.setting(
            &mut section,
            "connect_timeout_ms",
            Some("BTPS_POSTGRES_CONNECT_TIMEOUT_MS"),
            positive_ms,
            &mut settings.connect_timeout,
        );
        self.setting(
            &mut section,
            "statement_timeout_ms",
            Some("BTPS_POSTGRES_STATEMENT_TIMEOUT_MS"),
            positive_ms,
            &mut settings.statement_timeout,
        );
        self.optional(
            &mut section,
            "node_name",
            Some("BTPS_NODE_NAME"),
            Raw::text,
            &mut settings.node_name,
        );
        self.finish(section);
        if settings.trust_table == settings.identity_table {
            self.error(
                "storage.postgres.identity_table",
                "must differ from storage.postgres.trust_table",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_hides_its_password() {
        let uri = PostgresUri::new("postgres://btps:hunter2@db:5432/btps");
        assert_eq!(uri.to_string(), "postgres://btps:***@db:5432/btps");
        assert!(!format!("{uri:?}").contains("hunter2"));
        let settings = PostgresSettings {
            uri: Some(uri),
            ..PostgresSettings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
