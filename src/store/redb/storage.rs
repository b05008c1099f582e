//! The redb file as the server's [`Storage`]: a group of inbound artifacts is one
//! write transaction (the mailbox tables opened once), committed only when one of
//! them stored something; the file's online backup is its [`Maintenance`].

use std::path::Path;

use crate::store::contract::{
    AgentStore, InboundGroup, InboundTransaction, MailboxStore, Maintenance, OutboxStats,
    OutboxStore, Storage, StoreTransaction,
};
use crate::store::{
    AgentSession, BackupReport, BoxFuture, EnrollmentToken, IdentityStore, InboxWriter, Mailbox,
    MailboxEntry, MailboxQuery, NewTrustRecord, Page, PageRequest, Perspective, PreparedInboxEntry,
    QueryPage, RedbStore, StoreResult, Timestamp, TrustPatch, TrustRecord, TrustStore, WriteBatch,
};

/// Runs `work` on the blocking pool with a handle on the store.
fn blocking<T: Send + 'static>(
    store: &RedbStore,
    work: impl FnOnce(&RedbStore) -> StoreResult<T> + Send + 'static,
) -> BoxFuture<'static, StoreResult<T>> {
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|error| super::StoreError::TaskFailed(error.to_string()))?
    })
}

/// The meta-table key of a subscription's cursor.
fn cursor_key(name: &str) -> String {
    format!("{CURSOR_PREFIX}{name}")
}

/// The meta keys of the subscription cursors start with this.
const CURSOR_PREFIX: &str = "subscription:";

impl RedbStore {
    /// Every subscription cursor: (name, entry id), by name (`btps migrate`).
    pub fn subscription_cursors(&self) -> StoreResult<Vec<(String, u64)>> {
        self.read(|snapshot| {
            Ok(snapshot
                .meta_with_prefix(CURSOR_PREFIX)?
                .into_iter()
                .filter_map(|(key, value)| {
                    let name = key.strip_prefix(CURSOR_PREFIX)?.to_owned();
                    let id = <[u8; 8]>::try_from(value.as_slice()).ok()?;
                    Some((name, u64::from_be_bytes(id)))
                })
                .collect())
        })
    }
}

impl Storage for RedbStore {
    fn trust(&self) -> &dyn TrustStore {
        self
    }

    fn identities(&self) -> &dyn IdentityStore {
        self
    }

    fn mailboxes(&self) -> &dyn MailboxStore {
        self
    }

    fn outbox(&self) -> &dyn OutboxStore {
        self
    }

    fn transact(
        &self,
        _owner: &str,
        work: &mut dyn FnMut(&mut dyn StoreTransaction) -> StoreResult<()>,
    ) -> StoreResult<()> {
        self.write(|batch| work(&mut RedbTransaction { batch }))
    }

    fn commit_inbound(&self, group: &mut dyn InboundGroup) -> StoreResult<()> {
        self.write_if_changed(|batch| {
            // Read inside the transaction: it counts this one too.
            let generation = self.write_transactions();
            batch.with_inbox(|batch, inbox| {
                let mut transaction = RedbInbound {
                    batch,
                    inbox,
                    generation,
                };
                let mut stored = false;
                for index in 0..group.len() {
                    stored |= group.apply(index, &mut transaction)?;
                }
                Ok(((), stored))
            })
        })
    }

    fn check_ready(&self) -> StoreResult<()> {
        RedbStore::check_ready(self)
    }

    fn maintenance(&self) -> Option<&dyn Maintenance> {
        Some(self)
    }

    fn agents(&self) -> Option<&dyn AgentStore> {
        Some(self)
    }
}

/// One group's write transaction.
struct RedbInbound<'b, 't> {
    batch: &'b mut WriteBatch<'t>,
    inbox: &'b mut InboxWriter<'t>,
    generation: u64,
}

impl InboundTransaction for RedbInbound<'_, '_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.batch.trust(perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<()> {
        self.batch.create_trust(perspective, record, None).map(drop)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<()> {
        self.batch.update_trust(perspective, id, patch).map(drop)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        Ok(self
            .batch
            .identity(&crate::identity::compute_id(identity))?
            .is_some())
    }

    fn duplicate_of(&mut self, entry: &PreparedInboxEntry) -> StoreResult<Option<u64>> {
        self.inbox.duplicate_of(entry)
    }

    fn insert_inbox(&mut self, entry: &PreparedInboxEntry) -> StoreResult<u64> {
        self.inbox.insert_prepared(entry)
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation)
    }
}

/// A [`Storage::transact`] write transaction.
struct RedbTransaction<'b, 't> {
    batch: &'b mut WriteBatch<'t>,
}

impl StoreTransaction for RedbTransaction<'_, '_> {
    fn trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<Option<TrustRecord>> {
        self.batch.trust(perspective, id)
    }

    fn create_trust(
        &mut self,
        perspective: Perspective,
        record: NewTrustRecord,
    ) -> StoreResult<TrustRecord> {
        self.batch.create_trust(perspective, record, None)
    }

    fn update_trust(
        &mut self,
        perspective: Perspective,
        id: &str,
        patch: TrustPatch,
    ) -> StoreResult<TrustRecord> {
        self.batch.update_trust(perspective, id, patch)
    }

    fn delete_trust(&mut self, perspective: Perspective, id: &str) -> StoreResult<bool> {
        self.batch.delete_trust(perspective, id)
    }

    fn is_hosted(&mut self, identity: &str) -> StoreResult<bool> {
        Ok(self
            .batch
            .identity(&crate::identity::compute_id(identity))?
            .is_some())
    }

    fn entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.batch.mailbox_entry(entry_id)
    }

    fn insert_entry(&mut self, entry: MailboxEntry) -> StoreResult<u64> {
        self.batch.insert_entry(entry)
    }

    fn update_entry(&mut self, entry: &MailboxEntry) -> StoreResult<()> {
        self.batch.update_entry(entry)
    }

    fn remove_entry(&mut self, entry_id: u64) -> StoreResult<Option<MailboxEntry>> {
        self.batch.remove_entry(entry_id)
    }

    fn entries_by_artifact(
        &mut self,
        owner: &str,
        mailbox: Mailbox,
        artifact_id: &str,
    ) -> StoreResult<Vec<MailboxEntry>> {
        self.batch
            .mailbox_entries_by_artifact(owner, mailbox, artifact_id)
    }

    fn enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<Option<EnrollmentToken>> {
        self.batch.enrollment_token(key)
    }

    fn put_enrollment_token(&mut self, key: &[u8; 32], token: &EnrollmentToken) -> StoreResult<()> {
        self.batch.put_enrollment_token(key, token)
    }

    fn delete_enrollment_token(&mut self, key: &[u8; 32]) -> StoreResult<bool> {
        self.batch.delete_enrollment_token(key)
    }

    fn session(&mut self, agent_id: &str) -> StoreResult<Option<AgentSession>> {
        self.batch.agent_session(agent_id)
    }

    fn put_session(&mut self, session: &AgentSession) -> StoreResult<()> {
        self.batch.put_agent_session(session)
    }

    fn delete_session(&mut self, agent_id: &str) -> StoreResult<bool> {
        self.batch.delete_agent_session(agent_id)
    }
}

impl OutboxStore for RedbStore {
    fn claim_due(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        blocking(self, move |store| {
            // Nothing due: no write transaction (and no fsync) at all.
            match store.read(|snapshot| snapshot.outbox_next_due())? {
                Some(due) if due <= now.millis() => {}
                _ => return Ok(Vec::new()),
            }
            store.write_if_changed(|batch| {
                let claimed = batch.claim_due(&now, &lease_until, limit)?;
                let changed = !claimed.is_empty();
                Ok((claimed, changed))
            })
        })
    }

    fn release_claims(&self, now: Timestamp) -> BoxFuture<'_, StoreResult<u64>> {
        blocking(self, move |store| {
            store.write_if_changed(|batch| {
                let released = batch.release_claims(&now)?;
                Ok((released, released > 0))
            })
        })
    }

    fn next_due(&self) -> BoxFuture<'_, StoreResult<Option<i64>>> {
        blocking(self, |store| {
            store.read(|snapshot| snapshot.outbox_next_due())
        })
    }

    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
        page: PageRequest,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let owner = owner.map(str::to_owned);
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.list_outbox(owner.as_deref(), &page))
        })
    }

    fn stats(&self) -> BoxFuture<'_, StoreResult<OutboxStats>> {
        blocking(self, |store| store.read(|snapshot| snapshot.outbox_stats()))
    }
}

impl MailboxStore for RedbStore {
    fn entry(&self, entry_id: u64) -> BoxFuture<'_, StoreResult<Option<MailboxEntry>>> {
        blocking(self, move |store| store.mailbox_entry(entry_id))
    }

    fn list<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        page: PageRequest,
        newest_first: bool,
    ) -> BoxFuture<'a, StoreResult<Page<MailboxEntry>>> {
        let owner = owner.to_owned();
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.list_mailbox(&owner, mailbox, &page, newest_first))
        })
    }

    fn count<'a>(&'a self, owner: &'a str, mailbox: Mailbox) -> BoxFuture<'a, StoreResult<u64>> {
        let owner = owner.to_owned();
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.mailbox_count(&owner, mailbox))
        })
    }

    fn inbox_after(&self, after: u64, limit: u32) -> BoxFuture<'_, StoreResult<Vec<MailboxEntry>>> {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.inbox_after(after, limit))
        })
    }

    fn cursor<'a>(&'a self, name: &'a str) -> BoxFuture<'a, StoreResult<u64>> {
        let key = cursor_key(name);
        blocking(self, move |store| {
            let stored = store.read(|snapshot| snapshot.meta(&key))?;
            Ok(stored
                .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
                .map_or(0, u64::from_be_bytes))
        })
    }

    fn set_cursor<'a>(&'a self, name: &'a str, entry_id: u64) -> BoxFuture<'a, StoreResult<()>> {
        let key = cursor_key(name);
        blocking(self, move |store| {
            store.write(|batch| batch.set_meta(&key, &entry_id.to_be_bytes()))
        })
    }

    fn query<'a>(
        &'a self,
        owner: &'a str,
        mailbox: Mailbox,
        query: &'a MailboxQuery,
    ) -> BoxFuture<'a, StoreResult<QueryPage>> {
        let (owner, query) = (owner.to_owned(), query.clone());
        blocking(self, move |store| {
            store.read(|snapshot| snapshot.query_mailbox(&owner, mailbox, &query))
        })
    }
}

impl Maintenance for RedbStore {
    fn database_path(&self) -> &Path {
        self.path()
    }

    fn backup_to_anonymous_file(&self) -> StoreResult<(std::fs::File, BackupReport)> {
        RedbStore::backup_to_anonymous_file(self)
    }

    fn remove_stale_backups(&self) -> usize {
        RedbStore::remove_stale_backups(self)
    }
}
