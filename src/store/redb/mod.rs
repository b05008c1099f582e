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
//! * `unwritten` — opening a file without writing to it (for checks);
//! * `codec` — the postcard-encoded values;
//! * `error` — redb's errors turned into [`StoreError`]s.
//!
//! Table layout, key encodings and versions: `schema/storage.md`.
//!
//! [`TrustStore`]: crate::store::TrustStore
//! [`IdentityStore`]: crate::store::IdentityStore

mod agents;
mod backup;
mod codec;
mod contract;
mod error;
mod mailbox;
mod migrate;
mod outbox;
mod query;
mod read;
mod storage;
mod tables;
mod unwritten;
mod write;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, Durability, ReadableDatabase};

use crate::store::{StoreError, StoreResult};

use self::error::{EARLIER_FAILURE, database_error, inconsistent, open_error};
use self::read::read_meta;
use self::tables::{META, META_SCHEMA_VERSION, META_WRITE_PROBE};

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
/// tables; opening such a file creates them (empty). Version 5 added the outbox
/// indexes (empty: nothing was queued before). Version 6 added the agent tables
/// (`agent_token`, `agent_session`, `agent_by_owner`), created empty.
pub const SCHEMA_VERSION: u32 = 6;

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
///
/// # Write failures
///
/// When a write fails beneath redb — the disk is full, the file system refuses a
/// write — the transaction fails with [`StoreError::Unavailable`] and nothing of it
/// is kept, and redb refuses every later transaction of that handle. The store
/// then recovers by itself: the next write (or readiness check) at least
/// [`REOPEN_INTERVAL`] later reopens the file in place (redb recovers it as after a
/// crash) and tries again; until then writes fail at once with the first failure's
/// reason. [`write_failure`](Self::write_failure) reports that reason until a
/// write commits again.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

/// Shortest time between two reopenings after a write failure. A reopening that
/// took long (the repair of a large file) waits five times as long before the next.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// How long a reopening waits for transactions still running on the failed handle
/// (a backup holds one for its whole copy) before it gives up until the next try.
const REOPEN_WAIT: Duration = Duration::from_millis(500);

struct Inner {
    /// The open database, shared by the transactions running on it. `None` while a
    /// failed handle is being replaced, or when reopening it failed.
    database: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    /// How the file was opened (a reopening uses the same settings).
    options: RedbOptions,
    /// Write transactions begun through [`RedbStore::write_if_changed`] (every write
    /// after open goes through it), plus one per reopening; see
    /// [`RedbStore::write_transactions`].
    write_transactions: AtomicU64,
    /// Whether `health` records a failure: read on every transaction without taking
    /// the lock.
    degraded: AtomicBool,
    health: Mutex<Health>,
    /// Held while the database is reopened (one reopening at a time).
    reopening: Mutex<()>,
}

/// What the store knows about its last write failure.
#[derive(Debug, Default)]
struct Health {
    /// Why the last write failed; `None` once a write has committed since.
    failure: Option<String>,
    /// The handle refuses every transaction (redb latched an I/O failure) until
    /// the database is reopened.
    latched: bool,
    /// No reopening before this instant.
    next_reopen: Option<Instant>,
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
        if exists {
            // Inspect the file read-only first, so that a foreign or newer file is
            // refused without a single byte of it being touched.
            Self::inspect(path, options)?;
        }
        let database = Self::open_database(path, options, exists)?;
        Self::prepared(database, path, options)
    }

    /// A store over `database` (the file at `path`), its schema created or migrated.
    fn prepared(database: Database, path: &Path, options: &RedbOptions) -> StoreResult<Self> {
        let store = RedbStore {
            inner: Arc::new(Inner {
                database: RwLock::new(Some(Arc::new(database))),
                path: path.to_owned(),
                options: options.clone(),
                write_transactions: AtomicU64::new(0),
                degraded: AtomicBool::new(false),
                health: Mutex::new(Health::default()),
                reopening: Mutex::new(()),
            }),
        };
        catch_unwind(AssertUnwindSafe(|| store.prepare_schema()))
            .unwrap_or_else(|_| Err(inconsistent(path)))?;
        Ok(store)
    }

    /// Opens (`exists`) or creates the redb database at `path`.
    fn open_database(path: &Path, options: &RedbOptions, exists: bool) -> StoreResult<Database> {
        let mut builder = Database::builder();
        builder
            .set_cache_size(usize::try_from(options.cache_size).unwrap_or(usize::MAX))
            .set_check_integrity_on_open(options.check_integrity_on_open);
        // redb checks some invariants with panics in debug builds; a damaged file must
        // produce an error, not bring the process down.
        let opened = catch_unwind(AssertUnwindSafe(|| {
            if exists {
                builder.open(path)
            } else {
                builder.create(path)
            }
        }));
        match opened {
            Ok(Ok(database)) => Ok(database),
            Ok(Err(error)) => Err(open_error(path, error)),
            Err(_) => Err(inconsistent(path)),
        }
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

    /// Runs redb's full integrity check (every page checksum) on the file at `path`,
    /// which no other process may hold, without writing to it: see
    /// [`open_unwritten`](Self::open_unwritten). `Ok(true)`: intact; `Ok(false)`:
    /// sound, but not closed cleanly (after a crash) — the next writable open
    /// recovers it.
    pub fn check_file_integrity(path: &Path) -> StoreResult<bool> {
        let options = RedbOptions {
            cache_size: 4 << 20,
            check_integrity_on_open: false,
        };
        Self::inspect(path, &options)?;
        unwritten::open_checked(path, &options).map(|(_, intact)| intact)
    }

    /// Opens the database file at `path` without writing a byte to it, and runs
    /// redb's full integrity check: for checking a file, also a read-only one.
    ///
    /// The file is opened read-only (holding the locks a writer takes, shared, so
    /// that no server opens it meanwhile) and everything redb writes — the recovery
    /// of a file a crash left, the integrity check's commit, a schema migration —
    /// stays in memory and is forgotten with the store. Returns the store, for
    /// reading, and whether the file was intact (`false`: sound, but not closed
    /// cleanly). A foreign, newer or damaged file is refused as by
    /// [`open`](Self::open).
    pub fn open_unwritten(path: &Path, options: &RedbOptions) -> StoreResult<(Self, bool)> {
        Self::inspect(path, options)?;
        let (database, intact) = unwritten::open_checked(path, options)?;
        Ok((Self::prepared(database, path, options)?, intact))
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
        let database = self.database(false)?;
        let txn = database
            .begin_read()
            .map_err(|error| self.db_error(error))?;
        let snapshot = Snapshot {
            txn,
            path: &self.inner.path,
        };
        // The handle outlives the transaction: a reopening waits for it.
        let result = work(&snapshot);
        drop(snapshot);
        drop(database);
        result
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
    ///
    /// A write that fails beneath redb (a full disk) fails with
    /// [`StoreError::Unavailable`]; so does every write until the store has reopened
    /// its file (see [`RedbStore`]).
    pub fn write_if_changed<T>(
        &self,
        work: impl FnOnce(&mut WriteBatch<'_>) -> StoreResult<(T, bool)>,
    ) -> StoreResult<T> {
        let database = self.database(true)?;
        let outcome = self.write_on(&database, work);
        drop(database);
        match &outcome {
            Ok((_, true)) => self.write_succeeded(),
            Err(StoreError::Unavailable { reason, .. }) => self.write_failed(reason),
            _ => {}
        }
        outcome.map(|(value, _)| value)
    }

    /// One write transaction on `database`; the value, and whether it committed.
    fn write_on<T>(
        &self,
        database: &Database,
        work: impl FnOnce(&mut WriteBatch<'_>) -> StoreResult<(T, bool)>,
    ) -> StoreResult<(T, bool)> {
        let mut txn = database
            .begin_write()
            .map_err(|error| self.db_error(error))?;
        // Counted while this transaction holds the database's one write lock, so a
        // later transaction that reads the count sees every earlier one.
        self.inner.write_transactions.fetch_add(1, Ordering::SeqCst);
        txn.set_durability(Durability::Immediate)
            .map_err(|error| self.db_error(error))?;
        let mut batch = WriteBatch {
            txn: &txn,
            path: &self.inner.path,
        };
        match work(&mut batch) {
            Ok((value, true)) => {
                txn.commit().map_err(|error| self.db_error(error))?;
                Ok((value, true))
            }
            Ok((value, false)) => {
                txn.abort().map_err(|error| self.db_error(error))?;
                Ok((value, false))
            }
            Err(error) => {
                txn.abort().map_err(|abort| self.db_error(abort))?;
                Err(error)
            }
        }
    }

    /// How many write transactions have begun on this store (all handles of one
    /// open file share the count), counting a reopening of the file (after a write
    /// failure) as one more. Read inside a write transaction, it includes that
    /// transaction, and it moved by exactly one since an earlier reading if and only
    /// if no other write transaction began (and no reopening happened) in between:
    /// the group committer keeps records it read across groups on that condition.
    pub fn write_transactions(&self) -> u64 {
        self.inner.write_transactions.load(Ordering::SeqCst)
    }

    /// Why the last write failed, while no write has committed since: the
    /// storage's write health, which readiness reports.
    pub fn write_failure(&self) -> Option<String> {
        if !self.inner.degraded.load(Ordering::Acquire) {
            return None;
        }
        self.health().failure.clone()
    }

    /// Readiness: the database answers a read and, after a write failure, a write
    /// commits again. While the last write failed, this tries one (a small entry of
    /// the meta table, after reopening the file when that is due), so that a server
    /// nobody sends to still notices that space came back.
    pub fn check_ready(&self) -> StoreResult<()> {
        if self.write_failure().is_some() {
            let now = crate::store::Timestamp::now();
            self.write(|batch| batch.set_meta(META_WRITE_PROBE, now.as_str().as_bytes()))?;
        }
        self.read(|snapshot| snapshot.identity_count()).map(drop)
    }

    fn db_error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(&self.inner.path, error)
    }

    fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            path: self.inner.path.clone(),
            reason: reason.into(),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Database>>> {
        self.inner
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The open database for a transaction. After a write failure the file is
    /// reopened first when that is due; a write is refused at once while it is not,
    /// a read goes on with the old handle (what it reads from redb's cache is valid).
    fn database(&self, write: bool) -> StoreResult<Arc<Database>> {
        if self.inner.degraded.load(Ordering::Acquire) {
            let recovered = self.recover();
            if write {
                recovered?;
            }
        }
        let current = self
            .inner
            .database
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(database) => Ok(database),
            None => Err(self.unavailable(
                self.health()
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the database is being reopened".to_owned()),
            )),
        }
    }

    /// Notes a write that failed with `reason`: the handle refuses transactions from
    /// now on, and the next reopening is due after [`REOPEN_INTERVAL`].
    fn write_failed(&self, reason: &str) {
        let mut health = self.health();
        // A refusal because of the earlier failure keeps that failure's reason.
        if reason != EARLIER_FAILURE || health.failure.is_none() {
            if health.failure.as_deref() != Some(reason) {
                tracing::error!(
                    path = %self.inner.path.display(),
                    reason,
                    "a write to the database failed; documents are refused with a temporary error until writes succeed again"
                );
            }
            health.failure = Some(reason.to_owned());
        }
        health.latched = true;
        let due = Instant::now() + REOPEN_INTERVAL;
        health.next_reopen = Some(health.next_reopen.map_or(due, |next| next.max(due)));
        self.inner.degraded.store(true, Ordering::Release);
    }

    /// Notes a write that committed: the storage is healthy again.
    fn write_succeeded(&self) {
        if !self.inner.degraded.load(Ordering::Acquire) {
            return;
        }
        let mut health = self.health();
        if health.latched {
            return; // a write that began before the failure
        }
        if let Some(reason) = health.failure.take() {
            tracing::warn!(
                path = %self.inner.path.display(),
                after = reason,
                "writes to the database succeed again"
            );
        }
        health.next_reopen = None;
        self.inner.degraded.store(false, Ordering::Release);
    }

    /// Reopens the file if a failure latched the handle and a reopening is due.
    /// `Ok`: the handle may be tried; `Err`: not now, with the failure's reason.
    fn recover(&self) -> StoreResult<()> {
        let _reopening = match self.inner.reopening.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(self.unavailable("the database is being reopened"));
            }
        };
        let reason = {
            let health = self.health();
            if !health.latched {
                return Ok(());
            }
            let reason = health
                .failure
                .clone()
                .unwrap_or_else(|| EARLIER_FAILURE.to_owned());
            if health.next_reopen.is_some_and(|due| Instant::now() < due) {
                return Err(self.unavailable(reason));
            }
            reason
        };
        let started = Instant::now();
        let reopened = self.reopen();
        let took = started.elapsed();
        let mut health = self.health();
        health.next_reopen = Some(Instant::now() + (took * 5).max(REOPEN_INTERVAL));
        match reopened {
            Ok(()) => {
                health.latched = false;
                tracing::info!(
                    path = %self.inner.path.display(),
                    took_ms = took.as_millis(),
                    "reopened the database after a write failure"
                );
                Ok(())
            }
            Err(error) => {
                tracing::warn!(
                    path = %self.inner.path.display(),
                    %error,
                    "reopening the database after a write failure failed; trying again later"
                );
                Err(self.unavailable(reason))
            }
        }
    }

    /// Closes the failed handle (once the transactions still running on it ended)
    /// and opens the file again; redb recovers it as after a crash.
    fn reopen(&self) -> StoreResult<()> {
        let taken = self.slot().take();
        if let Some(mut shared) = taken {
            let deadline = Instant::now() + REOPEN_WAIT;
            loop {
                match Arc::try_unwrap(shared) {
                    Ok(database) => {
                        drop(database);
                        break;
                    }
                    Err(still_shared) if Instant::now() >= deadline => {
                        *self.slot() = Some(still_shared);
                        return Err(self.unavailable(
                            "transactions still run on the failed handle; reopening later",
                        ));
                    }
                    Err(still_shared) => {
                        shared = still_shared;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        // Whatever was read through the old handle may be stale now: the count
        // moves, so the committer's cache of trust records starts empty.
        self.inner.write_transactions.fetch_add(1, Ordering::SeqCst);
        // A full check of the whole file is not needed: the file was written by
        // this process, and redb repairs what the failed commit left.
        let options = RedbOptions {
            check_integrity_on_open: false,
            ..self.inner.options.clone()
        };
        let database = Self::open_database(&self.inner.path, &options, true)?;
        *self.slot() = Some(Arc::new(database));
        Ok(())
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

    /// After a write failure the store refuses writes at once until a reopening is
    /// due, then reopens the file; the reopening moves the write count (so the
    /// committer's cache of records read through the old handle starts empty), and
    /// the first write that commits clears the failure.
    #[test]
    fn a_reopening_after_a_write_failure_moves_the_write_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(
            &dir.path().join(DATABASE_FILE_NAME),
            &RedbOptions::default(),
        )
        .unwrap();
        let write = |value: &[u8]| store.write(|batch| batch.set_meta("test", value));
        write(b"1").unwrap();
        let before = store.write_transactions();
        assert_eq!(store.write_failure(), None);

        store.write_failed("no space left on device");
        assert_eq!(
            store.write_failure().as_deref(),
            Some("no space left on device")
        );
        match write(b"2") {
            Err(StoreError::Unavailable { reason, .. }) => {
                assert_eq!(reason, "no space left on device");
            }
            other => panic!("{other:?}"),
        }
        // A refusal because of the earlier failure keeps its reason.
        store.write_failed(EARLIER_FAILURE);
        assert_eq!(
            store.write_failure().as_deref(),
            Some("no space left on device")
        );
        assert_eq!(store.write_transactions(), before, "nothing began");
        assert!(store.check_ready().is_err(), "not ready while writes fail");

        store.health().next_reopen = Some(Instant::now());
        write(b"3").unwrap();
        assert_eq!(
            store.write_transactions(),
            before + 2,
            "a reopening and a write"
        );
        assert_eq!(store.write_failure(), None);
        store.check_ready().unwrap();
        let value = store.read(|snapshot| snapshot.meta("test")).unwrap();
        assert_eq!(value.as_deref(), Some(b"3".as_slice()));
    }
}
