//! [`Snapshot`]: the queries of one read transaction, over the trust and identity
//! tables and their indexes (the mailbox queries are in `mailbox`).
//!
//! Listings walk one index in key order and page with the sort part of the last key
//! as the cursor, so a page never repeats or skips a record that existed before the
//! listing began. The record readers are shared with [`WriteBatch`], which reads
//! through the same functions inside its write transaction.
//!
//! [`WriteBatch`]: super::WriteBatch

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::store::keys::{concat, id_text, instant_part, prefix_end};
use crate::store::{
    Cursor, IdentityRecord, Page, PageRequest, Perspective, PublicKeyRecord, RecordKind,
    StoreError, StoreResult, TrustRecord, TrustStatus,
};

#[cfg(doc)]
use crate::store::{IdentityStore, TrustStore};

use super::codec::{self, StoredIdentity, StoredTrust};
use super::error::database_error;
use super::tables::{
    Bytes, IDENTITY, IDENTITY_BY_NAME, IDENTITY_KEY, META, TRUST, TRUST_BY_EXPIRY,
    TRUST_BY_RECEIVER, TRUST_BY_SENDER, TRUST_BY_STATUS, TRUST_STATUS_COUNT, Tag,
    identity_key_prefix, normalised_id, receiver_prefix, sender_prefix, status_prefix, trust_key,
};

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

    /// Every (key, value) of the meta table whose key starts with `prefix`.
    pub fn meta_with_prefix(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        let table = self.txn.open_table(META).map_err(|e| self.error(e))?;
        let mut found = Vec::new();
        for item in table.range(prefix..).map_err(|e| self.error(e))? {
            let (key, value) = item.map_err(|e| self.error(e))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            found.push((key.to_owned(), value.value().to_vec()));
        }
        Ok(found)
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

pub(super) fn read_trust(
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

pub(super) fn read_meta(
    table: &impl ReadableTable<&'static str, Bytes>,
    path: &Path,
    name: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let found = table
        .get(name)
        .map_err(|error| database_error(path, error))?;
    Ok(found.map(|guard| guard.value().to_vec()))
}

pub(super) fn read_identity(
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
