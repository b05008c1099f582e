//! Opening the PostgreSQL backend from the configuration (`storage.type =
//! "postgres"`), for `btps serve`, the operator commands and `btps migrate`.

use std::path::Path;

use anyhow::Context;
use btps::config::{Config, PostgresSettings};
use btps::store::{PgOptions, PgStorage};

/// The backend's options from `[storage.postgres]`, for `uri`; the node's name
/// defaults to this host's name and the data directory, stable across restarts
/// and distinct between two nodes on one host.
pub(crate) fn options(settings: &PostgresSettings, uri: &str, data_dir: &Path) -> PgOptions {
    let node = settings.node_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let dir = data_dir
            .canonicalize()
            .unwrap_or_else(|_| data_dir.to_owned());
        format!("{host}:{}", dir.display())
    });
    PgOptions {
        uri: uri.to_owned(),
        trust_table: settings.trust_table.clone(),
        identity_table: settings.identity_table.clone(),
        pool_size: settings.pool_size,
        connect_timeout: settings.connect_timeout,
        statement_timeout: settings.statement_timeout,
        node,
        application_name: "btps".to_owned(),
    }
}

/// Connects to the configured database (migrating its schema). Blocking.
pub(crate) fn connect(config: &Config) -> anyhow::Result<PgStorage> {
    let settings = &config.storage.postgres;
    let uri = settings
        .uri
        .as_ref()
        .context("storage.postgres.uri (POSTGRES_URI) is not set")?;
    PgStorage::connect(&options(settings, uri.expose(), &config.data_dir))
        .with_context(|| format!("opening the PostgreSQL database {uri}"))
}
