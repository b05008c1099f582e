//! Consistent copies of the live database.
//!
//! A copy is taken while no write transaction can run: the committed state is then
//! entirely in the file (every commit is durable before it returns), so a plain
//! file copy is a snapshot. The copy is opened once so that it is left cleanly
//! closed, then synced to disk.

use std::fs;
use std::path::Path;

use super::error::{StoreError, StoreResult};
use super::redb_store::RedbStore;

/// What [`RedbStore::backup_to`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// Size of the copy in bytes.
    pub bytes: u64,
}

impl RedbStore {
    /// Writes a consistent copy of the database to `destination` (a new file;
    /// an existing one is refused). Writers wait while the file is copied.
    pub fn backup_to(&self, destination: &Path) -> StoreResult<BackupReport> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        if destination.exists() {
            return Err(StoreError::Io {
                path: destination.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the backup destination exists",
                ),
            });
        }
        // Inside a write transaction every other writer waits while the bytes are
        // copied; the transaction changes nothing.
        self.write(|_| fs::copy(self.path(), destination).map_err(io(destination)))?;
        // The copy carries the "in use" mark of the live file; opening it once
        // recovers it and closes it cleanly.
        RedbStore::check_file_integrity(destination)?;
        let file = fs::File::open(destination).map_err(io(destination))?;
        file.sync_all().map_err(io(destination))?;
        let bytes = file.metadata().map_err(io(destination))?.len();
        Ok(BackupReport { bytes })
    }
}
