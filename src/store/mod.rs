//! Storage: the trust and identity store contract and its implementations.
//!
//! The traits [`TrustStore`] and [`IdentityStore`] mirror the reference's storage
//! contract (`spec/05-trust.md` §9, `spec/06-storage.md` §3.4) with the appliance's
//! stricter rules, so that another backend can be injected. Two backends exist:
//!
//! * [`RedbStore`] — the default: one redb file (`<data-dir>/btps.redb`), every
//!   mutation one ACID write transaction that updates the primary table and all
//!   secondary indexes together; postcard values with a record format version.
//! * [`JsonTrustStore`] / [`JsonIdentityStore`] — the reference's JSON files, read and
//!   written losslessly, written through atomically on every mutation.
//!
//! The redb store also holds the mailboxes ([`Mailbox`], [`MailboxEntry`]): every
//! accepted inbound artifact as the exact bytes received, with a listing index,
//! a by-artifact-id index and the inbound de-duplication index.
//!
//! The records are the domain types of [`crate::model`], re-exported here because the
//! contract speaks in them; the JSON file stores read and write them in the
//! reference's JSON form, [`crate::wire`].
//!
//! [`transfer`] imports a reference deployment's files into the database and exports
//! them back. The on-disk layout is documented in `schema/storage.md`.
//!
//! With the cargo feature `postgres` (on by default), [`PgStorage`] keeps all of it
//! in a PostgreSQL database that several btps nodes share.
//!
//! Architecture invariant: only the `redb` submodule knows redb and postcard, and
//! only the `postgres` submodule the PostgreSQL crates; the rest of the store, and
//! [`StoreError`], name none of their types.

mod contract;
mod error;
mod json_storage;
mod json_store;
mod keys;
mod memory;
mod postgres;
mod redb;
pub mod transfer;

use std::collections::BTreeMap;
use std::fmt;

pub use self::redb::{
    BackupReport, DATABASE_FILE_NAME, InboxWriter, PreparedInboxEntry, REOPEN_INTERVAL,
    RedbOptions, RedbStore, SCHEMA_VERSION, Snapshot, WriteBatch,
};
pub use contract::{
    AgentStore, InboundGroup, InboundTransaction, KeyedToken, MailboxStore, Maintenance,
    OutboxStats, OutboxStore, Storage, StoreTransaction,
};
pub use error::{RecordKind, RecordProblem, StoreError, StoreResult};
pub use json_storage::JsonFilesStorage;
pub use json_store::{JsonFileShape, JsonIdentityStore, JsonTrustStore};
pub use memory::{MemoryMailboxes, MemoryStorage};
pub use postgres::{DEFAULT_IDENTITY_TABLE, DEFAULT_TRUST_TABLE, redact_uri, valid_table_name};
#[cfg(feature = "postgres")]
pub use postgres::{ImportBatch, POSTGRES_SCHEMA_VERSION, PgOptions, PgStorage};

// The domain types the storage contract speaks in, defined in `crate::model` and
// re-exported here so that a backend (and `btps::store::TrustRecord`) needs only
// this module.
pub use crate::model::{
    AgentSession, DELIVERY_FAILURE_TYPE, EnrollmentToken, EntryFilter, EntryKind, EntryMeta,
    IdentityPatch, IdentityRecord, KeyHistoryEntry, ListingPosition, Mailbox, MailboxEntry,
    MailboxQuery, NewInboxEntry, NewOutboxEntry, NewTrustRecord, OutboxState, Perspective,
    PrivacyType, PublicKeyRecord, QueryPage, Source, TextFilter, Timestamp, TimestampError,
    TrustPatch, TrustRecord, TrustStatus, validate_identity, validate_trust,
};

/// The store traits return boxed futures so that they can be used as
/// `Arc<dyn TrustStore>`.
pub use crate::BoxFuture;

/// Where a listing continues: the (index key, id) of the last record returned.
///
/// Opaque to callers; [`fmt::Display`] and [`std::str::FromStr`] give a hex text
/// form that can travel on the wire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub(crate) Vec<u8>);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Cursor {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        keys::hex_decode(text)
            .map(Cursor)
            .ok_or(StoreError::InvalidCursor)
    }
}

/// A page request: continue after `after` (or start), return at most `limit` items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// The cursor of the previous page, if any.
    pub after: Option<Cursor>,
    /// Maximum number of items (0 is treated as 1).
    pub limit: u32,
}

impl PageRequest {
    /// The first page of at most `limit` items.
    pub fn first(limit: u32) -> Self {
        PageRequest { after: None, limit }
    }

    /// The page after `cursor`.
    pub fn after(cursor: Cursor, limit: u32) -> Self {
        PageRequest {
            after: Some(cursor),
            limit,
        }
    }

    pub(crate) fn effective_limit(&self) -> usize {
        // u32 always fits in usize on the 32- and 64-bit targets we build for.
        usize::try_from(self.limit.max(1)).unwrap_or(usize::MAX)
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items, in index order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` when this was the last one.
    pub next: Option<Cursor>,
}

/// Trust records (`spec/05-trust.md` §9.2).
///
/// Ids given to `get`, `update` and `delete` are lower-cased first (computed ids
/// are lower-case hex). Identities given to the listings are compared lower-cased.
/// A successful mutation has been committed durably when its future resolves.
pub trait TrustStore: Send + Sync {
    /// The record with this id, if any.
    fn get<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>>;

    /// The record for artifacts from `sender` to `receiver`, if any.
    fn get_pair<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        receiver: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<TrustRecord>>> {
        let id = crate::identity::compute_trust_id(sender, receiver);
        Box::pin(async move { self.get(perspective, &id).await })
    }

    /// Stores a new record under `id` (which must equal the computed id) or the
    /// computed id. Fails with `AlreadyExists` or `Invalid`.
    fn create<'a>(
        &'a self,
        perspective: Perspective,
        record: NewTrustRecord,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>>;

    /// Applies `patch`, sets `updatedAt` to now and returns the stored result.
    /// Fails with `NotFound`, or `Invalid` when the merged record breaks a rule.
    fn update<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
        patch: TrustPatch,
    ) -> BoxFuture<'a, StoreResult<TrustRecord>>;

    /// Removes the record; whether it existed.
    fn delete<'a>(
        &'a self,
        perspective: Perspective,
        id: &'a str,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Records whose `receiverId` equals `receiver` (case-insensitively), by id.
    fn list_by_receiver<'a>(
        &'a self,
        perspective: Perspective,
        receiver: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

    /// Records whose `senderId` equals `sender` (case-insensitively), by id.
    fn list_by_sender<'a>(
        &'a self,
        perspective: Perspective,
        sender: &'a str,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

    /// Records with this status, by id.
    fn list_by_status<'a>(
        &'a self,
        perspective: Perspective,
        status: &'a TrustStatus,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

    /// Records with an `expiresAt` strictly before `before_millis` (and the given
    /// status, if any), ordered by `expiresAt`, then id.
    fn list_expiring_before<'a>(
        &'a self,
        perspective: Perspective,
        before_millis: i64,
        status: Option<&'a TrustStatus>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

    /// All records, by id (the reference's `getAll()`).
    fn list_all<'a>(
        &'a self,
        perspective: Perspective,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<TrustRecord>>>;

    /// Number of records per status (for metrics).
    fn count_by_status(
        &self,
        perspective: Perspective,
    ) -> BoxFuture<'_, StoreResult<BTreeMap<TrustStatus, u64>>>;
}

impl TrustRecord {
    /// A new record under its computed id, `computeTrustId(senderId, receiverId)`; a
    /// given id must be that id (in any case): the rule of [`TrustStore::create`].
    pub fn with_computed_id(new: NewTrustRecord, id: Option<&str>) -> StoreResult<Self> {
        let computed = crate::identity::compute_trust_id(&new.sender_id, &new.receiver_id);
        if let Some(given) = id
            && given.to_lowercase() != computed
        {
            return Err(StoreError::Invalid {
                kind: RecordKind::Trust,
                reason: format!(
                    "id {given:?} is not computeTrustId(senderId, receiverId) = {computed}"
                ),
            });
        }
        Ok(TrustRecord::from_new(computed, new))
    }
}

/// Identity records and their public keys (`spec/06-storage.md` §3.4).
pub trait IdentityStore: Send + Sync {
    /// The record with this id (lower-cased first), if any.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>>;

    /// The record of `identity` (case-insensitive), if any.
    fn get_by_identity<'a>(
        &'a self,
        identity: &'a str,
    ) -> BoxFuture<'a, StoreResult<Option<IdentityRecord>>> {
        let id = crate::identity::compute_id(identity);
        Box::pin(async move { self.get(&id).await })
    }

    /// Stores a new record; its id must be `computeId(identity)`.
    /// Fails with `AlreadyExists` or `Invalid`.
    fn create(&self, record: IdentityRecord) -> BoxFuture<'_, StoreResult<IdentityRecord>>;

    /// Applies `patch`, sets `updatedAt` and returns the stored result.
    fn update<'a>(
        &'a self,
        id: &'a str,
        patch: IdentityPatch,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>>;

    /// Removes the record; whether it existed.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>>;

    /// The key of `identity` named `selector`, or its current key (`06-storage.md` §3.3).
    fn public_key<'a>(
        &'a self,
        identity: &'a str,
        selector: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<PublicKeyRecord>>>;

    /// Adds `key` to `identity`, or replaces the key with the same selector;
    /// optionally makes it current; creates the identity record if absent.
    /// Returns the stored record.
    fn put_public_key<'a>(
        &'a self,
        identity: &'a str,
        key: PublicKeyRecord,
        make_current: bool,
    ) -> BoxFuture<'a, StoreResult<IdentityRecord>>;

    /// All records, ordered by lower-cased identity.
    fn list(&self, page: PageRequest) -> BoxFuture<'_, StoreResult<Page<IdentityRecord>>>;
}
