//! The redb store: every table of the appliance in one file, `<data-dir>/btps.redb`.
//!
//! Each mutation is one write transaction that changes the primary table and every
//! secondary index together, committed with `Durability::Immediate` before the call
//! returns. [`RedbStore::write`] runs any number of mutations in one transaction
//! (group commit for the server's batching); [`RedbStore::read`] gives a consistent
//! snapshot for several queries. The async traits run these on
//! `tokio::task::spawn_blocking` so that disk I/O never blocks the runtime.
//!
//! Table layout, key encodings and versions: `schema/storage.md`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition, WriteTransaction,
};

use super::codec::{self, StoredIdentity, StoredTrust};
use super::error::{RecordKind, StoreError, StoreResult};
use super::keys::{concat, id_bytes, id_text, instant_part, prefix_end, string_part};
use super::record::{
    IdentityPatch, IdentityRecord, NewTrustRecord, Perspective, PublicKeyRecord, Timestamp,
    TrustPatch, TrustRecord, TrustStatus, validate_identity, validate_trust,
};
use super::{BoxFuture, Cursor, IdentityStore, Page, PageRequest, TrustStore};

/// The database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "btps.redb";

/// Newest storage schema version this build writes (see `schema/storage.md`).
///
/// Version 1 had no `trust_status_count` table; opening such a file adds it,
/// filled from the status index, in one transaction. Version 2 had no mailbox
/// tables; opening such a file creates them (empty).
pub const SCHEMA_VERSION: u32 = 4;

pub(super) type Bytes = &'static [u8];

pub(super) const META: TableDefinition<&str, Bytes> = TableDefinition::new("meta");
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(super) const TRUST: TableDefinition<Bytes, Bytes> = TableDefinition::new("trust");
pub(super) const TRUST_BY_RECEIVER: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_receiver");
pub(super) const TRUST_BY_SENDER: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_sender");
pub(super) const TRUST_BY_STATUS: TableDefinition<Bytes, ()> =
    TableDefinition::new("trust_by_status");
pub(super) const TRUST_BY_EXPIRY: TableDefinition<Bytes, Bytes> =
    TableDefinition::new("trust_by_expiry");
pub(super) const TRUST_STATUS_COUNT: TableDefinition<Bytes, u64> =
    TableDefinition::new("trust_status_count");
pub(super) const IDENTITY: TableDefinition<Bytes, Bytes> = TableDefinition::new("identity");
pub(super) const IDENTITY_BY_NAME: TableDefinition<Bytes, Bytes> =
    TableDefinition::new("identity_by_name");
pub(super) const IDENTITY_KEY: TableDefinition<Bytes, Bytes> = TableDefinition::new("identity_key");

const META_SCHEMA_VERSION: &str = "schema_version";
const META_DATABASE_ID: &str = "database_id";
const META_CREATED_AT: &str = "created_at";
const SEQ_TRUST: &str = "trust_seq";
const SEQ_IDENTITY: &str = "identity_seq";

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
    /// Opens (or creates) `<data_dir>/btps.redb`, creating the directory if needed.
    pub fn open_dir(data_dir: &Path, options: &RedbOptions) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
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
    /// then renamed into place, so a process killed while creating it never leaves
    /// a half-initialised file at `path` (one that later opens would refuse).
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

    /// Creates the tables of a new file, migrates an older one, refuses a newer one.
    fn prepare_schema(&self) -> StoreResult<()> {
        let txn = self
            .inner
            .database
            .begin_write()
            .map_err(|error| self.db_error(error))?;
        let path = &self.inner.path;
        let found = {
            let has_meta = txn
                .list_tables()
                .map_err(|error| self.db_error(error))?
                .any(|table| redb::TableHandle::name(&table) == redb::TableHandle::name(&META));
            if has_meta {
                let meta = txn.open_table(META).map_err(|error| self.db_error(error))?;
                let version = meta
                    .get(META_SCHEMA_VERSION)
                    .map_err(|error| self.db_error(error))?
                    .map(|guard| guard.value().to_vec());
                match version.as_deref().map(<[u8; 4]>::try_from) {
                    Some(Ok(bytes)) => Some(u32::from_be_bytes(bytes)),
                    _ => {
                        return Err(StoreError::Corrupted {
                            path: path.clone(),
                            detail: String::from("the meta table has no valid schema version"),
                        });
                    }
                }
            } else {
                let foreign = txn
                    .list_tables()
                    .map_err(|error| self.db_error(error))?
                    .next()
                    .is_some();
                if foreign {
                    return Err(StoreError::Corrupted {
                        path: path.clone(),
                        detail: String::from(
                            "a redb database of another application (no btps meta table)",
                        ),
                    });
                }
                None
            }
        };
        match found {
            Some(version) if version == SCHEMA_VERSION => {
                txn.abort().map_err(|error| self.db_error(error))?;
                return Ok(());
            }
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            _ => {}
        }
        let batch = WriteBatch { txn: &txn, path };
        match found {
            None => batch.create_schema()?,
            Some(version) => batch.migrate_from(version)?,
        }
        let mut meta = txn.open_table(META).map_err(|error| self.db_error(error))?;
        meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_be_bytes().as_slice())
            .map_err(|error| self.db_error(error))?;
        drop(meta);
        txn.commit().map_err(|error| self.db_error(error))
    }

    // ---- Synchronous API (the CLI and tools use it without a runtime) ----

    /// The trust record `id` (any case).
    pub fn trust(&self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.read(|snapshot| snapshot.trust(perspective, id))
    }

    /// See [`TrustStore::create`].
    pub fn create_trust(
        &self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&str>,
    ) -> StoreResult<TrustRecord> {
        self.write(|batch| batch.create_trust(perspective, record, id))
    }

    /// See [`TrustStore::update`].
    pub fn update_trust(
        &self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.write(|batch| batch.update_trust(perspective, id, patch))
    }

    /// See [`TrustStore::delete`].
    pub fn delete_trust(&self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.write(|batch| batch.delete_trust(perspective, id))
    }

    /// The identity record `id` (any case).
    pub fn identity(&self, id: &str) -> StoreResult<Option<IdentityRecord>> {
        self.read(|snapshot| snapshot.identity(id))
    }

    /// See [`IdentityStore::create`].
    pub fn create_identity(&self, record: IdentityRecord) -> StoreResult<IdentityRecord> {
        self.write(|batch| batch.create_identity(record))
    }

    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&RedbStore) -> StoreResult<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&store))
                .await
                .map_err(|error| StoreError::TaskFailed(error.to_string()))?
        })
    }
}

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::InUse {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Io(source))
            if !matches!(
                source.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::Io {
                path: path.to_owned(),
                source,
            }
        }
        other => StoreError::Corrupted {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    }
}

fn inconsistent(path: &Path) -> StoreError {
    StoreError::Corrupted {
        path: path.to_owned(),
        detail: String::from("the file's structures are inconsistent"),
    }
}

pub(super) fn database_error(path: &Path, error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        source: error.into(),
    }
}

fn normalised_id(kind: RecordKind, id: &str) -> StoreResult<[u8; 32]> {
    let lower = id.to_lowercase();
    id_bytes(&lower).ok_or_else(|| StoreError::NotFound {
        kind,
        id: id.to_owned(),
    })
}

// ---- Key layouts (schema/storage.md) ----

fn trust_key(perspective: Perspective, id: &[u8; 32]) -> Vec<u8> {
    concat(&[&[perspective.tag()], id])
}

fn receiver_prefix(perspective: Perspective, receiver: &str) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(&receiver.to_lowercase())])
}

fn sender_prefix(perspective: Perspective, sender: &str) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(&sender.to_lowercase())])
}

fn status_prefix(perspective: Perspective, status: &TrustStatus) -> Vec<u8> {
    concat(&[&[perspective.tag()], &string_part(status.as_str())])
}

fn status_count_key(perspective: Perspective, status: &TrustStatus) -> Vec<u8> {
    concat(&[&[perspective.tag()], status.as_str().as_bytes()])
}

fn expiry_key(perspective: Perspective, expires_at: &Timestamp, id: &[u8; 32]) -> Vec<u8> {
    concat(&[&[perspective.tag()], &instant_part(expires_at.millis()), id])
}

fn identity_key_prefix(identity: &str) -> Vec<u8> {
    string_part(&identity.to_lowercase())
}

/// A read-only view of the database at one instant.
pub struct Snapshot<'s> {
    pub(super) txn: ReadTransaction,
    pub(super) path: &'s Path,
}

/// A listing's range over one index: keys in `[prefix, end)` after the cursor.
struct IndexRange<'p> {
    prefix: &'p [u8],
    /// Exclusive upper bound; `None` means "end of the prefix".
    end: Option<Vec<u8>>,
    /// Length of the sort part after the prefix (what a cursor holds).
    sort_len: usize,
}

impl Snapshot<'_> {
    fn error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(self.path, error)
    }

    /// The trust record `id` (any case), if any.
    pub fn trust(&self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        let Ok(id) = normalised_id(RecordKind::Trust, id) else {
            return Ok(None);
        };
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        read_trust(&table, self.path, perspective, &id)
            .map(|found| found.map(|stored| stored.record))
    }

    /// See [`TrustStore::list_by_receiver`].
    pub fn list_by_receiver(
        &self,
        perspective: Perspective,
        receiver: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let prefix = receiver_prefix(perspective, receiver);
        self.list_trust_index(TRUST_BY_RECEIVER, perspective, &prefix, page)
    }

    /// See [`TrustStore::list_by_sender`].
    pub fn list_by_sender(
        &self,
        perspective: Perspective,
        sender: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let prefix = sender_prefix(perspective, sender);
        self.list_trust_index(TRUST_BY_SENDER, perspective, &prefix, page)
    }

    /// See [`TrustStore::list_by_status`].
    pub fn list_by_status(
        &self,
        perspective: Perspective,
        status: &TrustStatus,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let prefix = status_prefix(perspective, status);
        self.list_trust_index(TRUST_BY_STATUS, perspective, &prefix, page)
    }

    /// See [`TrustStore::list_all`].
    pub fn list_all(
        &self,
        perspective: Perspective,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let prefix = [perspective.tag()];
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let range = IndexRange {
            prefix: &prefix,
            end: None,
            sort_len: 32,
        };
        let (keys, next) = scan(&table, self.path, &range, page, |_| true)?;
        let items = keys
            .iter()
            .map(|sort| self.fetch_trust(&table, perspective, sort))
            .collect::<StoreResult<_>>()?;
        Ok(Page { items, next })
    }

    /// See [`TrustStore::list_expiring_before`].
    pub fn list_expiring_before(
        &self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&TrustStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let prefix = [perspective.tag()];
        let index = self
            .txn
            .open_table(TRUST_BY_EXPIRY)
            .map_err(|e| self.error(e))?;
        let range = IndexRange {
            prefix: &prefix,
            end: Some(concat(&[&prefix, &instant_part(before_millis)])),
            sort_len: 40,
        };
        // The index value is the record's status, so the filter needs no record reads.
        let wanted = status.map(|status| status.as_str().as_bytes());
        let (keys, next) = scan(&index, self.path, &range, page, |value: &[u8]| {
            wanted.is_none_or(|wanted| wanted == value)
        })?;
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let items = keys
            .iter()
            .map(|sort| self.fetch_trust(&table, perspective, &sort[8..]))
            .collect::<StoreResult<_>>()?;
        Ok(Page { items, next })
    }

    /// See [`TrustStore::count_by_status`].
    pub fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> StoreResult<BTreeMap<TrustStatus, u64>> {
        let table = self
            .txn
            .open_table(TRUST_STATUS_COUNT)
            .map_err(|e| self.error(e))?;
        let prefix = [perspective.tag()];
        let end = prefix_end(&prefix);
        let bounds = (
            Bound::Included(prefix.as_slice()),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        let mut counts = BTreeMap::new();
        for entry in table.range::<&[u8]>(bounds).map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let status =
                std::str::from_utf8(&key.value()[1..]).map_err(|_| StoreError::Decode {
                    table: "trust_status_count",
                    detail: String::from("status is not UTF-8"),
                })?;
            counts.insert(TrustStatus::from_wire(status), value.value());
        }
        Ok(counts)
    }

    /// The identity record `id` (any case), if any.
    pub fn identity(&self, id: &str) -> StoreResult<Option<IdentityRecord>> {
        let Ok(id) = normalised_id(RecordKind::Identity, id) else {
            return Ok(None);
        };
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        read_identity(&table, self.path, &id).map(|found| found.map(|stored| stored.record))
    }

    /// The identity record of `identity` (case-insensitive), from the name index.
    pub fn identity_by_name(&self, identity: &str) -> StoreResult<Option<IdentityRecord>> {
        let index = self
            .txn
            .open_table(IDENTITY_BY_NAME)
            .map_err(|e| self.error(e))?;
        let lower = identity.to_lowercase();
        let Some(id) = index
            .get(lower.as_bytes())
            .map_err(|e| self.error(e))?
            .map(|guard| guard.value().to_vec())
        else {
            return Ok(None);
        };
        self.identity(&id_text(&id))
    }

    /// See [`IdentityStore::public_key`]: served from the (identity, selector) index.
    pub fn public_key(
        &self,
        identity: &str,
        selector: Option<&str>,
    ) -> StoreResult<Option<PublicKeyRecord>> {
        let Some(selector) = selector else {
            return Ok(self
                .identity_by_name(identity)?
                .and_then(|record| record.key(None).cloned()));
        };
        let index = self
            .txn
            .open_table(IDENTITY_KEY)
            .map_err(|e| self.error(e))?;
        let key = concat(&[&identity_key_prefix(identity), selector.as_bytes()]);
        let found = index.get(key.as_slice()).map_err(|e| self.error(e))?;
        found
            .map(|guard| codec::decode_public_key("identity_key", guard.value()))
            .transpose()
    }

    /// See [`IdentityStore::list`].
    pub fn list_identities(&self, page: &PageRequest) -> StoreResult<Page<IdentityRecord>> {
        let index = self
            .txn
            .open_table(IDENTITY_BY_NAME)
            .map_err(|e| self.error(e))?;
        let limit = page.effective_limit();
        let lower = page.after.as_ref().map(|cursor| cursor.0.as_slice());
        let bounds = (
            lower.map_or(Bound::Unbounded, Bound::Excluded),
            Bound::Unbounded,
        );
        let mut ids = Vec::new();
        let mut next = None;
        for entry in index.range::<&[u8]>(bounds).map_err(|e| self.error(e))? {
            let (name, id) = entry.map_err(|e| self.error(e))?;
            if ids.len() == limit {
                next = ids
                    .last()
                    .map(|(name, _): &(Vec<u8>, Vec<u8>)| Cursor(name.clone()));
                break;
            }
            ids.push((name.value().to_vec(), id.value().to_vec()));
        }
        let items = ids
            .iter()
            .map(|(_, id)| {
                self.identity(&id_text(id))?
                    .ok_or_else(|| StoreError::Decode {
                        table: "identity_by_name",
                        detail: String::from("index entry without a record"),
                    })
            })
            .collect::<StoreResult<_>>()?;
        Ok(Page { items, next })
    }

    /// Every trust record of both perspectives in insertion order (for export).
    pub fn trust_in_insertion_order(&self) -> StoreResult<Vec<(Perspective, TrustRecord)>> {
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let key = key.value();
            let perspective = key
                .first()
                .copied()
                .and_then(Perspective::from_tag)
                .ok_or_else(|| StoreError::Decode {
                    table: "trust",
                    detail: String::from("unknown perspective in key"),
                })?;
            let stored = codec::decode_trust("trust", id_text(&key[1..]), value.value())?;
            records.push((stored.seq, perspective, stored.record));
        }
        records.sort_by_key(|(seq, _, _)| *seq);
        Ok(records
            .into_iter()
            .map(|(_, perspective, record)| (perspective, record))
            .collect())
    }

    /// Every identity record in insertion order (for export).
    pub fn identities_in_insertion_order(&self) -> StoreResult<Vec<IdentityRecord>> {
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let stored = codec::decode_identity("identity", id_text(key.value()), value.value())?;
            records.push((stored.seq, stored.record));
        }
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    /// A value of the meta table.
    pub fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let table = self.txn.open_table(META).map_err(|e| self.error(e))?;
        read_meta(&table, self.path, name)
    }

    /// Number of trust records of `perspective` (from the status counters).
    pub fn trust_count(&self, perspective: Perspective) -> StoreResult<u64> {
        Ok(self.count_by_status(perspective)?.values().sum())
    }

    /// Number of identity records.
    pub fn identity_count(&self) -> StoreResult<u64> {
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        table.len().map_err(|e| self.error(e))
    }

    fn list_trust_index(
        &self,
        definition: TableDefinition<Bytes, ()>,
        perspective: Perspective,
        prefix: &[u8],
        page: &PageRequest,
    ) -> StoreResult<Page<TrustRecord>> {
        let index = self.txn.open_table(definition).map_err(|e| self.error(e))?;
        let range = IndexRange {
            prefix,
            end: None,
            sort_len: 32,
        };
        let (keys, next) = scan(&index, self.path, &range, page, |()| true)?;
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let items = keys
            .iter()
            .map(|sort| self.fetch_trust(&table, perspective, sort))
            .collect::<StoreResult<_>>()?;
        Ok(Page { items, next })
    }

    fn fetch_trust(
        &self,
        table: &impl ReadableTable<Bytes, Bytes>,
        perspective: Perspective,
        id: &[u8],
    ) -> StoreResult<TrustRecord> {
        let id = <[u8; 32]>::try_from(id).map_err(|_| StoreError::Decode {
            table: "trust index",
            detail: String::from("malformed index key"),
        })?;
        read_trust(table, self.path, perspective, &id)?
            .map(|stored| stored.record)
            .ok_or_else(|| StoreError::Decode {
                table: "trust index",
                detail: format!("index entry without a record: {}", id_text(&id)),
            })
    }
}

/// Walks `range` of an index and returns the sort parts of up to `limit` entries
/// whose value passes `keep`, plus the cursor for the next page.
fn scan<V: redb::Value + 'static>(
    table: &impl ReadableTable<Bytes, V>,
    path: &Path,
    range: &IndexRange<'_>,
    page: &PageRequest,
    mut keep: impl FnMut(V::SelfType<'_>) -> bool,
) -> StoreResult<(Vec<Vec<u8>>, Option<Cursor>)> {
    let limit = page.effective_limit();
    let start = match &page.after {
        Some(cursor) if cursor.0.len() != range.sort_len => return Err(StoreError::InvalidCursor),
        Some(cursor) => Bound::Excluded(concat(&[range.prefix, &cursor.0])),
        None => Bound::Included(range.prefix.to_vec()),
    };
    let end = match &range.end {
        Some(end) => Bound::Excluded(end.clone()),
        None => prefix_end(range.prefix).map_or(Bound::Unbounded, Bound::Excluded),
    };
    let bounds = (
        start.as_ref().map(Vec::as_slice),
        end.as_ref().map(Vec::as_slice),
    );
    let mut sorts = Vec::new();
    let mut more = false;
    let entries = table
        .range::<&[u8]>(bounds)
        .map_err(|error| database_error(path, error))?;
    for entry in entries {
        let (key, value) = entry.map_err(|error| database_error(path, error))?;
        if !keep(value.value()) {
            continue;
        }
        if sorts.len() == limit {
            more = true;
            break;
        }
        let key = key.value();
        sorts.push(key.get(range.prefix.len()..).unwrap_or_default().to_vec());
    }
    let next = if more {
        sorts.last().map(|last| Cursor(last.clone()))
    } else {
        None
    };
    Ok((sorts, next))
}

fn read_trust(
    table: &impl ReadableTable<Bytes, Bytes>,
    path: &Path,
    perspective: Perspective,
    id: &[u8; 32],
) -> StoreResult<Option<StoredTrust>> {
    let key = trust_key(perspective, id);
    let found = table
        .get(key.as_slice())
        .map_err(|error| database_error(path, error))?;
    found
        .map(|guard| codec::decode_trust("trust", id_text(id), guard.value()))
        .transpose()
}

fn read_meta(
    table: &impl ReadableTable<&'static str, Bytes>,
    path: &Path,
    name: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let found = table
        .get(name)
        .map_err(|error| database_error(path, error))?;
    Ok(found.map(|guard| guard.value().to_vec()))
}

fn read_identity(
    table: &impl ReadableTable<Bytes, Bytes>,
    path: &Path,
    id: &[u8; 32],
) -> StoreResult<Option<StoredIdentity>> {
    let found = table
        .get(id.as_slice())
        .map_err(|error| database_error(path, error))?;
    found
        .map(|guard| codec::decode_identity("identity", id_text(id), guard.value()))
        .transpose()
}

/// The mutations of one write transaction. Every method keeps the primary table
/// and all indexes in step; nothing is visible to others until the transaction
/// commits, and nothing is kept if it aborts.
pub struct WriteBatch<'t> {
    pub(super) txn: &'t WriteTransaction,
    pub(super) path: &'t Path,
}

impl WriteBatch<'_> {
    fn error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(self.path, error)
    }

    fn create_schema(&self) -> StoreResult<()> {
        self.open_all_tables()?;
        let mut meta = self.txn.open_table(META).map_err(|e| self.error(e))?;
        let database_id = uuid::Uuid::new_v4().to_string();
        meta.insert(META_DATABASE_ID, database_id.as_bytes())
            .map_err(|e| self.error(e))?;
        let created = Timestamp::now();
        meta.insert(META_CREATED_AT, created.as_str().as_bytes())
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn open_all_tables(&self) -> StoreResult<()> {
        self.txn.open_table(META).map_err(|e| self.error(e))?;
        self.txn.open_table(COUNTERS).map_err(|e| self.error(e))?;
        self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        for index in [TRUST_BY_RECEIVER, TRUST_BY_SENDER, TRUST_BY_STATUS] {
            self.txn.open_table(index).map_err(|e| self.error(e))?;
        }
        self.txn
            .open_table(TRUST_BY_EXPIRY)
            .map_err(|e| self.error(e))?;
        self.txn
            .open_table(TRUST_STATUS_COUNT)
            .map_err(|e| self.error(e))?;
        self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        self.txn
            .open_table(IDENTITY_BY_NAME)
            .map_err(|e| self.error(e))?;
        self.txn
            .open_table(IDENTITY_KEY)
            .map_err(|e| self.error(e))?;
        super::redb_mailbox::open_tables(self)
    }

    /// Migrates a file of schema `from` to [`SCHEMA_VERSION`], inside this transaction.
    fn migrate_from(&self, from: u32) -> StoreResult<()> {
        // Tables added by a later version are created empty here: version 2 added
        // `trust_status_count`, version 3 the mailbox tables, version 4
        // `mailbox_artifact` (filled below).
        self.open_all_tables()?;
        if from < 4 {
            super::redb_mailbox::migrate_to_v4(self)?;
        }
        if from < 2 {
            // The per-status counters start from the status index, not from zero.
            let index = self
                .txn
                .open_table(TRUST_BY_STATUS)
                .map_err(|e| self.error(e))?;
            let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            for entry in index.iter().map_err(|e| self.error(e))? {
                let (key, _) = entry.map_err(|e| self.error(e))?;
                let key = key.value();
                // tag(1) ++ len(4) ++ status ++ id(32)
                let Some(status) = key.get(5..key.len().saturating_sub(32)) else {
                    continue;
                };
                *counts.entry(concat(&[&key[..1], status])).or_default() += 1;
            }
            let mut table = self
                .txn
                .open_table(TRUST_STATUS_COUNT)
                .map_err(|e| self.error(e))?;
            for (key, count) in counts {
                table
                    .insert(key.as_slice(), count)
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    /// The next number of the counter `name` (0 first), counted up in this transaction.
    pub(super) fn next_seq(&self, name: &str) -> StoreResult<u64> {
        let mut counters = self.txn.open_table(COUNTERS).map_err(|e| self.error(e))?;
        let current = counters
            .get(name)
            .map_err(|e| self.error(e))?
            .map_or(0, |guard| guard.value());
        counters
            .insert(name, current + 1)
            .map_err(|e| self.error(e))?;
        Ok(current)
    }

    /// The trust record `id` as this transaction sees it.
    pub fn trust(&self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        let Ok(id) = normalised_id(RecordKind::Trust, id) else {
            return Ok(None);
        };
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        read_trust(&table, self.path, perspective, &id)
            .map(|found| found.map(|stored| stored.record))
    }

    /// See [`TrustStore::create`].
    pub fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&str>,
    ) -> StoreResult<TrustRecord> {
        let record = TrustRecord::with_computed_id(record, id)?;
        self.insert_trust(perspective, &record)?;
        Ok(record)
    }

    /// Stores a complete record (as read from a file) under a new id; fails with
    /// `AlreadyExists` when the id is taken.
    pub fn insert_trust(
        &mut self,
        perspective: Perspective,
        record: &TrustRecord,
    ) -> StoreResult<()> {
        validate_trust(record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Trust,
            reason,
        })?;
        let id = normalised_id(RecordKind::Trust, &record.id)?;
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        if read_trust(&table, self.path, perspective, &id)?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::Trust,
                id: record.id.clone(),
            });
        }
        drop(table);
        let seq = self.next_seq(SEQ_TRUST)?;
        self.put_trust(perspective, &id, None, record, seq)
    }

    /// Replaces a stored record with `record` (same id) as it is, keeping its
    /// insertion position; used by import with overwrite.
    pub fn replace_trust(
        &mut self,
        perspective: Perspective,
        record: &TrustRecord,
    ) -> StoreResult<()> {
        validate_trust(record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Trust,
            reason,
        })?;
        let id = normalised_id(RecordKind::Trust, &record.id)?;
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let old = read_trust(&table, self.path, perspective, &id)?.ok_or_else(|| {
            StoreError::NotFound {
                kind: RecordKind::Trust,
                id: record.id.clone(),
            }
        })?;
        drop(table);
        self.put_trust(perspective, &id, Some(&old.record), record, old.seq)
    }

    /// See [`TrustStore::update`].
    pub fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        let not_found = || StoreError::NotFound {
            kind: RecordKind::Trust,
            id: id.to_owned(),
        };
        let key = normalised_id(RecordKind::Trust, id).map_err(|_| not_found())?;
        let table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let old = read_trust(&table, self.path, perspective, &key)?.ok_or_else(not_found)?;
        drop(table);
        let mut record = old.record.clone();
        record.apply(patch);
        record.updated_at = Some(Timestamp::now());
        validate_trust(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Trust,
            reason,
        })?;
        self.put_trust(perspective, &key, Some(&old.record), &record, old.seq)?;
        Ok(record)
    }

    /// See [`TrustStore::delete`].
    pub fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        let Ok(key) = normalised_id(RecordKind::Trust, id) else {
            return Ok(false);
        };
        let mut table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let Some(old) = read_trust(&table, self.path, perspective, &key)? else {
            return Ok(false);
        };
        table
            .remove(trust_key(perspective, &key).as_slice())
            .map_err(|e| self.error(e))?;
        drop(table);
        self.trust_indexes(perspective, &key, &old.record, false)?;
        Ok(true)
    }

    fn put_trust(
        &mut self,
        perspective: Perspective,
        id: &[u8; 32],
        old: Option<&TrustRecord>,
        record: &TrustRecord,
        seq: u64,
    ) -> StoreResult<()> {
        if let Some(old) = old {
            self.trust_indexes(perspective, id, old, false)?;
        }
        self.trust_indexes(perspective, id, record, true)?;
        let mut table = self.txn.open_table(TRUST).map_err(|e| self.error(e))?;
        let value = codec::encode_trust(seq, record);
        table
            .insert(trust_key(perspective, id).as_slice(), value.as_slice())
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Adds (`present`) or removes every index entry of `record`.
    fn trust_indexes(
        &mut self,
        perspective: Perspective,
        id: &[u8; 32],
        record: &TrustRecord,
        present: bool,
    ) -> StoreResult<()> {
        let entries = [
            (
                TRUST_BY_RECEIVER,
                receiver_prefix(perspective, &record.receiver_id),
            ),
            (
                TRUST_BY_SENDER,
                sender_prefix(perspective, &record.sender_id),
            ),
            (TRUST_BY_STATUS, status_prefix(perspective, &record.status)),
        ];
        for (definition, prefix) in entries {
            let mut index = self.txn.open_table(definition).map_err(|e| self.error(e))?;
            let key = concat(&[&prefix, id]);
            if present {
                index
                    .insert(key.as_slice(), ())
                    .map_err(|e| self.error(e))?;
            } else {
                index.remove(key.as_slice()).map_err(|e| self.error(e))?;
            }
        }
        if let Some(expires_at) = &record.expires_at {
            let mut index = self
                .txn
                .open_table(TRUST_BY_EXPIRY)
                .map_err(|e| self.error(e))?;
            let key = expiry_key(perspective, expires_at, id);
            if present {
                index
                    .insert(key.as_slice(), record.status.as_str().as_bytes())
                    .map_err(|e| self.error(e))?;
            } else {
                index.remove(key.as_slice()).map_err(|e| self.error(e))?;
            }
        }
        let mut counts = self
            .txn
            .open_table(TRUST_STATUS_COUNT)
            .map_err(|e| self.error(e))?;
        let key = status_count_key(perspective, &record.status);
        let current = counts
            .get(key.as_slice())
            .map_err(|e| self.error(e))?
            .map_or(0, |guard| guard.value());
        let updated = if present {
            current + 1
        } else {
            current.saturating_sub(1)
        };
        if updated == 0 {
            counts.remove(key.as_slice()).map_err(|e| self.error(e))?;
        } else {
            counts
                .insert(key.as_slice(), updated)
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// The identity record `id` as this transaction sees it.
    pub fn identity(&self, id: &str) -> StoreResult<Option<IdentityRecord>> {
        let Ok(id) = normalised_id(RecordKind::Identity, id) else {
            return Ok(None);
        };
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        read_identity(&table, self.path, &id).map(|found| found.map(|stored| stored.record))
    }

    /// See [`IdentityStore::create`] (also used by import for complete records).
    pub fn create_identity(&mut self, record: IdentityRecord) -> StoreResult<IdentityRecord> {
        validate_identity(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        let id = normalised_id(RecordKind::Identity, &record.id)?;
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        if read_identity(&table, self.path, &id)?.is_some() {
            return Err(StoreError::AlreadyExists {
                kind: RecordKind::Identity,
                id: record.id.clone(),
            });
        }
        drop(table);
        let seq = self.next_seq(SEQ_IDENTITY)?;
        self.put_identity(&id, None, &record, seq)?;
        Ok(record)
    }

    /// Replaces a stored identity record as it is (import with overwrite).
    pub fn replace_identity(&mut self, record: &IdentityRecord) -> StoreResult<()> {
        validate_identity(record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        let id = normalised_id(RecordKind::Identity, &record.id)?;
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        let old = read_identity(&table, self.path, &id)?.ok_or_else(|| StoreError::NotFound {
            kind: RecordKind::Identity,
            id: record.id.clone(),
        })?;
        drop(table);
        self.put_identity(&id, Some(&old.record), record, old.seq)
    }

    /// See [`IdentityStore::update`].
    pub fn update_identity(
        &mut self,
        id: &str,
        patch: IdentityPatch,
    ) -> StoreResult<IdentityRecord> {
        let not_found = || StoreError::NotFound {
            kind: RecordKind::Identity,
            id: id.to_owned(),
        };
        let key = normalised_id(RecordKind::Identity, id).map_err(|_| not_found())?;
        let table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        let old = read_identity(&table, self.path, &key)?.ok_or_else(not_found)?;
        drop(table);
        let mut record = old.record.clone();
        record.apply(patch);
        record.updated_at = Some(Timestamp::now());
        validate_identity(&record).map_err(|reason| StoreError::Invalid {
            kind: RecordKind::Identity,
            reason,
        })?;
        self.put_identity(&key, Some(&old.record), &record, old.seq)?;
        Ok(record)
    }

    /// See [`IdentityStore::delete`].
    pub fn delete_identity(&mut self, id: &str) -> StoreResult<bool> {
        let Ok(key) = normalised_id(RecordKind::Identity, id) else {
            return Ok(false);
        };
        let mut table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        let Some(old) = read_identity(&table, self.path, &key)? else {
            return Ok(false);
        };
        table.remove(key.as_slice()).map_err(|e| self.error(e))?;
        drop(table);
        self.identity_indexes(&key, &old.record, false)?;
        Ok(true)
    }

    /// See [`IdentityStore::put_public_key`].
    pub fn put_public_key(
        &mut self,
        identity: &str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> StoreResult<IdentityRecord> {
        let id = crate::identity::compute_id(identity);
        match self.identity(&id)? {
            None => self.create_identity(IdentityRecord::new(identity, key, Timestamp::now())),
            Some(mut record) => {
                record.put_key(key, make_current);
                self.update_identity(
                    &id,
                    IdentityPatch {
                        current_selector: Some(record.current_selector),
                        public_keys: Some(record.public_keys),
                        metadata: None,
                    },
                )
            }
        }
    }

    fn put_identity(
        &mut self,
        id: &[u8; 32],
        old: Option<&IdentityRecord>,
        record: &IdentityRecord,
        seq: u64,
    ) -> StoreResult<()> {
        if let Some(old) = old {
            self.identity_indexes(id, old, false)?;
        }
        self.identity_indexes(id, record, true)?;
        let mut table = self.txn.open_table(IDENTITY).map_err(|e| self.error(e))?;
        let value = codec::encode_identity(seq, record);
        table
            .insert(id.as_slice(), value.as_slice())
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn identity_indexes(
        &mut self,
        id: &[u8; 32],
        record: &IdentityRecord,
        present: bool,
    ) -> StoreResult<()> {
        let lower = record.identity.to_lowercase();
        let mut names = self
            .txn
            .open_table(IDENTITY_BY_NAME)
            .map_err(|e| self.error(e))?;
        if present {
            names
                .insert(lower.as_bytes(), id.as_slice())
                .map_err(|e| self.error(e))?;
        } else {
            names.remove(lower.as_bytes()).map_err(|e| self.error(e))?;
        }
        let mut keys = self
            .txn
            .open_table(IDENTITY_KEY)
            .map_err(|e| self.error(e))?;
        let prefix = identity_key_prefix(&record.identity);
        for key in &record.public_keys {
            let index_key = concat(&[&prefix, key.selector.as_bytes()]);
            if present {
                let value = codec::encode_public_key(key);
                keys.insert(index_key.as_slice(), value.as_slice())
                    .map_err(|e| self.error(e))?;
            } else {
                keys.remove(index_key.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    /// A value of the meta table.
    pub fn meta(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let table = self.txn.open_table(META).map_err(|e| self.error(e))?;
        read_meta(&table, self.path, name)
    }

    /// Sets a value of the meta table. Names used by the store itself are refused.
    pub fn set_meta(&mut self, name: &str, value: &[u8]) -> StoreResult<()> {
        if [META_SCHEMA_VERSION, META_DATABASE_ID, META_CREATED_AT].contains(&name) {
            return Err(StoreError::Invalid {
                kind: RecordKind::Trust,
                reason: format!("meta entry {name:?} is reserved"),
            });
        }
        let mut table = self.txn.open_table(META).map_err(|e| self.error(e))?;
        table.insert(name, value).map_err(|e| self.error(e))?;
        Ok(())
    }
}

impl TrustStore for RedbStore {
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        let id = id.to_owned();
        self.blocking(move |store| store.trust(perspective, &id))
    }

    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.map(str::to_owned);
        self.blocking(move |store| store.create_trust(perspective, record, id.as_deref()))
    }

    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>> {
        let id = id.to_owned();
        self.blocking(move |store| store.update_trust(perspective, &id, patch))
    }

    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        self.blocking(move |store| store.delete_trust(perspective, &id))
    }

    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let receiver = receiver.to_owned();
        self.blocking(move |store| {
            store.read(|s| s.list_by_receiver(perspective, &receiver, &page))
        })
    }

    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let sender = sender.to_owned();
        self.blocking(move |store| store.read(|s| s.list_by_sender(perspective, &sender, &page)))
    }

    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let status = status.clone();
        self.blocking(move |store| store.read(|s| s.list_by_status(perspective, &status, &page)))
    }

    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        let status = status.cloned();
        self.blocking(move |store| {
            store.read(|s| {
                s.list_expiring_before(perspective, before_millis, status.as_ref(), &page)
            })
        })
    }

    fn list_all<'a>(
        &'a self,
        perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>> {
        self.blocking(move |store| store.read(|s| s.list_all(perspective, &page)))
    }

    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>> {
        self.blocking(move |store| store.read(|s| s.count_by_status(perspective)))
    }
}

impl IdentityStore for RedbStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let id = id.to_owned();
        self.blocking(move |store| store.identity(&id))
    }

    fn get_by_identity<'a>(
        &'a self,
        identity: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let identity = identity.to_owned();
        self.blocking(move |store| store.read(|s| s.identity_by_name(&identity)))
    }

    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>> {
        self.blocking(move |store| store.create_identity(record))
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let id = id.to_owned();
        self.blocking(move |store| store.write(|batch| batch.update_identity(&id, patch)))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let id = id.to_owned();
        self.blocking(move |store| store.write(|batch| batch.delete_identity(&id)))
    }

    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>> {
        let identity = identity.to_owned();
        let selector = selector.map(str::to_owned);
        self.blocking(move |store| store.read(|s| s.public_key(&identity, selector.as_deref())))
    }

    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>> {
        let identity = identity.to_owned();
        self.blocking(move |store| {
            store.write(|batch| batch.put_public_key(&identity, key, make_current))
        })
    }

    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>> {
        self.blocking(move |store| store.read(|s| s.list_identities(&page)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `store`'s file look like one of schema `version`: `change` removes or
    /// adds what that version lacked or had, then the version is written and the
    /// store closed, ready to be opened (and migrated) again.
    fn rewrite_as_version(store: RedbStore, version: u32, change: impl FnOnce(&WriteTransaction)) {
        store
            .write(|batch| {
                change(batch.txn);
                let mut meta = batch.txn.open_table(META).unwrap();
                meta.insert(META_SCHEMA_VERSION, version.to_be_bytes().as_slice())
                    .unwrap();
                Ok(())
            })
            .unwrap();
        // Closed, so that the next open sees the file as written.
        drop(store);
    }

    #[test]
    fn version_one_files_gain_status_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE_NAME);
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let now = Timestamp::now();
        for (sender, status) in [
            ("a$x.y", TrustStatus::Accepted),
            ("b$x.y", TrustStatus::Accepted),
            ("c$x.y", TrustStatus::Blocked),
        ] {
            let record = NewTrustRecord {
                sender_id: sender.into(),
                receiver_id: "r$x.y".into(),
                status,
                created_at: now.clone(),
                decided_by: String::new(),
                decided_at: now.clone(),
                expires_at: None,
                public_key_base64: String::new(),
                public_key_fingerprint: String::new(),
                key_history: vec![],
                privacy_type: super::super::PrivacyType::Mixed,
                retry_after_date: None,
                metadata: None,
            };
            store
                .create_trust(Perspective::Inbound, record, None)
                .unwrap();
        }
        // Turn the file into a version-1 file: no count table, version 1.
        rewrite_as_version(store, 1, |txn| {
            txn.delete_table(TRUST_STATUS_COUNT).unwrap();
        });

        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let counts = store
            .read(|s| s.count_by_status(Perspective::Inbound))
            .unwrap();
        assert_eq!(counts.get(&TrustStatus::Accepted), Some(&2));
        assert_eq!(counts.get(&TrustStatus::Blocked), Some(&1));
        let version = store
            .read(|s| {
                let meta = s.txn.open_table(META).unwrap();
                Ok(meta
                    .get(META_SCHEMA_VERSION)
                    .unwrap()
                    .unwrap()
                    .value()
                    .to_vec())
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_be_bytes());
    }

    #[test]
    fn version_two_files_gain_mailbox_tables() {
        use super::super::NewInboxEntry;
        use super::super::redb_mailbox::{
            MAILBOX_ARTIFACT, MAILBOX_COUNT, MAILBOX_ENTRY, MAILBOX_LISTING,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE_NAME);
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let now = Timestamp::now();
        let record = NewTrustRecord {
            sender_id: "a$x.y".into(),
            receiver_id: "r$x.y".into(),
            status: TrustStatus::Pending,
            created_at: now.clone(),
            decided_by: String::new(),
            decided_at: now.clone(),
            expires_at: None,
            public_key_base64: String::new(),
            public_key_fingerprint: String::new(),
            key_history: vec![],
            privacy_type: super::super::PrivacyType::Mixed,
            retry_after_date: None,
            metadata: None,
        };
        let created = store
            .create_trust(Perspective::Inbound, record, None)
            .unwrap();
        // Turn the file into a version-2 file: no mailbox tables, version 2.
        rewrite_as_version(store, 2, |txn| {
            txn.delete_table(MAILBOX_ENTRY).unwrap();
            for table in [MAILBOX_LISTING, MAILBOX_ARTIFACT] {
                txn.delete_table(table).unwrap();
            }
            txn.delete_table(MAILBOX_COUNT).unwrap();
        });

        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let version = store.read(|s| s.meta(META_SCHEMA_VERSION)).unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        assert_eq!(
            store.trust(Perspective::Inbound, &created.id).unwrap(),
            Some(created)
        );
        let entry_id = store
            .insert_inbox(NewInboxEntry {
                owner: "r$x.y".into(),
                artifact_id: "a1".into(),
                artifact_type: "TRUST_REQ".into(),
                from: "a$x.y".into(),
                to: "r$x.y".into(),
                title: None,
                raw: b"{}".to_vec(),
                received_at: now,
                remote_address: None,
            })
            .unwrap();
        assert_eq!(entry_id, 1);
        assert_eq!(
            store
                .read(|s| s.mailbox_count("R$X.Y", super::super::Mailbox::Inbox))
                .unwrap(),
            1
        );
    }

    #[test]
    fn version_three_files_get_the_artifact_index_from_their_entries() {
        use super::super::redb_mailbox::{MAILBOX_ARTIFACT, legacy};
        use super::super::{Mailbox, NewInboxEntry, StoreError};
        use redb::TableHandle;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE_NAME);
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let entry = |to: &str, from: &str, artifact_id: &str| NewInboxEntry {
            owner: to.into(),
            artifact_id: artifact_id.into(),
            artifact_type: "BTPS_DOC".into(),
            from: from.into(),
            to: to.into(),
            title: None,
            raw: format!("{{\"id\":\"{artifact_id}\"}}").into_bytes(),
            received_at: Timestamp::now(),
            remote_address: None,
        };
        let stored = [
            entry("r$x.y", "a$x.y", "doc-1"),
            entry("r$x.y", "b$x.y", "doc-1"),
            entry("R$X.Y", "a$x.y", "doc-2"),
            entry("s$x.y", "a$x.y", "doc-1"),
        ];
        for new in stored.clone() {
            store.insert_inbox(new).unwrap();
        }
        // Turn the file into a version-3 file: the two indexes version 4 replaced
        // (their contents do not matter: the migration rebuilds from the entries).
        rewrite_as_version(store, 3, |txn| {
            txn.delete_table(MAILBOX_ARTIFACT).unwrap();
            let mut old = txn.open_table(legacy::MAILBOX_BY_ARTIFACT).unwrap();
            old.insert(b"stale".as_slice(), ()).unwrap();
            let mut old = txn.open_table(legacy::INBOUND_DEDUP).unwrap();
            old.insert(b"stale".as_slice(), 1).unwrap();
            drop(old);
        });

        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        let version = store.read(|s| s.meta(META_SCHEMA_VERSION)).unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
        let tables: Vec<String> = store
            .read(|s| {
                Ok(s.txn
                    .list_tables()
                    .unwrap()
                    .map(|table| table.name().to_owned())
                    .collect())
            })
            .unwrap();
        assert!(tables.contains(&"mailbox_artifact".to_owned()));
        assert!(!tables.contains(&"mailbox_by_artifact".to_owned()));
        assert!(!tables.contains(&"inbound_dedup".to_owned()));

        let ids = |owner: &str, artifact_id: &str| -> Vec<u64> {
            store
                .read(|s| s.mailbox_entries_by_artifact(owner, Mailbox::Inbox, artifact_id))
                .unwrap()
                .iter()
                .map(|entry| entry.entry_id)
                .collect()
        };
        assert_eq!(ids("R$x.y", "doc-1"), [1, 2]);
        assert_eq!(ids("r$x.y", "doc-2"), [3]);
        assert_eq!(ids("s$x.y", "doc-1"), [4]);
        assert_eq!(ids("s$x.y", "doc-2"), Vec::<u64>::new());
        assert_eq!(ids("r$x.y", "DOC-1"), Vec::<u64>::new());
        let duplicate = |to: &str, from: &str, artifact_id: &str| {
            store
                .read(|s| s.inbound_duplicate(to, from, artifact_id))
                .unwrap()
        };
        assert_eq!(duplicate("R$X.Y", "B$x.y", "doc-1"), Some(2));
        assert_eq!(duplicate("r$x.y", "a$x.y", "doc-2"), Some(3));
        assert_eq!(duplicate("r$x.y", "c$x.y", "doc-1"), None);
        assert_eq!(duplicate("s$x.y", "b$x.y", "doc-1"), None);
        for new in stored {
            assert!(matches!(
                store.insert_inbox(new),
                Err(StoreError::AlreadyExists { .. })
            ));
        }
        assert_eq!(
            store
                .insert_inbox(entry("s$x.y", "b$x.y", "doc-1"))
                .unwrap(),
            5
        );
    }

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

    #[test]
    fn newer_schema_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE_NAME);
        let store = RedbStore::open(&path, &RedbOptions::default()).unwrap();
        rewrite_as_version(store, 99, |_| {});
        let error = RedbStore::open(&path, &RedbOptions::default()).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerSchema { found: 99, .. }),
            "{error}"
        );
        assert!(error.to_string().contains(&path.display().to_string()));
    }
}
