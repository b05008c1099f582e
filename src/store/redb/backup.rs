//! Online backup: a consistent copy of the whole database in a new redb file, taken
//! while the server keeps committing.
//!
//! redb has no page-level online copy, and copying the file's bytes while writers run
//! would tear it. A backup is therefore one read transaction on the live database —
//! a snapshot of exactly what was committed before it began — whose every table is
//! copied, entry by entry in key order, into a fresh file in one write transaction.
//! Writers are not blocked: redb keeps the snapshot's pages alive until the read
//! transaction ends. The copy is a complete btps database (same schema version, same
//! database id) that [`RedbStore::open`] and [`RedbStore::check_file_integrity`]
//! accept, and is compact, since it is written in key order.
//!
//! `tables!` declares the list of every table the store defines. Before copying, the
//! tables present in the file are compared with it, and a table the list lacks makes
//! the backup fail ([`StoreError::UnknownTable`]) instead of silently leaving it out;
//! a unit test holds the list to what a fresh database contains.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, TableDefinition, TableHandle, WriteTransaction};

use crate::store::{StoreError, StoreResult};

use super::error::database_error;
use super::tables::{
    AGENT_BY_OWNER, AGENT_SESSION, AGENT_TOKEN, COUNTERS, IDENTITY, IDENTITY_BY_NAME, IDENTITY_KEY,
    MAILBOX_ARTIFACT, MAILBOX_COUNT, MAILBOX_ENTRY, MAILBOX_LISTING, META, OUTBOX_DUE,
    OUTBOX_ORDER, OUTBOX_PAIR, TRUST, TRUST_BY_EXPIRY, TRUST_BY_RECEIVER, TRUST_BY_SENDER,
    TRUST_BY_STATUS, TRUST_STATUS_COUNT,
};
use super::{RedbStore, SCHEMA_VERSION};

/// What a backup wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the backup file.
    pub bytes: u64,
    /// Number of tables copied.
    pub tables: usize,
    /// Entries copied, all tables together (records and index entries).
    pub entries: u64,
    /// Trust records (both perspectives).
    pub trust_records: u64,
    /// Identity records.
    pub identities: u64,
    /// Mailbox entries.
    pub mailbox_entries: u64,
    /// Storage schema version of the copy.
    pub schema_version: u32,
}

/// Declares every table of the store once: [`table_names`] lists them and
/// [`copy_table`] copies one by name. A table added to the store must be added here
/// (the test `every_table_is_backed_up` fails otherwise).
macro_rules! tables {
    ($($definition:ident),+ $(,)?) => {
        /// The names of every table the store defines.
        fn table_names() -> Vec<String> {
            vec![$($definition.name().to_owned()),+]
        }

        /// Copies the table `name` of `source` into `destination`; `None` if the
        /// store defines no such table.
        fn copy_table(
            name: &str,
            source: &ReadTransaction,
            destination: &WriteTransaction,
            path: &Path,
        ) -> Option<StoreResult<u64>> {
            $(
                if name == $definition.name() {
                    return Some(copy(source, destination, path, $definition));
                }
            )+
            None
        }
    };
}

tables!(
    META,
    COUNTERS,
    TRUST,
    TRUST_BY_RECEIVER,
    TRUST_BY_SENDER,
    TRUST_BY_STATUS,
    TRUST_BY_EXPIRY,
    TRUST_STATUS_COUNT,
    IDENTITY,
    IDENTITY_BY_NAME,
    IDENTITY_KEY,
    MAILBOX_ENTRY,
    MAILBOX_LISTING,
    MAILBOX_ARTIFACT,
    MAILBOX_COUNT,
    OUTBOX_DUE,
    OUTBOX_PAIR,
    OUTBOX_ORDER,
    AGENT_TOKEN,
    AGENT_SESSION,
    AGENT_BY_OWNER,
);

fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    source: &ReadTransaction,
    destination: &WriteTransaction,
    path: &Path,
    definition: TableDefinition<K, V>,
) -> StoreResult<u64> {
    let from = source
        .open_table(definition)
        .map_err(|error| database_error(path, error))?;
    let mut to = destination
        .open_table(definition)
        .map_err(|error| database_error(path, error))?;
    let mut copied = 0;
    for entry in redb::ReadableTable::iter(&from).map_err(|error| database_error(path, error))? {
        let (key, value) = entry.map_err(|error| database_error(path, error))?;
        to.insert(key.value(), value.value())
            .map_err(|error| database_error(path, error))?;
        copied += 1;
    }
    Ok(copied)
}

/// Removes a half-written backup file unless disarmed.
struct RemoveOnError<'a>(Option<&'a Path>);

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl RedbStore {
    /// Writes a consistent copy of the whole database to `destination`, a new file
    /// (an existing file is refused, never overwritten). The copy holds exactly the
    /// transactions committed before the call began; the store stays writable
    /// throughout. Blocking: it reads and writes the whole database.
    pub fn backup_to(&self, destination: &Path) -> StoreResult<BackupReport> {
        let io_error = |source| StoreError::Io {
            path: destination.to_owned(),
            source,
        };
        // create_new reserves the name atomically; redb then initialises the empty file.
        // The copy holds the whole database: readable by its owner only, like the
        // database itself.
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(destination).map_err(io_error)?;
        let mut cleanup = RemoveOnError(Some(destination));
        let report = self.read(|snapshot| {
            let source = &snapshot.txn;
            let known = table_names();
            let present: Vec<String> = source
                .list_tables()
                .map_err(|error| database_error(self.path(), error))?
                .map(|table| table.name().to_owned())
                .chain(
                    source
                        .list_multimap_tables()
                        .map_err(|error| database_error(self.path(), error))?
                        .map(|table| redb::MultimapTableHandle::name(&table).to_owned()),
                )
                .collect();
            if let Some(unknown) = present.iter().find(|name| !known.contains(name)) {
                return Err(StoreError::UnknownTable {
                    path: self.path().to_owned(),
                    table: unknown.clone(),
                });
            }
            let copy = Database::builder()
                .create(destination)
                .map_err(|error| database_error(destination, error))?;
            let txn = copy
                .begin_write()
                .map_err(|error| database_error(destination, error))?;
            let mut report = BackupReport {
                schema_version: SCHEMA_VERSION,
                ..BackupReport::default()
            };
            for name in &present {
                let Some(copied) = copy_table(name, source, &txn, destination) else {
                    continue;
                };
                let entries = copied?;
                report.tables += 1;
                report.entries += entries;
                if name == TRUST.name() {
                    report.trust_records = entries;
                } else if name == IDENTITY.name() {
                    report.identities = entries;
                } else if name == MAILBOX_ENTRY.name() {
                    report.mailbox_entries = entries;
                }
            }
            txn.commit()
                .map_err(|error| database_error(destination, error))?;
            drop(copy);
            Ok(report)
        })?;
        let bytes = std::fs::metadata(destination).map_err(io_error)?.len();
        cleanup.0 = None;
        Ok(BackupReport { bytes, ..report })
    }

    /// Takes a backup into a new hidden file beside the database and returns it open
    /// for reading, already unlinked: the data stays readable through the handle and
    /// the disk space is freed when the handle closes, whatever happens to the reader
    /// (a client that disconnects half-way leaves nothing behind). Unix semantics.
    pub fn backup_to_anonymous_file(&self) -> StoreResult<(std::fs::File, BackupReport)> {
        let path = self.backup_scratch_path();
        let report = self.backup_to(&path)?;
        let opened = std::fs::File::open(&path);
        let _ = std::fs::remove_file(&path);
        let file = opened.map_err(|source| StoreError::Io { path, source })?;
        Ok((file, report))
    }

    /// Removes scratch files of backups interrupted by a crash; returns how many.
    pub fn remove_stale_backups(&self) -> usize {
        let Some(dir) = self.path().parent() else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_str()
                    .is_some_and(|name| name.starts_with(SCRATCH_PREFIX))
            })
            .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
            .count()
    }

    fn backup_scratch_path(&self) -> PathBuf {
        let name = format!("{SCRATCH_PREFIX}{}.redb", uuid::Uuid::new_v4());
        match self.path().parent() {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// Name prefix of the scratch files of [`RedbStore::backup_to_anonymous_file`].
const SCRATCH_PREFIX: &str = ".btps-backup-";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbOptions;

    /// A fresh database holds exactly the tables of the backup list.
    #[test]
    fn every_table_is_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
        let mut present: Vec<String> = store
            .read(|snapshot| {
                Ok(snapshot
                    .txn
                    .list_tables()
                    .unwrap()
                    .map(|table| table.name().to_owned())
                    .collect())
            })
            .unwrap();
        present.sort();
        let mut listed = table_names();
        listed.sort();
        assert_eq!(present, listed);
    }

    #[test]
    fn an_existing_destination_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_dir(&dir.path().join("data"), &RedbOptions::default()).unwrap();
        let destination = dir.path().join("taken");
        std::fs::write(&destination, b"precious").unwrap();
        assert!(matches!(
            store.backup_to(&destination),
            Err(StoreError::Io { .. })
        ));
        assert_eq!(std::fs::read(&destination).unwrap(), b"precious");
    }

    #[test]
    fn scratch_files_are_unlinked_and_stale_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open_dir(dir.path(), &RedbOptions::default()).unwrap();
        let (file, report) = store.backup_to_anonymous_file().unwrap();
        assert_eq!(file.metadata().unwrap().len(), report.bytes);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let named = dir.path().join("named.redb");
            store.backup_to(&named).unwrap();
            let mode = std::fs::metadata(&named).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let scratch = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|entry| {
                    entry
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(SCRATCH_PREFIX)
                })
                .count()
        };
        assert_eq!(scratch(dir.path()), 0);
        std::fs::write(dir.path().join(format!("{SCRATCH_PREFIX}x.redb")), b"").unwrap();
        assert_eq!(store.remove_stale_backups(), 1);
        assert_eq!(scratch(dir.path()), 0);
    }
}
