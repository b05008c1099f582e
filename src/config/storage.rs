//! `[storage]`: which store holds the trust and identity records (one redb file,
//! the reference's JSON files, or a PostgreSQL database — `[storage.postgres]`,
//! `postgres.rs`), where, and how the redb file is opened.

use std::path::{Path, PathBuf};

use super::Config;
use super::loader::{Loader, Raw, Section, path};
use super::postgres::PostgresSettings;
use crate::store::RedbOptions;

/// Which store backs the trust and identity records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageKind {
    /// One embedded redb file (the appliance's default).
    Redb,
    /// The reference's JSON files (development, migration).
    Json,
    /// A PostgreSQL database that several nodes may share (`[storage.postgres]`).
    Postgres,
}

impl StorageKind {
    /// `"redb"`, `"json"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::Redb => "redb",
            StorageKind::Json => "json",
            StorageKind::Postgres => "postgres",
        }
    }
}

/// Storage settings for every kind of store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    /// `redb`, `json` or `postgres`.
    pub kind: StorageKind,
    /// The redb file.
    pub database_path: PathBuf,
    /// redb's page cache, in bytes.
    pub cache_size_bytes: u64,
    /// Whether redb checks every page checksum when opening the file.
    pub verify_on_open: bool,
    /// The JSON trust file (`json` storage, import and export).
    pub trust_file_path: PathBuf,
    /// The JSON identity file (`json` storage, import and export).
    pub identity_file_path: PathBuf,
    /// The top-level key of the trust file; `None` accepts either file shape.
    pub trust_entity_name: Option<String>,
    /// The top-level key of the identity file; `None` accepts either file shape.
    pub identity_entity_name: Option<String>,
    /// The database of `postgres` storage.
    pub postgres: PostgresSettings,
}

impl StorageSettings {
    /// redb, with every file under `data_dir`.
    pub(super) fn defaults_under(data_dir: &Path) -> Self {
        StorageSettings {
            kind: StorageKind::Redb,
            database_path: data_dir.join(crate::store::DATABASE_FILE_NAME),
            cache_size_bytes: RedbOptions::default().cache_size,
            // Off: reading every page of a 1 GB file takes 1.3 s warm and 4.5 s
            // cold, against 5–20 ms without (docs/benchmark.md). redb still repairs
            // and checks the file after an unclean shutdown, and `btps check`
            // verifies every page of a running server's database through a copy.
            verify_on_open: false,
            trust_file_path: data_dir.join("trust.json"),
            identity_file_path: data_dir.join("identities.json"),
            trust_entity_name: None,
            identity_entity_name: None,
            postgres: PostgresSettings::default(),
        }
    }
}

impl Loader<'_> {
    pub(super) fn storage(&mut self, top: &mut Section, config: &mut Config) {
        let mut section = self.table(top, "storage");
        let storage = &mut config.storage;
        self.setting(
            &mut section,
            "type",
            Some("STORAGE_TYPE"),
            |raw| match raw.text()?.to_ascii_lowercase().as_str() {
                "redb" => Ok(StorageKind::Redb),
                "json" => Ok(StorageKind::Json),
                "postgres" | "postgresql" if cfg!(feature = "postgres") => {
                    Ok(StorageKind::Postgres)
                }
                "postgres" | "postgresql" => Err(
                    "this btps was built without PostgreSQL (cargo feature \"postgres\")"
                        .to_owned(),
                ),
                "mongodb" | "mongo" => {
                    Err("MongoDB is not supported; use postgres or redb".to_owned())
                }
                other => Err(format!(
                    "expected \"redb\", \"json\" or \"postgres\", found {other:?}"
                )),
            },
            &mut storage.kind,
        );
        self.setting(
            &mut section,
            "database_path",
            Some("BTPS_DATABASE"),
            path,
            &mut storage.database_path,
        );
        self.setting(
            &mut section,
            "cache_size",
            Some("BTPS_CACHE_SIZE"),
            |raw| match raw.size()? {
                size if size < 1 << 20 => Err(format!("{size} bytes is too small; at least 1MiB")),
                size => Ok(size),
            },
            &mut storage.cache_size_bytes,
        );
        self.setting(
            &mut section,
            "verify_on_open",
            Some("BTPS_VERIFY_ON_OPEN"),
            Raw::boolean,
            &mut storage.verify_on_open,
        );
        self.setting(
            &mut section,
            "trust_file_path",
            Some("TRUST_FILE_PATH"),
            path,
            &mut storage.trust_file_path,
        );
        self.setting(
            &mut section,
            "identity_file_path",
            Some("IDENTITY_FILE_PATH"),
            path,
            &mut storage.identity_file_path,
        );
        self.optional(
            &mut section,
            "trust_entity_name",
            Some("TRUST_ENTITY_NAME"),
            Raw::text,
            &mut storage.trust_entity_name,
        );
        self.optional(
            &mut section,
            "identity_entity_name",
            Some("BTPS_IDENTITY_ENTITY_NAME"),
            Raw::text,
            &mut storage.identity_entity_name,
        );
        self.postgres(&mut section, &mut storage.postgres);
        self.finish(section);
        if storage.kind == StorageKind::Postgres && storage.postgres.uri.is_none() {
            self.error(
                "storage.postgres.uri",
                "required when storage.type is \"postgres\" (or set POSTGRES_URI)",
            );
        }
    }
}
