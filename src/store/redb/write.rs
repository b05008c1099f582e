//! [`WriteBatch`]: the mutations of one write transaction over the trust and
//! identity tables (the mailbox mutations are in `mailbox`, schema creation and
//! migration in `migrate`).
//!
//! Every mutation keeps the primary table and all its indexes in step within the
//! transaction, so an index can never disagree with the records it points at.

use std::path::Path;

use redb::{ReadableTable, WriteTransaction};

use crate::store::keys::concat;
use crate::store::{
    IdentityPatch, IdentityRecord, NewTrustRecord, Perspective, PublicKeyRecord, RecordKind,
    StoreError, StoreResult, Timestamp, TrustPatch, TrustRecord, validate_identity, validate_trust,
};
#[cfg(doc)]
use crate::store::{IdentityStore, TrustStore};

use super::codec;
use super::error::database_error;
use super::read::{read_identity, read_meta, read_trust};
use super::tables::{
    COUNTERS, IDENTITY, IDENTITY_BY_NAME, IDENTITY_KEY, META, META_CREATED_AT, META_DATABASE_ID,
    META_SCHEMA_VERSION, SEQ_IDENTITY, SEQ_TRUST, TRUST, TRUST_BY_EXPIRY, TRUST_BY_RECEIVER,
    TRUST_BY_SENDER, TRUST_BY_STATUS, TRUST_STATUS_COUNT, expiry_key, identity_key_prefix,
    normalised_id, receiver_prefix, sender_prefix, status_count_key, status_prefix, trust_key,
};

/// The mutations of one write transaction. Every method keeps the primary table
/// and all indexes in step; nothing is visible to others until the transaction
/// commits, and nothing is kept if it aborts.
pub struct WriteBatch<'t> {
    pub(super) txn: &'t WriteTransaction,
    pub(super) path: &'t Path,
}

impl WriteBatch<'_> {
    pub(super) fn error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(self.path, error)
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
