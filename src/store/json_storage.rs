//! The reference's JSON record files as the server's records (`STORAGE_TYPE=json`),
//! with the mailboxes of another backend (the redb file, by default).
//!
//! The files have no perspectives (one record per id, as the reference keeps
//! them), and they are not part of the mailbox backend's transaction: a group's
//! record changes are written to the files as they are made — under one lock, each
//! file replaced whole — and its inbox entries are committed after them. A crash
//! in between leaves a record changed and the artifact unacknowledged; the sender's
//! retry then finds the record as it left it. This is the reference's own
//! behaviour, kept for running beside a reference deployment or migrating from
//! one; the redb backend has no such window.

use std::sync::{Arc, Mutex};

mod agents;

use super::contract::{
    AgentStore, InboundGroup, InboundTransaction, MailboxStore, Maintenance, OutboxStore, Storage,
    StoreTransaction,
};
use super::{
    AgentSession, EnrollmentToken, IdentityStore, JsonIdentityStore, JsonTrustStore, Mailbox,
    MailboxEntry, NewTrustRecord, Perspective, PreparedInboxEntry, StoreError, StoreResult,
    TrustPatch, TrustRecord, TrustStore,
};

/// Trust and identity records in the reference's JSON files; mailboxes in `inner`.
pub struct JsonFilesStorage {
    trust: JsonTrustStore,
    identities: JsonIdentityStore,
    inner: Arc<dyn Storage>,
    /// Serialises check-and-change on the files.
    lock: Mutex<()>,
}

impl JsonFilesStorage {
    /// Records in `trust` and `identities`; mailboxes (and maintenance) of `inner`.
    pub fn new(
        trust: JsonTrustStore,
        identities: JsonIdentityStore,
        inner: Arc<dyn Storage>,
    ) -> Self {
        JsonFilesStorage {
            trust,
            identities,
            inner,
            lock: Mutex::new(()),
        }
    }
}

impl Storage for JsonFilesStorage {
    fn trust(&self) -> &dyn TrustStore {
        &self.trust
    }

    fn identities(&self) -> &dyn IdentityStore {
        &self.identities
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        self.inner.mailboxes()
    }

    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()> {
        // A poisoned lock only means a panic elsewhere; every file change is whole.
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner
            .commit_inbound(&mut FileGroup { group, files: self })
    }

    fn outbox(&self) -> &dyn OutboxStore {
        self.inner.outbox()
    }

    fn transact(
        &self,
        owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.transact(owner, &mut |transaction| {
            work(&mut FileStoreTransaction {
                files: self,
                mailboxes: transaction,
            })
        })
    }

    fn check_ready(&self) -> StoreResult<()> {
        self.inner.check_ready()
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        self.inner.maintenance()
    }

    fn agents(&self) -> Option<&dyn AgentStore> {
        self.inner.agents().map(|_| self as &dyn AgentStore)
    }
}

/// The server's group, shown to the mailbox backend with the files in between.
struct FileGroup<'g> {
    group: &'g mut dyn InboundGroup,
    files: &'g JsonFilesStorage,
}

impl InboundGroup for FileGroup<'_> {
    fn len(&self) -> usize {
        self.group.len()
    }

    fn receiver(&self, index: usize) -> &str {
        self.group.receiver(index)
    }

    fn apply(
        &mut self,
        index: usize,
        transaction: &mut dyn InboundTransaction,
    ) -> StoreResult<bool> {
        let mut files = FileTransaction {
            files: self.files,
            mailboxes: transaction,
        };
        self.group.apply(index, &mut files)
    }
}

/// Records from the files, mailbox entries from the inner transaction.
struct FileTransaction<'t> {
    files: &'t JsonFilesStorage,
    mailboxes: &'t mut dyn InboundTransaction,
}

impl InboundTransaction for FileTransaction<'_> {
    fn trust(&mut self, _perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.files.trust.get_sync(id))
    }

    fn create_trust(
        &mut self,
        _perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<()> {
        match self.files.trust.create_sync(record, None) {
            // Both perspectives share the file's one record.
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn update_trust(
        &mut self,
        _perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()> {
        self.files.trust.update_sync(id, patch).map(drop)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        Ok(self
            .files
            .identities
            .get_sync(&crate::identity::compute_id(identity))
            .is_some())
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        self.mailboxes.duplicate_of(entry)
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        self.mailboxes.insert_inbox(entry)
    }
}

/// A [`Storage::transact`] with the records in the files (written as they are
/// made, like a group's) and the mailboxes in the inner transaction.
struct FileStoreTransaction<'t> {
    files: &'t JsonFilesStorage,
    mailboxes: &'t mut dyn StoreTransaction,
}

impl StoreTransaction for FileStoreTransaction<'_> {
    fn trust(&mut self, _perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        Ok(self.files.trust.get_sync(id))
    }

    fn create_trust(
        &mut self,
        _perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        self.files.trust.create_sync(record, None)
    }

    fn update_trust(
        &mut self,
        _perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.files.trust.update_sync(id, patch)
    }

    fn delete_trust(&mut self, _perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.files.trust.delete_sync(id)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        Ok(self
            .files
            .identities
            .get_sync(&crate::identity::compute_id(identity))
            .is_some())
    }

    fn entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.mailboxes.entry(entry_id)
    }

    fn insert_entry(&mut self, entry: MailboxEntry) -> StoreResult<u64> {
        self.mailboxes.insert_entry(entry)
    }

    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        self.mailboxes.update_entry(entry)
    }

    fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.mailboxes.remove_entry(entry_id)
    }

    // Tokens and sessions have no place in the reference's files: they live in the
    // inner backend, beside the mailboxes.

    fn entries_by_artifact(
        &mut self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        self.mailboxes
            .entries_by_artifact(owner, mailbox, artifact_id)
    }

    fn enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        self.mailboxes.enrollment_token(key)
    }

    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        self.mailboxes.put_enrollment_token(key, token)
    }

    fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        self.mailboxes.delete_enrollment_token(key)
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        self.mailboxes.session(agent_id)
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        self.mailboxes.put_session(session)
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        self.mailboxes.delete_session(agent_id)
    }
}
