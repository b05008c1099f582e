//! The redb store: every table of the appliance in one file, `<data-dir>/btps.redb`.
//!
//! Each mutation is one write transaction that changes the primary table and every
//! secondary index together, committed with `Durability::Immediate` before the call
//! returns. [`RedbStore::write`] runs any number of mutations in one transaction
//! (group commit for the server's batching); [`RedbStore::read`] gives a consistent
//! snapshot for several queries. The async traits run these on
//! `tokio::task::spawn_blocking` so that disk I/O never blocks the runtime.
//!
//! This file opens the database and runs transactions; the rest is split by
//! responsibility:
//!
//! * `tables` — every table definition and key layout;
//! * `migrate` — creating a new file's schema and migrating older versions;
//! * `read` — [`Snapshot`], the queries of a read transaction;
//! * `write` — [`WriteBatch`], the mutations of a write transaction;
//! * `mailbox` — the mailbox tables: entries, listings, de-duplication, and the
//!   [`InboxWriter`] of the group commit;
//! * `contract` — the synchronous API and the [`TrustStore`] / [`IdentityStore`]
//!   implementations over it;
//! * `backup` — online backup into a new file;
//! * `codec` — the postcard-encoded values;
//! * `error` — redb's errors turned into [`StoreError`]s.
//!
//! Table layout, key encodings and versions: `schema/storage.md`.
//!
//! [`TrustStore`]: crate::store::TrustStore
//! [`IdentityStore`]: crate::store::IdentityStore

mod backup;
mod codec;
mod contract;
mod error;
mod mailbox;
mod migrate;
mod read;
mod storage;
mod tables;
mod write;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, Durability, ReadableDatabase};

use crate::store::{StoreError, StoreResult};

use self::error::{database_error, inconsistent, open_error};
use self::read::read_meta;
use self::tables::{META, META_SCHEMA_VERSION};

pub use self::backup::BackupReport;
pub use self::mailbox::{InboxWriter, PreparedInboxEntry};
pub use self::read::Snapshot;
pub use self::write::WriteBatch;

/// The database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "btps.redb";

/// Newest storage schema version this build writes (see `schema/storage.md`).
///
/// Version 1 had no `trust_status_count` table; opening such a file adds it,
/// filled from the status index, in one transaction. Version 2 had no mailbox
/// tables; opening such a file creates them (empty).
pub const SCHEMA_VERSION: u32 = 4;

/// How a [`RedbStore`] opens its file.
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Page cache size in bytes. redb's own default is 1 GiB; edge boxes have
    /// 512 MB of RAM, so the default here is 32 MiB.
    pub cache_size: u64,
    /// Verify every page checksum when opening, so that a damaged file is refused
    /// with an error instead of being trusted. Reads the whole file.
    pub check_integrity_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            cache_size: 32 * 1024 * 1024,
            check_integrity_on_open: true,
        }
    }
}

/// The default store: one redb file with the trust and identity tables and their
/// indexes. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    database: Database,
    path: PathBuf,
    /// Write transactions begun through [`RedbStore::write_if_changed`] (every write
    /// after open goes through it); see [`RedbStore::write_transactions`].
    write_transactions: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (or creates) `<data_dir>/btps.redb`, creating the directory (mode
    /// 0700) if needed.
    pub fn open_dir(data_dir: &Path, options: &RedbOptions) -> StoreResult<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        Self::open(&data_dir.join(DATABASE_FILE_NAME), options)
    }

    /// Opens the database file at `path`, creating it only if it does not exist.
    ///
    /// An existing file that is not a btps database (not redb, truncated, damaged,
    /// or another application's redb file) is refused with an error naming it and
    /// is never overwritten. A file of an older schema version is migrated forward
    /// in one transaction; a newer one is refused.
    ///
    /// A new file is created and given its tables under a temporary name and only
    /// then renamed into place (mode 0600), so a process killed while creating it
    /// never leaves a half-initialised file at `path` (one that later opens would
    /// refuse).
    pub fn open(path: &Path, options: &RedbOptions) -> StoreResult<Self> {
        if !path.exists() {
            Self::create_in_place(path, options)?;
        }
        Self::open_at(path, options, true)
    }

    /// Creates a new, initialised database at `path` through `<path>.creating`.
    fn create_in_place(path: &Path, options: &RedbOptions) -> StoreResult<()> {
        let io_error = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let mut name = path.as_os_str().to_owned();
        name.push(".creating");
        let creating = std::path::PathBuf::from(name);
        // What an interrupted creation left behind holds nothing yet.
        match std::fs::remove_file(&creating) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error(error));
            }
            _ => {}
        }
        drop(Self::open_at(&creating, options, false)?);
        // Readable by the owner only: it will hold every trust record and document.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&creating, std::fs::Permissions::from_mode(0o600))
                .map_err(io_error)?;
        }
        std::fs::rename(&creating, path).map_err(io_error)?;
        // Make the rename itself durable.
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::File::open(parent)
                .and_then(|directory| directory.sync_all())
                .map_err(io_error)?;
        }
        Ok(())
    }

    /// Opens the file at `path` (`exists`) or creates it, and prepares its schema.
    fn open_at(path: &Path, options: &RedbOptions, exists: bool) -> StoreResult<Self> {
        let mut builder = Database::builder();
        builder
            .set_cache_size(usize::try_from(options.cache_size).unwrap_or(usize::MAX))
            .set_check_integrity_on_open(options.check_integrity_on_open);
        if exists {
            // Inspect the file read-only first, so that a foreign or newer file is
            // refused without a single byte of it being touched.
            Self::inspect(path, options)?;
        }
        // redb checks some invariants with panics in debug builds; a damaged file must
        // produce an error, not bring the process down.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            if exists {
                builder.open(path)
            } else {
                builder.create(path)
            }
        }));
        let database = match opened {
            Ok(Ok(database)) => database,
            Ok(Err(error)) => return Err(open_error(path, error)),
            Err(_) => return Err(inconsistent(path)),
        };
        let store = RedbStore {
            inner: Arc::new(Inner {
                database,
                path: path.to_owned(),
                write_transactions: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        catch_unwind(AssertUnwindSafe(|| store.prepare_schema()))
            .unwrap_or_else(|_| Err(inconsistent(path)))?;
        Ok(store)
    }

    /// Read-only look at an existing file: is it a redb file, and is it a btps
    /// database this build can use? A file that needs crash recovery cannot be
    /// opened read-only; it passes here and is recovered by the writable open.
    fn inspect(path: &Path, options: &RedbOptions) -> StoreResult<()> {
        let mut builder = Database::builder();
        builder
            .set_cache_size(usize::try_from(options.cache_size.min(4 << 20)).unwrap_or(usize::MAX));
        let opened = catch_unwind(AssertUnwindSafe(|| builder.open_read_only(path)));
        let database = match opened {
            Ok(Ok(database)) => database,
            Ok(Err(DatabaseError::RepairAborted)) => return Ok(()),
            Ok(Err(error)) => return Err(open_error(path, error)),
            Err(_) => return Err(inconsistent(path)),
        };
        let checked = catch_unwind(AssertUnwindSafe(|| -> StoreResult<()> {
            let error = |e: redb::Error| database_error(path, e);
            let txn = database.begin_read().map_err(|e| error(e.into()))?;
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|e| error(e.into()))?
                .map(|table| redb::TableHandle::name(&table).to_owned())
                .collect();
            if tables.is_empty() {
                return Ok(()); // a fresh file: the writable open sets it up
            }
            if !tables
                .iter()
                .any(|name| name == redb::TableHandle::name(&META))
            {
                return Err(StoreError::Corrupted {
                    path: path.to_owned(),
                    detail: String::from(
                        "a redb database of another application (no btps meta table)",
                    ),
                });
            }
            let meta = txn.open_table(META).map_err(|e| error(e.into()))?;
            let version = read_meta(&meta, path, META_SCHEMA_VERSION)?;
            match version.as_deref().map(<[u8; 4]>::try_from) {
                Some(Ok(bytes)) if u32::from_be_bytes(bytes) > SCHEMA_VERSION => {
                    Err(StoreError::NewerSchema {
                        path: path.to_owned(),
                        found: u32::from_be_bytes(bytes),
                        supported: SCHEMA_VERSION,
                    })
                }
                Some(Ok(_)) => Ok(()),
                _ => Err(StoreError::Corrupted {
                    path: path.to_owned(),
                    detail: String::from("the meta table has no valid schema version"),
                }),
            }
        }));
        checked.unwrap_or_else(|_| Err(inconsistent(path)))
    }

    /// Runs redb's full integrity check on the file at `path` (which must not be open).
    /// `Ok(true)`: intact; `Ok(false)`: it had to be repaired (after a crash).
    pub fn check_file_integrity(path: &Path) -> StoreResult<bool> {
        let opened = catch_unwind(AssertUnwindSafe(|| Database::builder().open(path)));
        let mut database = match opened {
            Ok(Ok(database)) => database,
            Ok(Err(error)) => return Err(open_error(path, error)),
            Err(_) => return Err(inconsistent(path)),
        };
        database
            .check_integrity()
            .map_err(|error| open_error(path, error))
    }

    /// Whether another process holds the database file at `path`. Found with a
    /// read-only open, so the file is not written to (unlike opening it).
    pub fn held_by_another_process(path: &Path) -> bool {
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Database::builder().open_read_only(path).map(drop)
        }));
        matches!(
            opened,
            Ok(Err(
                DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch
            ))
        )
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `work` on a consistent snapshot: it sees every transaction committed
    /// before the call and none committed during it.
    pub fn read<T>(&self, work: impl FnOnce(&Snapshot) -> StoreResult<T>) -> StoreResult<T> {
        let txn = self
            .inner
            .database
            .begin_read()
            .map_err(|error| self.db_error(error))?;
        let snapshot = Snapshot {
            txn,
            path: &self.inner.path,
        };
        work(&snapshot)
    }

    /// Runs `work` in one write transaction and commits it durably when `work`
    /// returns `Ok`; on `Err` nothing of it is kept.
    pub fn write<T>(
        &self,
        work: impl FnOnce(&mut WriteBatch<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.write_if_changed(|batch| work(batch).map(|value| (value, true)))
    }

    /// Like [`write`](Self::write), but `work` also says whether it changed
    /// anything: a transaction that changed nothing is aborted instead of committed,
    /// which costs no disk write.
    pub fn write_if_changed<T>(
        &self,
        work: impl FnOnce(&mut WriteBatch<'_>) -> StoreResult<(T, bool)>,
    ) -> StoreResult<T> {
        let mut txn = self
            .inner
            .database
            .begin_write()
            .map_err(|error| self.db_error(error))?;
        // Counted while this transaction holds the database's one write lock, so a
        // later transaction that reads the count sees every earlier one.
        self.inner
            .write_transactions
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        txn.set_durability(Durability::Immediate)
            .map_err(|error| self.db_error(error))?;
        let mut batch = WriteBatch {
            txn: &txn,
            path: &self.inner.path,
        };
        match work(&mut batch) {
            Ok((value, true)) => {
                txn.commit().map_err(|error| self.db_error(error))?;
                Ok(value)
            }
            Ok((value, false)) => {
                txn.abort().map_err(|error| self.db_error(error))?;
                Ok(value)
            }
            Err(error) => {
                txn.abort().map_err(|abort| self.db_error(abort))?;
                Err(error)
            }
        }
    }

    /// How many write transactions have begun on this store (all handles of one
    /// open file share the count). Read inside a write transaction, it includes that
    /// transaction, and it moved by exactly one since an earlier reading if and only
    /// if no other write transaction began in between: the group committer keeps
    /// records it read across groups on that condition.
    pub fn write_transactions(&self) -> u64 {
        self.inner
            .write_transactions
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn db_error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(&self.inner.path, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_appears_only_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE_NAME);
        // What a process killed while creating the file leaves: a partial file under
        // the temporary name, nothing at the real one.
        let creating = dir.path().join(format!("{DATABASE_FILE_NAME}.creating"));
        std::fs::write(&creating, [0u8; 100]).unwrap();
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        assert!(!creating.exists());
        let version = store.read(|s| s.meta(META_SCHEMA_VERSION)).unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        drop(store);
        RedbStore::open(&path, &RedbOptions::default()).unwrap();
    }
}
