//! The schema of the file: the tables of a new database, and the migration of a
//! file written by an older version to [`SCHEMA_VERSION`].
//!
//! Opening runs [`RedbStore::prepare_schema`] in one write transaction: a new file
//! gets every table and its identity in `meta`, an older one is migrated forward
//! (nothing of it changes unless the whole migration commits), a newer one is
//! refused. The versions are listed in `schema/storage.md`.

use std::collections::BTreeMap;

use redb::ReadableTable;

use crate::store::keys::concat;
use crate::store::{StoreError, StoreResult, Timestamp};

use super::codec;
use super::tables::{
    AGENT_BY_OWNER, AGENT_SESSION, AGENT_TOKEN, COUNTERS, IDENTITY, IDENTITY_BY_NAME, IDENTITY_KEY,
    MAILBOX_ARTIFACT, MAILBOX_COUNT, MAILBOX_ENTRY, MAILBOX_LISTING, META, META_CREATED_AT,
    META_DATABASE_ID, META_SCHEMA_VERSION, OUTBOX_DUE, OUTBOX_ORDER, OUTBOX_PAIR, TRUST,
    TRUST_BY_EXPIRY, TRUST_BY_RECEIVER, TRUST_BY_SENDER, TRUST_BY_STATUS, TRUST_STATUS_COUNT,
    artifact_key, legacy,
};
use super::{RedbStore, SCHEMA_VERSION, WriteBatch};

impl RedbStore {
    /// Creates the tables of a new file, migrates an older one, refuses a newer one.
    pub(super) fn prepare_schema(&self) -> StoreResult<()> {
        let database = self.database(true)?;
        let txn = database
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
}

impl WriteBatch<'_> {
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
        // The mailbox tables (version 3 added them, version 4 `mailbox_artifact`).
        self.txn
            .open_table(MAILBOX_ENTRY)
            .map_err(|e| self.error(e))?;
        for index in [MAILBOX_LISTING, MAILBOX_ARTIFACT] {
            self.txn.open_table(index).map_err(|e| self.error(e))?;
        }
        self.txn
            .open_table(MAILBOX_COUNT)
            .map_err(|e| self.error(e))?;
        // The outbox indexes (version 5).
        for index in [OUTBOX_DUE, OUTBOX_PAIR] {
            self.txn.open_table(index).map_err(|e| self.error(e))?;
        }
        self.txn
            .open_table(OUTBOX_ORDER)
            .map_err(|e| self.error(e))?;
        // The agent tables (version 6).
        self.txn
            .open_table(AGENT_TOKEN)
            .map_err(|e| self.error(e))?;
        self.txn
            .open_table(AGENT_BY_OWNER)
            .map_err(|e| self.error(e))?;
        self.txn
            .open_table(AGENT_SESSION)
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Migrates a file of schema `from` to [`SCHEMA_VERSION`], inside this transaction.
    fn migrate_from(&self, from: u32) -> StoreResult<()> {
        // Tables added by a later version are created empty here: version 2 added
        // `trust_status_count`, version 3 the mailbox tables, version 4
        // `mailbox_artifact` (filled below), version 5 the outbox indexes (no entry
        // was ever in the outbox before it), version 6 the agent tables.
        self.open_all_tables()?;
        if from < 4 {
            migrate_to_v4(self)?;
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
}

/// Migration to schema version 4: fills [`MAILBOX_ARTIFACT`] from the entries and
/// deletes the two version-3 indexes it replaces. Reads every entry once.
fn migrate_to_v4(batch: &WriteBatch<'_>) -> StoreResult<()> {
    let txn = batch.txn;
    let error = |e: redb::Error| batch.error(e);
    {
        let entries = txn.open_table(MAILBOX_ENTRY).map_err(|e| error(e.into()))?;
        let mut index = txn
            .open_table(MAILBOX_ARTIFACT)
            .map_err(|e| error(e.into()))?;
        for item in entries.iter().map_err(|e| error(e.into()))? {
            let (key, value) = item.map_err(|e| error(e.into()))?;
            let entry = codec::decode_entry("mailbox_entry", key.value(), value.value())?;
            index
                .insert(artifact_key(&entry).as_slice(), ())
                .map_err(|e| error(e.into()))?;
        }
    }
    txn.delete_table(legacy::MAILBOX_BY_ARTIFACT)
        .map_err(|e| error(e.into()))?;
    txn.delete_table(legacy::INBOUND_DEDUP)
        .map_err(|e| error(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::WriteTransaction;

    use super::*;
    use crate::store::{
        DATABASE_FILE_NAME, Mailbox, NewInboxEntry, NewTrustRecord, Perspective, PrivacyType,
        RedbOptions, TrustStatus,
    };

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
                privacy_type: PrivacyType::Mixed,
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
            privacy_type: PrivacyType::Mixed,
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
                .read(|s| s.mailbox_count("R$X.Y", Mailbox::Inbox))
                .unwrap(),
            1
        );
    }

    #[test]
    fn version_three_files_get_the_artifact_index_from_their_entries() {
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
